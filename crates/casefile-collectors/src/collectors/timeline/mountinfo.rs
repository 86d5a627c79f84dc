//! Which mounts the walk enters, from `/proc/self/mountinfo` below the root.

use std::collections::{HashMap, HashSet};

use crate::Context;
use crate::collectors::common::{open_lines, split_fields};
use crate::collectors::disks::unescape_octal;

use super::bodyfile::escape_into;

/// Pseudo file systems (no files of the host's own), network file systems (a stat can
/// block as long as the server is away) and FUSE (a stopped daemon blocks every call).
/// tmpfs is walked: attackers hide in `/dev/shm` and `/tmp`.
fn skipped(fs_type: &str) -> bool {
    const SKIPPED: [&str; 33] = [
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "debugfs",
        "tracefs",
        "securityfs",
        "bpf",
        "pstore",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "autofs",
        "binfmt_misc",
        "efivarfs",
        "nsfs",
        "rpc_pipefs",
        "selinuxfs",
        "nfsd",
        "fuse",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "9p",
        "afs",
        "lustre",
        "glusterfs",
        "gpfs",
        "ocfs2",
        "beegfs",
    ];
    SKIPPED.contains(&fs_type) || fs_type.starts_with("nfs") || fs_type.starts_with("fuse.")
}

/// What the walk does at a mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AtMount {
    /// A local file system: entered.
    Walk,
    /// A pseudo, network or FUSE file system: neither examined nor entered.
    Skip(String),
    /// Another view of a file system the walk reaches elsewhere (a bind mount): listed,
    /// not entered again.
    Bind(String),
}

/// The mount points below the root, by escaped host path (as the walk shows it).
#[derive(Debug, Default)]
pub(crate) struct MountPlan {
    /// The mount table was read; without it the walk stays on the root's device.
    pub(crate) known: bool,
    points: HashMap<Vec<u8>, AtMount>,
    /// Directories with a mount point among their entries: only their entries are looked
    /// up, so the look-up costs nothing elsewhere.
    parents: HashSet<Vec<u8>>,
}

impl MountPlan {
    pub(crate) fn load(ctx: &Context) -> Self {
        let Ok(mut lines) = open_lines(&ctx.path("/proc/self/mountinfo")) else {
            return Self::default();
        };
        let mut plan = Self { known: true, ..Self::default() };
        // (device, root inside it) of the mounts walked so far, for bind mounts.
        let mut walked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while let Ok(Some(line)) = lines.next_line() {
            let Some(mount) = MountLine::parse(line) else { continue };
            let mut shown = Vec::new();
            escape_into(&mut shown, &mount.point);
            let action = if skipped(&mount.fs_type) {
                AtMount::Skip(mount.fs_type)
            } else if walked.iter().any(|(dev, root)| *dev == mount.device && is_below(&mount.root, root)) {
                AtMount::Bind(mount.fs_type)
            } else {
                walked.push((mount.device, mount.root));
                AtMount::Walk
            };
            // The root is where the walk starts, not an entry of any directory.
            if shown == b"/" {
                continue;
            }
            let parent = shown[..shown.iter().rposition(|&b| b == b'/').unwrap_or(0)].to_vec();
            plan.parents.insert(parent);
            // A later line mounted over an earlier one at the same place: it is what is seen.
            plan.points.insert(shown, action);
        }
        plan
    }

    /// Whether directory `shown` has mount points among its entries.
    pub(crate) fn has_mounts_in(&self, shown: &[u8]) -> bool {
        self.parents.contains(shown)
    }

    pub(crate) fn at(&self, shown: &[u8]) -> Option<&AtMount> {
        self.points.get(shown)
    }
}

fn is_below(path: &[u8], root: &[u8]) -> bool {
    root == b"/" || path == root || (path.starts_with(root) && path.get(root.len()) == Some(&b'/'))
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
struct MountLine {
    device: Vec<u8>,
    root: Vec<u8>,
    point: Vec<u8>,
    fs_type: String,
}

impl MountLine {
    fn parse(line: &[u8]) -> Option<Self> {
        let (fields, rest) = split_fields(line, 5)?;
        // Optional fields end at a lone `-`; the file system type follows it.
        let mut after = rest.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
        after.find(|f| *f == b"-")?;
        let fs_type = String::from_utf8_lossy(after.next()?).into_owned();
        Some(Self {
            device: fields[2].to_vec(),
            root: unescape_octal(fields[3]),
            point: unescape_octal(fields[4]),
            fs_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::Fixture;

    #[test]
    fn pseudo_network_and_bind_mounts_are_told_apart() {
        let f = Fixture::new();
        f.write(
            "/proc/self/mountinfo",
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             25 24 0:23 / /dev/shm rw shared:2 - tmpfs tmpfs rw\n\
             40 27 0:50 / /mnt/nfs\\040share rw - nfs4 srv:/x rw\n\
             41 27 0:51 / /mnt/sshfs rw - fuse.sshfs u@h: rw\n\
             42 27 254:0 /srv /data rw - ext4 /dev/vda rw\n\
             43 27 254:1 /a /b rw - ext4 /dev/vdb rw\n\
             44 27 254:1 /c /d rw - ext4 /dev/vdb rw\n\
             garbage line\n",
        );
        let ctx = Context { root: f.root().to_path_buf(), ..Context::live(Default::default()) };
        let plan = MountPlan::load(&ctx);
        assert!(plan.known);
        assert_eq!(plan.at(b"/proc"), Some(&AtMount::Skip("proc".into())));
        assert_eq!(plan.at(b"/dev/shm"), Some(&AtMount::Walk));
        assert_eq!(plan.at(b"/mnt/nfs share"), Some(&AtMount::Skip("nfs4".into())));
        assert_eq!(plan.at(b"/mnt/sshfs"), Some(&AtMount::Skip("fuse.sshfs".into())));
        assert_eq!(plan.at(b"/data"), Some(&AtMount::Bind("ext4".into())), "the root's disk again");
        assert_eq!(plan.at(b"/b"), Some(&AtMount::Walk));
        assert_eq!(plan.at(b"/d"), Some(&AtMount::Walk), "another part of vdb, not reachable through /b");
        assert!(plan.has_mounts_in(b"") && plan.has_mounts_in(b"/mnt") && !plan.has_mounts_in(b"/etc"));
        assert_eq!(plan.at(b"/"), None);
    }
}
