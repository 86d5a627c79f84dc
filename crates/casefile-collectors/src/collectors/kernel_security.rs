//! `Kernel and security/`: every sysctl value (`sysctl.csv`), the kernel's tainted
//! flags decoded (`tainted.csv`), the kernel log (`dmesg.txt`), a summary of the
//! security and time state (`security.csv`: SELinux, AppArmor, lockdown, time zone,
//! kernel command line and version), copies of the audit, SELinux and time
//! configuration, and, on the live host, what `bpftool`, `auditctl`, `sestatus`,
//! `aa-status` and `timedatectl` report (`commands.csv`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::{CollectError, Collector, Context};

use super::command::{CommandLog, find_program};
use super::common::{
    CANCELLED, Csv, Problems, copy_file, csv_file, dir_entries, is_missing, name_part, read_value, unavailable,
};

pub struct KernelSecurity;

impl Collector for KernelSecurity {
    fn name(&self) -> &'static str {
        "kernel_security"
    }

    fn folder(&self) -> &'static str {
        "Kernel and security"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        csv_file(sink, "sysctl.csv", "/proc/sys/**", &["name", "value", "error"], |csv| write_sysctl(ctx, csv))?;
        ctx.check_cancelled()?;
        write_tainted(ctx, sink)?;
        write_security(ctx, sink)?;
        let mut commands = CommandLog::default();
        write_dmesg(ctx, sink, &mut commands)?;
        ctx.check_cancelled()?;
        copy_configs(ctx, sink)?;
        // Each asks a service (systemd, auditd, the LSM) that may not run here.
        for (name, candidates, args) in PROGRAMS {
            ctx.check_cancelled()?;
            commands.service_listing(ctx, sink, name, candidates, args)?;
        }
        commands.write(sink)?;
        ctx.check_cancelled()
    }
}

/// Programs that are the only source of something: loaded eBPF programs, the audit
/// rules in force, SELinux and AppArmor status, the time synchronisation state.
type Program = (&'static str, &'static [&'static str], &'static [&'static str]);
const PROGRAMS: [Program; 5] = [
    ("bpf_programs.json", &["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"], &["prog", "show", "--json"]),
    ("audit/auditctl_rules.txt", &["/usr/sbin/auditctl", "/sbin/auditctl"], &["-l"]),
    ("selinux/sestatus.txt", &["/usr/sbin/sestatus", "/usr/bin/sestatus", "/sbin/sestatus"], &[]),
    ("apparmor/aa-status.json", &["/usr/sbin/aa-status", "/sbin/aa-status"], &["--json"]),
    ("time/timedatectl.txt", &["/usr/bin/timedatectl", "/bin/timedatectl"], &["show"]),
];

// ---------------------------------------------------------------------------------------
// sysctl.csv

/// Deepest `/proc/sys` nesting followed (`net/ipv4/conf/<if>/…` is 5).
const SYSCTL_DEPTH: usize = 12;
/// Most values listed: some ten thousand on a host with many interfaces.
const SYSCTL_ROWS: usize = 200_000;
/// A sysctl value is a line or a small table.
const SYSCTL_VALUE_LIMIT: u64 = 64 * 1024;
/// Sysctls that hold a secret, by file name: listed with the value withheld, never
/// read. `net.ipv6.conf.*.stable_secret` is the key behind an interface's stable
/// privacy addresses (RFC 7217): whoever has it can tell the host's addresses apart.
const SECRET_SYSCTLS: [&str; 1] = ["stable_secret"];
const SECRET_WITHHELD: &str = "a secret: value withheld, not read";

/// Walks `/proc/sys` depth first in name order. Values are read with `O_NONBLOCK` and a
/// cap; one that cannot be read (`stable_secret` when unset, a file that needs a
/// capability) keeps its row with the error. Write-only files (`vm/compact_memory`,
/// `vm/drop_caches`) are skipped, as `sysctl -a` does, and so are other file systems
/// mounted below `/proc/sys`.
fn write_sysctl(ctx: &Context, csv: &mut Csv<'_>) -> io::Result<ItemOutcome> {
    let base = match ctx.path("/proc/sys").metadata() {
        Ok(meta) if meta.is_dir() => meta,
        _ => return Ok(ItemOutcome::not_applicable("/proc/sys not present")),
    };
    let mut problems = Problems::default();
    let mut rows = 0usize;
    // (host path, dotted name, depth), popped from the end: pushed in reverse order.
    let mut stack: Vec<(String, String, usize)> = vec![("/proc/sys".to_owned(), String::new(), 0)];
    while let Some((abs, dotted, depth)) = stack.pop() {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        let names = dir_entries(ctx, &abs, &mut problems);
        let mut subdirs = Vec::new();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let child = format!("{abs}/{name}");
            // sysctl(8) shows a dot inside a name (`eth0.100`) as a slash.
            let part = name.replace('.', "/");
            let child_dotted = if dotted.is_empty() { part } else { format!("{dotted}.{part}") };
            let meta = match ctx.path(&child).symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => continue,
                Err(e) => {
                    problems.add("unreadable entries", format!("{child}: {e}"));
                    continue;
                }
            };
            // Another file system mounted inside (`fs/binfmt_misc`, often an automount
            // point that looking into would mount) holds no sysctl values.
            if meta.dev() != base.dev() {
                continue;
            }
            if meta.is_dir() {
                if depth + 1 < SYSCTL_DEPTH {
                    subdirs.push((child, child_dotted, depth + 1));
                } else {
                    problems.add("directories too deep, not entered", child);
                }
                continue;
            }
            // Links are not followed; a FIFO or device gets its row with the refusal.
            if meta.file_type().is_symlink() || meta.permissions().mode() & 0o444 == 0 {
                continue;
            }
            if rows >= SYSCTL_ROWS {
                problems.add("values past the row cap left out", child);
                continue;
            }
            if SECRET_SYSCTLS.contains(&name.as_str()) {
                csv.row([child_dotted.as_str(), "", SECRET_WITHHELD])?;
                rows += 1;
                continue;
            }
            let (value, error) = match super::common::read_capped(&ctx.path(&child), SYSCTL_VALUE_LIMIT) {
                Ok(bytes) => (String::from_utf8_lossy(&bytes).trim_end().to_owned(), String::new()),
                Err(e) => (String::new(), e.to_string()),
            };
            csv.row([child_dotted.as_str(), value.as_str(), error.as_str()])?;
            rows += 1;
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(problems.outcome())
}

// ---------------------------------------------------------------------------------------
// tainted.csv

/// The kernel's taint flags (Documentation/admin-guide/tainted-kernels.rst): bit, the
/// letter the kernel prints when set, and its meaning. Bit 0 prints `G` when clear.
const TAINT_FLAGS: [(u32, char, &str); 20] = [
    (0, 'P', "proprietary module was loaded"),
    (1, 'F', "module was force loaded"),
    (2, 'S', "kernel running on an out of specification system"),
    (3, 'R', "module was force unloaded"),
    (4, 'M', "processor reported a Machine Check Exception (MCE)"),
    (5, 'B', "bad page referenced or some unexpected page flags"),
    (6, 'U', "taint requested by userspace application"),
    (7, 'D', "kernel died recently, i.e. there was an OOPS or BUG"),
    (8, 'A', "an ACPI table was overridden by user"),
    (9, 'W', "kernel issued warning"),
    (10, 'C', "staging driver was loaded"),
    (11, 'I', "workaround for bug in platform firmware applied"),
    (12, 'O', "externally-built (\"out-of-tree\") module was loaded"),
    (13, 'E', "unsigned module was loaded"),
    (14, 'L', "soft lockup occurred"),
    (15, 'K', "kernel has been live patched"),
    (16, 'X', "auxiliary taint, defined for and used by distros"),
    (17, 'T', "kernel was built with the struct randomization plugin"),
    (18, 'N', "an in-kernel test has been run"),
    (19, 'J', "userspace used a mutating debug operation in fwctl"),
];

const TAINTED: &str = "/proc/sys/kernel/tainted";

/// One row per documented flag (set or not), and one per undocumented bit that is set.
fn write_tainted(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    csv_file(sink, "tainted.csv", TAINTED, &["value", "bit", "letter", "set", "meaning"], |csv| {
        let raw = match read_value(&ctx.path(TAINTED)) {
            Ok(raw) => raw,
            Err(e) => return Ok(unavailable(TAINTED, &e)),
        };
        let Ok(value) = raw.parse::<u64>() else {
            return Ok(ItemOutcome::failed(format!("{TAINTED}: not a number: {:?}", truncate(&raw, 64))));
        };
        for bit in 0..64u32 {
            let set = value & (1 << bit) != 0;
            let known = TAINT_FLAGS.iter().find(|(b, _, _)| *b == bit);
            let (letter, meaning) = match known {
                Some((_, letter, meaning)) => (letter.to_string(), (*meaning).to_owned()),
                None if set => ("?".to_owned(), "not documented when this casefile was built".to_owned()),
                None => continue,
            };
            let letter = if bit == 0 && !set { "G".to_owned() } else { letter };
            csv.row([raw.as_str(), &bit.to_string(), &letter, &set.to_string(), &meaning])?;
        }
        Ok(ItemOutcome::ok())
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------
// security.csv

/// Settings read from one small file each.
const SETTINGS: [(&str, &str); 10] = [
    ("kernel_release", "/proc/sys/kernel/osrelease"),
    ("kernel_version", "/proc/sys/kernel/version"),
    ("kernel_cmdline", "/proc/cmdline"),
    ("tainted", TAINTED),
    ("selinux_enforce", "/sys/fs/selinux/enforce"),
    ("apparmor_enabled", "/sys/module/apparmor/parameters/enabled"),
    ("lsm", "/sys/kernel/security/lsm"),
    ("lockdown", "/sys/kernel/security/lockdown"),
    ("timezone", "/etc/timezone"),
    ("hostname", "/proc/sys/kernel/hostname"),
];

/// `setting, value, source, note`: a missing source leaves the value empty and says so,
/// which is itself an answer (no SELinux, no lockdown support).
fn write_security(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/proc/cmdline, /proc/sys/kernel/*, /sys/fs/selinux, /sys/module/apparmor, /sys/kernel/security, \
/etc/timezone, /etc/localtime";
    csv_file(sink, "security.csv", source, &["setting", "value", "source", "note"], |csv| {
        for (setting, abs) in SETTINGS {
            let (value, note) = match read_value(&ctx.path(abs)) {
                Ok(value) => (value, String::new()),
                Err(e) if is_missing(&e) => (String::new(), "not present".to_owned()),
                Err(e) => (String::new(), e.to_string()),
            };
            csv.row([setting, &value, abs, &note])?;
        }
        let (value, note) = match std::fs::read_link(ctx.path("/etc/localtime")) {
            Ok(target) => (target.to_string_lossy().into_owned(), String::new()),
            Err(e) if is_missing(&e) => (String::new(), "not present".to_owned()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                (String::new(), "a file, not a link".to_owned())
            }
            Err(e) => (String::new(), e.to_string()),
        };
        csv.row(["localtime_link", &value, "/etc/localtime", &note])?;
        Ok(ItemOutcome::ok())
    })
}

// ---------------------------------------------------------------------------------------
// dmesg.txt

const KMSG: &str = "/dev/kmsg";
/// A `/dev/kmsg` read returns one record and fails with `EINVAL` when the buffer is
/// smaller than it; records are at most 8 KiB (`CONSOLE_EXT_LOG_MAX`).
const KMSG_RECORD: usize = 16 * 1024;

/// The kernel ring buffer from `/dev/kmsg` (below the root), read without blocking until
/// `EAGAIN`; each record as the kernel gives it (`priority,sequence,microseconds,flags;
/// message`, continuation lines start with a space). When `/dev/kmsg` cannot be opened
/// (`dmesg_restrict`, no such device) `dmesg` runs instead on the live host.
fn write_dmesg(ctx: &Context, sink: &mut dyn ItemSink, commands: &mut CommandLog) -> Result<(), PackageError> {
    let cap = ctx.limits.max_file_bytes.min(ctx.limits.max_total_bytes);
    match open_kmsg(ctx) {
        Ok(file) => sink.file("dmesg.txt", KMSG, |out| copy_kmsg(ctx, file, out, cap)),
        Err(e) => {
            if find_program(ctx, &["/usr/bin/dmesg", "/bin/dmesg"]).is_ok() {
                sink.file("dmesg.txt", "dmesg (/dev/kmsg unreadable)", |out| {
                    let outcome = commands.run(ctx, (&["/usr/bin/dmesg", "/bin/dmesg"], &[]), "dmesg.txt", cap, out)?;
                    Ok(match outcome.error {
                        None => ItemOutcome::partial(format!("{KMSG}: {e}; the dmesg program's output instead")),
                        Some(_) => outcome,
                    })
                })
            } else {
                sink.file("dmesg.txt", KMSG, |_| Ok(unavailable(KMSG, &e)))
            }
        }
    }
}

/// Opens the kernel log device non-blocking; a regular file (a copy in an image) is
/// read too, anything else (a FIFO planted there) is refused. A device is read only on
/// the live host: below another root it would be this host's log (or any device a
/// link points to), not the image's.
fn open_kmsg(ctx: &Context) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(ctx.path(KMSG))?;
    let kind = file.metadata()?.file_type();
    let live = ctx.root == std::path::Path::new("/");
    if kind.is_char_device() && !live {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a device is read only on the live host"));
    }
    if !kind.is_char_device() && !kind.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither a character device nor a regular file"));
    }
    Ok(file)
}

fn copy_kmsg(ctx: &Context, mut file: File, out: &mut dyn Write, cap: u64) -> io::Result<ItemOutcome> {
    let mut buf = vec![0u8; KMSG_RECORD];
    let mut written = 0u64;
    let mut overwritten = 0u64;
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EPIPE: records were overwritten before we read them; the next read goes on
            // with the oldest one left.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                overwritten += 1;
                continue;
            }
            Err(e) if written > 0 => return Ok(ItemOutcome::partial(format!("{KMSG}: {e}"))),
            Err(e) => return Ok(ItemOutcome::failed(format!("{KMSG}: {e}"))),
        };
        let room = cap - written;
        if n as u64 > room {
            out.write_all(&buf[..room as usize])?;
            return Ok(ItemOutcome::partial(format!("cut at {cap} bytes")));
        }
        out.write_all(&buf[..n])?;
        written += n as u64;
    }
    Ok(if overwritten > 0 {
        ItemOutcome::partial(format!("records overwritten while reading: {overwritten} gaps"))
    } else {
        ItemOutcome::ok()
    })
}

// ---------------------------------------------------------------------------------------
// configuration copies

/// Audit, SELinux, AppArmor and time configuration: (package name, host path).
const CONFIGS: [(&str, &str); 9] = [
    ("audit/audit.rules", "/etc/audit/audit.rules"),
    ("audit/auditd.conf", "/etc/audit/auditd.conf"),
    ("selinux/config", "/etc/selinux/config"),
    ("apparmor/profiles", "/sys/kernel/security/apparmor/profiles"),
    ("time/timezone", "/etc/timezone"),
    ("time/chrony/chrony.conf", "/etc/chrony/chrony.conf"),
    ("time/chrony.conf", "/etc/chrony.conf"),
    ("time/ntp.conf", "/etc/ntp.conf"),
    ("time/timesyncd.conf", "/etc/systemd/timesyncd.conf"),
];

fn copy_configs(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
    let cap = ctx.limits.max_file_bytes.min(ctx.limits.max_total_bytes);
    for (name, abs) in CONFIGS {
        copy_file(sink, name, &ctx.path(abs), abs, cap)?;
    }
    let mut problems = Problems::default();
    let dir = "/etc/audit/rules.d";
    let names = dir_entries(ctx, dir, &mut problems);
    if !problems.is_empty() {
        sink.file("audit/rules.d", dir, |_| Ok(problems.outcome()))?;
    }
    for name in names {
        ctx.check_cancelled()?;
        let name = name.to_string_lossy().into_owned();
        let abs = format!("{dir}/{name}");
        copy_file(sink, &format!("audit/rules.d/{}", name_part(&name)), &ctx.path(&abs), &abs, cap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::collectors::test_support::{Fixture, find_row, run, run_live, run_with};
    use casefile_package::ItemStatus;

    #[test]
    fn sysctl_names_are_dotted_values_kept_and_errors_recorded() {
        let f = Fixture::new();
        f.write("/proc/sys/kernel/hostname", "web01\n");
        f.write("/proc/sys/net/ipv4/conf/eth0.100/rp_filter", "1\n");
        f.write("/proc/sys/vm/compact_memory", "");
        std::fs::set_permissions(f.path("/proc/sys/vm/compact_memory"), std::fs::Permissions::from_mode(0o200))
            .unwrap();
        f.fifo("/proc/sys/kernel/blocking");
        f.write("/proc/sys/dev/huge", vec![b'x'; 200_000]);
        f.write("/proc/sys/kernel/evil\nname", "v\nw\n");
        f.write("/proc/sys/net/ipv6/conf/eth0/stable_secret", "fe80::SECRETMARK\n");
        let sink = run(&KernelSecurity, f.root());
        let item = sink.item("sysctl.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "dev.huge",
                "kernel.blocking",
                "kernel.evil\nname",
                "kernel.hostname",
                "net.ipv4.conf.eth0/100.rp_filter",
                "net.ipv6.conf.eth0.stable_secret"
            ]
        );
        let secret = find_row(&rows, "name", "net.ipv6.conf.eth0.stable_secret");
        assert_eq!((secret["value"].as_str(), secret["error"].as_str()), ("", SECRET_WITHHELD));
        crate::collectors::copies::testing::assert_nowhere(&sink, "SECRETMARK");
        assert_eq!(find_row(&rows, "name", "kernel.hostname")["value"], "web01");
        assert_eq!(find_row(&rows, "name", "dev.huge")["value"].len(), SYSCTL_VALUE_LIMIT as usize);
        assert_eq!(find_row(&rows, "name", "kernel.blocking")["error"], "not a regular file");
        assert_eq!(find_row(&rows, "name", "kernel.evil\nname")["value"], "v\nw");
    }

    #[test]
    fn tainted_flags_are_decoded_with_undocumented_bits_kept() {
        let f = Fixture::new();
        // P (0), O (12), E (13), and bit 40 which no kernel documents.
        let value = 1u64 | 1 << 12 | 1 << 13 | 1 << 40;
        f.write(TAINTED, format!("{value}\n"));
        let sink = run(&KernelSecurity, f.root());
        let rows = sink.item("tainted.csv").rows();
        assert_eq!(rows.len(), TAINT_FLAGS.len() + 1);
        let set: Vec<(&str, &str)> =
            rows.iter().filter(|r| r["set"] == "true").map(|r| (r["bit"].as_str(), r["letter"].as_str())).collect();
        assert_eq!(set, [("0", "P"), ("12", "O"), ("13", "E"), ("40", "?")]);
        assert_eq!(find_row(&rows, "bit", "9")["meaning"], "kernel issued warning");
        assert!(rows.iter().all(|r| r["value"] == value.to_string()));

        let clean = Fixture::new();
        clean.write(TAINTED, "0\n");
        let rows = run(&KernelSecurity, clean.root()).item("tainted.csv").rows();
        assert_eq!(find_row(&rows, "bit", "0")["letter"], "G");
        assert!(rows.iter().all(|r| r["set"] == "false"));

        let garbage = Fixture::new();
        garbage.write(TAINTED, "lots\n");
        assert_eq!(run(&KernelSecurity, garbage.root()).item("tainted.csv").status(), ItemStatus::Failed);
    }

    #[test]
    fn kernel_log_copy_is_capped_and_a_fifo_refused() {
        let f = Fixture::new();
        f.write(KMSG, "6,1,100,-;hello\n".repeat(1000));
        let limits = Limits { max_file_bytes: 1000, ..Limits::default() };
        let sink = run_with(&KernelSecurity, f.root(), limits);
        let item = sink.item("dmesg.txt");
        assert_eq!(item.bytes.len(), 1000);
        assert_eq!(item.status(), ItemStatus::Partial);

        let device = Fixture::new();
        device.symlink("/dev/null", KMSG);
        let item = run(&KernelSecurity, device.root()).items.into_iter().find(|i| i.name == "dmesg.txt").unwrap();
        assert_eq!(item.outcome, ItemOutcome::failed("/dev/kmsg: a device is read only on the live host"));

        let fifo = Fixture::new();
        fifo.fifo(KMSG);
        let sink = run(&KernelSecurity, fifo.root());
        assert_eq!(sink.item("dmesg.txt").status(), ItemStatus::Failed);
        assert_eq!(sink.item("bpf_programs.json").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("commands.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn security_settings_audit_rules_and_time_configuration() {
        let f = Fixture::new();
        f.write("/sys/fs/selinux/enforce", "1");
        f.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n");
        f.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro\n");
        f.symlink("/usr/share/zoneinfo/Etc/UTC", "/etc/localtime");
        f.write("/etc/audit/audit.rules", "-w /etc/passwd -p wa -k identity\n");
        f.write("/etc/audit/rules.d/10-base.rules", "-D\n");
        f.write("/etc/audit/rules.d/..\n", "hostile\n");
        f.fifo("/etc/audit/rules.d/fifo.rules");
        f.write("/etc/chrony/chrony.conf", "pool 2.debian.pool.ntp.org iburst\n");
        let sink = run(&KernelSecurity, f.root());
        let rows = sink.item("security.csv").rows();
        assert_eq!(find_row(&rows, "setting", "selinux_enforce")["value"], "1");
        assert_eq!(find_row(&rows, "setting", "lockdown")["value"], "none [integrity] confidentiality");
        assert_eq!(find_row(&rows, "setting", "kernel_cmdline")["value"], "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro");
        assert_eq!(find_row(&rows, "setting", "localtime_link")["value"], "/usr/share/zoneinfo/Etc/UTC");
        assert_eq!(find_row(&rows, "setting", "apparmor_enabled")["note"], "not present");
        assert_eq!(sink.item("audit/audit.rules").text(), "-w /etc/passwd -p wa -k identity\n");
        assert_eq!(sink.item("audit/rules.d/10-base.rules").text(), "-D\n");
        assert_eq!(sink.item("audit/rules.d/..\n").text(), "hostile\n");
        assert_eq!(sink.item("audit/rules.d/fifo.rules").status(), ItemStatus::Failed);
        assert_eq!(sink.item("time/chrony/chrony.conf").status(), ItemStatus::Ok);
        assert_eq!(sink.item("time/ntp.conf").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("sysctl.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn the_live_kernel_is_described() {
        let sink = run_live(&KernelSecurity);
        let sysctl = sink.item("sysctl.csv");
        assert_ne!(sysctl.status(), ItemStatus::Failed, "{:?}", sysctl.outcome);
        let rows = sysctl.rows();
        let release = rustix::system::uname().release().to_string_lossy().into_owned();
        assert_eq!(find_row(&rows, "name", "kernel.osrelease")["value"], release);
        let tainted = sink.item("tainted.csv").rows();
        assert_eq!(tainted.len(), TAINT_FLAGS.len());
        let security = sink.item("security.csv").rows();
        assert_eq!(find_row(&security, "setting", "kernel_release")["value"], release);
        if rustix::process::geteuid().is_root() && std::path::Path::new(KMSG).exists() {
            let dmesg = sink.item("dmesg.txt");
            assert_eq!(dmesg.source, KMSG);
            assert!(!dmesg.bytes.is_empty(), "{:?}", dmesg.outcome);
        }
    }
}
