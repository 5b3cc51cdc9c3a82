//! sekisho-broker: the hospital's side of remote maintenance.
//!
//! A broker holds the hospital's policies, its own certificate authority, a database and one
//! UDP port on which technicians' clients connect over QUIC. For each connection it checks the
//! client certificate and learns which vendor and technician it is. A technician asks for
//! access; hospital approvers answer (with an end time, or a reason); the technician opens
//! the approved request with a one-time password; the broker then carries their TCP forwards
//! to the approved targets, at the addresses pinned at approval and to nothing else, and cuts
//! the session at its end time.
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
//! - [`policy`]: parse and check the policy files (pure), and render them as a document.
//! - [`reload`]: the policy set in force, swapped on reload (SIGHUP, `policy reload`).
//! - [`session`]: the lifecycle rules `requested → approved → active → ended` (pure: the time
//!   is an argument).
//! - [`approval`]: the hospital's desk: approve, deny, revoke, move the end time, lockdown.
//! - [`store`]: SQLite or PostgreSQL through sqlx; every transition a conditional update.
//! - [`hub`]: watches the store so changes made anywhere reach live sessions within a second.
//! - [`identity`]: vendors and technicians, enrollment tokens, enrollment, and the registry
//!   of issued certificates every connection is checked against.
//! - [`otp`], [`secret`]: TOTP codes; secrets sealed at rest and never printed.
//! - [`pending`]: session ends the store could not take, kept until it can.
//! - [`pki`]: the broker's CA, server certificate and client certificates.
//! - [`targets`]: target names resolved at approval and pinned for the session.
//! - [`quic`]: the data threads (one per core, each with its own socket, QUIC endpoint and
//!   runtime), one task per connection and one per forward; the only place that does network
//!   I/O with technicians.
//! - [`clock`]: the time, as an argument (tests move a manual clock): the wall clock for the
//!   record, the monotonic clock for deadlines.
//! - [`timewatch`]: steps of the wall clock and the host's time synchronisation, on the
//!   record.
//! - [`refusals`]: refusals on the record at a rate no peer controls.
//! - [`encoding`]: hex and base32.
//! - [`staff`]: staff accounts for the web UI: roles, argon2id passwords, TOTP, logins.
//! - [`web`]: the web UI and JSON API for approvers, admins and auditors (axum).
//! - [`webhook`]: each request, approval, denial and revocation POSTed to the hospital's
//!   relay (HTTPS, signed, retried; a final failure on the audit record).
//! - [`sender`]: one sender per destination of the webhook and the audit syslog among the
//!   brokers sharing a database: a lease in the database, with the cursor the next sender
//!   resumes from.
//! - [`cli`]: the admin command line's commands.
//!
//! The broker never dials an address a policy did not name, never dials a name it did not
//! resolve and check when the session started, and never trusts a certificate its own CA did
//! not issue.

pub mod approval;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod encoding;
pub mod hub;
pub mod identity;
pub mod keys;
pub mod otp;
pub mod pending;
pub mod pki;
pub mod policy;
pub mod quic;
pub mod refusals;
pub mod reload;
pub mod secret;
pub mod sender;
pub mod session;
pub mod staff;
pub mod store;
pub mod targets;
pub mod timewatch;
pub mod web;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::approval::Desk;
use crate::clock::{Clock, SystemClock};
use crate::hub::Hub;
use crate::pki::BrokerPki;
use crate::policy::{PolicyErrors, PolicySet};
use crate::secret::SealingKey;
use crate::session::HospitalZone;
use crate::store::{Store, StoreError, StoreLocation};

/// The port the broker listens on unless told otherwise (UDP).
pub const DEFAULT_PORT: u16 = 4433;

/// Where the broker keeps its state and finds its policies.
#[derive(Clone)]
pub struct BrokerConfig {
    /// The data directory: CA, keys, the secret-sealing key and (by default) the SQLite
    /// database. Created 0700 if missing.
    pub data_dir: PathBuf,
    /// The directory holding `hospital.toml` and `vendors/*.toml`.
    pub policies_dir: PathBuf,
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// Where TLS over TCP is offered too (for technicians whose network passes no UDP);
    /// `None` offers QUIC only. Port 0 means the QUIC port's number, so technicians need one
    /// `HOST:PORT` for both.
    pub listen_tcp: Option<SocketAddr>,
    /// The database; `None` is SQLite at `DATA_DIR/sekisho.db`.
    pub database: Option<StoreLocation>,
    /// Bounds on what peers can make the broker hold.
    pub limits: Limits,
    /// Where the broker reads the time (tests pass a [`clock::ManualClock`]).
    pub clock: Arc<dyn Clock>,
    /// A file to append every audit event to, as a JSON line, for a SIEM (see
    /// [`audit::stream`]).
    pub audit_stream: Option<PathBuf>,
    /// A syslog collector (SIEM) to send every audit event to, as an RFC 5424 message (see
    /// [`audit::syslog`]); `None` sends nothing.
    pub audit_syslog: Option<audit::syslog::SyslogConfig>,
    /// The web UI for staff; `None` serves none.
    pub web: Option<web::WebConfig>,
    /// The approvers' webhook (with or without the web UI); `None` sends nothing.
    pub webhook: Option<webhook::WebhookConfig>,
    /// How long the lease of a broker sending the webhook or the audit syslog lasts without
    /// renewal ([`sender::DEFAULT_LEASE`]): with brokers sharing a database, one sends to each
    /// destination, and another takes over within this (and a quarter of it) when it stops
    /// without letting go. Tests shorten it.
    pub sender_lease: Duration,
    /// Threads that carry tunnels, each with a UDP socket on the listening port, its own
    /// QUIC endpoint and the connections that socket receives (see [`quic`]). Default: one
    /// per core.
    pub data_threads: usize,
    /// The largest QUIC packets the broker accepts and probes for: Ethernet's by default;
    /// raise it only where the technicians' paths carry jumbo frames.
    pub max_packet: tunnel::udp::PacketSize,
    /// The congestion controller the broker's QUIC connections send with (what flows to
    /// technicians); see [`tunnel::udp::Congestion`].
    pub congestion: tunnel::udp::Congestion,
    /// What tells whether the host's clock is synchronised ([`timewatch`]): by default the
    /// host's `timedatectl` or `chronyc` ([`timewatch::SystemTimeSync`]); tests pass a
    /// [`timewatch::ManualTimeSync`].
    pub time_sync: Arc<dyn timewatch::TimeSyncProbe>,
    /// How often it is asked ([`timewatch::DEFAULT_SYNC_INTERVAL`]); the state at start and
    /// each change are recorded. Tests shorten it.
    pub time_sync_interval: Duration,
    /// How often the broker signs a checkpoint of the audit chain while events are appended
    /// ([`audit::checkpoint::DEFAULT_INTERVAL`]). Tests shorten it.
    pub checkpoint_interval: Duration,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("data_dir", &self.data_dir)
            .field("policies_dir", &self.policies_dir)
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("limits", &self.limits)
            .field("audit_stream", &self.audit_stream)
            .field("audit_syslog", &self.audit_syslog)
            .field("web", &self.web)
            .field("webhook", &self.webhook)
            .field("sender_lease", &self.sender_lease)
            .field("data_threads", &self.data_threads)
            .field("max_packet", &self.max_packet)
            .field("congestion", &self.congestion)
            .field("time_sync_interval", &self.time_sync_interval)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// A configuration with default limits, SQLite in the data directory, the system clock
    /// and the host's time synchronisation, listening on every address at [`DEFAULT_PORT`].
    pub fn new(data_dir: PathBuf, policies_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            data_dir,
            policies_dir,
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            listen_tcp: None,
            database: None,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            audit_stream: None,
            audit_syslog: None,
            web: None,
            webhook: None,
            sender_lease: sender::DEFAULT_LEASE,
            data_threads: default_data_threads(),
            max_packet: tunnel::udp::PacketSize::default(),
            congestion: tunnel::udp::Congestion::default(),
            time_sync: Arc::new(timewatch::SystemTimeSync::default()),
            time_sync_interval: timewatch::DEFAULT_SYNC_INTERVAL,
            checkpoint_interval: audit::checkpoint::DEFAULT_INTERVAL,
        }
    }

    /// The database this configuration names.
    pub fn store_location(&self) -> StoreLocation {
        self.database
            .clone()
            .unwrap_or_else(|| StoreLocation::default_in(&self.data_dir))
    }
}

/// One data thread per core the system gives this process.
pub fn default_data_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Bounds on the work and memory a peer can cause, set explicitly rather than left to library
/// defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connection attempts not yet authenticated (TLS handshake, then `Hello`; or an
    /// enrollment) at once, in all; more are refused. Sized by memory: each costs a few
    /// kilobytes.
    pub max_pending_handshakes: usize,
    /// The same, per source address (an IPv6 /64 counts as one).
    pub max_pending_handshakes_per_source: usize,
    /// Above this many attempts under way, a peer must prove its address (QUIC Retry) first.
    pub retry_after_pending: usize,
    /// How long a TLS handshake, and then the client's `Hello` (or an enrolling client's
    /// first message), may take.
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
    /// Connections one technician may hold at once (each `sekisho connect` or `status` is
    /// one); more are refused.
    pub max_connections_per_technician: usize,
    /// Requests one technician may make per minute; more are refused until the minute has
    /// passed.
    pub requests_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pending_handshakes: 4096,
            max_pending_handshakes_per_source: 32,
            retry_after_pending: 64,
            handshake_timeout: Duration::from_secs(5),
            max_forwards_per_session: 256,
            connect_request_timeout: Duration::from_secs(10),
            target_connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections_per_technician: 4,
            requests_per_minute: 10,
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
    /// The hospital's time zone is not known.
    #[error("policies/hospital.toml: {0}")]
    TimeZone(String),
    /// The database could not be opened or migrated.
    #[error("cannot open the database {location}: {source}")]
    Store {
        /// Which database.
        location: StoreLocation,
        /// Why.
        source: StoreError,
    },
    /// The data directory's CA or sealing key is missing, or not the database's.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// The web UI could not start.
    #[error(transparent)]
    Web(#[from] web::WebError),
    /// The audit syslog's URL or CA file cannot be used.
    #[error(transparent)]
    AuditSyslog(#[from] audit::syslog::SyslogError),
    /// The webhook's URL, CA file or secret file cannot be used.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
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
    data_plane: quic::DataPlane,
    local_addr: SocketAddr,
    local_tcp_addr: Option<SocketAddr>,
    shared: Arc<quic::Shared>,
    pki: Arc<BrokerPki>,
    audit_stream: Option<PathBuf>,
    audit_syslog: Option<audit::syslog::Sender>,
    reloader: reload::Reloader,
    /// The audit log's head at start: reload requests after it are followed.
    audit_seq_at_start: i64,
    web: Option<web::WebServer>,
    webhook: Option<webhook::Sender>,
    sender_lease: Duration,
    time_sync: Arc<dyn timewatch::TimeSyncProbe>,
    time_sync_interval: Duration,
    checkpointer: Arc<audit::checkpoint::Checkpointer>,
    checkpoint_interval: Duration,
}

/// Everything the broker and the admin CLI open from a configuration: policies, time zone,
/// database, and the hospital's keys (sealing key and CA), checked against the database.
pub struct Hospital {
    /// The policies.
    pub policies: Arc<PolicySet>,
    /// The hospital's time zone.
    pub zone: HospitalZone,
    /// The database.
    pub store: Store,
    /// The key that seals TOTP secrets.
    pub sealing_key: Arc<SealingKey>,
    /// The hospital's CA and this broker's server certificate.
    pub pki: Arc<BrokerPki>,
}

impl Hospital {
    /// Loads the policies, resolves the time zone, opens (and migrates) the database and the
    /// sealing key. The policies are checked first, so a broken policy changes nothing on disk.
    pub async fn open(config: &BrokerConfig) -> Result<Hospital, BindError> {
        let policies =
            PolicySet::load(&config.policies_dir).map_err(|errors| BindError::Policy {
                dir: config.policies_dir.clone(),
                errors,
            })?;
        let zone =
            HospitalZone::resolve(&policies.hospital().timezone).map_err(BindError::TimeZone)?;
        pki::files::create_private_dir(&config.data_dir)?;
        // Files an older version made readable by others, and any made by hand, are tightened.
        pki::files::tighten_data_dir(&config.data_dir)?;
        let location = config.store_location();
        let store = Store::open(&location)
            .await
            .map_err(|source| BindError::Store { location, source })?;
        let actor = audit::Actor::Broker(broker_id(&config.data_dir)?);
        let (sealing_key, pki) =
            match keys::open(&config.data_dir, &store, &actor, config.clock.now()).await {
                Ok(keys) => keys,
                Err(refusal) => {
                    store.close().await;
                    return Err(refusal.into());
                }
            };
        Ok(Hospital {
            policies: Arc::new(policies),
            zone,
            store,
            sealing_key: Arc::new(sealing_key),
            pki: Arc::new(pki),
        })
    }

    /// The hospital's desk for approvals, over this database.
    pub fn desk(&self, clock: Arc<dyn Clock>) -> Desk {
        Desk::new(
            self.store.clone(),
            self.policies.clone(),
            self.zone.clone(),
            clock,
        )
    }
}

impl Broker {
    /// Loads the policies and the PKI (creating the CA on first start) and binds the UDP port.
    /// Nothing is served until [`run`](Broker::run).
    pub async fn bind(config: BrokerConfig) -> Result<Broker, BindError> {
        // Before anything is created: a webhook that cannot work stops the start here.
        let webhook = config
            .webhook
            .as_ref()
            .map(webhook::Webhook::prepare)
            .transpose()?;
        let audit_syslog = config
            .audit_syslog
            .as_ref()
            .map(audit::syslog::Syslog::prepare)
            .transpose()?;
        let hospital = Hospital::open(&config).await?;
        let pki = hospital.pki.clone();
        let webhook = webhook
            .map(|webhook| webhook.sender(pki.ca_der(), config.clock.clone()))
            .transpose()?;
        let audit_syslog = audit_syslog
            .map(|syslog| syslog.sender(pki.ca_der(), &config.data_dir))
            .transpose()?;
        let broker_id = broker_id(&config.data_dir)?;
        let checkpoint_key = Arc::new(audit::checkpoint::CheckpointKey::load_or_create(
            &config.data_dir,
        )?);
        let now = config.clock.now();
        let store_error = |source| BindError::Store {
            location: config.store_location(),
            source,
        };
        // Ends this broker could not record before it stopped (the store could not be
        // written) are recorded first, as what they were.
        let pending_ends = Arc::new(pending::PendingEnds::in_dir(&config.data_dir));
        let late = pending_ends
            .apply(&hospital.store)
            .await
            .map_err(store_error)?;
        if late > 0 {
            tracing::warn!(
                sessions = late,
                "recorded session ends the store could not take before the last stop"
            );
        }
        // Sessions this broker held when it last stopped without letting them go (a crash, a
        // power cut) lost their connection then: those whose vendor allows it stay approved
        // for the technician to take up again, the rest are over.
        let (detached, orphaned) =
            settle_sessions_left_behind(&hospital.store, &hospital.policies, &broker_id, now)
                .await
                .map_err(store_error)?;
        if detached > 0 {
            tracing::warn!(
                sessions = detached,
                "sessions held by the previous run lost their connection; they stay approved until their end time (connection-lost)"
            );
        }
        if orphaned > 0 {
            tracing::warn!(
                sessions = orphaned,
                "sessions left open by the previous run were ended (broker-shutdown)"
            );
        }
        let lockdown = hospital.store.lockdown().await.map_err(store_error)?;
        let server_config =
            quic::server_config(&pki, &config.limits, config.max_packet, config.congestion)?;
        let data_plane = quic::DataPlane::bind(
            config.listen,
            config.data_threads,
            server_config,
            config.max_packet,
        )
        .map_err(|source| BindError::Listen {
            addr: config.listen,
            source,
        })?;
        let local_addr = data_plane.local_addr();
        let (data_plane, local_tcp_addr) = match config.listen_tcp {
            None => (data_plane, None),
            Some(mut addr) => {
                if addr.port() == 0 {
                    addr.set_port(local_addr.port());
                }
                let tcp = quic::TcpListenerSet::bind(addr, quic::tls_config(&pki)?, &config.limits)
                    .map_err(|source| BindError::Listen { addr, source })?;
                let bound = tcp
                    .local_addr()
                    .map_err(|source| BindError::Listen { addr, source })?;
                (data_plane.with_tcp(tcp), Some(bound))
            }
        };
        // On the record only once the ports are ours: a broker that cannot listen did not start.
        let policy_digest = policy_digest(&hospital.policies);
        let broker_actor = audit::Actor::Broker(broker_id.clone());
        let mut started =
            audit::AuditEvent::new(now, broker_actor.clone(), audit::EventKind::BrokerStarted)
                .detail("listen", config.listen)
                .detail("version", env!("CARGO_PKG_VERSION"));
        if let Some(tcp) = local_tcp_addr {
            started = started.detail("listen_tcp", tcp);
        }
        for event in [
            started,
            audit::AuditEvent::new(now, broker_actor, audit::EventKind::PolicyLoaded)
                .detail("sha256", &policy_digest)
                .detail("files", hospital.policies.files().len())
                .detail("vendors", hospital.policies.vendors().count())
                .detail(
                    "combined_roles",
                    policy::staff_rules_record(&hospital.policies.hospital().staff),
                ),
        ] {
            hospital.store.record(&event).await.map_err(store_error)?;
        }
        tracing::info!(
            %local_addr,
            hospital = %hospital.policies.hospital().name,
            vendors = hospital.policies.vendors().count(),
            database = %config.store_location(),
            "broker bound"
        );
        let audit_seq_at_start = hospital.store.audit_head().await.map_err(store_error)?.0;
        let policies = reload::LivePolicies::new(hospital.policies);
        let reloader = reload::Reloader {
            dir: config.policies_dir.clone(),
            live: policies.clone(),
            store: hospital.store.clone(),
            zone: hospital.zone.clone(),
            clock: config.clock.clone(),
            broker_id: broker_id.clone(),
        };
        let clock = config.clock.clone();
        let web = match &config.web {
            Some(web_config) => {
                let desk = Desk::new(
                    hospital.store.clone(),
                    policies.clone(),
                    hospital.zone.clone(),
                    clock.clone(),
                );
                let live = policies.clone();
                let rules = policies.clone();
                let staff = staff::StaffDirectory::new(
                    hospital.store.clone(),
                    hospital.sealing_key.clone(),
                    clock.clone(),
                    &policies.current().hospital().name,
                    web_config.idle_timeout,
                )
                .with_session_lifetime(web_config.session_lifetime)
                .with_lockout(move || live.current().hospital().defaults.staff_lockout)
                .with_rules(move || rules.current().hospital().staff.clone());
                let mut web_config = web_config.clone();
                web_config
                    .checkpoint_dir
                    .get_or_insert_with(|| config.data_dir.clone());
                Some(web::WebServer::bind(&web_config, &pki, desk, staff).await?)
            }
            None => None,
        };
        // Every socket the broker listens on is never a target (targets::PinnedTargets).
        let mut own_addresses = vec![local_addr];
        own_addresses.extend(web.as_ref().map(web::WebServer::local_addr));
        let shared = Arc::new(quic::Shared {
            admission: quic::Admission::new(&config.limits),
            policies,
            pki: pki.clone(),
            connections: quic::registry::Connections::new(
                config.limits.max_connections_per_technician,
            ),
            refusals: refusals::RefusalLog::new(clock.clone(), &broker_id),
            request_rate: quic::RequestRate::new(config.limits.requests_per_minute),
            pending_ends,
            limits: config.limits,
            own_addresses,
            store: hospital.store,
            hub: Arc::new(Hub::new(lockdown)),
            clock,
            zone: hospital.zone,
            sealing_key: hospital.sealing_key,
            broker_id,
        });
        let checkpointer = Arc::new(audit::checkpoint::Checkpointer::new(
            shared.store.clone(),
            checkpoint_key,
            shared.broker_id.clone(),
            config.clock.clone(),
            &config.data_dir,
        ));
        Ok(Broker {
            checkpointer,
            checkpoint_interval: config.checkpoint_interval,
            data_plane,
            local_addr,
            local_tcp_addr,
            shared,
            pki,
            audit_stream: config.audit_stream,
            audit_syslog,
            reloader,
            audit_seq_at_start,
            web,
            webhook,
            sender_lease: config.sender_lease,
            time_sync: config.time_sync,
            time_sync_interval: config.time_sync_interval,
        })
    }

    /// The UDP address the broker listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP address TLS over TCP is offered on, when it is.
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.local_tcp_addr
    }

    /// The web UI's TCP address, when it is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(web::WebServer::local_addr)
    }

    /// The first admin's one-time link, when no admin exists yet (print it once).
    pub fn first_admin_url(&self) -> Option<&str> {
        self.web.as_ref().and_then(web::WebServer::first_admin_url)
    }

    /// Where the approvers' webhook goes (`https://host:port`, never the URL's path) and
    /// whether it is signed, when one is configured.
    pub fn webhook_description(&self) -> Option<String> {
        self.webhook.as_ref().map(webhook::Sender::describe)
    }

    /// The syslog collector the audit log goes to (`tls://host:port`), when one is configured.
    pub fn audit_syslog_url(&self) -> Option<String> {
        self.audit_syslog.as_ref().map(audit::syslog::Sender::url)
    }

    /// The fingerprint of the key this broker signs audit checkpoints with (`sha256:…`).
    pub fn checkpoint_fingerprint(&self) -> String {
        self.checkpointer.fingerprint()
    }

    /// The broker's PKI: its CA (what clients pin) and the means to issue client certificates.
    pub fn pki(&self) -> &BrokerPki {
        &self.pki
    }

    /// The policies the broker enforces now.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.shared.policies.current()
    }

    /// What reloads this broker's policies (SIGHUP in the binary; tests call it directly).
    pub fn reloader(&self) -> reload::Reloader {
        self.reloader.clone()
    }

    /// The hospital's desk over this broker's database and clock.
    pub fn desk(&self) -> Desk {
        Desk::new(
            self.shared.store.clone(),
            self.shared.policies.clone(),
            self.shared.zone.clone(),
            self.shared.clock.clone(),
        )
    }

    /// Serves connections until `shutdown` is cancelled, then ends every session (reason
    /// `broker-shutdown`), tells the clients, and waits (briefly) for them to hear.
    pub async fn run(self, shutdown: CancellationToken) {
        let hub = tokio::spawn(hub::run(
            self.shared.store.clone(),
            self.shared.hub.clone(),
            self.shared.connections.clone(),
            self.shared.clock.clone(),
            self.shared.broker_id.clone(),
            shutdown.clone(),
        ));
        let refusals = tokio::spawn(refusals::run(
            self.shared.refusals.clone(),
            self.shared.store.clone(),
            shutdown.clone(),
        ));
        let timewatch = tokio::spawn(timewatch::run(
            timewatch::Watch {
                clock: self.shared.clock.clone(),
                store: self.shared.store.clone(),
                broker_id: self.shared.broker_id.clone(),
                probe: self.time_sync.clone(),
                sync_interval: self.time_sync_interval,
            },
            shutdown.clone(),
        ));
        let follower = tokio::spawn(reload::follow_requests(
            self.reloader.clone(),
            self.audit_seq_at_start,
            shutdown.clone(),
        ));
        let checkpoints = tokio::spawn(audit::checkpoint::run(
            self.checkpointer.clone(),
            self.checkpoint_interval,
            shutdown.clone(),
        ));
        let stream = self.audit_stream.clone().map(|path| {
            tokio::spawn(audit::stream::run(
                self.shared.store.clone(),
                path,
                self.shared.clock.clone(),
                self.shared.broker_id.clone(),
                shutdown.clone(),
            ))
        });
        let leases = sender::Leases {
            store: self.shared.store.clone(),
            broker_id: self.shared.broker_id.clone(),
            clock: self.shared.clock.clone(),
            ttl: self.sender_lease,
        };
        let syslog = self.audit_syslog.map(|sender| {
            tokio::spawn(audit::syslog::run(sender, leases.clone(), shutdown.clone()))
        });
        let web = self.web.map(|web| tokio::spawn(web.run(shutdown.clone())));
        let webhook = self.webhook.map(|sender| {
            tokio::spawn(webhook::run(
                sender,
                webhook::Follow {
                    leases: leases.clone(),
                    first_after_seq: self.audit_seq_at_start,
                },
                shutdown.clone(),
            ))
        });
        // The data threads keep their runtimes until the store is closed below: a database
        // connection one of them opened is driven by that runtime, wherever it is used.
        let data_threads_released = CancellationToken::new();
        let release_on_return = data_threads_released.clone().drop_guard();
        self.data_plane
            .serve(self.shared.clone(), shutdown, data_threads_released)
            .await;
        // Whatever the store and the destinations do, the stop takes a bounded time: tasks
        // still running after it are left behind (the process ends anyway).
        let finished = tokio::time::timeout(quic::shutdown::TASKS, async {
            let _ = hub.await;
            let _ = follower.await;
            let _ = refusals.await;
            let _ = timewatch.await;
            let _ = checkpoints.await;
            if let Some(web) = web {
                let _ = web.await;
            }
            if let Some(webhook) = webhook {
                // Attempts under way finish (each within its time limit), the cursor is stored and
                // the lease let go before the store closes; messages still waiting are left for
                // the next sender.
                let _ = webhook.await;
            }
            let stopped = audit::AuditEvent::new(
                self.shared.clock.now(),
                audit::Actor::Broker(self.shared.broker_id.clone()),
                audit::EventKind::BrokerStopped,
            );
            if let Err(e) = self.shared.store.record(&stopped).await {
                tracing::error!(error = %e, "cannot record the broker's stop");
            }
            // The last checkpoint covers the stop; the streams carry it at the next start.
            if let Err(why) = self.checkpointer.checkpoint().await {
                tracing::error!(error = %why, "no audit checkpoint was signed at shutdown");
            }
            if let Some(stream) = stream {
                // It writes what it has on its way out; anything recorded after that (the stop)
                // is written at the next start, which resumes after the file's last line.
                let _ = stream.await;
            }
            if let Some(syslog) = syslog {
                // The same for the collector: one last batch (within its time limit), and the
                // rest from the next sender, after the cursor it leaves in the database.
                let _ = syslog.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::error!(
                "the broker's tasks did not finish in time (the store or a destination hangs); stopping without them"
            );
        }
        if tokio::time::timeout(quic::shutdown::CLOSE_STORE, self.shared.store.close())
            .await
            .is_err()
        {
            tracing::error!("the database did not close in time");
        }
        drop(release_on_return);
    }
}

/// SHA-256 over every policy file's name and contents, in load order: what `policy-loaded`
/// records, so an auditor can tell which agreement was enforced.
pub(crate) fn policy_digest(policies: &PolicySet) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for file in policies.files() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Files were read moments ago by the loader; one that vanished since hashes as empty.
        let contents = std::fs::read(file).unwrap_or_default();
        context.update(format!("{}:{name}\n{}:", name.len(), contents.len()).as_bytes());
        context.update(&contents);
    }
    encoding::hex(context.finish().as_ref())
}

/// Settles the live sessions `broker_id` still holds on the record at start (a crash or a
/// power cut stopped it without letting them go): each whose vendor allows resuming and whose
/// end time is ahead is let go (`connection-lost`, for its technician to take up again), the
/// rest are ended (`broker-shutdown`). Returns how many of each.
async fn settle_sessions_left_behind(
    store: &store::Store,
    policies: &policy::PolicySet,
    broker_id: &str,
    now: std::time::SystemTime,
) -> Result<(u64, u64), store::StoreError> {
    let mut detached = 0;
    for record in store.sessions_of_broker(broker_id).await? {
        let resumable = policies
            .vendor(&record.vendor)
            .is_some_and(|vendor| vendor.access.resume.allowed)
            && record.end_at.is_some_and(|end| end > now);
        if !resumable {
            continue;
        }
        let mut event = audit::AuditEvent::new(
            now,
            audit::Actor::Broker(broker_id.to_owned()),
            audit::EventKind::ConnectionLost,
        )
        .request(&record.id)
        .technician(&record.vendor, &record.technician)
        .detail("cause", session::EndReason::BrokerShutdown.as_str())
        .detail("note", "the broker stopped without letting the session go");
        if let Some(end_at) = record.end_at {
            event = event.detail("end_at", audit::timestamp(end_at));
        }
        match store
            .detach_session(&record.id, record.attachment, &event)
            .await
        {
            Ok(()) => detached += 1,
            Err(store::StoreError::Stale) => {}
            Err(e) => return Err(e),
        }
    }
    let ended = store
        .end_sessions_of_broker(broker_id, session::EndReason::BrokerShutdown, now)
        .await?;
    Ok((detached, ended))
}

/// This broker's id, made on first start and kept in `DATA_DIR/broker-id`.
fn broker_id(data_dir: &std::path::Path) -> Result<String, BindError> {
    let path = data_dir.join("broker-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let mut bytes = [0u8; 8];
    secret::random_bytes(&mut bytes).map_err(|e| BindError::Tls(e.to_string()))?;
    let id = encoding::hex(&bytes);
    pki::files::write_private(&path, id.as_bytes())?;
    Ok(id)
}
