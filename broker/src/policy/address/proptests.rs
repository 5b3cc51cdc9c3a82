//! The classifier against a reference written from prefix tables alone, on random addresses
//! biased toward the special prefixes.
//!
//! The reference shares nothing with `classify` but the result type: it matches `u32`/`u128`
//! masks, where the classifier asks `std` and matches segments, and it reads embedded IPv4
//! addresses as (shift, width) bit fields, where the classifier picks octets.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::ForbiddenClass::*;
use super::{AddressRefusal, ForbiddenClass, Ipv4Embedding, classify};

/// IPv4 networks refused as themselves: (network, mask, class).
const V4_FORBIDDEN: [(u32, u32, ForbiddenClass); 5] = [
    (0x0000_0000, 0xff00_0000, Unspecified), // 0.0.0.0/8
    (0x7f00_0000, 0xff00_0000, Loopback),    // 127.0.0.0/8
    (0xa9fe_0000, 0xffff_0000, LinkLocal),   // 169.254.0.0/16
    (0xe000_0000, 0xf000_0000, Multicast),   // 224.0.0.0/4
    (0xffff_ffff, 0xffff_ffff, Broadcast),   // 255.255.255.255/32
];

/// IPv6 networks refused as themselves, checked before any embedded IPv4.
const V6_FORBIDDEN: [(u128, u128, ForbiddenClass); 4] = [
    (0, u128::MAX, Unspecified),               // ::/128
    (1, u128::MAX, Loopback),                  // ::1/128
    (0xfe80 << 112, 0xffc0 << 112, LinkLocal), // fe80::/10
    (0xff00 << 112, 0xff00 << 112, Multicast), // ff00::/8
];

/// An IPv6 prefix that carries IPv4: the IPv4 address is its bit fields `(shift, width)`,
/// most significant first, XORed with `invert`.
struct Form {
    network: u128,
    mask: u128,
    form: Ipv4Embedding,
    fields: &'static [(u32, u32)],
    invert: u32,
}

const LAST_32: &[(u32, u32)] = &[(0, 32)];

/// In the order they are judged; Teredo's two rows share a prefix, client first.
const FORMS: [Form; 8] = [
    Form {
        network: 0xffff << 32, // ::ffff:0:0/96
        mask: u128::MAX << 32,
        form: Ipv4Embedding::Mapped,
        fields: LAST_32,
        invert: 0,
    },
    Form {
        network: 0xffff << 48, // ::ffff:0:0:0/96
        mask: u128::MAX << 32,
        form: Ipv4Embedding::Translated,
        fields: LAST_32,
        invert: 0,
    },
    Form {
        network: 0, // ::/96
        mask: u128::MAX << 32,
        form: Ipv4Embedding::Compatible,
        fields: LAST_32,
        invert: 0,
    },
    Form {
        network: 0x0064_ff9b << 96, // 64:ff9b::/96
        mask: u128::MAX << 32,
        form: Ipv4Embedding::Nat64,
        fields: LAST_32,
        invert: 0,
    },
    Form {
        network: 0x0064_ff9b_0001 << 80, // 64:ff9b:1::/48
        mask: u128::MAX << 80,
        form: Ipv4Embedding::Nat64LocalUse,
        fields: &[(64, 16), (40, 16)], // bits 48..64, then 72..88
        invert: 0,
    },
    Form {
        network: 0x2002 << 112, // 2002::/16
        mask: 0xffff << 112,
        form: Ipv4Embedding::SixToFour,
        fields: &[(80, 32)], // bits 16..48
        invert: 0,
    },
    Form {
        network: 0x2001_0000 << 96, // 2001::/32
        mask: u128::MAX << 96,
        form: Ipv4Embedding::TeredoClient,
        fields: LAST_32,
        invert: u32::MAX,
    },
    Form {
        network: 0x2001_0000 << 96,
        mask: u128::MAX << 96,
        form: Ipv4Embedding::TeredoServer,
        fields: &[(64, 32)], // bits 32..64
        invert: 0,
    },
];

fn lookup<T: Copy + std::ops::BitAnd<Output = T> + PartialEq>(
    table: &[(T, T, ForbiddenClass)],
    address: T,
) -> Option<ForbiddenClass> {
    table
        .iter()
        .find(|&&(network, mask, _)| address & mask == network)
        .map(|&(_, _, class)| class)
}

fn width_mask(width: u32) -> u128 {
    (1 << width) - 1
}

impl Form {
    fn ipv4(&self, address: u128) -> u32 {
        let bits = self.fields.iter().fold(0u128, |acc, &(shift, width)| {
            (acc << width) | ((address >> shift) & width_mask(width))
        });
        bits as u32 ^ self.invert
    }

    /// `host_bits` inside this prefix, with `ipv4` written into its fields.
    fn place(&self, ipv4: u32, host_bits: u128) -> u128 {
        let ipv4 = ipv4 ^ self.invert;
        let mut address = self.network | (host_bits & !self.mask);
        let mut left = 32;
        for &(shift, width) in self.fields {
            left -= width;
            let field = (u128::from(ipv4) >> left) & width_mask(width);
            address = (address & !(width_mask(width) << shift)) | (field << shift);
        }
        address
    }
}

fn reference(ip: IpAddr) -> Option<AddressRefusal> {
    match ip {
        IpAddr::V4(ip) => lookup(&V4_FORBIDDEN, u32::from(ip)).map(AddressRefusal::Is),
        IpAddr::V6(ip) => {
            let address = u128::from(ip);
            if let Some(class) = lookup(&V6_FORBIDDEN, address) {
                return Some(AddressRefusal::Is(class));
            }
            FORMS
                .iter()
                .filter(|form| address & form.mask == form.network)
                .find_map(|form| {
                    let ipv4 = form.ipv4(address);
                    lookup(&V4_FORBIDDEN, ipv4).map(|class| AddressRefusal::Embeds {
                        form: form.form,
                        ipv4: Ipv4Addr::from(ipv4),
                        class,
                    })
                })
        }
    }
}

/// IPv4 networks the generator aims at: the forbidden ones and the ordinary ones a hospital
/// uses, as (network, mask).
fn ipv4_networks() -> Vec<(u32, u32)> {
    let mut networks: Vec<(u32, u32)> = V4_FORBIDDEN.iter().map(|&(n, m, _)| (n, m)).collect();
    networks.extend([
        (0x0a00_0000, 0xff00_0000), // 10.0.0.0/8
        (0x6440_0000, 0xffc0_0000), // 100.64.0.0/10
        (0xac10_0000, 0xfff0_0000), // 172.16.0.0/12
        (0xc0a8_0000, 0xffff_0000), // 192.168.0.0/16
        (0xf000_0000, 0xf000_0000), // 240.0.0.0/4, reserved but not refused
    ]);
    networks
}

/// Any IPv4 address, or one inside a network of `ipv4_networks`, or just outside one.
fn ipv4() -> impl Strategy<Value = u32> {
    let networks = ipv4_networks();
    prop_oneof![
        1 => any::<u32>(),
        4 => (select(networks.clone()), any::<u32>())
            .prop_map(|((network, mask), host)| network | (host & !mask)),
        1 => (select(networks), any::<bool>()).prop_map(|((network, mask), below)| {
            if below {
                network.wrapping_sub(1)
            } else {
                (network | !mask).wrapping_add(1)
            }
        }),
    ]
}

/// IPv6 prefixes the generator aims at besides the forms: the forbidden ones and their
/// neighbours, as (network, mask).
fn ipv6_networks() -> Vec<(u128, u128)> {
    let mut networks: Vec<(u128, u128)> = V6_FORBIDDEN.iter().map(|&(n, m, _)| (n, m)).collect();
    networks.extend(FORMS.iter().map(|form| (form.network, form.mask)));
    networks.extend([
        (0xfec0 << 112, 0xffc0 << 112),            // fec0::/10, site-local
        (0xfe00 << 112, 0xff80 << 112),            // fe00::/9, below link-local
        (0xfc00 << 112, 0xfe00 << 112),            // fc00::/7, unique-local
        (0x2001_0db8 << 96, u128::MAX << 96),      // 2001:db8::/32
        (0x2001_0001 << 96, u128::MAX << 96),      // 2001:1::/32, beside Teredo
        (0x2003 << 112, 0xffff << 112),            // 2003::/16, beside 6to4
        (0x0064_ff9b_0002 << 80, u128::MAX << 80), // 64:ff9b:2::/48
        ((0x0064_ff9b << 96) | (1 << 32), u128::MAX << 32), // 64:ff9b::1:0:0/96
        (0x0001 << 32, u128::MAX << 32),           // ::1:0:0/96, beside mapped
        (0, u128::MAX << 8),                       // ::/120: ::, ::1, ::2 …
    ]);
    networks
}

/// Any IPv6 address, or one inside a prefix of `ipv6_networks`, or one of the forms carrying
/// an address from `ipv4()`.
fn ipv6() -> impl Strategy<Value = u128> {
    prop_oneof![
        1 => any::<u128>(),
        3 => (select(ipv6_networks()), any::<u128>())
            .prop_map(|((network, mask), host)| network | (host & !mask)),
        6 => (0..FORMS.len(), ipv4(), any::<u128>())
            .prop_map(|(form, ipv4, host)| FORMS[form].place(ipv4, host)),
    ]
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        ipv4().prop_map(|ip| IpAddr::V4(Ipv4Addr::from(ip))),
        ipv6().prop_map(|ip| IpAddr::V6(Ipv6Addr::from(ip))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_classifier_agrees_with_the_prefix_table_reference(ip in address()) {
        prop_assert_eq!(classify(ip), reference(ip), "{}", ip);
    }
}

/// What a verdict is about, for counting which ones the generator reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    Allowed { v6: bool },
    Is { v6: bool, class: u8 },
    Embeds { form: u8, class: u8 },
}

fn reached(ip: IpAddr) -> Reached {
    let v6 = ip.is_ipv6();
    match reference(ip) {
        None => Reached::Allowed { v6 },
        Some(AddressRefusal::Is(class)) => Reached::Is {
            v6,
            class: class as u8,
        },
        Some(AddressRefusal::Embeds { form, class, .. }) => Reached::Embeds {
            form: form as u8,
            class: class as u8,
        },
    }
}

#[test]
fn the_generator_reaches_every_class_in_every_form() {
    let mut runner = TestRunner::deterministic();
    let strategy = address();
    let mut seen = BTreeSet::new();
    for _ in 0..20_000 {
        let ip = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(reached(ip));
    }
    let classes = [Loopback, LinkLocal, Unspecified, Multicast, Broadcast];
    let mut expected = BTreeSet::from([
        Reached::Allowed { v6: false },
        Reached::Allowed { v6: true },
    ]);
    for class in classes {
        expected.insert(Reached::Is {
            v6: false,
            class: class as u8,
        });
        if class != Broadcast {
            expected.insert(Reached::Is {
                v6: true,
                class: class as u8,
            });
        }
        for form in &FORMS {
            expected.insert(Reached::Embeds {
                form: form.form as u8,
                class: class as u8,
            });
        }
    }
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
