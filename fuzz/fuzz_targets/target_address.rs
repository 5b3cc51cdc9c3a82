//! A target's `host:port` as a policy file gives it (`policy::parse_target_address`), and
//! `policy::check_dial_address` on what it yields and on arbitrary IP addresses.
//!
//! Checked, beyond "never panics": an address that parses has a host and a port other than 0,
//! the IP it reports is the host read as an IP literal (what the broker later dials without
//! DNS), and `Target::address()` of it parses back to the same host, port and IP; the dial
//! check lets everything through for `allow_loopback` targets, and refuses an IPv4-mapped IPv6
//! address exactly when it refuses the IPv4 address it maps, for the same class of address (the
//! refusal itself differs: it names the embedding).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use sekisho_broker::policy::{
    AddressRefusal, ForbiddenClass, Target, check_dial_address, parse_target_address,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_address(text);
    }
    // The dial check on addresses a resolver could return, whatever the text parsed to.
    if let Some(bytes) = data.first_chunk::<16>() {
        check_dial(IpAddr::V6(Ipv6Addr::from(*bytes)));
    }
    if let Some(bytes) = data.first_chunk::<4>() {
        check_dial(IpAddr::V4(Ipv4Addr::from(*bytes)));
    }
});

fn target(host: String, port: u16, allow_loopback: bool) -> Target {
    Target {
        name: "fuzz".to_owned(),
        host,
        port,
        description: None,
        allow_loopback,
        allow_file_share: false,
        allow_broker_port: None,
        critical: false,
    }
}

fn check_address(text: &str) {
    let (host, port, ip) = match parse_target_address(text) {
        Ok(parsed) => parsed,
        Err(reason) => {
            assert!(!reason.is_empty());
            return;
        }
    };
    assert!(!host.is_empty());
    assert_ne!(port, 0);
    let target = target(host.clone(), port, false);
    assert_eq!(
        ip,
        target.ip_literal(),
        "{text:?}: the IP is not the host's literal"
    );
    assert_eq!(
        parse_target_address(&target.address()),
        Ok((host, port, ip)),
        "{text:?} does not read back from {}",
        target.address()
    );
    if let Some(ip) = ip {
        check_dial(ip);
    }
}

fn check_dial(ip: IpAddr) {
    let strict = target("fuzz.hospital.internal".to_owned(), 22, false);
    let loose = target("fuzz.hospital.internal".to_owned(), 22, true);
    let refused_class = |ip: IpAddr| -> Option<ForbiddenClass> {
        check_dial_address(&strict, ip)
            .err()
            .map(AddressRefusal::class)
    };
    assert_eq!(check_dial_address(&loose, ip), Ok(()));
    let (v4, v6) = match ip {
        IpAddr::V4(v4) => (v4, v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (v4, v6),
            None => return,
        },
    };
    assert_eq!(
        refused_class(IpAddr::V4(v4)),
        refused_class(IpAddr::V6(v6)),
        "{v6} is judged unlike {v4}"
    );
}
