//! A bounded walk of a directory tree below the root, shared by the collectors that list
//! or copy whole trees (`/tmp`, `/var/log`, `/etc`).
//!
//! The walk never follows a symbolic link, so link loops cost nothing; it keeps one open
//! directory per level (at most `max_depth`), lists at most `max_entries` entries, and
//! does not step onto another file system: a FUSE mount whose daemon hangs would
//! otherwise hang the agent on its first `stat`. Mount points are reported, not entered.

use std::fs::{Metadata, ReadDir};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use casefile_package::ItemOutcome;

use crate::Context;

use super::common::{CANCELLED, Problems, is_missing};
use super::disks::Mounts;

/// What the walk meets.
pub(crate) enum Found<'e> {
    /// An entry (or the top itself when it is no directory), examined without following
    /// links. `shown` is its host path, lossily UTF-8.
    Entry { shown: &'e str, path: &'e Path, meta: &'e Metadata },
    /// A mount point below the top: listed, not entered.
    Mount { shown: &'e str, path: &'e Path, fs_type: &'e str },
}

/// How a walk of one top directory ended.
pub(crate) enum Walked {
    Done,
    /// The top does not exist.
    Missing,
    /// Cancelled or over the entry cap; the outcome says which.
    Stopped(ItemOutcome),
}

pub(crate) struct Walk<'a> {
    ctx: &'a Context,
    mounts: Mounts,
    max_depth: usize,
    max_entries: usize,
    entries: usize,
    pub(crate) problems: Problems,
}

/// A directory being listed: its open handle and its path as shown.
struct Level {
    entries: ReadDir,
    shown: String,
}

impl<'a> Walk<'a> {
    /// A walk of at most `max_entries` entries in all (over every top walked) and
    /// `max_depth` levels below each top.
    pub(crate) fn new(ctx: &'a Context, max_depth: usize, max_entries: usize) -> Self {
        Self { ctx, mounts: Mounts::load(ctx), max_depth, max_entries, entries: 0, problems: Problems::default() }
    }

    /// Walks `top` (a host path), calling `visit` for every entry (directories before
    /// what they hold).
    pub(crate) fn walk<E>(
        &mut self,
        top: &str,
        visit: &mut dyn FnMut(Found<'_>) -> Result<(), E>,
    ) -> Result<Walked, E> {
        let path = self.ctx.path(top);
        let meta = match path.symlink_metadata() {
            Ok(meta) => meta,
            Err(e) if is_missing(&e) => return Ok(Walked::Missing),
            Err(e) => {
                self.problems.add("unreadable directories", format!("{top}: {e}"));
                return Ok(Walked::Done);
            }
        };
        if !meta.is_dir() {
            visit(Found::Entry { shown: top, path: &path, meta: &meta })?;
            return Ok(Walked::Done);
        }
        let device = meta.dev();
        let mut stack = Vec::with_capacity(self.max_depth);
        if let Some(level) = self.open(&path, top.to_owned()) {
            stack.push(level);
        }
        while let Some(level) = stack.last_mut() {
            let entry = match level.entries.next() {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    self.problems.add("unreadable directories", format!("{}: {e}", level.shown));
                    stack.pop();
                    continue;
                }
                Some(Ok(entry)) => entry,
            };
            if self.ctx.cancel.is_cancelled() {
                return Ok(Walked::Stopped(ItemOutcome::partial(CANCELLED)));
            }
            self.entries += 1;
            if self.entries > self.max_entries {
                let why = format!("listed the first {} entries", self.max_entries);
                return Ok(Walked::Stopped(ItemOutcome::partial(why)));
            }
            let shown = format!("{}/{}", level.shown, entry.file_name().to_string_lossy());
            let path = entry.path();
            if let Some(fs_type) = self.mounts.at(&shown) {
                visit(Found::Mount { shown: &shown, path: &path, fs_type })?;
                continue;
            }
            // `DirEntry::metadata` does not follow links.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => continue,
                Err(e) => {
                    self.problems.add("entries that could not be examined", format!("{shown}: {e}"));
                    continue;
                }
            };
            visit(Found::Entry { shown: &shown, path: &path, meta: &meta })?;
            let depth = stack.len();
            if meta.is_dir() && meta.dev() == device && depth < self.max_depth {
                if let Some(level) = self.open(&path, shown) {
                    stack.push(level);
                }
            } else if meta.is_dir() && meta.dev() != device {
                self.problems.add("other file systems not entered", shown);
            }
        }
        Ok(Walked::Done)
    }

    fn open(&mut self, path: &PathBuf, shown: String) -> Option<Level> {
        match std::fs::read_dir(path) {
            Ok(entries) => Some(Level { entries, shown }),
            // Files come and go while we look.
            Err(e) if is_missing(&e) => None,
            Err(e) => {
                self.problems.add("unreadable directories", format!("{shown}: {e}"));
                None
            }
        }
    }
}

/// The type of an entry as the listings name it.
pub(crate) fn file_type(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_file() {
        "file"
    } else if kind.is_dir() {
        "dir"
    } else if kind.is_symlink() {
        "symlink"
    } else if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "char"
    } else if kind.is_block_device() {
        "block"
    } else {
        "other"
    }
}
