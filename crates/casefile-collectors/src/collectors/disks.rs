//! `Disk volumes/`: mounted file systems with their size and free space, partitions,
//! block devices, and `/etc/fstab`.

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::{CollectError, Collector, Context};

use super::common::{
    Problems, ascii_str, copy_file, csv_file, csv_from_lines, open_lines, read_value, split_fields, unavailable,
};

pub struct Disks;

impl Collector for Disks {
    fn name(&self) -> &'static str {
        "disks"
    }

    fn folder(&self) -> &'static str {
        "Disk volumes"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        write_mounts(ctx, sink)?;
        ctx.check_cancelled()?;
        write_partitions(ctx, sink)?;
        write_block_devices(ctx, sink)?;
        copy_file(sink, "fstab", &ctx.path("/etc/fstab"), "/etc/fstab", ctx.limits.max_file_bytes)?;
        ctx.check_cancelled()
    }
}

// ---------------------------------------------------------------------------------------
// Mounts

const MOUNTS_HEADER: [&str; 8] =
    ["device", "mount_point", "fs_type", "options", "total_bytes", "free_bytes", "available_bytes", "note"];

const MOUNTS: &str = "/proc/mounts";

/// File systems whose `statvfs` can block for minutes (an unreachable server, a hung
/// FUSE daemon) or, for autofs, mount something: their sizes are not read.
fn size_may_hang(fs_type: &str) -> bool {
    const REMOTE: [&str; 11] =
        ["autofs", "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "9p", "afs", "lustre", "fuse"];
    REMOTE.contains(&fs_type) || fs_type.starts_with("fuse.")
}

fn write_mounts(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let item = ("mounts.csv", MOUNTS, "/proc/mounts, statvfs(2)");
    csv_from_lines(ctx, sink, item, &MOUNTS_HEADER, |line, _| Some(Mount::parse(line)?.fields(ctx)))
}

/// The mount table, for collectors that open files wherever the host puts them: a file
/// on a remote or FUSE file system can block the agent for minutes.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    /// (mount point, file system type), in `/proc/mounts` order.
    points: Vec<(String, String)>,
}

impl Mounts {
    /// Empty when `/proc/mounts` cannot be read.
    pub(crate) fn load(ctx: &Context) -> Self {
        let mut points = Vec::new();
        if let Ok(mut lines) = open_lines(&ctx.path(MOUNTS)) {
            while let Ok(Some(line)) = lines.next_line() {
                if let Some(mount) = Mount::parse(line) {
                    points.push((mount.mount_point, mount.fs_type));
                }
            }
        }
        Self { points }
    }

    /// The type of the file system mounted at `path`, if one is.
    pub(crate) fn at(&self, path: &str) -> Option<&str> {
        self.points.iter().rev().find(|(point, _)| point == path).map(|(_, fs_type)| fs_type.as_str())
    }

    /// The type of the file system `path` lies on when it is one that may block (see
    /// [`size_may_hang`]): the innermost mount above it decides.
    pub(crate) fn slow_file_system(&self, path: &str) -> Option<&str> {
        let under =
            |point: &str| point == "/" || path == point || path.strip_prefix(point).is_some_and(|r| r.starts_with('/'));
        let (_, fs_type) =
            self.points.iter().rev().filter(|(point, _)| under(point)).max_by_key(|(point, _)| point.len())?;
        size_may_hang(fs_type).then_some(fs_type.as_str())
    }
}

/// One line of `/proc/mounts`: `device mount_point fs_type options dump pass`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    device: String,
    mount_point: String,
    fs_type: String,
    options: String,
}

impl Mount {
    fn parse(line: &[u8]) -> Option<Self> {
        let (fields, _) = split_fields(line, 4)?;
        let text = |i: usize| String::from_utf8_lossy(&unescape_octal(fields[i])).into_owned();
        Some(Self { device: text(0), mount_point: text(1), fs_type: text(2), options: text(3) })
    }

    fn fields(&self, ctx: &Context) -> [String; 8] {
        let (total, free, available, note) = self.sizes(ctx);
        [
            self.device.clone(),
            self.mount_point.clone(),
            self.fs_type.clone(),
            self.options.clone(),
            total,
            free,
            available,
            note,
        ]
    }

    /// Total, free and available bytes, or empty sizes and why.
    fn sizes(&self, ctx: &Context) -> (String, String, String, String) {
        if size_may_hang(&self.fs_type) {
            let note = "size not read: remote, FUSE or automount file system".to_owned();
            return (String::new(), String::new(), String::new(), note);
        }
        match rustix::fs::statvfs(ctx.path(&self.mount_point)) {
            Ok(stat) => {
                let bytes = |blocks: u64| blocks.saturating_mul(stat.f_frsize).to_string();
                (bytes(stat.f_blocks), bytes(stat.f_bfree), bytes(stat.f_bavail), String::new())
            }
            Err(e) => (String::new(), String::new(), String::new(), format!("statvfs: {}", std::io::Error::from(e))),
        }
    }
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\040`, `\011`, `\012`
/// and `\134`.
pub(crate) fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let digits = field.get(i + 1..i + 4);
        let value = digits
            .filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(ascii_str(d)?, 8).ok());
        match value {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Partitions and block devices

const PARTITIONS_HEADER: [&str; 4] = ["major", "minor", "size_bytes", "name"];
const PARTITIONS: &str = "/proc/partitions";

/// `/proc/partitions`: `major minor #blocks name`, blocks of 1 KiB.
fn write_partitions(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    csv_file(sink, "partitions.csv", PARTITIONS, &PARTITIONS_HEADER, |csv| {
        let mut lines = match open_lines(&ctx.path(PARTITIONS)) {
            Ok(lines) => lines,
            Err(e) => return Ok(unavailable(PARTITIONS, &e)),
        };
        let mut problems = Problems::default();
        while let Some(line) = lines.next_line()? {
            let line = String::from_utf8_lossy(line);
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.is_empty() || fields[0] == "major" {
                continue;
            }
            let size = fields.get(2).and_then(|b| b.parse::<u64>().ok()).map(|blocks| blocks.saturating_mul(1024));
            match (fields.len(), size) {
                (4, Some(size)) => {
                    csv.row([fields[0], fields[1], &size.to_string(), fields[3]])?;
                }
                _ => problems.add("unparseable lines skipped", PARTITIONS),
            }
        }
        Ok(problems.outcome())
    })
}

const BLOCK_HEADER: [&str; 8] =
    ["name", "size_bytes", "removable", "read_only", "rotational", "vendor", "model", "serial"];
const SYS_BLOCK: &str = "/sys/block";

/// One row per `/sys/block/<name>`; attributes a device does not have stay empty.
fn write_block_devices(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/sys/block/*/{size,removable,ro,queue/rotational,device/{vendor,model,serial}}";
    csv_file(sink, "block_devices.csv", source, &BLOCK_HEADER, |csv| {
        let entries = match std::fs::read_dir(ctx.path(SYS_BLOCK)) {
            Ok(entries) => entries,
            Err(e) => return Ok(unavailable(SYS_BLOCK, &e)),
        };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let dir = ctx.path(SYS_BLOCK).join(&name);
            let attribute = |attr: &str| read_value(&dir.join(attr)).unwrap_or_default();
            // `size` counts 512-byte sectors whatever the device's block size.
            let size = attribute("size")
                .parse::<u64>()
                .map(|sectors| sectors.saturating_mul(512).to_string())
                .unwrap_or_default();
            csv.row([
                name.to_string_lossy().into_owned(),
                size,
                flag(&attribute("removable")),
                flag(&attribute("ro")),
                flag(&attribute("queue/rotational")),
                attribute("device/vendor"),
                attribute("device/model"),
                attribute("device/serial"),
            ])?;
        }
        Ok(ItemOutcome::ok())
    })
}

/// A sysfs `0`/`1` attribute as `false`/`true`; empty when unknown.
fn flag(value: &str) -> String {
    match value {
        "0" => "false".to_owned(),
        "1" => "true".to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_mount_tells_whether_a_path_may_block() {
        let f = crate::collectors::test_support::Fixture::new();
        f.write(
            MOUNTS,
            "/dev/vda / ext4 rw 0 0\nauto.home /home autofs rw 0 0\nsrv:/alice /home/alice nfs4 rw 0 0\n\
             tmpfs /home/alice/cache tmpfs rw 0 0\nsshfs /mnt/remote\\040x fuse.sshfs rw 0 0\n",
        );
        let ctx = Context {
            root: f.root().to_path_buf(),
            cancel: Default::default(),
            limits: Default::default(),
            running: None,
        };
        let mounts = Mounts::load(&ctx);
        assert_eq!(mounts.slow_file_system("/usr/bin/ls"), None);
        assert_eq!(mounts.slow_file_system("/home/bob"), Some("autofs"));
        assert_eq!(mounts.slow_file_system("/home/alice/.bashrc"), Some("nfs4"));
        assert_eq!(mounts.slow_file_system("/home/alice/cache/x"), None);
        assert_eq!(mounts.slow_file_system("/home/alicex"), Some("autofs"));
        assert_eq!(mounts.slow_file_system("/mnt/remote x/bin"), Some("fuse.sshfs"));
        assert_eq!(mounts.at("/home"), Some("autofs"));
        assert_eq!(mounts.at("/home/bob"), None);
        assert_eq!(Mounts::default().slow_file_system("/x"), None);
    }
    use crate::collectors::test_support::{Fixture, run, run_live};
    use casefile_package::ItemStatus;

    #[test]
    fn mounts_decode_escapes_and_read_sizes_only_where_safe() {
        let f = Fixture::new();
        f.write(
            "/proc/mounts",
            "/dev/sda1 / ext4 rw,relatime 0 0\n\
server:/export /mnt/nfs\\040share nfs4 rw,vers=4.2 0 0\n\
/dev/sdb1 /media/usb vfat ro 0 0\n\
garbage\n",
        );
        let sink = run(&Disks, f.root());
        let item = sink.item("mounts.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        let rows = item.rows();
        assert_eq!(rows.len(), 3);

        let root = &rows[0];
        assert_eq!((root["device"].as_str(), root["mount_point"].as_str()), ("/dev/sda1", "/"));
        assert_eq!((root["fs_type"].as_str(), root["options"].as_str()), ("ext4", "rw,relatime"));
        // "/" of the fixture is a real directory: its sizes are read.
        let total: u64 = root["total_bytes"].parse().unwrap();
        let available: u64 = root["available_bytes"].parse().unwrap();
        assert!(total > 0 && available <= total);
        assert_eq!(root["note"], "");

        let nfs = &rows[1];
        assert_eq!(nfs["mount_point"], "/mnt/nfs share");
        assert_eq!(nfs["total_bytes"], "");
        assert!(nfs["note"].starts_with("size not read"));

        let usb = &rows[2];
        assert_eq!(usb["total_bytes"], "");
        assert!(usb["note"].starts_with("statvfs: "), "{}", usb["note"]);
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape_octal(b"a\\040b\\134c\\011"), b"a b\\c\t");
        assert_eq!(unescape_octal(b"trailing\\04"), b"trailing\\04");
        assert_eq!(unescape_octal(b"\\999"), b"\\999");
    }

    #[test]
    fn partitions_and_block_devices() {
        let f = Fixture::new();
        f.write(
            "/proc/partitions",
            "major minor  #blocks  name\n\n   8        0  488386584 sda\n   8        1     524288 sda1\n junk\n",
        );
        f.write("/sys/block/sda/size", "976773168\n");
        f.write("/sys/block/sda/removable", "0\n");
        f.write("/sys/block/sda/ro", "0\n");
        f.write("/sys/block/sda/queue/rotational", "1\n");
        f.write("/sys/block/sda/device/vendor", "ATA     \n");
        f.write("/sys/block/sda/device/model", "Samsung SSD, \"870\"\n");
        f.mkdir("/sys/block/loop0");
        f.write("/etc/fstab", "UUID=1234 / ext4 defaults 0 1\n");
        let sink = run(&Disks, f.root());

        let partitions = sink.item("partitions.csv");
        assert_eq!(partitions.status(), ItemStatus::Partial);
        let rows = partitions.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["name"], "sda1");
        assert_eq!(rows[1]["size_bytes"], (524_288u64 * 1024).to_string());

        let devices = sink.item("block_devices.csv").rows();
        let sda = devices.iter().find(|r| r["name"] == "sda").unwrap();
        assert_eq!(sda["size_bytes"], (976_773_168u64 * 512).to_string());
        assert_eq!((sda["removable"].as_str(), sda["rotational"].as_str()), ("false", "true"));
        assert_eq!(sda["vendor"], "ATA");
        assert_eq!(sda["model"], "Samsung SSD, \"870\"");
        assert_eq!(sda["serial"], "");
        let loop0 = devices.iter().find(|r| r["name"] == "loop0").unwrap();
        assert_eq!(loop0["size_bytes"], "");

        assert_eq!(sink.item("fstab").text(), "UUID=1234 / ext4 defaults 0 1\n");
        assert_eq!(sink.item("mounts.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn live_host_has_a_root_mount_with_a_size() {
        let sink = run_live(&Disks);
        let item = sink.item("mounts.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        let root = rows.iter().find(|r| r["mount_point"] == "/").expect("a / mount");
        assert!(root["total_bytes"].parse::<u64>().is_ok(), "{root:?}");
        assert_ne!(sink.item("partitions.csv").status(), ItemStatus::Failed);
    }
}
