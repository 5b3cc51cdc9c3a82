//! Target addresses: `host:port` parsing, and which IP addresses may be dialled.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Target;

/// Why an address may not be dialled for a target (DESIGN.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    /// `127.0.0.0/8`, `::1`: the broker host itself.
    Loopback,
    /// `169.254.0.0/16` (including the cloud metadata address), `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0/8`, `::`: dialling these reaches the broker host on common systems.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
}

impl fmt::Display for AddressRefusal {
    /// A noun phrase, e.g. "a loopback address", to complete "… is …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressRefusal::Loopback => "a loopback address",
            AddressRefusal::LinkLocal => "a link-local address",
            AddressRefusal::Unspecified => "an unspecified address",
            AddressRefusal::Multicast => "a multicast address",
            AddressRefusal::Broadcast => "the broadcast address",
        })
    }
}

/// Whether the broker may dial `ip` for `target`, judged after DNS resolution (and, for IP
/// literals, already at load time).
///
/// Loopback, link-local, unspecified, multicast and the IPv4 broadcast address are refused
/// unless `target.allow_loopback`. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged
/// as the IPv4 address it maps, so it cannot be used to slip past the IPv4 rules.
pub fn check_dial_address(target: &Target, ip: IpAddr) -> Result<(), AddressRefusal> {
    if target.allow_loopback {
        return Ok(());
    }
    match classify(ip) {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

fn classify(ip: IpAddr) -> Option<AddressRefusal> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => classify_v4(ip),
            None => classify_v6(ip),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressRefusal> {
    // 0.0.0.0/8 rather than only 0.0.0.0: "this network" (RFC 1122) is never a valid
    // destination, and Linux routes 0.0.0.0 to the local host.
    if ip.octets()[0] == 0 {
        Some(AddressRefusal::Unspecified)
    } else if ip.is_loopback() {
        Some(AddressRefusal::Loopback)
    } else if ip.is_link_local() {
        Some(AddressRefusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(AddressRefusal::Multicast)
    } else if ip.is_broadcast() {
        Some(AddressRefusal::Broadcast)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressRefusal> {
    if ip.is_unspecified() {
        Some(AddressRefusal::Unspecified)
    } else if ip.is_loopback() {
        Some(AddressRefusal::Loopback)
    } else if ip.is_unicast_link_local() {
        Some(AddressRefusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(AddressRefusal::Multicast)
    } else {
        None
    }
}

/// A parsed `host:port`. `host` is a DNS name or an IP literal (IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostPort {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) ip: Option<IpAddr>,
}

const EXPECTED: &str = "expected host:port like \"ehr-db.hospital.internal:5432\"";

/// Parses `name:port`, `a.b.c.d:port` or `[v6]:port`. The error is a sentence fragment to
/// follow "address "…"", e.g. `has no port; expected host:port like …`.
pub(super) fn parse_host_port(text: &str) -> Result<HostPort, String> {
    if text.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    let (host, port, ip) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("has `[` without a closing `]`; {EXPECTED}"));
        };
        let Ok(ip) = inside.parse::<Ipv6Addr>() else {
            return Err(format!("has `[{inside}]`, which is not an IPv6 address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("has no port; {EXPECTED}"));
        };
        (inside, port, Some(IpAddr::V6(ip)))
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("has no port; {EXPECTED}"));
        };
        if host.contains(':') {
            return Err(
                "has an IPv6 address without brackets; write it like \"[2001:db8::1]:22\""
                    .to_owned(),
            );
        }
        if host.is_empty() {
            return Err(format!("has an empty host; {EXPECTED}"));
        }
        let ip = host.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
        if ip.is_none() && !is_host_name(host) {
            return Err(format!(
                "has `{host}`, which is not a valid host name or IP address"
            ));
        }
        (host, port, ip)
    };
    let port = parse_port(port)?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
        ip,
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    let bad = || format!("has port `{text}`; a port is a number from 1 to 65535");
    if text.is_empty() {
        return Err(format!("has no port; {EXPECTED}"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad()),
    }
}

/// A DNS host name: dot-separated labels of ASCII letters, digits, `-` and `_` (found on
/// internal Windows hosts), each 1 to 63 long and not starting or ending with `-`, at most
/// 253 in all. The last label may not be all digits, so a mistyped IPv4 address such as
/// `10.0.0.256` is not taken for a name.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(label_ok)
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(allow_loopback: bool) -> Target {
        Target {
            name: "t".to_owned(),
            host: "t.hospital.internal".to_owned(),
            port: 22,
            description: None,
            allow_loopback,
            allow_file_share: false,
            critical: false,
        }
    }

    fn check(ip: &str) -> Result<(), AddressRefusal> {
        check_dial_address(&target(false), ip.parse().unwrap())
    }

    #[test]
    fn each_refused_class_is_refused_for_ipv4() {
        use AddressRefusal::*;
        assert_eq!(check("127.0.0.1"), Err(Loopback));
        assert_eq!(check("127.255.255.254"), Err(Loopback));
        assert_eq!(check("169.254.169.254"), Err(LinkLocal));
        assert_eq!(check("169.254.0.1"), Err(LinkLocal));
        assert_eq!(check("0.0.0.0"), Err(Unspecified));
        assert_eq!(check("0.1.2.3"), Err(Unspecified));
        assert_eq!(check("224.0.0.1"), Err(Multicast));
        assert_eq!(check("239.255.255.255"), Err(Multicast));
        assert_eq!(check("255.255.255.255"), Err(Broadcast));
    }

    #[test]
    fn each_refused_class_is_refused_for_ipv6() {
        use AddressRefusal::*;
        assert_eq!(check("::1"), Err(Loopback));
        assert_eq!(check("fe80::1"), Err(LinkLocal));
        assert_eq!(check("febf:ffff::1"), Err(LinkLocal));
        assert_eq!(check("::"), Err(Unspecified));
        assert_eq!(check("ff02::1"), Err(Multicast));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_as_the_ipv4_address() {
        use AddressRefusal::*;
        assert_eq!(check("::ffff:127.0.0.1"), Err(Loopback));
        assert_eq!(check("::ffff:169.254.169.254"), Err(LinkLocal));
        assert_eq!(check("::ffff:0.0.0.0"), Err(Unspecified));
        assert_eq!(check("::ffff:224.0.0.1"), Err(Multicast));
        assert_eq!(check("::ffff:255.255.255.255"), Err(Broadcast));
        assert_eq!(check("::ffff:10.1.2.3"), Ok(()));
    }

    #[test]
    fn ordinary_addresses_are_allowed() {
        for ip in [
            "10.0.0.1",
            "192.168.1.10",
            "203.0.113.7",
            "1.0.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "223.255.255.255",
            "255.255.255.254",
            "2001:db8::1",
            "fd00::1",
            "fec0::1",
            "::2",
        ] {
            assert_eq!(check(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allow_loopback_permits_every_class() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "::",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(
                check_dial_address(&target(true), ip.parse().unwrap()),
                Ok(()),
                "{ip}"
            );
        }
    }

    #[test]
    fn refusals_display_as_noun_phrases() {
        assert_eq!(AddressRefusal::Loopback.to_string(), "a loopback address");
        assert_eq!(
            AddressRefusal::LinkLocal.to_string(),
            "a link-local address"
        );
        assert_eq!(
            AddressRefusal::Unspecified.to_string(),
            "an unspecified address"
        );
        assert_eq!(AddressRefusal::Multicast.to_string(), "a multicast address");
        assert_eq!(
            AddressRefusal::Broadcast.to_string(),
            "the broadcast address"
        );
    }

    #[test]
    fn host_port_forms_parse() {
        let hp = |text: &str| parse_host_port(text).unwrap();
        assert_eq!(
            hp("ehr-db.hospital.internal:5432"),
            HostPort {
                host: "ehr-db.hospital.internal".to_owned(),
                port: 5432,
                ip: None
            }
        );
        assert_eq!(hp("10.0.0.5:22").ip, Some("10.0.0.5".parse().unwrap()));
        let v6 = hp("[2001:db8::1]:65535");
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::1", 65535));
        assert_eq!(v6.ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(hp("pacs:1").port, 1);
        assert_eq!(hp("WIN_HOST01:3389").host, "WIN_HOST01");
    }

    #[test]
    fn malformed_host_ports_are_refused_with_a_reason() {
        let err = |text: &str| parse_host_port(text).unwrap_err();
        let expected = "expected host:port like \"ehr-db.hospital.internal:5432\"";
        assert_eq!(err(""), format!("is empty; {expected}"));
        assert_eq!(err("ehr-db"), format!("has no port; {expected}"));
        assert_eq!(err("ehr-db:"), format!("has no port; {expected}"));
        assert_eq!(err(":5432"), format!("has an empty host; {expected}"));
        assert_eq!(
            err("ehr-db:0"),
            "has port `0`; a port is a number from 1 to 65535"
        );
        assert_eq!(
            err("ehr-db:70000"),
            "has port `70000`; a port is a number from 1 to 65535"
        );
        assert_eq!(
            err("ehr-db:+22"),
            "has port `+22`; a port is a number from 1 to 65535"
        );
        assert_eq!(
            err("2001:db8::1:22"),
            "has an IPv6 address without brackets; write it like \"[2001:db8::1]:22\""
        );
        assert_eq!(err("[2001:db8::1]"), format!("has no port; {expected}"));
        assert_eq!(
            err("[2001:db8::1:22"),
            format!("has `[` without a closing `]`; {expected}")
        );
        assert_eq!(
            err("[10.0.0.1]:22"),
            "has `[10.0.0.1]`, which is not an IPv6 address"
        );
        for host in ["ehr db", "-ehr", "ehr-", "a..b", "10.0.0.256", "ehr/db"] {
            assert_eq!(
                err(&format!("{host}:22")),
                format!("has `{host}`, which is not a valid host name or IP address")
            );
        }
    }
}
