//! The QUIC endpoint: TLS settings, the accept loop, and the tasks that drive each
//! connection and each forward. This is the only module of the broker that does network I/O.
//!
//! - `server_config`: TLS 1.3 only, client certificates from our CA required, ALPN
//!   `sekisho/1`, no resumption, no 0-RTT, no migration, explicit stream limits.
//! - `serve`: accepts connections, bounding how many handshakes run at once.
//! - `connection`: one technician's session: identity, `Hello`/`Welcome`, forwards.
//! - `forward`: one forward stream: `Connect`, the policy decision, dial, splice.
//! - `targets`: resolving a vendor's target names once per session and pinning the result.

mod connection;
mod forward;
mod targets;

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pki::BrokerPki;
use crate::policy::PolicySet;
use crate::{BindError, Limits};

pub use targets::{PinnedTargets, TargetProblem};

/// What every connection task reads: policies, limits, the broker's own addresses.
pub struct Shared {
    policies: PolicySet,
    limits: Limits,
    own_addresses: Vec<SocketAddr>,
    handshake_slots: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn new(
        policies: PolicySet,
        limits: Limits,
        own_addresses: Vec<SocketAddr>,
    ) -> Shared {
        let handshake_slots = Arc::new(Semaphore::new(limits.max_pending_handshakes));
        Shared {
            policies,
            limits,
            own_addresses,
            handshake_slots,
        }
    }

    pub(crate) fn policies(&self) -> &PolicySet {
        &self.policies
    }
}

/// Builds the QUIC server configuration from the broker's certificates.
pub(crate) fn server_config(
    pki: &BrokerPki,
    limits: &Limits,
) -> Result<quinn::ServerConfig, BindError> {
    let provider = tunnel::crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.ca_der().clone())
        .map_err(|e| BindError::Tls(format!("the CA certificate is not usable as a root: {e}")))?;
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| BindError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BindError::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(pki.server_chain(), pki.server_key())
        .map_err(|e| BindError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![proto::ALPN.to_vec()];
    // No resumption: every connection presents its certificate in full, so a certificate
    // revoked since the last connection can never come back on a resumed one.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // No 0-RTT: early data is replayable.
    tls.max_early_data_size = 0;
    let quic_tls = QuicServerConfig::try_from(tls).map_err(|e| BindError::Tls(e.to_string()))?;

    let mut transport = TransportConfig::default();
    // +1 for the control stream.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(
        limits.max_forwards_per_session.saturating_add(1),
    ));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.max_idle_timeout(Some(
        IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|_| BindError::Tls("the idle timeout is too long".into()))?,
    ));

    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
    config.transport_config(Arc::new(transport));
    // A technician's session stays on the address it was opened from.
    config.migration(false);
    // Connections waiting to be accepted; beyond this the endpoint refuses on its own.
    config.max_incoming(limits.max_pending_handshakes.saturating_mul(4));
    Ok(config)
}

/// Accepts connections until `shutdown`, then closes the endpoint and waits for the
/// connection tasks to finish.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            () = shutdown.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        // A handshake slot is taken before any cryptographic work, so a flood of
        // connection attempts costs a bounded amount of CPU and memory.
        let Ok(slot) = shared.handshake_slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %incoming.remote_address(), "too many handshakes under way; refusing");
            incoming.refuse();
            continue;
        };
        tasks.spawn(connection::serve_connection(
            incoming,
            slot,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    endpoint.close(
        tunnel::close_code::BROKER_SHUTDOWN,
        b"the broker is shutting down",
    );
    tasks.close();
    tasks.wait().await;
    // Give the close frames a moment to reach the peers; bounded so shutdown never hangs.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
}
