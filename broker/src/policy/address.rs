//! Target addresses: `host:port` parsing, and which IP addresses may be dialled.
//!
//! # Addresses the broker never dials
//!
//! [`check_dial_address`] refuses these unless the target sets `allow_loopback` (demos and
//! tests), both for IP literals in the policy (at load) and for every address a name resolves
//! to (at approval):
//!
//! | class | IPv4 | IPv6 |
//! |---|---|---|
//! | loopback: the broker host itself | `127.0.0.0/8` | `::1` |
//! | link-local, including the cloud metadata address `169.254.169.254` | `169.254.0.0/16` | `fe80::/10` |
//! | unspecified: reaches the broker host on common systems | `0.0.0.0/8` | `::` |
//! | multicast | `224.0.0.0/4` | `ff00::/8` |
//! | broadcast | `255.255.255.255` | |
//!
//! An IPv6 address that carries an IPv4 address is judged as that IPv4 address too, because
//! something on the way may deliver it there: the kernel for an IPv4-mapped address on a
//! dual-stack socket, a tunnel (6to4, Teredo, IPv4-compatible) for the others, a translator
//! (NAT64, SIIT) on the broker host or in the hospital's network. Teredo carries two, and
//! either one being forbidden refuses the address.
//!
//! | form | prefix | the IPv4 address |
//! |---|---|---|
//! | IPv4-mapped (RFC 4291) | `::ffff:0:0/96` | bits 96..128 |
//! | IPv4-compatible (RFC 4291, deprecated) | `::/96` but `::` and `::1` (judged as themselves) | bits 96..128 |
//! | IPv4-translated (RFC 2765) | `::ffff:0:0:0/96` | bits 96..128 |
//! | NAT64 well-known prefix (RFC 6052) | `64:ff9b::/96` | bits 96..128 |
//! | NAT64 local-use prefix (RFC 8215) | `64:ff9b:1::/48` | bits 48..64 and 72..88, around the `u` octet (RFC 6052 §2.2 for a /48; `u` is not checked) |
//! | 6to4 (RFC 3056) | `2002::/16` | bits 16..48 |
//! | Teredo (RFC 4380) | `2001::/32` | server: bits 32..64; client: bits 96..128, inverted |
//!
//! Not refused, and why:
//!
//! - Unique-local `fc00::/7`, private and shared IPv4 (`10.0.0.0/8`, `172.16.0.0/12`,
//!   `192.168.0.0/16`, `100.64.0.0/10`): the hospital's internal networks, where the targets
//!   are.
//! - Site-local `fec0::/10`: deprecated (RFC 3879) and routed like any unicast address; an old
//!   internal network may still number hosts in it.
//! - Documentation, benchmarking and discard ranges (`2001:db8::/32`, `192.0.2.0/24`,
//!   `198.18.0.0/15`, `100::/64`, …): they reach nothing on the broker host; a dial there
//!   fails like any unreachable target.
//! - IPv4 addresses whose place only the local network's configuration knows: behind a NAT64
//!   network-specific prefix, in ISATAP interface identifiers (`…:0:5efe:a.b.c.d`, in any
//!   /64), and behind a longer prefix inside `64:ff9b:1::/48` (RFC 8215 allows /56 to /96,
//!   which put the IPv4 address elsewhere than the /48 positions judged here). Reading an
//!   IPv4 address out of every address that could be one of these would refuse ordinary ones.
//! - Cloud metadata endpoints outside link-local: AWS's `fd00:ec2::254` (IPv6, off unless
//!   enabled on the instance) sits in unique-local space. A broker on a cloud instance should
//!   keep such endpoints off or filtered.
//!
//! # Host spellings
//!
//! A target's host is a dotted-decimal IPv4 address (`10.0.0.5`), a bracketed IPv6 address,
//! or a DNS name, which is resolved at approval by the system resolver. That resolver reads
//! more than names: `inet_aton` takes `0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1`,
//! `0x7f.1` and `127.0.1` as 127.0.0.1. So a host whose last label is a number (decimal, octal
//! `0…` or hexadecimal `0x…`: the WHATWG URL Standard's "ends in a number") is never a name;
//! `parse_host_port` refuses it, naming the address it spells as `inet_aton` reads it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Target;

/// A kind of address the broker never dials for a target without `allow_loopback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenClass {
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

impl ForbiddenClass {
    /// The class as a modifier, as in "the loopback address 127.0.0.1".
    fn adjective(self) -> &'static str {
        match self {
            ForbiddenClass::Loopback => "loopback",
            ForbiddenClass::LinkLocal => "link-local",
            ForbiddenClass::Unspecified => "unspecified",
            ForbiddenClass::Multicast => "multicast",
            ForbiddenClass::Broadcast => "broadcast",
        }
    }
}

impl fmt::Display for ForbiddenClass {
    /// A noun phrase, e.g. "a loopback address", to complete "… is …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForbiddenClass::Loopback => "a loopback address",
            ForbiddenClass::LinkLocal => "a link-local address",
            ForbiddenClass::Unspecified => "an unspecified address",
            ForbiddenClass::Multicast => "a multicast address",
            ForbiddenClass::Broadcast => "the broadcast address",
        })
    }
}

/// An IPv6 address form that carries an IPv4 address (see the module docs for the bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Embedding {
    /// `::ffff:a.b.c.d`.
    Mapped,
    /// `::a.b.c.d`, other than `::` and `::1`.
    Compatible,
    /// `::ffff:0:a.b.c.d`.
    Translated,
    /// `64:ff9b::a.b.c.d`.
    Nat64,
    /// `64:ff9b:1::/48`, read as a /48 prefix.
    Nat64LocalUse,
    /// `2002:aabb:ccdd::/48`.
    SixToFour,
    /// `2001::/32`, the Teredo server's address.
    TeredoServer,
    /// `2001::/32`, the Teredo client's public address.
    TeredoClient,
}

impl fmt::Display for Ipv4Embedding {
    /// A noun phrase, e.g. "a 6to4 IPv6 address".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ipv4Embedding::Mapped => "an IPv4-mapped IPv6 address",
            Ipv4Embedding::Compatible => "an IPv4-compatible IPv6 address",
            Ipv4Embedding::Translated => "an IPv4-translated IPv6 address",
            Ipv4Embedding::Nat64 => "a NAT64 IPv6 address",
            Ipv4Embedding::Nat64LocalUse => "a local-use NAT64 IPv6 address",
            Ipv4Embedding::SixToFour => "a 6to4 IPv6 address",
            Ipv4Embedding::TeredoServer | Ipv4Embedding::TeredoClient => "a Teredo IPv6 address",
        })
    }
}

/// Why an address may not be dialled for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    /// The address itself is of a forbidden class.
    Is(ForbiddenClass),
    /// An IPv6 address that carries a forbidden IPv4 address.
    Embeds {
        form: Ipv4Embedding,
        ipv4: Ipv4Addr,
        class: ForbiddenClass,
    },
}

impl AddressRefusal {
    /// The class of the address that would be reached.
    pub fn class(self) -> ForbiddenClass {
        match self {
            AddressRefusal::Is(class) | AddressRefusal::Embeds { class, .. } => class,
        }
    }
}

impl fmt::Display for AddressRefusal {
    /// A noun phrase to complete "… is …": "a loopback address", or "a 6to4 IPv6 address
    /// embedding the loopback address 127.0.0.1".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddressRefusal::Is(class) => class.fmt(f),
            AddressRefusal::Embeds { form, ipv4, class } => {
                write!(
                    f,
                    "{form} embedding the {} address {ipv4}",
                    class.adjective()
                )?;
                match form {
                    Ipv4Embedding::TeredoServer => f.write_str(" as its server"),
                    Ipv4Embedding::TeredoClient => f.write_str(" as its client"),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Whether the broker may dial `ip` for `target`, judged after DNS resolution (and, for IP
/// literals, already at load time).
///
/// Every forbidden class (module docs) is refused unless `target.allow_loopback`, including
/// an IPv6 address that carries a forbidden IPv4 address, so no IPv6 spelling slips past the
/// IPv4 rules.
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
        IpAddr::V4(ip) => classify_v4(ip).map(AddressRefusal::Is),
        IpAddr::V6(ip) => match classify_v6(ip) {
            Some(class) => Some(AddressRefusal::Is(class)),
            None => embedded_ipv4(ip)
                .into_iter()
                .flatten()
                .find_map(|(form, ipv4)| {
                    classify_v4(ipv4).map(|class| AddressRefusal::Embeds { form, ipv4, class })
                }),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<ForbiddenClass> {
    // 0.0.0.0/8 rather than only 0.0.0.0: "this network" (RFC 1122) is never a valid
    // destination, and Linux routes 0.0.0.0 to the local host.
    if ip.octets()[0] == 0 {
        Some(ForbiddenClass::Unspecified)
    } else if ip.is_loopback() {
        Some(ForbiddenClass::Loopback)
    } else if ip.is_link_local() {
        Some(ForbiddenClass::LinkLocal)
    } else if ip.is_multicast() {
        Some(ForbiddenClass::Multicast)
    } else if ip.is_broadcast() {
        Some(ForbiddenClass::Broadcast)
    } else {
        None
    }
}

/// The class of `ip` as an IPv6 address, before looking at any IPv4 address it carries.
fn classify_v6(ip: Ipv6Addr) -> Option<ForbiddenClass> {
    if ip.is_unspecified() {
        Some(ForbiddenClass::Unspecified)
    } else if ip.is_loopback() {
        Some(ForbiddenClass::Loopback)
    } else if ip.is_unicast_link_local() {
        Some(ForbiddenClass::LinkLocal)
    } else if ip.is_multicast() {
        Some(ForbiddenClass::Multicast)
    } else {
        None
    }
}

/// The IPv4 addresses `ip` carries (module docs). Teredo carries two, the client first: the
/// client's address is where a Teredo relay sends the packets.
fn embedded_ipv4(ip: Ipv6Addr) -> [Option<(Ipv4Embedding, Ipv4Addr)>; 2] {
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let one = |form, ipv4| [Some((form, ipv4)), None];
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] => one(Ipv4Embedding::Mapped, last),
        [0, 0, 0, 0, 0xffff, 0, _, _] => one(Ipv4Embedding::Translated, last),
        // `::` and `::1` never get here: classify_v6 judges them as themselves.
        [0, 0, 0, 0, 0, 0, _, _] => one(Ipv4Embedding::Compatible, last),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => one(Ipv4Embedding::Nat64, last),
        // RFC 6052 §2.2, prefix length 48: two bytes before the `u` octet (byte 8), two after.
        [0x64, 0xff9b, 1, ..] => one(
            Ipv4Embedding::Nat64LocalUse,
            Ipv4Addr::new(o[6], o[7], o[9], o[10]),
        ),
        [0x2002, ..] => one(
            Ipv4Embedding::SixToFour,
            Ipv4Addr::new(o[2], o[3], o[4], o[5]),
        ),
        [0x2001, 0, ..] => [
            Some((Ipv4Embedding::TeredoClient, !last)),
            Some((
                Ipv4Embedding::TeredoServer,
                Ipv4Addr::new(o[4], o[5], o[6], o[7]),
            )),
        ],
        _ => [None, None],
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
///
/// A host that is neither a literal nor a name is refused; when the system resolver would
/// read it as an IPv4 address (`0x7f000001`, `127.1`; module docs), the error says which.
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
            // One trailing dot is the DNS root, as in `is_host_name`.
            return Err(match inet_aton(host.strip_suffix('.').unwrap_or(host)) {
                Some(ipv4) => format!(
                    "has `{host}`, a numeric spelling of {ipv4}; write the address as {ipv4}"
                ),
                None => format!("has `{host}`, which is not a valid host name or IP address"),
            });
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
/// 253 in all, optionally ending in one dot.
///
/// A host that [ends in a number](ends_in_a_number) is not a name: the resolver would read
/// `0x7f000001` or `127.1` as an IPv4 address, and a mistyped `10.0.0.256` is no name either.
/// So every name this accepts reaches the resolver as a name.
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
        && !ends_in_a_number(host)
}

/// The WHATWG URL Standard's "ends in a number" (host parsing): after dropping one trailing
/// dot, the last label is all decimal digits (which covers octal `0…`), or `0x`/`0X`
/// followed by hexadecimal digits or nothing. Such a host is an IPv4 address or invalid,
/// never a name.
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex_digits = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || hex_digits.is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The IPv4 address `inet_aton` reads in `text`, as glibc's and musl's resolvers do before
/// any DNS lookup: one to four dot-separated numbers, each decimal, octal (`0…`) or
/// hexadecimal (`0x…`); every number but the last is one byte, and the last fills the bytes
/// left (`127.1` is 127.0.0.1, `2130706433` is 127.0.0.1).
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let mut numbers = Vec::with_capacity(4);
    for part in text.split('.') {
        if numbers.len() == 4 {
            return None;
        }
        numbers.push(inet_aton_number(part)?);
    }
    let (&last, leading) = numbers.split_last()?;
    // 32, 24, 16 or 8 bits left for the last number.
    let last_bits = 32 - 8 * leading.len();
    if leading.iter().any(|&byte| byte > 0xff) || u64::from(last) >> last_bits != 0 {
        return None;
    }
    let high = leading
        .iter()
        .fold(0u64, |acc, &byte| acc << 8 | u64::from(byte));
    u32::try_from(high << last_bits | u64::from(last))
        .ok()
        .map(Ipv4Addr::from)
}

/// One number of `inet_aton`: decimal, octal after a leading `0`, hexadecimal after `0x` (at
/// least one digit), at most 32 bits.
fn inet_aton_number(text: &str) -> Option<u32> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => match text.strip_prefix('0') {
            Some(octal) if !octal.is_empty() => (octal, 8),
            _ => (text, 10),
        },
    };
    // Checked here because `from_str_radix` also takes a leading `+`.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod proptests;

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
            allow_broker_port: None,
            critical: false,
        }
    }

    fn check(ip: &str) -> Result<(), AddressRefusal> {
        check_dial_address(&target(false), ip.parse().unwrap())
    }

    /// The refusal of an IPv6 address that carries `ipv4` in `form`.
    fn embeds(form: Ipv4Embedding, ipv4: &str, class: ForbiddenClass) -> AddressRefusal {
        AddressRefusal::Embeds {
            form,
            ipv4: ipv4.parse().unwrap(),
            class,
        }
    }

    #[test]
    fn each_refused_class_is_refused_for_ipv4() {
        use AddressRefusal::Is;
        use ForbiddenClass::*;
        assert_eq!(check("127.0.0.1"), Err(Is(Loopback)));
        assert_eq!(check("127.255.255.254"), Err(Is(Loopback)));
        assert_eq!(check("169.254.169.254"), Err(Is(LinkLocal)));
        assert_eq!(check("169.254.0.1"), Err(Is(LinkLocal)));
        assert_eq!(check("0.0.0.0"), Err(Is(Unspecified)));
        assert_eq!(check("0.1.2.3"), Err(Is(Unspecified)));
        assert_eq!(check("224.0.0.1"), Err(Is(Multicast)));
        assert_eq!(check("239.255.255.255"), Err(Is(Multicast)));
        assert_eq!(check("255.255.255.255"), Err(Is(Broadcast)));
    }

    #[test]
    fn each_refused_class_is_refused_for_ipv6() {
        use AddressRefusal::Is;
        use ForbiddenClass::*;
        assert_eq!(check("::1"), Err(Is(Loopback)));
        assert_eq!(check("fe80::1"), Err(Is(LinkLocal)));
        assert_eq!(check("febf:ffff::1"), Err(Is(LinkLocal)));
        assert_eq!(check("::"), Err(Is(Unspecified)));
        assert_eq!(check("ff02::1"), Err(Is(Multicast)));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_as_the_ipv4_address() {
        use ForbiddenClass::*;
        use Ipv4Embedding::Mapped;
        let mapped = |ipv4, class| Err(embeds(Mapped, ipv4, class));
        assert_eq!(check("::ffff:127.0.0.1"), mapped("127.0.0.1", Loopback));
        assert_eq!(
            check("::ffff:169.254.169.254"),
            mapped("169.254.169.254", LinkLocal)
        );
        assert_eq!(check("::ffff:0.0.0.0"), mapped("0.0.0.0", Unspecified));
        assert_eq!(check("::ffff:224.0.0.1"), mapped("224.0.0.1", Multicast));
        assert_eq!(
            check("::ffff:255.255.255.255"),
            mapped("255.255.255.255", Broadcast)
        );
        assert_eq!(check("::ffff:10.1.2.3"), Ok(()));
    }

    #[test]
    fn ipv4_compatible_ipv6_other_than_unspecified_and_loopback_is_judged_as_ipv4() {
        use ForbiddenClass::*;
        use Ipv4Embedding::Compatible;
        assert_eq!(
            check("::127.0.0.1"),
            Err(embeds(Compatible, "127.0.0.1", Loopback))
        );
        assert_eq!(
            check("::169.254.169.254"),
            Err(embeds(Compatible, "169.254.169.254", LinkLocal))
        );
        // `::2` is 0.0.0.2, in "this network".
        assert_eq!(
            check("::2"),
            Err(embeds(Compatible, "0.0.0.2", Unspecified))
        );
        assert_eq!(check("::"), Err(AddressRefusal::Is(Unspecified)));
        assert_eq!(check("::1"), Err(AddressRefusal::Is(Loopback)));
        assert_eq!(check("::10.0.0.1"), Ok(()));
    }

    #[test]
    fn ipv4_translated_ipv6_is_judged_as_the_ipv4_address() {
        use ForbiddenClass::*;
        use Ipv4Embedding::Translated;
        assert_eq!(
            check("::ffff:0:127.0.0.1"),
            Err(embeds(Translated, "127.0.0.1", Loopback))
        );
        assert_eq!(
            check("::ffff:0:224.0.0.251"),
            Err(embeds(Translated, "224.0.0.251", Multicast))
        );
        assert_eq!(check("::ffff:0:10.0.0.1"), Ok(()));
    }

    #[test]
    fn nat64_well_known_prefix_is_judged_as_the_ipv4_address_in_its_last_32_bits() {
        use ForbiddenClass::*;
        use Ipv4Embedding::Nat64;
        assert_eq!(
            check("64:ff9b::7f00:1"),
            Err(embeds(Nat64, "127.0.0.1", Loopback))
        );
        assert_eq!(
            check("64:ff9b::169.254.169.254"),
            Err(embeds(Nat64, "169.254.169.254", LinkLocal))
        );
        assert_eq!(check("64:ff9b::a00:1"), Ok(()));
        // Only 64:ff9b::/96: the rest of 64:ff9b::/32 is no translation prefix.
        assert_eq!(check("64:ff9b:0:0:1::7f00:1"), Ok(()));
    }

    #[test]
    fn nat64_local_use_prefix_is_judged_by_the_ipv4_bits_around_the_u_octet() {
        use ForbiddenClass::*;
        use Ipv4Embedding::Nat64LocalUse;
        // RFC 6052 §2.2, /48: bytes 6-7 are the first half, byte 8 is `u`, bytes 9-10 the
        // second half: 127.0.0.1 is 7f00 | 00 | 0001.
        assert_eq!(
            check("64:ff9b:1:7f00:0:100::"),
            Err(embeds(Nat64LocalUse, "127.0.0.1", Loopback))
        );
        assert_eq!(
            check("64:ff9b:1:a9fe:a9:fe00::"),
            Err(embeds(Nat64LocalUse, "169.254.169.254", LinkLocal))
        );
        // A non-zero `u` octet does not hide the address.
        assert_eq!(
            check("64:ff9b:1:7f00:ff00:100::"),
            Err(embeds(Nat64LocalUse, "127.0.0.1", Loopback))
        );
        assert_eq!(check("64:ff9b:1:a00:0:100::"), Ok(()));
        assert_eq!(check("64:ff9b:2::7f00:1"), Ok(()));
    }

    #[test]
    fn six_to_four_is_judged_by_the_ipv4_address_in_bits_16_to_48() {
        use ForbiddenClass::*;
        use Ipv4Embedding::SixToFour;
        assert_eq!(
            check("2002:7f00:1::1"),
            Err(embeds(SixToFour, "127.0.0.1", Loopback))
        );
        assert_eq!(
            check("2002:a9fe:a9fe:1::1"),
            Err(embeds(SixToFour, "169.254.169.254", LinkLocal))
        );
        assert_eq!(
            check("2002:ffff:ffff::1"),
            Err(embeds(SixToFour, "255.255.255.255", Broadcast))
        );
        assert_eq!(check("2002:c000:22d::1"), Ok(()));
    }

    #[test]
    fn teredo_is_refused_when_its_server_or_its_client_is_forbidden() {
        use ForbiddenClass::*;
        use Ipv4Embedding::{TeredoClient, TeredoServer};
        // RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (stored inverted).
        assert_eq!(check("2001:0:4136:e378:8000:63bf:3fff:fdd2"), Ok(()));
        assert_eq!(
            check("2001:0:7f00:1:8000:63bf:3fff:fdd2"),
            Err(embeds(TeredoServer, "127.0.0.1", Loopback))
        );
        assert_eq!(
            check("2001:0:4136:e378:8000:63bf:80ff:fffe"),
            Err(embeds(TeredoClient, "127.0.0.1", Loopback))
        );
        // Both forbidden: the client is named, it is where the packets would go.
        assert_eq!(
            check("2001:0:a9fe:a9fe:8000:63bf:80ff:fffe"),
            Err(embeds(TeredoClient, "127.0.0.1", Loopback))
        );
        // 2001:1::/32 is not Teredo.
        assert_eq!(check("2001:1:7f00:1::"), Ok(()));
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
            "fd12:3456:789a::1",
            "fec0::1",
            "100::1",
            "2003:7f00:1::1",
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
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
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
        use AddressRefusal::Is;
        use ForbiddenClass::*;
        assert_eq!(Is(Loopback).to_string(), "a loopback address");
        assert_eq!(Is(LinkLocal).to_string(), "a link-local address");
        assert_eq!(Is(Unspecified).to_string(), "an unspecified address");
        assert_eq!(Is(Multicast).to_string(), "a multicast address");
        assert_eq!(Is(Broadcast).to_string(), "the broadcast address");
    }

    #[test]
    fn embedded_refusals_say_which_ipv4_address_the_ipv6_address_carries() {
        let said = |ip: &str| check(ip).unwrap_err().to_string();
        assert_eq!(
            said("::ffff:127.0.0.1"),
            "an IPv4-mapped IPv6 address embedding the loopback address 127.0.0.1"
        );
        assert_eq!(
            said("::169.254.169.254"),
            "an IPv4-compatible IPv6 address embedding the link-local address 169.254.169.254"
        );
        assert_eq!(
            said("::ffff:0:0.0.0.0"),
            "an IPv4-translated IPv6 address embedding the unspecified address 0.0.0.0"
        );
        assert_eq!(
            said("64:ff9b::224.0.0.1"),
            "a NAT64 IPv6 address embedding the multicast address 224.0.0.1"
        );
        assert_eq!(
            said("64:ff9b:1:7f00:0:100::"),
            "a local-use NAT64 IPv6 address embedding the loopback address 127.0.0.1"
        );
        assert_eq!(
            said("2002:ffff:ffff::1"),
            "a 6to4 IPv6 address embedding the broadcast address 255.255.255.255"
        );
        assert_eq!(
            said("2001:0:7f00:1:8000:63bf:3fff:fdd2"),
            "a Teredo IPv6 address embedding the loopback address 127.0.0.1 as its server"
        );
        assert_eq!(
            said("2001:0:4136:e378:8000:63bf:80ff:fffe"),
            "a Teredo IPv6 address embedding the loopback address 127.0.0.1 as its client"
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

    #[test]
    fn numeric_host_spellings_are_refused_with_the_address_they_mean() {
        for (host, ipv4) in [
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
            ("0", "0.0.0.0"),
            ("4294967295", "255.255.255.255"),
            // Not only forbidden addresses: a leading zero means octal, which surprises.
            ("010.0.0.1", "8.0.0.1"),
            ("10.0.0.010", "10.0.0.8"),
            ("10.1", "10.0.0.1"),
            ("8080", "0.0.31.144"),
        ] {
            assert_eq!(
                parse_host_port(&format!("{host}:22")),
                Err(format!(
                    "has `{host}`, a numeric spelling of {ipv4}; write the address as {ipv4}"
                )),
                "{host}"
            );
        }
    }

    #[test]
    fn hosts_ending_in_a_number_the_resolver_would_not_read_are_not_names_either() {
        for host in [
            "db.123",
            "db.0x1f",
            "db.0x",
            "db.0X",
            "0x",
            "08.0.0.1",
            "0x100000000",
            "4294967296",
            "256.0.0.1",
            "1.2.3.4.5",
            "1.256.0",
            "1.2.65536",
            "0x7f.0x1000000",
        ] {
            assert_eq!(
                parse_host_port(&format!("{host}:22")),
                Err(format!(
                    "has `{host}`, which is not a valid host name or IP address"
                )),
                "{host}"
            );
        }
    }

    #[test]
    fn names_that_only_look_numeric_stay_names() {
        for host in [
            "0x7f000001.hospital.internal",
            "127.0.0.1.nip.io",
            "db-0x1f",
            "db.0x1g",
            "db.0b1",
            "db.1e3",
            "x0x7f000001",
        ] {
            let parsed = parse_host_port(&format!("{host}:22"));
            assert_eq!(parsed.map(|hp| hp.ip), Ok(None), "{host}");
        }
    }
}
