//! The TLS-over-TCP listener: the same protocol as the QUIC endpoint for clients whose network
//! passes no UDP, on a TCP port of its own (usually the QUIC port's number, so a technician
//! needs one address).
//!
//! Everything after the TLS handshake is the QUIC side's code ([`connection::serve_handshaken`]
//! over a [`Link`]): the same certificate checks, ALPN discipline, registry, policy, limits,
//! control stream, forwards and cut. What differs is before it, and is bounded the same way:
//! each accepted TCP connection asks [`admission`](super::admission) for a handshake slot (a
//! share per source address and a total; a TCP peer's address is proven by its handshake, so
//! there is no Retry), the TLS handshake and the link's setup each have the handshake deadline,
//! and a refused or failed one is recorded at the same bounded rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::link::Link;
use tunnel::tcp::{TcpLink, Tuning};

use super::admission::{Decision, HandshakePermit};
use super::connection::{self, classify};
use super::{Shared, cut};
use crate::session::EndReason;

/// A bound TLS-over-TCP listener, not yet serving.
pub(crate) struct TcpListenerSet {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tuning: Tuning,
}

impl TcpListenerSet {
    /// Listens on `addr` with `tls`; streams and timers from `limits`.
    pub(crate) fn bind(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        limits: &crate::Limits,
    ) -> std::io::Result<TcpListenerSet> {
        let listener = crate::web::transport::listen(addr)?;
        let tuning = Tuning {
            // The control stream and the link's own stream, then the forwards.
            max_streams: limits.max_forwards_per_session.saturating_add(2),
            keep_alive: limits.idle_timeout / 3,
            idle_timeout: limits.idle_timeout,
            ..Tuning::default()
        };
        Ok(TcpListenerSet {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            tuning,
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown`; then cuts every connection of this broker and
    /// waits (briefly) for their tasks.
    pub(crate) async fn serve(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, as the web listener does.
                    tracing::warn!(error = %e, "cannot accept a TCP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match shared.admission.decide(peer.ip(), true, false) {
                Decision::Accept(permit) => {
                    tasks.spawn(serve_one(
                        tcp,
                        peer,
                        permit,
                        self.acceptor.clone(),
                        self.tuning.clone(),
                        shared.clone(),
                        shutdown.clone(),
                    ));
                }
                Decision::Refuse(why) => refuse(&tasks, &shared, tcp, peer, why.as_str()),
                // A TCP peer's address is proven by its handshake, so admission never asks
                // for a Retry here.
                Decision::Retry => refuse(&tasks, &shared, tcp, peer, "too many handshakes"),
            }
        }
        shared
            .connections
            .cut_all(&cut::CutOrder::new(EndReason::BrokerShutdown));
        tasks.close();
        let _ = tokio::time::timeout(super::shutdown::CONNECTIONS, tasks.wait()).await;
    }
}

/// Closes a refused connection at once and puts it on the record (at the bounded rate).
fn refuse(
    tasks: &TaskTracker,
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    why: &'static str,
) {
    drop(tcp);
    let shared = shared.clone();
    tasks.spawn(async move {
        connection::record_refused_handshake(&shared, peer, why).await;
    });
}

/// One TCP connection: the TLS handshake and the link's setup within the handshake deadline,
/// then the same service as a QUIC connection.
async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: HandshakePermit,
    acceptor: TlsAcceptor,
    tuning: Tuning,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    tunnel::tcp::prepare_socket(&tcp);
    let deadline = shared.limits.handshake_timeout;
    let tls = match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            // Another CA's certificate, TLS below 1.3, another protocol: rustls has sent the
            // alert that says why.
            tracing::warn!(%peer, error = %e, "TLS handshake over TCP refused");
            connection::record_refused_handshake(&shared, peer, &e.to_string()).await;
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake over TCP timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let certificates = session.peer_certificates().map(<[_]>::to_vec);
    let kind = classify(alpn.as_deref(), certificates.as_deref());
    let link = match tokio::time::timeout(deadline, TcpLink::server(tls, peer, &tuning)).await {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TCP link setup failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TCP link setup timed out");
            return;
        }
    };
    connection::serve_handshaken(Link::Tcp(Arc::new(link)), kind, permit, shared, shutdown).await;
}
