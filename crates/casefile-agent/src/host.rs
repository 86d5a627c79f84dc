//! Facts about this host that the agent reports to the server.

use std::path::Path;

use casefile_proto::agent::HostInfo;
use casefile_proto::machine::IpAddress;

use crate::AGENT_VERSION;

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".to_owned())
}

pub fn kernel() -> String {
    read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// A field of `/etc/os-release` (`PRETTY_NAME`, `VERSION_ID`, ...).
pub fn os_release(field: &str) -> Option<String> {
    let text =
        std::fs::read_to_string("/etc/os-release").or_else(|_| std::fs::read_to_string("/usr/lib/os-release")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == field).then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The host's stable identity: the systemd/dbus machine id, or one the agent makes
/// and keeps in its state directory.
pub fn host_id(state_dir: &Path) -> Result<String, crate::AgentError> {
    if let Some(id) = read_trimmed("/etc/machine-id").or_else(|| read_trimmed("/var/lib/dbus/machine-id")) {
        return Ok(id);
    }
    let path = state_dir.join("host-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_owned());
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    crate::identity::write_private(&path, id.as_bytes())?;
    Ok(id)
}

/// The local address this host uses to reach `server_host` (no packet is sent).
fn primary_ip(server_host: &str, port: u16) -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect((server_host, port)).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

pub fn info(server: &reqwest::Url) -> HostInfo {
    let ip_addresses = server
        .host_str()
        .and_then(|h| primary_ip(h.trim_matches(['[', ']']), server.port_or_known_default().unwrap_or(80)))
        .map(|ip| {
            vec![IpAddress { ip_address: ip, mac_address: None, kind: None, operational_status: Some("Up".into()) }]
        })
        .unwrap_or_default();
    HostInfo {
        computer_dns_name: hostname(),
        os_platform: "Linux".to_owned(),
        os_version: os_release("VERSION_ID").or_else(|| os_release("PRETTY_NAME")),
        os_architecture: Some(if cfg!(target_pointer_width = "64") { "64-bit" } else { "32-bit" }.to_owned()),
        os_build: None,
        agent_version: AGENT_VERSION.to_owned(),
        ip_addresses,
    }
}
