//! What a process is isolated in: its namespaces (`/proc/<pid>/ns/*`) and the container
//! its control group names (`/proc/<pid>/cgroup`).

use std::io;

use procfs::process::Process;
use rustix::fs::OFlags;

use crate::collectors::common::ascii_str;
use crate::collectors::procs::{ReadError, open_entry};

/// The namespace kinds listed, in column order (`pid_ns`, `mnt_ns`, …).
pub(super) const NAMESPACES: [&str; 7] = ["pid", "mnt", "net", "user", "uts", "ipc", "cgroup"];

/// The inode number of each namespace (`net:[4026531840]` → `4026531840`): processes
/// sharing a number share that namespace. Empty where the kernel lacks the kind or the
/// process has exited.
pub(super) fn namespaces(process: &Process) -> Result<[String; 7], ReadError> {
    let mut ids: [String; 7] = Default::default();
    let Some(dir) = open_entry(process, "ns", OFlags::RDONLY | OFlags::DIRECTORY)? else {
        return Ok(ids);
    };
    for (id, kind) in ids.iter_mut().zip(NAMESPACES) {
        match rustix::fs::readlinkat(&dir, kind, Vec::new()) {
            Ok(target) => *id = namespace_inode(target.as_bytes()).unwrap_or_default(),
            Err(e) => match ReadError::from(io::Error::from(e)) {
                ReadError::Gone => {}
                failed => return Err(failed),
            },
        }
    }
    Ok(ids)
}

/// `net:[4026531840]` → `4026531840`.
fn namespace_inode(target: &[u8]) -> Option<String> {
    let open = target.iter().position(|&b| b == b'[')?;
    let inner = target[open + 1..].strip_suffix(b"]")?;
    let number: u64 = ascii_str(inner)?.parse().ok()?;
    Some(number.to_string())
}

/// A container found in a control group path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Container {
    pub(super) runtime: &'static str,
    pub(super) id: String,
}

/// Unit-name prefixes container runtimes give the scope of a container, with the
/// runtime's name. `crio-conmon-…` and `libpod-conmon-…` (the monitors) do not match,
/// since what follows the prefix must be the 64-hex id.
const SCOPE_PREFIXES: [(&str, &str); 5] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// The container of a process from `/proc/<pid>/cgroup`, e.g.
/// `0::/system.slice/docker-<id>.scope`, `4:memory:/docker/<id>`,
/// `0::/kubepods/besteffort/pod<uid>/<id>` or
/// `0::/machine.slice/libpod-<id>.scope/container`. The innermost match wins.
pub(super) fn container(cgroup: &[u8]) -> Option<Container> {
    for line in cgroup.split(|&b| b == b'\n') {
        // `hierarchy-id:controllers:path`; the path may itself contain colons.
        let Some(path) = line.splitn(3, |&b| b == b':').nth(2) else {
            continue;
        };
        let segments: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for (at, segment) in segments.iter().enumerate().rev() {
            let unit = segment.strip_suffix(b".scope").unwrap_or(segment);
            for (prefix, runtime) in SCOPE_PREFIXES {
                if let Some(id) = unit.strip_prefix(prefix.as_bytes()).filter(|id| is_container_id(id)) {
                    return Some(Container { runtime, id: String::from_utf8_lossy(id).into_owned() });
                }
            }
            if is_container_id(unit) {
                let runtime = runtime_from_parents(&segments[..at]);
                return Some(Container { runtime, id: String::from_utf8_lossy(unit).into_owned() });
            }
        }
    }
    None
}

/// The runtime a bare id belongs to, from the groups above it (`/docker/<id>`,
/// `/kubepods/…/<id>`).
fn runtime_from_parents(parents: &[&[u8]]) -> &'static str {
    let named = |needle: &[u8]| parents.iter().any(|p| p.windows(needle.len()).any(|w| w == needle));
    if named(b"kubepods") {
        "kubernetes"
    } else if named(b"docker") {
        "docker"
    } else if named(b"libpod") {
        "podman"
    } else if named(b"crio") {
        "cri-o"
    } else if named(b"containerd") {
        "containerd"
    } else {
        "unknown"
    }
}

/// Container ids are 64 lowercase hex digits.
fn is_container_id(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a6c0c3c5e4a1bb2b1c9d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80912";

    fn found(cgroup: &str) -> Option<(&'static str, String)> {
        container(cgroup.as_bytes()).map(|c| (c.runtime, c.id))
    }

    #[test]
    fn container_ids_are_found_in_every_runtime_layout() {
        let cases = [
            (format!("0::/system.slice/docker-{ID}.scope\n"), "docker"),
            (format!("12:memory:/docker/{ID}\n11:cpu:/docker/{ID}\n"), "docker"),
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope\n"
                ),
                "containerd",
            ),
            (format!("0::/kubepods/besteffort/pod0b1c/{ID}\n"), "kubernetes"),
            (format!("0::/machine.slice/crio-{ID}.scope\n"), "cri-o"),
            (
                format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"),
                "podman",
            ),
            (format!("0::/odd/{ID}\n"), "unknown"),
        ];
        for (cgroup, runtime) in cases {
            assert_eq!(found(&cgroup), Some((runtime, ID.to_owned())), "{cgroup}");
        }
    }

    #[test]
    fn hosts_processes_and_monitors_have_no_container() {
        assert_eq!(found("0::/init.scope\n"), None);
        assert_eq!(found("0::/user.slice/user-1000.slice/session-2.scope\n"), None);
        assert_eq!(found(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")), None);
        assert_eq!(found(&format!("0::/docker/{}\n", &ID[..63])), None);
        assert_eq!(found(&format!("0::/docker/{}\n", ID.to_uppercase())), None);
        assert_eq!(found("garbage\n\u{0}\u{ff}"), None);
        assert_eq!(found(""), None);
    }

    #[test]
    fn namespace_links_give_their_inode() {
        assert_eq!(namespace_inode(b"net:[4026531840]"), Some("4026531840".into()));
        assert_eq!(namespace_inode(b"pid_for_children:[4026531836]"), Some("4026531836".into()));
        assert_eq!(namespace_inode(b"net:[x]"), None);
        assert_eq!(namespace_inode(b"net"), None);
    }
}
