//! What every collector shares: opening files without hanging on hostile ones, copying
//! files and streaming CSV into the package, reading lines of bounded length, counting
//! problems into an item outcome, and formatting UTC timestamps.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use casefile_package::{ItemOutcome, ItemSink, PackageError};

/// A copied file is cut at this size: the files we copy are small configuration files,
/// and a planted multi-gigabyte file must not fill the package.
pub(crate) const COPY_LIMIT: u64 = 32 * 1024 * 1024;

/// Longest line the line reader keeps; the rest of a longer line is dropped so a file
/// without newlines cannot exhaust memory.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Outcome note for an item cut short because the collection was cancelled.
pub(crate) const CANCELLED: &str = "collection cancelled";

/// Opens `path` for reading only if it is a regular file. `O_NONBLOCK` keeps a FIFO
/// planted where a configuration file should be from hanging the agent; the file type
/// check then rejects it (and devices, and directories).
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// True when the error means "there is no such file" rather than "it cannot be read".
pub(crate) fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// The item outcome for a source that could not be opened: a missing source is
/// `not-applicable` on this host, any other error makes the item `failed`.
pub(crate) fn unavailable(source: &str, e: &io::Error) -> ItemOutcome {
    if is_missing(e) {
        ItemOutcome::not_applicable(format!("{source} not present"))
    } else {
        ItemOutcome::failed(format!("{source}: {e}"))
    }
}

/// Reads at most `limit` bytes of a regular file.
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_regular(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A small text file (a `/proc/sys` or `/sys` value), lossily decoded and trimmed.
pub(crate) fn read_value(path: &Path) -> io::Result<String> {
    let bytes = read_capped(path, 64 * 1024)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// Opens a regular file for line-by-line reading.
pub(crate) fn open_lines(path: &Path) -> io::Result<Lines<BufReader<File>>> {
    Ok(Lines::new(BufReader::new(open_regular(path)?)))
}

/// `\n`-separated lines as bytes (file names and command lines need not be UTF-8), each
/// cut at [`MAX_LINE`] bytes.
pub(crate) struct Lines<R> {
    reader: R,
    line: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self { reader, line: Vec::new() }
    }

    /// The next line without its `\n`, or `None` at the end of the input.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        let mut read_any = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(read_any.then_some(self.line.as_slice()));
            }
            read_any = true;
            let newline = chunk.iter().position(|&b| b == b'\n');
            let end = newline.unwrap_or(chunk.len());
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..end.min(room)]);
            let consumed = newline.map_or(end, |i| i + 1);
            self.reader.consume(consumed);
            if newline.is_some() {
                return Ok(Some(self.line.as_slice()));
            }
        }
    }
}

/// Copies the file at `path` into the package as `name`. A missing file becomes a
/// `not-applicable` item, an unreadable one a `failed` item with the reason.
pub(crate) fn copy_file(sink: &mut dyn ItemSink, name: &str, path: &Path, source: &str) -> Result<(), PackageError> {
    sink.file(name, source, |out| {
        let file = match open_regular(path) {
            Ok(file) => file,
            Err(e) => return Ok(unavailable(source, &e)),
        };
        copy_capped(file, out)
    })
}

fn copy_capped(file: File, out: &mut dyn Write) -> io::Result<ItemOutcome> {
    let mut limited = file.take(COPY_LIMIT);
    io::copy(&mut limited, out)?;
    let mut rest = limited.into_inner();
    if rest.read(&mut [0u8; 1])? > 0 {
        return Ok(ItemOutcome::partial(format!("truncated at {} MiB", COPY_LIMIT >> 20)));
    }
    Ok(ItemOutcome::ok())
}

/// A CSV file being written into the package.
pub(crate) struct Csv<'w> {
    writer: csv::Writer<&'w mut dyn Write>,
}

impl Csv<'_> {
    pub(crate) fn row<I, T>(&mut self, fields: I) -> io::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.writer.write_record(fields).map_err(io::Error::from)
    }
}

/// Adds a CSV item: writes `header`, lets `rows` stream the records, and flushes even
/// when `rows` fails so that the rows written so far stay in the package.
pub(crate) fn csv_file(
    sink: &mut dyn ItemSink,
    name: &str,
    source: &str,
    header: &[&str],
    rows: impl FnOnce(&mut Csv<'_>) -> io::Result<ItemOutcome>,
) -> Result<(), PackageError> {
    sink.file(name, source, |out| {
        let mut csv = Csv { writer: csv::Writer::from_writer(out) };
        csv.row(header)?;
        let outcome = rows(&mut csv);
        let flushed = csv.writer.flush();
        let outcome = outcome?;
        flushed?;
        Ok(outcome)
    })
}

/// Problems met while writing one item, counted per kind with the first example of each,
/// so that 3,000 unreadable processes make one short note and not 3,000.
#[derive(Debug, Default, Clone)]
pub(crate) struct Problems {
    kinds: BTreeMap<String, (usize, String)>,
}

impl Problems {
    pub(crate) fn add(&mut self, kind: &str, example: impl Display) {
        self.kinds.entry(kind.to_owned()).or_insert_with(|| (0, example.to_string())).0 += 1;
    }

    pub(crate) fn merge(&mut self, other: &Problems) {
        for (kind, (count, example)) in &other.kinds {
            self.kinds.entry(kind.clone()).or_insert_with(|| (0, example.clone())).0 += count;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// `ok` without problems, otherwise `partial` with e.g.
    /// "processes with unreadable fields: 3 (first: exe: Permission denied)".
    pub(crate) fn outcome(&self) -> ItemOutcome {
        if self.is_empty() {
            return ItemOutcome::ok();
        }
        let notes: Vec<String> =
            self.kinds.iter().map(|(kind, (count, example))| format!("{kind}: {count} (first: {example})")).collect();
        ItemOutcome::partial(notes.join("; "))
    }
}

/// `2024-05-01T12:34:56Z` for seconds since the Unix epoch.
pub(crate) fn utc_timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", in_day / 3600, in_day % 3600 / 60, in_day % 60)
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Trims ASCII whitespace at both ends of a byte string.
pub(crate) fn trim_bytes(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Splits off the first `n` whitespace-separated fields of `line` and returns them with
/// the remainder (leading whitespace removed), which may itself contain spaces (a socket
/// path). `None` when the line has fewer than `n` fields.
pub(crate) fn split_fields(line: &[u8], n: usize) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line;
    for _ in 0..n {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = &rest[start..];
        let end = rest.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let start = rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len());
    Some((fields, &rest[start..]))
}

/// Text of a byte field; `None` when it is not UTF-8 (fields that must be numbers).
pub(crate) fn ascii_str(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn lines_are_cut_at_the_limit_and_the_last_line_needs_no_newline() {
        let mut input = vec![b'a'; MAX_LINE + 10];
        input.extend_from_slice(b"\nsecond\nlast");
        let mut lines = Lines::new(io::Cursor::new(input));
        assert_eq!(lines.next_line().unwrap().unwrap().len(), MAX_LINE);
        assert_eq!(lines.next_line().unwrap(), Some(&b"second"[..]));
        assert_eq!(lines.next_line().unwrap(), Some(&b"last"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
    }

    #[test]
    fn fields_keep_the_remainder_with_its_spaces() {
        let (fields, rest) = split_fields(b"  a  b c d e", 2).unwrap();
        assert_eq!(fields, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(rest, b"c d e");
        assert!(split_fields(b"a", 2).is_none());
    }

    #[test]
    fn a_fifo_is_refused_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("hosts");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn problems_count_per_kind_and_keep_the_first_example() {
        let mut problems = Problems::default();
        assert_eq!(problems.outcome(), ItemOutcome::ok());
        problems.add("unreadable", "first");
        problems.add("unreadable", "second");
        assert_eq!(problems.outcome(), ItemOutcome::partial("unreadable: 2 (first: first)"));
    }
}
