//! IP networks in CIDR notation, for `source_networks`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network such as `203.0.113.0/24` or `2001:db8::/32`.
///
/// Parsing refuses host bits below the prefix (`203.0.113.5/24`), since that is usually a
/// typo for a single address or for another network. A bare address is a single-host
/// network (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    /// Host bits are zero.
    addr: IpAddr,
    /// At most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl IpNetwork {
    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the network. An IPv4 address and its IPv4-mapped IPv6 form
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports it) are treated alike.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self.addr {
            IpAddr::V4(net) => {
                let ip = match ip {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                        Some(ip) => ip,
                        None => return false,
                    },
                };
                u32::from(ip) & v4_mask(self.prefix) == u32::from(net)
            }
            IpAddr::V6(net) => {
                let ip = match ip {
                    IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                    IpAddr::V6(ip) => ip,
                };
                u128::from(ip) & v6_mask(self.prefix) == u128::from(net)
            }
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Why a network was refused: a sentence fragment about the value, e.g.
/// `is not an IP network like "203.0.113.0/24" or "2001:db8::/32"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseIpNetworkError(String);

impl FromStr for IpNetwork {
    type Err = ParseIpNetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let not_a_network = || {
            ParseIpNetworkError(
                "is not an IP network like \"203.0.113.0/24\" or \"2001:db8::/32\"".to_owned(),
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| not_a_network())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => {
                match prefix.parse::<u8>() {
                    Ok(prefix) if prefix <= max => prefix,
                    _ => {
                        return Err(ParseIpNetworkError(format!(
                            "has prefix length /{prefix}, but an {} prefix is at most /{max}",
                            if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                        )));
                    }
                }
            }
            Some(_) => return Err(not_a_network()),
        };
        let network = match addr {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & v4_mask(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & v6_mask(prefix))),
        };
        if network != addr {
            return Err(ParseIpNetworkError(format!(
                "has bits set after the /{prefix} prefix; the network is \"{network}/{prefix}\""
            )));
        }
        Ok(IpNetwork { addr, prefix })
    }
}

impl fmt::Display for IpNetwork {
    /// Always with the prefix: `203.0.113.0/24`, `2001:db8::/32`, `192.0.2.7/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNetwork {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_network_contains_exactly_its_range() {
        let n = net("203.0.113.0/24");
        assert!(n.contains(ip("203.0.113.0")));
        assert!(n.contains(ip("203.0.113.255")));
        assert!(!n.contains(ip("203.0.114.0")));
        assert!(!n.contains(ip("203.0.112.255")));
        assert!(!n.contains(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_network_contains_ipv4_mapped_ipv6_addresses() {
        let n = net("203.0.113.0/24");
        assert!(n.contains(ip("::ffff:203.0.113.9")));
        assert!(!n.contains(ip("::ffff:198.51.100.9")));
    }

    #[test]
    fn ipv6_network_contains_exactly_its_range() {
        let n = net("2001:db8::/32");
        assert!(n.contains(ip("2001:db8::1")));
        assert!(n.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!n.contains(ip("2001:db9::")));
        assert!(!n.contains(ip("203.0.113.1")));
    }

    #[test]
    fn zero_and_full_prefixes_work() {
        assert!(net("0.0.0.0/0").contains(ip("198.51.100.1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("192.0.2.7/32").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7/32").contains(ip("192.0.2.8")));
        assert!(net("2001:db8::7/128").contains(ip("2001:db8::7")));
        assert!(!net("2001:db8::7/128").contains(ip("2001:db8::8")));
    }

    #[test]
    fn bare_addresses_are_single_host_networks() {
        assert_eq!(net("192.0.2.7"), net("192.0.2.7/32"));
        assert_eq!(net("2001:db8::7"), net("2001:db8::7/128"));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "203.0.113.0/24",
            "2001:db8::/32",
            "0.0.0.0/0",
            "::/0",
            "192.0.2.7/32",
        ] {
            assert_eq!(net(text).to_string(), text);
            assert_eq!(net(&net(text).to_string()), net(text));
        }
    }

    #[test]
    fn malformed_networks_are_refused_with_a_reason() {
        let err = |text: &str| text.parse::<IpNetwork>().unwrap_err().to_string();
        let not_a_network = "is not an IP network like \"203.0.113.0/24\" or \"2001:db8::/32\"";
        for text in [
            "",
            "203.0.113.0/",
            "203.0.113/24",
            "example.com/24",
            "203.0.113.0/+24",
            "203.0.113.0/24 ",
            "/24",
        ] {
            assert_eq!(err(text), not_a_network, "{text:?}");
        }
        assert_eq!(
            err("203.0.113.0/33"),
            "has prefix length /33, but an IPv4 prefix is at most /32"
        );
        assert_eq!(
            err("2001:db8::/129"),
            "has prefix length /129, but an IPv6 prefix is at most /128"
        );
        assert_eq!(
            err("203.0.113.0/999"),
            "has prefix length /999, but an IPv4 prefix is at most /32"
        );
        assert_eq!(
            err("203.0.113.5/24"),
            "has bits set after the /24 prefix; the network is \"203.0.113.0/24\""
        );
        assert_eq!(
            err("2001:db8::1/32"),
            "has bits set after the /32 prefix; the network is \"2001:db8::/32\""
        );
    }
}
