//! `System information/`: operating system, kernel, uptime and time zone (`os.json`),
//! CPU and memory (`cpuinfo.txt`, `meminfo.txt`) and firmware/board identity
//! (`hardware.csv`).

use std::path::Path;

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use serde_json::{Map, Value, json};

use crate::{CollectError, Collector, Context};

use super::common::{Problems, copy_file, csv_file, is_missing, open_lines, read_capped, read_value, utc_timestamp};
use super::procs::parse_btime;

pub struct SystemInfo;

impl Collector for SystemInfo {
    fn name(&self) -> &'static str {
        "system"
    }

    fn folder(&self) -> &'static str {
        "System information"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        write_os_json(ctx, sink)?;
        copy_file(sink, "cpuinfo.txt", &ctx.path("/proc/cpuinfo"), "/proc/cpuinfo", ctx.limits.max_file_bytes)?;
        copy_file(sink, "meminfo.txt", &ctx.path("/proc/meminfo"), "/proc/meminfo", ctx.limits.max_file_bytes)?;
        write_hardware(ctx, sink)?;
        ctx.check_cancelled()
    }
}

// ---------------------------------------------------------------------------------------
// os.json

const OS_SOURCE: &str = "/proc/sys/kernel/{hostname,domainname,osrelease,version,arch}, \
/etc/hostname, /etc/os-release, /etc/machine-id, /proc/uptime, /proc/stat, /etc/timezone, \
/etc/localtime, uname(2)";

fn write_os_json(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    sink.file("os.json", OS_SOURCE, |out| {
        let mut problems = Problems::default();
        let info = os_info(ctx, &mut problems);
        serde_json::to_writer_pretty(&mut *out, &info)?;
        out.write_all(b"\n")?;
        Ok(problems.outcome())
    })
}

/// Every value is best effort: what cannot be read is `null`. Only the hostname and
/// the kernel release count as problems, since every host has them.
fn os_info(ctx: &Context, problems: &mut Problems) -> Value {
    let mut value = |abs: &str, required: bool| match read_value(&ctx.path(abs)) {
        Ok(v) if !v.is_empty() => Some(v),
        Ok(_) => None,
        Err(e) => {
            if required || !is_missing(&e) {
                problems.add("unreadable", format!("{abs}: {e}"));
            }
            None
        }
    };
    // An offline image has no /proc; its /etc/hostname is the next best thing.
    let hostname = if ctx.path("/proc/sys/kernel/hostname").exists() {
        value("/proc/sys/kernel/hostname", true)
    } else {
        value("/etc/hostname", true)
    };
    let kernel_release = value("/proc/sys/kernel/osrelease", true);
    let kernel_version = value("/proc/sys/kernel/version", false);
    let domain_name = value("/proc/sys/kernel/domainname", false).filter(|d| d != "(none)");
    let machine_id = value("/etc/machine-id", false);
    let architecture = value("/proc/sys/kernel/arch", false).or_else(|| live_architecture(ctx));
    let timezone = value("/etc/timezone", false).or_else(|| timezone_from_localtime(ctx));
    let uptime_seconds =
        read_value(&ctx.path("/proc/uptime")).ok().and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok());
    let boot_time =
        read_capped(&ctx.path("/proc/stat"), 1 << 20).ok().and_then(|stat| parse_btime(&stat)).map(utc_timestamp);
    json!({
        "hostname": hostname,
        "domain_name": domain_name,
        "machine_id": machine_id,
        "kernel_release": kernel_release,
        "kernel_version": kernel_version,
        "architecture": architecture,
        "uptime_seconds": uptime_seconds,
        "boot_time_utc": boot_time,
        "timezone": timezone,
        "os_release": os_release(ctx, problems),
    })
}

/// `uname -m` when describing the running host; an image's architecture is unknown.
fn live_architecture(ctx: &Context) -> Option<String> {
    (ctx.root == Path::new("/")).then(|| rustix::system::uname().machine().to_string_lossy().into_owned())
}

/// `Europe/Berlin` from `/etc/localtime -> /usr/share/zoneinfo/Europe/Berlin`.
fn timezone_from_localtime(ctx: &Context) -> Option<String> {
    let target = std::fs::read_link(ctx.path("/etc/localtime")).ok()?;
    let target = target.to_string_lossy();
    let (_, zone) = target.split_once("zoneinfo/")?;
    Some(zone.to_owned())
}

/// The fields of `/etc/os-release` (or `/usr/lib/os-release`) as a JSON object.
fn os_release(ctx: &Context, problems: &mut Problems) -> Value {
    for abs in ["/etc/os-release", "/usr/lib/os-release"] {
        let mut lines = match open_lines(&ctx.path(abs)) {
            Ok(lines) => lines,
            Err(e) if is_missing(&e) => continue,
            Err(e) => {
                problems.add("unreadable", format!("{abs}: {e}"));
                continue;
            }
        };
        let mut fields = Map::new();
        while let Ok(Some(line)) = lines.next_line() {
            if let Some((key, value)) = os_release_field(&String::from_utf8_lossy(line)) {
                fields.insert(key, Value::String(value));
            }
        }
        return Value::Object(fields);
    }
    Value::Null
}

/// `KEY=value`, `KEY="quoted \"value\""` or `KEY='value'` (os-release(5) uses a
/// subset of shell quoting); comments and other lines give `None`.
fn os_release_field(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let (key, raw) = line.split_once('=')?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        unescape_double_quoted(inner)
    } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        inner.to_owned()
    } else {
        raw.to_owned()
    };
    Some((key.to_owned(), value))
}

/// Inside double quotes a backslash escapes `"`, `\`, `$` and `` ` ``.
fn unescape_double_quoted(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&next)) if matches!(next, '"' | '\\' | '$' | '`') => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// hardware.csv

const DMI_DIR: &str = "/sys/class/dmi/id";

/// The DMI attributes that identify the machine. Serials and the UUID are readable by
/// root only; an unprivileged agent gets empty values with the reason in `note`.
const DMI_FIELDS: [&str; 17] = [
    "sys_vendor",
    "product_name",
    "product_version",
    "product_serial",
    "product_uuid",
    "product_family",
    "product_sku",
    "board_vendor",
    "board_name",
    "board_version",
    "board_serial",
    "chassis_vendor",
    "chassis_type",
    "chassis_serial",
    "bios_vendor",
    "bios_version",
    "bios_date",
];

fn write_hardware(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/sys/class/dmi/id/*";
    csv_file(sink, "hardware.csv", source, &["field", "value", "note"], |csv| {
        let dir = ctx.path(DMI_DIR);
        if !dir.is_dir() {
            return Ok(ItemOutcome::not_applicable("no DMI information (/sys/class/dmi/id not present)"));
        }
        for field in DMI_FIELDS {
            let (value, note) = match read_value(&dir.join(field)) {
                Ok(value) => (value, String::new()),
                Err(e) if is_missing(&e) => (String::new(), String::new()),
                Err(e) => (String::new(), e.to_string()),
            };
            csv.row([field, value.as_str(), note.as_str()])?;
        }
        Ok(ItemOutcome::ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::{Fixture, run, run_live};
    use casefile_package::ItemStatus;

    fn os_json(sink: &crate::collectors::test_support::MemorySink) -> Value {
        serde_json::from_slice(&sink.item("os.json").bytes).unwrap()
    }

    #[test]
    fn os_json_gathers_host_kernel_release_and_times() {
        let f = Fixture::new();
        f.write("/proc/sys/kernel/hostname", "web01\n");
        f.write("/proc/sys/kernel/domainname", "(none)\n");
        f.write("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        f.write("/proc/sys/kernel/version", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1\n");
        f.write("/proc/sys/kernel/arch", "x86_64\n");
        f.write("/proc/uptime", "3600.25 7000.00\n");
        f.write("/proc/stat", "cpu 1 2 3\nbtime 1700000000\n");
        f.write("/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        f.write(
            "/etc/os-release",
            "# comment\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\nNAME=\"say \\\"hi\\\"\"\ngarbage\n",
        );
        f.symlink("/usr/share/zoneinfo/Europe/Berlin", "/etc/localtime");
        f.write("/proc/cpuinfo", "processor\t: 0\nmodel name\t: Test CPU\n");
        let sink = run(&SystemInfo, f.root());

        assert_eq!(sink.item("os.json").status(), ItemStatus::Ok, "{:?}", sink.item("os.json").outcome);
        let os = os_json(&sink);
        assert_eq!(os["hostname"], "web01");
        assert_eq!(os["domain_name"], Value::Null);
        assert_eq!(os["kernel_release"], "6.1.0-18-amd64");
        assert_eq!(os["architecture"], "x86_64");
        assert_eq!(os["uptime_seconds"], 3600.25);
        assert_eq!(os["boot_time_utc"], "2023-11-14T22:13:20Z");
        assert_eq!(os["machine_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(os["timezone"], "Europe/Berlin");
        assert_eq!(os["os_release"]["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os["os_release"]["VERSION_ID"], "12");
        assert_eq!(os["os_release"]["NAME"], "say \"hi\"");
        assert_eq!(os["os_release"].as_object().unwrap().len(), 4);

        assert_eq!(sink.item("cpuinfo.txt").text(), "processor\t: 0\nmodel name\t: Test CPU\n");
        assert_eq!(sink.item("meminfo.txt").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("hardware.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn an_offline_image_uses_etc_hostname_and_notes_the_missing_kernel() {
        let f = Fixture::new();
        f.write("/etc/hostname", "image-host\n");
        let sink = run(&SystemInfo, f.root());
        let os = os_json(&sink);
        assert_eq!(os["hostname"], "image-host");
        assert_eq!(os["kernel_release"], Value::Null);
        assert_eq!(os["architecture"], Value::Null);
        assert_eq!(os["os_release"], Value::Null);
        let item = sink.item("os.json");
        assert_eq!(item.status(), ItemStatus::Partial);
        assert!(item.outcome.error.as_ref().unwrap().contains("/proc/sys/kernel/osrelease"));
    }

    #[test]
    fn hardware_lists_dmi_fields_with_unreadable_ones_empty() {
        let f = Fixture::new();
        f.write("/sys/class/dmi/id/sys_vendor", "QEMU\n");
        f.write("/sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n");
        // A directory stands in for a root-only file: reading it fails for everyone.
        f.mkdir("/sys/class/dmi/id/product_serial");
        let sink = run(&SystemInfo, f.root());
        let item = sink.item("hardware.csv");
        assert_eq!(item.status(), ItemStatus::Ok);
        let rows = item.rows();
        assert_eq!(rows.len(), DMI_FIELDS.len());
        let get = |field: &str| rows.iter().find(|r| r["field"] == field).unwrap().clone();
        assert_eq!(get("sys_vendor")["value"], "QEMU");
        assert_eq!(get("product_name")["value"], "Standard PC (Q35 + ICH9, 2009)");
        assert_eq!(get("product_serial")["value"], "");
        assert!(!get("product_serial")["note"].is_empty());
        assert_eq!(get("board_serial")["note"], "");
    }

    #[test]
    fn live_host_reports_its_hostname_and_kernel() {
        let sink = run_live(&SystemInfo);
        let item = sink.item("os.json");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let os = os_json(&sink);
        let uname = rustix::system::uname();
        assert_eq!(os["hostname"], uname.nodename().to_string_lossy().as_ref());
        assert_eq!(os["kernel_release"], uname.release().to_string_lossy().as_ref());
        assert!(os["uptime_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(sink.item("cpuinfo.txt").status(), ItemStatus::Ok);
        assert!(sink.item("meminfo.txt").text().contains("MemTotal:"));
    }
}
