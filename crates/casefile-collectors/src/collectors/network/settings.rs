//! Proxy settings (`proxy.csv`) and firewall rules (`firewall/*`): saved rule files and
//! the rule sets in force.

use std::io::{self, BufReader, Read};
use std::path::Path;

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::Context;

use super::table_outcome;
use crate::collectors::command::CommandLog;
use crate::collectors::common::{
    COPY_LIMIT, Lines, Problems, copy_file, csv_file, dir_entries, is_missing, open_regular,
};

const PROXY_HEADER: [&str; 3] = ["source", "setting", "value"];

/// Files that set proxies: environment files (`http_proxy=…`), apt
/// (`Acquire::http::Proxy "…";`) and dnf/yum (`proxy=…`).
const PROXY_FILES: [&str; 4] = ["/etc/environment", "/etc/apt/apt.conf", "/etc/dnf/dnf.conf", "/etc/yum.conf"];
const PROXY_DIRS: [&str; 2] = ["/etc/profile.d", "/etc/apt/apt.conf.d"];

pub(super) fn write_proxy_settings(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/etc/environment, /etc/profile.d/*, /etc/apt/apt.conf{,.d/*}, /etc/dnf/dnf.conf, /etc/yum.conf";
    csv_file(sink, "proxy.csv", source, &PROXY_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut files: Vec<String> = PROXY_FILES.iter().map(|f| f.to_string()).collect();
        for dir in PROXY_DIRS {
            files.extend(dir_files(ctx, dir, &mut problems));
        }
        let mut files_read = 0;
        for abs in files {
            // Read errors are the file's problem; write errors (the package) must end the item.
            let settings = match proxy_settings_in(&ctx.path(&abs)) {
                Ok(settings) => settings,
                Err(e) if is_missing(&e) => continue,
                Err(e) => {
                    problems.add("unreadable files", format!("{abs}: {e}"));
                    continue;
                }
            };
            files_read += 1;
            for (setting, value) in settings {
                csv.row([abs.as_str(), &setting, &value])?;
            }
        }
        Ok(table_outcome(files_read, problems, "no proxy configuration files present"))
    })
}

/// The regular files of a directory, as absolute host paths, sorted by name.
fn dir_files(ctx: &Context, dir: &str, problems: &mut Problems) -> Vec<String> {
    dir_entries(ctx, dir, problems)
        .into_iter()
        .filter(|name| ctx.path(dir).join(name).is_file())
        .map(|name| format!("{dir}/{}", name.to_string_lossy()))
        .collect()
}

/// The proxy settings of one file: a handful of lines, held until written. Only the
/// first [`COPY_LIMIT`] bytes are read, which bounds the memory a planted file can take.
fn proxy_settings_in(path: &Path) -> io::Result<Vec<(String, String)>> {
    let mut lines = Lines::new(BufReader::new(open_regular(path)?.take(COPY_LIMIT)));
    let mut settings = Vec::new();
    while let Some(line) = lines.next_line()? {
        settings.extend(proxy_setting(&String::from_utf8_lossy(line)));
    }
    Ok(settings)
}

/// A proxy setting on one line: `[export] NAME=value` where NAME contains "proxy"
/// (`http_proxy`, `HTTPS_PROXY`, `no_proxy`, dnf's `proxy`), or apt's
/// `Acquire::…::Proxy "value";`.
fn proxy_setting(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.starts_with('#') || line.starts_with("//") {
        return None;
    }
    if line.to_ascii_lowercase().starts_with("acquire::") {
        let (key, value) = line.split_once(char::is_whitespace)?;
        let value = value.trim().trim_end_matches(';').trim();
        return key.to_ascii_lowercase().contains("proxy").then(|| (key.to_owned(), unquote(value).to_owned()));
    }
    let assignment = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (name, value) = assignment.split_once('=')?;
    let name = name.trim();
    let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (is_name && name.to_ascii_lowercase().contains("proxy"))
        .then(|| (name.to_owned(), unquote(value.trim()).to_owned()))
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote).and_then(|v| v.strip_suffix(quote)) {
            return inner;
        }
    }
    value
}

// ---------------------------------------------------------------------------------------
// Firewall rules

/// Saved firewall rule sets, by host path and name in the package. The rules the kernel
/// enforces now are read by [`write_live_firewall_rules`].
const FIREWALL_FILES: [(&str, &str); 9] = [
    ("/etc/nftables.conf", "firewall/nftables.conf"),
    ("/etc/sysconfig/nftables.conf", "firewall/sysconfig-nftables.conf"),
    ("/etc/iptables/rules.v4", "firewall/iptables-rules.v4"),
    ("/etc/iptables/rules.v6", "firewall/iptables-rules.v6"),
    ("/etc/sysconfig/iptables", "firewall/sysconfig-iptables"),
    ("/etc/sysconfig/ip6tables", "firewall/sysconfig-ip6tables"),
    ("/etc/ufw/user.rules", "firewall/ufw-user.rules"),
    ("/etc/ufw/user6.rules", "firewall/ufw-user6.rules"),
    ("/etc/firewalld/firewalld.conf", "firewall/firewalld.conf"),
];

/// Copies the rule files that exist; when none does, one `not-applicable` item says so.
/// It sits inside `firewall/`, next to the rule sets in force: a file named `firewall`
/// could not share the package with a folder of that name.
pub(super) fn copy_firewall_rules(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let mut copied = 0;
    for (abs, name) in FIREWALL_FILES {
        let path = ctx.path(abs);
        if path.symlink_metadata().is_ok() {
            copy_file(sink, name, &path, abs, ctx.limits.max_file_bytes)?;
            copied += 1;
        }
    }
    if copied == 0 {
        let checked: Vec<&str> = FIREWALL_FILES.iter().map(|(abs, _)| *abs).collect();
        sink.file("firewall/saved_rules", &checked.join(", "), |_| {
            Ok(ItemOutcome::not_applicable("no saved firewall rules found"))
        })?;
    }
    Ok(())
}

/// Programs that print the kernel's rule sets (only they speak netlink), with their
/// arguments and the package file for their output.
const FIREWALL_COMMANDS: [(&[&str], &[&str], &str); 3] = [
    (&["/usr/sbin/nft", "/sbin/nft"], &["list", "ruleset"], "firewall/nft_ruleset.txt"),
    (&["/usr/sbin/iptables-save", "/sbin/iptables-save"], &[], "firewall/iptables_save.txt"),
    (&["/usr/sbin/ip6tables-save", "/sbin/ip6tables-save"], &[], "firewall/ip6tables_save.txt"),
];

/// The rule sets in force, from `nft` and `iptables-save` on the live host.
pub(super) fn write_live_firewall_rules(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    log: &mut CommandLog,
) -> Result<(), PackageError> {
    for (candidates, args, name) in FIREWALL_COMMANDS {
        log.output_file(ctx, sink, name, candidates, args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::collectors::network::Network;
    use crate::collectors::test_support::{Fixture, run};
    use casefile_package::ItemStatus;

    #[test]
    fn config_files_are_copied_and_missing_ones_not_applicable() {
        let f = Fixture::new();
        f.write("/etc/resolv.conf", "nameserver 192.0.2.53\n");
        f.write("/etc/nftables.conf", "table inet filter {}\n");
        let sink = run(&Network, f.root());
        assert_eq!(sink.item("resolv.conf").text(), "nameserver 192.0.2.53\n");
        assert_eq!(sink.item("resolv.conf").source, "/etc/resolv.conf");
        assert_eq!(sink.item("hosts").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("firewall/nftables.conf").text(), "table inet filter {}\n");
        assert!(!sink.names().contains(&"firewall/saved_rules"));
        // No /proc at all: socket tables are not applicable, not failed.
        assert_eq!(sink.item("connections.csv").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("interfaces.csv").status(), ItemStatus::NotApplicable);

        let bare = Fixture::new();
        let sink = run(&Network, bare.root());
        assert_eq!(sink.item("firewall/saved_rules").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("proxy.csv").status(), ItemStatus::NotApplicable);
        // Programs of a fixture root are never run.
        for name in ["firewall/nft_ruleset.txt", "firewall/iptables_save.txt", "firewall/ip6tables_save.txt"] {
            assert_eq!(sink.item(name).status(), ItemStatus::NotApplicable, "{name}");
        }
        assert_eq!(sink.item("commands.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn proxy_settings_are_found_in_environment_apt_and_profile_files() {
        let f = Fixture::new();
        f.write(
            "/etc/environment",
            "PATH=\"/usr/bin\"\nhttp_proxy=\"http://proxy.example:3128\"\n# https_proxy=ignored\n",
        );
        f.write(
            "/etc/profile.d/proxy.sh",
            "export HTTPS_PROXY='http://user:pw@proxy.example:3128'\nexport no_proxy=localhost\n",
        );
        f.write("/etc/apt/apt.conf.d/95proxy", "Acquire::http::Proxy \"http://apt-proxy:3142\";\n");
        let sink = run(&Network, f.root());
        let item = sink.item("proxy.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        let settings: Vec<(&str, &str, &str)> =
            rows.iter().map(|r| (r["source"].as_str(), r["setting"].as_str(), r["value"].as_str())).collect();
        assert_eq!(
            settings,
            [
                ("/etc/environment", "http_proxy", "http://proxy.example:3128"),
                ("/etc/profile.d/proxy.sh", "HTTPS_PROXY", "http://user:pw@proxy.example:3128"),
                ("/etc/profile.d/proxy.sh", "no_proxy", "localhost"),
                ("/etc/apt/apt.conf.d/95proxy", "Acquire::http::Proxy", "http://apt-proxy:3142"),
            ]
        );
        assert_eq!(sink.item("environment").status(), ItemStatus::Ok);
    }
}
