//! Walking `/proc` below the collection root, shared by the processes, network and open
//! files collectors.
//!
//! Processes come and go during the walk. A process whose directory or `stat` is gone
//! (`ENOENT`, `ESRCH`) is skipped silently; anything else that cannot be read is counted
//! in [`Problems`] so the item becomes `partial` with a short note.
//!
//! The kernel's own files are parsed here rather than with procfs' parsers: those reject
//! a whole file for one odd field and some assume UTF-8, while a forensic tool must keep
//! whatever it can read.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use procfs::ProcError;
use procfs::process::{Process, ProcessesIter};
use rustix::fs::OFlags;

use crate::Context;

use super::common::{Problems, ascii_str};

/// `/proc` below the collection root.
pub(crate) fn proc_root(ctx: &Context) -> PathBuf {
    ctx.path("/proc")
}

/// Why a file of a process could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The process (or the file, e.g. `exe` of a kernel thread) does not exist.
    Gone,
    /// It exists but could not be read (permission, I/O error, …).
    Failed(String),
}

/// `ESRCH`: what reading a `/proc/<pid>` file returns once the process has exited.
const ESRCH: i32 = 3;

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH) {
            Self::Gone
        } else {
            Self::Failed(e.to_string())
        }
    }
}

impl From<ProcError> for ReadError {
    fn from(e: ProcError) -> Self {
        match e {
            ProcError::NotFound(_) => Self::Gone,
            ProcError::Io(e, _) => Self::from(e),
            ProcError::PermissionDenied(_) => {
                Self::Failed(io::Error::from(io::ErrorKind::PermissionDenied).to_string())
            }
            other => Self::Failed(other.to_string()),
        }
    }
}

/// The processes below `<root>/proc`, skipping those that vanish while we look.
pub(crate) struct ProcessWalk {
    inner: ProcessesIter,
    /// Entries of `/proc` that exist but could not be opened.
    pub(crate) problems: Problems,
}

impl ProcessWalk {
    pub(crate) fn new(ctx: &Context) -> io::Result<Self> {
        let inner = procfs::process::all_processes_with_root(proc_root(ctx)).map_err(|e| match ReadError::from(e) {
            ReadError::Gone => io::Error::from(io::ErrorKind::NotFound),
            ReadError::Failed(why) => io::Error::other(why),
        })?;
        Ok(Self { inner, problems: Problems::default() })
    }
}

impl Iterator for ProcessWalk {
    type Item = Process;

    fn next(&mut self) -> Option<Process> {
        loop {
            match self.inner.next()? {
                Ok(process) => return Some(process),
                Err(e) => match ReadError::from(e) {
                    ReadError::Gone => continue,
                    ReadError::Failed(why) => self.problems.add("unreadable /proc entries", why),
                },
            }
        }
    }
}

/// Reads at most `limit` bytes of a file of the process's directory. Opened relative to
/// the directory handle the walk holds, so a recycled pid cannot swap the process.
pub(crate) fn read_file(process: &Process, name: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file: File = process.open_relative_flags(name, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK)?;
    let mut buf = Vec::new();
    file.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Opens an entry of the process's directory (`exe` opens the executable itself, `ns`
/// the namespace directory); `None` when it or the process is gone.
pub(crate) fn open_entry(process: &Process, name: &str, flags: OFlags) -> Result<Option<File>, ReadError> {
    match process.open_relative_flags(name, flags | OFlags::CLOEXEC).map_err(ReadError::from) {
        Ok(file) => Ok(Some(file)),
        Err(ReadError::Gone) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The links of a process directory the collectors read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Link {
    Exe,
    Cwd,
}

/// The target of a link; `None` when there is none (kernel threads have no `exe`, or the
/// process exited meanwhile).
pub(crate) fn read_link(process: &Process, link: Link) -> Result<Option<String>, ReadError> {
    let target = match link {
        Link::Exe => process.exe(),
        Link::Cwd => process.cwd(),
    };
    match target.map_err(ReadError::from) {
        Ok(path) => Ok(Some(String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned())),
        Err(ReadError::Gone) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The fields of `/proc/<pid>/stat` the collectors use. Fields after the name are
/// optional so that a truncated line still yields what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) name: String,
    pub(crate) state: Option<char>,
    pub(crate) ppid: Option<i64>,
    pub(crate) threads: Option<i64>,
    /// Clock ticks after boot.
    pub(crate) start_ticks: Option<u64>,
    /// Virtual memory size in bytes.
    pub(crate) vm_size: Option<u64>,
    pub(crate) rss_pages: Option<i64>,
}

/// Parses a `stat` line. The name sits between the first `(` and the *last* `)`, since
/// a process may put parentheses and spaces into its own name.
pub(crate) fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let name = String::from_utf8_lossy(&raw[open + 1..close]).into_owned();
    let rest = ascii_str(&raw[close + 1..]).unwrap_or("");
    // Index 0 is field 3 of proc(5): state, ppid, …
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        name,
        state: field(3).and_then(|s| s.chars().next()),
        ppid: field(4).and_then(|s| s.parse().ok()),
        threads: field(20).and_then(|s| s.parse().ok()),
        start_ticks: field(22).and_then(|s| s.parse().ok()),
        vm_size: field(23).and_then(|s| s.parse().ok()),
        rss_pages: field(24).and_then(|s| s.parse().ok()),
    })
}

/// The effective uid from the `Uid:` line of `/proc/<pid>/status` (real, effective,
/// saved, file-system).
pub(crate) fn parse_status_euid(raw: &[u8]) -> Option<u32> {
    raw.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))
        .and_then(|ids| ascii_str(ids)?.split_ascii_whitespace().nth(1)?.parse().ok())
}

/// The effective uid of a process: from `status`, or else the owner of its directory.
pub(crate) fn process_uid(process: &Process) -> Result<u32, ReadError> {
    match read_file(process, "status", 64 * 1024) {
        Ok(status) => match parse_status_euid(&status) {
            Some(uid) => Ok(uid),
            None => Ok(process.uid()?),
        },
        Err(ReadError::Gone) => Err(ReadError::Gone),
        Err(_) => Ok(process.uid()?),
    }
}

/// The short name of a process (`comm`).
pub(crate) fn process_name(process: &Process) -> Result<String, ReadError> {
    let raw = read_file(process, "comm", 4096)?;
    Ok(String::from_utf8_lossy(&raw).trim_end_matches('\n').to_owned())
}

/// `cmdline`: arguments are NUL-separated; they are joined with spaces, and bytes that
/// are not UTF-8 are replaced, so the result is safe to put in any CSV field.
pub(crate) fn command_line(raw: &[u8]) -> String {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let joined: Vec<u8> = raw[..end].iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    String::from_utf8_lossy(&joined).into_owned()
}

/// One open file descriptor of a process: its number and the target of its link, or
/// why the link could not be read (the kernel may refuse it even to root).
#[derive(Debug)]
pub(crate) struct FdLink {
    pub(crate) fd: u64,
    pub(crate) target: Result<Vec<u8>, String>,
}

/// The open file descriptors of process `pid`, read lazily from `<proc>/<pid>/fd`.
/// Descriptors closed while we read are skipped.
pub(crate) fn fd_links(proc_root: &Path, pid: i32) -> Result<impl Iterator<Item = FdLink>, ReadError> {
    let dir = proc_root.join(pid.to_string()).join("fd");
    let entries = std::fs::read_dir(&dir)?;
    Ok(entries.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd = ascii_str(entry.file_name().as_bytes())?.parse().ok()?;
        let target = match std::fs::read_link(entry.path()) {
            Ok(target) => Ok(target.into_os_string().into_vec()),
            Err(e) => match ReadError::from(e) {
                ReadError::Gone => return None,
                ReadError::Failed(why) => Err(why),
            },
        };
        Some(FdLink { fd, target })
    }))
}

/// The inode of a `socket:[12345]` link target.
pub(crate) fn socket_inode(target: &[u8]) -> Option<u64> {
    let inner = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    ascii_str(inner)?.parse().ok()
}

/// Turns clock ticks after boot into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BootClock {
    /// Seconds since the epoch at boot (`btime` of `/proc/stat`).
    pub(crate) boot_time: i64,
    ticks_per_second: u64,
}

impl BootClock {
    pub(crate) fn load(ctx: &Context) -> io::Result<Self> {
        let stat = super::common::read_capped(&proc_root(ctx).join("stat"), 1 << 20)?;
        let boot_time =
            parse_btime(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime line"))?;
        Ok(Self { boot_time, ticks_per_second: procfs::ticks_per_second().max(1) })
    }

    /// Seconds since the epoch `ticks` after boot.
    pub(crate) fn at(&self, ticks: u64) -> Option<i64> {
        let secs = i64::try_from(ticks / self.ticks_per_second).ok()?;
        self.boot_time.checked_add(secs)
    }
}

/// `btime <seconds>` from `/proc/stat`.
pub(crate) fn parse_btime(stat: &[u8]) -> Option<i64> {
    stat.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"btime "))
        .and_then(|v| ascii_str(v)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_name_may_contain_parentheses_and_spaces() {
        let line = b"42 (evil) (x y) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 1234 0 56 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.name, "evil) (x y");
        assert_eq!(stat.state, Some('S'));
        assert_eq!(stat.ppid, Some(1));
        assert_eq!(stat.threads, Some(3));
        assert_eq!(stat.start_ticks, Some(1234));
        assert_eq!(stat.vm_size, Some(0));
        assert_eq!(stat.rss_pages, Some(56));
    }

    #[test]
    fn truncated_or_garbage_stat_does_not_panic() {
        let truncated = parse_stat(b"7 (sh) R 1").unwrap();
        assert_eq!(truncated.ppid, Some(1));
        assert_eq!(truncated.start_ticks, None);
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b")(").is_none());
        assert_eq!(parse_stat(b"(").map(|s| s.name), None);
        assert_eq!(parse_stat(b"()").unwrap().name, "");
        assert_eq!(parse_stat(b"1 (\xff\xfe) Z").unwrap().state, Some('Z'));
    }

    #[test]
    fn status_gives_the_effective_uid() {
        let status = b"Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_euid(status), Some(0));
        assert_eq!(parse_status_euid(b"Name: x\n"), None);
    }

    #[test]
    fn command_lines_join_arguments_with_spaces() {
        assert_eq!(command_line(b"/bin/sh\0-c\0echo hi\0"), "/bin/sh -c echo hi");
        assert_eq!(command_line(b""), "");
        assert_eq!(command_line(b"a\0\xff\0"), "a \u{fffd}");
    }

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }
}
