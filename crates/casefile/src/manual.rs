//! `casefile completions SHELL` and `casefile man --out DIR`, both generated from the
//! clap definitions, so they cannot drift from the commands.

use std::path::{Path, PathBuf};

/// Writes the completion script of `shell` for `command` to `out`.
pub fn completions(
    mut command: clap::Command,
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let name = command.get_name().to_owned();
    // Generated whole first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes one roff page per command and subcommand into `dir` (`casefile.1`,
/// `casefile-login.1`, `casefile-app-create.1`, ...); returns the files written.
pub fn man_pages(mut command: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    command.build();
    let mut written = Vec::new();
    write_pages(&command, None, dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    command: &clap::Command,
    parent: Option<&str>,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let name = match parent {
        Some(parent) => format!("{parent}-{}", command.get_name()),
        None => command.get_name().to_owned(),
    };
    // The page's title and synopsis name the whole command line (`casefile-app-create`).
    let page = command.clone().name(name.clone()).bin_name(name.replace('-', " "));
    let mut buffer = Vec::new();
    clap_mangen::Man::new(page).render(&mut buffer)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buffer)?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, Some(&name), dir, written)?;
    }
    Ok(())
}
