//! `Network connections/`: sockets with their owning processes, ARP cache, interfaces
//! and addresses, routes, resolver and hosts files, proxy settings and firewall rules.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use procfs::process::Process;

use crate::{CollectError, Collector, Context};

use super::accounts::UserNames;
use super::common::{
    CANCELLED, Csv, Lines, Problems, ascii_str, copy_file, csv_file, is_missing, open_lines,
    read_value, split_fields, trim_bytes,
};
use super::procs::{ProcessWalk, ReadError, fd_links, proc_root, process_name, socket_inode};

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
            ("hosts", "/etc/hosts"),
            ("environment", "/etc/environment"),
        ] {
            copy_file(sink, name, &ctx.path(abs), abs)?;
        }
        write_proxy_settings(ctx, sink)?;
        copy_firewall_rules(ctx, sink)?;
        ctx.check_cancelled()
    }
}

// ---------------------------------------------------------------------------------------
// Socket owners

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
struct SocketOwners {
    by_inode: HashMap<u64, Owner>,
    problems: Problems,
}

impl SocketOwners {
    fn scan(ctx: &Context) -> Result<Self, CollectError> {
        let mut owners = Self::default();
        let mut walk = match ProcessWalk::new(ctx) {
            Ok(walk) => walk,
            Err(e) if is_missing(&e) => return Ok(owners),
            Err(e) => {
                owners
                    .problems
                    .add("socket owners unknown", format!("/proc: {e}"));
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
                self.problems
                    .add("processes whose sockets could not be listed", why);
                return;
            }
        };
        let mut name: Option<String> = None;
        for link in links {
            let Some(inode) = socket_inode(&link.target) else {
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
    }

    /// The `pid`, `process` and `other_pids` columns for a socket.
    fn columns(&self, inode: u64) -> [String; 3] {
        match self.by_inode.get(&inode) {
            Some(owner) => [
                owner.pid.to_string(),
                owner.process.clone(),
                owner
                    .other_pids
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(";"),
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
            "udp" | "udp6" => {
                self.state == TCP_CLOSE && self.remote.1 == 0 && self.remote.0.is_unspecified()
            }
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
    Some(InetSocket {
        local,
        remote,
        state,
        uid,
        inode,
    })
}

/// `0100007F:0016` → 127.0.0.1:22. The kernel prints each 32-bit word of the address
/// as a host-order number, so the bytes of the number in host order are the address in
/// network order (IPv6 is four such words).
fn parse_hex_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !addr.is_ascii() {
        return None;
    }
    let word = |i: usize| {
        u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
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

fn write_connections(
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
                let Some(line) = non_empty_text(line) else {
                    continue;
                };
                let Some(socket) = parse_inet_line(line) else {
                    problems.add("unparseable lines skipped", abs);
                    continue;
                };
                csv.row(connection_fields(protocol, &socket, owners, users))?;
            }
        }
        Ok(table_outcome(
            tables_read,
            problems,
            "no socket tables in /proc/net",
        ))
    })
}

fn connection_fields(
    protocol: &str,
    socket: &InetSocket,
    owners: &SocketOwners,
    users: &UserNames,
) -> [String; 13] {
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

/// Opens a `/proc/net` table and skips its header line. A missing table (IPv6 disabled)
/// is skipped silently; an unreadable one is a problem.
fn open_table(
    ctx: &Context,
    abs: &str,
    problems: &mut Problems,
) -> Option<Lines<io::BufReader<std::fs::File>>> {
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

/// A line as text, `None` for blank lines or lines that are not UTF-8.
fn non_empty_text(line: &[u8]) -> Option<&str> {
    ascii_str(trim_bytes(line)).filter(|l| !l.is_empty())
}

/// `not-applicable` when none of the tables exists, otherwise what the problems say.
fn table_outcome(tables_read: usize, problems: Problems, none_why: &str) -> ItemOutcome {
    if tables_read == 0 && problems.is_empty() {
        ItemOutcome::not_applicable(none_why)
    } else if tables_read == 0 {
        ItemOutcome::failed(problems.outcome().error.unwrap_or_default())
    } else {
        problems.outcome()
    }
}

// ---------------------------------------------------------------------------------------
// Unix sockets

const UNIX_HEADER: [&str; 8] = [
    "inode",
    "type",
    "state",
    "listening",
    "path",
    "pid",
    "process",
    "other_pids",
];

/// `__SO_ACCEPTCON` in the Flags column: the socket is listening.
const SO_ACCEPTCON: u32 = 0x10000;

fn write_unix_sockets(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    owners: &SocketOwners,
) -> Result<(), PackageError> {
    let abs = "/proc/net/unix";
    csv_file(
        sink,
        "unix_sockets.csv",
        "/proc/net/unix, /proc/*/fd",
        &UNIX_HEADER,
        |csv| {
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
        },
    )
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

// ---------------------------------------------------------------------------------------
// ARP

const ARP_HEADER: [&str; 6] = [
    "ip_address",
    "hw_type",
    "flags",
    "mac_address",
    "mask",
    "device",
];

fn write_arp(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let abs = "/proc/net/arp";
    csv_file(sink, "arp.csv", abs, &ARP_HEADER, |csv| {
        let mut problems = Problems::default();
        let Some(mut lines) = open_table(ctx, abs, &mut problems) else {
            return Ok(table_outcome(0, problems, "/proc/net/arp not present"));
        };
        while let Some(line) = lines.next_line()? {
            if trim_bytes(line).is_empty() {
                continue;
            }
            match split_fields(line, 6) {
                Some((fields, _)) => csv.row(fields)?,
                None => problems.add("unparseable lines skipped", abs),
            }
        }
        Ok(problems.outcome())
    })
}

// ---------------------------------------------------------------------------------------
// Routes

const ROUTE_HEADER: [&str; 7] = [
    "family",
    "interface",
    "destination",
    "prefix_length",
    "gateway",
    "metric",
    "flags",
];

/// One IPv4 route of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ipv4Route {
    interface: String,
    destination: Ipv4Addr,
    gateway: Ipv4Addr,
    flags: u32,
    metric: u32,
    mask: Ipv4Addr,
}

/// `RTF_GATEWAY`: the route goes through a gateway rather than a directly attached net.
const RTF_GATEWAY: u32 = 0x2;

impl Ipv4Route {
    fn prefix_length(&self) -> u32 {
        u32::from(self.mask).count_ones()
    }

    fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.mask) == u32::from(self.destination)
    }
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`, addresses
/// in the same host-order hex as the socket tables.
fn parse_ipv4_route(line: &str) -> Option<Ipv4Route> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let addr = |s: &str| match parse_hex_endpoint(&format!("{s}:0"))?.0 {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    };
    Some(Ipv4Route {
        interface: fields[0].to_owned(),
        destination: addr(fields[1])?,
        gateway: addr(fields[2])?,
        flags: u32::from_str_radix(fields[3], 16).ok()?,
        metric: fields[6].parse().ok()?,
        mask: addr(fields[7])?,
    })
}

/// `dest dest_len src src_len next_hop metric refcnt use flags iface`; IPv6 addresses
/// here are plain network-order hex.
fn parse_ipv6_route(line: &str) -> Option<[String; 7]> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 10 {
        return None;
    }
    Some([
        "ipv6".to_owned(),
        fields[9].to_owned(),
        parse_ipv6_hex(fields[0])?.to_string(),
        u8::from_str_radix(fields[1], 16).ok()?.to_string(),
        parse_ipv6_hex(fields[4])?.to_string(),
        u32::from_str_radix(fields[5], 16).ok()?.to_string(),
        route_flags(u32::from_str_radix(fields[8], 16).ok()?),
    ])
}

fn parse_ipv6_hex(hex: &str) -> Option<Ipv6Addr> {
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(hex, &mut bytes).ok()?;
    Some(Ipv6Addr::from(bytes))
}

/// The flag letters `route -n` shows: U up, G gateway, H host, D dynamic, M modified,
/// ! reject.
fn route_flags(flags: u32) -> String {
    [
        (0x1, 'U'),
        (RTF_GATEWAY, 'G'),
        (0x4, 'H'),
        (0x10, 'D'),
        (0x20, 'M'),
        (0x200, '!'),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, letter)| *letter)
    .collect()
}

fn write_routes(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/proc/net/route, /proc/net/ipv6_route";
    csv_file(sink, "routes.csv", source, &ROUTE_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut tables_read = 0;
        if let Some(mut lines) = open_table(ctx, "/proc/net/route", &mut problems) {
            tables_read += 1;
            while let Some(line) = lines.next_line()? {
                let Some(line) = non_empty_text(line) else {
                    continue;
                };
                match parse_ipv4_route(line) {
                    Some(route) => csv.row([
                        "ipv4".to_owned(),
                        route.interface.clone(),
                        route.destination.to_string(),
                        route.prefix_length().to_string(),
                        route.gateway.to_string(),
                        route.metric.to_string(),
                        route_flags(route.flags),
                    ])?,
                    None => problems.add("unparseable lines skipped", "/proc/net/route"),
                }
            }
        }
        // ipv6_route has no header line.
        match open_lines(&ctx.path("/proc/net/ipv6_route")) {
            Ok(mut lines) => {
                tables_read += 1;
                while let Some(line) = lines.next_line()? {
                    let Some(line) = non_empty_text(line) else {
                        continue;
                    };
                    match parse_ipv6_route(line) {
                        Some(fields) => csv.row(fields)?,
                        None => problems.add("unparseable lines skipped", "/proc/net/ipv6_route"),
                    }
                }
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => problems.add("unreadable tables", format!("/proc/net/ipv6_route: {e}")),
        }
        Ok(table_outcome(
            tables_read,
            problems,
            "no routing tables in /proc/net",
        ))
    })
}

// ---------------------------------------------------------------------------------------
// Interfaces and addresses

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IpAddressRow {
    /// Empty when the interface could not be worked out.
    interface: String,
    address: IpAddr,
    prefix_length: Option<u8>,
    scope: String,
}

/// The host's IP addresses. IPv6 comes with its interface from `if_inet6`. IPv4 has no
/// such file: local addresses are the `/32 host LOCAL` entries of `fib_trie`, and each
/// is given the interface of the longest directly attached route that contains it.
#[derive(Debug, Default)]
struct IpAddresses {
    rows: Vec<IpAddressRow>,
    problems: Problems,
}

impl IpAddresses {
    fn load(ctx: &Context) -> Self {
        let mut addresses = Self::default();
        addresses.load_ipv4(ctx);
        addresses.load_ipv6(ctx);
        addresses
    }

    fn load_ipv4(&mut self, ctx: &Context) {
        let routes = self.read_lines(ctx, "/proc/net/route", |lines| {
            let mut routes = Vec::new();
            lines.next_line()?; // header
            while let Some(line) = lines.next_line()? {
                if let Some(route) = non_empty_text(line).and_then(parse_ipv4_route) {
                    if route.flags & RTF_GATEWAY == 0 && route.prefix_length() > 0 {
                        routes.push(route);
                    }
                }
            }
            Ok(routes)
        });
        let locals = self.read_lines(ctx, "/proc/net/fib_trie", local_ipv4_addresses);
        for address in locals.unwrap_or_default() {
            let (interface, prefix_length) =
                ipv4_interface(address, routes.as_deref().unwrap_or_default());
            self.rows.push(IpAddressRow {
                interface,
                address: IpAddr::V4(address),
                prefix_length,
                scope: if address.is_loopback() { "host" } else { "" }.to_owned(),
            });
        }
    }

    fn load_ipv6(&mut self, ctx: &Context) {
        let rows = self.read_lines(ctx, "/proc/net/if_inet6", |lines| {
            let mut rows = Vec::new();
            while let Some(line) = lines.next_line()? {
                if let Some(row) = non_empty_text(line).and_then(parse_if_inet6) {
                    rows.push(row);
                }
            }
            Ok(rows)
        });
        self.rows.extend(rows.unwrap_or_default());
    }

    /// Runs `read` over a `/proc/net` file; a missing file gives `None` silently.
    fn read_lines<T>(
        &mut self,
        ctx: &Context,
        abs: &str,
        read: impl FnOnce(&mut Lines<io::BufReader<std::fs::File>>) -> io::Result<T>,
    ) -> Option<T> {
        let result = open_lines(&ctx.path(abs)).and_then(|mut lines| read(&mut lines));
        match result {
            Ok(value) => Some(value),
            Err(e) if is_missing(&e) => None,
            Err(e) => {
                self.problems
                    .add("unreadable tables", format!("{abs}: {e}"));
                None
            }
        }
    }

    /// `addr/prefix` of an interface's addresses of one family, `;`-separated.
    fn joined(&self, interface: &str, v4: bool) -> String {
        self.rows
            .iter()
            .filter(|r| r.interface == interface && r.address.is_ipv4() == v4)
            .map(|r| match r.prefix_length {
                Some(len) => format!("{}/{len}", r.address),
                None => r.address.to_string(),
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The addresses under `/32 host LOCAL` leaves of `/proc/net/fib_trie`. The trie lists
/// each leaf as `|-- a.b.c.d` followed by lines describing it.
fn local_ipv4_addresses(lines: &mut Lines<impl io::BufRead>) -> io::Result<BTreeSet<Ipv4Addr>> {
    let mut found = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    while let Some(line) = lines.next_line()? {
        let Some(line) = non_empty_text(line) else {
            continue;
        };
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            found.extend(leaf);
        }
    }
    Ok(found)
}

/// The interface and prefix length of a local IPv4 address.
fn ipv4_interface(address: Ipv4Addr, connected: &[Ipv4Route]) -> (String, Option<u8>) {
    if address.is_loopback() {
        return ("lo".to_owned(), Some(8));
    }
    connected
        .iter()
        .filter(|route| route.contains(address))
        .max_by_key(|route| route.prefix_length())
        .map_or((String::new(), None), |route| {
            (route.interface.clone(), Some(route.prefix_length() as u8))
        })
}

/// `address ifindex prefix_len scope flags name` (hex numbers).
fn parse_if_inet6(line: &str) -> Option<IpAddressRow> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 6 {
        return None;
    }
    let scope = match u8::from_str_radix(fields[3], 16).ok()? {
        0x00 => "global".to_owned(),
        0x10 => "host".to_owned(),
        0x20 => "link".to_owned(),
        0x40 => "site".to_owned(),
        other => format!("0x{other:02x}"),
    };
    Some(IpAddressRow {
        interface: fields[5].to_owned(),
        address: IpAddr::V6(parse_ipv6_hex(fields[0])?),
        prefix_length: Some(u8::from_str_radix(fields[2], 16).ok()?),
        scope,
    })
}

const IP_ADDRESS_HEADER: [&str; 5] = ["interface", "family", "address", "prefix_length", "scope"];

fn write_ip_addresses(
    sink: &mut dyn ItemSink,
    addresses: &IpAddresses,
) -> Result<(), PackageError> {
    let source = "/proc/net/fib_trie, /proc/net/route, /proc/net/if_inet6";
    csv_file(
        sink,
        "ip_addresses.csv",
        source,
        &IP_ADDRESS_HEADER,
        |csv| {
            for row in &addresses.rows {
                csv.row([
                    row.interface.clone(),
                    if row.address.is_ipv4() {
                        "ipv4"
                    } else {
                        "ipv6"
                    }
                    .to_owned(),
                    row.address.to_string(),
                    row.prefix_length.map(|p| p.to_string()).unwrap_or_default(),
                    row.scope.clone(),
                ])?;
            }
            Ok(addresses.problems.outcome())
        },
    )
}

const INTERFACE_HEADER: [&str; 14] = [
    "name",
    "mac_address",
    "operstate",
    "mtu",
    "ipv4_addresses",
    "ipv6_addresses",
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
];

fn write_interfaces(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    addresses: &IpAddresses,
) -> Result<(), PackageError> {
    let abs = "/proc/net/dev";
    let source = "/proc/net/dev, /sys/class/net/*/{address,operstate,mtu}, ip_addresses.csv";
    csv_file(sink, "interfaces.csv", source, &INTERFACE_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut lines = match open_lines(&ctx.path(abs)) {
            Ok(lines) => lines,
            Err(e) if is_missing(&e) => {
                return Ok(ItemOutcome::not_applicable("/proc/net/dev not present"));
            }
            Err(e) => return Ok(ItemOutcome::failed(format!("{abs}: {e}"))),
        };
        while let Some(line) = lines.next_line()? {
            // The two header lines have no colon; every interface line does.
            let Some(line) = non_empty_text(line).filter(|l| l.contains(':')) else {
                continue;
            };
            match interface_fields(ctx, line, addresses) {
                Some(fields) => csv.row(fields)?,
                None => problems.add("unparseable lines skipped", abs),
            }
        }
        Ok(problems.outcome())
    })
}

/// `name: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed multicast tx_bytes
/// tx_packets tx_errs tx_drop …` plus the interface's sysfs attributes and addresses.
fn interface_fields(ctx: &Context, line: &str, addresses: &IpAddresses) -> Option<[String; 14]> {
    let (name, counters) = line.split_once(':')?;
    let name = name.trim();
    let counters: Vec<&str> = counters.split_ascii_whitespace().collect();
    if counters.len() < 12 || counters.iter().any(|c| c.parse::<u64>().is_err()) {
        return None;
    }
    let attribute = |attr: &str| {
        // A name from the file must not walk out of /sys/class/net.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return String::new();
        }
        read_value(&ctx.path("/sys/class/net").join(name).join(attr)).unwrap_or_default()
    };
    Some([
        name.to_owned(),
        attribute("address"),
        attribute("operstate"),
        attribute("mtu"),
        addresses.joined(name, true),
        addresses.joined(name, false),
        counters[0].to_owned(),
        counters[1].to_owned(),
        counters[2].to_owned(),
        counters[3].to_owned(),
        counters[8].to_owned(),
        counters[9].to_owned(),
        counters[10].to_owned(),
        counters[11].to_owned(),
    ])
}

// ---------------------------------------------------------------------------------------
// Proxy settings

const PROXY_HEADER: [&str; 3] = ["source", "setting", "value"];

/// Files that set proxies: environment files (`http_proxy=…`), apt
/// (`Acquire::http::Proxy "…";`) and dnf/yum (`proxy=…`).
const PROXY_FILES: [&str; 4] = [
    "/etc/environment",
    "/etc/apt/apt.conf",
    "/etc/dnf/dnf.conf",
    "/etc/yum.conf",
];
const PROXY_DIRS: [&str; 2] = ["/etc/profile.d", "/etc/apt/apt.conf.d"];

fn write_proxy_settings(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/etc/environment, /etc/profile.d/*, /etc/apt/apt.conf{,.d/*}, /etc/dnf/dnf.conf, /etc/yum.conf";
    csv_file(sink, "proxy.csv", source, &PROXY_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut files: Vec<String> = PROXY_FILES.iter().map(|f| f.to_string()).collect();
        for dir in PROXY_DIRS {
            files.extend(dir_files(ctx, dir, &mut problems));
        }
        let mut files_read = 0;
        for abs in files {
            match scan_proxy_file(&ctx.path(&abs), &abs, csv) {
                Ok(()) => files_read += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => problems.add("unreadable files", format!("{abs}: {e}")),
            }
        }
        Ok(table_outcome(
            files_read,
            problems,
            "no proxy configuration files present",
        ))
    })
}

/// The regular files of a directory, as absolute host paths, sorted by name.
fn dir_files(ctx: &Context, dir: &str, problems: &mut Problems) -> Vec<String> {
    let entries = match std::fs::read_dir(ctx.path(dir)) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Vec::new(),
        Err(e) => {
            problems.add("unreadable directories", format!("{dir}: {e}"));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("{dir}/{n}")).collect()
}

fn scan_proxy_file(path: &Path, abs: &str, csv: &mut Csv<'_>) -> io::Result<()> {
    let mut lines = open_lines(path)?;
    while let Some(line) = lines.next_line()? {
        if let Some((setting, value)) = proxy_setting(&String::from_utf8_lossy(line)) {
            csv.row([abs, setting.as_str(), value.as_str()])?;
        }
    }
    Ok(())
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
        return key
            .to_ascii_lowercase()
            .contains("proxy")
            .then(|| (key.to_owned(), unquote(value).to_owned()));
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
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

// ---------------------------------------------------------------------------------------
// Firewall rules

/// Saved firewall rule sets, by host path and name in the package. The live kernel rule
/// set needs netlink (`nft list ruleset`) and is not read.
const FIREWALL_FILES: [(&str, &str); 9] = [
    ("/etc/nftables.conf", "firewall/nftables.conf"),
    (
        "/etc/sysconfig/nftables.conf",
        "firewall/sysconfig-nftables.conf",
    ),
    ("/etc/iptables/rules.v4", "firewall/iptables-rules.v4"),
    ("/etc/iptables/rules.v6", "firewall/iptables-rules.v6"),
    ("/etc/sysconfig/iptables", "firewall/sysconfig-iptables"),
    ("/etc/sysconfig/ip6tables", "firewall/sysconfig-ip6tables"),
    ("/etc/ufw/user.rules", "firewall/ufw-user.rules"),
    ("/etc/ufw/user6.rules", "firewall/ufw-user6.rules"),
    ("/etc/firewalld/firewalld.conf", "firewall/firewalld.conf"),
];

/// Copies the rule files that exist; when none does, one `not-applicable` item says so.
fn copy_firewall_rules(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let mut copied = 0;
    for (abs, name) in FIREWALL_FILES {
        let path = ctx.path(abs);
        if path.symlink_metadata().is_ok() {
            copy_file(sink, name, &path, abs)?;
            copied += 1;
        }
    }
    if copied == 0 {
        let checked: Vec<&str> = FIREWALL_FILES.iter().map(|(abs, _)| *abs).collect();
        sink.file("firewall", &checked.join(", "), |_| {
            Ok(ItemOutcome::not_applicable("no saved firewall rules found"))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::{FakeProcess, Fixture, PASSWD_FIXTURE, run, run_live};
    use casefile_package::ItemStatus;
    use std::collections::HashMap;

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

    fn find<'a>(
        rows: &'a [HashMap<String, String>],
        column: &str,
        value: &str,
    ) -> &'a HashMap<String, String> {
        rows.iter()
            .find(|r| r[column] == value)
            .unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:?}"))
    }

    #[test]
    fn listening_socket_maps_to_its_owning_process() {
        let f = fixture();
        let sink = run(&Network, f.root());
        let item = sink.item("connections.csv");
        let rows = item.rows();
        let ssh = find(&rows, "inode", "1111");
        assert_eq!(ssh["protocol"], "tcp");
        assert_eq!(ssh["local_address"], "0.0.0.0");
        assert_eq!(ssh["local_port"], "22");
        assert_eq!(ssh["state"], "LISTEN");
        assert_eq!(ssh["listening"], "true");
        assert_eq!(ssh["pid"], "100");
        assert_eq!(ssh["process"], "sshd");
        assert_eq!(ssh["other_pids"], "101");
        assert_eq!(ssh["user"], "root");

        let established = find(&rows, "inode", "3333");
        assert_eq!(established["local_address"], "10.0.0.5");
        assert_eq!(established["remote_address"], "10.0.0.9");
        assert_eq!(established["remote_port"], "50000");
        assert_eq!(established["state"], "ESTABLISHED");
        assert_eq!(established["listening"], "false");
        assert_eq!(established["pid"], "101");

        let ssh6 = find(&rows, "inode", "2222");
        assert_eq!(
            (ssh6["protocol"].as_str(), ssh6["local_address"].as_str()),
            ("tcp6", "::")
        );
        assert_eq!(ssh6["pid"], "100");
        let mapped = find(&rows, "inode", "4444");
        assert_eq!(mapped["local_address"], "::ffff:127.0.0.1");
        assert_eq!(mapped["local_port"], "8080");
        assert_eq!(mapped["remote_address"], "::1");
        assert_eq!(mapped["user"], "alice");
        assert_eq!(mapped["pid"], "");

        let dhcp = find(&rows, "inode", "5555");
        assert_eq!(
            (dhcp["protocol"].as_str(), dhcp["state"].as_str()),
            ("udp", "UNCONN")
        );
        assert_eq!(dhcp["listening"], "true");

        // The garbage line is skipped and noted; missing tables (raw) are not problems.
        assert_eq!(rows.len(), 5);
        assert_eq!(item.status(), ItemStatus::Partial);
        assert!(
            item.outcome
                .error
                .as_ref()
                .unwrap()
                .contains("unparseable lines skipped: 1")
        );
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
        let listener = find(&rows, "inode", "6666");
        assert_eq!(listener["path"], "/run/my app/\u{fffd}sock");
        assert_eq!(listener["type"], "stream");
        assert_eq!(listener["state"], "unconnected");
        assert_eq!(listener["listening"], "true");
        assert_eq!(listener["pid"], "100");
        let unnamed = find(&rows, "inode", "7777");
        assert_eq!(
            (unnamed["type"].as_str(), unnamed["path"].as_str()),
            ("dgram", "")
        );
        assert_eq!(find(&rows, "inode", "8888")["path"], "@abstract");
    }

    #[test]
    fn arp_routes_interfaces_and_addresses() {
        let f = Fixture::new();
        f.write(
            "/proc/net/arp",
            "IP address       HW type     Flags       HW address            Mask     Device\n\
192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0\n",
        );
        f.write(
            "/proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        f.write(
            "/proc/net/ipv6_route",
            "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n",
        );
        f.write(
            "/proc/net/fib_trie",
            "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n\
           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n\
     +-- 192.0.2.0/24 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n\
           |-- 192.0.2.2\n              /32 host LOCAL\n        |-- 192.0.2.255\n           /32 link BROADCAST\n\
Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n           |-- 198.51.100.7\n              /32 host LOCAL\n",
        );
        f.write(
            "/proc/net/if_inet6",
            "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n",
        );
        f.write(
            "/proc/net/dev",
            "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 5000000   4000    1    2    0     0          0         0   300000    2000    3    4    0     0       0          0\n",
        );
        f.write("/sys/class/net/eth0/address", "02:fc:00:00:00:01\n");
        f.write("/sys/class/net/eth0/operstate", "up\n");
        f.write("/sys/class/net/eth0/mtu", "1500\n");
        let sink = run(&Network, f.root());

        let arp = sink.item("arp.csv").rows();
        assert_eq!(arp[0]["ip_address"], "192.0.2.1");
        assert_eq!(arp[0]["mac_address"], "02:fc:00:00:00:05");
        assert_eq!(arp[0]["device"], "eth0");

        let routes = sink.item("routes.csv").rows();
        let default = find(&routes, "prefix_length", "0");
        assert_eq!(default["gateway"], "192.0.2.1");
        assert_eq!(default["destination"], "0.0.0.0");
        assert_eq!(default["flags"], "UG");
        assert_eq!(default["metric"], "100");
        let lan = find(&routes, "prefix_length", "24");
        assert_eq!(lan["destination"], "192.0.2.0");
        let v6 = find(&routes, "family", "ipv6");
        assert_eq!(
            (v6["destination"].as_str(), v6["prefix_length"].as_str()),
            ("fe80::", "64")
        );
        assert_eq!(v6["metric"], "256");

        let addresses = sink.item("ip_addresses.csv").rows();
        assert_eq!(
            find(&addresses, "address", "192.0.2.2")["interface"],
            "eth0"
        );
        assert_eq!(
            find(&addresses, "address", "192.0.2.2")["prefix_length"],
            "24"
        );
        assert_eq!(find(&addresses, "address", "127.0.0.1")["interface"], "lo");
        assert_eq!(find(&addresses, "address", "198.51.100.7")["interface"], "");
        assert_eq!(
            find(&addresses, "address", "fe80::fc:ff:fe00:1")["scope"],
            "link"
        );
        assert_eq!(addresses.len(), 5, "{addresses:?}");

        let interfaces = sink.item("interfaces.csv").rows();
        let eth0 = find(&interfaces, "name", "eth0");
        assert_eq!(eth0["mac_address"], "02:fc:00:00:00:01");
        assert_eq!(eth0["operstate"], "up");
        assert_eq!(eth0["mtu"], "1500");
        assert_eq!(eth0["ipv4_addresses"], "192.0.2.2/24");
        assert_eq!(eth0["ipv6_addresses"], "fe80::fc:ff:fe00:1/64");
        assert_eq!(
            (eth0["rx_bytes"].as_str(), eth0["tx_dropped"].as_str()),
            ("5000000", "4")
        );
        assert_eq!(find(&interfaces, "name", "lo")["ipv6_addresses"], "::1/128");
        assert_eq!(interfaces.len(), 2);
    }

    #[test]
    fn config_files_are_copied_and_missing_ones_not_applicable() {
        let f = Fixture::new();
        f.write("/etc/resolv.conf", "nameserver 192.0.2.53\n");
        f.write("/etc/nftables.conf", "table inet filter {}\n");
        let sink = run(&Network, f.root());
        assert_eq!(sink.item("resolv.conf").text(), "nameserver 192.0.2.53\n");
        assert_eq!(sink.item("resolv.conf").source, "/etc/resolv.conf");
        assert_eq!(sink.item("hosts").status(), ItemStatus::NotApplicable);
        assert_eq!(
            sink.item("firewall/nftables.conf").text(),
            "table inet filter {}\n"
        );
        assert!(!sink.names().contains(&"firewall"));
        // No /proc at all: socket tables are not applicable, not failed.
        assert_eq!(
            sink.item("connections.csv").status(),
            ItemStatus::NotApplicable
        );
        assert_eq!(
            sink.item("interfaces.csv").status(),
            ItemStatus::NotApplicable
        );

        let bare = Fixture::new();
        let sink = run(&Network, bare.root());
        assert_eq!(sink.item("firewall").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("proxy.csv").status(), ItemStatus::NotApplicable);
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
        f.write(
            "/etc/apt/apt.conf.d/95proxy",
            "Acquire::http::Proxy \"http://apt-proxy:3142\";\n",
        );
        let sink = run(&Network, f.root());
        let item = sink.item("proxy.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        let settings: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r["source"].as_str(),
                    r["setting"].as_str(),
                    r["value"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            settings,
            [
                (
                    "/etc/environment",
                    "http_proxy",
                    "http://proxy.example:3128"
                ),
                (
                    "/etc/profile.d/proxy.sh",
                    "HTTPS_PROXY",
                    "http://user:pw@proxy.example:3128"
                ),
                ("/etc/profile.d/proxy.sh", "no_proxy", "localhost"),
                (
                    "/etc/apt/apt.conf.d/95proxy",
                    "Acquire::http::Proxy",
                    "http://apt-proxy:3142"
                ),
            ]
        );
        assert_eq!(sink.item("environment").status(), ItemStatus::Ok);
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
        for name in [
            "interfaces.csv",
            "routes.csv",
            "unix_sockets.csv",
            "ip_addresses.csv",
        ] {
            assert_ne!(sink.item(name).status(), ItemStatus::Failed, "{name}");
        }
        drop(listener);
    }
}
