//! Pre-authentication work, bounded per source and in total.
//!
//! Until a peer has shown a registered certificate (or, to enroll, a token), everything the
//! broker does for it is work a stranger can make it do. This module decides, for each new
//! connection attempt, before any cryptographic work:
//!
//! - **Address validation.** Once more than [`Limits::retry_after_pending`] handshakes are
//!   under way, a peer whose source address is not yet validated gets a QUIC Retry: a
//!   stateless packet carrying a token it must echo from that address. A spoofed flood then
//!   costs the broker one small packet per datagram and holds no state.
//! - **A share per source.** At most [`Limits::max_pending_handshakes_per_source`] handshakes
//!   under way per source (an IPv4 address, or an IPv6 /64, which one host owns). A source
//!   over its share whose address is not validated is asked to validate rather than refused,
//!   so nobody can lock a technician out by spoofing the technician's address.
//! - **A total.** At most [`Limits::max_pending_handshakes`] in all; sized by memory, not kept
//!   small, so that an attacker with many sources exhausts the shares of its own sources
//!   long before the total.
//!
//! Each admitted attempt holds a [`HandshakePermit`] until the peer has authenticated (its
//! `Hello` read and its certificate checked) or its enrollment conversation ended, each
//! within the handshake timeout; dropping the permit gives its place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Limits;

/// What to do with a new connection attempt.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Go ahead with the handshake, holding this permit.
    Accept(HandshakePermit),
    /// Ask the peer to prove its address first (stateless).
    Retry,
    /// Refuse (the peer's address is validated and its share, or the total, is used up).
    Refuse(Refused),
}

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This source has its share of handshakes under way.
    SourceFull,
    /// The broker has as many handshakes under way as it takes.
    TotalFull,
}

impl Refused {
    /// The word recorded.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::SourceFull => "too many handshakes from this source",
            Refused::TotalFull => "too many handshakes in all",
        }
    }
}

/// The handshakes under way.
#[derive(Debug)]
pub(crate) struct Admission {
    state: Mutex<State>,
    total: usize,
    per_source: usize,
    retry_after: usize,
}

#[derive(Debug, Default)]
struct State {
    pending: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A place among the handshakes under way; given back when dropped.
#[derive(Debug)]
pub(crate) struct HandshakePermit {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Arc<Admission> {
        Arc::new(Admission {
            state: Mutex::new(State::default()),
            total: limits.max_pending_handshakes.max(1),
            per_source: limits.max_pending_handshakes_per_source.max(1),
            retry_after: limits.retry_after_pending,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides for an attempt from `source`; `validated` says whether the peer has proven
    /// its address (echoed a Retry token), `may_retry` whether a Retry may still be sent.
    pub(crate) fn decide(
        self: &Arc<Admission>,
        source: IpAddr,
        validated: bool,
        may_retry: bool,
    ) -> Decision {
        let source = source_key(source);
        let mut state = self.state();
        let from_source = state.by_source.get(&source).copied().unwrap_or(0);
        let over_share = from_source >= self.per_source;
        let over_total = state.pending >= self.total;
        let busy = state.pending >= self.retry_after;
        if !validated && may_retry && (busy || over_share || over_total) {
            return Decision::Retry;
        }
        if over_share {
            return Decision::Refuse(Refused::SourceFull);
        }
        if over_total {
            return Decision::Refuse(Refused::TotalFull);
        }
        state.pending += 1;
        *state.by_source.entry(source).or_insert(0) += 1;
        Decision::Accept(HandshakePermit {
            admission: self.clone(),
            source,
        })
    }

    /// Handshakes under way now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state().pending
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        state.pending = state.pending.saturating_sub(1);
        if let Some(count) = state.by_source.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.by_source.remove(&self.source);
            }
        }
    }
}

/// The unit a share is counted in: an IPv4 address (an IPv4-mapped IPv6 address counts as
/// its IPv4 address), or an IPv6 /64.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_source: usize, retry_after: usize) -> Arc<Admission> {
        Admission::new(&Limits {
            max_pending_handshakes: total,
            max_pending_handshakes_per_source: per_source,
            retry_after_pending: retry_after,
            ..Limits::default()
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn below_the_threshold_everyone_is_accepted_without_a_retry() {
        let admission = admission(100, 10, 5);
        let permits: Vec<_> = (0..5)
            .map(|i| admission.decide(ip(&format!("192.0.2.{i}")), false, true))
            .collect();
        assert!(permits.iter().all(|d| matches!(d, Decision::Accept(_))));
        assert_eq!(admission.pending(), 5);
        // The sixth, unvalidated, must prove its address; validated, it is accepted.
        assert!(matches!(
            admission.decide(ip("192.0.2.9"), false, true),
            Decision::Retry
        ));
        assert!(matches!(
            admission.decide(ip("192.0.2.9"), true, false),
            Decision::Accept(_)
        ));
    }

    #[test]
    fn a_source_over_its_share_is_refused_only_once_its_address_is_proven() {
        let admission = admission(100, 2, 100);
        let _held: Vec<_> = (0..2)
            .map(|_| admission.decide(ip("198.51.100.7"), true, false))
            .collect();
        assert!(matches!(
            admission.decide(ip("198.51.100.7"), false, true),
            Decision::Retry
        ));
        assert!(matches!(
            admission.decide(ip("198.51.100.7"), true, false),
            Decision::Refuse(Refused::SourceFull)
        ));
        // Another source is not affected.
        assert!(matches!(
            admission.decide(ip("198.51.100.8"), true, false),
            Decision::Accept(_)
        ));
    }

    #[test]
    fn permits_give_their_place_back_when_dropped() {
        let admission = admission(2, 2, 100);
        let first = admission.decide(ip("203.0.113.1"), true, false);
        let second = admission.decide(ip("203.0.113.2"), true, false);
        assert!(matches!(
            admission.decide(ip("203.0.113.3"), true, false),
            Decision::Refuse(Refused::TotalFull)
        ));
        drop(first);
        let third = admission.decide(ip("203.0.113.3"), true, false);
        assert!(matches!(third, Decision::Accept(_)));
        drop(second);
        assert_eq!(admission.pending(), 1);
        drop(third);
        assert_eq!(admission.pending(), 0);
    }

    #[test]
    fn an_ipv6_host_is_one_source_across_its_64() {
        let admission = admission(100, 1, 100);
        let _held = admission.decide(ip("2001:db8:1:2::1"), true, false);
        assert!(matches!(
            admission.decide(ip("2001:db8:1:2::ffff"), true, false),
            Decision::Refuse(Refused::SourceFull)
        ));
        assert!(matches!(
            admission.decide(ip("2001:db8:1:3::1"), true, false),
            Decision::Accept(_)
        ));
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
