//! TCP, UDP and raw sockets (`connections.csv`) and Unix sockets (`unix_sockets.csv`),
//! each with the process that holds it open.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use procfs::process::Process;

use crate::{CollectError, Context};

use super::{line_text, open_table, table_outcome};
use crate::collectors::accounts::UserNames;
use crate::collectors::common::{CANCELLED, Problems, ascii_str, csv_file, is_missing, split_fields, trim_bytes};
use crate::collectors::procs::{ProcessWalk, ReadError, fd_links, proc_root, process_name, socket_inode};

/// The process that holds a socket open, and any others sharing it (forked servers).
#[derive(Debug)]
struct Owner {
    pid: i32,
    process: String,
    other_pids: Vec<i32>,
}

/// socket inode → owner, from the `socket:[inode]` links in `/proc/*/fd`. The only
/// table kept in memory: one small entry per socket.
#[derive(Debug, Default)]
pub(super) struct SocketOwners {
    by_inode: HashMap<u64, Owner>,
    problems: Problems,
}

impl SocketOwners {
    pub(super) fn scan(ctx: &Context) -> Result<Self, CollectError> {
        let mut owners = Self::default();
        let mut walk = match ProcessWalk::new(ctx) {
            Ok(walk) => walk,
            Err(e) if is_missing(&e) => return Ok(owners),
            Err(e) => {
                owners.problems.add("socket owners unknown", format!("/proc: {e}"));
                return Ok(owners);
            }
        };
        let proc_root = proc_root(ctx);
        for process in &mut walk {
            ctx.check_cancelled()?;
            owners.add_process(&proc_root, &process);
        }
        owners.problems.merge(&walk.problems);
        Ok(owners)
    }

    fn add_process(&mut self, proc_root: &Path, process: &Process) {
        let pid = process.pid();
        let links = match fd_links(proc_root, pid) {
            Ok(links) => links,
            Err(ReadError::Gone) => return,
            Err(ReadError::Failed(why)) => {
                self.problems.add("processes whose sockets could not be listed", why);
                return;
            }
        };
        let mut name: Option<String> = None;
        let mut unreadable: Option<String> = None;
        for link in links {
            let target = match link.target {
                Ok(target) => target,
                Err(why) => {
                    unreadable.get_or_insert(why);
                    continue;
                }
            };
            let Some(inode) = socket_inode(&target) else {
                continue;
            };
            let name = name.get_or_insert_with(|| process_name(process).unwrap_or_default());
            let owner = self.by_inode.entry(inode).or_insert_with(|| Owner {
                pid,
                process: name.clone(),
                other_pids: Vec::new(),
            });
            if owner.pid != pid && !owner.other_pids.contains(&pid) {
                owner.other_pids.push(pid);
            }
        }
        if let Some(why) = unreadable {
            self.problems.add("processes whose sockets could not be listed", format!("pid {pid}: {why}"));
        }
    }

    /// The `pid`, `process` and `other_pids` columns for a socket.
    fn columns(&self, inode: u64) -> [String; 3] {
        match self.by_inode.get(&inode) {
            Some(owner) => [
                owner.pid.to_string(),
                owner.process.clone(),
                owner.other_pids.iter().map(i32::to_string).collect::<Vec<_>>().join(";"),
            ],
            None => Default::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// TCP, UDP and raw sockets

const CONNECTION_HEADER: [&str; 13] = [
    "protocol",
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "state",
    "listening",
    "uid",
    "user",
    "inode",
    "pid",
    "process",
    "other_pids",
];

/// The socket tables; all share one line format.
const INET_TABLES: [(&str, &str); 6] = [
    ("tcp", "/proc/net/tcp"),
    ("tcp6", "/proc/net/tcp6"),
    ("udp", "/proc/net/udp"),
    ("udp6", "/proc/net/udp6"),
    ("raw", "/proc/net/raw"),
    ("raw6", "/proc/net/raw6"),
];

/// One line of `/proc/net/{tcp,udp,raw}{,6}`.
#[derive(Debug, PartialEq, Eq)]
struct InetSocket {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: u8,
    uid: u32,
    inode: u64,
}

/// `TCP_LISTEN` and `TCP_CLOSE` of the kernel's state numbering, used by all tables.
const TCP_LISTEN: u8 = 0x0A;
const TCP_CLOSE: u8 = 0x07;

impl InetSocket {
    /// A TCP socket in LISTEN, or a UDP socket bound but not connected (how `ss -l`
    /// shows UDP servers).
    fn listening(&self, protocol: &str) -> bool {
        match protocol {
            "tcp" | "tcp6" => self.state == TCP_LISTEN,
            "udp" | "udp6" => self.state == TCP_CLOSE && self.remote.1 == 0 && self.remote.0.is_unspecified(),
            _ => false,
        }
    }

    fn state_name(&self, protocol: &str) -> String {
        let name = match (self.state, protocol.starts_with("tcp")) {
            (0x01, _) => "ESTABLISHED",
            (0x02, true) => "SYN_SENT",
            (0x03, true) => "SYN_RECV",
            (0x04, true) => "FIN_WAIT1",
            (0x05, true) => "FIN_WAIT2",
            (0x06, true) => "TIME_WAIT",
            (TCP_CLOSE, true) => "CLOSE",
            (TCP_CLOSE, false) => "UNCONN",
            (0x08, true) => "CLOSE_WAIT",
            (0x09, true) => "LAST_ACK",
            (TCP_LISTEN, true) => "LISTEN",
            (0x0B, true) => "CLOSING",
            (0x0C, true) => "NEW_SYN_RECV",
            (other, _) => return format!("0x{other:02X}"),
        };
        name.to_owned()
    }
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode …`
fn parse_inet_line(line: &str) -> Option<InetSocket> {
    let mut fields = line.split_ascii_whitespace();
    let _slot = fields.next()?;
    let local = parse_hex_endpoint(fields.next()?)?;
    let remote = parse_hex_endpoint(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let _queues = fields.next()?;
    let _timer = fields.next()?;
    let _retransmits = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let _timeout = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(InetSocket { local, remote, state, uid, inode })
}

/// `0100007F:0016` → 127.0.0.1:22. The kernel prints each 32-bit word of the address
/// as a host-order number, so the bytes of the number in host order are the address in
/// network order (IPv6 is four such words).
pub(super) fn parse_hex_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !addr.is_ascii() {
        return None;
    }
    let word = |i: usize| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

pub(super) fn write_connections(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    owners: &SocketOwners,
    users: &UserNames,
) -> Result<(), PackageError> {
    let source = "/proc/net/{tcp,tcp6,udp,udp6,raw,raw6}, /proc/*/fd";
    csv_file(sink, "connections.csv", source, &CONNECTION_HEADER, |csv| {
        let mut problems = owners.problems.clone();
        let mut tables_read = 0;
        for (protocol, abs) in INET_TABLES {
            let Some(mut lines) = open_table(ctx, abs, &mut problems) else {
                continue;
            };
            tables_read += 1;
            while let Some(line) = lines.next_line()? {
                if ctx.cancel.is_cancelled() {
                    return Ok(ItemOutcome::partial(CANCELLED));
                }
                let Some(line) = line_text(line) else {
                    continue;
                };
                let Some(socket) = parse_inet_line(&line) else {
                    problems.add("unparseable lines skipped", abs);
                    continue;
                };
                csv.row(connection_fields(protocol, &socket, owners, users))?;
            }
        }
        Ok(table_outcome(tables_read, problems, "no socket tables in /proc/net"))
    })
}

fn connection_fields(protocol: &str, socket: &InetSocket, owners: &SocketOwners, users: &UserNames) -> [String; 13] {
    let [pid, process, other_pids] = owners.columns(socket.inode);
    [
        protocol.to_owned(),
        socket.local.0.to_string(),
        socket.local.1.to_string(),
        socket.remote.0.to_string(),
        socket.remote.1.to_string(),
        socket.state_name(protocol),
        socket.listening(protocol).to_string(),
        socket.uid.to_string(),
        users.name(socket.uid).to_owned(),
        socket.inode.to_string(),
        pid,
        process,
        other_pids,
    ]
}

// ---------------------------------------------------------------------------------------
// Unix sockets

const UNIX_HEADER: [&str; 8] = ["inode", "type", "state", "listening", "path", "pid", "process", "other_pids"];

/// `__SO_ACCEPTCON` in the Flags column: the socket is listening.
const SO_ACCEPTCON: u32 = 0x10000;

pub(super) fn write_unix_sockets(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    owners: &SocketOwners,
) -> Result<(), PackageError> {
    let abs = "/proc/net/unix";
    csv_file(sink, "unix_sockets.csv", "/proc/net/unix, /proc/*/fd", &UNIX_HEADER, |csv| {
        let mut problems = owners.problems.clone();
        let Some(mut lines) = open_table(ctx, abs, &mut problems) else {
            return Ok(table_outcome(0, problems, "/proc/net/unix not present"));
        };
        while let Some(line) = lines.next_line()? {
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            if trim_bytes(line).is_empty() {
                continue;
            }
            match unix_fields(line, owners) {
                Some(fields) => csv.row(fields)?,
                None => problems.add("unparseable lines skipped", abs),
            }
        }
        Ok(problems.outcome())
    })
}

/// `Num RefCount Protocol Flags Type St Inode [Path]`; the path is the rest of the line
/// and may contain spaces and bytes that are not UTF-8.
fn unix_fields(line: &[u8], owners: &SocketOwners) -> Option<[String; 8]> {
    let (fields, path) = split_fields(line, 7)?;
    let hex = |i: usize| u32::from_str_radix(ascii_str(fields[i])?, 16).ok();
    let flags = hex(3)?;
    let kind = match hex(4)? {
        1 => "stream".to_owned(),
        2 => "dgram".to_owned(),
        5 => "seqpacket".to_owned(),
        other => format!("0x{other:X}"),
    };
    let state = match hex(5)? {
        0 => "free".to_owned(),
        1 => "unconnected".to_owned(),
        2 => "connecting".to_owned(),
        3 => "connected".to_owned(),
        4 => "disconnecting".to_owned(),
        other => format!("0x{other:X}"),
    };
    let inode: u64 = ascii_str(fields[6])?.parse().ok()?;
    let [pid, process, other_pids] = owners.columns(inode);
    Some([
        inode.to_string(),
        kind,
        state,
        (flags & SO_ACCEPTCON != 0).to_string(),
        String::from_utf8_lossy(trim_bytes(path)).into_owned(),
        pid,
        process,
        other_pids,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::network::Network;
    use crate::collectors::test_support::{FakeProcess, Fixture, PASSWD_FIXTURE, find_row, run, run_live};
    use casefile_package::ItemStatus;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0500000A:0016 0900000A:C350 01 00000000:00000000 02:000A7214 00000000     0        0 3333 4 0000000000000000 20 4 29 10 -1
   2: garbage line
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0000000000000000 20 4 30 10 -1
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5555 2 0000000000000000 0
";

    fn fixture() -> Fixture {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/proc/net/tcp", TCP);
        f.write("/proc/net/tcp6", TCP6);
        f.write("/proc/net/udp", UDP);
        f.process(&FakeProcess::new(100, "sshd"));
        f.fd(100, 3, "socket:[1111]");
        f.fd(100, 4, "socket:[2222]");
        f.fd(100, 5, "/dev/null");
        f.process(&FakeProcess::new(101, "sshd"));
        f.fd(101, 3, "socket:[1111]");
        f.fd(101, 4, "socket:[3333]");
        f
    }

    #[test]
    fn listening_socket_maps_to_its_owning_process() {
        let f = fixture();
        f.write("/proc/101/fd/9", "not a link");
        let sink = run(&Network, f.root());
        let item = sink.item("connections.csv");
        let rows = item.rows();
        let ssh = find_row(&rows, "inode", "1111");
        assert_eq!(ssh["protocol"], "tcp");
        assert_eq!(ssh["local_address"], "0.0.0.0");
        assert_eq!(ssh["local_port"], "22");
        assert_eq!(ssh["state"], "LISTEN");
        assert_eq!(ssh["listening"], "true");
        assert_eq!(ssh["pid"], "100");
        assert_eq!(ssh["process"], "sshd");
        assert_eq!(ssh["other_pids"], "101");
        assert_eq!(ssh["user"], "root");

        let established = find_row(&rows, "inode", "3333");
        assert_eq!(established["local_address"], "10.0.0.5");
        assert_eq!(established["remote_address"], "10.0.0.9");
        assert_eq!(established["remote_port"], "50000");
        assert_eq!(established["state"], "ESTABLISHED");
        assert_eq!(established["listening"], "false");
        assert_eq!(established["pid"], "101");

        let ssh6 = find_row(&rows, "inode", "2222");
        assert_eq!((ssh6["protocol"].as_str(), ssh6["local_address"].as_str()), ("tcp6", "::"));
        assert_eq!(ssh6["pid"], "100");
        let mapped = find_row(&rows, "inode", "4444");
        assert_eq!(mapped["local_address"], "::ffff:127.0.0.1");
        assert_eq!(mapped["local_port"], "8080");
        assert_eq!(mapped["remote_address"], "::1");
        assert_eq!(mapped["user"], "alice");
        assert_eq!(mapped["pid"], "");

        let dhcp = find_row(&rows, "inode", "5555");
        assert_eq!((dhcp["protocol"].as_str(), dhcp["state"].as_str()), ("udp", "UNCONN"));
        assert_eq!(dhcp["listening"], "true");

        // An fd link that cannot be read leaves owners possibly unknown: noted.
        assert!(item.outcome.error.as_ref().unwrap().contains("processes whose sockets could not be listed: 1"));
        // The garbage line is skipped and noted; missing tables (raw) are not problems.
        assert_eq!(rows.len(), 5);
        assert_eq!(item.status(), ItemStatus::Partial);
        assert!(item.outcome.error.as_ref().unwrap().contains("unparseable lines skipped: 1"));
    }

    #[test]
    fn unix_socket_paths_keep_spaces_and_odd_bytes() {
        let f = fixture();
        f.write(
            "/proc/net/unix",
            b"Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000062b9fda3: 00000002 00000000 00010000 0001 01 6666 /run/my app/\xffsock\n\
000000001: 00000003 00000000 00000000 0002 03 7777\n\
000000002: 00000003 00000000 00000000 0001 03 8888 @abstract\n"
                .as_slice(),
        );
        f.fd(100, 6, "socket:[6666]");
        let sink = run(&Network, f.root());
        let item = sink.item("unix_sockets.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        let listener = find_row(&rows, "inode", "6666");
        assert_eq!(listener["path"], "/run/my app/\u{fffd}sock");
        assert_eq!(listener["type"], "stream");
        assert_eq!(listener["state"], "unconnected");
        assert_eq!(listener["listening"], "true");
        assert_eq!(listener["pid"], "100");
        let unnamed = find_row(&rows, "inode", "7777");
        assert_eq!((unnamed["type"].as_str(), unnamed["path"].as_str()), ("dgram", ""));
        assert_eq!(find_row(&rows, "inode", "8888")["path"], "@abstract");
    }

    #[test]
    fn hex_endpoints_decode_and_hostile_ones_are_rejected() {
        let v4 = parse_hex_endpoint("0100007F:0050").unwrap();
        assert_eq!(v4, (IpAddr::V4(Ipv4Addr::LOCALHOST), 80));
        assert!(parse_hex_endpoint("0100007F").is_none());
        assert!(parse_hex_endpoint("01007F:0050").is_none());
        assert!(parse_hex_endpoint("zzzzzzzz:0050").is_none());
        // Multi-byte characters must not split a slice mid-character.
        assert!(parse_hex_endpoint("ééééééééééééééééé:0050").is_none());
        assert!(parse_hex_endpoint("0100007F:FFFFF").is_none());
    }

    #[test]
    fn live_host_sees_a_socket_this_test_listens_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let sink = run_live(&Network);
        let item = sink.item("connections.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
        let rows = item.rows();
        let mine = rows
            .iter()
            .find(|r| r["local_port"] == port && r["protocol"] == "tcp")
            .unwrap_or_else(|| panic!("port {port} not in connections.csv"));
        assert_eq!(mine["local_address"], "127.0.0.1");
        assert_eq!(mine["listening"], "true");
        assert_eq!(mine["pid"], std::process::id().to_string());
        for name in ["interfaces.csv", "routes.csv", "unix_sockets.csv", "ip_addresses.csv"] {
            assert_ne!(sink.item(name).status(), ItemStatus::Failed, "{name}");
        }
        drop(listener);
    }
}
