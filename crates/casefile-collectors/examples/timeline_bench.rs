//! Times the `timeline` collector on a root (default `/`), for `bench/collect`:
//!
//! `timeline_bench [ROOT] [--no-hash] [--package FILE] [--hashed-list FILE]`
//!
//! - `--no-hash`: a hashing budget of 0, so the run is the walk alone (with the bodyfile
//!   and findings), to set beside `find ROOT -xdev -printf` of the same fields;
//! - `--package FILE`: write a real package (deflated) instead of discarding the output;
//! - `--hashed-list FILE`: write the paths hashed, NUL-separated, for
//!   `xargs -0 sha256sum < FILE` (paths with escapes are left out of the list).
//!
//! Prints wall time, CPU time (user + system), bytes per file and rows.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use casefile_collectors::{Context, Limits, by_name};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageError, PackageWriter};
use tokio_util::sync::CancellationToken;

/// Counts each file's bytes and lines, keeping only `executables.csv`.
#[derive(Default)]
struct Counting {
    files: Vec<(String, u64, u64, String)>,
    executables: Vec<u8>,
}

impl ItemSink for Counting {
    fn add_item(
        &mut self,
        name: &str,
        _source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let keep = name == "executables.csv";
        let mut out = Counter { bytes: 0, lines: 0, keep: keep.then(Vec::new) };
        let outcome = fill(&mut out).unwrap_or_else(|e| ItemOutcome::failed(e.to_string()));
        let status = format!("{:?} {}", outcome.status, outcome.error.unwrap_or_default());
        self.files.push((name.to_owned(), out.bytes, out.lines, status));
        if let Some(kept) = out.keep {
            self.executables = kept;
        }
        Ok(())
    }
}

struct Counter {
    bytes: u64,
    lines: u64,
    keep: Option<Vec<u8>>,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(keep) = &mut self.keep {
            keep.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// User + system CPU seconds of this process (`/proc/self/stat`, at 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut root = PathBuf::from("/");
    let (mut no_hash, mut package, mut hashed_list) = (false, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-hash" => no_hash = true,
            "--package" => package = args.next().map(PathBuf::from),
            "--hashed-list" => hashed_list = args.next().map(PathBuf::from),
            other => root = PathBuf::from(other),
        }
    }
    let limits = if no_hash { Limits { max_total_bytes: 0, ..Limits::default() } } else { Limits::default() };
    let ctx = Context { root, cancel: CancellationToken::new(), limits, running: None };
    let timeline = by_name("timeline").ok_or("no timeline collector")?;
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let mut counting = Counting::default();
    if let Some(path) = &package {
        let mut writer = PackageWriter::new(BufWriter::new(File::create(path)?), PackageMeta::detached("bench"));
        writer.begin_collector(timeline.name(), timeline.folder());
        let error = timeline.collect(&ctx, &mut writer).err().map(|e| e.to_string());
        writer.end_collector(error);
        let (_, manifest) = writer.finish()?;
        for item in &manifest.items {
            println!(
                "{:<40} {:>12} bytes {:?} {}",
                item.path,
                item.size,
                item.status,
                item.error.as_deref().unwrap_or("")
            );
        }
    } else {
        timeline.collect(&ctx, &mut counting)?;
        for (name, bytes, lines, status) in &counting.files {
            println!("{name:<20} {bytes:>12} bytes {lines:>9} lines {status}");
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!("wall {wall:.3} s, cpu {:.3} s", cpu_seconds() - cpu);
    if let Some(path) = hashed_list {
        let mut list = BufWriter::new(File::create(path)?);
        let mut reader = csv::Reader::from_reader(counting.executables.as_slice());
        for record in reader.records() {
            let record = record?;
            let (path, sha256) = (&record[0], &record[7]);
            if !sha256.is_empty() && !path.contains('\\') {
                list.write_all(path.as_bytes())?;
                list.write_all(b"\0")?;
            }
        }
        list.flush()?;
    }
    Ok(())
}
