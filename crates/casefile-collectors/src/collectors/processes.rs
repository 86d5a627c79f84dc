//! `Processes/processes.csv`: every process with its parent, owner, start time, memory,
//! command line, executable and its SHA-256, working directory, container and
//! namespaces. Rows are streamed; what is held is one process and the hash cache.

use std::io;

use casefile_package::{ItemOutcome, ItemSink};
use procfs::process::Process;

use crate::{CollectError, Collector, Context};

mod executables;
mod isolation;

use executables::ExecutableHashes;
use isolation::{NAMESPACES, container, namespaces};

use super::accounts::UserNames;
use super::common::{CANCELLED, Csv, FileHash, Problems, csv_file, utc_timestamp};
use super::procs::{
    self, BootClock, Link, ProcessWalk, ReadError, Stat, command_line, parse_stat, read_file, read_link,
};

pub struct Processes;

const HEADER: [&str; 25] = [
    "pid",
    "ppid",
    "name",
    "state",
    "uid",
    "user",
    "start_time_utc",
    "threads",
    "vm_size_bytes",
    "rss_bytes",
    "executable",
    "executable_deleted",
    "executable_sha256",
    "executable_hash_note",
    "cwd",
    "command_line",
    "container_id",
    "container_runtime",
    "pid_ns",
    "mnt_ns",
    "net_ns",
    "user_ns",
    "uts_ns",
    "ipc_ns",
    "cgroup_ns",
];

const SOURCE: &str = "/proc/*/{stat,status,cmdline,exe,cwd,cgroup,ns/*}, /proc/stat, /etc/passwd";

/// Command lines longer than this are cut (the kernel allows several MiB).
const CMDLINE_LIMIT: u64 = 1 << 20;

/// `/proc/<pid>/cgroup` is a line per hierarchy: a few hundred bytes.
const CGROUP_LIMIT: u64 = 64 * 1024;

/// The kernel appends this to `exe` when the executable was deleted after it started.
const DELETED_SUFFIX: &str = " (deleted)";

impl Collector for Processes {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn folder(&self) -> &'static str {
        "Processes"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let users = UserNames::load(ctx);
        csv_file(sink, "processes.csv", SOURCE, &HEADER, |csv| write_processes(ctx, &users, csv))?;
        ctx.check_cancelled()
    }
}

fn write_processes(ctx: &Context, users: &UserNames, csv: &mut Csv<'_>) -> io::Result<ItemOutcome> {
    let mut walk = match ProcessWalk::new(ctx) {
        Ok(walk) => walk,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(ItemOutcome::not_applicable("/proc not present"));
        }
        Err(e) => return Ok(ItemOutcome::failed(format!("/proc: {e}"))),
    };
    let mut problems = Problems::default();
    // Without the boot time start times stay empty; the rest is still worth having.
    let clock = BootClock::load(ctx).map_err(|e| problems.add("start times unknown", format!("/proc/stat: {e}"))).ok();
    let mut hashes = ExecutableHashes::new(ctx);
    for process in &mut walk {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        let known = Known { clock: clock.as_ref(), users };
        if let Some(row) = ProcessRow::read(&process, known, &mut hashes, &mut problems) {
            csv.row(row.into_fields())?;
        }
    }
    problems.merge(&walk.problems);
    Ok(problems.outcome())
}

/// What every row is read with.
#[derive(Clone, Copy)]
struct Known<'a> {
    clock: Option<&'a BootClock>,
    users: &'a UserNames,
}

/// One line of `processes.csv`.
struct ProcessRow {
    pid: i32,
    ppid: String,
    name: String,
    state: String,
    uid: String,
    user: String,
    start_time: String,
    threads: String,
    vm_size_bytes: String,
    rss_bytes: String,
    executable: String,
    executable_deleted: bool,
    executable_sha256: String,
    executable_hash_note: String,
    cwd: String,
    command_line: String,
    container_id: String,
    container_runtime: String,
    namespaces: [String; NAMESPACES.len()],
}

impl ProcessRow {
    /// `None` when the process exited before its `stat` could be read. Fields that
    /// cannot be read stay empty and count once per process in `problems`.
    fn read(
        process: &Process,
        known: Known<'_>,
        hashes: &mut ExecutableHashes,
        problems: &mut Problems,
    ) -> Option<Self> {
        let mut errors = FieldErrors::default();
        let stat = match read_file(process, "stat", 4096) {
            Ok(raw) => parse_stat(&raw).unwrap_or_else(|| {
                errors.note("stat", ReadError::Failed("unparseable".into()));
                Stat::default()
            }),
            Err(ReadError::Gone) => return None,
            Err(e) => {
                errors.note("stat", e);
                Stat::default()
            }
        };
        let uid = procs::process_uid(process).map_err(|e| errors.note("status", e)).ok();
        let command_line = read_file(process, "cmdline", CMDLINE_LIMIT)
            .map(|raw| command_line(&raw))
            .map_err(|e| errors.note("cmdline", e))
            .unwrap_or_default();
        let executable =
            read_link(process, Link::Exe).map_err(|e| errors.note("exe", e)).ok().flatten().unwrap_or_default();
        let cwd = read_link(process, Link::Cwd).map_err(|e| errors.note("cwd", e)).ok().flatten().unwrap_or_default();
        // Kernel threads have no executable.
        let hash = if executable.is_empty() {
            None
        } else {
            hashes.of(process, &executable).map_err(|e| errors.note("exe (hash)", e)).ok().flatten()
        };
        let container = read_file(process, "cgroup", CGROUP_LIMIT)
            .map_err(|e| errors.note("cgroup", e))
            .ok()
            .and_then(|raw| container(&raw));
        let namespaces = namespaces(process).map_err(|e| errors.note("ns", e)).unwrap_or_default();
        if let Some(why) = errors.first {
            problems.add("processes with unreadable fields", why);
        }

        let start_time = known
            .clock
            .zip(stat.start_ticks)
            .and_then(|(clock, ticks)| clock.at(ticks))
            .map(utc_timestamp)
            .unwrap_or_default();
        Some(Self {
            pid: process.pid(),
            ppid: text(stat.ppid),
            state: stat.state.map(String::from).unwrap_or_default(),
            uid: text(uid),
            user: uid.map(|u| known.users.name(u).to_owned()).unwrap_or_default(),
            start_time,
            threads: text(stat.threads),
            vm_size_bytes: text(stat.vm_size),
            rss_bytes: text(
                stat.rss_pages.and_then(|p| u64::try_from(p).ok()).map(|p| p.saturating_mul(procfs::page_size())),
            ),
            executable_deleted: executable.ends_with(DELETED_SUFFIX),
            executable,
            executable_sha256: hash.as_ref().map(FileHash::hex).unwrap_or_default(),
            executable_hash_note: hash.as_ref().map(FileHash::note).unwrap_or_default(),
            cwd,
            command_line,
            container_id: container.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            container_runtime: container.map(|c| c.runtime.to_owned()).unwrap_or_default(),
            namespaces,
            name: stat.name,
        })
    }

    fn into_fields(self) -> impl Iterator<Item = String> {
        [
            self.pid.to_string(),
            self.ppid,
            self.name,
            self.state,
            self.uid,
            self.user,
            self.start_time,
            self.threads,
            self.vm_size_bytes,
            self.rss_bytes,
            self.executable,
            self.executable_deleted.to_string(),
            self.executable_sha256,
            self.executable_hash_note,
            self.cwd,
            self.command_line,
            self.container_id,
            self.container_runtime,
        ]
        .into_iter()
        .chain(self.namespaces)
    }
}

/// The first field of a process that could not be read (a vanished file is no error).
#[derive(Default)]
struct FieldErrors {
    first: Option<String>,
}

impl FieldErrors {
    fn note(&mut self, field: &str, e: ReadError) {
        if let ReadError::Failed(why) = e {
            self.first.get_or_insert_with(|| format!("{field}: {why}"));
        }
    }
}

/// A value that may be unknown, as a CSV field.
fn text<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::{FakeProcess, Fixture, PASSWD_FIXTURE, StreamProbe, run, run_live, run_with};
    use crate::{Context, Limits};
    use casefile_package::ItemStatus;
    use sha2::{Digest, Sha256};
    use tokio_util::sync::CancellationToken;

    const BOOT: i64 = 1_700_000_000;

    fn fixture() -> Fixture {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/proc/stat", format!("cpu  1 2 3 4\nbtime {BOOT}\nprocesses 99\n"));
        f
    }

    fn by_pid(
        rows: &[std::collections::HashMap<String, String>],
        pid: &str,
    ) -> std::collections::HashMap<String, String> {
        rows.iter().find(|r| r["pid"] == pid).unwrap_or_else(|| panic!("no row for pid {pid}")).clone()
    }

    #[test]
    fn process_fields_land_in_their_columns() {
        let f = fixture();
        let ticks = procfs::ticks_per_second();
        f.process(&FakeProcess {
            ppid: 1,
            uid: 1000,
            threads: 4,
            start_ticks: 90 * ticks,
            rss_pages: 10,
            cmdline: b"/usr/sbin/sshd\0-D\0".to_vec(),
            exe: Some("/usr/sbin/sshd".into()),
            cwd: "/var/empty".into(),
            ..FakeProcess::new(4242, "sshd")
        });
        let sink = run(&Processes, f.root());
        let item = sink.item("processes.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        assert_eq!(item.header(), HEADER);
        let row = by_pid(&item.rows(), "4242");
        assert_eq!(row["ppid"], "1");
        assert_eq!(row["name"], "sshd");
        assert_eq!(row["state"], "S");
        assert_eq!(row["uid"], "1000");
        assert_eq!(row["user"], "alice");
        assert_eq!(row["threads"], "4");
        assert_eq!(row["start_time_utc"], utc_timestamp(BOOT + 90));
        assert_eq!(row["rss_bytes"], (10 * procfs::page_size()).to_string());
        assert_eq!(row["command_line"], "/usr/sbin/sshd -D");
        assert_eq!(row["executable"], "/usr/sbin/sshd");
        assert_eq!(row["executable_deleted"], "false");
        assert_eq!(row["cwd"], "/var/empty");
    }

    #[test]
    fn hostile_command_lines_survive_the_csv_round_trip() {
        let f = fixture();
        let cmdline = b"/tmp/x\0a,b\0say \"hi\"\0line1\nline2\0\xff\xfebad\0".to_vec();
        f.process(&FakeProcess {
            cmdline: cmdline.clone(),
            exe: Some("/tmp/x (deleted)".into()),
            ..FakeProcess::new(77, "x, \"y\"\nz")
        });
        let sink = run(&Processes, f.root());
        let row = by_pid(&sink.item("processes.csv").rows(), "77");
        assert_eq!(row["command_line"], command_line(&cmdline));
        assert_eq!(row["command_line"], "/tmp/x a,b say \"hi\" line1\nline2 \u{fffd}\u{fffd}bad");
        assert_eq!(row["name"], "x, \"y\"\nz");
        assert_eq!(row["executable"], "/tmp/x (deleted)");
        assert_eq!(row["executable_deleted"], "true");
    }

    #[test]
    fn vanished_processes_are_skipped_without_a_note() {
        let f = fixture();
        f.process(&FakeProcess::new(10, "alive"));
        // Listed by readdir but gone before it could be read.
        f.mkdir("/proc/11");
        f.symlink("/nonexistent/proc/12", "/proc/12");
        let sink = run(&Processes, f.root());
        let item = sink.item("processes.csv");
        let pids: Vec<String> = item.rows().into_iter().map(|r| r["pid"].clone()).collect();
        assert_eq!(pids, ["10"]);
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
    }

    #[test]
    fn unreadable_fields_stay_empty_and_make_the_item_partial() {
        let f = fixture();
        // An `exe` that is not a link cannot be read (EINVAL), as a process of another
        // user cannot (EACCES) when the agent runs unprivileged.
        f.process(&FakeProcess { exe: None, ..FakeProcess::new(20, "odd") });
        f.write("/proc/20/exe", "not a link");
        // Kernel threads have no `exe` at all: empty, but not a problem.
        f.process(&FakeProcess { exe: None, cmdline: Vec::new(), ..FakeProcess::new(2, "kthreadd") });
        let sink = run(&Processes, f.root());
        let item = sink.item("processes.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        let why = item.outcome.error.clone().unwrap();
        assert!(why.contains("processes with unreadable fields: 1"), "{why}");
        assert!(why.contains("exe:"), "{why}");
        let rows = item.rows();
        assert_eq!(by_pid(&rows, "20")["executable"], "");
        assert_eq!(by_pid(&rows, "20")["name"], "odd");
        assert_eq!(by_pid(&rows, "2")["executable"], "");
    }

    #[test]
    fn missing_boot_time_leaves_start_times_empty() {
        let f = Fixture::new();
        f.process(&FakeProcess::new(5, "a"));
        let sink = run(&Processes, f.root());
        let item = sink.item("processes.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        assert_eq!(by_pid(&item.rows(), "5")["start_time_utc"], "");
        // No /etc/passwd: the uid is still there, the name is empty.
        assert_eq!(by_pid(&item.rows(), "5")["uid"], "0");
        assert_eq!(by_pid(&item.rows(), "5")["user"], "");
    }

    #[test]
    fn a_root_without_proc_is_not_applicable() {
        let f = Fixture::new();
        let sink = run(&Processes, f.root());
        assert_eq!(sink.item("processes.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn live_host_lists_this_test_process() {
        // A debug test binary is larger than the default cap.
        let limits = Limits { max_file_bytes: 1 << 30, ..Limits::default() };
        let sink = run_with(&Processes, std::path::Path::new("/"), limits);
        let item = sink.item("processes.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
        let rows = item.rows();
        let me = by_pid(&rows, &std::process::id().to_string());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me["executable"], exe.to_string_lossy());
        assert!(!me["start_time_utc"].is_empty());
        let own = hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()));
        assert_eq!(me["executable_sha256"], own);
        assert!(me["vm_size_bytes"].parse::<u64>().unwrap() > 0);
        assert!(rows.iter().any(|r| r["pid"] == "1"));
    }

    /// A process of the fixture whose `exe` link points at a file inside the fixture.
    fn process_running(f: &Fixture, pid: i32, exe_abs: &str) {
        let exe = f.path(exe_abs).to_string_lossy().into_owned();
        f.process(&FakeProcess { exe: Some(exe), ..FakeProcess::new(pid, "tool") });
    }

    #[test]
    fn executables_are_hashed_once_per_file() {
        let f = fixture();
        f.write("/usr/bin/tool", b"\x7fELF tool");
        f.write("/usr/bin/other", b"\x7fELF other");
        for pid in [100, 101, 102] {
            process_running(&f, pid, "/usr/bin/tool");
        }
        process_running(&f, 103, "/usr/bin/other");
        let ctx = Context {
            root: f.root().to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Limits::default(),
            running: None,
        };
        let mut hashes = ExecutableHashes::new(&ctx);
        let mut walk = ProcessWalk::new(&ctx).unwrap();
        let digests: Vec<String> =
            (&mut walk).map(|p| hashes.of(&p, "/usr/bin/tool").unwrap().unwrap().hex()).collect();
        assert_eq!(digests.len(), 4);
        assert_eq!(hashes.cached(), 2, "three processes share one binary");

        let rows = run(&Processes, f.root()).item("processes.csv").rows();
        let tool = hex::encode(Sha256::digest(b"\x7fELF tool"));
        for pid in ["100", "101", "102"] {
            assert_eq!(by_pid(&rows, pid)["executable_sha256"], tool);
            assert_eq!(by_pid(&rows, pid)["executable_hash_note"], "");
        }
        assert_eq!(by_pid(&rows, "103")["executable_sha256"], hex::encode(Sha256::digest(b"\x7fELF other")));
    }

    #[test]
    fn an_executable_on_a_fuse_mount_is_not_opened() {
        let f = fixture();
        f.write("/tmp/.mount_app/AppRun", b"\x7fELF");
        process_running(&f, 7, "/tmp/.mount_app/AppRun");
        // The fixture's exe link names the fixture path; the mount table names it too.
        let exe = f.path("/tmp/.mount_app").to_string_lossy().into_owned();
        f.write("/proc/mounts", format!("/dev/vda / ext4 rw 0 0\nApp {exe} fuse.App ro 0 0\n"));
        let row = by_pid(&run(&Processes, f.root()).item("processes.csv").rows(), "7");
        assert_eq!(row["executable_sha256"], "");
        assert_eq!(row["executable_hash_note"], "not hashed: on a fuse.App file system");
    }

    #[test]
    fn an_executable_over_the_cap_is_not_hashed_and_says_why() {
        let f = fixture();
        f.write("/opt/big", vec![0u8; 4096]);
        process_running(&f, 9, "/opt/big");
        let limits = Limits { max_file_bytes: 1024, ..Limits::default() };
        let item = run_with(&Processes, f.root(), limits);
        let row = by_pid(&item.item("processes.csv").rows(), "9");
        assert_eq!(row["executable_sha256"], "");
        assert_eq!(row["executable_hash_note"], "not hashed: 4096 bytes is over the 1024-byte cap");
    }

    #[test]
    fn memory_namespaces_and_container_land_in_their_columns() {
        let f = fixture();
        f.process(&FakeProcess { rss_pages: 3, ..FakeProcess::new(42, "nginx") });
        for (kind, inode) in [("pid", 4026532201u64), ("mnt", 4026532199), ("net", 4026532204), ("user", 4026531837)] {
            f.symlink(format!("{kind}:[{inode}]"), &format!("/proc/42/ns/{kind}"));
        }
        let id = "a".repeat(64);
        f.write("/proc/42/cgroup", format!("0::/system.slice/docker-{id}.scope\n"));
        let sink = run(&Processes, f.root());
        let item = sink.item("processes.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let row = by_pid(&item.rows(), "42");
        assert_eq!(row["vm_size_bytes"], "1000000");
        assert_eq!(row["rss_bytes"], (3 * procfs::page_size()).to_string());
        assert_eq!(row["container_id"], id);
        assert_eq!(row["container_runtime"], "docker");
        assert_eq!(row["pid_ns"], "4026532201");
        assert_eq!(row["net_ns"], "4026532204");
        assert_eq!(row["user_ns"], "4026531837");
        // Kinds this kernel (fixture) lacks stay empty without a problem.
        assert_eq!(row["cgroup_ns"], "");
    }

    /// A host with 10,000 processes: every one is listed, and the CSV reaches the sink
    /// in many small writes rather than one buffer of the whole table.
    #[test]
    fn ten_thousand_processes_are_streamed() {
        let f = Fixture::in_memory();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/proc/stat", format!("btime {BOOT}\n"));
        for pid in 1..=10_000 {
            f.write(
                &format!("/proc/{pid}/stat"),
                format!("{pid} (p{pid}) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {pid} 4096 1\n"),
            );
            f.write(&format!("/proc/{pid}/status"), format!("Name:\tp{pid}\nUid:\t0\t0\t0\t0\n"));
            f.write(&format!("/proc/{pid}/cmdline"), format!("/bin/p{pid}\0--flag\0"));
        }
        let ctx = Context {
            root: f.root().to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Limits::default(),
            running: None,
        };
        let mut probe = StreamProbe::default();
        Processes.collect(&ctx, &mut probe).unwrap();
        let item = probe.sink.item("processes.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        assert_eq!(rows.len(), 10_000);
        assert_eq!(by_pid(&rows, "9999")["command_line"], "/bin/p9999 --flag");
        assert!(probe.writes > 50, "{} writes", probe.writes);
        assert!(probe.largest_write <= 64 * 1024, "largest write {}", probe.largest_write);
    }

    /// A copy of `sleep` started and then deleted: the row is flagged and the deleted
    /// file is still hashed through `/proc/<pid>/exe`.
    #[test]
    fn live_deleted_executable_is_flagged_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("deleted-sleep");
        std::fs::copy("/bin/sleep", &copy).unwrap();
        let expected = hex::encode(Sha256::digest(std::fs::read(&copy).unwrap()));
        // Another test thread forking while the copy was open for writing makes exec
        // fail with ETXTBSY for a moment; a /tmp mounted noexec makes it impossible.
        let mut child = None;
        for _ in 0..50 {
            match std::process::Command::new(&copy).arg("30").spawn() {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(26) => std::thread::yield_now(),
                Err(e) => {
                    eprintln!("skipped: cannot run a copy in {}: {e}", dir.path().display());
                    return;
                }
            }
        }
        let mut child = child.expect("spawned");
        std::fs::remove_file(&copy).unwrap();
        let sink = run_live(&Processes);
        child.kill().unwrap();
        child.wait().unwrap();
        let row = by_pid(&sink.item("processes.csv").rows(), &child.id().to_string());
        assert_eq!(row["executable_deleted"], "true");
        assert!(row["executable"].ends_with(" (deleted)"), "{}", row["executable"]);
        assert_eq!(row["executable_sha256"], expected);
        assert!(!row["mnt_ns"].is_empty());
    }
}
