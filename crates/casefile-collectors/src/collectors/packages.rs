//! `Installed packages/`: Debian packages read from dpkg's database (`dpkg.csv`), and
//! RPM packages through `rpm -qa` (`rpm.csv`, with `commands.csv`): rpm keeps its
//! database in Berkeley DB, SQLite or ndb files that only rpm's own code reads well.

use std::io::{self, BufReader, Read};

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::{CollectError, Collector, Context};

use super::command::{CommandLog, LineSplitter, command_line};
use super::common::{CANCELLED, Csv, Lines, csv_file, mtime_utc, open_regular, unavailable, utc_timestamp};

pub struct Packages;

impl Collector for Packages {
    fn name(&self) -> &'static str {
        "packages"
    }

    fn folder(&self) -> &'static str {
        "Installed packages"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        write_dpkg(ctx, sink)?;
        ctx.check_cancelled()?;
        let mut commands = CommandLog::default();
        write_rpm(ctx, sink, &mut commands)?;
        commands.write(sink)?;
        ctx.check_cancelled()
    }
}

// ---------------------------------------------------------------------------------------
// dpkg

const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const DPKG_INFO: &str = "/var/lib/dpkg/info";
const DPKG_HEADER: [&str; 7] =
    ["package", "version", "architecture", "status", "source", "installed_size_kib", "list_mtime_utc"];

/// The fields of a status paragraph kept, in column order.
const DPKG_FIELDS: [&str; 6] = ["Package", "Version", "Architecture", "Status", "Source", "Installed-Size"];

fn write_dpkg(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/var/lib/dpkg/status, /var/lib/dpkg/info/*.list";
    csv_file(sink, "dpkg.csv", source, &DPKG_HEADER, |csv| {
        let file = match open_regular(&ctx.path(DPKG_STATUS)) {
            Ok(file) => file,
            Err(e) => return Ok(unavailable(DPKG_STATUS, &e)),
        };
        let size = file.metadata()?.len();
        let limit = ctx.limits.max_file_bytes;
        let mut lines = Lines::new(BufReader::new(file.take(limit)));
        // One paragraph (one package) at a time: six short fields.
        let mut paragraph: [String; 6] = Default::default();
        while let Some(line) = lines.next_line()? {
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                write_package(ctx, csv, &mut paragraph)?;
                continue;
            }
            // Continuation lines (descriptions, conffiles) start with a blank.
            if line[0] == b' ' || line[0] == b'\t' {
                continue;
            }
            let line = String::from_utf8_lossy(line);
            if let Some((key, value)) = line.split_once(':')
                && let Some(at) = DPKG_FIELDS.iter().position(|field| *field == key)
            {
                paragraph[at] = value.trim().to_owned();
            }
        }
        write_package(ctx, csv, &mut paragraph)?;
        Ok(if size > limit {
            ItemOutcome::partial(format!("read the first {limit} of {size} bytes"))
        } else {
            ItemOutcome::ok()
        })
    })
}

/// Writes the paragraph read so far, if it named a package, and clears it.
fn write_package(ctx: &Context, csv: &mut Csv<'_>, paragraph: &mut [String; 6]) -> io::Result<()> {
    let [package, version, architecture, status, source, size] = std::mem::take(paragraph);
    if package.is_empty() {
        return Ok(());
    }
    let listed = list_mtime(ctx, &package, &architecture);
    csv.row([package, version, architecture, status, source, size, listed])
}

/// When dpkg last wrote the package's file list: the time it was installed or upgraded.
/// Packages installed for several architectures name the list `<package>:<arch>.list`.
fn list_mtime(ctx: &Context, package: &str, architecture: &str) -> String {
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !valid(package) || (!architecture.is_empty() && !valid(architecture)) {
        return String::new();
    }
    [format!("{DPKG_INFO}/{package}:{architecture}.list"), format!("{DPKG_INFO}/{package}.list")]
        .iter()
        .find_map(|abs| std::fs::metadata(ctx.path(abs)).ok())
        .map(|meta| mtime_utc(&meta))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// rpm

const RPM: [&str; 3] = ["/usr/bin/rpm", "/bin/rpm", "/usr/local/bin/rpm"];
/// One tab-separated line per package; rpm prints `(none)` for an unset tag.
const RPM_QUERY: &str = r"%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{INSTALLTIME}\t%{VENDOR}\t%{SIZE}\n";
const RPM_HEADER: [&str; 8] =
    ["package", "epoch", "version", "release", "architecture", "install_time_utc", "vendor", "installed_size"];

fn write_rpm(ctx: &Context, sink: &mut dyn ItemSink, commands: &mut CommandLog) -> Result<(), PackageError> {
    let args = ["-qa", "--queryformat", RPM_QUERY];
    csv_file(sink, "rpm.csv", &command_line(RPM[0], &args), &RPM_HEADER, |csv| {
        let mut lines = LineSplitter::new(|line: &[u8]| csv.row(rpm_fields(line)));
        let outcome = commands.run(ctx, (&RPM, &args), "rpm.csv", ctx.limits.max_file_bytes, &mut lines)?;
        lines.finish()?;
        Ok(outcome)
    })
}

fn rpm_fields(line: &[u8]) -> [String; 8] {
    let mut fields = line.split(|&b| b == b'\t').map(|field| match String::from_utf8_lossy(field).as_ref() {
        "(none)" => String::new(),
        text => text.to_owned(),
    });
    let mut row: [String; 8] = std::array::from_fn(|_| fields.next().unwrap_or_default());
    if let Ok(secs) = row[5].parse::<i64>() {
        row[5] = utc_timestamp(secs);
    }
    row
}

#[cfg(test)]
mod tests {
    use casefile_package::ItemStatus;

    use crate::Limits;
    use crate::collectors::test_support::{Fixture, find_row, run, run_live, run_with};

    use super::*;

    const STATUS: &str = "Package: openssh-server\nStatus: install ok installed\nPriority: optional\n\
Installed-Size: 1820\nArchitecture: amd64\nSource: openssh\nVersion: 1:9.2p1-2+deb12u3\n\
Description: secure shell (SSH) server\n Package: not-a-field\n continued\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.36-9\n\n\n\
Package: evil,\"pkg\"\nStatus: deinstall ok config-files\nVersion: 1\n";

    #[test]
    fn dpkg_status_is_read_paragraph_by_paragraph() {
        let f = Fixture::new();
        f.write(DPKG_STATUS, STATUS);
        f.write("/var/lib/dpkg/info/openssh-server.list", "/usr/sbin/sshd\n");
        f.write("/var/lib/dpkg/info/libc6:amd64.list", "/lib/x86_64-linux-gnu/libc.so.6\n");
        let sink = run(&Packages, f.root());
        let item = sink.item("dpkg.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        assert_eq!(item.header(), DPKG_HEADER);
        let rows = item.rows();
        assert_eq!(rows.len(), 3);
        let ssh = find_row(&rows, "package", "openssh-server");
        assert_eq!(ssh["version"], "1:9.2p1-2+deb12u3");
        assert_eq!(ssh["architecture"], "amd64");
        assert_eq!(ssh["status"], "install ok installed");
        assert_eq!(ssh["source"], "openssh");
        assert_eq!(ssh["installed_size_kib"], "1820");
        assert!(ssh["list_mtime_utc"].ends_with('Z'));
        let libc = find_row(&rows, "package", "libc6");
        assert_eq!(libc["source"], "");
        assert!(!libc["list_mtime_utc"].is_empty());
        let evil = find_row(&rows, "package", "evil,\"pkg\"");
        assert_eq!(evil["status"], "deinstall ok config-files");
        assert_eq!(evil["list_mtime_utc"], "");
    }

    #[test]
    fn a_status_file_over_the_cap_is_partial() {
        let f = Fixture::new();
        f.write(DPKG_STATUS, STATUS);
        let limits = Limits { max_file_bytes: 300, ..Limits::default() };
        let sink = run_with(&Packages, f.root(), limits);
        let item = sink.item("dpkg.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        assert_eq!(item.rows()[0]["package"], "openssh-server");
    }

    #[test]
    fn rpm_never_runs_below_a_fixture_root() {
        let f = Fixture::new();
        f.write("/usr/bin/rpm", "#!/bin/sh\necho should-not-run\n");
        let sink = run(&Packages, f.root());
        assert_eq!(sink.item("dpkg.csv").status(), ItemStatus::NotApplicable);
        let rpm = sink.item("rpm.csv");
        assert_eq!(rpm.status(), ItemStatus::NotApplicable);
        assert!(rpm.rows().is_empty());
        assert_eq!(sink.item("commands.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn rpm_lines_become_rows() {
        let row = rpm_fields(b"bash\t(none)\t5.2.15\t3.el9\tx86_64\t1700000000\tRed Hat, Inc.\t8012345");
        assert_eq!(row, ["bash", "", "5.2.15", "3.el9", "x86_64", "2023-11-14T22:13:20Z", "Red Hat, Inc.", "8012345"]);
        assert_eq!(rpm_fields(b"short")[1], "");
    }

    #[test]
    fn live_packages_are_listed() {
        let sink = run_live(&Packages);
        for item in &sink.items {
            assert_ne!(item.status(), ItemStatus::Failed, "{}: {:?}", item.name, item.outcome);
        }
        if std::path::Path::new(DPKG_STATUS).exists() {
            assert!(!sink.item("dpkg.csv").rows().is_empty());
        }
    }
}
