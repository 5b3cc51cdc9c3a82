//! The end-to-end harness: a real broker, real TCP targets and real clients, in one process,
//! every socket on `127.0.0.1:0`.
//!
//! - [`TestBroker`]: a broker with its own data directory, database ([`stores`]: SQLite, or
//!   PostgreSQL with `SEKISHO_TEST_STORE=postgres`), a clock the test moves, a time-sync
//!   probe whose answer the test sets (synchronised until told otherwise), and policy files
//!   written from a [`Vendor`] list; it adds technicians and enrolls them through the real
//!   flow (token, key made client-side, certificate request, TOTP secret read back from the
//!   `otpauth://` URI), approves as [`APPROVER`], and can run the whole
//!   request → approve → one-time password → open flow ([`TestBroker::open_session`]).
//! - [`EchoServer`], [`pattern`]: targets and data whose correctness a test can check.
//! - [`LocalForward`]: a client-side `-L` listener on an open session, with its events.
//! - [`webhook`]: a relay that receives the approvers' webhook, over HTTP or HTTPS, and a
//!   hospital CA for its certificate.
//! - [`syslog`]: a real rsyslogd receiving the audit stream over TCP or TLS.
//!
//! Tests that need services from outside (PostgreSQL, sshd, a browser) read where they are
//! from the environment; see [`env_postgres`].
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod faults;
pub mod hostile;
pub mod pattern;
pub mod preauth;
pub mod servers;
pub mod stores;
pub mod syslog;
pub mod third_party;
pub mod web;
pub mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proto::RequestAccess;
use sekisho_broker::approval::{Desk, Until};
use sekisho_broker::audit::{EventKind, StoredEvent};
use sekisho_broker::clock::{Clock, ManualClock};
use sekisho_broker::identity;
use sekisho_broker::otp;
use sekisho_broker::pki::{BrokerPki, IssuedCertificate, TechnicianIdentity};
use sekisho_broker::secret::Secret;
use sekisho_broker::session::RequestId;
use sekisho_broker::store::{AuditFilter, NewTechnician, SenderLease};
use sekisho_broker::timewatch::{ManualTimeSync, SyncState};
use sekisho_broker::{Broker, BrokerConfig, Hospital};
use sekisho_client::enroll::EnrollArgs;
use sekisho_client::forward::{EventSink, serve_local_forward};
use sekisho_client::transport::TransportChoice;
use sekisho_client::{ClientConfig, ConnectError, ForwardEvent, Forwarder, Session};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use servers::EchoServer;
pub use stores::env_postgres;

/// The transport the tests' clients use: `SEKISHO_TEST_TRANSPORT` (`quic`, the default, or
/// `tcp`), so the suite runs on both as it runs on both stores.
pub fn test_transport() -> TransportChoice {
    match std::env::var("SEKISHO_TEST_TRANSPORT").as_deref() {
        Ok("tcp") => TransportChoice::Tcp,
        Ok("auto") => TransportChoice::Auto,
        _ => TransportChoice::Quic,
    }
}

/// Writes a few bytes through a new forward of `session` to `target` (an echo server) and
/// checks they come back: the session carries traffic.
pub async fn echo_once(session: &Session, target: &str) {
    let (mut send, mut recv) = session.open_forward(target).await.unwrap();
    send.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    recv.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

/// The value of detail `key` of a recorded event; panics, naming the event, if it has none.
pub fn detail<'a>(event: &'a StoredEvent, key: &str) -> &'a str {
    event
        .event
        .detail_value(key)
        .unwrap_or_else(|| panic!("no detail {key} in {:?}", event.event))
}

/// Installs a log subscriber once, so `SEKISHO_LOG=debug cargo test` shows what happened.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// A vendor of the test policy and its targets (all with `allow_loopback = true`, since test
/// targets listen on 127.0.0.1, except targets given as `localhost:PORT`).
#[derive(Debug, Clone)]
pub struct Vendor {
    pub id: String,
    pub targets: Vec<(String, String)>,
    /// Lines of the `[access]` table.
    pub access: Vec<String>,
    /// Names of targets marked `critical = true`.
    pub critical: Vec<String>,
    /// Targets allowed to be one of the broker's own ports, with why.
    pub broker_ports: Vec<(String, String)>,
}

impl Vendor {
    pub fn new(id: &str) -> Vendor {
        Vendor {
            id: id.to_owned(),
            targets: Vec::new(),
            access: Vec::new(),
            critical: Vec::new(),
            broker_ports: Vec::new(),
        }
    }

    /// Adds a target at a socket address that may be one of the broker's own listening
    /// ports, saying `why` (`allow_broker_port`).
    pub fn broker_port_target(mut self, name: &str, address: SocketAddr, why: &str) -> Vendor {
        self.broker_ports.push((name.to_owned(), why.to_owned()));
        self.target(name, address)
    }

    /// Adds a critical target at a socket address (it needs `critical_approvals`).
    pub fn critical_target(mut self, name: &str, address: SocketAddr) -> Vendor {
        self.critical.push(name.to_owned());
        self.target(name, address)
    }

    /// Sets how many approvers a request for a critical target needs.
    pub fn critical_approvals(mut self, count: u8) -> Vendor {
        self.access.push(format!("critical_approvals = {count}"));
        self
    }

    /// Sets the days without access (e.g. "2026-11-23").
    pub fn holidays(mut self, dates: &[&str]) -> Vendor {
        let quoted: Vec<String> = dates.iter().map(|d| format!("\"{d}\"")).collect();
        self.access
            .push(format!("holidays = [{}]", quoted.join(", ")));
        self
    }

    /// Sets the idle timeout (e.g. "5m").
    pub fn idle_timeout(mut self, duration: &str) -> Vendor {
        self.access.push(format!("idle_timeout = \"{duration}\""));
        self
    }

    /// Adds a target at a socket address (allowed on loopback).
    pub fn target(mut self, name: &str, address: SocketAddr) -> Vendor {
        self.targets.push((name.to_owned(), address.to_string()));
        self
    }

    /// Adds a target at a `host:port` written as is.
    pub fn target_at(mut self, name: &str, host_port: &str) -> Vendor {
        self.targets.push((name.to_owned(), host_port.to_owned()));
        self
    }

    /// Allows connections only from these networks (CIDR).
    pub fn source_networks(mut self, networks: &[&str]) -> Vendor {
        let quoted: Vec<String> = networks.iter().map(|n| format!("\"{n}\"")).collect();
        self.access
            .push(format!("source_networks = [{}]", quoted.join(", ")));
        self
    }

    /// Sets `max_session` (e.g. "2h").
    pub fn max_session(mut self, duration: &str) -> Vendor {
        self.access.push(format!("max_session = \"{duration}\""));
        self
    }

    /// Sets how many approvers must approve.
    pub fn approvals(mut self, count: u8) -> Vendor {
        self.access.push(format!("approvals = {count}"));
        self
    }

    /// Sets whether a live session outlives a lost connection (`resume`).
    pub fn resume(mut self, allowed: bool) -> Vendor {
        self.access.push(format!("resume = {allowed}"));
        self
    }

    /// Lets a session be taken up without a new code this soon after its connection was
    /// lost (e.g. "2m").
    pub fn resume_without_code_within(mut self, duration: &str) -> Vendor {
        self.access
            .push(format!("resume_without_code_within = \"{duration}\""));
        self
    }

    /// Sets the allowed hours (e.g. "Mon-Fri 08:00-20:00").
    pub fn hours(mut self, hours: &str) -> Vendor {
        self.access.push(format!("hours = \"{hours}\""));
        self
    }

    fn to_toml(&self) -> String {
        let mut toml = format!(
            "[vendor]\nid = \"{0}\"\nname = \"{0} Co., Ltd.\"\n\n",
            self.id
        );
        for (name, address) in &self.targets {
            let allow_loopback = !address.starts_with("localhost");
            let critical = self.critical.contains(name);
            toml.push_str(&format!(
                "[[target]]\nname = \"{name}\"\naddress = \"{address}\"\nallow_loopback = {allow_loopback}\ncritical = {critical}\n"
            ));
            if let Some((_, why)) = self.broker_ports.iter().find(|(n, _)| n == name) {
                toml.push_str(&format!("allow_broker_port = \"{why}\"\n"));
            }
            toml.push('\n');
        }
        if !self.access.is_empty() {
            toml.push_str(&format!("[access]\n{}\n", self.access.join("\n")));
        }
        toml
    }
}

/// Writes a policy directory for `vendors` under `dir` and returns its path.
pub fn write_policies(dir: &Path, vendors: &[Vendor]) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join("vendors")).unwrap();
    std::fs::write(
        policies.join("hospital.toml"),
        // Tests move the clock by hours without traffic; those about idleness set a
        // vendor's `idle_timeout` themselves.
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n\n[defaults]\nidle_timeout = \"24h\"\n",
    )
    .unwrap();
    let vendor_dir = policies.join("vendors");
    for entry in std::fs::read_dir(&vendor_dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for vendor in vendors {
        std::fs::write(
            vendor_dir.join(format!("{}.toml", vendor.id)),
            vendor.to_toml(),
        )
        .unwrap();
    }
    policies
}

/// Where every test broker's clock starts: Monday 2026-11-23 10:00 in Asia/Tokyo (01:00 UTC),
/// so tests of allowed hours know the weekday and time. (TLS certificates are still checked
/// against the real time.)
pub fn clock_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_395_600)
}

/// The approver the harness approves as.
pub const APPROVER: &str = "suzuki";

/// A running broker on `127.0.0.1:0` with a clock the test moves, stopped when dropped.
pub struct TestBroker {
    addr: SocketAddr,
    /// The web UI's address and first-admin link, when the configuration asks for a web UI.
    web: Option<(SocketAddr, Option<String>)>,
    pki: BrokerPki,
    shutdown: CancellationToken,
    stopped: Arc<Notify>,
    config: BrokerConfig,
    clock: ManualClock,
    time_sync: ManualTimeSync,
    hospital: Hospital,
    enrolled: tokio::sync::Mutex<HashMap<String, Enrolled>>,
    dir: TempDir,
}

/// A technician enrolled through the real flow: where the client wrote its files, and the
/// TOTP secret it was shown.
#[derive(Clone)]
struct Enrolled {
    dir: PathBuf,
    secret: Secret<Vec<u8>>,
}

impl TestBroker {
    /// Starts a broker whose policies name `vendors`.
    pub async fn start(vendors: &[Vendor]) -> TestBroker {
        TestBroker::start_with(vendors, |_| {}).await
    }

    /// Starts a broker whose policies name `vendors`, after `adjust` has changed its
    /// configuration.
    pub async fn start_with(
        vendors: &[Vendor],
        adjust: impl FnOnce(&mut BrokerConfig),
    ) -> TestBroker {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let policies = write_policies(dir.path(), vendors);
        let mut config = BrokerConfig::new(dir.path().join("data"), policies);
        config.listen = "127.0.0.1:0".parse().unwrap();
        // TLS over TCP on the QUIC port's number, so one address serves either transport.
        config.listen_tcp = Some("127.0.0.1:0".parse().unwrap());
        config.database = Some(stores::fresh_store(dir.path()).await);
        let clock = ManualClock::new(clock_start());
        config.clock = Arc::new(clock.clone());
        let time_sync = ManualTimeSync::new(SyncState::Synchronised);
        config.time_sync = Arc::new(time_sync.clone());
        // Asked often, so a test's change is recorded at once; asking it costs nothing.
        config.time_sync_interval = Duration::from_millis(50);
        adjust(&mut config);
        TestBroker::run(dir, config, clock, time_sync).await
    }

    /// Starts another broker of the same hospital beside this one: the same database, and the
    /// CA and sealing key copied as an admin copies them; a data directory, broker id and
    /// clock of its own. `adjust` changes its configuration last.
    pub async fn start_beside(
        &self,
        vendors: &[Vendor],
        adjust: impl FnOnce(&mut BrokerConfig),
    ) -> TestBroker {
        let shared_dir = self.config.data_dir.clone();
        let database = self.config.database.clone();
        TestBroker::start_with(vendors, |config| {
            config.database = database;
            std::fs::create_dir_all(config.data_dir.join("pki")).unwrap();
            for file in [
                "pki/ca.pem",
                "pki/ca.key",
                "pki/broker.pem",
                "pki/broker.key",
                "secret.key",
            ] {
                std::fs::copy(shared_dir.join(file), config.data_dir.join(file)).unwrap();
            }
            adjust(config);
        })
        .await
    }

    /// This broker's id (`DATA_DIR/broker-id`): what `broker:` actors and leases name.
    pub fn broker_id(&self) -> String {
        std::fs::read_to_string(self.config.data_dir.join("broker-id"))
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn run(
        dir: TempDir,
        config: BrokerConfig,
        clock: ManualClock,
        time_sync: ManualTimeSync,
    ) -> TestBroker {
        let (addr, web, shutdown, stopped) = TestBroker::launch(&config).await;
        let broker = TestBroker {
            addr,
            web,
            pki: BrokerPki::load_or_create(&config.data_dir).unwrap(),
            shutdown,
            stopped,
            hospital: Hospital::open(&config).await.unwrap(),
            config,
            clock,
            time_sync,
            enrolled: tokio::sync::Mutex::new(HashMap::new()),
            dir,
        };
        broker.clock_sync_recorded().await;
        broker
    }

    /// Waits (up to 20 s) until this run of the broker has recorded its clock's sync state,
    /// which it does just after it starts: tests that read the log's head then read a head
    /// that stays put.
    async fn clock_sync_recorded(&self) -> StoredEvent {
        let me = sekisho_broker::audit::Actor::Broker(self.broker_id());
        let mine = |events: Vec<StoredEvent>| {
            events
                .into_iter()
                .filter(|e| e.event.actor == me)
                .map(|e| e.seq)
                .next_back()
        };
        let started = mine(self.events_of(EventKind::BrokerStarted).await).unwrap_or(0);
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let recorded = self
                    .desk()
                    .store()
                    .audit_events(&AuditFilter {
                        kinds: vec![EventKind::ClockSync],
                        after_seq: started,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|e| e.event.actor == me);
                if let Some(event) = recorded {
                    return event;
                }
                // sync-ok: recorded by the broker's watch task; its row is polled, bounded.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the broker did not record its clock's sync state within 20 s"))
    }

    #[allow(clippy::type_complexity, reason = "one private helper's return")]
    async fn launch(
        config: &BrokerConfig,
    ) -> (
        SocketAddr,
        Option<(SocketAddr, Option<String>)>,
        CancellationToken,
        Arc<Notify>,
    ) {
        let mut attempts = 0;
        let broker = loop {
            match Broker::bind(config.clone()).await {
                Ok(broker) => break broker,
                // The kernel chose a UDP port whose number a TCP socket here already holds,
                // so TLS over TCP cannot have it: choose again.
                Err(sekisho_broker::BindError::Listen { .. })
                    if config.listen.port() == 0 && attempts < 10 =>
                {
                    attempts += 1;
                }
                Err(e) => panic!("the test broker does not bind: {e}"),
            }
        };
        let addr = broker.local_addr();
        let web = broker
            .web_addr()
            .map(|web| (web, broker.first_admin_url().map(str::to_owned)));
        let shutdown = CancellationToken::new();
        let stopped = Arc::new(Notify::new());
        let (run_shutdown, run_stopped) = (shutdown.clone(), stopped.clone());
        tokio::spawn(async move {
            broker.run(run_shutdown).await;
            run_stopped.notify_one();
        });
        (addr, web, shutdown, stopped)
    }

    /// Stops the broker (as a shutdown does) and starts it again on the same data directory,
    /// database and policy files (rewritten ones are read anew). The address changes.
    pub async fn restart(&mut self) {
        self.restart_after(async {}).await;
    }

    /// Like [`restart`](TestBroker::restart), running `between` while the broker is down
    /// (to leave the store as a crash would).
    pub async fn restart_after(&mut self, between: impl std::future::Future<Output = ()>) {
        self.shutdown.cancel();
        self.stopped.notified().await;
        between.await;
        self.relaunch().await;
    }

    /// Starts the broker again after [`halt`](TestBroker::halt), on the same data directory,
    /// database and policy files.
    pub async fn relaunch(&mut self) {
        let (addr, web, shutdown, stopped) = TestBroker::launch(&self.config).await;
        self.addr = addr;
        self.web = web;
        self.shutdown = shutdown;
        self.stopped = stopped;
        self.hospital = Hospital::open(&self.config).await.unwrap();
        self.clock_sync_recorded().await;
    }

    /// The broker's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The web UI's TCP address (when the configuration asked for one).
    pub fn web_addr(&self) -> SocketAddr {
        self.web.as_ref().expect("the broker serves a web UI").0
    }

    /// The first admin's one-time link printed at this start, if any.
    pub fn first_admin_url(&self) -> Option<&str> {
        self.web.as_ref().and_then(|(_, url)| url.as_deref())
    }

    /// The broker's CA, PEM.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// The broker's PKI (to issue certificates from its CA).
    pub fn pki(&self) -> &BrokerPki {
        &self.pki
    }

    /// A working directory that lives as long as the broker.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The clock the broker reads; move it to reach end times.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The probe the broker asks whether the host's clock is synchronised (unless the test's
    /// configuration replaced it); set its answer.
    pub fn time_sync(&self) -> &ManualTimeSync {
        &self.time_sync
    }

    /// The hospital's desk on this broker's database and clock.
    pub fn desk(&self) -> Desk {
        self.hospital.desk(Arc::new(self.clock.clone()))
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Reads the policy files again for the harness's own desk, as a new admin command run
    /// would (the running broker reloads on [`request_reload`](TestBroker::request_reload)).
    pub async fn reread_policies(&mut self) {
        self.hospital = Hospital::open(&self.config).await.unwrap();
    }

    /// Rewrites the policy files (the broker reads them at start; see [`TestBroker::restart`]).
    pub fn rewrite_policies(&self, vendors: &[Vendor]) {
        write_policies(self.dir.path(), vendors);
    }

    /// Adds `vendor` (once) and `vendor`/`technician` as the hospital's admin does, and
    /// returns the enrollment token `technician add` would print.
    pub async fn add_technician(&self, vendor: &str, technician: &str) -> String {
        let store = &self.hospital.store;
        let policies = &self.hospital.policies;
        match identity::add_vendor(store, policies, vendor, "test-admin", self.clock.now()).await {
            Ok(()) | Err(identity::IdentityError::VendorExists(_)) => {}
            Err(e) => panic!("cannot add vendor {vendor}: {e}"),
        }
        let new = NewTechnician {
            vendor,
            technician,
            display_name: technician,
            email: "",
        };
        identity::add_technician(
            store,
            policies,
            &new,
            identity::DEFAULT_TOKEN_VALIDITY,
            "test-admin",
            self.clock.now(),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot add {vendor}/{technician}: {e}"))
        .text
        .expose_secret()
        .clone()
    }

    /// The enrollment arguments for `token`, writing into `dir`.
    pub fn enroll_args(&self, token: &str, dir: &Path) -> EnrollArgs {
        EnrollArgs {
            broker: self.addr.to_string(),
            further_brokers: Vec::new(),
            transport: sekisho_client::transport::TransportChoice::default(),
            proxy: None,
            token: token.to_owned(),
            ca_fingerprint: self.pki.ca_fingerprint(),
            dir: dir.to_owned(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Enrolls `vendor`/`technician` for real (once): `technician add`, then the client's
    /// enrollment over QUIC, with the key made client-side; returns the TOTP secret read from
    /// the `otpauth://` URI the client was shown.
    pub async fn enroll(&self, vendor: &str, technician: &str) -> Secret<Vec<u8>> {
        self.enrolled(vendor, technician).await.secret
    }

    async fn enrolled(&self, vendor: &str, technician: &str) -> Enrolled {
        let mut enrolled = self.enrolled.lock().await;
        let key = format!("{vendor}/{technician}");
        if let Some(found) = enrolled.get(&key) {
            return found.clone();
        }
        let token = self.add_technician(vendor, technician).await;
        let dir = self
            .dir
            .path()
            .join(format!("client-{vendor}-{technician}"));
        let enrollment = sekisho_client::enroll::enroll(&self.enroll_args(&token, &dir))
            .await
            .unwrap_or_else(|e| panic!("{vendor}/{technician} cannot enroll: {e}"));
        let secret = otp::secret_from_uri(&enrollment.otpauth_uri).unwrap();
        let found = Enrolled { dir, secret };
        enrolled.insert(key, found.clone());
        found
    }

    /// The code `vendor`/`technician`'s authenticator shows now, after moving the clock to
    /// the next 30-second step (so each call gives a code not used before).
    pub async fn next_otp(&self, vendor: &str, technician: &str) -> String {
        let secret = self.enroll(vendor, technician).await;
        self.clock.advance(Duration::from_secs(30));
        otp::code_at(&secret, self.clock.now()).unwrap()
    }

    /// `vendor`/`technician`'s certificate and key as enrollment wrote them (enrolling first).
    pub async fn credentials(&self, vendor: &str, technician: &str) -> IssuedCertificate {
        let [_, certificate, key] = self.client_files(vendor, technician).await;
        IssuedCertificate {
            certificate_pem: std::fs::read_to_string(certificate).unwrap(),
            private_key_pem: std::fs::read_to_string(key).unwrap(),
        }
    }

    /// A certificate from this broker's CA that was never registered (no enrollment): what a
    /// stolen CA key or a test of the registry would produce.
    pub fn issue_unregistered(&self, vendor: &str, technician: &str) -> IssuedCertificate {
        let identity = TechnicianIdentity::new(vendor, technician).unwrap();
        self.pki
            .issue_client_certificate(&identity, Duration::from_secs(3600))
            .unwrap()
    }

    /// Client credentials for `vendor`/`technician` (enrolling first), for this broker's
    /// current address.
    pub async fn client_config(&self, vendor: &str, technician: &str) -> ClientConfig {
        let [ca, certificate, key] = self.client_files(vendor, technician).await;
        let mut config =
            ClientConfig::from_files(&self.addr.to_string(), &ca, &certificate, &key).unwrap();
        config.transport = test_transport();
        config
    }

    /// The `[ca, cert, key]` files enrollment wrote for `vendor`/`technician` (enrolling
    /// first), for the `sekisho` binary.
    pub async fn client_files(&self, vendor: &str, technician: &str) -> [PathBuf; 3] {
        let dir = self.enrolled(vendor, technician).await.dir;
        [
            dir.join(sekisho_client::files::CA_FILE),
            dir.join(sekisho_client::files::CERTIFICATE_FILE),
            dir.join(sekisho_client::files::KEY_FILE),
        ]
    }

    /// Connects as `vendor`/`technician` (enrolling first; authenticated, no session yet).
    pub async fn connect(&self, vendor: &str, technician: &str) -> Result<Session, ConnectError> {
        Session::connect(&self.client_config(vendor, technician).await).await
    }

    /// Connects with a certificate from this broker's CA that enrollment never registered.
    pub async fn connect_unregistered(
        &self,
        vendor: &str,
        technician: &str,
    ) -> Result<Session, ConnectError> {
        let issued = self.issue_unregistered(vendor, technician);
        let mut config = ClientConfig::from_pem(
            &self.addr.to_string(),
            self.ca_pem().as_bytes(),
            issued.certificate_pem.as_bytes(),
            issued.private_key_pem.as_bytes(),
        )
        .unwrap();
        config.transport = test_transport();
        Session::connect(&config).await
    }

    /// Asks for `targets` for an hour as `vendor`/`technician`; returns the request id.
    pub async fn request(&self, session: &mut Session, targets: &[&str]) -> String {
        session
            .request(RequestAccess {
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                purpose: "end-to-end test".into(),
                ticket: "TEST-1".into(),
                duration_secs: 3600,
            })
            .await
            .unwrap()
            .id
    }

    /// Approves request `id` as [`APPROVER`] for an hour.
    pub async fn approve(&self, id: &str) {
        self.desk()
            .approve(
                &RequestId::parse(id).unwrap(),
                APPROVER,
                Until::For(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
    }

    /// The whole flow: connect, request `targets`, approve, open with a fresh code.
    pub async fn open_session(&self, vendor: &str, technician: &str, targets: &[&str]) -> Session {
        let session = self.connect(vendor, technician).await.unwrap();
        self.open_on(session, vendor, technician, targets).await
    }

    /// The rest of the flow on a `session` the test connected itself (with a client
    /// configuration of its own): request `targets`, approve, open with a fresh code.
    pub async fn open_on(
        &self,
        mut session: Session,
        vendor: &str,
        technician: &str,
        targets: &[&str],
    ) -> Session {
        let id = self.request(&mut session, targets).await;
        self.approve(&id).await;
        let code = self.next_otp(vendor, technician).await;
        session.open(&id, &code).await.unwrap();
        session
    }

    /// Every recorded event of `kind`, oldest first.
    pub async fn events_of(&self, kind: EventKind) -> Vec<StoredEvent> {
        self.desk()
            .store()
            .audit_events(&AuditFilter {
                kinds: vec![kind],
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// The first audit event of `kind`, waiting (up to 10 s) for it to be written: some events
    /// land a moment after what the test can observe (a forward's refusal, a sink's failure).
    pub async fn first_event(&self, kind: EventKind) -> StoredEvent {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(event) = self.events_of(kind).await.into_iter().next() {
                    return event;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {} event was recorded", kind.as_str()))
    }

    /// The lease of `feature` (`webhook`, `audit-syslog`), once a broker holds it, waiting (up
    /// to 10 s) for one to take it.
    pub async fn lease_of(&self, feature: &str) -> SenderLease {
        let store = self.desk().store().clone();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let held = store
                    .sender_leases()
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|lease| lease.feature == feature && lease.expires_at > 0);
                if let Some(lease) = held {
                    return lease;
                }
                // sync-ok: the lease is taken by another task; its row is polled, bounded.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no broker took the {feature} lease within 10 s"))
    }

    /// The lease of `feature` once its cursor has reached `seq` (every event up to it handled
    /// by its sender), waiting up to 10 s.
    pub async fn lease_past(&self, feature: &str, seq: i64) -> SenderLease {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let lease = self.lease_of(feature).await;
                if lease.after_seq >= seq {
                    return lease;
                }
                // sync-ok: the cursor is moved by the sender's task; its row is polled, bounded.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the {feature} cursor did not reach {seq} within 10 s"))
    }

    /// Asks the running broker to reload its policy files, as `sekisho-broker policy reload`
    /// does (through the database); returns the request's audit sequence number.
    pub async fn request_reload(&self) -> i64 {
        sekisho_broker::reload::request_reload(self.desk().store(), "test-admin", self.clock.now())
            .await
            .unwrap()
    }

    /// The first audit event of one of `kinds` after `after_seq`, waiting (up to 10 s).
    pub async fn event_after(&self, kinds: &[EventKind], after_seq: i64) -> StoredEvent {
        let store = self.desk().store().clone();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let found = store
                    .audit_events(&AuditFilter {
                        kinds: kinds.to_vec(),
                        after_seq,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                if let Some(event) = found.into_iter().next() {
                    return event;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kinds:?} event after {after_seq} was recorded"))
    }

    /// Runs raw SQL against the broker's database (for injecting failures and tampering).
    pub async fn execute_sql(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        let url = match self.config.store_location() {
            sekisho_broker::store::StoreLocation::Sqlite(path) => {
                format!("sqlite://{}", path.display())
            }
            sekisho_broker::store::StoreLocation::Postgres(url) => url,
        };
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
        connection
            .execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        connection.close().await.unwrap();
    }

    /// Makes every append to the audit log fail, as a full disk would, until
    /// [`heal_audit_writes`](TestBroker::heal_audit_writes).
    pub async fn break_audit_writes(&self) {
        if stores::postgres_selected() {
            self.execute_sql(
                "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$ LANGUAGE plpgsql",
            )
            .await;
            self.execute_sql("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
                .await;
        } else {
            self.execute_sql("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
                .await;
        }
    }

    /// Undoes [`break_audit_writes`](TestBroker::break_audit_writes).
    pub async fn heal_audit_writes(&self) {
        if stores::postgres_selected() {
            self.execute_sql("DROP TRIGGER refuse_audit ON audit_events")
                .await;
            self.execute_sql("DROP FUNCTION refuse_audit()").await;
        } else {
            self.execute_sql("DROP TRIGGER refuse_audit").await;
        }
    }

    /// Stops the broker and waits until its run loop has returned, keeping its files (for a
    /// test that inspects the database at rest).
    pub async fn halt(&self) {
        self.shutdown.cancel();
        self.stopped.notified().await;
    }

    /// Stops the broker and waits until its run loop has returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.stopped.notified().await;
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A `-L` forward on an open session, listening on `127.0.0.1:0`.
pub struct LocalForward {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<ForwardEvent>>>,
    event_arrived: Arc<Notify>,
    shutdown: CancellationToken,
}

impl LocalForward {
    pub async fn start(session: Forwarder, target: &str) -> LocalForward {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let event_arrived = Arc::new(Notify::new());
        let sink: EventSink = {
            let events = events.clone();
            let event_arrived = event_arrived.clone();
            Arc::new(move |event| {
                events.lock().unwrap().push(event);
                event_arrived.notify_waiters();
            })
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_local_forward(
            session,
            listener,
            target.to_owned(),
            sink,
            shutdown.clone(),
        ));
        LocalForward {
            addr,
            events,
            event_arrived,
            shutdown,
        }
    }

    /// Where local programs connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the first event that `pick` accepts and returns what it made of it.
    pub async fn wait_for<T>(&self, mut pick: impl FnMut(&ForwardEvent) -> Option<T>) -> T {
        loop {
            let arrived = self.event_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = self.events.lock().unwrap().iter().find_map(&mut pick) {
                return found;
            }
            arrived.await;
        }
    }
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
