//! `Filesystem timeline/` (triage): one walk of every local file system from the root
//! writes
//! - `bodyfile.txt`: a Sleuth Kit 3.x bodyfile (`mactime -b bodyfile.txt` makes the
//!   timeline) with one line per entry; names are host paths (`/etc/passwd`), escaped as
//!   [`bodyfile`] describes, symbolic links as `name -> target` (never followed), birth
//!   time from `statx` where the file system keeps one (else 0);
//! - `findings.csv`: SUID/SGID files, files with capabilities, immutable and append-only
//!   files, world-writable files and directories outside `/tmp`-like places, files whose
//!   uid or gid has no name in the root's `/etc/passwd` / `/etc/group`, hidden entries
//!   under `/tmp`, `/var/tmp`, `/dev/shm`, `/etc` and `/usr`, mounts not walked, and
//!   directories that could not be read;
//! - `executables.csv`: the SHA-256 of every regular file with an execute bit below the
//!   `PATH` directories (and what they link to), `/tmp`, `/var/tmp`, `/dev/shm` and the
//!   home directories, within the per-file cap and the collector's total byte budget.
//!
//! The walk (see [`walk`]) reads the mount table below the root to skip pseudo, network
//! and FUSE file systems (without one it stays on the root's device), uses only `statx`
//! per entry (relative to an open directory, links not followed) and opens nothing but
//! executable regular files (`O_NONBLOCK | O_NOFOLLOW | O_NOATIME`), for their
//! capabilities and hashes. What it holds: one open directory and its read buffer (at
//! most about 24 KiB, filled by `getdents64`) per level (at most [`walk::MAX_DEPTH`]
//! levels), the current path, the device, inode and SHA-256 of at most
//! [`walk::MAX_HASHED_LINKS`] hard-linked executables (48 bytes each; past the cap a link
//! is hashed again), and the rows of the two CSV files (see [`spool`]); not the entries of
//! a directory, so a directory of a million files costs no more memory than one of ten.

use std::collections::HashMap;
use std::path::{Component, Path};

use casefile_package::{ItemOutcome, ItemSink};

use crate::{CollectError, Collector, Context};

use super::accounts::{GROUP, PASSWD, UserNames, group_fields, homes};
use super::common::{open_lines, open_regular};

pub(crate) mod bodyfile;
mod mountinfo;
mod spool;
#[cfg(test)]
mod tests;
mod walk;

use bodyfile::escape_into;
use mountinfo::MountPlan;

pub struct Timeline;

/// The executable search path whose programs are hashed.
const PATH_DIRS: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
/// Where anyone may write: world-writable entries there are expected.
const TMP_LIKE: [&str; 7] = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/run/shm", "/var/crash"];
/// Where a hidden name is worth a look.
const HIDDEN_WATCHED: [&str; 5] = ["/tmp", "/var/tmp", "/dev/shm", "/etc", "/usr"];
const TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// Bits of a directory's scope, inherited by everything below it.
pub(crate) const HASHED: u8 = 1;
pub(crate) const TMP: u8 = 2;
pub(crate) const WATCHED: u8 = 4;

const SOURCE: &str = "every local file system from / (statx, links not followed; /proc/self/mountinfo)";

impl Collector for Timeline {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn folder(&self) -> &'static str {
        "Filesystem timeline"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        ctx.check_cancelled()?;
        let plan = Plan::load(ctx);
        let mut walk = walk::Walk::new(ctx, &plan);
        sink.file("bodyfile.txt", SOURCE, |out| walk.run(out))?;
        let walked = walk.outcome();
        let (findings, executables, hashing) = walk.into_tables();
        let source = "the walk of bodyfile.txt, /etc/passwd, /etc/group";
        sink.file("findings.csv", source, |out| {
            let dropped = findings.dropped;
            findings.replay(out)?;
            Ok(table_outcome(&walked, dropped))
        })?;
        let source = "the walk of bodyfile.txt: PATH directories, /tmp, /var/tmp, /dev/shm, homes";
        sink.file("executables.csv", source, |out| {
            let dropped = executables.dropped;
            executables.replay(out)?;
            let outcome = table_outcome(&walked, dropped);
            Ok(match (outcome.error, hashing) {
                (None, None) => ItemOutcome::ok(),
                (walked, hashing) => {
                    ItemOutcome::partial(walked.into_iter().chain(hashing).collect::<Vec<_>>().join("; "))
                }
            })
        })?;
        ctx.check_cancelled()
    }
}

/// A table made from the walk is as complete as the walk, less the rows it could not keep.
fn table_outcome(walked: &ItemOutcome, dropped: u64) -> ItemOutcome {
    let mut notes: Vec<String> = walked.error.iter().map(|e| format!("walk: {e}")).collect();
    if dropped > 0 {
        notes.push(format!("{dropped} rows could not be kept (no room for the temporary file)"));
    }
    if notes.is_empty() { ItemOutcome::ok() } else { ItemOutcome::partial(notes.join("; ")) }
}

/// What the walk needs to know before it starts.
pub(crate) struct Plan {
    pub(crate) mounts: MountPlan,
    /// Escaped host paths of directories that start a scope, with its bits.
    scopes: Vec<(Vec<u8>, u8)>,
    pub(crate) users: Option<UserNames>,
    pub(crate) groups: Option<HashMap<u32, String>>,
}

impl Plan {
    pub(crate) fn load(ctx: &Context) -> Self {
        let mut scopes: Vec<(Vec<u8>, u8)> = Vec::new();
        let mut add = |abs: &str, bit: u8| {
            // A scope is where its files really are: `/bin` is `/usr/bin` on merged-/usr
            // systems, and the walk, which never follows links, finds them there once.
            let Some(real) = resolve(ctx, abs) else { return };
            if real == "/" {
                return;
            }
            let mut shown = Vec::new();
            escape_into(&mut shown, real.as_bytes());
            match scopes.iter_mut().find(|(path, _)| *path == shown) {
                Some((_, bits)) => *bits |= bit,
                None => scopes.push((shown, bit)),
            }
        };
        let home_dirs: Vec<String> = homes(ctx).into_iter().map(|h| h.dir).collect();
        PATH_DIRS
            .iter()
            .chain(&TEMP_DIRS)
            .copied()
            .chain(home_dirs.iter().map(String::as_str))
            .for_each(|d| add(d, HASHED));
        TMP_LIKE.iter().for_each(|d| add(d, TMP));
        HIDDEN_WATCHED.iter().for_each(|d| add(d, WATCHED));
        let users = open_regular(&ctx.path(PASSWD)).is_ok().then(|| UserNames::load(ctx));
        Self { mounts: MountPlan::load(ctx), scopes, users, groups: load_groups(ctx) }
    }

    /// The scope bits directory `shown` starts.
    pub(crate) fn scope_of(&self, shown: &[u8]) -> u8 {
        self.scopes.iter().filter(|(path, _)| path == shown).fold(0, |bits, (_, bit)| bits | bit)
    }
}

/// gid → group name from the root's `/etc/group`; `None` when it cannot be read (then no
/// gid is called nameless).
fn load_groups(ctx: &Context) -> Option<HashMap<u32, String>> {
    let mut lines = open_lines(&ctx.path(GROUP)).ok()?;
    let mut groups = HashMap::new();
    while let Ok(Some(line)) = lines.next_line() {
        let line = String::from_utf8_lossy(line);
        if let Some([name, _, gid, _]) = group_fields(&line)
            && let Ok(gid) = gid.parse::<u32>()
        {
            groups.entry(gid).or_insert_with(|| name.to_owned());
        }
    }
    Some(groups)
}

/// Most links followed while resolving one path (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The host path `abs` names once symbolic links are followed, staying below the root
/// (an absolute link target starts again at the root, `..` stops at it). `None` when a
/// part is missing or the links go round.
pub(crate) fn resolve(ctx: &Context, abs: &str) -> Option<String> {
    let mut pending: Vec<String> = abs.split('/').rev().map(str::to_owned).collect();
    let mut resolved = String::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.truncate(resolved.rfind('/').unwrap_or(0));
                continue;
            }
            _ => {}
        }
        let candidate = format!("{resolved}/{part}");
        let meta = ctx.path(&candidate).symlink_metadata().ok()?;
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return None;
        }
        let target = std::fs::read_link(ctx.path(&candidate)).ok()?;
        let target = target.to_str()?;
        if Path::new(target).components().next() == Some(Component::RootDir) {
            resolved.clear();
        }
        pending.extend(target.split('/').rev().map(str::to_owned));
    }
    Some(if resolved.is_empty() { "/".to_owned() } else { resolved })
}
