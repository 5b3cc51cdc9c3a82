//! sekisho-broker: the hospital's side of remote maintenance.
//!
//! A broker holds the hospital's policies, its own certificate authority and one UDP port on
//! which technicians' clients connect over QUIC. For each connection it checks the client
//! certificate, learns which vendor and technician it is, and carries that technician's TCP
//! forwards to the targets their vendor's policy names, at addresses pinned when the session
//! started, and to nothing else.
//!
//! Start it in two phases, so the caller (a test, or `main`) knows the bound address before
//! anything runs:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sekisho_broker::{Broker, BrokerConfig};
//! let config = BrokerConfig::new("sekisho-data".into(), "policies".into());
//! let broker = Broker::bind(config).await?;
//! println!("listening on {}", broker.local_addr());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! broker.run(shutdown).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`policy`]: parse and check the policy files (pure).
//! - [`pki`]: the broker's CA, server certificate and client certificates.
//! - [`quic`]: the QUIC endpoint, one task per connection and one per forward; the only place
//!   that does network I/O.
//!
//! The broker never dials an address a policy did not name, never dials a name it did not
//! resolve and check when the session started, and never trusts a certificate its own CA did
//! not issue.

pub mod clock;
pub mod pki;
pub mod policy;
pub mod quic;
pub mod otp;
pub mod secret;
pub mod session;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pki::BrokerPki;
use crate::policy::{PolicyErrors, PolicySet};

/// The port the broker listens on unless told otherwise (UDP).
pub const DEFAULT_PORT: u16 = 4433;

/// Where the broker keeps its state and finds its policies.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The data directory: CA, keys, and (later) the database. Created 0700 if missing.
    pub data_dir: PathBuf,
    /// The directory holding `hospital.toml` and `vendors/*.toml`.
    pub policies_dir: PathBuf,
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// Bounds on what peers can make the broker hold.
    pub limits: Limits,
}

impl BrokerConfig {
    /// A configuration with default limits, listening on every address at [`DEFAULT_PORT`].
    pub fn new(data_dir: PathBuf, policies_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            data_dir,
            policies_dir,
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            limits: Limits::default(),
        }
    }
}

/// Bounds on the work and memory a peer can cause, set explicitly rather than left to library
/// defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections whose TLS handshake is under way at once; more are refused at once.
    pub max_pending_handshakes: usize,
    /// How long a TLS handshake, and then the client's `Hello`, may take.
    pub handshake_timeout: Duration,
    /// Forwards open at once on one session. A client that wants more waits for one to end
    /// (QUIC stream credit), it is not refused.
    pub max_forwards_per_session: u32,
    /// How long a forward stream may take to name its target.
    pub connect_request_timeout: Duration,
    /// How long the broker waits for a target to accept a TCP connection.
    pub target_connect_timeout: Duration,
    /// A connection with no packets for this long is closed (clients send keep-alives).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pending_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            max_forwards_per_session: 256,
            connect_request_timeout: Duration::from_secs(10),
            target_connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The policy files have problems; every one is listed.
    #[error(
        "the policies in {dir} have problems; the broker does not start half-configured:\n{errors}"
    )]
    Policy {
        /// The policies directory.
        dir: PathBuf,
        /// Every problem found.
        errors: PolicyErrors,
    },
    /// The CA or server certificate could not be loaded or made.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The TLS configuration could not be built from the certificates.
    #[error("the broker's TLS configuration could not be built: {0}")]
    Tls(String),
    /// The UDP port could not be bound.
    #[error("could not listen on UDP {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A broker bound to its port, ready to [`run`](Broker::run).
pub struct Broker {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    shared: Arc<quic::Shared>,
    pki: BrokerPki,
}

impl Broker {
    /// Loads the policies and the PKI (creating the CA on first start) and binds the UDP port.
    /// Nothing is served until [`run`](Broker::run).
    pub async fn bind(config: BrokerConfig) -> Result<Broker, BindError> {
        let policies =
            PolicySet::load(&config.policies_dir).map_err(|errors| BindError::Policy {
                dir: config.policies_dir.clone(),
                errors,
            })?;
        let pki = BrokerPki::load_or_create(&config.data_dir)?;
        let server_config = quic::server_config(&pki, &config.limits)?;
        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
            BindError::Listen {
                addr: config.listen,
                source,
            }
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| BindError::Listen {
            addr: config.listen,
            source,
        })?;
        tracing::info!(
            %local_addr,
            hospital = %policies.hospital().name,
            vendors = policies.vendors().count(),
            "broker bound"
        );
        let shared = Arc::new(quic::Shared::new(policies, config.limits, vec![local_addr]));
        Ok(Broker {
            endpoint,
            local_addr,
            shared,
            pki,
        })
    }

    /// The UDP address the broker listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker's PKI: its CA (what clients pin) and the means to issue client certificates.
    pub fn pki(&self) -> &BrokerPki {
        &self.pki
    }

    /// The policies the broker enforces.
    pub fn policies(&self) -> &PolicySet {
        self.shared.policies()
    }

    /// Serves connections until `shutdown` is cancelled, then closes every session and waits
    /// (briefly) for the peers to learn of it.
    pub async fn run(self, shutdown: CancellationToken) {
        quic::serve(self.endpoint, self.shared, shutdown).await;
    }
}
