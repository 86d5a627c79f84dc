//! The ARP cache (`arp.csv`), routing tables (`routes.csv`), addresses
//! (`ip_addresses.csv`) and interfaces with their counters (`interfaces.csv`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use casefile_package::{ItemSink, PackageError};

use crate::Context;

use super::sockets::parse_hex_endpoint;
use super::{line_text, open_table, table_outcome};
use crate::collectors::common::{
    Lines, Problems, csv_file, is_missing, open_lines, read_value, split_fields, trim_bytes, unavailable,
};

const ARP_HEADER: [&str; 6] = ["ip_address", "hw_type", "flags", "mac_address", "mask", "device"];

pub(super) fn write_arp(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
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

const ROUTE_HEADER: [&str; 7] = ["family", "interface", "destination", "prefix_length", "gateway", "metric", "flags"];

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
    [(0x1, 'U'), (RTF_GATEWAY, 'G'), (0x4, 'H'), (0x10, 'D'), (0x20, 'M'), (0x200, '!')]
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, letter)| *letter)
        .collect()
}

pub(super) fn write_routes(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let source = "/proc/net/route, /proc/net/ipv6_route";
    csv_file(sink, "routes.csv", source, &ROUTE_HEADER, |csv| {
        let mut problems = Problems::default();
        let mut tables_read = 0;
        if let Some(mut lines) = open_table(ctx, "/proc/net/route", &mut problems) {
            tables_read += 1;
            while let Some(line) = lines.next_line()? {
                let Some(line) = line_text(line) else {
                    continue;
                };
                match parse_ipv4_route(&line) {
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
                    let Some(line) = line_text(line) else {
                        continue;
                    };
                    match parse_ipv6_route(&line) {
                        Some(fields) => csv.row(fields)?,
                        None => problems.add("unparseable lines skipped", "/proc/net/ipv6_route"),
                    }
                }
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => problems.add("unreadable tables", format!("/proc/net/ipv6_route: {e}")),
        }
        Ok(table_outcome(tables_read, problems, "no routing tables in /proc/net"))
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
pub(super) struct IpAddresses {
    rows: Vec<IpAddressRow>,
    problems: Problems,
}

impl IpAddresses {
    pub(super) fn load(ctx: &Context) -> Self {
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
                // Directly attached networks: no gateway, not the default route.
                let connected = line_text(line)
                    .and_then(|line| parse_ipv4_route(&line))
                    .filter(|r| r.flags & RTF_GATEWAY == 0 && r.prefix_length() > 0);
                routes.extend(connected);
            }
            Ok(routes)
        });
        let locals = self.read_lines(ctx, "/proc/net/fib_trie", local_ipv4_addresses);
        for address in locals.unwrap_or_default() {
            let (interface, prefix_length) = ipv4_interface(address, routes.as_deref().unwrap_or_default());
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
                if let Some(row) = line_text(line).and_then(|line| parse_if_inet6(&line)) {
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
        read: impl FnOnce(&mut Lines<BufReader<File>>) -> io::Result<T>,
    ) -> Option<T> {
        let result = open_lines(&ctx.path(abs)).and_then(|mut lines| read(&mut lines));
        match result {
            Ok(value) => Some(value),
            Err(e) if is_missing(&e) => None,
            Err(e) => {
                self.problems.add("unreadable tables", format!("{abs}: {e}"));
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
fn local_ipv4_addresses(lines: &mut Lines<impl BufRead>) -> io::Result<BTreeSet<Ipv4Addr>> {
    let mut found = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    while let Some(line) = lines.next_line()? {
        let Some(line) = line_text(line) else {
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
        .map_or((String::new(), None), |route| (route.interface.clone(), Some(route.prefix_length() as u8)))
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

pub(super) fn write_ip_addresses(sink: &mut dyn ItemSink, addresses: &IpAddresses) -> Result<(), PackageError> {
    let source = "/proc/net/fib_trie, /proc/net/route, /proc/net/if_inet6";
    csv_file(sink, "ip_addresses.csv", source, &IP_ADDRESS_HEADER, |csv| {
        for row in &addresses.rows {
            csv.row([
                row.interface.clone(),
                if row.address.is_ipv4() { "ipv4" } else { "ipv6" }.to_owned(),
                row.address.to_string(),
                row.prefix_length.map(|p| p.to_string()).unwrap_or_default(),
                row.scope.clone(),
            ])?;
        }
        Ok(addresses.problems.outcome())
    })
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

pub(super) fn write_interfaces(
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
            Err(e) => return Ok(unavailable(abs, &e)),
        };
        while let Some(line) = lines.next_line()? {
            // The two header lines have no colon; every interface line does.
            let Some(line) = line_text(line).filter(|l| l.contains(':')) else {
                continue;
            };
            match interface_fields(ctx, &line, addresses) {
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

#[cfg(test)]
mod tests {
    use crate::collectors::network::Network;
    use crate::collectors::test_support::{Fixture, find_row, run};

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
        let default = find_row(&routes, "prefix_length", "0");
        assert_eq!(default["gateway"], "192.0.2.1");
        assert_eq!(default["destination"], "0.0.0.0");
        assert_eq!(default["flags"], "UG");
        assert_eq!(default["metric"], "100");
        let lan = find_row(&routes, "prefix_length", "24");
        assert_eq!(lan["destination"], "192.0.2.0");
        let v6 = find_row(&routes, "family", "ipv6");
        assert_eq!((v6["destination"].as_str(), v6["prefix_length"].as_str()), ("fe80::", "64"));
        assert_eq!(v6["metric"], "256");

        let addresses = sink.item("ip_addresses.csv").rows();
        assert_eq!(find_row(&addresses, "address", "192.0.2.2")["interface"], "eth0");
        assert_eq!(find_row(&addresses, "address", "192.0.2.2")["prefix_length"], "24");
        assert_eq!(find_row(&addresses, "address", "127.0.0.1")["interface"], "lo");
        assert_eq!(find_row(&addresses, "address", "198.51.100.7")["interface"], "");
        assert_eq!(find_row(&addresses, "address", "fe80::fc:ff:fe00:1")["scope"], "link");
        assert_eq!(addresses.len(), 5, "{addresses:?}");

        let interfaces = sink.item("interfaces.csv").rows();
        let eth0 = find_row(&interfaces, "name", "eth0");
        assert_eq!(eth0["mac_address"], "02:fc:00:00:00:01");
        assert_eq!(eth0["operstate"], "up");
        assert_eq!(eth0["mtu"], "1500");
        assert_eq!(eth0["ipv4_addresses"], "192.0.2.2/24");
        assert_eq!(eth0["ipv6_addresses"], "fe80::fc:ff:fe00:1/64");
        assert_eq!((eth0["rx_bytes"].as_str(), eth0["tx_dropped"].as_str()), ("5000000", "4"));
        assert_eq!(find_row(&interfaces, "name", "lo")["ipv6_addresses"], "::1/128");
        assert_eq!(interfaces.len(), 2);
    }
}
