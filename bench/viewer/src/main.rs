//! `bench-viewer`: what the package viewer's backend costs on a 50 MB CSV (about 400,000
//! rows) and a 50 MB log in a real package on disk: the first page, a sorted page, a
//! filtered page, a text page and a search, each as a ratio against inflating the same
//! entry to `/dev/null` (the least any read of it can cost), measured in the same run.
//! Also the JSON size of one page of 100 rows, as the console would send it.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use casefile_package::archive::{Archive, Limits};
use casefile_package::view::{CsvQuery, Package, SortBy};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter};
use clap::Parser;

const CSV: &str = "Processes/processes.csv";
const LOG: &str = "Logs/syslog";

#[derive(Parser)]
#[command(about = "casefile package viewer: time per page against inflating the entry")]
struct Args {
    /// Size of the generated CSV and log, in MB (10^6 bytes).
    #[arg(long, default_value_t = 50)]
    megabytes: usize,
    /// Files in the second package (the tree and open workloads).
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Runs per workload; the median is printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = args.megabytes * 1_000_000;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("package.zip");
    let started = Instant::now();
    let rows = write_package(&path, target)?;
    let zip_bytes = std::fs::metadata(&path)?.len();
    println!(
        "package: {:.1} MB zip, a {} MB CSV of {rows} rows and a {} MB log; written in {:.1} s",
        zip_bytes as f64 / 1e6,
        args.megabytes,
        args.megabytes,
        started.elapsed().as_secs_f64()
    );
    let mut package = Package::open(File::open(&path)?)?;

    let csv_base = median(args.runs, || inflate(&path, CSV))?;
    let log_base = median(args.runs, || inflate(&path, LOG))?;
    let first = CsvQuery { limit: 100, ..CsvQuery::default() };
    let by_number = CsvQuery { limit: 100, sort: Some(SortBy { column: 3, descending: true }), ..CsvQuery::default() };
    let by_text = CsvQuery { limit: 100, sort: Some(SortBy { column: 4, descending: false }), ..CsvQuery::default() };
    let filtered = CsvQuery { limit: 100, filter: Some("user-7".to_owned()), ..CsvQuery::default() };
    let deep = CsvQuery {
        offset: 49_900,
        limit: 100,
        sort: Some(SortBy { column: 1, descending: false }),
        ..CsvQuery::default()
    };

    println!();
    println!("{:<44} {:>10} {:>8}", "workload", "median ms", "ratio");
    println!("{:<44} {:>10.1} {:>8}", "baseline: inflate the CSV entry to /dev/null", ms(csv_base), "1.00");
    let row = |name: &str, base: Duration, run: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
        let t = median(args.runs, || {
            let started = Instant::now();
            run()?;
            Ok(started.elapsed())
        })?;
        println!("{name:<44} {:>10.1} {:>8.2}", ms(t), t.as_secs_f64() / base.as_secs_f64());
        Ok(())
    };
    row("first page (100 rows, counts all rows)", csv_base, &mut || {
        package.csv_page(CSV, &first).map(drop).map_err(Into::into)
    })?;
    row("page sorted by a number column", csv_base, &mut || {
        package.csv_page(CSV, &by_number).map(drop).map_err(Into::into)
    })?;
    row("page sorted by a text column", csv_base, &mut || {
        package.csv_page(CSV, &by_text).map(drop).map_err(Into::into)
    })?;
    row("filtered page (\"user-7\", any cell)", csv_base, &mut || {
        package.csv_page(CSV, &filtered).map(drop).map_err(Into::into)
    })?;
    row("sorted page at rows 49,900-50,000", csv_base, &mut || {
        package.csv_page(CSV, &deep).map(drop).map_err(Into::into)
    })?;
    println!("{:<44} {:>10.1} {:>8}", "baseline: inflate the log entry to /dev/null", ms(log_base), "1.00");
    row("text search over the log (10 hits)", log_base, &mut || {
        let found = package.text_search(LOG, "kernel: oom-killer", 1000, 1)?;
        anyhow::ensure!(found.hits.len() == 10, "{} hits", found.hits.len());
        Ok(())
    })?;
    row("text page 1 (1,000 lines, counts all lines)", log_base, &mut || {
        package.text_page(LOG, 1, 1000).map(drop).map_err(Into::into)
    })?;

    // The console opens the package on each request: a package of many small files.
    let many = dir.path().join("many.zip");
    write_many(&many, args.files)?;
    let verify_base = median(args.runs, || {
        let started = Instant::now();
        let report = casefile_package::verify(File::open(&many)?)?;
        anyhow::ensure!(report.is_ok(), "{:?}", report.problems.first());
        Ok(started.elapsed())
    })?;
    println!(
        "{:<44} {:>10.1} {:>8}",
        format!("baseline: verify a {}-file package", args.files),
        ms(verify_base),
        "1.00"
    );
    row("open it (zip structure + manifest)", verify_base, &mut || {
        Package::open(File::open(&many)?).map(drop).map_err(Into::into)
    })?;
    row("open it + tree (sniffs every entry)", verify_base, &mut || {
        Package::open(File::open(&many)?)?.tree().map(drop).map_err(Into::into)
    })?;

    let json = serde_json::to_vec(&package.csv_page(CSV, &first)?)?;
    let text = serde_json::to_vec(&package.text_page(LOG, 1, 1000)?)?;
    println!();
    println!(
        "JSON of one CSV page of 100 rows: {} bytes; of one text page of 1,000 lines: {} bytes",
        json.len(),
        text.len()
    );
    Ok(())
}

/// A package with a CSV and a log of about `target` bytes each; returns the CSV's rows.
fn write_package(path: &std::path::Path, target: usize) -> anyhow::Result<u64> {
    let mut writer = PackageWriter::new(File::create(path)?, PackageMeta::detached("bench-viewer"));
    let mut rows = 0u64;
    writer.begin_collector("processes", "Processes");
    let sink: &mut dyn ItemSink = &mut writer;
    sink.file("processes.csv", "generated", |w| {
        let mut w = std::io::BufWriter::new(w);
        w.write_all(b"pid,host,user,rss_kb,command,started_utc\n")?;
        let mut written = 0;
        while written < target {
            rows += 1;
            let i = rows;
            let line = format!(
                "{i},host-{:03},user-{},{},\"/usr/lib/worker --id {i} --queue q{} --note \"\"a, b\"\"\",2026-12-0{}T{:02}:{:02}:{:02}Z\n",
                i % 211,
                i % 13,
                (i * 7919) % 1_000_003,
                i % 17,
                1 + i % 7,
                i % 24,
                i % 60,
                (i * 7) % 60
            );
            w.write_all(line.as_bytes())?;
            written += line.len();
        }
        w.flush()?;
        Ok(ItemOutcome::ok())
    })?;
    writer.end_collector(None);
    writer.begin_collector("logs", "Logs");
    let sink: &mut dyn ItemSink = &mut writer;
    sink.file("syslog", "generated", |w| {
        let mut w = std::io::BufWriter::new(w);
        let (mut written, mut i, mut hits) = (0, 0u64, 0);
        // Ten rare lines spread over the log (lines are about 100 bytes): the needle.
        let every = (target as u64 / 100 / 11).max(1);
        while written < target {
            i += 1;
            let line = if hits < 10 && i % every == 0 {
                hits += 1;
                format!("Dec  7 10:{:02}:{:02} host kernel: oom-killer invoked, pid {i}\n", i % 60, i % 60)
            } else {
                format!(
                    "Dec  7 10:{:02}:{:02} host sshd[{}]: Accepted publickey for user-{} from 10.0.{}.{} port {}\n",
                    i % 60,
                    (i * 7) % 60,
                    1000 + i % 5000,
                    i % 13,
                    i % 256,
                    (i * 13) % 256,
                    1024 + i % 60000
                )
            };
            w.write_all(line.as_bytes())?;
            written += line.len();
        }
        w.flush()?;
        Ok(ItemOutcome::ok())
    })?;
    writer.end_collector(None);
    writer.finish().context("writing the package")?;
    Ok(rows)
}

/// A package of `files` small files (a few hundred bytes of text or CSV each) in 100 folders.
fn write_many(path: &std::path::Path, files: usize) -> anyhow::Result<()> {
    let mut writer = PackageWriter::new(File::create(path)?, PackageMeta::detached("bench-viewer"));
    for folder in 0..100 {
        writer.begin_collector("many", &format!("proc/{folder:03}"));
        for i in (folder..files).step_by(100) {
            let sink: &mut dyn ItemSink = &mut writer;
            let name = if i % 2 == 0 { format!("{i}/status") } else { format!("{i}/maps.csv") };
            sink.file(&name, "generated", |w| {
                for line in 0..8 {
                    writeln!(w, "Name:\tworker-{i}\tline {line}\tState: S (sleeping)")?;
                }
                Ok(ItemOutcome::ok())
            })?;
        }
        writer.end_collector(None);
    }
    writer.finish().context("writing the package")?;
    Ok(())
}

/// Inflates `entry` to `/dev/null` through the archive: the baseline.
fn inflate(path: &std::path::Path, entry: &str) -> anyhow::Result<Duration> {
    let mut null = File::create("/dev/null")?;
    let started = Instant::now();
    let mut zip = Archive::open(File::open(path)?, Limits::default())?;
    let index = zip.index_of(entry).context("the entry")?;
    let mut failed = None;
    zip.stream(index, u64::MAX, &mut |chunk| {
        if let Err(e) = null.write_all(chunk) {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(started.elapsed())
}

fn median(runs: usize, mut run: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    let mut times = (0..runs.max(1)).map(|_| run()).collect::<anyhow::Result<Vec<_>>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
