//! A vendor's targets, resolved once and pinned for a session.
//!
//! Each target name of the vendor's policy is resolved when the session starts. Every
//! address it resolves to is checked (no loopback, link-local, unspecified, multicast or
//! broadcast unless the target allows it; never one of the broker's own listening addresses),
//! and the target is pinned to the addresses that pass. A forward dials only pinned
//! addresses, so a DNS change during a session cannot redirect it.

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
    /// Resolves and checks every target of `vendor`.
    pub async fn resolve(vendor: &VendorPolicy, own_addresses: &[SocketAddr]) -> PinnedTargets {
        let mut targets = HashMap::new();
        for target in &vendor.targets {
            let pinned = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addresses) => pin(target, addresses.collect(), own_addresses),
                Err(e) => Err(TargetProblem::Unresolvable(e.to_string())),
            };
            if let Err(problem) = &pinned {
                tracing::warn!(vendor = %vendor.id, target = %target.name, ?problem, "target not usable this session");
            }
            targets.insert(target.name.clone(), pinned);
        }
        PinnedTargets { targets }
    }

    /// The pinned addresses of `name`: `None` if the vendor has no such target.
    pub fn get(&self, name: &str) -> Option<&Result<Vec<SocketAddr>, TargetProblem>> {
        self.targets.get(name)
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

/// Whether dialling `address` would reach one of the broker's own listening sockets: same
/// port, and the same IP, or a loopback/unspecified IP on either side (a socket bound to
/// `0.0.0.0` answers on every local address).
fn is_own_address(address: SocketAddr, own_addresses: &[SocketAddr]) -> bool {
    let local_ish = |ip: std::net::IpAddr| ip.is_loopback() || ip.is_unspecified();
    own_addresses.iter().any(|own| {
        own.port() == address.port()
            && (own.ip() == address.ip() || local_ish(own.ip()) || local_ish(address.ip()))
    })
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
    fn forbidden_addresses_are_dropped_and_the_rest_pinned() {
        let resolved = vec![addr([169, 254, 169, 254], 80), addr([10, 1, 2, 3], 80)];
        assert_eq!(
            pin(&target(false), resolved, &[]),
            Ok(vec![addr([10, 1, 2, 3], 80)])
        );
    }
}
