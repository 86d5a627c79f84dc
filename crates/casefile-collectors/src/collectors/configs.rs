//! `Configuration/` (triage): every regular file below `/etc` and `/usr/local/etc`, kept
//! in its place (`Configuration/etc/ssh/sshd_config`), each within the file cap and all
//! within the collector's budget; `index.csv` lists every entry (links with their
//! target, never followed). Secrets are never copied: `shadow`, `gshadow`, old
//! passwords, private keys (by place, name or content), keytabs and stored connection
//! passwords go to `secrets.csv` by name, size, owner, mode, times and SHA-256 only.

use std::path::Path;

use casefile_package::ItemSink;

use crate::{CollectError, Collector, Context};

use super::common::UniqueNames;
use super::copies::{RootDir, Stat, Taking, Wanted, shown};
use super::walk::{Found, Walk, Walked};

pub struct Configs;

const TOPS: [&str; 2] = ["/etc", "/usr/local/etc"];
const MAX_DEPTH: usize = 16;
/// Entries listed at most: the index of each is kept until the end.
const MAX_ENTRIES: usize = 100_000;

/// Files that hold secrets, by path (below `/etc`; also looked for below
/// `/usr/local/etc`).
const SECRET_FILES: [(&str, &str); 11] = [
    ("shadow", "password hashes"),
    ("gshadow", "group password hashes"),
    ("shadow-", "password hashes (backup)"),
    ("gshadow-", "group password hashes (backup)"),
    ("security/opasswd", "old password hashes"),
    ("krb5.keytab", "Kerberos keys"),
    ("ppp/chap-secrets", "PPP passwords"),
    ("ppp/pap-secrets", "PPP passwords"),
    ("ipsec.secrets", "IPsec keys"),
    ("samba/smbpasswd", "Samba password hashes"),
    ("rsyncd.secrets", "rsync passwords"),
];

/// Directories whose files are all secret (below `/etc` or `/usr/local/etc`).
const SECRET_DIRS: [(&str, &str); 7] = [
    ("ssl/private/", "private key directory"),
    ("pki/tls/private/", "private key directory"),
    ("ipsec.d/private/", "private key directory"),
    ("letsencrypt/keys/", "private key directory"),
    ("letsencrypt/archive/", "certificates and private keys"),
    ("NetworkManager/system-connections/", "stored connection passwords"),
    ("wireguard/", "WireGuard private keys"),
];

/// Endings of files that hold private keys.
const SECRET_ENDINGS: [(&str, &str); 6] = [
    (".keytab", "Kerberos keys"),
    (".key", "private key"),
    (".p12", "PKCS#12 key store"),
    (".pfx", "PKCS#12 key store"),
    (".jks", "Java key store"),
    (".keystore", "key store"),
];

impl Collector for Configs {
    fn name(&self) -> &'static str {
        "configs"
    }

    fn folder(&self) -> &'static str {
        "Configuration"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        let root = RootDir::open(ctx);
        let mut taking = Taking::new(ctx);
        let mut walk = Walk::new(ctx, MAX_DEPTH, MAX_ENTRIES);
        for top in TOPS {
            let walked = walk.walk(top, &mut |found| match found {
                Found::Mount { path, .. } => {
                    taking.index.not_a_file(shown(ctx, path), path, Stat::unknown("mount"), top);
                    Ok(())
                }
                Found::Entry { meta, .. } if meta.is_dir() => Ok(()),
                Found::Entry { path, meta, .. } if !meta.is_file() => {
                    taking.index.not_a_file(shown(ctx, path), path, Stat::of(meta), top);
                    Ok(())
                }
                Found::Entry { shown: lossy, path, meta } => {
                    let abs = shown(ctx, path);
                    let name = lossy.trim_start_matches('/');
                    let wanted = Wanted { abs: &abs, name, stat: Stat::of(meta), category: top, tail: false };
                    take_config(&root, sink, &mut taking, &wanted, path)
                }
            })?;
            if let Walked::Stopped(outcome) = walked {
                taking.index.walk_stopped(top, &outcome);
                break;
            }
        }
        taking.index.problems.merge(&walk.problems);
        taking.write(sink, "/etc, /usr/local/etc (recursive, links not followed)", "no /etc")?;
        ctx.check_cancelled()
    }
}

fn take_config(
    root: &RootDir,
    sink: &mut dyn ItemSink,
    taking: &mut Taking,
    wanted: &Wanted<'_>,
    path: &Path,
) -> Result<(), casefile_package::PackageError> {
    match secret_by_name(wanted.name) {
        Some(reason) => {
            taking.secret(wanted, root.open_file(path), reason);
            Ok(())
        }
        None => taking.take(sink, wanted, root.open_file(path)),
    }
}

/// Why the file at `rel` (`etc/…` or `usr/local/etc/…`) is secret by its place or name.
fn secret_by_name(rel: &str) -> Option<&'static str> {
    let in_etc = rel.strip_prefix("etc/").or_else(|| rel.strip_prefix("usr/local/etc/"))?;
    let file = in_etc.rsplit('/').next().unwrap_or(in_etc);
    if let Some((_, why)) = SECRET_FILES.iter().find(|(path, _)| in_etc == *path) {
        return Some(why);
    }
    if let Some((_, why)) = SECRET_DIRS.iter().find(|(dir, _)| in_etc.starts_with(dir)) {
        return Some(why);
    }
    if file.starts_with("ssh_host_") && file.ends_with("_key") {
        return Some("SSH host private key");
    }
    // Copies of the password files (`shadow.bak`, `gshadow~`) next to them.
    if !in_etc.contains('/') && (file.starts_with("shadow") || file.starts_with("gshadow")) {
        return Some("password hashes (copy)");
    }
    SECRET_ENDINGS.iter().find(|(ending, _)| file.ends_with(ending)).map(|(_, why)| *why)
}
