//! `User traces/` (triage): for every home, what its user typed and reached beyond the
//! shell histories of `Shell histories/`: other shells' and REPLs' histories, SSH client
//! and server files (`known_hosts`, `config`, `authorized_keys`, public keys), git
//! configuration, recently used files and Trash info, as `<user>/<path in the home>`;
//! `index.csv` lists every file found. Private keys (`~/.ssh/id_*`, or any file holding
//! one) and stored credentials (`.git-credentials`, `.netrc`, …) go to `secrets.csv` by
//! name, size, owner, times and hash only.
//!
//! A file is read through a link only when the link leads to the user's own file (see
//! [`open_home_file`]), and only when the directories on its way stay inside the home: a
//! user cannot link `~/.ssh` to `/etc` to have the agent copy `/etc/shadow`.

use std::fs::File;
use std::io;
use std::path::Path;

use casefile_package::{ItemSink, PackageError};

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
    fn collect(&mut self, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
        for (rel, name) in HISTORY_FILES {
            if let Some((abs, stat, _)) = self.found(rel) {
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
        if self.home.uid != 0 && !inside_home(self.ctx, self.home, path) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "reached through a link out of the home"));
        }
        open_home_file(path, self.home.uid)
    }

    /// Copies `rel` of the home as `<user>/<name>` if it exists.
    fn file(
        &mut self,
        sink: &mut dyn ItemSink,
        rel: impl AsRef<Path>,
        name: &str,
        tail: bool,
    ) -> Result<(), PackageError> {
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
        self.taking.take(sink, &wanted, file)
    }

    /// `~/.ssh`: client and server files and public keys copied; private keys (`id_*`
    /// without `.pub`, or any file holding a key) listed as secrets.
    fn ssh(&mut self, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
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
    fn trash(&mut self, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
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
