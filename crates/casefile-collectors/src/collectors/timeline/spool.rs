//! Rows kept aside while the walk writes the bodyfile: the package takes one file at a
//! time, so the findings and the executables of the same walk follow it. They stay in
//! memory up to [`IN_MEMORY`], then go to an unnamed temporary file (`O_TMPFILE`: no name
//! to find or leave behind, gone when closed, even after `kill -9`).

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

/// Rows kept in memory before they go to disk.
const IN_MEMORY: usize = 4 << 20;
/// Rows kept in memory when no temporary file can be made; later rows are dropped and
/// counted.
const MEMORY_ONLY_CAP: usize = 32 << 20;

#[derive(Default)]
pub(crate) struct Spool {
    memory: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = &mut self.file {
            return file.write(buf);
        }
        let wanted = self.memory.len() + buf.len();
        if wanted > IN_MEMORY {
            match unnamed_temp_file() {
                Ok(file) => {
                    let mut file = BufWriter::with_capacity(64 * 1024, file);
                    file.write_all(&self.memory)?;
                    self.memory = Vec::new();
                    let written = file.write(buf);
                    self.file = Some(file);
                    return written;
                }
                Err(e) if wanted > MEMORY_ONLY_CAP => return Err(e),
                Err(_) => {}
            }
        }
        self.memory.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Spool {
    /// Writes everything kept to `out`.
    pub(crate) fn replay(self, out: &mut dyn Write) -> io::Result<()> {
        // In the package's chunk size, as the rows would have come.
        for chunk in self.memory.chunks(64 * 1024) {
            out.write_all(chunk)?;
        }
        if let Some(file) = self.file {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            io::copy(&mut file, out)?;
        }
        Ok(())
    }
}

fn unnamed_temp_file() -> io::Result<File> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    Ok(File::from(openat(CWD, std::env::temp_dir(), flags, Mode::RUSR | Mode::WUSR)?))
}

/// A CSV file kept in a [`Spool`]; a row that cannot be kept is counted, not fatal.
pub(crate) struct SpooledCsv {
    writer: csv::Writer<Spool>,
    pub(crate) rows: u64,
    pub(crate) dropped: u64,
}

impl SpooledCsv {
    pub(crate) fn new(header: &[&str]) -> Self {
        let mut spooled = Self { writer: csv::Writer::from_writer(Spool::default()), rows: 0, dropped: 0 };
        spooled.row(header);
        spooled.rows = 0;
        spooled
    }

    pub(crate) fn row<I, T>(&mut self, fields: I)
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        match self.writer.write_record(fields) {
            Ok(()) => self.rows += 1,
            Err(_) => self.dropped += 1,
        }
    }

    pub(crate) fn replay(self, out: &mut dyn Write) -> io::Result<()> {
        self.writer.into_inner().map_err(|e| io::Error::other(e.to_string()))?.replay(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_over_the_memory_part_go_to_disk_and_come_back_in_order() {
        let mut csv = SpooledCsv::new(&["n", "text"]);
        let filler = "x".repeat(1000);
        for n in 0..10_000 {
            csv.row([n.to_string().as_str(), &filler]);
        }
        assert!(csv.writer.get_ref().file.is_some() || unnamed_temp_file().is_err());
        let mut out = Vec::new();
        csv.replay(&mut out).unwrap();
        let mut reader = csv::Reader::from_reader(out.as_slice());
        let numbers: Vec<u32> = reader.records().map(|r| r.unwrap()[0].parse().unwrap()).collect();
        assert_eq!(numbers, (0..10_000).collect::<Vec<_>>());
    }
}
