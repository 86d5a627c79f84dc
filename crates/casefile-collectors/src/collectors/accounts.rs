//! `/etc/passwd` and `/etc/group` parsing, shared by the users collector (which lists
//! them), the process collectors (which turn uids into names) and the collectors that
//! read files in users' homes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::Context;

use super::common::{Copied, is_missing, name_part, open_lines, unavailable};
use super::copies::open_beneath;
use super::disks::Mounts;

pub(crate) const PASSWD: &str = "/etc/passwd";
pub(crate) const GROUP: &str = "/etc/group";

/// The seven fields of a `/etc/passwd` line: name, password, uid, gid, gecos, home,
/// shell. `None` for a malformed line.
pub(crate) fn passwd_fields(line: &str) -> Option<[&str; 7]> {
    split_exact(line)
}

/// The four fields of a `/etc/group` line: name, password, gid, members.
pub(crate) fn group_fields(line: &str) -> Option<[&str; 4]> {
    split_exact(line)
}

/// Splits `line` at `:` into exactly `N` fields; the last keeps any further colons.
fn split_exact<const N: usize>(line: &str) -> Option<[&str; N]> {
    let mut parts = line.splitn(N, ':');
    let fields: [&str; N] = std::array::from_fn(|_| parts.next().unwrap_or_default());
    // `splitn` yields fewer than N parts exactly when the line has too few colons.
    (line.matches(':').count() >= N - 1).then_some(fields)
}

/// uid → user name, read from the root's `/etc/passwd` (not from NSS: the collection
/// describes the files on the host, and must not call into LDAP/SSSD).
#[derive(Debug, Default)]
pub(crate) struct UserNames {
    by_uid: HashMap<u32, String>,
}

impl UserNames {
    /// Best effort: an unreadable `/etc/passwd` leaves every name empty.
    pub(crate) fn load(ctx: &Context) -> Self {
        let mut names = Self::default();
        let Ok(mut lines) = open_lines(&ctx.path(PASSWD)) else {
            return names;
        };
        while let Ok(Some(line)) = lines.next_line() {
            let line = String::from_utf8_lossy(line);
            let Some([name, _, uid, ..]) = passwd_fields(&line) else {
                continue;
            };
            if let Ok(uid) = uid.parse::<u32>() {
                // The first entry wins, as with getpwuid.
                names.by_uid.entry(uid).or_insert_with(|| name.to_owned());
            }
        }
        names
    }

    /// The user name of `uid`, or "" when `/etc/passwd` does not know it.
    pub(crate) fn name(&self, uid: u32) -> &str {
        self.by_uid.get(&uid).map_or("", String::as_str)
    }
}

/// A user's home directory, where per-user files are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Home {
    pub(crate) user: String,
    pub(crate) uid: u32,
    /// Absolute host path.
    pub(crate) dir: String,
    /// The folder of this home's files in the package: the user name made a safe path
    /// part, with `~uid` added when another home already has it.
    pub(crate) label: String,
}

/// Most homes looked into: a passwd file with a million entries must not make a
/// million-entry list.
const MAX_HOMES: usize = 65_536;

/// The homes of the accounts in `/etc/passwd` that exist below the root, `/root` first
/// (also when passwd is unreadable). A directory shared by several accounts is listed
/// once, for the first. Paths that are not absolute or climb with `..` are skipped: on
/// an image they could lead out of its root. So are homes on network, FUSE and automount
/// file systems: merely looking at one can block for as long as its server is away.
pub(crate) fn homes(ctx: &Context) -> Vec<Home> {
    let root = Home { user: "root".to_owned(), uid: 0, dir: "/root".to_owned(), label: "root".to_owned() };
    let mut homes = vec![root];
    let mut seen: HashSet<String> = HashSet::from(["/root".to_owned()]);
    let mut labels: HashSet<String> = HashSet::from(["root".to_owned()]);
    if let Ok(mut lines) = open_lines(&ctx.path(PASSWD)) {
        while let Ok(Some(line)) = lines.next_line() {
            if homes.len() >= MAX_HOMES {
                break;
            }
            let line = String::from_utf8_lossy(line);
            let Some([user, _, uid, _, _, dir, _]) = passwd_fields(&line) else {
                continue;
            };
            let Ok(uid) = uid.parse::<u32>() else {
                continue;
            };
            let dir = dir.trim_end_matches('/');
            let dir = if dir.is_empty() { "/" } else { dir };
            let climbs = Path::new(dir).components().any(|c| c == Component::ParentDir);
            if !dir.starts_with('/') || climbs || seen.contains(dir) {
                continue;
            }
            seen.insert(dir.to_owned());
            let mut label = name_part(user);
            if !labels.insert(label.clone()) {
                label = format!("{label}~{uid}");
                labels.insert(label.clone());
            }
            homes.push(Home { user: user.to_owned(), uid, dir: dir.to_owned(), label });
        }
    }
    let mounts = Mounts::load(ctx);
    homes.retain(|home| mounts.slow_file_system(&home.dir).is_none() && ctx.path(&home.dir).is_dir());
    homes
}

/// Opens regular file `path` in the home `home_dir` (both below the root) of user
/// `owner`. No part below the home may be a symbolic link (the home itself may be
/// reached through one, `/home -> /data/home`, which root made): otherwise a user could
/// link `~/.bash_history`, or a folder like `~/.ssh`, to `/etc/shadow` or `/etc` and have
/// the agent (root) collect it. The file is opened relative to the home's descriptor,
/// so nothing is checked by name and then opened by name. In a home that is not root's,
/// a file the user does not own (a hard link to a file of root's) is refused too.
pub(crate) fn open_home_file(home_dir: &Path, path: &Path, owner: u32) -> io::Result<File> {
    let rel =
        path.strip_prefix(home_dir).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "outside the home"))?;
    let dir = rustix::fs::open(
        home_dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let file = open_beneath(dir.as_fd(), rel)?;
    let file_owner = file.metadata()?.uid();
    if owner != 0 && file_owner != owner {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("owned by uid {file_owner}, not by the home's user (uid {owner}): not copied"),
        ));
    }
    Ok(file)
}

/// Copies file `rel` of `home` into the package as `name` if it exists (a link counts,
/// whatever it points to); returns whether it did. `copy` is
/// [`copy_head`](super::common::copy_head) or, for
/// files that grow at the end, [`copy_tail`](super::common::copy_tail).
pub(crate) fn copy_home_file(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    home: &Home,
    (rel, name): (&str, &str),
    copy: fn(File, &mut dyn Write, u64) -> io::Result<Copied>,
) -> Result<bool, PackageError> {
    let abs = format!("{}/{rel}", home.dir.trim_end_matches('/'));
    let path = ctx.path(&abs);
    match path.symlink_metadata() {
        Err(e) if is_missing(&e) => return Ok(false),
        // An unreadable home (an unprivileged agent) fails the file, with the reason.
        Err(e) => {
            sink.file(name, &abs, |_| Ok(unavailable(&abs, &e)))?;
            return Ok(true);
        }
        Ok(_) => {}
    }
    sink.file(name, &abs, |out| match open_home_file(&ctx.path(&home.dir), &path, home.uid) {
        Ok(opened) => Ok(copy(opened, out, ctx.limits.max_file_bytes)?.outcome()),
        Err(e) => Ok(home_file_unavailable(&abs, &path, &e)),
    })?;
    Ok(true)
}

/// The outcome for a home file [`open_home_file`] refused or could not open. A link
/// to something that is not the user's regular file (`~/.bash_history -> /dev/null`
/// is a classic) is worth knowing but no failure: `not-applicable`, with the target.
fn home_file_unavailable(source: &str, path: &Path, e: &io::Error) -> ItemOutcome {
    if e.kind() != io::ErrorKind::InvalidInput {
        return unavailable(source, e);
    }
    match std::fs::read_link(path) {
        Ok(target) => ItemOutcome::not_applicable(format!("{source}: symbolic link to {}: {e}", target.display())),
        Err(_) => ItemOutcome::not_applicable(format!("{source}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::Fixture;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn homes_come_from_passwd_root_first_once_each_and_only_existing() {
        let f = Fixture::new();
        f.write(
            "/etc/passwd",
            "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
             toor:x:0:0::/root/:/bin/sh\n\
             alice:x:1000:1000::/home/alice:/bin/bash\n\
             alias:x:1002:1002::/home/alice:/bin/bash\n\
             ghost:x:1003:1003::/home/ghost:/bin/bash\n\
             sneaky:x:1004:1004::/home/../etc:/bin/bash\n\
             relative:x:1005:1005::home/rel:/bin/bash\n\
             bad:x:notanumber:1::/home/bad:/bin/sh\n\
             alice:x:1006:1006::/home/alice2:/bin/sh\n\
             ..:x:1007:1007::/home/dots:/bin/sh\n\
             carol:x:1008:1008::/home/nfs/carol:/bin/sh\n",
        );
        f.write("/proc/mounts", "/dev/vda / ext4 rw 0 0\nsrv:/nfs /home/nfs nfs4 rw 0 0\n");
        for dir in
            ["/root", "/usr/sbin", "/home/alice", "/etc", "/home/bad", "/home/alice2", "/home/dots", "/home/nfs/carol"]
        {
            f.mkdir(dir);
        }
        let ctx = Context {
            root: f.root().to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Default::default(),
            running: None,
        };
        let homes: Vec<(String, u32, String, String)> =
            homes(&ctx).into_iter().map(|h| (h.user, h.uid, h.dir, h.label)).collect();
        let home = |user: &str, uid, dir: &str, label: &str| (user.to_owned(), uid, dir.to_owned(), label.to_owned());
        assert_eq!(
            homes,
            [
                home("root", 0, "/root", "root"),
                home("daemon", 1, "/usr/sbin", "daemon"),
                home("alice", 1000, "/home/alice", "alice"),
                home("alice", 1006, "/home/alice2", "alice~1006"),
                home("..", 1007, "/home/dots", "_.."),
            ]
        );
    }

    #[test]
    fn home_files_are_reached_through_no_link_below_the_home() {
        use std::os::unix::fs::{chown, symlink};
        let f = Fixture::new();
        f.write("/etc/shadow", "root:secret\n");
        f.write("/root/.docker/config.json", "{\"auths\":\"MARK\"}\n");
        f.write("/data/home/alice/.dotfiles/bashrc", "alias ll='ls -l'\n");
        f.write("/data/home/alice/.profile", "PATH=x\n");
        // The home itself through a link root made: allowed.
        symlink(f.path("/data/home"), f.path("/home")).unwrap();
        symlink(f.path("/etc/shadow"), f.path("/home/alice/.bash_history")).unwrap();
        symlink(f.path("/home/alice/.dotfiles/bashrc"), f.path("/home/alice/.bashrc")).unwrap();
        symlink("/dev/null", f.path("/home/alice/.zsh_history")).unwrap();
        // A folder below the home linked out of it.
        symlink(f.path("/etc"), f.path("/home/alice/.ssh")).unwrap();
        std::fs::create_dir_all(f.path("/home/alice/.local/share/containers/storage/x")).unwrap();
        symlink(f.path("/root/.docker"), f.path("/home/alice/.local/share/containers/storage/x/userdata")).unwrap();
        let home = f.path("/home/alice");
        let own = f.path("/home/alice/.profile");
        let root = rustix::process::getuid().as_raw() == 0;
        let alice = if chown(&own, Some(1000), None).is_ok() { 1000 } else { rustix::process::getuid().as_raw() };

        assert!(open_home_file(&home, &own, alice).is_ok());
        for refused in [
            ".bash_history",
            ".bashrc",
            ".ssh/shadow",
            "../../../etc/shadow",
            ".local/share/containers/storage/x/userdata/config.json",
        ] {
            let path = home.join(refused);
            let e = open_home_file(&home, &path, alice).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{refused}: {e}");
        }
        // The one part below it that is no link is also checked by owner.
        if root {
            let e = open_home_file(&home, &f.path("/home/alice/.dotfiles/bashrc"), alice).unwrap_err();
            assert!(e.to_string().contains("owned by uid 0"), "{e}");
            let bash_history = f.path("/home/alice/.bash_history");
            let e = open_home_file(&home, &bash_history, alice).unwrap_err();
            let outcome = home_file_unavailable("~alice/.bash_history", &bash_history, &e);
            assert_eq!(outcome.status, casefile_package::ItemStatus::NotApplicable);
            assert!(outcome.error.unwrap().contains("symbolic link to "));
        }
        let null = f.path("/home/alice/.zsh_history");
        let e = open_home_file(&home, &null, alice).unwrap_err();
        let outcome = home_file_unavailable("~alice/.zsh_history", &null, &e);
        assert_eq!(
            outcome,
            ItemOutcome::not_applicable(
                "~alice/.zsh_history: symbolic link to /dev/null: reached through a symbolic link"
            )
        );
    }

    #[test]
    fn passwd_lines_split_into_seven_fields() {
        let fields = passwd_fields("alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash").unwrap();
        assert_eq!(fields[0], "alice");
        assert_eq!(fields[2], "1000");
        assert_eq!(fields[6], "/bin/bash");
        assert!(passwd_fields("garbage").is_none());
        assert!(passwd_fields("a:b:c:d:e:f").is_none());
        assert_eq!(passwd_fields("a:b:c:d:e:f:g:h").unwrap()[6], "g:h");
    }

    #[test]
    fn group_members_stay_together() {
        let fields = group_fields("sudo:x:27:alice,bob").unwrap();
        assert_eq!(fields, ["sudo", "x", "27", "alice,bob"]);
        assert_eq!(group_fields("empty:x:5:").unwrap()[3], "");
    }
}
