//! `All logs/` (triage): every file below `/var/log`, kept in its place
//! (`All logs/nginx/access.log.2.gz`), and `index.csv` listing each file found, taken or
//! not. Text logs, compressed rotations (copied as they are), web server, application
//! and package-manager logs, and binary logs (`wtmp`, `btmp`, `lastlog`) alike.
//!
//! A file and its rotations in one directory make a source (`access.log`,
//! `access.log.1`, `access.log.2.gz`); each source is taken newest first within
//! `max_log_bytes` as the standard `Logs/` does (see [`copy_newest`]), sources with the
//! newest files first, all within `max_total_bytes`. What `Logs/` already takes (auth,
//! syslog, … and the journal) is indexed as `elsewhere`, not copied twice. Links are
//! never followed, other file systems never entered, FIFOs and devices never opened.

use std::convert::Infallible;

use casefile_package::ItemSink;

use crate::{CollectError, Collector, Context};

use super::common::UniqueNames;
use super::copies::{
    Budget, COMPRESSED, Index, LogFile, LogTaken, Regular, RootDir, Status, Taken, copy_newest, newest_first,
};
use super::logs::taken_by_logs;
use super::walk::{Walk, Walked};

pub struct VarLog;

const TOP: &str = "/var/log";
const MAX_DEPTH: usize = 16;
/// Entries listed at most: the index of each is kept until the end.
const MAX_ENTRIES: usize = 100_000;

impl Collector for VarLog {
    fn name(&self) -> &'static str {
        "var_log"
    }

    fn folder(&self) -> &'static str {
        "All logs"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        let mut index = Index::default();
        let mut sources = Vec::new();
        let mut walk = Walk::new(ctx, MAX_DEPTH, MAX_ENTRIES);
        let walked = walk.walk(TOP, &mut |found| -> Result<(), Infallible> {
            let Some(Regular { lossy, path, abs, stat }) = index.regular_file(ctx, found, "") else {
                return Ok(());
            };
            if taken_by_logs(lossy) && ctx.runs("logs") {
                let note = "taken by the standard logs collector: see Logs/logs.csv".to_owned();
                index.left_out(abs, stat, "", Status::Elsewhere, note);
                return Ok(());
            }
            let (dir, file) = abs.rsplit_once('/').unwrap_or(("", &abs));
            let source = format!("{dir}/{}", source_key(file));
            let name = lossy.strip_prefix(TOP).unwrap_or(lossy).trim_start_matches('/').to_owned();
            let whole_only = COMPRESSED.iter().any(|ext| file.ends_with(ext));
            sources.push((source, LogFile { abs, path: path.to_path_buf(), name, stat, whole_only }));
            Ok(())
        });
        match walked {
            Ok(Walked::Stopped(outcome)) => index.walk_stopped(TOP, &outcome),
            Ok(Walked::Done | Walked::Missing) => {}
            Err(never) => match never {},
        }
        index.problems.merge(&walk.problems);
        copy_sources(ctx, sink, &mut index, sources)?;
        index.write(sink, "/var/log (recursive, links not followed)", "no /var/log")?;
        ctx.check_cancelled()
    }
}

/// Copies every source newest first within its budget and the collector's, sources with
/// the newest files first.
fn copy_sources(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    index: &mut Index,
    mut files: Vec<(String, LogFile)>,
) -> Result<(), CollectError> {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: Vec<(String, Vec<LogFile>)> = Vec::new();
    for (source, file) in files {
        match groups.last_mut() {
            Some((last, members)) if *last == source => members.push(file),
            _ => groups.push((source, vec![file])),
        }
    }
    for (_, members) in &mut groups {
        newest_first(members);
    }
    groups.sort_by_key(|(_, members)| std::cmp::Reverse(members.first().map_or(i64::MIN, |f| f.stat.mtime)));
    let mut budget = Budget::new(ctx.limits.max_total_bytes);
    let root = RootDir::open(ctx);
    let open = |file: &LogFile| root.open_found(&file.path, &file.stat);
    for (source, members) in &groups {
        ctx.check_cancelled()?;
        let limit = ctx.limits.max_log_bytes.min(budget.left);
        let over = if limit < ctx.limits.max_log_bytes {
            budget.note()
        } else {
            format!("over the budget of {} bytes for this source: not copied", ctx.limits.max_log_bytes)
        };
        let used = copy_newest(ctx, sink, members, limit, &open, &mut |file, taken| {
            let abs = file.abs.clone();
            match taken {
                LogTaken::Copied(done) => index.copied(abs, file.stat, source, &file.name, &Taken::Done(done)),
                LogTaken::Unreadable(why) => {
                    let why = Taken::Failed(why);
                    index.copied(abs, file.stat, source, &file.name, &why);
                }
                LogTaken::OverBudget => index.left_out(abs, file.stat, source, Status::NotCopied, over.clone()),
            }
        })?;
        budget.spend(used);
    }
    Ok(())
}

/// The source a log file belongs to within its directory: its name without a
/// compression ending and without the numbers rotations add (`access.log.2.gz`,
/// `secure-20240101`, `catalina.2024-01-01.log` give `access.log`, `secure`,
/// `catalina.log`).
fn source_key(file: &str) -> String {
    let base = COMPRESSED.iter().find_map(|ext| file.strip_suffix(ext)).unwrap_or(file);
    let parts: Vec<&str> =
        base.split(['.', '-', '_']).filter(|p| !p.is_empty() && !p.bytes().all(|b| b.is_ascii_digit())).collect();
    if parts.is_empty() { file.to_owned() } else { parts.join(".") }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, SystemTime};

    use casefile_package::ItemStatus;

    use crate::Limits;
    use crate::collectors::copies::testing::{assert_nowhere, run_cancelled, run_changing};
    use crate::collectors::test_support::{Fixture, MemorySink, StreamProbe, find_row, run, run_with};

    use super::*;

    fn age(f: &Fixture, abs: &str, secs: u64) {
        let file = std::fs::File::options().write(true).open(f.path(abs)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
    }

    fn index(sink: &MemorySink) -> Vec<HashMap<String, String>> {
        sink.item("index.csv").rows()
    }

    fn lines(tag: &str, n: usize) -> String {
        (0..n).map(|i| format!("{tag} line {i:04}\n")).collect()
    }

    #[test]
    fn every_log_is_copied_in_its_place_and_indexed() {
        let f = Fixture::new();
        f.write("/var/log/nginx/access.log", "GET /\n");
        f.write("/var/log/nginx/access.log.1", "GET /old\n");
        f.write("/var/log/nginx/access.log.2.gz", [0x1f, 0x8b, 8, 0, 1, 2, 3]);
        f.write("/var/log/apt/history.log", "Start-Date: 2026-12-01\n");
        f.write("/var/log/apt/term.log.1.gz", [0x1f, 0x8b, 9]);
        f.write("/var/log/dpkg.log", "install curl\n");
        f.write("/var/log/tomcat9/catalina.2026-12-01.log", "started\n");
        f.write("/var/log/wtmp", [0u8, 1, 2, 255]);
        f.write("/var/log/syslog", "standard\n");
        f.write("/var/log/auth.log.1", "standard\n");
        f.write("/var/log/journal/m/system.journal", [7u8; 10]);
        f.write("/var/log/journal/m/notes.txt", "not a journal file\n");
        age(&f, "/var/log/nginx/access.log.1", 100);
        age(&f, "/var/log/nginx/access.log.2.gz", 200);
        let sink = run(&VarLog, f.root());

        assert_eq!(sink.item("nginx/access.log").text(), "GET /\n");
        assert_eq!(sink.item("nginx/access.log.2.gz").bytes, [0x1f, 0x8b, 8, 0, 1, 2, 3]);
        assert_eq!(sink.item("nginx/access.log.2.gz").source, "/var/log/nginx/access.log.2.gz");
        assert_eq!(sink.item("apt/term.log.1.gz").bytes, [0x1f, 0x8b, 9]);
        assert_eq!(sink.item("tomcat9/catalina.2026-12-01.log").text(), "started\n");
        assert_eq!(sink.item("wtmp").bytes, [0u8, 1, 2, 255]);
        for standard in ["syslog", "auth.log.1", "journal/m/system.journal"] {
            assert!(!sink.names().contains(&standard), "{standard} is Logs/'s");
        }
        let rows = index(&sink);
        assert_eq!(rows.len(), 12);
        assert_eq!(sink.item("journal/m/notes.txt").text(), "not a journal file\n");
        let gz = find_row(&rows, "path", "/var/log/nginx/access.log.2.gz");
        assert_eq!(
            (gz["status"].as_str(), gz["copied_bytes"].as_str(), gz["category"].as_str(), gz["output"].as_str()),
            ("copied", "7", "/var/log/nginx/access.log", "nginx/access.log.2.gz")
        );
        assert_eq!(gz["type"], "file");
        let syslog = find_row(&rows, "path", "/var/log/syslog");
        assert_eq!(syslog["status"], "elsewhere");
        assert!(syslog["note"].contains("Logs/"));
        assert_eq!(find_row(&rows, "path", "/var/log/journal/m/system.journal")["status"], "elsewhere");
        assert_eq!(sink.item("index.csv").status(), ItemStatus::Ok);
    }

    /// A profile without the standard `logs` collector: what it would take is taken here.
    #[test]
    fn without_the_standard_logs_collector_its_sources_are_taken_here() {
        let f = Fixture::new();
        f.write("/var/log/syslog", "kept here\n");
        f.write("/var/log/nginx/access.log", "GET /\n");
        let running: std::sync::Arc<[String]> = vec!["var_log".to_owned()].into();
        let ctx = Context { running: Some(running), ..Context::live(Default::default()) };
        let ctx = Context { root: f.root().to_path_buf(), ..ctx };
        let mut sink = crate::collectors::test_support::MemorySink::default();
        VarLog.collect(&ctx, &mut sink).unwrap();
        assert_eq!(sink.item("syslog").text(), "kept here\n");
        assert_eq!(find_row(&index(&sink), "path", "/var/log/syslog")["status"], "copied");
    }

    #[test]
    fn rotations_group_into_sources() {
        assert_eq!(source_key("access.log.2.gz"), "access.log");
        assert_eq!(source_key("secure-20240101.gz"), "secure");
        assert_eq!(source_key("catalina.2024-01-01.log"), "catalina.log");
        assert_eq!(source_key("localhost_access_log.2024-01-01.txt"), "localhost.access.log.txt");
        assert_eq!(source_key("btmp.1"), "btmp");
        assert_eq!(source_key("dnf.librepo.log"), "dnf.librepo.log");
        assert_eq!(source_key("1"), "1");
    }

    #[test]
    fn each_source_keeps_its_newest_within_its_budget_and_all_within_the_total() {
        let f = Fixture::new();
        // Source app.log: 300 bytes now, 300 older, then a compressed rotation that no
        // longer fits whole, then one that would.
        f.write("/var/log/app/app.log", lines("current", 20));
        f.write("/var/log/app/app.log.1", lines("older", 20));
        f.write("/var/log/app/app.log.2.gz", vec![0x1f; 100]);
        f.write("/var/log/app/app.log.3.gz", vec![0x1f; 10]);
        // Two older sources: the total budget runs out on the second.
        f.write("/var/log/b.log", vec![b'b'; 200]);
        f.write("/var/log/c.log", vec![b'c'; 200]);
        f.write("/var/log/d.log", vec![b'd'; 10]);
        age(&f, "/var/log/app/app.log.1", 100);
        age(&f, "/var/log/app/app.log.2.gz", 200);
        age(&f, "/var/log/app/app.log.3.gz", 300);
        age(&f, "/var/log/b.log", 1000);
        age(&f, "/var/log/c.log", 2000);
        age(&f, "/var/log/d.log", 3000);
        let limits = Limits { max_log_bytes: 450, max_total_bytes: 450 + 300, ..Limits::default() };
        let sink = run_with(&VarLog, f.root(), limits);

        assert_eq!(sink.item("app/app.log").text(), lines("current", 20));
        let cut = sink.item("app/app.log.1");
        assert_eq!(cut.status(), ItemStatus::Partial);
        assert!(cut.text().starts_with("older line ") && cut.text().ends_with("older line 0019\n"));
        assert!(!sink.names().iter().any(|n| n.ends_with(".gz")), "no gaps: nothing older than the cut");
        assert_eq!(sink.item("b.log").bytes.len(), 200);
        // c.log's source gets the 100 bytes left of the total: its newest part.
        assert_eq!(sink.item("c.log").bytes, vec![b'c'; 100]);
        assert!(!sink.names().contains(&"d.log"));

        let rows = index(&sink);
        let left = find_row(&rows, "path", "/var/log/app/app.log.3.gz");
        assert_eq!((left["status"].as_str(), left["copied_bytes"].as_str()), ("not copied", "0"));
        assert!(left["note"].contains("budget of 450 bytes for this source"), "{left:?}");
        let partial = find_row(&rows, "path", "/var/log/app/app.log.1");
        assert_eq!(partial["status"], "partial");
        assert_eq!(partial["copied_bytes"], cut.bytes.len().to_string());
        // 750 - 450 = 300 left: b.log (200) fits, 100 remain for c.log, none for d.log.
        assert_eq!(find_row(&rows, "path", "/var/log/c.log")["status"], "partial");
        let d = find_row(&rows, "path", "/var/log/d.log");
        assert!(d["note"].contains("total budget of 750 bytes"), "{d:?}");
        let total: usize = sink.items.iter().filter(|i| i.name != "index.csv").map(|i| i.bytes.len()).sum();
        assert!(total <= 750, "{total}");
    }

    #[test]
    fn hostile_entries_are_listed_never_followed_nor_opened() {
        let f = Fixture::new();
        f.write("/etc/shadow", "root:LEAKMARKER-shadow\n");
        f.write("/outside/secret.log", "LEAKMARKER-outside\n");
        f.mkdir("/var/log/nginx");
        f.fifo("/var/log/nginx/access.log");
        f.symlink(f.path("/outside/secret.log"), "/var/log/evil.log");
        f.symlink("/etc/shadow", "/var/log/shadow.log");
        f.symlink(f.path("/outside"), "/var/log/outside-dir");
        f.symlink("loop.log", "/var/log/loop.log");
        let dir = f.path("/var/log/odd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OsStr::from_bytes(b"new\nline\xff.log")), "odd\n").unwrap();
        std::fs::write(dir.join("..x".repeat(80)), "long\n").unwrap();
        let sink = run(&VarLog, f.root());

        assert_nowhere(&sink, "LEAKMARKER");
        let rows = index(&sink);
        let fifo = find_row(&rows, "path", "/var/log/nginx/access.log");
        assert_eq!((fifo["type"].as_str(), fifo["status"].as_str()), ("fifo", "listed"));
        assert_eq!(fifo["note"], "a fifo: not opened");
        let evil = find_row(&rows, "path", "/var/log/evil.log");
        assert_eq!(evil["type"], "symlink");
        assert!(evil["note"].starts_with("symbolic link to ") && evil["note"].ends_with("not followed"));
        assert_eq!(find_row(&rows, "path", "/var/log/loop.log")["note"], "symbolic link to loop.log: not followed");
        assert_eq!(find_row(&rows, "path", "/var/log/outside-dir")["type"], "symlink");
        let odd = find_row(&rows, "path", "/var/log/odd/new\\nline\\xff.log");
        assert_eq!(odd["status"], "copied");
        assert_eq!(sink.item(&odd["output"]).text(), "odd\n");
        assert_eq!(find_row(&rows, "path", &format!("/var/log/odd/{}", "..x".repeat(80)))["status"], "copied");
    }

    /// A log rotated away (emptied) or appended to while it is copied is `partial`.
    #[test]
    fn a_log_that_shrinks_or_grows_while_copied_is_partial() {
        let f = Fixture::new();
        let text = lines("old", 20_000);
        f.write("/var/log/app/shrinks.log", &text);
        f.write("/var/log/app/grows.log", &text);
        let path = f.path("/var/log/app/shrinks.log");
        let sink = run_changing(&VarLog, f.root(), "app/shrinks.log", || {
            std::fs::File::options().write(true).open(&path).unwrap().set_len(0).unwrap();
        });
        let shrunk = sink.item("app/shrinks.log");
        assert_eq!(shrunk.status(), ItemStatus::Partial);
        assert!(shrunk.outcome.error.as_ref().unwrap().starts_with("shrank while copied"), "{:?}", shrunk.outcome);
        assert!(text.as_bytes().starts_with(&shrunk.bytes));
        let path = f.path("/var/log/app/grows.log");
        let sink = run_changing(&VarLog, f.root(), "app/grows.log", || {
            let mut file = std::fs::File::options().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut file, b"appended later\n").unwrap();
        });
        let grown = sink.item("app/grows.log");
        assert_eq!(grown.text(), text, "cut where it was listed");
        assert_eq!(grown.status(), ItemStatus::Partial);
        let rows = index(&sink);
        let row = find_row(&rows, "path", "/var/log/app/grows.log");
        assert_eq!(row["status"], "partial");
        assert_eq!(row["note"], format!("grew while copied: kept the first {} bytes", text.len()));
    }

    /// A log-owning user swaps a folder the walk went through for a link to `/etc`
    /// between the walk and the copy: the file is refused and indexed with the reason.
    #[test]
    fn a_folder_swapped_for_a_link_after_the_walk_is_not_followed() {
        let f = Fixture::new();
        f.write("/etc/shadow", "root:SWAPMARK\n");
        f.write("/var/log/first.log", "newest\n");
        f.write("/var/log/app/shadow", "an old log\n");
        age(&f, "/var/log/app/shadow", 1000);
        let (app, old, etc) = (f.path("/var/log/app"), f.path("/var/log/app.old"), f.path("/etc"));
        let sink = run_changing(&VarLog, f.root(), "first.log", || {
            std::fs::rename(&app, &old).unwrap();
            std::os::unix::fs::symlink(&etc, &app).unwrap();
        });
        assert_nowhere(&sink, "SWAPMARK");
        assert_eq!(sink.item("first.log").text(), "newest\n");
        let rows = index(&sink);
        let row = find_row(&rows, "path", "/var/log/app/shadow");
        assert_eq!(row["status"], "not copied");
        assert_eq!(row["note"], "not opened: reached through a symbolic link");
    }

    /// A large log goes into the package in small writes, never whole in memory.
    #[test]
    fn large_logs_are_streamed() {
        let f = Fixture::in_memory();
        f.write("/var/log/big.log", lines("big", 400_000));
        let ctx = Context {
            root: f.root().to_path_buf(),
            cancel: tokio_util::sync::CancellationToken::new(),
            limits: Limits::default(),
            running: None,
        };
        let mut probe = StreamProbe::default();
        VarLog.collect(&ctx, &mut probe).unwrap();
        let item = probe.sink.item("big.log");
        assert_eq!(item.bytes.len(), lines("big", 400_000).len());
        assert!(probe.writes > 50, "{} writes", probe.writes);
        assert!(probe.largest_write <= 64 * 1024, "largest write {}", probe.largest_write);
    }

    #[test]
    fn a_cancelled_collection_stops() {
        let f = Fixture::new();
        f.write("/var/log/dpkg.log", "x\n");
        let sink = run_cancelled(&VarLog, f.root());
        assert!(!sink.names().contains(&"dpkg.log"));
    }

    #[test]
    fn no_var_log_is_not_applicable() {
        let sink = run(&VarLog, Fixture::new().root());
        assert_eq!(sink.item("index.csv").status(), ItemStatus::NotApplicable);
    }
}
