//! Which source addresses may reach the web UI at all (`serve --web-allow CIDR`, repeatable).
//!
//! The check is made on each accepted TCP connection before anything else (no TLS
//! handshake, no HTTP): a connection from elsewhere is closed at once. Refused connections
//! are counted, and logged at most once per [`LOG_INTERVAL`] with the count since the last
//! line and the latest address, so a scan of the port cannot flood the log. With no
//! `--web-allow`, every address may connect (the listen address alone decides who can).
//!
//! This module decides only; the accept loop (`WebServer::run`) calls
//! [`SourceAllowList::admits`] and drops the connection when it says no.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::policy::IpNetwork;

/// The shortest time between two log lines about refused connections.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The networks the web UI answers; empty means any.
#[derive(Debug, Default)]
pub(crate) struct SourceAllowList {
    networks: Vec<IpNetwork>,
    refused: AtomicU64,
    log: Mutex<RefusalLog>,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last_line: Option<Instant>,
    since_line: u64,
}

impl SourceAllowList {
    pub(crate) fn new(networks: Vec<IpNetwork>) -> SourceAllowList {
        SourceAllowList {
            networks,
            ..SourceAllowList::default()
        }
    }

    /// Whether a connection from `peer` may be served; a refusal is counted and, at most once
    /// per [`LOG_INTERVAL`], logged.
    pub(crate) fn admits(&self, peer: IpAddr) -> bool {
        if self.networks.is_empty() {
            return true;
        }
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        if self.networks.iter().any(|network| network.contains(peer)) {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        log.since_line += 1;
        let due = log
            .last_line
            .is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL);
        if due {
            tracing::warn!(
                refused = log.since_line,
                latest = %peer,
                "web UI: closed connections from addresses outside --web-allow"
            );
            log.last_line = Some(now);
            log.since_line = 0;
        }
        false
    }

    /// Connections refused since the start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_networks_are_admitted_and_refusals_are_counted() {
        let list = SourceAllowList::new(vec![
            "10.1.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        assert!(list.admits("10.1.2.3".parse().unwrap()));
        assert!(
            list.admits("::ffff:10.1.2.3".parse().unwrap()),
            "dual stack"
        );
        assert!(list.admits("fd00::1".parse().unwrap()));
        assert!(!list.admits("10.2.0.1".parse().unwrap()));
        assert!(!list.admits("127.0.0.1".parse().unwrap()));
        assert_eq!(list.refused(), 2);
    }

    #[test]
    fn without_a_list_everyone_is_admitted() {
        let list = SourceAllowList::default();
        assert!(list.admits("192.0.2.1".parse().unwrap()));
        assert_eq!(list.refused(), 0);
    }
}
