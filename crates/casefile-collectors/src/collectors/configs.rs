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
use super::copies::{Regular, RootDir, Taking, Wanted};
use super::walk::{Walk, Walked};

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
            let walked = walk.walk(top, &mut |found| {
                let Some(Regular { lossy, path, abs, stat }) = taking.index.regular_file(ctx, found, top) else {
                    return Ok(());
                };
                let name = lossy.trim_start_matches('/');
                let wanted = Wanted { abs: &abs, name, stat, category: top, tail: false };
                take_config(&root, sink, &mut taking, &wanted, path)
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
            taking.secret(wanted, root.open_found(path, &wanted.stat), reason);
            Ok(())
        }
        None => taking.take(sink, wanted, root.open_found(path, &wanted.stat)),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use casefile_package::ItemStatus;
    use sha2::{Digest, Sha256};

    use crate::Limits;
    use crate::collectors::copies::testing::{assert_nowhere, run_cancelled, run_changing};
    use crate::collectors::test_support::{Fixture, MemorySink, find_row, run, run_with};

    use super::*;

    fn rows(sink: &MemorySink, name: &str) -> Vec<HashMap<String, String>> {
        sink.item(name).rows()
    }

    #[test]
    fn configuration_files_are_copied_in_their_place() {
        let f = Fixture::new();
        f.write("/etc/ssh/sshd_config", "PermitRootLogin no\n");
        f.write("/etc/nginx/sites-enabled/default", "server { listen 80; }\n");
        f.write("/usr/local/etc/app.conf", "key=value\n");
        f.symlink("/usr/share/zoneinfo/UTC", "/etc/localtime");
        let sink = run(&Configs, f.root());
        assert_eq!(sink.item("etc/ssh/sshd_config").text(), "PermitRootLogin no\n");
        assert_eq!(sink.item("etc/ssh/sshd_config").source, "/etc/ssh/sshd_config");
        assert_eq!(sink.item("etc/nginx/sites-enabled/default").status(), ItemStatus::Ok);
        assert_eq!(sink.item("usr/local/etc/app.conf").text(), "key=value\n");
        let index = rows(&sink, "index.csv");
        assert_eq!(index.len(), 4);
        let link = find_row(&index, "path", "/etc/localtime");
        assert_eq!(link["type"], "symlink");
        assert_eq!(link["note"], "symbolic link to /usr/share/zoneinfo/UTC: not followed");
        let sshd = find_row(&index, "path", "/etc/ssh/sshd_config");
        assert_eq!((sshd["status"].as_str(), sshd["copied_bytes"].as_str()), ("copied", "19"));
        assert_eq!((sshd["category"].as_str(), sshd["output"].as_str()), ("/etc", "etc/ssh/sshd_config"));
        assert_eq!(sink.item("secrets.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn secrets_are_listed_by_hash_and_never_copied() {
        let f = Fixture::new();
        let shadow = "root:$6$SECRETMARK-shadow:19000:0:99999:7:::\n";
        f.write("/etc/shadow", shadow);
        f.write("/etc/gshadow", "sudo:!:SECRETMARK-gshadow\n");
        f.write("/etc/shadow-", "SECRETMARK-shadow-backup\n");
        f.write("/etc/security/opasswd", "alice:1000:1:SECRETMARK-opasswd\n");
        f.write("/etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETMARK-host\n");
        f.write("/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA host\n");
        f.write("/etc/ssl/private/server.pem", "SECRETMARK-ssl-private\n");
        f.write("/etc/krb5.keytab", b"\x05\x02SECRETMARK-keytab");
        f.write("/etc/app/service.keytab", b"\x05\x02SECRETMARK-keytab2");
        f.write("/etc/wireguard/wg0.conf", "PrivateKey = SECRETMARK-wg\n");
        // A key after 5 KiB of certificates, in a file named like any other.
        let mut bundle = "-----BEGIN CERTIFICATE-----\n".repeat(200);
        bundle.push_str("-----BEGIN RSA PRIVATE KEY-----\nSECRETMARK-bundle\n-----END RSA PRIVATE KEY-----\n");
        f.write("/etc/haproxy/site.pem", &bundle);
        f.write("/usr/local/etc/ssh/ssh_host_rsa_key", "SECRETMARK-local-host\n");
        let sink = run(&Configs, f.root());

        assert_nowhere(&sink, "SECRETMARK");
        assert_eq!(sink.item("etc/ssh/ssh_host_ed25519_key.pub").text(), "ssh-ed25519 AAAA host\n");
        let secrets = rows(&sink, "secrets.csv");
        assert_eq!(secrets.len(), 11, "{secrets:?}");
        let row = find_row(&secrets, "path", "/etc/shadow");
        assert_eq!(row["sha256"], hex::encode(Sha256::digest(shadow)));
        assert_eq!((row["size"].as_str(), row["reason"].as_str()), (&*shadow.len().to_string(), "password hashes"));
        assert_eq!(row["mode"].len(), 4);
        assert!(row["ctime_utc"].ends_with('Z') && row["mtime_utc"].ends_with('Z'));
        assert_eq!(find_row(&secrets, "path", "/etc/haproxy/site.pem")["reason"], "holds a private key");
        assert_eq!(find_row(&secrets, "path", "/etc/ssh/ssh_host_ed25519_key")["reason"], "SSH host private key");
        let index = rows(&sink, "index.csv");
        let listed = find_row(&index, "path", "/etc/gshadow");
        assert_eq!((listed["status"].as_str(), listed["copied_bytes"].as_str()), ("secret", "0"));
        assert_eq!(listed["output"], "");
    }

    #[test]
    fn a_fifo_a_loop_and_links_out_of_the_root_are_listed_only() {
        let f = Fixture::new();
        f.write("/outside/passwords", "SECRETMARK-outside\n");
        f.fifo("/etc/hosts");
        f.symlink(f.path("/outside/passwords"), "/etc/app.conf");
        f.symlink(f.path("/outside"), "/etc/app.d");
        f.symlink("loop", "/etc/loop");
        let odd = f.path("/etc").join(OsStr::from_bytes(b"evil\n,\"name\xff"));
        std::fs::write(odd, "odd=1\n").unwrap();
        let sink = run(&Configs, f.root());
        assert_nowhere(&sink, "SECRETMARK");
        let index = rows(&sink, "index.csv");
        assert_eq!(find_row(&index, "path", "/etc/hosts")["type"], "fifo");
        assert_eq!(find_row(&index, "path", "/etc/app.conf")["status"], "listed");
        assert_eq!(find_row(&index, "path", "/etc/app.d")["type"], "symlink");
        assert_eq!(find_row(&index, "path", "/etc/loop")["note"], "symbolic link to loop: not followed");
        let odd = find_row(&index, "path", "/etc/evil\\n,\"name\\xff");
        assert_eq!(sink.item(&odd["output"]).text(), "odd=1\n");
    }

    #[test]
    fn files_are_cut_at_the_file_cap_and_stop_at_the_total() {
        let f = Fixture::new();
        f.write("/usr/local/etc/big.conf", vec![b'a'; 1000]);
        for name in ["b", "c", "d"] {
            f.write(&format!("/etc/{name}.conf"), vec![b'x'; 50]);
        }
        let limits = Limits { max_file_bytes: 100, max_total_bytes: 100, ..Limits::default() };
        let sink = run_with(&Configs, f.root(), limits);
        let index = rows(&sink, "index.csv");
        // /etc comes first: two of its files fit the 100 bytes, the third does not, and
        // nothing is left for the big one.
        let copied: Vec<_> = index.iter().filter(|r| r["status"] == "copied").collect();
        assert_eq!(copied.len(), 2, "{index:?}");
        let over: Vec<_> = index.iter().filter(|r| r["note"].contains("total budget of 100 bytes")).collect();
        assert_eq!(over.len(), 2, "{index:?}");
        assert!(!sink.names().contains(&"usr/local/etc/big.conf"));

        let limits = Limits { max_file_bytes: 100, ..Limits::default() };
        let sink = run_with(&Configs, f.root(), limits);
        let big = sink.item("usr/local/etc/big.conf");
        assert_eq!((big.bytes.len(), big.status()), (100, ItemStatus::Partial));
        let index = rows(&sink, "index.csv");
        let row = find_row(&index, "path", "/usr/local/etc/big.conf");
        assert_eq!((row["status"].as_str(), row["note"].as_str()), ("partial", "truncated at 100 bytes"));
    }

    /// A key written into a file after it was searched is not copied: the copy ends
    /// where the search did, and the file is `partial`.
    #[test]
    fn a_file_that_grows_after_the_search_is_cut_where_it_was_searched() {
        let f = Fixture::new();
        let text = "option = 1\n".repeat(10_000);
        f.write("/etc/app.conf", &text);
        let path = f.path("/etc/app.conf");
        let sink = run_changing(&Configs, f.root(), "etc/app.conf", || {
            let mut file = std::fs::File::options().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut file, b"-----BEGIN PRIVATE KEY-----\nSECRETMARK\n").unwrap();
        });
        assert_nowhere(&sink, "SECRETMARK");
        let item = sink.item("etc/app.conf");
        assert_eq!((item.text(), item.status()), (text.clone(), ItemStatus::Partial));
        let path = f.path("/etc/app.conf");
        std::fs::write(&path, &text).unwrap();
        let sink = run_changing(&Configs, f.root(), "etc/app.conf", || {
            std::fs::File::options().write(true).open(&path).unwrap().set_len(0).unwrap();
        });
        let index = rows(&sink, "index.csv");
        let row = find_row(&index, "path", "/etc/app.conf");
        assert_eq!(row["status"], "partial");
        assert!(row["note"].starts_with("shrank while copied"), "{row:?}");
    }

    #[test]
    fn a_cancelled_collection_stops() {
        let f = Fixture::new();
        f.write("/etc/hostname", "box\n");
        let sink = run_cancelled(&Configs, f.root());
        assert!(!sink.names().contains(&"etc/hostname"));
    }

    #[test]
    fn secret_places_and_names() {
        assert_eq!(secret_by_name("etc/shadow"), Some("password hashes"));
        assert_eq!(secret_by_name("etc/shadow.bak"), Some("password hashes (copy)"));
        assert_eq!(secret_by_name("etc/ssh/ssh_host_rsa_key"), Some("SSH host private key"));
        assert_eq!(secret_by_name("etc/ssh/ssh_host_rsa_key.pub"), None);
        assert_eq!(secret_by_name("etc/default/shadow"), None, "only next to passwd");
        assert_eq!(secret_by_name("usr/local/etc/ssl/private/x"), Some("private key directory"));
        assert_eq!(secret_by_name("etc/passwd"), None);
    }
}
