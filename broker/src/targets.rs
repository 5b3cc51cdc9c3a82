//! A request's targets, resolved once and pinned for its session.
//!
//! The targets of a request are resolved when the request is approved. Every address a name
//! resolves to is checked (no loopback, link-local, unspecified, multicast or broadcast unless
//! the target allows it), and the target is pinned to the addresses that pass; the pinned
//! addresses are stored with the request and travel with the session. A forward dials only
//! pinned addresses, so a DNS change after approval cannot redirect it, and the broker drops
//! its own listening sockets from them at dial time (only it knows them): an address on this
//! host (loopback, unspecified, or any address the host holds) at the port of any socket the
//! broker listens on (QUIC, the web UI), unless the target says why it may
//! (`allow_broker_port`).

use std::collections::HashMap;
use std::net::SocketAddr;

use proto::{ErrorCode, ErrorMessage};

use crate::policy::{Target, VendorPolicy, check_dial_address};

/// Why a target of the vendor's policy cannot be reached in this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetProblem {
    /// The name did not resolve.
    Unresolvable(String),
    /// Every address it resolved to is forbidden.
    Forbidden(String),
}

impl TargetProblem {
    /// The refusal the technician sees.
    pub fn to_refusal(&self, target: &str) -> ErrorMessage {
        match self {
            TargetProblem::Unresolvable(reason) => ErrorMessage::new(
                ErrorCode::TargetUnreachable,
                format!(
                    "The broker could not find the address of `{target}` ({reason}); tell the hospital's IT."
                ),
            ),
            TargetProblem::Forbidden(reason) => ErrorMessage::new(
                ErrorCode::TargetAddressForbidden,
                format!(
                    "The broker will not connect to `{target}`: it points at {reason}, which is never a target; tell the hospital's IT to correct the policy."
                ),
            ),
        }
    }
}

/// The vendor's targets with the addresses pinned for one session.
#[derive(Debug, Clone, Default)]
pub struct PinnedTargets {
    targets: HashMap<String, Result<Vec<SocketAddr>, TargetProblem>>,
}

impl PinnedTargets {
    /// Resolves and checks the targets `names` of `vendor` (names the vendor does not have
    /// are left out; the caller has refused them already).
    pub async fn resolve(vendor: &VendorPolicy, names: &[String]) -> PinnedTargets {
        let mut targets = HashMap::new();
        for target in vendor.targets.iter().filter(|t| names.contains(&t.name)) {
            let pinned = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addresses) => pin(target, addresses.collect(), &[]),
                Err(e) => Err(TargetProblem::Unresolvable(e.to_string())),
            };
            if let Err(problem) = &pinned {
                tracing::warn!(vendor = %vendor.id, target = %target.name, ?problem, "target cannot be pinned");
            }
            targets.insert(target.name.clone(), pinned);
        }
        PinnedTargets { targets }
    }

    /// The first target that could not be pinned, with its problem.
    pub fn first_problem(&self) -> Option<(&str, &TargetProblem)> {
        let mut names: Vec<&String> = self.targets.keys().collect();
        names.sort();
        names
            .into_iter()
            .find_map(|name| match &self.targets[name] {
                Err(problem) => Some((name.as_str(), problem)),
                Ok(_) => None,
            })
    }

    /// The pinned addresses of `name`: `None` if the session has no such target.
    pub fn get(&self, name: &str) -> Option<&Result<Vec<SocketAddr>, TargetProblem>> {
        self.targets.get(name)
    }

    /// The addresses of `name` the broker may dial: pinned, and not one of its own listening
    /// sockets (`own_addresses`) unless `broker_port_allowed`.
    pub fn dialable(
        &self,
        name: &str,
        own_addresses: &[SocketAddr],
        broker_port_allowed: bool,
    ) -> Option<Result<Vec<SocketAddr>, TargetProblem>> {
        Some(self.get(name)?.clone().and_then(|addresses| {
            let allowed: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|address| broker_port_allowed || !is_own_address(*address, own_addresses))
                .collect();
            if allowed.is_empty() {
                Err(TargetProblem::Forbidden("the broker itself".to_owned()))
            } else {
                Ok(allowed)
            }
        }))
    }

    /// The stored form: one line per target, `name<TAB>addr,addr`. Only pinned targets are
    /// stored; an approval with a target that could not be pinned is refused.
    pub fn encode(&self) -> String {
        let mut lines: Vec<String> = self
            .targets
            .iter()
            .filter_map(|(name, pinned)| {
                let addresses = pinned.as_ref().ok()?;
                let joined: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
                Some(format!("{name}\t{}", joined.join(",")))
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Reads the stored form; lines that do not parse are left out (and so are not dialled).
    pub fn decode(text: &str) -> PinnedTargets {
        let targets = text
            .lines()
            .filter_map(|line| {
                let (name, addresses) = line.split_once('\t')?;
                let addresses: Vec<SocketAddr> = addresses
                    .split(',')
                    .filter_map(|address| address.parse().ok())
                    .collect();
                (!addresses.is_empty()).then(|| (name.to_owned(), Ok(addresses)))
            })
            .collect();
        PinnedTargets { targets }
    }
}

fn pin(
    target: &Target,
    resolved: Vec<SocketAddr>,
    own_addresses: &[SocketAddr],
) -> Result<Vec<SocketAddr>, TargetProblem> {
    let mut first_refusal = None;
    let mut allowed = Vec::new();
    for address in resolved {
        let verdict = check_dial_address(target, address.ip())
            .map_err(|refusal| refusal.to_string())
            .and_then(|()| {
                if is_own_address(address, own_addresses) {
                    Err("the broker itself".to_owned())
                } else {
                    Ok(())
                }
            });
        match verdict {
            Ok(()) => allowed.push(address),
            Err(reason) => {
                first_refusal.get_or_insert(reason);
            }
        }
    }
    match (allowed.is_empty(), first_refusal) {
        (false, _) => Ok(allowed),
        (true, Some(reason)) => Err(TargetProblem::Forbidden(reason)),
        (true, None) => Err(TargetProblem::Unresolvable("no addresses".into())),
    }
}

/// Whether dialling `address` could reach one of the broker's own listening sockets: the
/// same port, and the same IP or any address of this host. Deliberately wide: a socket bound
/// to `0.0.0.0` answers on every address of the host, and one on a single address is still
/// the broker on that host.
fn is_own_address(address: SocketAddr, own_addresses: &[SocketAddr]) -> bool {
    let ip = address.ip().to_canonical();
    own_addresses.iter().any(|own| {
        own.port() == address.port() && (own.ip().to_canonical() == ip || is_host_address(ip))
    })
}

/// Whether `ip` is an address of this host: loopback, unspecified (which reaches the host),
/// or one the host holds. The last is asked of the kernel: only a local address can be bound
/// (without `IP_FREEBIND`, which this does not set).
fn is_host_address(ip: std::net::IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn target(allow_loopback: bool) -> Target {
        Target {
            name: "web".into(),
            host: "127.0.0.1".into(),
            port: 8080,
            description: None,
            allow_loopback,
            allow_file_share: false,
            allow_broker_port: None,
            critical: false,
        }
    }

    fn addr(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    #[test]
    fn loopback_is_pinned_only_when_the_target_allows_it() {
        assert_eq!(
            pin(&target(true), vec![addr([127, 0, 0, 1], 8080)], &[]),
            Ok(vec![addr([127, 0, 0, 1], 8080)])
        );
        assert!(matches!(
            pin(&target(false), vec![addr([127, 0, 0, 1], 8080)], &[]),
            Err(TargetProblem::Forbidden(_))
        ));
    }

    #[test]
    fn the_brokers_own_port_is_never_pinned_even_on_loopback() {
        let own = [addr([0, 0, 0, 0], 8080)];
        assert_eq!(
            pin(&target(true), vec![addr([127, 0, 0, 1], 8080)], &own),
            Err(TargetProblem::Forbidden("the broker itself".into()))
        );
    }

    #[test]
    fn pinned_targets_survive_the_stored_form_and_never_dial_the_broker() {
        let mut targets = HashMap::new();
        targets.insert(
            "db".to_owned(),
            Ok(vec![addr([10, 0, 0, 5], 5432), addr([10, 0, 0, 6], 5432)]),
        );
        targets.insert("self".to_owned(), Ok(vec![addr([127, 0, 0, 1], 4433)]));
        let pinned = PinnedTargets { targets };
        let back = PinnedTargets::decode(&pinned.encode());
        assert_eq!(back.get("db"), pinned.get("db"));
        let own = [addr([0, 0, 0, 0], 4433)];
        assert_eq!(
            back.dialable("self", &own, false),
            Some(Err(TargetProblem::Forbidden("the broker itself".into())))
        );
        // A target that says why it may be the broker's port is dialled.
        assert_eq!(
            back.dialable("self", &own, true),
            Some(Ok(vec![addr([127, 0, 0, 1], 4433)]))
        );
        assert_eq!(back.dialable("nope", &own, false), None);
    }

    #[test]
    fn any_address_of_this_host_at_a_broker_port_is_the_broker() {
        let own = [addr([127, 0, 0, 1], 8443)];
        // Another loopback address, the unspecified address, the IPv4-mapped spelling.
        assert!(is_own_address(addr([127, 0, 0, 2], 8443), &own));
        assert!(is_own_address(addr([0, 0, 0, 0], 8443), &own));
        assert!(is_own_address(
            "[::ffff:127.0.0.1]:8443".parse().unwrap(),
            &own
        ));
        // An address this host holds, whatever the broker bound: every address the host
        // has answers for a socket on 0.0.0.0.
        let on_all = [addr([0, 0, 0, 0], 8443)];
        let held = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|socket| {
                socket.connect("192.0.2.1:9")?;
                socket.local_addr()
            })
            .map(|local| local.ip());
        if let Ok(held) = held {
            assert!(
                is_own_address(SocketAddr::new(held, 8443), &on_all),
                "{held}"
            );
        }
        // Another port, or an address elsewhere, is not.
        assert!(!is_own_address(addr([127, 0, 0, 1], 8444), &own));
        assert!(!is_own_address(addr([192, 0, 2, 10], 8443), &on_all));
    }

    #[test]
    fn forbidden_addresses_are_dropped_and_the_rest_pinned() {
        let resolved = vec![addr([169, 254, 169, 254], 80), addr([10, 1, 2, 3], 80)];
        assert_eq!(
            pin(&target(false), resolved, &[]),
            Ok(vec![addr([10, 1, 2, 3], 80)])
        );
    }
}
