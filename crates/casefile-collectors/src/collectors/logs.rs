//! `Logs/`: recent authentication and system logs, newest first, at most
//! `max_log_bytes` of each source: the text logs of `/var/log` with their rotations
//! (copied as they are, compressed ones too), and the systemd journal files. `logs.csv`
//! indexes every file considered, copied or not.
//!
//! Within a source, files are taken newest first until the budget is spent. A plain
//! text file that does not fit keeps its newest lines (the tail); a compressed one is
//! copied whole or not at all, since the end of a gzip stream cannot be read alone, and
//! older files are then left out so that what is kept has no gaps.

use std::ffi::OsString;
use std::fs::Metadata;

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::{CollectError, Collector, Context};

use super::command::CommandLog;
use super::common::{Copied, Problems, UniqueNames, csv_file, dir_entries, name_part, open_regular, utc_timestamp};
use super::copies::{LogFile, LogTaken, Stat, compressed, copy_newest, newest_first};

pub struct Logs;

/// Text log sources: (source, directory, file name). A rotation is `name.1`,
/// `name.2.gz`, or `name-20240101[.gz]`.
const TEXT_LOGS: [(&str, &str, &str); 6] = [
    ("auth", "/var/log", "auth.log"),
    ("secure", "/var/log", "secure"),
    ("syslog", "/var/log", "syslog"),
    ("messages", "/var/log", "messages"),
    ("kern", "/var/log", "kern.log"),
    ("audit", "/var/log/audit", "audit.log"),
];

/// Journal directories (one subdirectory per machine id) and their folder in the package.
const JOURNAL_DIRS: [(&str, &str); 2] = [("/var/log/journal", "journal"), ("/run/log/journal", "run-journal")];

const JOURNALCTL: [&str; 2] = ["/usr/bin/journalctl", "/bin/journalctl"];
/// Newest entries first, so a cut at the budget keeps the newest.
const JOURNALCTL_ARGS: [&str; 4] = ["--no-pager", "--reverse", "--output", "short-iso-precise"];

/// Files a source lists in `logs.csv` after its budget is spent; older ones are counted.
const MAX_SKIPPED_LISTED: usize = 100;

const INDEX_HEADER: [&str; 8] = ["source", "path", "size", "copied_bytes", "truncated", "mtime_utc", "output", "note"];

impl Collector for Logs {
    fn name(&self) -> &'static str {
        "logs"
    }

    fn folder(&self) -> &'static str {
        "Logs"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        let mut index = Index::default();
        for (source, dir, name) in TEXT_LOGS {
            let files = rotations(ctx, dir, name, &mut index.problems);
            copy_source(ctx, sink, &mut index, source, files)?;
            ctx.check_cancelled()?;
        }
        let journal = journal_files(ctx, &mut index.problems);
        let journal_found = !journal.is_empty();
        let copied = copy_source(ctx, sink, &mut index, "journal", journal)?;
        let mut commands = CommandLog::default();
        if journal_found && copied == 0 {
            // The newest journal file alone is over the budget: its newest entries as text.
            let source = super::command::command_line(JOURNALCTL[0], &JOURNALCTL_ARGS);
            sink.file("journal/journalctl.txt", &source, |out| {
                let args = (&JOURNALCTL[..], &JOURNALCTL_ARGS[..]);
                commands.run(ctx, args, "journal/journalctl.txt", ctx.limits.max_log_bytes, out)
            })?;
        }
        commands.write(sink)?;
        index.write(sink)?;
        ctx.check_cancelled()
    }
}

/// Whether `name` is a journal file (an unclean one ends in `~`).
fn is_journal_file(name: &str) -> bool {
    name.ends_with(".journal") || name.ends_with(".journal~")
}

/// Whether file `entry` is log `name` or one of its rotations.
fn is_rotation_of(entry: &str, name: &str) -> bool {
    entry == name || entry.strip_prefix(name).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
}

/// Whether this collector takes the file at host path `abs` (when it is a regular file
/// and its source's budget allows): the triage `All logs/` leaves these to `Logs/`.
pub(crate) fn taken_by_logs(abs: &str) -> bool {
    let Some((dir, file)) = abs.rsplit_once('/') else {
        return false;
    };
    let journal = JOURNAL_DIRS.iter().any(|(journal, _)| abs.strip_prefix(journal).is_some_and(|r| r.starts_with('/')))
        && is_journal_file(file);
    journal || TEXT_LOGS.iter().any(|(_, log_dir, name)| dir == *log_dir && is_rotation_of(file, name))
}

/// `name` and its rotations in `dir`, newest first.
fn rotations(ctx: &Context, dir: &str, name: &str, problems: &mut Problems) -> Vec<LogFile> {
    let folder = dir.strip_prefix("/var/log").unwrap_or(dir).trim_start_matches('/');
    let members =
        dir_entries(ctx, dir, problems).into_iter().filter(|entry| is_rotation_of(&entry.to_string_lossy(), name));
    let mut files = log_files(ctx, dir, members, |file| {
        let name = if folder.is_empty() { name_part(file) } else { format!("{folder}/{}", name_part(file)) };
        (name, compressed(file))
    });
    newest_first(&mut files);
    files
}

/// The `*.journal` (and unclean `*.journal~`) files of every machine directory, newest
/// first.
fn journal_files(ctx: &Context, problems: &mut Problems) -> Vec<LogFile> {
    let mut files = Vec::new();
    for (dir, folder) in JOURNAL_DIRS {
        for machine in dir_entries(ctx, dir, problems) {
            let machine = machine.to_string_lossy().into_owned();
            let machine_dir = format!("{dir}/{machine}");
            if !ctx.path(&machine_dir).is_dir() {
                continue;
            }
            let journals = dir_entries(ctx, &machine_dir, problems)
                .into_iter()
                .filter(|entry| is_journal_file(&entry.to_string_lossy()));
            let package_dir = format!("{folder}/{}", name_part(&machine));
            files.extend(log_files(ctx, &machine_dir, journals, |file| {
                (format!("{package_dir}/{}", name_part(file)), true)
            }));
        }
    }
    newest_first(&mut files);
    files
}

/// The regular files among `names` in `dir`; `package` gives each its name in the
/// package and whether it must be copied whole.
fn log_files(
    ctx: &Context,
    dir: &str,
    names: impl Iterator<Item = OsString>,
    package: impl Fn(&str) -> (String, bool),
) -> Vec<LogFile> {
    names
        .filter_map(|name| {
            let path = ctx.path(dir).join(&name);
            let meta = std::fs::metadata(&path).ok().filter(Metadata::is_file)?;
            let name = name.to_string_lossy();
            let (package_name, whole_only) = package(&name);
            let stat = Stat::of(&meta);
            Some(LogFile { abs: format!("{dir}/{name}"), name: package_name, path, stat, whole_only })
        })
        .collect()
}

/// Copies `files` newest first within the source's budget, listing them in the index;
/// returns how many were copied.
fn copy_source(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    index: &mut Index,
    source: &str,
    files: Vec<LogFile>,
) -> Result<usize, PackageError> {
    let mut copied = 0;
    let mut skipped = 0;
    copy_newest(ctx, sink, &files, ctx.limits.max_log_bytes, &|file| open_regular(&file.path), &mut |file, taken| {
        match taken {
            LogTaken::Copied(done) => {
                copied += 1;
                index.row(source, file, Some(done), &file.name, "");
            }
            LogTaken::Unreadable(why) => index.row(source, file, None, &file.name, &why),
            LogTaken::OverBudget => {
                skipped += 1;
                if skipped <= MAX_SKIPPED_LISTED {
                    index.row(source, file, None, "", "over the budget for this source: not copied");
                }
            }
        }
    })?;
    if skipped > MAX_SKIPPED_LISTED {
        let more = skipped - MAX_SKIPPED_LISTED;
        index.problems.add("older files not listed", format!("{source}: {more}"));
    }
    Ok(copied)
}

/// `logs.csv`, kept in memory until the end: a row per file, at most a few hundred.
#[derive(Default)]
struct Index {
    rows: Vec<[String; 8]>,
    problems: Problems,
}

impl Index {
    fn row(&mut self, source: &str, file: &LogFile, copied: Option<Copied>, output: &str, note: &str) {
        self.rows.push([
            source.to_owned(),
            file.abs.clone(),
            file.stat.size.to_string(),
            copied.map_or(0, |c| c.bytes).to_string(),
            copied.is_none_or(|c| c.truncated).to_string(),
            utc_timestamp(file.stat.mtime),
            output.to_owned(),
            note.to_owned(),
        ]);
    }

    fn write(&self, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
        let source =
            "/var/log/{auth.log,secure,syslog,messages,kern.log,audit/audit.log}*, /var/log/journal, /run/log/journal";
        csv_file(sink, "logs.csv", source, &INDEX_HEADER, |csv| {
            for row in &self.rows {
                csv.row(row)?;
            }
            Ok(if self.rows.is_empty() && self.problems.is_empty() {
                ItemOutcome::not_applicable("no logs found")
            } else {
                self.problems.outcome()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use casefile_package::ItemStatus;

    use crate::Limits;
    use crate::collectors::test_support::{Fixture, find_row, run, run_live, run_with};

    use super::*;

    /// Sets the modification time `age` seconds in the past.
    fn age(f: &Fixture, abs: &str, age: u64) {
        let file = std::fs::File::options().write(true).open(f.path(abs)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age)).unwrap();
    }

    fn index(sink: &crate::collectors::test_support::MemorySink) -> Vec<HashMap<String, String>> {
        sink.item("logs.csv").rows()
    }

    #[test]
    fn a_source_over_its_budget_keeps_the_newest() {
        let f = Fixture::new();
        let lines = |tag: &str, n: usize| -> String { (0..n).map(|i| format!("{tag} line {i:04}\n")).collect() };
        // Newest: auth.log (300 bytes), then auth.log.1 (300), auth.log.2.gz, auth.log.3.gz.
        f.write("/var/log/auth.log", lines("current", 20));
        f.write("/var/log/auth.log.1", lines("older", 20));
        f.write("/var/log/auth.log.2.gz", vec![0x1f; 100]);
        f.write("/var/log/auth.log.3.gz", vec![0x1f; 10]);
        f.write("/var/log/authorized.txt", "not a rotation\n");
        age(&f, "/var/log/auth.log.1", 100);
        age(&f, "/var/log/auth.log.2.gz", 200);
        age(&f, "/var/log/auth.log.3.gz", 300);
        let limits = Limits { max_log_bytes: 450, ..Limits::default() };
        let sink = run_with(&Logs, f.root(), limits);

        assert_eq!(sink.item("auth.log").text(), lines("current", 20));
        assert_eq!(sink.item("auth.log").status(), ItemStatus::Ok);
        // 150 bytes of the budget are left for auth.log.1: its newest lines.
        let older = sink.item("auth.log.1");
        assert_eq!(older.status(), ItemStatus::Partial);
        assert!(older.text().ends_with("older line 0019\n"));
        assert!(older.text().starts_with("older line "));
        assert!(!sink.names().iter().any(|n| n.ends_with(".gz")), "nothing older than the cut");
        assert!(!sink.names().contains(&"authorized.txt"));

        let rows = index(&sink);
        assert_eq!(rows.len(), 4);
        let current = find_row(&rows, "path", "/var/log/auth.log");
        assert_eq!((current["source"].as_str(), current["truncated"].as_str()), ("auth", "false"));
        assert_eq!(current["copied_bytes"], current["size"]);
        let cut = find_row(&rows, "path", "/var/log/auth.log.1");
        assert_eq!(cut["truncated"], "true");
        assert_eq!(cut["copied_bytes"], older.bytes.len().to_string());
        let gz = find_row(&rows, "path", "/var/log/auth.log.3.gz");
        assert_eq!((gz["copied_bytes"].as_str(), gz["output"].as_str()), ("0", ""));
        assert_eq!(gz["note"], "over the budget for this source: not copied");
    }

    #[test]
    fn compressed_rotations_are_copied_whole_when_they_fit() {
        let f = Fixture::new();
        f.write("/var/log/secure", "now\n");
        f.write("/var/log/secure-20240101.gz", vec![0x1f; 64]);
        f.write("/var/log/audit/audit.log", "type=USER_LOGIN msg=audit(1700000000.000:1)\n");
        age(&f, "/var/log/secure-20240101.gz", 1000);
        let sink = run(&Logs, f.root());
        assert_eq!(sink.item("secure-20240101.gz").bytes, vec![0x1f; 64]);
        assert_eq!(sink.item("audit/audit.log").source, "/var/log/audit/audit.log");
        assert_eq!(find_row(&index(&sink), "path", "/var/log/audit/audit.log")["source"], "audit");
        assert_eq!(sink.item("logs.csv").status(), ItemStatus::Ok);
    }

    #[test]
    fn journal_files_newest_first_within_the_budget() {
        let f = Fixture::new();
        let machine = "0123456789abcdef0123456789abcdef";
        f.write(&format!("/var/log/journal/{machine}/system.journal"), vec![1u8; 100]);
        f.write(&format!("/var/log/journal/{machine}/system@0001-0002.journal"), vec![2u8; 100]);
        f.write(&format!("/var/log/journal/{machine}/user-1000.journal~"), vec![3u8; 100]);
        f.write(&format!("/run/log/journal/{machine}/system.journal"), vec![4u8; 100]);
        f.write(&format!("/var/log/journal/{machine}/notes.txt"), "x");
        age(&f, &format!("/var/log/journal/{machine}/system@0001-0002.journal"), 100);
        age(&f, &format!("/var/log/journal/{machine}/user-1000.journal~"), 200);
        age(&f, &format!("/run/log/journal/{machine}/system.journal"), 300);
        let limits = Limits { max_log_bytes: 250, ..Limits::default() };
        let sink = run_with(&Logs, f.root(), limits);
        assert_eq!(sink.item(&format!("journal/{machine}/system.journal")).bytes, vec![1u8; 100]);
        assert_eq!(sink.item(&format!("journal/{machine}/system@0001-0002.journal")).status(), ItemStatus::Ok);
        // A journal file cannot be cut: the third does not fit and is left out.
        let rows = index(&sink);
        assert_eq!(rows.len(), 4);
        let left_out = find_row(&rows, "path", &format!("/var/log/journal/{machine}/user-1000.journal~"));
        assert_eq!(left_out["copied_bytes"], "0");
        assert!(!sink.names().iter().any(|n| n.starts_with("run-journal")));
        assert!(!sink.names().contains(&"journal/journalctl.txt"));
    }

    #[test]
    fn a_journal_file_over_the_budget_is_not_cut_and_no_program_runs_on_a_fixture() {
        let f = Fixture::new();
        f.write("/var/log/journal/m/system.journal", vec![1u8; 1000]);
        let limits = Limits { max_log_bytes: 100, ..Limits::default() };
        let sink = run_with(&Logs, f.root(), limits);
        assert_eq!(sink.item("journal/journalctl.txt").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("commands.csv").status(), ItemStatus::NotApplicable);
        assert_eq!(index(&sink)[0]["copied_bytes"], "0");
    }

    #[test]
    fn a_fifo_named_like_a_log_does_not_hang() {
        let f = Fixture::new();
        f.mkdir("/var/log");
        f.fifo("/var/log/syslog");
        f.write("/var/log/syslog.1", "old\n");
        let sink = run(&Logs, f.root());
        assert!(!sink.names().contains(&"syslog"), "a FIFO is no log file");
        assert_eq!(sink.item("syslog.1").text(), "old\n");
    }

    #[test]
    fn no_logs_at_all() {
        let sink = run(&Logs, Fixture::new().root());
        assert_eq!(sink.item("logs.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn live_logs_do_not_fail() {
        let sink = run_live(&Logs);
        for item in &sink.items {
            assert_ne!(item.status(), ItemStatus::Failed, "{}: {:?}", item.name, item.outcome);
        }
    }
}
