//! Client addresses: the one canonical form every address is compared in, the key per-IP
//! limits count by, trusted proxies, and the `X-Forwarded-For` walk. Pure: no sockets.
//!
//! Rules (API.md "Addresses"):
//! * **Canonical form.** An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, which a dual-stack
//!   `[::]` listener reports for IPv4 clients) *is* the IPv4 address. Every address that enters
//!   the server — a socket's peer, an `X-Forwarded-For` hop, a `--trusted-proxy` entry — is
//!   canonicalised first, so `--trusted-proxy 127.0.0.1` matches a proxy that a dual-stack
//!   listener sees as `::ffff:127.0.0.1`.
//! * **Limit keys.** Per-IP limits (connections, failed sign-ins, the hashing pool's fairness)
//!   count an IPv6 client by its /64: one host usually owns a whole /64 and can pick any address
//!   in it, so counting single IPv6 addresses would hand it 2^64 budgets.
//! * **Trusted proxies** are addresses or CIDR ranges. A request from a trusted peer is walked
//!   through its `X-Forwarded-For` from the right (the hop the nearest proxy appended) past
//!   every trusted hop; the first untrusted hop is the client. A hop may be written `IP`,
//!   `IP:port`, `[IPv6]` or `[IPv6]:port` (IIS, Azure and some load balancers add ports). A hop
//!   that does not parse ends the walk at the proxy that wrote it: the request counts as coming
//!   from that proxy, never from an address a client could choose by sending garbage.

use std::net::{IpAddr, Ipv6Addr};

/// The canonical form of `ip`: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What per-IP limits count by: an IPv4 address itself, an IPv6 address's /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDR` or `ADDR/PREFIX`; an IPv4-mapped IPv6 range is taken as the IPv4 range.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (ip, Some(p.parse::<u8>().ok()?))
            }
            Some(_) => return None,
            None => (s, None),
        };
        let raw: IpAddr = ip.parse().ok()?;
        let ip = canonical(raw);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match (prefix, raw, ip) {
            (None, _, _) => max,
            // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
            (Some(p), IpAddr::V6(_), IpAddr::V4(_)) => p.checked_sub(96)?,
            (Some(p), _, _) => p,
        };
        if prefix > max {
            return None;
        }
        Some(Cidr {
            net: mask(ip, prefix),
            prefix,
        })
    }

    /// Whether `ip` (any form) lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// `ip` with every bit past the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

/// `--trusted-proxy`: the peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDR ranges.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| {
                    format!("`{s}` is not an IP address or a CIDR range like 10.0.0.0/8")
                })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer` with `X-Forwarded-For: xff` (every such
    /// header, joined with commas): `peer` itself unless it is trusted; else the first
    /// untrusted hop from the right, or the trusted hop before a hop that does not parse, or
    /// the leftmost hop when all are trusted.
    pub fn client(&self, peer: IpAddr, xff: Option<&str>) -> IpAddr {
        let mut current = canonical(peer);
        if !self.trusts(current) {
            return current;
        }
        let Some(xff) = xff else {
            return current;
        };
        for hop in xff.rsplit(',') {
            match parse_hop(hop) {
                Some(ip) if self.trusts(ip) => current = ip,
                Some(ip) => return ip,
                None => return current,
            }
        }
        current
    }
}

/// One `X-Forwarded-For` hop: `IP`, `IP:port` (IPv4), `[IPv6]` or `[IPv6]:port`; canonical.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        IpAddr::V6(inside.parse().ok()?)
    } else if let Ok(ip) = hop.parse::<IpAddr>() {
        ip
    } else {
        // `IPv4:port` (a bare IPv6 address has more than one colon and parsed above).
        let (v4, port) = hop.split_once(':')?;
        if !valid_port(port) {
            return None;
        }
        IpAddr::V4(v4.parse().ok()?)
    };
    Some(canonical(ip))
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        assert_eq!(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("10.0.0.1")), ip("10.0.0.1"));
        // IPv4-compatible (deprecated, `::a.b.c.d`) is not mapped: it stays IPv6.
        assert_eq!(canonical(ip("::127.0.0.1")), ip("::127.0.0.1"));
    }

    #[test]
    fn ipv6_counts_by_64() {
        assert_eq!(
            limit_key(ip("2001:db8::1")),
            limit_key(ip("2001:db8::ffff:2"))
        );
        assert_ne!(
            limit_key(ip("2001:db8::1")),
            limit_key(ip("2001:db8:0:1::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.200.3.4")));
        assert!(c.contains(ip("::ffff:10.1.1.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::a00:1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("::ffff:127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.0/104"),
            Cidr::parse("10.0.0.0/8")
        );
        assert_eq!(Cidr::parse("10.0.0.9/8"), Cidr::parse("10.0.0.0/8"));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "host",
            "",
            "::ffff:1.2.3.4/90",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hops_in_every_form() {
        assert_eq!(parse_hop(" 10.9.0.1 "), Some(ip("10.9.0.1")));
        assert_eq!(parse_hop("10.9.0.1:5000"), Some(ip("10.9.0.1")));
        assert_eq!(parse_hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("::ffff:10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_hop("[::ffff:10.0.0.1]:80"), Some(ip("10.0.0.1")));
        for bad in [
            "",
            "unknown",
            "10.9.0.1:",
            "10.9.0.1:99999",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[10.0.0.1]",
            "fe80::1%eth0",
            "_hidden",
            "10.9.0.1:80:80",
            "[2001:db8::1]:",
        ] {
            assert_eq!(parse_hop(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_hops() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        let peer = ip("::ffff:127.0.0.1");
        assert_eq!(t.client(peer, Some("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(
            t.client(peer, Some("6.6.6.6, 203.0.113.9, 10.1.2.3")),
            ip("203.0.113.9"),
            "past the trusted 10.1.2.3; the client's own claim (6.6.6.6) is never reached"
        );
        assert_eq!(t.client(peer, Some("10.0.0.5, 10.0.0.6")), ip("10.0.0.5"));
        assert_eq!(t.client(peer, None), ip("127.0.0.1"));
        assert_eq!(t.client(peer, Some("garbage")), ip("127.0.0.1"));
        assert_eq!(
            t.client(peer, Some("1.2.3.4, garbage, 10.0.0.7")),
            ip("10.0.0.7"),
            "an unparseable hop: the proxy that wrote it"
        );
        assert_eq!(t.client(peer, Some("1.2.3.4,")), ip("127.0.0.1"));
        assert_eq!(t.client(peer, Some("[2001:db8::1]:443")), ip("2001:db8::1"));
        let untrusted = ip("192.0.2.1");
        assert_eq!(t.client(untrusted, Some("1.2.3.4")), untrusted);
        assert!(TrustedProxies::parse("10.0.0.0/8, nope").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }
}
