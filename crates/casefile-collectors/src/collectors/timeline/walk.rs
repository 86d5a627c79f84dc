//! The walk: depth first, one open directory per level, `statx` relative to it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};

use casefile_package::ItemOutcome;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, Stat, Statx, StatxAttributes, StatxFlags, openat, statat, statx};
use rustix::io::Errno;

use crate::collectors::common::{CANCELLED, FileHash, FileHasher, Problems, utc_timestamp};
use crate::{Context, Limits};

use super::bodyfile::{escape_into, type_char, write_line};
use super::mountinfo::AtMount;
use super::spool::SpooledCsv;
use super::{HASHED, Plan, TMP, WATCHED};

/// Deepest directory entered: each level holds a file descriptor.
pub(crate) const MAX_DEPTH: usize = 256;

pub(crate) const FINDINGS_HEADER: [&str; 11] =
    ["kind", "path", "type", "mode", "uid", "gid", "owner", "group", "size", "mtime_utc", "detail"];
pub(crate) const EXECUTABLES_HEADER: [&str; 9] =
    ["path", "size", "mode", "uid", "gid", "owner", "mtime_utc", "sha256", "note"];

const CAPABILITY_XATTR: &str = "security.capability";

/// A directory being listed.
struct Level {
    dir: Dir,
    /// Length of its escaped host path in [`Walk::shown`].
    shown_len: usize,
    scope: u8,
    /// It has mount points among its entries.
    mounts_in: bool,
}

/// Most hard-linked executables remembered by their hash (see `Walk::hashed_links`).
pub(crate) const MAX_HASHED_LINKS: usize = 100_000;

/// Test access to the remembered hard links.
#[cfg(test)]
impl Walk<'_> {
    pub(crate) fn hashed_links_len(&self) -> usize {
        self.hashed_links.len()
    }
}

pub(crate) struct Walk<'a> {
    ctx: &'a Context,
    plan: &'a Plan,
    findings: SpooledCsv,
    executables: SpooledCsv,
    problems: Problems,
    /// Escaped host path of the entry at hand.
    shown: Vec<u8>,
    /// Hashing budget left, in bytes.
    budget_left: u64,
    over_budget: u64,
    /// Executables with several names (hard links) by device and inode, hashed under
    /// the first: the SHA-256 of those hashed in full (others are read again: the reason
    /// comes back as cheaply). At most [`MAX_HASHED_LINKS`] entries (48 bytes each), so a
    /// user making millions of hard links cannot grow the agent's memory: past the cap a
    /// further link is hashed again, not remembered.
    hashed_links: HashMap<(u32, u32, u64), [u8; 32]>,
    /// [`MAX_HASHED_LINKS`]; smaller in tests.
    pub(crate) hashed_links_cap: usize,
    cancelled: bool,
    /// The kernel has `statx` (4.11 and later); tests turn it off to walk with `fstatat`.
    pub(crate) use_statx: bool,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(ctx: &'a Context, plan: &'a Plan) -> Self {
        Self {
            ctx,
            plan,
            findings: SpooledCsv::new(&FINDINGS_HEADER),
            executables: SpooledCsv::new(&EXECUTABLES_HEADER),
            problems: Problems::default(),
            shown: Vec::with_capacity(4096),
            budget_left: ctx.limits.max_total_bytes,
            over_budget: 0,
            hashed_links: HashMap::new(),
            hashed_links_cap: MAX_HASHED_LINKS,
            cancelled: false,
            use_statx: true,
        }
    }

    /// How complete the walk was.
    pub(crate) fn outcome(&self) -> ItemOutcome {
        let mut outcome = self.problems.outcome();
        if self.cancelled {
            let why = outcome.error.map_or(CANCELLED.to_owned(), |e| format!("{CANCELLED}; {e}"));
            outcome = ItemOutcome::partial(why);
        }
        outcome
    }

    /// The two tables, and why some executables have no hash.
    pub(crate) fn into_tables(self) -> (SpooledCsv, SpooledCsv, Option<String>) {
        let budget = self.ctx.limits.max_total_bytes;
        let note = (self.over_budget > 0).then(|| {
            format!(
                "the {budget}-byte hashing budget was used up: {} executables listed without a hash",
                self.over_budget
            )
        });
        (self.findings, self.executables, note)
    }

    /// Writes the bodyfile to `out`; its outcome is [`Walk::outcome`].
    pub(crate) fn run(&mut self, out: &mut dyn Write) -> io::Result<ItemOutcome> {
        // The package's own chunk size: the lines go on in 64 KiB writes.
        let mut body = BufWriter::with_capacity(64 * 1024, out);
        let walked = self.walk(&mut body).and_then(|()| body.flush());
        // The tables that follow are from this walk: they must say it stopped short.
        if let Err(e) = &walked {
            self.problems.add("walk stopped", e);
        }
        walked?;
        Ok(self.outcome())
    }

    fn walk(&mut self, body: &mut dyn Write) -> io::Result<()> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let root = match openat(CWD, &self.ctx.root, flags, Mode::empty()) {
            Ok(root) => root,
            Err(e) => {
                self.problems.add("unreadable directories", format!("/: {e}"));
                return Ok(());
            }
        };
        let root_meta = match self.stat(root.as_fd(), c"", AtFlags::EMPTY_PATH) {
            Ok(meta) => meta,
            Err(e) => {
                self.problems.add("unreadable directories", format!("/: {e}"));
                return Ok(());
            }
        };
        write_line(body, b"", &root_meta, None)?;
        let root_dev = root_meta.dev;
        let mut stack = vec![Level {
            dir: Dir::new(root)?,
            shown_len: 0,
            scope: self.plan.scope_of(b"/"),
            mounts_in: self.plan.mounts.has_mounts_in(b""),
        }];
        loop {
            let depth = stack.len();
            let Some(level) = stack.last_mut() else { break };
            let entry = match level.dir.read() {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    self.shown.truncate(level.shown_len);
                    self.unreadable(&e, "listed only in part");
                    stack.pop();
                    continue;
                }
                Some(Ok(entry)) => entry,
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if self.ctx.cancel.is_cancelled() {
                self.cancelled = true;
                return Ok(());
            }
            self.shown.truncate(level.shown_len);
            self.shown.push(b'/');
            escape_into(&mut self.shown, name);
            let at_mount = if level.mounts_in { self.plan.mounts.at(&self.shown) } else { None };
            if let Some(AtMount::Skip(fs_type)) = at_mount {
                self.not_walked(format!("{fs_type} mount: pseudo, network or FUSE file system"));
                continue;
            }
            let dirfd = level.dir.fd()?;
            let meta = match self.stat(dirfd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(meta) => meta,
                // Gone since the directory was listed.
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    self.problems.add("entries that could not be examined", format!("{}: {e}", self.shown()));
                    continue;
                }
            };
            let mode = meta.mode;
            let link = if type_char(mode) == b'l' { Some(self.link_target(dirfd, entry.file_name())) } else { None };
            write_line(body, &self.shown, &meta, link.as_deref())?;
            let scope = level.scope;
            self.examine(dirfd, entry.file_name(), &meta, scope);
            if type_char(mode) != b'd' {
                continue;
            }
            let other_device = meta.dev != root_dev;
            match at_mount {
                Some(AtMount::Bind(fs_type)) => {
                    self.not_walked(format!("{fs_type} bind mount of a file system walked elsewhere"));
                    continue;
                }
                None if other_device && !self.plan.mounts.known => {
                    self.not_walked("another file system (no mount table to tell which)".to_owned());
                    continue;
                }
                _ => {}
            }
            if depth >= MAX_DEPTH {
                self.problems.add(&format!("directories deeper than {MAX_DEPTH} levels not entered"), self.shown());
                continue;
            }
            let child = match openat(dirfd, entry.file_name(), flags | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => Dir::new(fd)?,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    self.unreadable(&e, "not opened");
                    continue;
                }
            };
            let scope = scope | self.plan.scope_of(&self.shown);
            let mounts_in = self.plan.mounts.has_mounts_in(&self.shown);
            stack.push(Level { dir: child, shown_len: self.shown.len(), scope, mounts_in });
        }
        Ok(())
    }

    /// `statx` of `name` in `dirfd`, or `fstatat` where the kernel has no `statx`.
    fn stat(&mut self, dirfd: BorrowedFd<'_>, name: &std::ffi::CStr, flags: AtFlags) -> Result<Meta, Errno> {
        if self.use_statx {
            let mask = StatxFlags::BASIC_STATS | StatxFlags::BTIME;
            match statx(dirfd, name, flags | AtFlags::STATX_DONT_SYNC, mask) {
                Err(Errno::NOSYS) => {
                    self.use_statx = false;
                    self.problems.add("no statx on this kernel", "no birth times, immutable or append-only flags");
                }
                other => return other.as_ref().map(Meta::from_statx).map_err(|e| *e),
            }
        }
        statat(dirfd, name, flags).map(|st| Meta::from_stat(&st))
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown).into_owned()
    }

    fn link_target(&mut self, dirfd: BorrowedFd<'_>, name: &std::ffi::CStr) -> Vec<u8> {
        let mut target = Vec::new();
        match rustix::fs::readlinkat(dirfd, name, Vec::new()) {
            Ok(raw) => escape_into(&mut target, raw.as_bytes()),
            Err(e) => self.problems.add("links whose target could not be read", format!("{}: {e}", self.shown())),
        }
        target
    }

    fn unreadable(&mut self, e: &Errno, what: &str) {
        let shown = self.shown();
        self.problems.add(&format!("directories {what}"), format!("{shown}: {e}"));
        let detail = format!("{what}: {e}");
        self.findings.row(["unreadable", shown.as_str(), "dir", "", "", "", "", "", "", "", &detail]);
    }

    fn not_walked(&mut self, why: String) {
        let shown = self.shown();
        self.findings.row(["not_walked", shown.as_str(), "mount", "", "", "", "", "", "", "", &why]);
    }

    /// The findings of one entry, and its hash when it is an executable to hash.
    fn examine(&mut self, dirfd: BorrowedFd<'_>, name: &std::ffi::CStr, meta: &Meta, scope: u8) {
        let mode = meta.mode;
        let kind = type_char(mode);
        let regular = kind == b'r';
        if regular && mode & 0o4000 != 0 {
            self.finding(meta, "setuid", String::new());
        }
        if regular && mode & 0o2000 != 0 {
            self.finding(meta, "setgid", String::new());
        }
        if meta.immutable {
            self.finding(meta, "immutable", String::new());
        }
        if meta.append_only {
            self.finding(meta, "append_only", String::new());
        }
        let exempt = scope & TMP != 0 || self.plan.scope_of(&self.shown) & TMP != 0;
        if (regular || kind == b'd') && mode & 0o002 != 0 && !exempt {
            let detail = if kind == b'd' && mode & 0o1000 != 0 { "sticky" } else { "" };
            self.finding(meta, "world_writable", detail.to_owned());
        }
        if let Some(users) = &self.plan.users
            && users.name(meta.uid).is_empty()
        {
            self.finding(meta, "nameless_uid", format!("uid {} is not in /etc/passwd", meta.uid));
        }
        if let Some(groups) = &self.plan.groups
            && !groups.contains_key(&meta.gid)
        {
            self.finding(meta, "nameless_gid", format!("gid {} is not in /etc/group", meta.gid));
        }
        if scope & WATCHED != 0 && name.to_bytes().first() == Some(&b'.') {
            self.finding(meta, "hidden", String::new());
        }
        if regular && mode & 0o111 != 0 {
            self.executable(dirfd, name, meta, scope & HASHED != 0);
        }
    }

    /// Opens an executable for its capabilities and, in a hashed scope, its hash.
    fn executable(&mut self, dirfd: BorrowedFd<'_>, name: &std::ffi::CStr, meta: &Meta, hashed: bool) {
        let file = match open_executable(dirfd, name) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => return,
            Err(e) => {
                self.problems.add("executables that could not be opened", format!("{}: {e}", self.shown()));
                if hashed {
                    self.executable_row(meta, "", &format!("not hashed: {e}"));
                }
                return;
            }
        };
        let mut value = [0u8; 64];
        match rustix::fs::fgetxattr(&file, CAPABILITY_XATTR, &mut value) {
            Ok(len) => self.finding(meta, "capabilities", decode_capabilities(&value[..len])),
            Err(Errno::NODATA | Errno::NOTSUP) => {}
            Err(e) => self.problems.add("capabilities that could not be read", format!("{}: {e}", self.shown())),
        }
        if !hashed {
            return;
        }
        let link_key = (meta.dev.0, meta.dev.1, meta.ino);
        if meta.nlink > 1
            && let Some(digest) = self.hashed_links.get(&link_key)
        {
            let sha256 = hex::encode(digest);
            self.executable_row(meta, &sha256, "a hard link of a file listed above: read once");
            return;
        }
        let (sha256, note) = self.hash(file, meta.size);
        if meta.nlink > 1 && self.hashed_links.len() < self.hashed_links_cap {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&sha256, &mut digest).is_ok() {
                self.hashed_links.insert(link_key, digest);
            }
        }
        self.executable_row(meta, &sha256, &note);
    }

    fn hash(&mut self, file: File, listed: u64) -> (String, String) {
        let cap = self.ctx.limits.max_file_bytes;
        let outcome = if listed > cap {
            Ok(FileHash::TooLarge { size: listed, limit: cap })
        } else if listed > self.budget_left {
            self.over_budget += 1;
            Ok(FileHash::OverBudget { budget: self.ctx.limits.max_total_bytes })
        } else {
            self.budget_left -= listed;
            let after = file.try_clone();
            // The budget is this collector's; the hasher only enforces the file cap.
            let hashed = FileHasher::new(&Limits { max_file_bytes: cap, ..self.ctx.limits }).hash(file);
            hashed.map(|hash| (hash, after.and_then(|f| f.metadata()).map(|m| m.len()).ok())).map(|(hash, now)| {
                match now {
                    Some(now) if now != listed && matches!(hash, FileHash::Sha256(_)) => {
                        self.problems.add("executables that changed while hashed", self.shown());
                        FileHash::Skipped(format!("changed while read ({listed} bytes when listed, {now} after)"))
                    }
                    _ => hash,
                }
            })
        };
        match outcome {
            Ok(hash) => (hash.hex(), hash.note()),
            Err(e) => {
                self.problems.add("executables that could not be hashed", format!("{}: {e}", self.shown()));
                (String::new(), format!("not hashed: {e}"))
            }
        }
    }

    /// [`Walk::hash`] of the file at `path` listed at `listed` bytes, with `between` run
    /// after it is opened and before it is read.
    #[cfg(test)]
    pub(crate) fn hash_after(
        &mut self,
        path: &std::path::Path,
        listed: u64,
        between: impl FnOnce(),
    ) -> (String, String) {
        let file = File::open(path).unwrap();
        between();
        self.hash(file, listed)
    }

    fn executable_row(&mut self, meta: &Meta, sha256: &str, note: &str) {
        let shown = self.shown();
        let owner = self.plan.users.as_ref().map_or("", |u| u.name(meta.uid)).to_owned();
        self.executables.row([
            shown.as_str(),
            &meta.size.to_string(),
            &format!("{:04o}", meta.mode & 0o7777),
            &meta.uid.to_string(),
            &meta.gid.to_string(),
            &owner,
            &utc_timestamp(meta.mtime),
            sha256,
            note,
        ]);
    }

    fn finding(&mut self, meta: &Meta, kind: &str, detail: String) {
        let shown = self.shown();
        let owner = self.plan.users.as_ref().map_or("", |u| u.name(meta.uid)).to_owned();
        let group = self.plan.groups.as_ref().and_then(|g| g.get(&meta.gid)).cloned().unwrap_or_default();
        let type_name = match type_char(meta.mode) {
            b'r' => "file",
            b'd' => "dir",
            b'l' => "symlink",
            b'p' => "fifo",
            b's' => "socket",
            b'c' => "char",
            b'b' => "block",
            _ => "other",
        };
        self.findings.row([
            kind,
            shown.as_str(),
            type_name,
            &format!("{:04o}", meta.mode & 0o7777),
            &meta.uid.to_string(),
            &meta.gid.to_string(),
            &owner,
            &group,
            &meta.size.to_string(),
            &utc_timestamp(meta.mtime),
            &detail,
        ]);
    }
}

/// What the walk uses of an entry's `statx` (or, on kernels before 4.11, `fstatat`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) ino: u64,
    pub(crate) mode: u32,
    pub(crate) nlink: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) atime: i64,
    pub(crate) mtime: i64,
    pub(crate) ctime: i64,
    /// Birth time, where the file system keeps one.
    pub(crate) btime: Option<i64>,
    pub(crate) dev: (u32, u32),
    pub(crate) immutable: bool,
    pub(crate) append_only: bool,
}

impl Meta {
    fn from_statx(stx: &Statx) -> Self {
        let attributes = stx.stx_attributes & stx.stx_attributes_mask;
        let btime = (stx.stx_mask & StatxFlags::BTIME.bits() != 0).then_some(stx.stx_btime.tv_sec);
        Self {
            ino: stx.stx_ino,
            mode: u32::from(stx.stx_mode),
            nlink: u64::from(stx.stx_nlink),
            uid: stx.stx_uid,
            gid: stx.stx_gid,
            size: stx.stx_size,
            atime: stx.stx_atime.tv_sec,
            mtime: stx.stx_mtime.tv_sec,
            ctime: stx.stx_ctime.tv_sec,
            btime,
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
            immutable: attributes.contains(StatxAttributes::IMMUTABLE),
            append_only: attributes.contains(StatxAttributes::APPEND),
        }
    }

    /// `struct stat` has no birth time and no attributes.
    #[allow(clippy::useless_conversion, reason = "the field types differ between architectures")]
    fn from_stat(st: &Stat) -> Self {
        Self {
            ino: u64::from(st.st_ino),
            mode: st.st_mode,
            nlink: u64::from(st.st_nlink),
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(i64::from(st.st_size)).unwrap_or(0),
            atime: i64::from(st.st_atime),
            mtime: i64::from(st.st_mtime),
            ctime: i64::from(st.st_ctime),
            btime: None,
            dev: (rustix::fs::major(u64::from(st.st_dev)), rustix::fs::minor(u64::from(st.st_dev))),
            immutable: false,
            append_only: false,
        }
    }
}

/// Opens a regular file without following a link, blocking on a FIFO swapped in, or
/// changing its access time (the timeline is evidence); `O_NOATIME` needs the file's
/// owner or `CAP_FOWNER`, so it is dropped when refused.
fn open_executable(dirfd: BorrowedFd<'_>, name: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match openat(dirfd, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => openat(dirfd, name, flags, Mode::empty())?,
        other => other?,
    };
    // Swapped for something else since the `statx`.
    if rustix::fs::fstat(fd.as_fd())?.st_mode & 0o170000 != 0o100000 {
        return Err(Errno::INVAL);
    }
    Ok(fd)
}

/// Capability names by number (`capability.h`), for `security.capability` values.
const CAPABILITIES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// `security.capability` (`struct vfs_cap_data`, little-endian) as
/// `permitted=cap_net_raw,… inheritable=… effective rootid=N`; the hex of the value when
/// it is not one.
pub(crate) fn decode_capabilities(value: &[u8]) -> String {
    let word = |i: usize| value.get(i * 4..i * 4 + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let Some(magic) = word(0) else { return format!("hex:{}", hex::encode(value)) };
    let (words, rootid) = match (magic & 0xff00_0000, value.len()) {
        (0x0100_0000, 12) => (1, None),
        (0x0200_0000, 20) => (2, None),
        (0x0300_0000, 24) => (2, word(5)),
        _ => return format!("hex:{}", hex::encode(value)),
    };
    let set = |offset: usize| {
        let mut bits = 0u64;
        for w in 0..words {
            bits |= u64::from(word(1 + w * 2 + offset).unwrap_or(0)) << (32 * w);
        }
        let names: Vec<String> = (0..64)
            .filter(|bit| bits & (1u64 << bit) != 0)
            .map(|bit| CAPABILITIES.get(bit).map_or_else(|| format!("cap_{bit}"), |n| (*n).to_owned()))
            .collect();
        names.join(",")
    };
    let mut text = format!("permitted={} inheritable={}", set(0), set(1));
    if magic & 1 != 0 {
        text.push_str(" effective");
    }
    if let Some(rootid) = rootid {
        text.push_str(&format!(" rootid={rootid}"));
    }
    text
}
