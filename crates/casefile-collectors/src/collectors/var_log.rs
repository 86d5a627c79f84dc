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
    Budget, COMPRESSED, Index, LogFile, LogTaken, RootDir, Stat, Status, Taken, copy_newest, newest_first, shown,
};
use super::logs::taken_by_logs;
use super::walk::{Found, Walk, Walked};

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
            match found {
                Found::Mount { path, .. } => index.not_a_file(shown(ctx, path), path, Stat::unknown("mount"), ""),
                Found::Entry { meta, .. } if meta.is_dir() => {}
                Found::Entry { path, meta, .. } if !meta.is_file() => {
                    index.not_a_file(shown(ctx, path), path, Stat::of(meta), "");
                }
                Found::Entry { shown: lossy, path, meta } => {
                    let abs = shown(ctx, path);
                    let stat = Stat::of(meta);
                    if taken_by_logs(lossy) {
                        let note = "taken by the standard logs collector: see Logs/logs.csv".to_owned();
                        index.left_out(abs, stat, "", Status::Elsewhere, note);
                        return Ok(());
                    }
                    let (dir, file) = abs.rsplit_once('/').unwrap_or(("", &abs));
                    let source = format!("{dir}/{}", source_key(file));
                    let name = lossy.strip_prefix(TOP).unwrap_or(lossy).trim_start_matches('/').to_owned();
                    let whole_only = COMPRESSED.iter().any(|ext| file.ends_with(ext));
                    let log = LogFile { abs, path: path.to_path_buf(), name, stat, whole_only };
                    sources.push((source, log));
                }
            }
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
    let open = |path: &std::path::Path| root.open_file(path);
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
                LogTaken::Unreadable => {
                    let why = Taken::Failed("could not be read: the manifest says why".to_owned());
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
