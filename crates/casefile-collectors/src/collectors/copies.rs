//! What the collectors that copy many host files share: opening a file below the root
//! without following any link, log files taken newest first within a budget, the index
//! of every file met (`index.csv`), and secrets recorded by hash only (`secrets.csv`).

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::Context;

use super::common::{Copied, FileHasher, Problems, copy_head, copy_tail, csv_file, utc_timestamp};
use super::walk::{Found, file_type};

/// Opens regular files below the root without following a symbolic link anywhere on the
/// way: a log directory writable by a service account (`/var/log/postgresql`) must not
/// let that account swap in a link, or a linked directory, to `/etc/shadow`.
pub(crate) struct RootDir {
    root: PathBuf,
    fd: Option<OwnedFd>,
}

impl RootDir {
    pub(crate) fn open(ctx: &Context) -> Self {
        let fd = rustix::fs::open(&ctx.root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok();
        Self { root: ctx.root.clone(), fd }
    }

    /// Opens `path` (below the root) for reading if it is a regular file reached
    /// through no link. Non-blocking, so a FIFO swapped in cannot hang the agent.
    pub(crate) fn open_file(&self, path: &Path) -> io::Result<File> {
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "outside the root"))?;
        match &self.fd {
            Some(fd) => open_beneath(fd.as_fd(), rel),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "the root could not be opened")),
        }
    }

    /// [`open_file`](Self::open_file), refusing a file that is not the one a walk
    /// recorded in `stat` (device and inode): a folder swapped for a link, or a file
    /// swapped for another, between the walk and the copy.
    pub(crate) fn open_found(&self, path: &Path, stat: &Stat) -> io::Result<File> {
        let file = self.open_file(path)?;
        same_file(&file, stat)?;
        Ok(file)
    }
}

/// Fails unless `file` is the file (device, inode) a walk recorded in `stat`.
pub(crate) fn same_file(file: &File, stat: &Stat) -> io::Result<()> {
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (stat.dev, stat.ino) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "replaced since it was listed: not the file found"));
    }
    Ok(())
}

fn link_refused() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "reached through a symbolic link")
}

/// Opens `rel` below the directory `dir` for reading if it is a regular file reached
/// through no symbolic link and without climbing out of `dir`: with `openat2` where the
/// kernel has it (5.6), otherwise one part at a time ([`open_by_parts`]). Non-blocking,
/// so a FIFO swapped in cannot hang the agent. The one way every copying collector
/// opens a file below the root or below a home.
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(dir, rel, flags, Mode::empty(), ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH) {
        Ok(owned) => regular(File::from(owned)),
        Err(rustix::io::Errno::NOSYS) => open_by_parts(dir, rel),
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => Err(link_refused()),
        Err(e) => Err(e.into()),
    }
}

/// What [`open_beneath`] does where `openat2` is missing: each folder opened relative to
/// the one before with `O_NOFOLLOW|O_DIRECTORY`, the file with `O_NOFOLLOW|O_NONBLOCK`,
/// so no part anywhere can be a link, and a folder swapped for a link while the walk
/// ran is refused rather than followed.
pub(crate) fn open_by_parts(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "climbs out of its directory")),
        }
    }
    let Some((last, folders)) = parts.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name"));
    };
    let mut current: Option<OwnedFd> = None;
    for folder in folders {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(at, *folder, flags, Mode::empty()) {
            Ok(next) => current = Some(next),
            // A link with O_NOFOLLOW|O_DIRECTORY: ELOOP, or ENOTDIR on some kernels.
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => return Err(link_refused()),
            Err(e) => return Err(e.into()),
        }
    }
    let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat(at, *last, flags, Mode::empty()) {
        Ok(owned) => regular(File::from(owned)),
        Err(rustix::io::Errno::LOOP) => Err(link_refused()),
        Err(e) => Err(e.into()),
    }
}

fn regular(file: File) -> io::Result<File> {
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// A host path as the indexes show it: UTF-8 kept, but a backslash, control characters
/// (a newline in a file name) and bytes that are not UTF-8 escaped as `\\`, `\n`, `\xNN`,
/// so every name is one readable line and two names never look alike.
pub(crate) fn escaped(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.extend(c.escape_unicode()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `path` below the root as a host path, escaped (see [`escaped`]).
pub(crate) fn shown(ctx: &Context, path: &Path) -> String {
    match path.strip_prefix(&ctx.root) {
        Ok(rel) => format!("/{}", escaped(rel)),
        Err(_) => escaped(path),
    }
}

/// What the indexes say of every entry: its type, size, owner, mode and times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) kind: &'static str,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: i64,
    pub(crate) ctime: i64,
    /// Device and inode: which file it was, to find it again when opened.
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl Stat {
    /// An entry that was not examined (a mount point).
    pub(crate) fn unknown(kind: &'static str) -> Self {
        Self { kind, size: 0, mode: 0, uid: 0, gid: 0, mtime: 0, ctime: 0, dev: 0, ino: 0 }
    }

    pub(crate) fn of(meta: &Metadata) -> Self {
        Self {
            kind: file_type(meta),
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            ctime: meta.ctime(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A regular file a walk found.
pub(crate) struct Regular<'e> {
    /// Host path, lossily UTF-8: for names in the package.
    pub(crate) lossy: &'e str,
    pub(crate) path: &'e Path,
    /// Host path, escaped: for the index and the manifest.
    pub(crate) abs: String,
    pub(crate) stat: Stat,
}

/// What became of a file, as the `status` column says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Copied whole.
    Copied,
    /// Part of it copied (cut at a cap, or it changed while copied).
    Partial,
    /// Not copied (budget, not a regular file, unreadable): the note says why.
    NotCopied,
    /// A secret: in `secrets.csv` by hash only.
    Secret,
    /// Already in another folder of the package, which the note names.
    Elsewhere,
    /// No regular file (a link, a FIFO, a device, a mount point): listed, never opened.
    Listed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Copied => "copied",
            Self::Partial => "partial",
            Self::NotCopied => "not copied",
            Self::Secret => "secret",
            Self::Elsewhere => "elsewhere",
            Self::Listed => "listed",
        }
    }
}

/// One row of an `index.csv`.
pub(crate) struct IndexRow {
    pub(crate) path: String,
    pub(crate) stat: Stat,
    /// The log source, the user, or the top directory the file belongs to.
    pub(crate) category: String,
    pub(crate) status: Status,
    pub(crate) copied_bytes: u64,
    /// The file's name in the folder, empty when it was not copied.
    pub(crate) output: String,
    pub(crate) note: String,
}

pub(crate) const INDEX_HEADER: [&str; 12] =
    ["path", "type", "size", "mode", "uid", "gid", "mtime_utc", "category", "status", "copied_bytes", "output", "note"];

/// The rows of an `index.csv`, kept until the end since the package holds one file at
/// a time; bounded by the walk's entry cap.
#[derive(Default)]
pub(crate) struct Index {
    rows: Vec<IndexRow>,
    pub(crate) problems: Problems,
}

impl Index {
    pub(crate) fn push(&mut self, row: IndexRow) {
        self.rows.push(row);
    }

    /// A row for a file left out, with the reason.
    pub(crate) fn left_out(&mut self, path: String, stat: Stat, category: &str, status: Status, note: String) {
        let category = category.to_owned();
        self.push(IndexRow { path, stat, category, status, copied_bytes: 0, output: String::new(), note });
    }

    /// A row for an entry that is no regular file: listed, never opened, a link never
    /// followed.
    pub(crate) fn not_a_file(&mut self, abs: String, path: &Path, stat: Stat, category: &str) {
        let note = if stat.kind == "symlink" {
            let target = std::fs::read_link(path).map(|t| escaped(&t)).unwrap_or_default();
            format!("symbolic link to {target}: not followed")
        } else if stat.kind == "mount" {
            "mount point: not entered".to_owned()
        } else {
            format!("a {}: not opened", stat.kind)
        };
        self.left_out(abs, stat, category, Status::Listed, note);
    }

    /// The regular file the walk found, or `None` once anything else is listed
    /// (directories are not: their files are).
    pub(crate) fn regular_file<'e>(&mut self, ctx: &Context, found: Found<'e>, category: &str) -> Option<Regular<'e>> {
        match found {
            Found::Mount { path, .. } => self.not_a_file(shown(ctx, path), path, Stat::unknown("mount"), category),
            Found::Entry { meta, .. } if meta.is_dir() => {}
            Found::Entry { path, meta, .. } if !meta.is_file() => {
                self.not_a_file(shown(ctx, path), path, Stat::of(meta), category);
            }
            Found::Entry { shown: lossy, path, meta } => {
                return Some(Regular { lossy, path, abs: shown(ctx, path), stat: Stat::of(meta) });
            }
        }
        None
    }

    /// Notes how a walk ended when it did not finish.
    pub(crate) fn walk_stopped(&mut self, top: &str, outcome: &ItemOutcome) {
        self.problems.add("walks stopped", format!("{top}: {}", outcome.error.as_deref().unwrap_or_default()));
    }

    /// A row for a file copied, or tried.
    pub(crate) fn copied(&mut self, path: String, stat: Stat, category: &str, output: &str, copied: &Taken) {
        let (status, copied_bytes, note) = match copied {
            Taken::Done(done) => {
                let outcome = done.outcome();
                let status = if outcome.error.is_some() { Status::Partial } else { Status::Copied };
                (status, done.bytes, outcome.error.unwrap_or_default())
            }
            Taken::Failed(why) => (Status::NotCopied, 0, why.clone()),
        };
        let output =
            if copied_bytes > 0 || matches!(copied, Taken::Done(_)) { output.to_owned() } else { String::new() };
        self.push(IndexRow { path, stat, category: category.to_owned(), status, copied_bytes, output, note });
    }

    /// Writes `index.csv`; `none` is the note when nothing at all was found.
    pub(crate) fn write(&self, sink: &mut dyn ItemSink, source: &str, none: &str) -> Result<(), PackageError> {
        csv_file(sink, "index.csv", source, &INDEX_HEADER, |csv| {
            for row in &self.rows {
                let stat = &row.stat;
                csv.row([
                    row.path.as_str(),
                    stat.kind,
                    &stat.size.to_string(),
                    &format!("{:04o}", stat.mode),
                    &stat.uid.to_string(),
                    &stat.gid.to_string(),
                    &utc_timestamp(stat.mtime),
                    &row.category,
                    row.status.as_str(),
                    &row.copied_bytes.to_string(),
                    &row.output,
                    &row.note,
                ])?;
            }
            Ok(if self.rows.is_empty() && self.problems.is_empty() {
                ItemOutcome::not_applicable(none)
            } else {
                self.problems.outcome()
            })
        })
    }
}

/// How copying one file went.
pub(crate) enum Taken {
    Done(Copied),
    /// Not read, for the reason given.
    Failed(String),
}

/// Copies the open `file` into the package as `name`: its beginning, or its newest part
/// when `tail` (files that grow at the end), up to `limit` bytes.
pub(crate) fn copy_open_file(
    sink: &mut dyn ItemSink,
    (name, source): (&str, &str),
    file: File,
    limit: u64,
    tail: bool,
) -> Result<Taken, PackageError> {
    let mut result = Taken::Failed("not read".to_owned());
    sink.file(name, source, |out| {
        let copy = if tail { copy_tail } else { copy_head };
        match copy(file, out, limit) {
            Ok(done) => {
                result = Taken::Done(done);
                Ok(done.outcome())
            }
            Err(e) => {
                result = Taken::Failed(format!("read failed: {e}"));
                Err(e)
            }
        }
    })?;
    Ok(result)
}

/// The most bytes a collector puts into the package, spent as files are copied.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) total: u64,
    pub(crate) left: u64,
}

impl Budget {
    pub(crate) fn new(total: u64) -> Self {
        Self { total, left: total }
    }

    pub(crate) fn spend(&mut self, bytes: u64) {
        self.left = self.left.saturating_sub(bytes);
    }

    pub(crate) fn note(&self) -> String {
        format!("over the collector's total budget of {} bytes: not copied", self.total)
    }
}

/// Content that marks a private key, whatever the file is called.
const SECRET_MARKERS: [&[u8]; 3] = [b"PRIVATE KEY-----", b"PRIVATE KEY BLOCK-----", b"PuTTY-User-Key-File-"];

/// Reads up to `limit` bytes of `file` looking for a private key: `None` when one is
/// there, otherwise how many bytes were read (what may then be copied: a file that grew
/// since is cut there). The file is rewound. The whole part that would be copied is
/// read, not just its start: a PEM bundle keeps its certificates first, the key after.
pub(crate) fn scan_for_secret(file: &mut File, limit: u64) -> io::Result<Option<u64>> {
    const KEEP: usize = 32;
    let mut buf = vec![0u8; 64 * 1024];
    let mut carried = 0;
    let mut read = 0u64;
    while read < limit {
        let want = (buf.len() - carried).min(usize::try_from(limit - read).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[carried..carried + want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        read += n as u64;
        let end = carried + n;
        let window = &buf[..end];
        if SECRET_MARKERS.iter().any(|m| window.windows(m.len()).any(|w| w == *m)) {
            file.seek(SeekFrom::Start(0))?;
            return Ok(None);
        }
        // Keep the end, where a marker may be cut in two.
        let keep = end.min(KEEP);
        buf.copy_within(end - keep..end, 0);
        carried = keep;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(Some(read))
}

/// A regular file to copy into the package, as [`take_file`] needs it.
pub(crate) struct Wanted<'a> {
    /// Host path as shown (escaped).
    pub(crate) abs: &'a str,
    /// Name in the folder.
    pub(crate) name: &'a str,
    pub(crate) stat: Stat,
    pub(crate) category: &'a str,
    /// Keep the newest part of a file over the cap (histories) instead of its start;
    /// such files are not searched for keys.
    pub(crate) tail: bool,
}

/// What the copying collectors keep between files: the index, the secrets and the
/// collector's budget.
pub(crate) struct Taking {
    pub(crate) index: Index,
    pub(crate) secrets: Secrets,
    pub(crate) budget: Budget,
    max_file: u64,
}

impl Taking {
    pub(crate) fn new(ctx: &Context) -> Self {
        Self {
            index: Index::default(),
            secrets: Secrets::new(ctx),
            budget: Budget::new(ctx.limits.max_total_bytes),
            max_file: ctx.limits.max_file_bytes,
        }
    }

    /// Lists a secret by hash only.
    pub(crate) fn secret(&mut self, wanted: &Wanted<'_>, file: io::Result<File>, reason: &str) {
        self.secrets.record(wanted.abs, wanted.stat, file, reason);
        let note = format!("{reason}: in secrets.csv by hash only");
        self.index.left_out(wanted.abs.to_owned(), wanted.stat, wanted.category, Status::Secret, note);
    }

    /// Copies the opened file within the per-file cap and the budget, unless it holds a
    /// private key (then it goes to `secrets.csv`), and indexes it.
    pub(crate) fn take(
        &mut self,
        sink: &mut dyn ItemSink,
        wanted: &Wanted<'_>,
        file: io::Result<File>,
    ) -> Result<(), PackageError> {
        let (abs, stat, category) = (wanted.abs, wanted.stat, wanted.category);
        let mut file = match file {
            Ok(file) => file,
            Err(e) => {
                self.index.left_out(abs.to_owned(), stat, category, Status::NotCopied, format!("not opened: {e}"));
                return Ok(());
            }
        };
        if stat.size.min(self.max_file) > self.budget.left {
            self.index.left_out(abs.to_owned(), stat, category, Status::NotCopied, self.budget.note());
            return Ok(());
        }
        let limit = if wanted.tail {
            self.max_file
        } else {
            match scan_for_secret(&mut file, self.max_file) {
                Ok(Some(scanned)) => scanned,
                Ok(None) => {
                    self.secret(wanted, Ok(file), "holds a private key");
                    return Ok(());
                }
                Err(e) => {
                    let note = format!("read failed: {e}");
                    self.index.left_out(abs.to_owned(), stat, category, Status::NotCopied, note);
                    return Ok(());
                }
            }
        };
        let taken = copy_open_file(sink, (wanted.name, abs), file, limit, wanted.tail)?;
        if let Taken::Done(done) = &taken {
            self.budget.spend(done.bytes);
        }
        self.index.copied(abs.to_owned(), stat, category, wanted.name, &taken);
        Ok(())
    }

    /// Writes `secrets.csv` and `index.csv`.
    pub(crate) fn write(&self, sink: &mut dyn ItemSink, source: &str, none: &str) -> Result<(), PackageError> {
        self.secrets.write(sink, source)?;
        self.index.write(sink, source, none)
    }
}

/// `secrets.csv`: files whose content is never copied, by name, size, owner, times and
/// hash.
pub(crate) struct Secrets {
    rows: Vec<[String; 10]>,
    hasher: FileHasher,
}

pub(crate) const SECRETS_HEADER: [&str; 10] =
    ["path", "size", "mode", "uid", "gid", "mtime_utc", "ctime_utc", "sha256", "reason", "note"];

impl Secrets {
    pub(crate) fn new(ctx: &Context) -> Self {
        Self { rows: Vec::new(), hasher: FileHasher::new(&ctx.limits) }
    }

    /// Records a secret: hashed from `file` when it could be opened.
    pub(crate) fn record(&mut self, path: &str, stat: Stat, file: io::Result<File>, reason: &str) {
        let (sha256, note) = match file.and_then(|f| self.hasher.hash(f)) {
            Ok(hash) => (hash.hex(), hash.note()),
            Err(e) => (String::new(), format!("not hashed: {e}")),
        };
        self.rows.push([
            path.to_owned(),
            stat.size.to_string(),
            format!("{:04o}", stat.mode),
            stat.uid.to_string(),
            stat.gid.to_string(),
            utc_timestamp(stat.mtime),
            utc_timestamp(stat.ctime),
            sha256,
            reason.to_owned(),
            note,
        ]);
    }

    pub(crate) fn write(&self, sink: &mut dyn ItemSink, source: &str) -> Result<(), PackageError> {
        csv_file(sink, "secrets.csv", source, &SECRETS_HEADER, |csv| {
            for row in &self.rows {
                csv.row(row)?;
            }
            Ok(if self.rows.is_empty() { ItemOutcome::not_applicable("no secrets found") } else { ItemOutcome::ok() })
        })
    }
}

/// A log file found for a source.
pub(crate) struct LogFile {
    /// Host path, as shown.
    pub(crate) abs: String,
    pub(crate) path: PathBuf,
    /// Name in the package.
    pub(crate) name: String,
    pub(crate) stat: Stat,
    /// Compressed logs and journal files are unreadable in part: copied whole or not.
    pub(crate) whole_only: bool,
}

/// Compressed rotations, copied as they are.
pub(crate) fn compressed(name: &str) -> bool {
    COMPRESSED.iter().any(|ext| name.ends_with(ext))
}

/// Endings of compressed files.
pub(crate) const COMPRESSED: [&str; 5] = [".gz", ".xz", ".bz2", ".zst", ".lz4"];

/// By modification time, newest first; on a tie the shorter name (`auth.log` before
/// `auth.log.1`).
pub(crate) fn newest_first(files: &mut [LogFile]) {
    files.sort_by(|a, b| b.stat.mtime.cmp(&a.stat.mtime).then(a.abs.len().cmp(&b.abs.len())).then(a.abs.cmp(&b.abs)));
}

/// What [`copy_newest`] did with one file.
pub(crate) enum LogTaken {
    Copied(Copied),
    /// Left out: the budget was spent, or it is compressed and does not fit whole.
    OverBudget,
    /// It could not be opened (why: a link on the way, a file replaced since the walk)
    /// or read (the item in the package says why).
    Unreadable(String),
}

/// Copies `files` (newest first) within `budget` bytes. A plain text file that does not
/// fit keeps its newest lines (the tail); a compressed one is copied whole or not at
/// all, and older files are then left out so that what is kept has no gaps. Tells
/// `record` about every file; returns the bytes copied.
pub(crate) fn copy_newest(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    files: &[LogFile],
    budget: u64,
    open: &dyn Fn(&LogFile) -> io::Result<File>,
    record: &mut dyn FnMut(&LogFile, LogTaken),
) -> Result<u64, PackageError> {
    let mut left = budget;
    for file in files {
        let size = file.stat.size;
        let fits = size <= left;
        if ctx.cancel.is_cancelled() {
            break;
        }
        if left == 0 || (!fits && file.whole_only) {
            left = 0;
            record(file, LogTaken::OverBudget);
            continue;
        }
        let mut result = None;
        let mut why = "could not be read: the manifest says why".to_owned();
        sink.file(&file.name, &file.abs, |out| {
            let opened = match open(file) {
                Ok(opened) => opened,
                Err(e) => {
                    why = format!("not opened: {e}");
                    return Ok(super::common::unavailable(&file.abs, &e));
                }
            };
            // A file that grew since it was listed is cut there (and `partial`): what
            // was added while the collection ran is not what was asked for.
            let done = if fits { copy_head(opened, out, size) } else { copy_tail(opened, out, left) }?;
            result = Some(done);
            Ok(done.outcome())
        })?;
        match result {
            Some(done) => {
                left = left.saturating_sub(done.bytes);
                if !fits {
                    left = 0;
                }
                record(file, LogTaken::Copied(done));
            }
            None => record(file, LogTaken::Unreadable(why)),
        }
    }
    Ok(budget - left)
}

/// Helpers for the tests of the collectors that copy many files.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{self, Write};

    use casefile_package::{ItemOutcome, ItemSink, PackageError};
    use tokio_util::sync::CancellationToken;

    use crate::collectors::test_support::MemorySink;
    use crate::{CollectError, Collector, Context, Limits};

    /// Fails when `marker` appears in any byte of any file the collector produced.
    pub(crate) fn assert_nowhere(sink: &MemorySink, marker: &str) {
        for item in &sink.items {
            let leaked = item.bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
            assert!(!leaked, "{marker:?} leaked into {}", item.name);
            assert!(!item.source.contains(marker) && !item.name.contains(marker));
        }
    }

    /// A sink that changes a file on the host while the item `name` is being written,
    /// at its first write: a log rotated or appended to during the copy.
    pub(crate) struct ChangingSink<'a> {
        pub(crate) sink: MemorySink,
        pub(crate) name: &'a str,
        pub(crate) change: Option<Box<dyn FnOnce() + 'a>>,
    }

    impl ItemSink for ChangingSink<'_> {
        fn add_item(
            &mut self,
            name: &str,
            source: &str,
            fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
        ) -> Result<(), PackageError> {
            let mut change = if name == self.name { self.change.take() } else { None };
            self.sink.add_item(name, source, &mut |out| {
                let mut hooked = Hooked { inner: out, change: &mut change };
                fill(&mut hooked)
            })
        }
    }

    struct Hooked<'w, 'a> {
        inner: &'w mut dyn Write,
        change: &'w mut Option<Box<dyn FnOnce() + 'a>>,
    }

    impl Write for Hooked<'_, '_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(change) = self.change.take() {
                change();
            }
            self.inner.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    /// Runs `collector` over `root`, changing a file while item `name` is written.
    pub(crate) fn run_changing<'a>(
        collector: &dyn Collector,
        root: &std::path::Path,
        name: &'a str,
        change: impl FnOnce() + 'a,
    ) -> MemorySink {
        let ctx = Context {
            root: root.to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Limits::default(),
            running: None,
        };
        let mut sink = ChangingSink { sink: MemorySink::default(), name, change: Some(Box::new(change)) };
        collector.collect(&ctx, &mut sink).unwrap();
        sink.sink
    }

    /// Runs `collector` over `root` with the collection already cancelled.
    pub(crate) fn run_cancelled(collector: &dyn Collector, root: &std::path::Path) -> MemorySink {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ctx = Context { root: root.to_path_buf(), cancel, limits: Limits::default(), running: None };
        let mut sink = MemorySink::default();
        let result = collector.collect(&ctx, &mut sink);
        assert!(matches!(result, Err(CollectError::Cancelled)), "{result:?}");
        sink
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use crate::collectors::test_support::Fixture;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn ctx(f: &Fixture) -> Context {
        Context {
            root: f.root().to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Default::default(),
            running: None,
        }
    }

    #[test]
    fn opens_below_the_root_refuse_every_link_on_the_way() {
        let f = Fixture::new();
        f.write("/var/log/real/app.log", "log\n");
        f.write("/etc/shadow", "root:SECRET\n");
        f.symlink(f.path("/var/log/real"), "/var/log/linked");
        f.symlink(f.path("/etc/shadow"), "/var/log/real/shadow.log");
        f.symlink("../../etc", "/var/log/real/up");
        f.fifo("/var/log/real/fifo.log");
        let root = RootDir::open(&ctx(&f));
        assert!(root.open_file(&f.path("/var/log/real/app.log")).is_ok());
        for refused in
            ["/var/log/linked/app.log", "/var/log/real/shadow.log", "/var/log/real/up/shadow", "/var/log/real/fifo.log"]
        {
            let e = root.open_file(&f.path(refused)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{refused}: {e}");
        }
        assert!(root.open_file(Path::new("/etc/hostname")).is_err(), "outside the root");
    }

    /// The opener for kernels without `openat2`, called directly: the same refusals.
    #[test]
    fn without_openat2_every_part_is_opened_without_following_a_link() {
        let f = Fixture::new();
        f.write("/var/log/real/app.log", "log\n");
        f.write("/etc/shadow", "root:SECRET\n");
        f.symlink(f.path("/var/log/real"), "/var/log/linked");
        f.symlink(f.path("/etc/shadow"), "/var/log/real/shadow.log");
        f.symlink("../../etc", "/var/log/real/up");
        f.fifo("/var/log/real/fifo.log");
        let root = rustix::fs::open(f.root(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let mut ok = String::new();
        open_by_parts(root.as_fd(), Path::new("var/log/real/app.log")).unwrap().read_to_string(&mut ok).unwrap();
        assert_eq!(ok, "log\n");
        for refused in [
            "var/log/linked/app.log",
            "var/log/real/shadow.log",
            "var/log/real/up/shadow",
            "var/log/real/fifo.log",
            "var/log/../../etc/shadow",
            "/etc/shadow",
        ] {
            let e = open_by_parts(root.as_fd(), Path::new(refused)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{refused}: {e}");
        }
    }

    /// A log-owning user swaps a folder the walk went through for a link to `/etc`
    /// before the copy: refused by both openers, and a file swapped for another is
    /// refused by its (dev, ino).
    #[test]
    fn a_folder_swapped_for_a_link_after_the_walk_is_refused() {
        let f = Fixture::new();
        f.write("/var/log/app/shadow", "a log\n");
        f.write("/var/log/app/other", "another log\n");
        f.write("/etc/shadow", "root:SWAPMARK\n");
        let path = f.path("/var/log/app/shadow");
        let walked = Stat::of(&path.symlink_metadata().unwrap());
        let other = Stat::of(&f.path("/var/log/app/other").symlink_metadata().unwrap());
        let root = RootDir::open(&ctx(&f));
        assert!(root.open_found(&path, &walked).is_ok());
        // A file renamed over the one found: another inode.
        let e = root.open_found(&f.path("/var/log/app/other"), &walked).unwrap_err();
        assert!(e.to_string().contains("replaced since it was listed"), "{e}");
        assert!(root.open_found(&f.path("/var/log/app/other"), &other).is_ok());
        std::fs::rename(f.path("/var/log/app"), f.path("/var/log/app.old")).unwrap();
        f.symlink(f.path("/etc"), "/var/log/app");
        let e = root.open_found(&path, &walked).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let fd = rustix::fs::open(f.root(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let e = open_by_parts(fd.as_fd(), Path::new("var/log/app/shadow")).unwrap_err();
        assert_eq!(e.to_string(), "reached through a symbolic link");
    }

    #[test]
    fn hostile_names_are_escaped_on_one_line() {
        let name = OsStr::from_bytes(b"a\nb\\c\xff\x1b.log");
        assert_eq!(escaped(Path::new(name)), "a\\nb\\\\c\\xff\\u{1b}.log");
        assert_eq!(escaped(Path::new("/var/log/nginx/access.log")), "/var/log/nginx/access.log");
    }

    #[test]
    fn keys_are_found_anywhere_in_the_copied_part_even_across_reads() {
        let f = Fixture::new();
        // The marker straddles the 64 KiB read boundary, after certificates.
        let mut bundle = vec![b'c'; 64 * 1024 - 5];
        bundle.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nMIIE\n");
        f.write("/bundle.pem", &bundle);
        f.write("/plain.conf", "Port 22\n");
        let mut file = File::open(f.path("/bundle.pem")).unwrap();
        assert_eq!(scan_for_secret(&mut file, u64::MAX).unwrap(), None);
        assert_eq!(file.stream_position().unwrap(), 0, "rewound");
        // Beyond the part that would be copied, it does not matter.
        assert_eq!(scan_for_secret(&mut file, 1000).unwrap(), Some(1000));
        let mut plain = File::open(f.path("/plain.conf")).unwrap();
        assert_eq!(scan_for_secret(&mut plain, u64::MAX).unwrap(), Some(8));
    }

    /// Runs the triage copying collectors over `root` through the real package writer
    /// and returns the zip.
    fn package(root: &Path) -> (Vec<u8>, casefile_package::Manifest) {
        use casefile_package::PackageWriter;
        use casefile_package::writer::PackageMeta;
        let ctx = Context {
            root: root.to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Default::default(),
            running: None,
        };
        let mut writer = PackageWriter::new(io::Cursor::new(Vec::new()), PackageMeta::detached("test"));
        for name in ["var_log", "configs", "user_traces"] {
            let collector = crate::by_name(name).unwrap();
            writer.begin_collector(collector.name(), collector.folder());
            let result = collector.collect(&ctx, &mut writer);
            assert!(result.is_ok(), "{name}: {result:?}");
            writer.end_collector(None);
        }
        let (out, manifest) = writer.finish().unwrap();
        (out.into_inner(), manifest)
    }

    /// Every entry of the package, inflated.
    fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive =
            casefile_package::archive::Archive::open(io::Cursor::new(zip), casefile_package::Limits::default())
                .unwrap();
        let names: Vec<String> = archive.entries().iter().map(|e| e.name.clone()).collect();
        names.into_iter().enumerate().map(|(i, name)| (name, archive.read_to_vec(i, u64::MAX).unwrap())).collect()
    }

    #[test]
    fn no_byte_of_a_secret_reaches_the_package() {
        let f = Fixture::new();
        f.write("/etc/passwd", crate::collectors::test_support::PASSWD_FIXTURE);
        f.write("/etc/shadow", "root:SECRETMARK1:19000::::::\n");
        f.write("/etc/ssh/ssh_host_ecdsa_key", "-----BEGIN EC PRIVATE KEY-----\nSECRETMARK2\n");
        f.write("/etc/nginx/tls/site.pem", "-----BEGIN PRIVATE KEY-----\nSECRETMARK3\n");
        f.write("/home/alice/.ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETMARK4\n");
        f.write("/home/alice/.git-credentials", "https://a:SECRETMARK5@example.com\n");
        f.write("/root/.ssh/backup_key", "-----BEGIN RSA PRIVATE KEY-----\nSECRETMARK6\n");
        f.write("/var/log/nginx/error.log", "started\n");
        f.write("/etc/hostname", "box\n");
        let (zip, manifest) = package(f.root());
        let report = casefile_package::verify(io::Cursor::new(&zip)).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let all = entries(&zip);
        for (name, bytes) in &all {
            assert!(!bytes.windows(10).any(|w| w == b"SECRETMARK"), "a secret leaked into {name}");
        }
        let secrets = all.iter().filter(|(name, _)| name.ends_with("/secrets.csv")).count();
        assert_eq!(secrets, 2, "Configuration/ and User traces/");
        let paths: Vec<&str> = manifest.items.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "All logs/nginx/error.log",
            "All logs/index.csv",
            "Configuration/etc/hostname",
            "Configuration/index.csv",
            "Configuration/secrets.csv",
            "User traces/index.csv",
            "User traces/secrets.csv",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
    }

    /// The live machine through the real package writer: nothing fails outright, the
    /// package verifies, and no private key is in it.
    #[test]
    fn live_triage_copies_make_a_package_that_verifies() {
        let (zip, manifest) = package(Path::new("/"));
        for run in &manifest.collectors {
            assert_ne!(run.status, casefile_package::ItemStatus::Failed, "{}: {:?}", run.name, run.error);
        }
        let report = casefile_package::verify(io::Cursor::new(&zip)).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        for (name, bytes) in entries(&zip) {
            if name.starts_with("Configuration/") || name.starts_with("User traces/") {
                assert!(!bytes.windows(16).any(|w| w == b"PRIVATE KEY-----"), "a key in {name}");
            }
        }
    }
}
