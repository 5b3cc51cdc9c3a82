//! The technicians' side of the broker, on both transports: QUIC (the endpoint, its TLS
//! settings and accept loop) and TLS over TCP (`tcp`), and the tasks that drive each
//! connection and each forward whichever carries it (they speak to a [`tunnel::link::Link`]).
//! This is the only module of the broker that does network I/O with technicians.
//!
//! - `server_config`: TLS 1.3 only, client certificates from our CA (required for ALPN
//!   `sekisho/1`; an enrollment, ALPN `sekisho-enroll/1`, has none), no resumption, no 0-RTT,
//!   no migration, explicit stream limits.
//! - `DataPlane`: the threads that carry tunnels, and on each `serve_endpoint`, which
//!   accepts connections.
//! - `admission`: pre-authentication work bounded per source and in total (QUIC Retry under
//!   load, a share per source address, a total, a handshake deadline).
//! - `connection`: one technician's session: identity, `Hello`/`Welcome`, forwards.
//! - `writer`: the control stream's sending side, so that no client can block the driver.
//! - `enforce`: a live session's end, enforced beside the driver.
//! - `cut`: how the broker ends a connection without the peer's help.
//! - `registry`: the connections this broker holds (bounds per technician, cut by standing).
//! - `enroll`: one enrollment (the only connections without a client certificate).
//! - `tcp`: the TLS-over-TCP listener, its handshake bounded as QUIC's.
//! - `forward`: one forward stream: `Connect`, the policy decision, dial, splice.

mod admission;
mod connection;
mod control;
mod cut;
mod enforce;
mod enroll;
mod forward;
pub(crate) mod registry;
mod tcp;
mod writer;

pub(crate) use tcp::TcpListenerSet;

pub(crate) use admission::{Admission, source_key};
pub(crate) use control::RequestRate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::hub::Hub;
use crate::pki::BrokerPki;
use crate::reload::LivePolicies;
use crate::secret::SealingKey;
use crate::session::HospitalZone;
use crate::store::Store;
use crate::{BindError, Limits};

/// What every connection task reads and shares.
pub(crate) struct Shared {
    /// The policy set in force; take [`LivePolicies::current`] once per decision.
    pub(crate) policies: LivePolicies,
    /// Signs enrolling technicians' certificates.
    pub(crate) pki: Arc<BrokerPki>,
    pub(crate) limits: Limits,
    pub(crate) own_addresses: Vec<SocketAddr>,
    /// The handshakes under way, bounded per source and in total.
    pub(crate) admission: Arc<admission::Admission>,
    pub(crate) store: Store,
    pub(crate) hub: Arc<Hub>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) zone: HospitalZone,
    pub(crate) sealing_key: Arc<SealingKey>,
    /// This broker's id, stored with the sessions it holds.
    pub(crate) broker_id: String,
    /// The technicians' connections this broker holds.
    pub(crate) connections: Arc<registry::Connections>,
    /// Refusals, on the record at a bounded rate.
    pub(crate) refusals: Arc<crate::refusals::RefusalLog>,
    /// Requests per technician in the last minute.
    pub(crate) request_rate: control::RequestRate,
    /// Session ends the store could not take yet, kept in the data directory.
    pub(crate) pending_ends: Arc<crate::pending::PendingEnds>,
}

/// The TLS settings of both transports, from the broker's certificates: TLS 1.3 only, client
/// certificates from our CA (required for ALPN `sekisho/1`; an enrollment, ALPN
/// `sekisho-enroll/1`, has none), no resumption, no 0-RTT.
pub(crate) fn tls_config(pki: &BrokerPki) -> Result<rustls::ServerConfig, BindError> {
    let provider = tunnel::crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.ca_der().clone())
        .map_err(|e| BindError::Tls(format!("the CA certificate is not usable as a root: {e}")))?;
    // A certificate, when presented, must chain to our CA (checked by rustls). Presenting none
    // is allowed only so that enrollment can happen; `connection::classify` refuses every
    // certificate-less connection that did not negotiate the enrollment ALPN.
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| BindError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BindError::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(pki.server_chain(), pki.server_key())
        .map_err(|e| BindError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![proto::ALPN.to_vec(), proto::ENROLL_ALPN.to_vec()];
    // No resumption: every connection presents its certificate in full, so a certificate
    // revoked since the last connection can never come back on a resumed one.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // No 0-RTT: early data is replayable.
    tls.max_early_data_size = 0;
    Ok(tls)
}

/// Builds the QUIC server configuration over [`tls_config`].
pub(crate) fn server_config(
    pki: &BrokerPki,
    limits: &Limits,
    packets: tunnel::udp::PacketSize,
    congestion: tunnel::udp::Congestion,
) -> Result<quinn::ServerConfig, BindError> {
    let quic_tls =
        QuicServerConfig::try_from(tls_config(pki)?).map_err(|e| BindError::Tls(e.to_string()))?;

    let mut transport = TransportConfig::default();
    tunnel::udp::tune_transport(&mut transport, packets, congestion);
    // +1 for the control stream.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(
        limits.max_forwards_per_session.saturating_add(1),
    ));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.max_idle_timeout(Some(
        IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|_| BindError::Tls("the idle timeout is too long".into()))?,
    ));
    // The broker keeps quiet connections alive from its side too, so a healthy connection
    // outlives any idle timeout the broker sets (the client's keep-alives are its own, and
    // may be sparser); only a lost one times out.
    transport.keep_alive_interval(Some(limits.idle_timeout / 3));

    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
    config.transport_config(Arc::new(transport));
    // A technician's session stays on the address it was opened from.
    config.migration(false);
    // Attempts waiting for the accept loop; beyond this the endpoint refuses on its own. The
    // loop decides each one at once (no I/O), so this only absorbs bursts.
    config.max_incoming(limits.max_pending_handshakes.saturating_mul(2));
    Ok(config)
}

/// The threads that carry tunnels.
///
/// Each data thread has a single-threaded tokio runtime, a UDP socket on the broker's port
/// (the kernel shares datagrams out among the sockets by address, see
/// [`tunnel::udp::bind_group`]), a QUIC endpoint on it, and every task of the connections that
/// endpoint accepts: the connection driver, the session, and each forward's splice. A packet
/// thus goes from the socket to the target's TCP connection without waking another thread,
/// which `sekisho-bench` measured as 12–15% less CPU per GB and 20–30% more throughput on one
/// forward than the same tasks on one work-stealing runtime, where every hop between
/// the endpoint, the connection and the splice could be a wake-up across threads. The store,
/// the hub, the web UI and the policy follower stay on the broker's main runtime.
pub(crate) struct DataPlane {
    threads: Vec<DataThread>,
    local_addr: SocketAddr,
    /// The TLS-over-TCP listener, when the broker offers TCP; served on the main runtime.
    tcp: Option<TcpListenerSet>,
}

/// A data thread before it starts: its runtime, and the endpoint made inside it.
struct DataThread {
    /// Taken when the thread starts; dropped without blocking if it never does.
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: quinn::Endpoint,
}

impl Drop for DataThread {
    fn drop(&mut self) {
        // A broker bound but never run may be dropped in async code, where a runtime's
        // ordinary drop (which blocks) is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl DataPlane {
    /// `count` data threads' sockets and endpoints on `listen` (at least one). Nothing runs
    /// until [`serve`](DataPlane::serve).
    pub(crate) fn bind(
        listen: SocketAddr,
        count: usize,
        server_config: quinn::ServerConfig,
        packets: tunnel::udp::PacketSize,
    ) -> std::io::Result<DataPlane> {
        let sockets = tunnel::udp::bind_group(listen, count)?;
        // Every socket of the group has the same address.
        let local_addr = match sockets.first() {
            Some(socket) => socket.local_addr()?,
            None => listen,
        };
        let mut threads = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // The endpoint registers its socket, and spawns its driver, on the runtime
            // entered here, which runs them once its thread starts.
            let endpoint = {
                let _entered = runtime.enter();
                tunnel::udp::endpoint_on(socket, Some(server_config.clone()), packets)?
            };
            threads.push(DataThread {
                runtime: Some(runtime),
                endpoint,
            });
        }
        Ok(DataPlane {
            threads,
            local_addr,
            tcp: None,
        })
    }

    /// Also serves the TLS-over-TCP listener `tcp`.
    pub(crate) fn with_tcp(mut self, tcp: TcpListenerSet) -> DataPlane {
        self.tcp = Some(tcp);
        self
    }

    /// The address every data thread's socket is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts the data threads, each accepting connections until `shutdown`; returns when
    /// all have closed their endpoints, having recorded the end of every session this broker
    /// held. The threads keep their runtimes (idle) until `released` is cancelled.
    pub(crate) async fn serve(
        mut self,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        released: CancellationToken,
    ) {
        let tcp = self
            .tcp
            .take()
            .map(|tcp| tokio::spawn(tcp.serve(shared.clone(), shutdown.clone())));
        let mut finished = Vec::with_capacity(self.threads.len());
        for (index, thread) in self.threads.iter_mut().enumerate() {
            let Some(runtime) = thread.runtime.take() else {
                continue;
            };
            let endpoint = thread.endpoint.clone();
            let (done, finished_here) = tokio::sync::oneshot::channel::<()>();
            let (shared, shutdown, released) = (shared.clone(), shutdown.clone(), released.clone());
            let started = std::thread::Builder::new()
                .name(format!("sekisho-data-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        serve_endpoint(endpoint, shared, shutdown).await;
                        let _ = done.send(());
                        released.cancelled().await;
                    });
                });
            match started {
                Ok(_) => finished.push(finished_here),
                // Its socket stays open with no one reading it (the kernel still sends it
                // its share of new connections), so say so loudly.
                Err(e) => tracing::error!(error = %e, thread = index, "cannot start a data thread"),
            }
        }
        for finished_here in finished {
            // An error means the thread is gone (it panicked); nothing is left to wait for.
            let _ = finished_here.await;
        }
        if let Some(tcp) = tcp {
            let _ = tcp.await;
        }
        // Sessions whose connection task could not record its end (store trouble) are ended
        // here: first those kept for later, as what they were, then the rest as a shutdown.
        // Bounded, so a store that hangs cannot hold the stop up.
        let now = shared.clock.now();
        let recorded = tokio::time::timeout(shutdown::RECORD_ENDS, async {
            shared.pending_ends.apply(&shared.store).await?;
            shared
                .store
                .end_sessions_of_broker(
                    &shared.broker_id,
                    crate::session::EndReason::BrokerShutdown,
                    now,
                )
                .await
        })
        .await;
        match recorded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot record the end of the sessions this broker held; the next start will");
            }
            Err(_) => {
                tracing::error!(
                    "the store did not answer in time; the next start records the end of the sessions this broker held"
                );
            }
        }
    }
}

/// How long each step of a stop may take, whatever peers and the store do: together well
/// under ten seconds (a service manager's usual patience before it kills).
pub mod shutdown {
    use std::time::Duration;

    /// Connections record their session's end and tell their client (the cut itself is
    /// done within half a second).
    pub const CONNECTIONS: Duration = Duration::from_secs(2);
    /// Close frames reach the clients.
    pub const CLOSE_FRAMES: Duration = Duration::from_secs(1);
    /// Ends the connections could not record are recorded.
    pub const RECORD_ENDS: Duration = Duration::from_millis(1500);
    /// The other tasks (hub, web UI, webhook, senders) finish and the stop is recorded.
    pub const TASKS: Duration = Duration::from_secs(3);
    /// The database closes.
    pub const CLOSE_STORE: Duration = Duration::from_secs(1);
}

/// Says in the log, at most every ten seconds, how many attempts admission refused: a flood
/// must not turn into a flood of log lines.
#[derive(Default)]
struct RefusedLog {
    since: Option<std::time::Instant>,
    count: u64,
}

impl RefusedLog {
    fn note(&mut self, peer: SocketAddr, why: admission::Refused) {
        self.count += 1;
        let now = std::time::Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= Duration::from_secs(10))
        {
            tracing::warn!(%peer, reason = why.as_str(), refused = self.count, "connection attempts refused (count since the last line)");
            self.since = Some(now);
            self.count = 0;
        }
    }
}

/// Accepts connections on `endpoint` until `shutdown`, then closes it and waits (briefly)
/// for the connection tasks to finish and the close frames to go out.
async fn serve_endpoint(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let mut refused_log = RefusedLog::default();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            () = shutdown.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        // Decided before any cryptographic work, so a flood of connection attempts costs a
        // bounded amount of CPU and memory (see `admission`).
        let peer = incoming.remote_address();
        match shared.admission.decide(
            peer.ip(),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        ) {
            admission::Decision::Accept(permit) => {
                tasks.spawn(connection::serve_connection(
                    incoming,
                    permit,
                    shared.clone(),
                    shutdown.clone(),
                ));
            }
            admission::Decision::Retry => {
                // Fails only if a Retry was already sent for this attempt; then the peer
                // validated nothing, and is ignored.
                if incoming.retry().is_err() {
                    tracing::debug!(%peer, "a second Retry is not allowed; ignoring");
                }
            }
            admission::Decision::Refuse(why) => {
                incoming.refuse();
                refused_log.note(peer, why);
                // On the record at a bounded rate; the accept loop does not wait for it.
                let shared = shared.clone();
                tasks.spawn(async move {
                    connection::record_refused_handshake(&shared, peer, why.as_str()).await;
                });
            }
        }
    }
    // Every connection is cut at once (whatever its driver is doing); each driver records its
    // session's end and tells the client why. Give them a moment, then close what is left.
    shared.connections.cut_all(&cut::CutOrder::new(
        crate::session::EndReason::BrokerShutdown,
    ));
    tasks.close();
    let _ = tokio::time::timeout(shutdown::CONNECTIONS, tasks.wait()).await;
    endpoint.close(
        quinn::VarInt::from_u32(tunnel::close_code::BROKER_SHUTDOWN),
        b"the broker is shutting down",
    );
    // Give the close frames a moment to reach the peers; bounded so shutdown never hangs.
    let _ = tokio::time::timeout(shutdown::CLOSE_FRAMES, endpoint.wait_idle()).await;
}
