//! `Processes/processes.csv`: every process with its parent, owner, start time, command
//! line, executable and working directory.

use std::io;

use casefile_package::{ItemOutcome, ItemSink};
use procfs::process::Process;

use crate::{CollectError, Collector, Context};

use super::accounts::UserNames;
use super::common::{CANCELLED, Csv, Problems, csv_file, utc_timestamp};
use super::procs::{
    self, BootClock, Link, ProcessWalk, ReadError, Stat, command_line, parse_stat, read_file, read_link,
};

pub struct Processes;

const HEADER: [&str; 13] = [
    "pid",
    "ppid",
    "name",
    "state",
    "uid",
    "user",
    "start_time_utc",
    "threads",
    "rss_bytes",
    "executable",
    "executable_deleted",
    "cwd",
    "command_line",
];

const SOURCE: &str = "/proc/*/{stat,status,cmdline,exe,cwd}, /proc/stat, /etc/passwd";

/// Command lines longer than this are cut (the kernel allows several MiB).
const CMDLINE_LIMIT: u64 = 1 << 20;

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
    for process in &mut walk {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        if let Some(row) = ProcessRow::read(&process, clock.as_ref(), users, &mut problems) {
            csv.row(row.into_fields())?;
        }
    }
    problems.merge(&walk.problems);
    Ok(problems.outcome())
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
    rss_bytes: String,
    executable: String,
    executable_deleted: bool,
    cwd: String,
    command_line: String,
}

impl ProcessRow {
    /// `None` when the process exited before its `stat` could be read. Fields that
    /// cannot be read stay empty and count once per process in `problems`.
    fn read(process: &Process, clock: Option<&BootClock>, users: &UserNames, problems: &mut Problems) -> Option<Self> {
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
        if let Some(why) = errors.first {
            problems.add("processes with unreadable fields", why);
        }

        let start_time = clock
            .zip(stat.start_ticks)
            .and_then(|(clock, ticks)| clock.at(ticks))
            .map(utc_timestamp)
            .unwrap_or_default();
        Some(Self {
            pid: process.pid(),
            ppid: text(stat.ppid),
            state: stat.state.map(String::from).unwrap_or_default(),
            uid: text(uid),
            user: uid.map(|u| users.name(u).to_owned()).unwrap_or_default(),
            start_time,
            threads: text(stat.threads),
            rss_bytes: text(
                stat.rss_pages.and_then(|p| u64::try_from(p).ok()).map(|p| p.saturating_mul(procfs::page_size())),
            ),
            executable_deleted: executable.ends_with(DELETED_SUFFIX),
            executable,
            cwd,
            command_line,
            name: stat.name,
        })
    }

    fn into_fields(self) -> [String; 13] {
        [
            self.pid.to_string(),
            self.ppid,
            self.name,
            self.state,
            self.uid,
            self.user,
            self.start_time,
            self.threads,
            self.rss_bytes,
            self.executable,
            self.executable_deleted.to_string(),
            self.cwd,
            self.command_line,
        ]
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
    use crate::collectors::test_support::{FakeProcess, Fixture, PASSWD_FIXTURE, run, run_live};
    use casefile_package::ItemStatus;

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
        let sink = run_live(&Processes);
        let item = sink.item("processes.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
        let rows = item.rows();
        let me = by_pid(&rows, &std::process::id().to_string());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me["executable"], exe.to_string_lossy());
        assert!(!me["start_time_utc"].is_empty());
        assert!(rows.iter().any(|r| r["pid"] == "1"));
    }
}
