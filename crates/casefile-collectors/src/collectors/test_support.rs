//! Test helpers: an in-memory [`ItemSink`], fixture root trees, and CSV reading.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use casefile_package::{ItemOutcome, ItemSink, ItemStatus, PackageError};
use tokio_util::sync::CancellationToken;

use crate::{Collector, Context, Limits};

/// One file a collector produced.
#[derive(Debug)]
pub struct MemItem {
    pub name: String,
    pub source: String,
    pub bytes: Vec<u8>,
    pub outcome: ItemOutcome,
}

impl MemItem {
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).expect("item is UTF-8")
    }

    pub fn status(&self) -> ItemStatus {
        self.outcome.status
    }

    /// The CSV as header → value maps, parsed back with `csv::Reader`.
    pub fn rows(&self) -> Vec<HashMap<String, String>> {
        let mut reader = csv::Reader::from_reader(self.bytes.as_slice());
        let header = reader.headers().expect("header row").clone();
        reader
            .records()
            .map(|r| {
                let record = r.expect("valid CSV record");
                header.iter().zip(record.iter()).map(|(h, v)| (h.to_owned(), v.to_owned())).collect()
            })
            .collect()
    }

    pub fn header(&self) -> Vec<String> {
        let mut reader = csv::Reader::from_reader(self.bytes.as_slice());
        reader.headers().expect("header row").iter().map(str::to_owned).collect()
    }
}

/// Keeps every file in memory, recording what `fill` reported like the package writer.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub items: Vec<MemItem>,
}

impl ItemSink for MemorySink {
    fn add_item(
        &mut self,
        name: &str,
        source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let mut bytes = Vec::new();
        let outcome = fill(&mut bytes).unwrap_or_else(|e| ItemOutcome::failed(e.to_string()));
        self.items.push(MemItem { name: name.to_owned(), source: source.to_owned(), bytes, outcome });
        Ok(())
    }
}

/// A [`MemorySink`] that also records how each file arrived: the number of writes and
/// the largest one. Many small writes show a file was streamed, not built in memory.
#[derive(Debug, Default)]
pub struct StreamProbe {
    pub sink: MemorySink,
    pub writes: usize,
    pub largest_write: usize,
}

impl ItemSink for StreamProbe {
    fn add_item(
        &mut self,
        name: &str,
        source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let (writes, largest) = (&mut self.writes, &mut self.largest_write);
        self.sink.add_item(name, source, &mut |out| {
            let mut counting = CountingWriter { inner: out, writes, largest };
            fill(&mut counting)
        })
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    writes: &'a mut usize,
    largest: &'a mut usize,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        *self.writes += 1;
        *self.largest = (*self.largest).max(buf.len());
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl MemorySink {
    pub fn item(&self, name: &str) -> &MemItem {
        self.items.iter().find(|i| i.name == name).unwrap_or_else(|| {
            let names: Vec<&str> = self.items.iter().map(|i| i.name.as_str()).collect();
            panic!("no item {name:?}; items: {names:?}")
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|i| i.name.as_str()).collect()
    }
}

/// The row whose `column` is `value`.
pub fn find_row<'a>(rows: &'a [HashMap<String, String>], column: &str, value: &str) -> &'a HashMap<String, String> {
    rows.iter().find(|r| r[column] == value).unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:?}"))
}

/// Runs `collector` over `root`, failing the test if it returns an error.
pub fn run(collector: &dyn Collector, root: &Path) -> MemorySink {
    run_with(collector, root, Limits::default())
}

/// [`run`] with other caps.
pub fn run_with(collector: &dyn Collector, root: &Path, limits: Limits) -> MemorySink {
    let ctx = Context { root: root.to_path_buf(), cancel: CancellationToken::new(), limits, running: None };
    let mut sink = MemorySink::default();
    collector.collect(&ctx, &mut sink).unwrap_or_else(|e| panic!("{} failed: {e}", collector.name()));
    sink
}

/// Runs `collector` on the live machine.
pub fn run_live(collector: &dyn Collector) -> MemorySink {
    run(collector, Path::new("/"))
}

/// A fake root file system in a temporary directory.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    /// A fixture in memory (`/dev/shm`) where there is one, for trees of many thousand
    /// files: on a slow disk creating them takes longer than the test itself.
    pub fn in_memory() -> Self {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("tempdir");
        Self { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `abs` (e.g. `/etc/passwd`) inside the fixture.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.dir.path().join(abs.trim_start_matches('/'))
    }

    pub fn write(&self, abs: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    pub fn mkdir(&self, abs: &str) -> &Self {
        std::fs::create_dir_all(self.path(abs)).unwrap();
        self
    }

    /// A FIFO at `abs`, planted where a file is expected: reading it would block.
    pub fn fifo(&self, abs: &str) -> &Self {
        let path = self.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, rustix::fs::Mode::RUSR).unwrap();
        self
    }

    /// Gives `abs` and everything below it (links themselves, never followed) to `uid`,
    /// as a user's home is: the agent reads in a home only what its user owns. A no-op
    /// unless the tests run as root.
    pub fn give(&self, abs: &str, uid: u32) -> &Self {
        fn walk(path: &Path, uid: u32) {
            let _ = std::os::unix::fs::lchown(path, Some(uid), None);
            if path.symlink_metadata().is_ok_and(|m| m.is_dir())
                && let Ok(entries) = std::fs::read_dir(path)
            {
                for entry in entries.flatten() {
                    walk(&entry.path(), uid);
                }
            }
        }
        walk(&self.path(abs), uid);
        self
    }

    /// The homes of [`PASSWD_FIXTURE`] given to their users.
    pub fn give_homes(&self) -> &Self {
        self.give("/home/alice", 1000).give("/home/bob", 1001)
    }

    /// A symlink at `abs` pointing to `target` (taken literally, like `/proc` links).
    pub fn symlink(&self, target: impl AsRef<Path>, abs: &str) -> &Self {
        let path = self.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    /// A fake process: `stat`, `status`, `comm`, `cmdline`, and `exe`/`cwd` links.
    pub fn process(&self, p: &FakeProcess) -> &Self {
        let dir = format!("/proc/{}", p.pid);
        self.write(
            &format!("{dir}/stat"),
            format!(
                "{} ({}) {} {} {} {} 0 -1 4194560 10 0 0 0 5 3 0 0 20 0 {} 0 {} 1000000 {} 18446744073709551615\n",
                p.pid, p.name, p.state, p.ppid, p.pid, p.pid, p.threads, p.start_ticks, p.rss_pages
            ),
        );
        self.write(
            &format!("{dir}/status"),
            format!(
                "Name:\t{}\nState:\t{}\nPid:\t{}\nPPid:\t{}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nThreads:\t{}\n",
                p.name,
                p.state,
                p.pid,
                p.ppid,
                p.threads,
                uid = p.uid
            ),
        );
        self.write(&format!("{dir}/comm"), format!("{}\n", p.name));
        self.write(&format!("{dir}/cmdline"), &p.cmdline);
        if let Some(exe) = &p.exe {
            self.symlink(exe, &format!("{dir}/exe"));
        }
        self.symlink(&p.cwd, &format!("{dir}/cwd"));
        self.mkdir(&format!("{dir}/fd"));
        self
    }

    /// An open descriptor `fd` of process `pid` pointing to `target`.
    pub fn fd(&self, pid: i32, fd: u32, target: &str) -> &Self {
        self.symlink(target, &format!("/proc/{pid}/fd/{fd}"))
    }
}

/// What [`Fixture::process`] writes.
pub struct FakeProcess {
    pub pid: i32,
    pub ppid: i32,
    pub name: String,
    pub state: char,
    pub uid: u32,
    pub threads: u32,
    pub start_ticks: u64,
    pub rss_pages: u64,
    pub cmdline: Vec<u8>,
    pub exe: Option<String>,
    pub cwd: String,
}

impl FakeProcess {
    pub fn new(pid: i32, name: &str) -> Self {
        Self {
            pid,
            ppid: 1,
            name: name.to_owned(),
            state: 'S',
            uid: 0,
            threads: 1,
            start_ticks: 0,
            rss_pages: 0,
            cmdline: format!("{name}\0").into_bytes(),
            exe: Some(format!("/usr/bin/{name}")),
            cwd: "/".to_owned(),
        }
    }
}

/// `/etc/passwd` with root, alice (1000) and bob (1001).
pub const PASSWD_FIXTURE: &str = "root:x:0:0:root:/root:/bin/bash\n\
alice:x:1000:1000:Alice Example,,,:/home/alice:/bin/bash\n\
bob:x:1001:1001::/home/bob:/usr/sbin/nologin\n";
