//! `Hidden processes/hidden_processes.csv`: processes that answer to a direct
//! `/proc/<pid>` look-up but are missing from the `/proc` listing. A rootkit that hides
//! a process filters the directory listing (`getdents`); the look-up by name usually
//! still works, so the difference shows it.
//!
//! Every pid from 1 to `/proc/sys/kernel/pid_max` that the listing lacks is looked up.
//! A hit is not hidden when it is a thread (threads answer to `/proc/<tid>` but are not
//! listed) of a listed process, or when a fresh listing taken after the probe has it (it
//! started meanwhile), or when a second look-up misses it (it exited meanwhile).

use std::io;
use std::path::PathBuf;

use casefile_package::{ItemOutcome, ItemSink};
use procfs::process::Process;

use crate::{CollectError, Collector, Context};

use super::common::{CANCELLED, Csv, Problems, ascii_str, csv_file, read_value, utc_timestamp};
use super::procs::{self, BootClock, Link, ReadError, command_line, parse_stat, proc_root, read_file, read_link};

pub struct HiddenProcesses;

const HEADER: [&str; 11] =
    ["pid", "tgid", "ppid", "name", "state", "uid", "start_time_utc", "executable", "cwd", "command_line", "note"];

const SOURCE: &str = "/proc listing, /proc/<pid> look-ups 1..pid_max, /proc/<pid>/{status,stat,cmdline,exe,cwd}";

/// The kernel's default `pid_max` on small machines, used when the file is unreadable.
const DEFAULT_PID_MAX: u32 = 32_768;
/// The kernel's own ceiling for `pid_max` (`PID_MAX_LIMIT` on 64-bit): a planted value
/// above it cannot make the probe longer.
const PID_MAX_LIMIT: u32 = 4_194_304;
/// The cancel token is looked at after this many look-ups.
const CANCEL_EVERY: u32 = 4096;
/// Most candidates examined: a kernel that answers every look-up must not fill memory.
const MAX_CANDIDATES: usize = 10_000;
const CMDLINE_LIMIT: u64 = 1 << 20;

impl Collector for HiddenProcesses {
    fn name(&self) -> &'static str {
        "hidden_processes"
    }

    fn folder(&self) -> &'static str {
        "Hidden processes"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let view = ProcDir { proc: proc_root(ctx) };
        collect_with(ctx, sink, &view)?;
        ctx.check_cancelled()
    }
}

/// The two primitives the check rests on: listing `/proc` and looking one pid up. A
/// test replaces them to hide a live process from the listing; all else stays real.
pub(crate) trait PidView {
    /// The pids the `/proc` listing shows.
    fn list(&self) -> io::Result<Vec<u32>>;
    /// Whether `/proc/<pid>` answers to a direct look-up.
    fn look_up(&self, pid: u32) -> io::Result<bool>;
}

/// The real `/proc` below the root.
pub(crate) struct ProcDir {
    pub(crate) proc: PathBuf,
}

impl PidView for ProcDir {
    fn list(&self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&self.proc)? {
            let name = entry?.file_name();
            if let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn look_up(&self, pid: u32) -> io::Result<bool> {
        match std::fs::symlink_metadata(self.proc.join(pid.to_string())) {
            Ok(_) => Ok(true),
            Err(e) => match ReadError::from(e) {
                ReadError::Gone => Ok(false),
                ReadError::Failed(why) => Err(io::Error::other(why)),
            },
        }
    }
}

/// One bit per pid up to `pid_max`: 512 KiB at the kernel's ceiling, however many
/// processes the listing holds.
struct PidSet {
    bits: Vec<u64>,
}

impl PidSet {
    fn new(pids: &[u32], max: u32) -> Self {
        let mut bits = vec![0u64; max as usize / 64 + 1];
        for &pid in pids.iter().filter(|&&p| p <= max) {
            bits[pid as usize / 64] |= 1 << (pid % 64);
        }
        Self { bits }
    }

    fn contains(&self, pid: u32) -> bool {
        self.bits.get(pid as usize / 64).is_some_and(|word| word & (1 << (pid % 64)) != 0)
    }
}

pub(crate) fn collect_with(ctx: &Context, sink: &mut dyn ItemSink, view: &dyn PidView) -> Result<(), CollectError> {
    csv_file(sink, "hidden_processes.csv", SOURCE, &HEADER, |csv| write_hidden(ctx, view, csv))?;
    Ok(())
}

fn write_hidden(ctx: &Context, view: &dyn PidView, csv: &mut Csv<'_>) -> io::Result<ItemOutcome> {
    let proc = proc_root(ctx);
    let first = match view.list() {
        Ok(pids) => pids,
        Err(e) if super::common::is_missing(&e) => return Ok(ItemOutcome::not_applicable("/proc not present")),
        Err(e) => return Ok(ItemOutcome::failed(format!("/proc: {e}"))),
    };
    if first.is_empty() {
        return Ok(ItemOutcome::not_applicable("/proc lists no process (not a mounted procfs)"));
    }
    let mut problems = Problems::default();
    let pid_max = match read_value(&proc.join("sys/kernel/pid_max")).map(|v| v.parse::<u32>()) {
        Ok(Ok(max)) => max.clamp(1, PID_MAX_LIMIT),
        Ok(Err(e)) => {
            problems.add("pid_max unparseable, probed to 32768", e);
            DEFAULT_PID_MAX
        }
        Err(e) => {
            problems.add("pid_max unreadable, probed to 32768", e);
            DEFAULT_PID_MAX
        }
    };
    let listed = PidSet::new(&first, pid_max);
    drop(first);

    let mut candidates = Vec::new();
    for pid in 1..=pid_max {
        if pid % CANCEL_EVERY == 0 && ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(format!("{CANCELLED} at pid {pid} of {pid_max}")));
        }
        if listed.contains(pid) {
            continue;
        }
        match view.look_up(pid) {
            Ok(true) if candidates.len() < MAX_CANDIDATES => candidates.push(pid),
            Ok(true) => problems.add("look-up hits past the candidate cap ignored", pid),
            Ok(false) => {}
            Err(e) => problems.add("look-ups that failed", format!("{pid}: {e}")),
        }
    }

    // A process that started during the probe is in a fresh listing; one that exited
    // no longer answers.
    let fresh = match view.list() {
        Ok(pids) => PidSet::new(&pids, pid_max),
        Err(e) => return Ok(ItemOutcome::failed(format!("/proc listed a second time: {e}"))),
    };
    let clock = BootClock::load(ctx).map_err(|e| problems.add("start times unknown", format!("/proc/stat: {e}"))).ok();
    for pid in candidates {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        if fresh.contains(pid) || !view.look_up(pid).unwrap_or(true) {
            continue;
        }
        // A thread of a listed process: listed processes' threads are never listed.
        let thread_of_listed = |tgid: u32| tgid != pid && (listed.contains(tgid) || fresh.contains(tgid));
        if let Some(row) = HiddenRow::read(&proc, pid, clock.as_ref(), thread_of_listed, &mut problems) {
            csv.row(row.into_fields())?;
        }
    }
    Ok(problems.outcome())
}

/// What is readable about one hidden pid.
struct HiddenRow {
    pid: u32,
    tgid: Option<u32>,
    ppid: String,
    name: String,
    state: String,
    uid: String,
    start_time: String,
    executable: String,
    cwd: String,
    command_line: String,
    note: String,
}

impl HiddenRow {
    /// `None` when the process is gone before its directory could be opened, or when
    /// it is a thread whose thread group `skip_thread_of` says is no concern.
    fn read(
        proc: &std::path::Path,
        pid: u32,
        clock: Option<&BootClock>,
        skip_thread_of: impl Fn(u32) -> bool,
        problems: &mut Problems,
    ) -> Option<Self> {
        let process = match Process::new_with_root(proc.join(pid.to_string())).map_err(ReadError::from) {
            Ok(process) => process,
            Err(ReadError::Gone) => return None,
            Err(ReadError::Failed(why)) => {
                problems.add("hidden pids whose directory cannot be opened", format!("{pid}: {why}"));
                return Some(Self::unreadable(pid, why));
            }
        };
        let mut errors: Vec<String> = Vec::new();
        let mut note = |field: &str, e: ReadError| {
            if let ReadError::Failed(why) = e {
                errors.push(format!("{field}: {why}"));
            }
        };
        let status = read_file(&process, "status", 64 * 1024).map_err(|e| note("status", e)).unwrap_or_default();
        let tgid = status_number(&status, b"Tgid:");
        if tgid.is_some_and(skip_thread_of) {
            return None;
        }
        let stat = read_file(&process, "stat", 4096).map_err(|e| note("stat", e)).ok().and_then(|raw| parse_stat(&raw));
        // The status just read gives the uid; the directory's owner when it could not.
        let uid = procs::parse_status_euid(&status).or_else(|| process.uid().ok());
        let command_line = read_file(&process, "cmdline", CMDLINE_LIMIT)
            .map(|raw| command_line(&raw))
            .map_err(|e| note("cmdline", e))
            .unwrap_or_default();
        let executable = read_link(&process, Link::Exe).map_err(|e| note("exe", e)).ok().flatten().unwrap_or_default();
        let cwd = read_link(&process, Link::Cwd).map_err(|e| note("cwd", e)).ok().flatten().unwrap_or_default();
        if let Some(first) = errors.first() {
            problems.add("hidden pids with unreadable fields", format!("{pid}: {first}"));
        }
        let stat = stat.unwrap_or_default();
        let start_time =
            clock.zip(stat.start_ticks).and_then(|(c, ticks)| c.at(ticks)).map(utc_timestamp).unwrap_or_default();
        Some(Self {
            pid,
            tgid,
            ppid: stat.ppid.map(|p| p.to_string()).unwrap_or_default(),
            name: stat.name,
            state: stat.state.map(String::from).unwrap_or_default(),
            uid: uid.map(|u| u.to_string()).unwrap_or_default(),
            start_time,
            executable,
            cwd,
            command_line,
            note: errors.join("; "),
        })
    }

    fn unreadable(pid: u32, why: String) -> Self {
        Self {
            pid,
            tgid: None,
            ppid: String::new(),
            name: String::new(),
            state: String::new(),
            uid: String::new(),
            start_time: String::new(),
            executable: String::new(),
            cwd: String::new(),
            command_line: String::new(),
            note: why,
        }
    }

    fn into_fields(self) -> [String; HEADER.len()] {
        [
            self.pid.to_string(),
            self.tgid.map(|t| t.to_string()).unwrap_or_default(),
            self.ppid,
            self.name,
            self.state,
            self.uid,
            self.start_time,
            self.executable,
            self.cwd,
            self.command_line,
            self.note,
        ]
    }
}

/// A numeric field (`Tgid:`) of `/proc/<pid>/status`.
fn status_number(status: &[u8], key: &[u8]) -> Option<u32> {
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key))
        .and_then(|v| ascii_str(v)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;
    use crate::collectors::test_support::{FakeProcess, Fixture, MemorySink, run, run_live};
    use crate::{Limits, collectors::test_support::find_row};
    use casefile_package::ItemStatus;
    use tokio_util::sync::CancellationToken;

    /// The real `/proc`, with some pids left out of its listing as a rootkit would.
    struct Hiding {
        real: ProcDir,
        hidden: Vec<u32>,
    }

    impl PidView for Hiding {
        fn list(&self) -> io::Result<Vec<u32>> {
            Ok(self.real.list()?.into_iter().filter(|p| !self.hidden.contains(p)).collect())
        }

        fn look_up(&self, pid: u32) -> io::Result<bool> {
            self.real.look_up(pid)
        }
    }

    /// Kills the child when the test ends, however it ends.
    struct ChildGuard(Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn run_view(root: &std::path::Path, view: &dyn PidView) -> MemorySink {
        let ctx = Context {
            root: root.to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Limits::default(),
            running: None,
        };
        let mut sink = MemorySink::default();
        collect_with(&ctx, &mut sink, view).unwrap();
        sink
    }

    #[test]
    fn a_live_process_left_out_of_the_listing_is_reported() {
        let child = ChildGuard(Command::new("/bin/sleep").arg("300").spawn().unwrap());
        let pid = child.0.id();
        let view = Hiding { real: ProcDir { proc: "/proc".into() }, hidden: vec![pid] };
        let sink = run_view(std::path::Path::new("/"), &view);
        let item = sink.item("hidden_processes.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
        let rows = item.rows();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = find_row(&rows, "pid", &pid.to_string());
        assert_eq!(row["tgid"], pid.to_string());
        assert_eq!(row["name"], "sleep");
        assert_eq!(row["command_line"], "/bin/sleep 300");
        assert_eq!(row["ppid"], std::process::id().to_string());
        assert_eq!(row["uid"], rustix::process::geteuid().as_raw().to_string());
        assert!(row["executable"].ends_with("sleep"), "{row:?}");
        assert!(!row["start_time_utc"].is_empty());
    }

    /// Hides a pid from the first listing only, as when a process starts during the probe.
    struct StartsDuringProbe {
        real: ProcDir,
        pid: u32,
        listings: std::cell::Cell<u32>,
    }

    impl PidView for StartsDuringProbe {
        fn list(&self) -> io::Result<Vec<u32>> {
            self.listings.set(self.listings.get() + 1);
            let first = self.listings.get() == 1;
            Ok(self.real.list()?.into_iter().filter(|&p| !(first && p == self.pid)).collect())
        }

        fn look_up(&self, pid: u32) -> io::Result<bool> {
            self.real.look_up(pid)
        }
    }

    #[test]
    fn a_process_in_the_fresh_listing_is_not_reported() {
        let child = ChildGuard(Command::new("/bin/sleep").arg("300").spawn().unwrap());
        let pid = child.0.id();
        let view = StartsDuringProbe { real: ProcDir { proc: "/proc".into() }, pid, listings: 0.into() };
        let sink = run_view(std::path::Path::new("/"), &view);
        assert_eq!(view.listings.get(), 2, "listed again after the probe");
        let rows = sink.item("hidden_processes.csv").rows();
        assert!(rows.iter().all(|r| r["pid"] != pid.to_string()), "{rows:?}");
    }

    #[test]
    fn an_exited_process_is_not_reported() {
        let mut child = Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let view = Hiding { real: ProcDir { proc: "/proc".into() }, hidden: vec![pid] };
        let sink = run_view(std::path::Path::new("/"), &view);
        let rows = sink.item("hidden_processes.csv").rows();
        assert!(rows.iter().all(|r| r["pid"] != pid.to_string()), "{rows:?}");
    }

    #[test]
    fn threads_of_listed_processes_are_not_hidden_but_of_hidden_ones_are() {
        let f = Fixture::new();
        f.write("/proc/sys/kernel/pid_max", "200\n");
        f.write("/proc/stat", "btime 1700000000\n");
        let mut evil = FakeProcess::new(66, "evil\n../x");
        evil.cmdline = b"/tmp/.x/evil\0--hide\0".to_vec();
        f.process(&FakeProcess::new(1, "init"));
        f.process(&evil);
        // 67: a thread of the hidden 66; 12: a thread of the listed 1.
        f.process(&FakeProcess::new(67, "evil-worker"));
        f.write("/proc/67/status", "Name:\tevil-worker\nTgid:\t66\nPid:\t67\nUid:\t0\t0\t0\t0\n");
        f.process(&FakeProcess::new(12, "init-thread"));
        f.write("/proc/12/status", "Name:\tinit-thread\nTgid:\t1\nPid:\t12\nUid:\t0\t0\t0\t0\n");
        f.write("/proc/66/status", "Name:\tevil\nTgid:\t66\nPid:\t66\nUid:\t0\t0\t0\t0\n");
        let view = Hiding { real: ProcDir { proc: f.path("/proc") }, hidden: vec![66, 67, 12] };
        let sink = run_view(f.root(), &view);
        let item = sink.item("hidden_processes.csv");
        let rows = item.rows();
        let pids: Vec<&str> = rows.iter().map(|r| r["pid"].as_str()).collect();
        assert_eq!(pids, ["66", "67"]);
        assert_eq!(rows[0]["name"], "evil\n../x");
        assert_eq!(rows[0]["command_line"], "/tmp/.x/evil --hide");
        assert_eq!(rows[0]["start_time_utc"], "2023-11-14T22:13:20Z");
        assert_eq!(rows[1]["tgid"], "66");
    }

    #[test]
    fn a_fixture_without_hiding_has_none_and_a_missing_proc_is_not_applicable() {
        let f = Fixture::new();
        f.write("/proc/sys/kernel/pid_max", "70000\n");
        f.process(&FakeProcess::new(1, "init"));
        let sink = run(&HiddenProcesses, f.root());
        let item = sink.item("hidden_processes.csv");
        assert_eq!(item.status(), ItemStatus::Partial, "no /proc/stat: start times unknown");
        assert!(item.rows().is_empty());

        let empty = Fixture::new();
        let sink = run(&HiddenProcesses, empty.root());
        assert_eq!(sink.item("hidden_processes.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn a_garbage_pid_max_falls_back_and_says_so() {
        let f = Fixture::new();
        f.write("/proc/stat", "btime 1\n");
        f.process(&FakeProcess::new(1, "init"));
        f.fifo("/proc/sys/kernel/pid_max");
        let item_outcome = run(&HiddenProcesses, f.root()).item("hidden_processes.csv").outcome.clone();
        assert_eq!(item_outcome.status, ItemStatus::Partial);
        assert!(item_outcome.error.unwrap().contains("pid_max unreadable"));
    }

    #[test]
    fn the_live_host_hides_nothing() {
        let sink = run_live(&HiddenProcesses);
        let item = sink.item("hidden_processes.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        assert!(item.rows().is_empty(), "{:?}", item.rows());
    }

    #[test]
    fn a_cancelled_probe_stops() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ctx = Context::live(cancel);
        let mut sink = MemorySink::default();
        assert!(matches!(HiddenProcesses.collect(&ctx, &mut sink), Err(CollectError::Cancelled)));
        assert_eq!(sink.item("hidden_processes.csv").status(), ItemStatus::Partial);
    }
}
