//! `Open files/open_files.csv`: every open file descriptor of every process, like
//! `lsof` without memory maps. Rows are streamed process by process.

use std::io;

use casefile_package::{ItemOutcome, ItemSink};
use procfs::process::Process;

use crate::{CollectError, Collector, Context};

use super::accounts::UserNames;
use super::common::{CANCELLED, Csv, Problems, csv_file};
use super::procs::{FdLink, ProcessWalk, ReadError, fd_links, proc_root, process_name, process_uid};

pub struct OpenFiles;

const HEADER: [&str; 8] = ["pid", "process", "uid", "user", "fd", "type", "target", "deleted"];

/// The kernel appends this to the link of a file that was unlinked while open.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

impl Collector for OpenFiles {
    fn name(&self) -> &'static str {
        "open_files"
    }

    fn folder(&self) -> &'static str {
        "Open files"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let users = UserNames::load(ctx);
        let source = "/proc/*/fd/*, /proc/*/{comm,status}, /etc/passwd";
        csv_file(sink, "open_files.csv", source, &HEADER, |csv| write_open_files(ctx, &users, csv))?;
        ctx.check_cancelled()
    }
}

fn write_open_files(ctx: &Context, users: &UserNames, csv: &mut Csv<'_>) -> io::Result<ItemOutcome> {
    let mut walk = match ProcessWalk::new(ctx) {
        Ok(walk) => walk,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(ItemOutcome::not_applicable("/proc not present"));
        }
        Err(e) => return Ok(ItemOutcome::failed(format!("/proc: {e}"))),
    };
    let proc_root = proc_root(ctx);
    let mut problems = Problems::default();
    for process in &mut walk {
        if ctx.cancel.is_cancelled() {
            return Ok(ItemOutcome::partial(CANCELLED));
        }
        let links = match fd_links(&proc_root, process.pid()) {
            Ok(links) => links,
            Err(ReadError::Gone) => continue,
            Err(ReadError::Failed(why)) => {
                problems.add("processes whose descriptors could not be listed", why);
                continue;
            }
        };
        let owner = ProcessOwner::read(&process, users);
        let mut unreadable: Option<String> = None;
        for link in links {
            if let Err(why) = &link.target {
                unreadable.get_or_insert_with(|| format!("pid {}: {why}", process.pid()));
            }
            csv.row(row(&process, &owner, &link))?;
        }
        if let Some(why) = unreadable {
            problems.add("processes with unreadable descriptors", why);
        }
    }
    problems.merge(&walk.problems);
    Ok(problems.outcome())
}

/// The columns every row of one process shares.
struct ProcessOwner {
    name: String,
    uid: String,
    user: String,
}

impl ProcessOwner {
    fn read(process: &Process, users: &UserNames) -> Self {
        let uid = process_uid(process).ok();
        Self {
            name: process_name(process).unwrap_or_default(),
            uid: uid.map(|u| u.to_string()).unwrap_or_default(),
            user: uid.map(|u| users.name(u).to_owned()).unwrap_or_default(),
        }
    }
}

/// A descriptor whose link cannot be read keeps its row, with type `unknown` and an
/// empty target: that the descriptor exists is still worth knowing.
fn row(process: &Process, owner: &ProcessOwner, link: &FdLink) -> [String; 8] {
    let target: &[u8] = link.target.as_deref().unwrap_or_default();
    let kind = if link.target.is_ok() { fd_type(target) } else { "unknown" };
    let deleted = kind == "file" && target.ends_with(DELETED_SUFFIX);
    [
        process.pid().to_string(),
        owner.name.clone(),
        owner.uid.clone(),
        owner.user.clone(),
        link.fd.to_string(),
        kind.to_owned(),
        String::from_utf8_lossy(target).into_owned(),
        deleted.to_string(),
    ]
}

/// What a descriptor points to, from the shape of its link: a path for files (and
/// devices), `socket:[inode]`, `pipe:[inode]`, `anon_inode:[eventfd]` …
fn fd_type(target: &[u8]) -> &'static str {
    if target.starts_with(b"/") {
        "file"
    } else if target.starts_with(b"socket:") {
        "socket"
    } else if target.starts_with(b"pipe:") {
        "pipe"
    } else if target.starts_with(b"anon_inode:") {
        "anon"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::{FakeProcess, Fixture, PASSWD_FIXTURE, run, run_live};
    use casefile_package::ItemStatus;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn descriptors_are_typed_and_deleted_files_flagged() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.process(&FakeProcess { uid: 1001, ..FakeProcess::new(300, "backdoor") });
        f.fd(300, 0, "/dev/null");
        f.fd(300, 1, "pipe:[4001]");
        f.fd(300, 3, "socket:[4002]");
        f.fd(300, 4, "anon_inode:[eventfd]");
        f.fd(300, 5, "/memfd:payload (deleted)");
        f.fd(300, 6, "net:[4026531840]");
        // A file name with a comma, a quote, a newline and a byte that is not UTF-8.
        let odd = std::ffi::OsStr::from_bytes(b"/tmp/a,\"b\"\nc\xff");
        f.symlink(odd, "/proc/300/fd/7");
        f.write("/proc/300/fd/not-a-number", "");
        let sink = run(&OpenFiles, f.root());
        let item = sink.item("open_files.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        assert_eq!(rows.len(), 7);
        let fd = |n: &str| rows.iter().find(|r| r["fd"] == n).unwrap().clone();
        assert_eq!(fd("0")["type"], "file");
        assert_eq!(fd("0")["process"], "backdoor");
        assert_eq!(fd("0")["user"], "bob");
        assert_eq!(fd("0")["uid"], "1001");
        assert_eq!(fd("1")["type"], "pipe");
        assert_eq!(fd("3")["type"], "socket");
        assert_eq!(fd("3")["target"], "socket:[4002]");
        assert_eq!(fd("4")["type"], "anon");
        assert_eq!(fd("5")["deleted"], "true");
        assert_eq!(fd("0")["deleted"], "false");
        assert_eq!(fd("6")["type"], "other");
        assert_eq!(fd("7")["target"], "/tmp/a,\"b\"\nc\u{fffd}");
    }

    #[test]
    fn processes_without_a_readable_fd_directory() {
        let f = Fixture::new();
        f.process(&FakeProcess::new(1, "init"));
        f.fd(1, 0, "/dev/console");
        // Vanished: no fd directory at all (and no other files either).
        f.mkdir("/proc/2");
        // Unreadable: `fd` is a file, as an unprivileged agent gets EACCES.
        f.process(&FakeProcess::new(3, "locked"));
        std::fs::remove_dir(f.path("/proc/3/fd")).unwrap();
        f.write("/proc/3/fd", "");
        let sink = run(&OpenFiles, f.root());
        let item = sink.item("open_files.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        assert!(item.outcome.error.as_ref().unwrap().starts_with("processes whose descriptors could not be listed: 1"));
        let rows = item.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["target"], "/dev/console");
    }

    #[test]
    fn a_descriptor_whose_link_cannot_be_read_keeps_its_row() {
        let f = Fixture::new();
        f.process(&FakeProcess::new(1, "init"));
        f.fd(1, 0, "/dev/console");
        // readlink fails (EINVAL) on a file that is not a link, as the kernel may refuse
        // (EACCES) the links of a protected process even to root.
        f.write("/proc/1/fd/9", "");
        let sink = run(&OpenFiles, f.root());
        let item = sink.item("open_files.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        let why = item.outcome.error.clone().unwrap();
        assert!(why.starts_with("processes with unreadable descriptors: 1 (first: pid 1: "), "{why}");
        let rows = item.rows();
        let nine = rows.iter().find(|r| r["fd"] == "9").unwrap();
        assert_eq!((nine["type"].as_str(), nine["target"].as_str()), ("unknown", ""));
        assert_eq!(rows.iter().find(|r| r["fd"] == "0").unwrap()["target"], "/dev/console");
    }

    #[test]
    fn live_host_lists_a_file_this_test_holds_open() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_string_lossy().into_owned();
        let sink = run_live(&OpenFiles);
        let item = sink.item("open_files.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
        let me = std::process::id().to_string();
        let rows = item.rows();
        let mine = rows
            .iter()
            .find(|r| r["pid"] == me && r["target"] == path)
            .unwrap_or_else(|| panic!("{path} not listed for pid {me}"));
        assert_eq!(mine["type"], "file");
        assert_eq!(mine["deleted"], "false");
    }
}
