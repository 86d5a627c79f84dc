//! Behind a reverse proxy: `X-Forwarded-For/-Proto/-Host` are believed only from the
//! addresses in `trusted_proxies`, so that the audit trail records the real client and
//! links use the public scheme and host. From any other peer they are removed before
//! routing, so nothing downstream can read a forged one.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED_HOST: &str = "x-forwarded-host";

/// How the client reached the public side: `https` and the host it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: &'static str,
    /// The host (and port) the client asked for: the proxy's `X-Forwarded-Host`, else
    /// the request's `Host`.
    pub forwarded_host: Option<String>,
}

#[derive(Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
#[error("trusted_proxies: '{0}' is neither an IP address nor a CIDR block")]
pub struct BadProxy(String);

impl TrustedProxies {
    pub fn parse(entries: &[String]) -> Result<Self, BadProxy> {
        let nets = entries
            .iter()
            .map(|entry| parse_net(entry).ok_or_else(|| BadProxy(entry.trim().to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address and origin for a request from `peer` on a `scheme`
    /// connection; strips the forwarding headers of an untrusted peer.
    pub fn resolve(&self, peer: SocketAddr, scheme: &'static str, headers: &mut HeaderMap) -> (SocketAddr, Origin) {
        if !self.trusts(peer.ip()) {
            for name in [FORWARDED_FOR, FORWARDED_PROTO, FORWARDED_HOST, "forwarded"] {
                headers.remove(name);
            }
            return (peer, Origin { scheme, forwarded_host: None });
        }
        let client = self.client(headers).map(|ip| SocketAddr::new(ip, 0)).unwrap_or(peer);
        let proto = first_value(headers, FORWARDED_PROTO).map(|p| p.to_ascii_lowercase());
        let scheme = match proto.as_deref() {
            Some("https") => "https",
            Some("http") => "http",
            _ => scheme,
        };
        let forwarded_host = first_value(headers, FORWARDED_HOST).filter(|h| valid_host(h));
        (client, Origin { scheme, forwarded_host })
    }

    /// The right-most address of `X-Forwarded-For` that is not a trusted proxy: entries
    /// to its left were written by the client and prove nothing. A hop that is not an
    /// address, met before that one, makes the client unknown ([`UNKNOWN_CLIENT`]), never
    /// the proxy itself: a proxy on loopback would otherwise lend its address to anyone
    /// who sends garbage. No header at all: the proxy called on its own (`None`).
    fn client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all(FORWARDED_FOR) {
            match value.to_str() {
                Ok(text) => hops.extend(text.split(',').map(str::trim)),
                Err(_) => hops.push(""),
            }
        }
        let mut leftmost = None;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                None => return Some(UNKNOWN_CLIENT),
                Some(ip) if !self.trusts(ip) => return Some(ip),
                Some(ip) => leftmost = Some(ip),
            }
        }
        // Every hop is a trusted proxy: the request began at the left-most one.
        leftmost
    }
}

/// The address recorded for a client a trusted proxy could not name (an `X-Forwarded-For`
/// hop that is not an address): no allow-list contains it.
pub const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// An address list's entry: `10.0.0.0/8` or a single address such as `192.0.2.7`.
pub fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry.parse::<IpNet>().or_else(|_| entry.parse::<IpAddr>().map(IpNet::from)).ok()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip())).ok().map(canonical)
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// A host and port as it may appear in a URL (no path, no userinfo).
pub fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into()]).unwrap();
        let sent = [
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "casefile.example.com"),
        ];
        let mut from_proxy = headers(&sent);
        let (client, origin) = proxies.resolve("10.2.3.4:5000".parse().unwrap(), "http", &mut from_proxy);
        assert_eq!(client.ip(), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(origin, Origin { scheme: "https", forwarded_host: Some("casefile.example.com".into()) });

        let mut from_outsider = headers(&sent);
        let peer: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let (client, origin) = proxies.resolve(peer, "http", &mut from_outsider);
        assert_eq!(client, peer);
        assert_eq!(origin, Origin { scheme: "http", forwarded_host: None });
        assert!(from_outsider.get("x-forwarded-for").is_none(), "stripped before routing");
    }

    #[test]
    fn a_client_cannot_choose_its_address_through_a_trusted_proxy() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        // The client wrote "1.1.1.1"; the proxy appended the address it saw.
        let mut sent = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.5")]);
        let (client, _) = proxies.resolve("127.0.0.1:1".parse().unwrap(), "https", &mut sent);
        assert_eq!(client.ip(), "198.51.100.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_hop_that_is_no_address_makes_the_client_unknown_not_the_proxy() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for sent in ["x", "x, 127.0.0.1", "", "203.0.113.5 x"] {
            let (client, _) = proxies.resolve(peer, "https", &mut headers(&[("x-forwarded-for", sent)]));
            assert_eq!(client.ip(), UNKNOWN_CLIENT, "{sent:?}");
        }
        // Garbage the client wrote left of the address the proxy appended proves nothing.
        let (client, _) = proxies.resolve(peer, "https", &mut headers(&[("x-forwarded-for", "x, 203.0.113.5")]));
        assert_eq!(client.ip(), "203.0.113.5".parse::<IpAddr>().unwrap());
        let mut opaque = HeaderMap::new();
        opaque.insert("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(proxies.resolve(peer, "https", &mut opaque).0.ip(), UNKNOWN_CLIENT);
        // No header: the proxy's own request.
        assert_eq!(proxies.resolve(peer, "https", &mut HeaderMap::new()).0, peer);
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
        assert!(TrustedProxies::parse(&["::1".into(), "fd00::/8".into()]).is_ok());
    }
}
