//! `Users and groups/`: local accounts and groups, sign-in history from the utmp-format
//! logs and lastlog, sudo rules, and the SSH keys that may sign in as each user.
//!
//! - [`lastlog`]: last sign-in per uid (`lastlog.csv`)
//! - [`ssh_keys`]: authorized SSH keys (`ssh_authorized_keys.csv`)

use std::io::{self, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::{CollectError, Collector, Context};

mod lastlog;
mod ssh_keys;

use super::accounts::{GROUP, PASSWD, UserNames, group_fields, homes, passwd_fields};
use super::common::{
    CANCELLED, Csv, Problems, UniqueNames, copy_file, csv_file, is_missing, name_part, open_lines, open_regular,
    unavailable, utc_timestamp,
};

pub struct Users;

impl Collector for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn folder(&self) -> &'static str {
        "Users and groups"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        // `sudoers.d` names come from the host.
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        write_colon_file(ctx, sink, "users.csv", PASSWD, &USERS_HEADER, |line| {
            passwd_fields(line).map(|f| f.to_vec())
        })?;
        write_colon_file(ctx, sink, "groups.csv", GROUP, &GROUPS_HEADER, |line| {
            group_fields(line).map(|f| f.to_vec())
        })?;
        for (name, candidates) in SESSION_LOGS {
            write_session_log(ctx, sink, name, candidates)?;
            ctx.check_cancelled()?;
        }
        lastlog::write_lastlog(ctx, sink, &UserNames::load(ctx))?;
        copy_session_databases(ctx, sink)?;
        copy_file(sink, "sudoers", &ctx.path(SUDOERS), SUDOERS, ctx.limits.max_file_bytes)?;
        copy_sudoers_d(ctx, sink)?;
        ctx.check_cancelled()?;
        ssh_keys::write_authorized_keys(ctx, sink, &homes(ctx))?;
        ctx.check_cancelled()
    }
}

// ---------------------------------------------------------------------------------------
// /etc/passwd and /etc/group

const USERS_HEADER: [&str; 7] = ["user", "password", "uid", "gid", "gecos", "home", "shell"];
const GROUPS_HEADER: [&str; 4] = ["group", "password", "gid", "members"];

/// Streams a `:`-separated account file into a CSV, one row per well-formed line.
fn write_colon_file(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    name: &str,
    abs: &str,
    header: &[&str],
    fields: impl Fn(&str) -> Option<Vec<&str>>,
) -> Result<(), PackageError> {
    csv_file(sink, name, abs, header, |csv| {
        let mut lines = match open_lines(&ctx.path(abs)) {
            Ok(lines) => lines,
            Err(e) => return Ok(unavailable(abs, &e)),
        };
        let mut problems = Problems::default();
        let mut line_number = 0;
        while let Some(line) = lines.next_line()? {
            line_number += 1;
            let line = String::from_utf8_lossy(line);
            if line.trim().is_empty() {
                continue;
            }
            match fields(&line) {
                Some(fields) => csv.row(fields)?,
                None => problems.add("malformed lines skipped", format!("line {line_number}")),
            }
        }
        Ok(problems.outcome())
    })
}

// ---------------------------------------------------------------------------------------
// Sign-in history: wtmp, btmp, utmp

/// Package name and candidate host paths of each utmp-format log.
const SESSION_LOGS: [(&str, &[&str]); 3] = [
    ("logins.csv", &["/var/log/wtmp"]),
    ("failed_logins.csv", &["/var/log/btmp"]),
    ("logged_in.csv", &["/run/utmp", "/var/run/utmp"]),
];

const SESSION_HEADER: [&str; 9] =
    ["time_utc", "type", "user", "terminal", "host", "ip_address", "pid", "session", "terminal_id"];

/// Size of glibc's `struct utmp` on 64-bit Linux (x86_64, aarch64): the layout below,
/// with 32-bit times for compatibility with 32-bit programs.
const UTMP_SIZE: usize = 384;

/// One record of a utmp-format file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UtmpRecord {
    kind: i16,
    pid: i32,
    line: String,
    id: String,
    user: String,
    host: String,
    session: i32,
    /// Seconds since the epoch. Stored as a signed 32-bit number; read unsigned so that
    /// records written after 2038 by newer tools stay in the right century.
    time: u32,
    address: Option<IpAddr>,
}

/// `ut_type` values.
const EMPTY: i16 = 0;

impl UtmpRecord {
    /// Decodes one record (little endian, as on every 64-bit Linux we run on):
    /// `i16 type, 2 pad, i32 pid, char line[32], char id[4], char user[32],
    /// char host[256], i16 termination, i16 exit, i32 session, i32 tv_sec, i32 tv_usec,
    /// i32 addr_v6[4], 20 unused`.
    fn parse(raw: &[u8; UTMP_SIZE]) -> Self {
        let i16_at = |at: usize| i16::from_le_bytes([raw[at], raw[at + 1]]);
        let i32_at = |at: usize| i32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let text = |at: usize, len: usize| c_string(&raw[at..at + len]);
        let mut address = [0u8; 16];
        address.copy_from_slice(&raw[348..364]);
        Self {
            kind: i16_at(0),
            pid: i32_at(4),
            line: text(8, 32),
            id: text(40, 4),
            user: text(44, 32),
            host: text(76, 256),
            session: i32_at(336),
            time: i32_at(340) as u32,
            address: ip_address(address),
        }
    }

    fn kind_name(&self) -> String {
        let name = match self.kind {
            EMPTY => "EMPTY",
            1 => "RUN_LVL",
            2 => "BOOT_TIME",
            3 => "NEW_TIME",
            4 => "OLD_TIME",
            5 => "INIT_PROCESS",
            6 => "LOGIN_PROCESS",
            7 => "USER_PROCESS",
            8 => "DEAD_PROCESS",
            9 => "ACCOUNTING",
            other => return other.to_string(),
        };
        name.to_owned()
    }

    fn fields(&self) -> [String; 9] {
        [
            utc_timestamp(i64::from(self.time)),
            self.kind_name(),
            self.user.clone(),
            self.line.clone(),
            self.host.clone(),
            self.address.map(|a| a.to_string()).unwrap_or_default(),
            self.pid.to_string(),
            self.session.to_string(),
            self.id.clone(),
        ]
    }
}

/// A fixed-size C string field: up to the first NUL (the field need not have one).
/// Shared with [`lastlog`].
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `ut_addr_v6`: an IPv4 address sits in the first word with the rest zero.
fn ip_address(bytes: [u8; 16]) -> Option<IpAddr> {
    if bytes == [0; 16] {
        None
    } else if bytes[4..] == [0; 12] {
        Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])))
    } else {
        Some(IpAddr::V6(Ipv6Addr::from(bytes)))
    }
}

fn write_session_log(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    name: &str,
    candidates: &[&str],
) -> Result<(), PackageError> {
    // The first candidate that exists (utmp moved from /var/run to /run).
    let abs = candidates.iter().copied().find(|abs| ctx.path(abs).symlink_metadata().is_ok()).unwrap_or(candidates[0]);
    csv_file(sink, name, abs, &SESSION_HEADER, |csv| {
        let file = match open_regular(&ctx.path(abs)) {
            Ok(file) => file,
            Err(e) => return Ok(unavailable(abs, &e)),
        };
        write_utmp_records(ctx, BufReader::new(file), csv)
    })
}

/// Streams utmp records as CSV rows, skipping empty slots. A trailing partial record
/// (a truncated or tampered file) makes the item partial.
fn write_utmp_records(ctx: &Context, mut reader: impl Read, csv: &mut Csv<'_>) -> io::Result<ItemOutcome> {
    let mut record = [0u8; UTMP_SIZE];
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        let filled = read_full(&mut reader, &mut record)?;
        if filled == 0 {
            return Ok(ItemOutcome::ok());
        }
        if filled < UTMP_SIZE {
            return Ok(ItemOutcome::partial(format!(
                "{filled} trailing bytes are not a whole {UTMP_SIZE}-byte record"
            )));
        }
        let parsed = UtmpRecord::parse(&record);
        if parsed.kind != EMPTY {
            csv.row(parsed.fields())?;
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The SQLite databases that replace wtmp and lastlog on newer systems (wtmpdb,
/// lastlog2). Parsing them needs SQLite, so they are copied as they are, when present.
const SESSION_DATABASES: [(&str, &str); 2] =
    [("wtmp.db", "/var/lib/wtmpdb/wtmp.db"), ("lastlog2.db", "/var/lib/lastlog/lastlog2.db")];

fn copy_session_databases(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    for (name, abs) in SESSION_DATABASES {
        let path = ctx.path(abs);
        if path.symlink_metadata().is_ok() {
            copy_file(sink, name, &path, abs, ctx.limits.max_file_bytes)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// sudo

const SUDOERS: &str = "/etc/sudoers";
const SUDOERS_D: &str = "/etc/sudoers.d";

/// Copies every file of `/etc/sudoers.d` as `sudoers.d/<name>`. sudo itself skips names
/// with a `.` or ending in `~`; we copy them all, since a planted file is evidence too.
fn copy_sudoers_d(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let entries = match std::fs::read_dir(ctx.path(SUDOERS_D)) {
        Ok(entries) => entries,
        Err(e) => {
            let outcome = if is_missing(&e) {
                ItemOutcome::not_applicable(format!("{SUDOERS_D} not present"))
            } else {
                ItemOutcome::failed(format!("{SUDOERS_D}: {e}"))
            };
            return sink.file("sudoers.d", SUDOERS_D, |_| Ok(outcome));
        }
    };
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let path = ctx.path(SUDOERS_D).join(&name);
        // sudo does not descend into subdirectories either.
        if path.is_dir() {
            continue;
        }
        let name = name.to_string_lossy();
        let source = format!("{SUDOERS_D}/{name}");
        copy_file(sink, &format!("sudoers.d/{}", name_part(&name)), &path, &source, ctx.limits.max_file_bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, run, run_live};
    use casefile_package::ItemStatus;

    /// A utmp record as glibc writes it on x86_64.
    fn utmp_record(kind: i16, user: &str, line: &str, host: &str, time: i32, addr: [u8; 16]) -> Vec<u8> {
        let mut raw = vec![0u8; UTMP_SIZE];
        raw[0..2].copy_from_slice(&kind.to_le_bytes());
        raw[4..8].copy_from_slice(&4321i32.to_le_bytes());
        raw[8..8 + line.len()].copy_from_slice(line.as_bytes());
        raw[40..44].copy_from_slice(b"ts/0");
        raw[44..44 + user.len()].copy_from_slice(user.as_bytes());
        raw[76..76 + host.len()].copy_from_slice(host.as_bytes());
        raw[336..340].copy_from_slice(&17i32.to_le_bytes());
        raw[340..344].copy_from_slice(&time.to_le_bytes());
        raw[344..348].copy_from_slice(&123_456i32.to_le_bytes());
        raw[348..364].copy_from_slice(&addr);
        raw
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[a, b, c, d]);
        addr
    }

    #[test]
    fn wtmp_records_decode_user_host_address_and_time() {
        let f = Fixture::new();
        let mut wtmp = utmp_record(7, "alice", "pts/0", "203.0.113.9", 1_700_000_000, v4(203, 0, 113, 9));
        wtmp.extend(utmp_record(EMPTY, "", "", "", 0, [0; 16]));
        wtmp.extend(utmp_record(8, "", "pts/0", "", 1_700_000_600, [0; 16]));
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        wtmp.extend(utmp_record(7, "bob", "pts/1", "2001:db8::1", 1_700_001_000, v6));
        f.write("/var/log/wtmp", &wtmp);
        let sink = run(&Users, f.root());
        let item = sink.item("logins.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        assert_eq!(item.source, "/var/log/wtmp");
        let rows = item.rows();
        assert_eq!(rows.len(), 3, "the empty slot is skipped");
        assert_eq!(rows[0]["time_utc"], "2023-11-14T22:13:20Z");
        assert_eq!(rows[0]["type"], "USER_PROCESS");
        assert_eq!(rows[0]["user"], "alice");
        assert_eq!(rows[0]["terminal"], "pts/0");
        assert_eq!(rows[0]["host"], "203.0.113.9");
        assert_eq!(rows[0]["ip_address"], "203.0.113.9");
        assert_eq!(rows[0]["pid"], "4321");
        assert_eq!(rows[0]["session"], "17");
        assert_eq!(rows[0]["terminal_id"], "ts/0");
        assert_eq!(rows[1]["type"], "DEAD_PROCESS");
        assert_eq!(rows[1]["ip_address"], "");
        assert_eq!(rows[2]["ip_address"], "2001:db8::1");
    }

    #[test]
    fn a_truncated_log_keeps_whole_records_and_is_partial() {
        let f = Fixture::new();
        let mut btmp = utmp_record(6, "root", "ssh:notty", "198.51.100.1", 1_700_000_000, v4(198, 51, 100, 1));
        btmp.extend(&utmp_record(6, "admin", "ssh:notty", "x", 1, [0; 16])[..100]);
        f.write("/var/log/btmp", &btmp);
        let sink = run(&Users, f.root());
        let item = sink.item("failed_logins.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        assert!(item.outcome.error.as_ref().unwrap().contains("100 trailing bytes"));
        let rows = item.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["user"], "root");
        assert_eq!(rows[0]["type"], "LOGIN_PROCESS");
    }

    #[test]
    fn full_width_fields_without_nul_and_odd_bytes_are_safe() {
        let mut raw = [0xffu8; UTMP_SIZE];
        raw[0..2].copy_from_slice(&7i16.to_le_bytes());
        let record = UtmpRecord::parse(&raw);
        assert_eq!(record.user.chars().count(), 32);
        assert!(record.user.chars().all(|c| c == '\u{fffd}'));
        assert_eq!(record.host.chars().count(), 256);
        assert_eq!(record.time, u32::MAX);
        assert_eq!(record.fields()[0], "2106-02-07T06:28:15Z");
    }

    #[test]
    fn accounts_groups_and_sudoers() {
        let f = Fixture::new();
        f.write("/etc/passwd", format!("{PASSWD_FIXTURE}not a passwd line\n"));
        f.write("/etc/group", "root:x:0:\nsudo:x:27:alice,bob\n");
        f.write("/etc/sudoers", "root ALL=(ALL:ALL) ALL\n");
        f.write("/etc/sudoers.d/90-admins", "%admins ALL=(ALL) NOPASSWD: ALL\n");
        f.write("/etc/sudoers.d/README", "# read me\n");
        f.mkdir("/etc/sudoers.d/subdir");
        f.symlink("loop", "/etc/sudoers.d/loop");
        let sink = run(&Users, f.root());

        let users = sink.item("users.csv");
        assert_eq!(users.status(), ItemStatus::Partial);
        assert_eq!(users.outcome.error.as_deref(), Some("malformed lines skipped: 1 (first: line 4)"));
        let rows = users.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1]["user"], "alice");
        assert_eq!(rows[1]["uid"], "1000");
        assert_eq!(rows[1]["gecos"], "Alice Example,,,");
        assert_eq!(rows[1]["home"], "/home/alice");
        assert_eq!(rows[2]["shell"], "/usr/sbin/nologin");

        let groups = sink.item("groups.csv").rows();
        assert_eq!(groups[1]["group"], "sudo");
        assert_eq!(groups[1]["gid"], "27");
        assert_eq!(groups[1]["members"], "alice,bob");

        assert_eq!(sink.item("sudoers").text(), "root ALL=(ALL:ALL) ALL\n");
        assert_eq!(sink.item("sudoers.d/90-admins").source, "/etc/sudoers.d/90-admins");
        assert_eq!(sink.item("sudoers.d/README").status(), ItemStatus::Ok);
        // A symlink loop fails that one file, with the reason; nothing panics or hangs.
        let looped = sink.item("sudoers.d/loop");
        assert_eq!(looped.status(), ItemStatus::Failed);
        assert!(!sink.names().iter().any(|n| n.contains("subdir")));
        // No utmp-format logs in this fixture.
        assert_eq!(sink.item("logins.csv").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("logged_in.csv").source, "/run/utmp");
    }

    #[test]
    fn missing_files_are_not_applicable() {
        let f = Fixture::new();
        let sink = run(&Users, f.root());
        for name in [
            "users.csv",
            "groups.csv",
            "logins.csv",
            "failed_logins.csv",
            "logged_in.csv",
            "lastlog.csv",
            "sudoers",
            "sudoers.d",
            "ssh_authorized_keys.csv",
        ] {
            assert_eq!(sink.item(name).status(), ItemStatus::NotApplicable, "{name}");
        }
    }

    #[test]
    fn an_unreadable_file_fails_with_the_reason() {
        // Running as root, permissions do not stop reads; a directory where a file should
        // be is unreadable for everyone.
        let f = Fixture::new();
        f.mkdir("/etc/passwd");
        f.mkdir("/var/log/wtmp");
        let sink = run(&Users, f.root());
        let users = sink.item("users.csv");
        assert_eq!(users.status(), ItemStatus::Failed);
        assert!(users.outcome.error.as_ref().unwrap().starts_with("/etc/passwd: "));
        assert_eq!(sink.item("logins.csv").status(), ItemStatus::Failed);
    }

    #[test]
    fn live_host_has_root_in_users() {
        let sink = run_live(&Users);
        let users = sink.item("users.csv");
        assert_eq!(users.status(), ItemStatus::Ok, "{:?}", users.outcome);
        assert!(users.rows().iter().any(|r| r["user"] == "root" && r["uid"] == "0"));
        assert_eq!(sink.item("groups.csv").status(), ItemStatus::Ok);
        for name in ["lastlog.csv", "ssh_authorized_keys.csv"] {
            assert_ne!(sink.item(name).status(), ItemStatus::Failed, "{name}: {:?}", sink.item(name).outcome);
        }
    }
}
