//! `Network connections/`: sockets with their owning processes, ARP cache, interfaces
//! and addresses, routes, resolver and hosts files, proxy settings and firewall rules.
//!
//! - [`sockets`]: `connections.csv`, `unix_sockets.csv`
//! - [`interfaces`]: `arp.csv`, `routes.csv`, `ip_addresses.csv`, `interfaces.csv`
//! - [`settings`]: `proxy.csv`, `firewall/*` (saved rule files, and the rules in force
//!   from `nft` and `iptables-save`, with `commands.csv`); `resolv.conf`, `hosts` and
//!   `environment` are copied here.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;

use casefile_package::ItemSink;

use crate::{CollectError, Collector, Context};

use super::accounts::UserNames;
use super::command::CommandLog;
use super::common::table_outcome;
use super::common::{Lines, Problems, copy_file, is_missing, open_lines, trim_bytes};

mod interfaces;
mod settings;
mod sockets;

use interfaces::{IpAddresses, write_arp, write_interfaces, write_ip_addresses, write_routes};
use settings::{copy_firewall_rules, write_live_firewall_rules, write_proxy_settings};
use sockets::{SocketOwners, write_connections, write_unix_sockets};

pub struct Network;

impl Collector for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn folder(&self) -> &'static str {
        "Network connections"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let users = UserNames::load(ctx);
        let owners = SocketOwners::scan(ctx)?;
        write_connections(ctx, sink, &owners, &users)?;
        ctx.check_cancelled()?;
        write_unix_sockets(ctx, sink, &owners)?;
        ctx.check_cancelled()?;
        write_arp(ctx, sink)?;
        let addresses = IpAddresses::load(ctx);
        write_ip_addresses(sink, &addresses)?;
        write_interfaces(ctx, sink, &addresses)?;
        write_routes(ctx, sink)?;
        for (name, abs) in [
            ("resolv.conf", "/etc/resolv.conf"),
            ("nsswitch.conf", "/etc/nsswitch.conf"),
            ("hosts", "/etc/hosts"),
            ("environment", "/etc/environment"),
        ] {
            copy_file(sink, name, &ctx.path(abs), abs, ctx.limits.max_file_bytes)?;
        }
        write_proxy_settings(ctx, sink)?;
        copy_firewall_rules(ctx, sink)?;
        let mut commands = CommandLog::default();
        write_live_firewall_rules(ctx, sink, &mut commands)?;
        commands.write(sink)?;
        ctx.check_cancelled()
    }
}

/// Opens a `/proc/net` table and skips its header line. A missing table (IPv6 disabled)
/// is skipped silently; an unreadable one is a problem.
fn open_table(ctx: &Context, abs: &str, problems: &mut Problems) -> Option<Lines<BufReader<File>>> {
    let mut lines = match open_lines(&ctx.path(abs)) {
        Ok(lines) => lines,
        Err(e) if is_missing(&e) => return None,
        Err(e) => {
            problems.add("unreadable tables", format!("{abs}: {e}"));
            return None;
        }
    };
    if let Err(e) = lines.next_line() {
        problems.add("unreadable tables", format!("{abs}: {e}"));
        return None;
    }
    Some(lines)
}

/// A trimmed line as text, `None` for a blank line. Bytes that are not UTF-8 are
/// replaced, so a mangled number fails to parse and the line is counted as unparseable.
fn line_text(line: &[u8]) -> Option<Cow<'_, str>> {
    let line = trim_bytes(line);
    (!line.is_empty()).then(|| String::from_utf8_lossy(line))
}
