//! The client address behind trusted proxies, and IPv6 prefixes.

use super::ForwardedHeader;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address. The error never
    /// repeats the text (it may come from a configuration value).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "the address is not an IP address".to_owned())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length is not a number up to {max}"))?,
            None => max,
        };
        // `::ffff:a.b.c.d/n` is the IPv4 block `a.b.c.d/(n - 96)`.
        let (addr, prefix) = match canonical(addr) {
            v4 @ IpAddr::V4(_) if addr.is_ipv6() => (v4, prefix.saturating_sub(96)),
            other => (other, prefix),
        };
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The key form of an address: IPv4 whole, IPv6 by its `/prefix`.
pub(crate) fn masked(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => v4,
        v6 => mask(v6, v6_prefix),
    }
}

/// One address from a forwarding entry: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`,
/// `"[::1]"`; `None` for `unknown`, obfuscated ids and anything malformed.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim().trim_matches('"');
    if let Some(rest) = e.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = e.parse() {
        return Some(ip);
    }
    // `a.b.c.d:port`
    let (host, port) = e.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Who the client of a request is: the socket peer, unless the peer is a
/// trusted proxy (`OPSKIT_TRUSTED_PROXIES`); then the address its forwarding
/// header (`OPSKIT_FORWARDED_HEADER`) names. Resolved once per request by
/// the adapter; the rate limiter keys by it, the access log and the server
/// span name it as `client.address`.
///
/// ```
/// use opskit::ratelimit::{Cidr, ForwardedHeader, TrustedProxies};
/// let proxies = TrustedProxies::new(vec![Cidr::parse("10.0.0.0/8").unwrap()], ForwardedHeader::XForwardedFor);
/// // The proxy added a line of its own after the client's (spoofed) one:
/// // both lines are one list, and the right-most untrusted entry is the client.
/// let lines: [&[u8]; 2] = [b"6.6.6.6", b"203.0.113.5, 10.0.0.9"];
/// let client = proxies.client("10.0.0.2".parse().ok(), |_name| lines);
/// assert_eq!(client, "203.0.113.5".parse().ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    cidrs: Vec<Cidr>,
    header: ForwardedHeader,
}

impl Default for TrustedProxies {
    /// No proxy is trusted: the peer is always the client.
    fn default() -> Self {
        Self::new(Vec::new(), ForwardedHeader::XForwardedFor)
    }
}

impl TrustedProxies {
    /// Proxies in `cidrs`, which forward the client in `header`.
    pub fn new(cidrs: Vec<Cidr>, header: ForwardedHeader) -> Self {
        Self { cidrs, header }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip))
    }

    /// Whether `peer` is a trusted proxy.
    pub(crate) fn trusts(&self, peer: Option<IpAddr>) -> bool {
        !self.cidrs.is_empty() && peer.is_some_and(|p| self.is_trusted(canonical(p)))
    }

    /// The client of a request from `peer`. `lines` gives every field line
    /// of the named header (`x-forwarded-for` or `forwarded`), in the order
    /// received; it is called only when the peer is a trusted proxy.
    ///
    /// The lines are one comma-separated list (RFC 9110 §5.3: a proxy may add
    /// a line rather than append to the client's). Its entries are walked
    /// from the right, skipping trusted proxies; the first untrusted one is
    /// the client. A malformed entry (or a line that is not UTF-8) stops the
    /// walk, and the client is then the last trusted hop seen: the left-most
    /// entry is never believed just for being there.
    pub fn client<'h, L>(
        &self,
        peer: Option<IpAddr>,
        lines: impl FnOnce(&'static str) -> L,
    ) -> Option<IpAddr>
    where
        L: IntoIterator<Item = &'h [u8]>,
        L::IntoIter: DoubleEndedIterator,
    {
        let peer = canonical(peer?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut client = peer;
        'walk: for line in lines(name).into_iter().rev() {
            let Ok(line) = std::str::from_utf8(line) else {
                break;
            };
            for element in line.rsplit(',') {
                let entry = match self.header {
                    ForwardedHeader::XForwardedFor => element,
                    ForwardedHeader::Forwarded => element
                        .split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                        .map_or("", |(_, v)| v),
                };
                let Some(ip) = parse_entry(entry).map(canonical) else {
                    break 'walk;
                };
                client = ip;
                if !self.is_trusted(ip) {
                    break 'walk;
                }
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_of(peer: &str, xff: Option<&'static str>, trusted: &[&str]) -> IpAddr {
        lines_of(peer, &xff.into_iter().collect::<Vec<_>>(), trusted)
    }

    fn lines_of(peer: &str, xff: &[&'static str], trusted: &[&str]) -> IpAddr {
        let trusted: Vec<Cidr> = trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect();
        let proxies = TrustedProxies::new(trusted, ForwardedHeader::XForwardedFor);
        proxies
            .client(peer.parse().ok(), |name| {
                assert_eq!(name, "x-forwarded-for");
                xff.iter().map(|l| l.as_bytes())
            })
            .unwrap()
    }

    #[test]
    fn several_lines_are_one_list_in_order() {
        let t = ["10.0.0.0/8"];
        // The client's own line first, the proxy's after it.
        assert_eq!(
            lines_of("10.0.0.2", &["6.6.6.6", "203.0.113.5"], &t).to_string(),
            "203.0.113.5"
        );
        assert_eq!(
            lines_of("10.0.0.2", &["203.0.113.5", "6.6.6.6, 10.0.0.3"], &t).to_string(),
            "6.6.6.6"
        );
        // Trusted hops are skipped across lines.
        assert_eq!(
            lines_of("10.0.0.2", &["203.0.113.5, 10.0.0.4", "10.0.0.3"], &t).to_string(),
            "203.0.113.5"
        );
        // A malformed or empty line stops the walk where it stands.
        assert_eq!(
            lines_of("10.0.0.2", &["203.0.113.5", "", "10.0.0.3"], &t).to_string(),
            "10.0.0.3"
        );
        let forwarded = TrustedProxies::new(
            vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ForwardedHeader::Forwarded,
        );
        let lines: [&[u8]; 2] = [b"for=6.6.6.6;proto=https", b"for=\"[2001:db8::1]:443\""];
        let client = forwarded.client("10.0.0.2".parse().ok(), |name| {
            assert_eq!(name, "forwarded");
            lines
        });
        assert_eq!(client.unwrap().to_string(), "2001:db8::1");
    }

    #[test]
    fn spoofed_headers_from_untrusted_peers_are_ignored() {
        assert_eq!(
            ip_of("198.51.100.7", Some("1.2.3.4"), &[]).to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            ip_of("198.51.100.7", Some("1.2.3.4"), &["10.0.0.0/8"]).to_string(),
            "198.51.100.7"
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let t = ["10.0.0.0/8"];
        // The client prepended a fake entry; the proxy appended the real peer.
        assert_eq!(
            ip_of("10.0.0.2", Some("6.6.6.6, 203.0.113.5"), &t).to_string(),
            "203.0.113.5"
        );
        assert_eq!(
            ip_of("10.0.0.2", Some("203.0.113.5, 10.0.0.9"), &t).to_string(),
            "203.0.113.5"
        );
        assert_eq!(
            ip_of("10.0.0.2", Some("203.0.113.5:4711"), &t).to_string(),
            "203.0.113.5"
        );
        assert_eq!(
            ip_of("10.0.0.2", Some("garbage, 10.0.0.9"), &t).to_string(),
            "10.0.0.9"
        );
        assert_eq!(ip_of("10.0.0.2", None, &t).to_string(), "10.0.0.2");
    }

    #[test]
    fn cidrs_and_prefixes() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!c.contains("2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("::ffff:10.0.0.1")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
        assert_eq!(
            masked("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64).to_string(),
            "2001:db8:1:2::"
        );
        assert_eq!(
            parse_entry("\"[2001:db8::1]:443\"").unwrap().to_string(),
            "2001:db8::1"
        );
        assert!(parse_entry("unknown").is_none() && parse_entry("_hidden").is_none());
    }
}
