//! `temp_executables.csv`: every entry below `/tmp`, `/var/tmp` and `/dev/shm`, where
//! anyone may drop a payload, with the SHA-256 of what can be run.
//!
//! The walk (see [`crate::collectors::walk`]) goes at most [`MAX_DEPTH`] levels deep and
//! lists at most [`MAX_ENTRIES`] entries, never following a link nor entering a mount.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

use casefile_package::ItemSink;
use casefile_package::PackageError;

use crate::Context;
use crate::collectors::accounts::UserNames;
use crate::collectors::common::{Csv, FileHasher, Problems, csv_file, mtime_utc, open_regular, table_outcome};
use crate::collectors::walk::{Found, Walk, Walked, file_type};

const TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
const MAX_DEPTH: usize = 8;
const MAX_ENTRIES: usize = 100_000;

const HEADER: [&str; 10] =
    ["path", "type", "size", "mode", "uid", "user", "mtime_utc", "is_executable", "sha256", "note"];

pub(super) fn write_temp_listing(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/tmp, /var/tmp, /dev/shm (recursive, links not followed)";
    csv_file(sink, "temp_executables.csv", source, &HEADER, |csv| {
        let mut listing = Listing {
            users: UserNames::load(ctx),
            hasher: FileHasher::new(&ctx.limits),
            problems: Problems::default(),
        };
        let mut walk = Walk::new(ctx, MAX_DEPTH, MAX_ENTRIES);
        let mut roots = 0;
        for root in TEMP_DIRS {
            let walked = walk.walk(root, &mut |found| match found {
                Found::Mount { shown, fs_type, .. } => {
                    let note = format!("mount point ({fs_type}): not entered");
                    csv.row([shown, "mount", "", "", "", "", "", "false", "", &note])
                }
                Found::Entry { shown, path, meta } => listing.row(csv, shown, path, meta),
            })?;
            match walked {
                Walked::Done => {}
                Walked::Missing => continue,
                Walked::Stopped(outcome) => return Ok(outcome),
            }
            roots += 1;
        }
        listing.problems.merge(&walk.problems);
        Ok(table_outcome(roots, listing.problems, "no temporary directories"))
    })
}

struct Listing {
    users: UserNames,
    hasher: FileHasher,
    problems: Problems,
}

impl Listing {
    fn row(&mut self, csv: &mut Csv<'_>, shown: &str, path: &std::path::Path, meta: &Metadata) -> io::Result<()> {
        let kind = file_type(meta);
        let (executable, sha256, note) = if meta.is_file() {
            self.inspect(path, meta)
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            (false, String::new(), format!("symbolic link to {target}"))
        } else {
            (false, String::new(), String::new())
        };
        csv.row([
            shown,
            kind,
            &meta.len().to_string(),
            &format!("{:04o}", meta.mode() & 0o7777),
            &meta.uid().to_string(),
            self.users.name(meta.uid()),
            &mtime_utc(meta),
            &executable.to_string(),
            &sha256,
            &note,
        ])
    }

    /// Whether a regular file can run (an execute bit, an ELF header or a `#!` line) and,
    /// if so, its hash.
    fn inspect(&mut self, path: &std::path::Path, meta: &Metadata) -> (bool, String, String) {
        let mut file = match open_regular(path) {
            Ok(file) => file,
            Err(e) => {
                let runnable = meta.mode() & 0o111 != 0;
                return (runnable, String::new(), format!("not read: {e}"));
            }
        };
        let mut magic = [0u8; 4];
        let read = read_head(&mut file, &mut magic).unwrap_or(0);
        let runnable = meta.mode() & 0o111 != 0 || magic[..read] == *b"\x7fELF" || magic[..read.min(2)] == *b"#!";
        if !runnable {
            return (false, String::new(), String::new());
        }
        let hash = file.seek(SeekFrom::Start(0)).and_then(|_| self.hasher.hash(file));
        match hash {
            Ok(hash) => (true, hash.hex(), hash.note()),
            Err(e) => {
                self.problems.add("executables that could not be hashed", format!("{}: {e}", path.display()));
                (true, String::new(), format!("not hashed: {e}"))
            }
        }
    }
}

/// Reads up to `buf.len()` bytes from the start of `file`.
fn read_head(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    use casefile_package::{ItemOutcome, ItemStatus};
    use sha2::{Digest, Sha256};

    use crate::Limits;
    use crate::collectors::histories::Histories;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, find_row, run, run_live, run_with};

    fn chmod(f: &Fixture, abs: &str, mode: u32) {
        std::fs::set_permissions(f.path(abs), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn listing(f: &Fixture) -> (ItemOutcome, Vec<HashMap<String, String>>) {
        let sink = run(&Histories, f.root());
        let item = sink.item("temp_executables.csv");
        (item.outcome.clone(), item.rows())
    }

    #[test]
    fn executables_are_found_by_mode_magic_or_shebang_and_hashed() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/tmp/.x/miner", b"\x7fELF\x02\x01\x01payload");
        f.write("/tmp/run.sh", "#!/bin/sh\nid\n");
        f.write("/tmp/bit", "plain but executable\n");
        chmod(&f, "/tmp/bit", 0o4755);
        f.write("/tmp/notes.txt", "hello\n");
        f.write("/var/tmp/x", b"\x7fEL");
        f.write("/dev/shm/blob", b"\x7fELF shm");
        let (outcome, rows) = listing(&f);
        assert_eq!(outcome, ItemOutcome::ok());
        let miner = find_row(&rows, "path", "/tmp/.x/miner");
        assert_eq!(miner["type"], "file");
        assert_eq!(miner["is_executable"], "true");
        assert_eq!(miner["sha256"], hex::encode(Sha256::digest(b"\x7fELF\x02\x01\x01payload")));
        assert_eq!(find_row(&rows, "path", "/tmp/.x")["type"], "dir");
        assert_eq!(find_row(&rows, "path", "/tmp/run.sh")["is_executable"], "true");
        let bit = find_row(&rows, "path", "/tmp/bit");
        assert_eq!((bit["is_executable"].as_str(), bit["mode"].as_str()), ("true", "4755"));
        let notes = find_row(&rows, "path", "/tmp/notes.txt");
        assert_eq!((notes["is_executable"].as_str(), notes["sha256"].as_str()), ("false", ""));
        assert_eq!(find_row(&rows, "path", "/var/tmp/x")["is_executable"], "false", "a 3-byte file is no ELF");
        assert_eq!(find_row(&rows, "path", "/dev/shm/blob")["is_executable"], "true");
        let uid = rustix::process::getuid().as_raw().to_string();
        assert_eq!(miner["uid"], uid);
    }

    #[test]
    fn hostile_trees_do_not_break_the_walk() {
        let f = Fixture::new();
        f.mkdir("/tmp");
        // A symbolic link loop, a link to the root, a FIFO named like a script, names
        // with commas, quotes, newlines and bytes that are not UTF-8.
        f.symlink("loop", "/tmp/loop");
        f.symlink("/", "/tmp/rootlink");
        f.fifo("/tmp/run.sh");
        chmod(&f, "/tmp/run.sh", 0o755);
        std::fs::write(f.path("/tmp").join(OsStr::from_bytes(b"a,\"b\"\nc\xff")), b"#!x").unwrap();
        let deep: String = (0..12).map(|i| format!("/d{i}")).collect();
        f.write(&format!("/tmp{deep}/bottom"), "x");
        let (outcome, rows) = listing(&f);
        assert_eq!(outcome, ItemOutcome::ok());
        let looped = find_row(&rows, "path", "/tmp/loop");
        assert_eq!((looped["type"].as_str(), looped["note"].as_str()), ("symlink", "symbolic link to loop"));
        assert_eq!(find_row(&rows, "path", "/tmp/rootlink")["type"], "symlink");
        let fifo = find_row(&rows, "path", "/tmp/run.sh");
        assert_eq!((fifo["type"].as_str(), fifo["is_executable"].as_str()), ("fifo", "false"));
        let odd = find_row(&rows, "path", "/tmp/a,\"b\"\nc\u{fffd}");
        assert_eq!(odd["is_executable"], "true");
        // Depth is capped: /tmp/d0 … /tmp/d0/…/d7 are listed, nothing below.
        let deepest: String = (0..8).map(|i| format!("/d{i}")).collect();
        assert!(rows.iter().any(|r| r["path"] == format!("/tmp{deepest}")));
        assert!(!rows.iter().any(|r| r["path"].contains("/d8")));
    }

    #[test]
    fn mount_points_are_not_entered() {
        let f = Fixture::new();
        f.write("/tmp/.mount_app/secret", "x");
        f.write("/proc/mounts", "app /tmp/.mount_app fuse.app rw 0 0\n");
        let (_, rows) = listing(&f);
        let mount = find_row(&rows, "path", "/tmp/.mount_app");
        assert_eq!(mount["type"], "mount");
        assert_eq!(mount["note"], "mount point (fuse.app): not entered");
        assert!(!rows.iter().any(|r| r["path"].contains("secret")));
    }

    #[test]
    fn large_executables_are_listed_without_a_hash() {
        let f = Fixture::new();
        f.write("/tmp/big", [b"\x7fELF".as_slice(), &[0u8; 4096]].concat());
        let limits = Limits { max_file_bytes: 1024, ..Limits::default() };
        let sink = run_with(&Histories, f.root(), limits);
        let rows = sink.item("temp_executables.csv").rows();
        let big = find_row(&rows, "path", "/tmp/big");
        assert_eq!(big["is_executable"], "true");
        assert_eq!(big["sha256"], "");
        assert_eq!(big["note"], "not hashed: 4100 bytes is over the 1024-byte cap");
    }

    #[test]
    fn no_temporary_directories_is_not_applicable() {
        let sink = run(&Histories, Fixture::new().root());
        assert_eq!(sink.item("temp_executables.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn live_temp_listing_sees_a_planted_executable() {
        let dir = tempfile::Builder::new().prefix("casefile-test").tempdir_in("/tmp").unwrap();
        let planted = dir.path().join("payload");
        std::fs::write(&planted, b"#!/bin/sh\necho planted\n").unwrap();
        let sink = run_live(&Histories);
        let item = sink.item("temp_executables.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
        let rows = item.rows();
        let row = find_row(&rows, "path", &planted.to_string_lossy());
        assert_eq!(row["is_executable"], "true");
        // A live /tmp (a CI machine's holds whole build trees) may use up the hashing
        // budget before the walk reaches the planted file; then the row must say so.
        let expected = hex::encode(Sha256::digest(b"#!/bin/sh\necho planted\n"));
        assert!(
            row["sha256"] == expected || row["note"].contains("hashing budget is used up"),
            "neither the hash nor the reason it is missing: {row:?}"
        );
    }
}
