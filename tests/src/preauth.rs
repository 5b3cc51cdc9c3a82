//! What a stranger on the network can make the broker do before showing any credential, for
//! the tests and the benchmark of pre-authentication bounds.
//!
//! Each attacker is a real quinn client whose UDP socket lets through only what the attack
//! needs, so the broker sees genuine QUIC from many source addresses (any address in
//! `127.0.0.0/8` is this host):
//!
//! - [`Attack::stalled`]: handshakes that prove their source address (they answer a Retry)
//!   and then never send their last flight: the broker holds each until its handshake
//!   deadline; the attacker opens a new one whenever one ends.
//! - [`Attack::flood`]: connection attempts at a fixed rate that never answer a Retry.
//! - [`Attack::silent_enrollments`]: enrollment connections (which need no credential) that
//!   complete TLS and never say a word.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, TransportConfig, UdpPoller};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::task::JoinHandle;

/// The `n`th attacker source address: 127.0.1.0 upwards (the technicians use 127.0.0.1).
pub fn attacker_source(n: u32) -> IpAddr {
    let [_, b, c, d] = (0x7f00_0100u32 + n).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, b, c, d))
}

/// What an attacker's socket lets out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// Initial packets only: the handshake proves its address and then stops.
    StallAfterValidation,
    /// Initial packets without a token only: a Retry is never answered.
    NeverValidate,
}

/// A socket that drops, without a word, every datagram its [`Filter`] does not let out.
struct FilteringSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    filter: Filter,
    /// Connections (by our connection id) the broker answered with its handshake flight: it
    /// holds state for them.
    answered: Arc<Answered>,
}

/// The connections the broker took on, counted once each.
#[derive(Debug, Default)]
struct Answered {
    ids: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
    /// Taken-on connections that a filter does not see (enrollments complete normally).
    completed: AtomicU64,
}

impl Answered {
    fn count(&self) -> u64 {
        let ids = self.ids.lock().unwrap().len() as u64;
        ids + self.completed.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for FilteringSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilteringSocket")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for FilteringSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if lets_out(self.filter, transmit.contents) {
            self.inner.try_send(transmit)
        } else {
            Ok(())
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(count)) = &polled {
            for (buf, meta) in bufs.iter().zip(meta.iter()).take(*count) {
                if let Some(id) = answered_connection(&buf[..meta.len.min(buf.len())]) {
                    self.answered.ids.lock().unwrap().insert(id.to_vec());
                }
            }
        }
        polled
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    // One datagram per transmit, so each can be judged on its own.
    fn max_transmit_segments(&self) -> usize {
        1
    }
}

/// Whether a datagram consists only of QUIC Initial packets (and, for
/// [`Filter::NeverValidate`], only of ones carrying no Retry token).
fn lets_out(filter: Filter, mut datagram: &[u8]) -> bool {
    while let Some(&first) = datagram.first() {
        // A short header (1-RTT), or a long header other than Initial (type 0).
        if first & 0x80 == 0 || (first >> 4) & 0x03 != 0 {
            return false;
        }
        let Some(rest) = datagram.get(5..) else {
            return false;
        };
        let Some((_dcid, rest)) = length_prefixed_u8(rest) else {
            return false;
        };
        let Some((_scid, rest)) = length_prefixed_u8(rest) else {
            return false;
        };
        let Some((token, rest)) = length_prefixed_varint(rest) else {
            return false;
        };
        if filter == Filter::NeverValidate && !token.is_empty() {
            return false;
        }
        let Some((_payload, rest)) = length_prefixed_varint(rest) else {
            return false;
        };
        datagram = rest;
    }
    true
}

/// The connection (our connection id) a datagram from the broker belongs to, if it is part
/// of the broker's handshake flight (an Initial or Handshake packet; a Retry is not): the
/// broker has taken that attempt on.
fn answered_connection(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 || !matches!((first >> 4) & 0x03, 0 | 2) {
        return None;
    }
    let (dcid, _) = length_prefixed_u8(datagram.get(5..)?)?;
    Some(dcid)
}

fn length_prefixed_u8(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn length_prefixed_varint(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *bytes.first()?;
    let size = 1usize << (first >> 6);
    let mut value = u64::from(first & 0x3f);
    for byte in bytes.get(1..size)? {
        value = (value << 8) | u64::from(*byte);
    }
    let rest = &bytes[size..];
    let len = usize::try_from(value).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A running attack; stops when dropped.
pub struct Attack {
    tasks: Vec<JoinHandle<()>>,
    attempts: Arc<AtomicU64>,
    answered: Arc<Answered>,
}

impl Attack {
    /// Holds `per_source × sources` handshakes that answer a Retry and then stall, from
    /// `sources` addresses starting at [`attacker_source`]`(first_source)`.
    pub fn stalled(
        broker: SocketAddr,
        ca_pem: &str,
        first_source: u32,
        sources: u32,
        per_source: u32,
    ) -> Attack {
        let attempts = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(Answered::default());
        let mut tasks = Vec::new();
        for n in first_source..first_source + sources {
            let endpoint = attacker_endpoint(
                attacker_source(n),
                Some(Filter::StallAfterValidation),
                &answered,
            );
            let config = client_config(ca_pem, proto::ALPN, Duration::from_secs(60));
            for _ in 0..per_source {
                let (endpoint, config, attempts) =
                    (endpoint.clone(), config.clone(), attempts.clone());
                tasks.push(tokio::spawn(async move {
                    // Each ends when the broker gives up on it; then another takes its place.
                    loop {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let Ok(connecting) = endpoint.connect_with(
                            config.clone(),
                            broker,
                            proto::BROKER_SERVER_NAME,
                        ) else {
                            return;
                        };
                        let _ = connecting.await;
                    }
                }));
            }
        }
        Attack {
            tasks,
            attempts,
            answered,
        }
    }

    /// Starts `per_second` connection attempts a second, spread over `sources` addresses
    /// from [`attacker_source`]`(first_source)`, none of which answers a Retry.
    pub fn flood(
        broker: SocketAddr,
        ca_pem: &str,
        first_source: u32,
        sources: u32,
        per_second: u32,
    ) -> Attack {
        let attempts = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(Answered::default());
        let endpoints: Vec<quinn::Endpoint> = (first_source..first_source + sources)
            .map(|n| attacker_endpoint(attacker_source(n), Some(Filter::NeverValidate), &answered))
            .collect();
        // A flood's attempts give up quickly on their own side.
        let config = client_config(ca_pem, proto::ALPN, Duration::from_secs(1));
        let counter = attempts.clone();
        let task = tokio::spawn(async move {
            const TICK: Duration = Duration::from_millis(10);
            let per_tick = (per_second / 100).max(1);
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut next = 0usize;
            loop {
                tick.tick().await;
                for _ in 0..per_tick {
                    let endpoint = &endpoints[next % endpoints.len()];
                    next += 1;
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Ok(connecting) =
                        endpoint.connect_with(config.clone(), broker, proto::BROKER_SERVER_NAME)
                    {
                        tokio::spawn(async move {
                            let _ = connecting.await;
                        });
                    }
                }
            }
        });
        Attack {
            tasks: vec![task],
            attempts,
            answered,
        }
    }

    /// Holds `count` enrollment connections (no credential needed) from `sources` addresses
    /// that complete TLS and never say a word; each is replaced when the broker drops it.
    pub fn silent_enrollments(
        broker: SocketAddr,
        ca_pem: &str,
        first_source: u32,
        sources: u32,
        count: u32,
    ) -> Attack {
        let attempts = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(Answered::default());
        let endpoints: Vec<quinn::Endpoint> = (first_source..first_source + sources)
            .map(|n| attacker_endpoint(attacker_source(n), None, &answered))
            .collect();
        let config = client_config(ca_pem, proto::ENROLL_ALPN, Duration::from_secs(60));
        let tasks = (0..count)
            .map(|i| {
                let endpoint = endpoints[i as usize % endpoints.len()].clone();
                let (config, attempts, answered) =
                    (config.clone(), attempts.clone(), answered.clone());
                tokio::spawn(async move {
                    loop {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let Ok(connecting) = endpoint.connect_with(
                            config.clone(),
                            broker,
                            proto::BROKER_SERVER_NAME,
                        ) else {
                            return;
                        };
                        if let Ok(connection) = connecting.await {
                            answered.completed.fetch_add(1, Ordering::Relaxed);
                            // Says nothing; waits to be thrown out.
                            connection.closed().await;
                        }
                    }
                })
            })
            .collect();
        Attack {
            tasks,
            attempts,
            answered,
        }
    }

    /// Connection attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Attempts the broker took on so far (it sent its handshake flight, or, for
    /// enrollments, completed the handshake).
    pub fn answered(&self) -> u64 {
        self.answered.count()
    }

    /// Whether the broker takes on `count` attempts within `within`.
    pub async fn answered_within(&self, count: u64, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // sync-ok: the count is moved by the sockets' receive path, polled here, bounded.
            while self.answered() < count {
                tick.tick().await;
            }
        })
        .await
        .is_ok()
    }

    /// Waits (bounded: panics after 20 s) until the broker has taken on `count` attempts.
    pub async fn wait_answered(&self, count: u64) {
        if !self.answered_within(count, Duration::from_secs(20)).await {
            panic!(
                "the broker took on {} of {count} attempts ({} made)",
                self.answered(),
                self.attempts()
            );
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client endpoint on `source`, its socket filtered by `filter` (or not at all), counting
/// in `answered` the broker's handshake flights it receives.
fn attacker_endpoint(
    source: IpAddr,
    filter: Option<Filter>,
    answered: &Arc<Answered>,
) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(source, 0)).unwrap();
    let runtime = Arc::new(TokioRuntime);
    let inner = runtime.wrap_udp_socket(socket).unwrap();
    let socket: Arc<dyn AsyncUdpSocket> = match filter {
        Some(filter) => Arc::new(FilteringSocket {
            inner,
            filter,
            answered: answered.clone(),
        }),
        None => inner,
    };
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )
    .unwrap()
}

/// A client configuration that trusts the broker's CA, offers `alpn`, presents no
/// certificate, and gives up after `idle` without an answer: a stranger's.
pub fn client_config(ca_pem: &str, alpn: &[u8], idle: Duration) -> quinn::ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(tunnel::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(idle.try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_sources_are_loopback_addresses_apart_from_the_technicians() {
        assert_eq!(attacker_source(0), "127.0.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            attacker_source(300),
            "127.0.2.44".parse::<IpAddr>().unwrap()
        );
        assert!(attacker_source(10_000).is_loopback());
    }

    #[test]
    fn only_initial_packets_are_let_out() {
        // Long header, Initial, version 1, empty connection ids, no token, 1-byte payload.
        let initial = [0xc0, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa];
        assert!(lets_out(Filter::StallAfterValidation, &initial));
        // Followed by a Handshake packet (type 2): held back.
        let mut coalesced = initial.to_vec();
        coalesced.extend_from_slice(&[0xe0, 0, 0, 0, 1, 0, 0, 1, 0xbb]);
        assert!(!lets_out(Filter::StallAfterValidation, &coalesced));
        // A short header: held back.
        assert!(!lets_out(Filter::StallAfterValidation, &[0x40, 1, 2, 3]));
        // An Initial with a token passes only when validation is what the attack does.
        let with_token = [0xc0, 0, 0, 0, 1, 0, 0, 2, 7, 7, 1, 0xaa];
        assert!(lets_out(Filter::StallAfterValidation, &with_token));
        assert!(!lets_out(Filter::NeverValidate, &with_token));
    }
}
