//! Bytes packed per second by named collectors (default `var_log` and `configs`) reading
//! below a root (default `/`), into a package that is written nowhere: the figure is
//! the collectors' reading plus the package writer's hashing and compression. Compare
//! with `cat` of the same files into `/dev/null` (see `bench/collect`).
//!
//! `cargo run --release -p casefile-collectors --example pack_rate -- [--no-package] ROOT [COLLECTOR…]`
//!
//! With `--no-package` the files go to a sink that only counts them: the collectors'
//! own cost (walking, reading, searching for keys), without the package writer's.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

use casefile_collectors::{Context, Limits, by_name};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageError, PackageWriter};
use tokio_util::sync::CancellationToken;

/// Counts what the zip writer writes and throws it away.
#[derive(Default)]
struct Discard {
    pos: u64,
    len: u64,
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Discard {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::End(n) => self.len.saturating_add_signed(n),
            SeekFrom::Current(n) => self.pos.saturating_add_signed(n),
        };
        Ok(self.pos)
    }
}

/// Counts the files and bytes collectors produce, keeping nothing.
#[derive(Default)]
struct Count {
    files: usize,
    bytes: u64,
}

impl ItemSink for Count {
    fn add_item(
        &mut self,
        _name: &str,
        _source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let mut out = Discard::default();
        let _ = fill(&mut out);
        self.files += 1;
        self.bytes += out.len;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let no_package = args.next_if(|a| a == "--no-package").is_some();
    let root = PathBuf::from(args.next().unwrap_or_else(|| "/".to_owned()));
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = vec!["var_log".into(), "configs".into()];
    }
    let ctx = Context { root, cancel: CancellationToken::new(), limits: Limits::default(), running: None };
    if no_package {
        let mut count = Count::default();
        let started = Instant::now();
        for name in &names {
            let collector = by_name(name).ok_or_else(|| format!("no collector {name}"))?;
            collector.collect(&ctx, &mut count)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{} (no package): {} files, {} bytes in {seconds:.3} s: {:.1} MB/s",
            names.join("+"),
            count.files,
            count.bytes,
            count.bytes as f64 / seconds / 1e6
        );
        return Ok(());
    }
    let mut writer = PackageWriter::new(Discard::default(), PackageMeta::detached("pack_rate"));
    let started = Instant::now();
    for name in &names {
        let collector = by_name(name).ok_or_else(|| format!("no collector {name}"))?;
        writer.begin_collector(collector.name(), collector.folder());
        let error = collector.collect(&ctx, &mut writer).err().map(|e| e.to_string());
        writer.end_collector(error);
    }
    let (out, manifest) = writer.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = manifest.items.iter().map(|i| i.size).sum();
    println!(
        "{}: {} files, {bytes} bytes packed into {} in {seconds:.3} s: {:.1} MB/s",
        names.join("+"),
        manifest.items.len(),
        out.len,
        bytes as f64 / seconds / 1e6
    );
    Ok(())
}
