//! Copies of what runs at boot, at every program start and at every sign-in:
//! `rc.local`, `ld.so.preload`, and the shell startup files of the system
//! (`startup/system/…`) and of each user (`startup/<user>/…`).

use casefile_package::{ItemOutcome, ItemSink};

use crate::collectors::accounts::{Home, copy_home_file};
use crate::collectors::common::{Problems, copy_file, copy_head, dir_entries, name_part};
use crate::{CollectError, Context};

/// Always listed: a missing `ld.so.preload` is a finding too.
const BOOT_FILES: [(&str, &str); 2] = [("rc.local", "/etc/rc.local"), ("ld.so.preload", "/etc/ld.so.preload")];
/// Listed when present.
const RC_D_LOCAL: (&str, &str) = ("rc.d/rc.local", "/etc/rc.d/rc.local");

/// Read by login shells, bash and zsh for every user (Debian and Red Hat names).
const SYSTEM_FILES: [&str; 10] = [
    "/etc/profile",
    "/etc/bash.bashrc",
    "/etc/bashrc",
    "/etc/bash.bash_logout",
    "/etc/zshenv",
    "/etc/zprofile",
    "/etc/zshrc",
    "/etc/zlogin",
    "/etc/zlogout",
    "/etc/csh.cshrc",
];
/// Every file of these is read too.
const SYSTEM_DIRS: [&str; 2] = ["/etc/profile.d", "/etc/zsh"];
/// In each home.
const USER_FILES: [&str; 10] = [
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".bash_logout",
    ".zshenv",
    ".zprofile",
    ".zshrc",
    ".zlogin",
    ".zlogout",
];

pub(super) fn copy_startup_files(ctx: &Context, sink: &mut dyn ItemSink, homes: &[Home]) -> Result<(), CollectError> {
    let limit = ctx.limits.max_file_bytes;
    for (name, abs) in BOOT_FILES {
        copy_file(sink, name, &ctx.path(abs), abs, limit)?;
    }
    let (name, abs) = RC_D_LOCAL;
    if ctx.path(abs).symlink_metadata().is_ok() {
        copy_file(sink, name, &ctx.path(abs), abs, limit)?;
    }

    let mut copied = 0;
    let mut problems = Problems::default();
    for abs in SYSTEM_FILES {
        if ctx.path(abs).symlink_metadata().is_ok() {
            copy_file(sink, &format!("startup/system/{}", &abs["/etc/".len()..]), &ctx.path(abs), abs, limit)?;
            copied += 1;
        }
    }
    for dir in SYSTEM_DIRS {
        for file in dir_entries(ctx, dir, &mut problems) {
            let path = ctx.path(dir).join(&file);
            if path.is_dir() {
                continue;
            }
            let file = file.to_string_lossy();
            let name = format!("startup/system/{}/{}", &dir["/etc/".len()..], name_part(&file));
            copy_file(sink, &name, &path, &format!("{dir}/{file}"), limit)?;
            copied += 1;
        }
    }
    for home in homes {
        for file in USER_FILES {
            let item = format!("startup/{}/{file}", home.label);
            copied += usize::from(copy_home_file(ctx, sink, home, (file, &item), copy_head)?);
        }
        ctx.check_cancelled()?;
    }
    if copied == 0 {
        let outcome = match problems.outcome().error {
            Some(why) => ItemOutcome::failed(why),
            None => ItemOutcome::not_applicable("no shell startup files"),
        };
        sink.file("startup", "/etc/profile{,.d/*}, /etc/bash*, /etc/zsh*, ~/.bashrc, ~/.profile, …", |_| {
            Ok(outcome)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use casefile_package::ItemStatus;

    use crate::collectors::persistence::Persistence;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, run};

    #[test]
    fn boot_and_shell_startup_files_are_copied_per_user() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/etc/ld.so.preload", "/usr/lib/libhide.so\n");
        f.write("/etc/profile", "umask 022\n");
        f.write("/etc/profile.d/proxy.sh", "export http_proxy=http://p:3128\n");
        std::fs::write(f.path("/etc/profile.d").join(OsStr::from_bytes(b"odd\xff.sh")), "echo odd\n").unwrap();
        f.write("/etc/zsh/zshrc", "autoload -U compinit\n");
        f.write("/root/.bashrc", "alias ls='ls --color'\n");
        f.write("/home/alice/.profile", "PATH=/tmp/.x:$PATH\n");
        f.symlink("/dev/null", "/home/bob/.bash_logout");
        f.fifo("/home/alice/.zshrc");
        let sink = run(&Persistence, f.root());

        assert_eq!(sink.item("ld.so.preload").text(), "/usr/lib/libhide.so\n");
        assert_eq!(sink.item("rc.local").status(), ItemStatus::NotApplicable);
        assert!(!sink.names().contains(&"rc.d/rc.local"));
        assert_eq!(sink.item("startup/system/profile").text(), "umask 022\n");
        assert_eq!(sink.item("startup/system/profile.d/proxy.sh").source, "/etc/profile.d/proxy.sh");
        assert_eq!(sink.item("startup/system/profile.d/odd\u{fffd}.sh").text(), "echo odd\n");
        assert_eq!(sink.item("startup/system/zsh/zshrc").status(), ItemStatus::Ok);
        assert_eq!(sink.item("startup/root/.bashrc").text(), "alias ls='ls --color'\n");
        assert_eq!(sink.item("startup/alice/.profile").source, "/home/alice/.profile");
        let null = sink.item("startup/bob/.bash_logout");
        assert_eq!(null.status(), ItemStatus::NotApplicable);
        assert!(null.outcome.error.as_ref().unwrap().contains("symbolic link to /dev/null"));
        assert_eq!(sink.item("startup/alice/.zshrc").status(), ItemStatus::NotApplicable, "a FIFO is not read");
        assert!(!sink.names().contains(&"startup"));
    }

    #[test]
    fn none_present_is_one_not_applicable_item() {
        let sink = run(&Persistence, Fixture::new().root());
        assert_eq!(sink.item("startup").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("ld.so.preload").status(), ItemStatus::NotApplicable);
    }
}
