//! The web UI's connections: how many, from where, and for how long.
//!
//! Anyone who reaches the web port can open connections and say nothing; without bounds a
//! few hundred of them use up the process's file descriptors and lock every approver out.
//! So:
//!
//! - **Caps**: at most [`WebLimits::max_connections`] in all and
//!   [`WebLimits::max_per_source`] from one address (an IPv6 /64 counts as one). A source
//!   over its share has its new connection closed at once.
//! - **Room for staff**: when the total is reached, a new connection takes the place of the
//!   oldest one that has not yet sent a complete request (a slow or silent stranger), so a
//!   flood of idle connections cannot keep a real browser out; connections that have been
//!   served (a page, a live-update stream) are never evicted. A connection is evicted only
//!   after its [`WebLimits::eviction_grace`]; while every unserved one is within it, the
//!   accept loop waits ([`Connections::room`]), which paces strangers who reconnect as fast
//!   as they are closed to what the broker can serve.
//! - **Deadlines**: the TLS handshake within [`WebLimits::tls_handshake`]; each request's
//!   head, including the wait for the next one on a kept-alive connection, within
//!   [`WebLimits::request_head`].
//! - **A long listen queue** ([`LISTEN_BACKLOG`]): connections wait there for the accept
//!   loop. With the usual 128, a few hundred strangers reconnecting as fast as they are
//!   evicted keep it full, and a browser's connection attempt is dropped by the kernel and
//!   retried only a second later.
//! - **Accept errors** (the process out of file descriptors, the system out of memory) back
//!   off, doubling up to a second, and are logged at most once every ten seconds with a count.
//!
//! This module never looks inside requests; what a request may do is `auth`'s business.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How many connections may wait for the accept loop (the kernel caps it at
/// `net.core.somaxconn`, 4,096 on current Linux).
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`].
pub(crate) fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted broker binds at once, without waiting out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Bounds on the web UI's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Connections open at once, in all. Sized under the usual open-files limit (1,024)
    /// with room for the database, the QUIC sockets and the targets' connections.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_source: usize,
    /// How long the TLS handshake may take.
    pub tls_handshake: Duration,
    /// How long a request's head may take to arrive, counted from when the connection is
    /// ready for it (so it also bounds an idle kept-alive connection).
    pub request_head: Duration,
    /// How long a new connection keeps its place, once its task runs, before a newer one
    /// may take it while it still has not sent a complete request. Long enough for a
    /// browser on the hospital's network to finish the TLS handshake and send its request.
    pub eviction_grace: Duration,
}

impl Default for WebLimits {
    fn default() -> WebLimits {
        WebLimits {
            max_connections: 512,
            max_per_source: 64,
            tls_handshake: Duration::from_secs(5),
            request_head: Duration::from_secs(10),
            eviction_grace: Duration::from_millis(250),
        }
    }
}

/// The connections open now.
pub(crate) struct Connections {
    state: Mutex<State>,
    limits: WebLimits,
    /// Told when a place is given back or a connection starts its grace.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    next: u64,
    open: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Connections not yet served a complete request, oldest first.
    unserved: BTreeMap<u64, Unserved>,
}

/// A connection that has not yet been served, and what cuts it.
struct Unserved {
    evict: CancellationToken,
    /// When its task first ran: its grace counts from there.
    started: Option<Instant>,
}

impl Unserved {
    fn evictable(&self, now: Instant, grace: Duration) -> bool {
        self.started
            .is_some_and(|started| now.saturating_duration_since(started) >= grace)
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    SourceFull,
    TotalFull,
}

/// A connection's place; given back when dropped.
pub(crate) struct Place {
    id: u64,
    source: IpAddr,
    connections: Arc<Connections>,
    /// Cancelled when a newer connection takes this one's place.
    evicted: CancellationToken,
}

impl Connections {
    pub(crate) fn new(limits: WebLimits) -> Arc<Connections> {
        Arc::new(Connections {
            state: Mutex::new(State::default()),
            limits,
            changed: tokio::sync::Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns once a new connection can be given a place: the total is not reached, or an
    /// unserved connection has had its grace and can be evicted. Until then the accept loop
    /// waits here and new connections wait in the kernel's listen queue, so strangers who
    /// reconnect as fast as they are evicted cannot push a browser's connection out before
    /// it has had time to send its request.
    pub(crate) async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change made in between is not missed.
            changed.as_mut().enable();
            let next_evictable = {
                let state = self.state();
                if state.open < self.limits.max_connections {
                    return;
                }
                // The earliest grace to end; one already over means room now.
                let now = Instant::now();
                let grace = self.limits.eviction_grace;
                let next = state
                    .unserved
                    .values()
                    .filter_map(|unserved| unserved.started)
                    .min()
                    .map(|started| started + grace);
                if next.is_some_and(|at| at <= now) {
                    return;
                }
                next
            };
            match next_evictable {
                Some(at) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// A place for a new connection from `source`, evicting the oldest unserved one that has
    /// had its grace when the total is reached; `Err` when there is none to give.
    pub(crate) fn admit(self: &Arc<Connections>, source: IpAddr) -> Result<Place, Refused> {
        let source = crate::quic::source_key(source);
        let mut state = self.state();
        if state.by_source.get(&source).copied().unwrap_or(0) >= self.limits.max_per_source {
            return Err(Refused::SourceFull);
        }
        if state.open >= self.limits.max_connections {
            let now = Instant::now();
            let grace = self.limits.eviction_grace;
            let Some(oldest) = state
                .unserved
                .iter()
                .find(|(_, unserved)| unserved.evictable(now, grace))
                .map(|(id, _)| *id)
            else {
                return Err(Refused::TotalFull);
            };
            if let Some(evicted) = state.unserved.remove(&oldest) {
                // Its task gives its place back as it ends, a moment from now.
                evicted.evict.cancel();
            }
        }
        state.next += 1;
        state.open += 1;
        *state.by_source.entry(source).or_insert(0) += 1;
        let id = state.next;
        let evicted = CancellationToken::new();
        state.unserved.insert(
            id,
            Unserved {
                evict: evicted.clone(),
                started: None,
            },
        );
        Ok(Place {
            id,
            source,
            connections: self.clone(),
            evicted,
        })
    }
}

impl Place {
    /// The connection's task runs: its grace starts.
    pub(crate) fn started(&self) {
        if let Some(unserved) = self.connections.state().unserved.get_mut(&self.id) {
            unserved.started = Some(Instant::now());
        }
        self.connections.changed.notify_waiters();
    }

    /// The connection sent a complete request: it is no longer a candidate for eviction.
    pub(crate) fn served(&self) {
        self.connections.state().unserved.remove(&self.id);
    }

    /// Cancelled if a newer connection took this place.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        {
            let mut state = self.connections.state();
            state.unserved.remove(&self.id);
            state.open = state.open.saturating_sub(1);
            if let Some(count) = state.by_source.get_mut(&self.source) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.by_source.remove(&self.source);
                }
            }
        }
        self.connections.changed.notify_waiters();
    }
}

/// Paces the accept loop after errors and keeps its log quiet.
#[derive(Default)]
pub(crate) struct AcceptErrors {
    backoff: Option<Duration>,
    logged: Option<Instant>,
    since_logged: u64,
}

impl AcceptErrors {
    /// Notes a failed accept; returns how long to wait before the next.
    pub(crate) fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.since_logged += 1;
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            tracing::warn!(error = %error, failures = self.since_logged, "web UI: cannot accept connections (count since the last line); backing off");
            self.logged = Some(now);
            self.since_logged = 0;
        }
        let next = self.backoff.map_or(Duration::from_millis(10), |wait| {
            (wait * 2).min(Duration::from_secs(1))
        });
        self.backoff = Some(next);
        next
    }

    /// Notes an accept that worked.
    pub(crate) fn succeeded(&mut self) {
        self.backoff = None;
    }
}

/// Notes each refusal; logs at most once every ten seconds.
#[derive(Default)]
pub(crate) struct RefusedLog {
    logged: Option<Instant>,
    since_logged: u64,
}

impl RefusedLog {
    pub(crate) fn note(&mut self, peer: std::net::SocketAddr, why: Refused) {
        self.since_logged += 1;
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            tracing::warn!(%peer, reason = ?why, refused = self.since_logged, "web UI: connections closed at once (count since the last line)");
            self.logged = Some(now);
            self.since_logged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(total: usize, per_source: usize) -> Arc<Connections> {
        Connections::new(WebLimits {
            max_connections: total,
            max_per_source: per_source,
            eviction_grace: Duration::ZERO,
            ..WebLimits::default()
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// 600 connections wait for an accept loop that is busy elsewhere; with the usual
    /// backlog of 128 the kernel drops the rest's handshakes, and they wait out
    /// retransmissions of a second and more.
    #[tokio::test]
    async fn the_listen_queue_holds_a_burst_of_connections() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut waiting = Vec::new();
        for _ in 0..600 {
            let connect = tokio::net::TcpStream::connect(addr);
            let connected = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .expect("a connection attempt was dropped: the listen queue is too short")
                .unwrap();
            waiting.push(connected);
        }
        assert_eq!(waiting.len(), 600);
        drop(listener);
    }

    #[test]
    fn a_source_gets_its_share_and_no_more() {
        let connections = connections(10, 2);
        let _a = connections.admit(ip("192.0.2.1")).unwrap();
        let _b = connections.admit(ip("192.0.2.1")).unwrap();
        assert!(matches!(
            connections.admit(ip("192.0.2.1")),
            Err(Refused::SourceFull)
        ));
        assert!(connections.admit(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn when_full_the_oldest_unserved_connection_makes_room_and_served_ones_stay() {
        let connections = connections(2, 10);
        let served = connections.admit(ip("192.0.2.1")).unwrap();
        served.started();
        served.served();
        let idle = connections.admit(ip("192.0.2.2")).unwrap();
        idle.started();
        let newcomer = connections.admit(ip("192.0.2.3")).unwrap();
        assert!(idle.evicted().is_cancelled());
        assert!(!served.evicted().is_cancelled());
        // Nobody left to evict: the next is refused until a place is given back.
        newcomer.served();
        assert!(matches!(
            connections.admit(ip("192.0.2.4")),
            Err(Refused::TotalFull)
        ));
        // The evicted one gives its place back as it ends; both left are served.
        drop(idle);
        assert!(matches!(
            connections.admit(ip("192.0.2.4")),
            Err(Refused::TotalFull)
        ));
        drop(served);
        assert!(connections.admit(ip("192.0.2.4")).is_ok());
    }

    #[tokio::test]
    async fn a_new_connection_keeps_its_place_for_its_grace_and_the_accept_loop_waits() {
        let grace = Duration::from_millis(100);
        let connections = Connections::new(WebLimits {
            max_connections: 1,
            eviction_grace: grace,
            ..WebLimits::default()
        });
        let newcomer = connections.admit(ip("192.0.2.1")).unwrap();
        // Its task has not run yet: not evictable, however long that takes.
        assert!(matches!(
            connections.admit(ip("192.0.2.2")),
            Err(Refused::TotalFull)
        ));
        let waiting = tokio::time::timeout(Duration::ZERO, connections.room()).await;
        assert!(waiting.is_err(), "room while the only connection is new");
        newcomer.started();
        let started = Instant::now();
        assert!(matches!(
            connections.admit(ip("192.0.2.2")),
            Err(Refused::TotalFull)
        ));
        tokio::time::timeout(Duration::from_secs(10), connections.room())
            .await
            .expect("room once the grace is over");
        assert!(started.elapsed() >= grace);
        let next = connections.admit(ip("192.0.2.2")).unwrap();
        assert!(newcomer.evicted().is_cancelled());
        assert!(!next.evicted().is_cancelled());
        // A place given back wakes the accept loop at once.
        drop(next);
        drop(newcomer);
        tokio::time::timeout(Duration::ZERO, connections.room())
            .await
            .expect("room after places were given back");
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second_and_reset() {
        let mut errors = AcceptErrors::default();
        let error = std::io::Error::from_raw_os_error(24);
        let waits: Vec<Duration> = (0..10).map(|_| errors.failed(&error)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[9], Duration::from_secs(1));
        errors.succeeded();
        assert_eq!(errors.failed(&error), Duration::from_millis(10));
    }
}
