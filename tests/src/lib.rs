//! The end-to-end harness: a real broker, real TCP targets and real clients, in one process,
//! every socket on `127.0.0.1:0`.
//!
//! - [`TestBroker`]: a broker with its own data directory and policy files written from a
//!   [`Vendor`] list; it issues client certificates from its real CA.
//! - [`EchoServer`], [`pattern`]: targets and data whose correctness a test can check.
//! - [`LocalForward`]: a client-side `-L` listener on an open session, with its events.
//!
//! Tests that need services from outside (PostgreSQL, sshd, a browser) read where they are
//! from the environment; see [`env_postgres`].
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod pattern;
pub mod servers;
/// Real third-party servers (Python's http.server, sshd) and client programs, bounded in time.
pub mod third_party;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sekisho_broker::pki::{BrokerPki, IssuedCertificate, TechnicianIdentity};
use sekisho_broker::{Broker, BrokerConfig};
use sekisho_client::forward::{EventSink, serve_local_forward};
use sekisho_client::{ClientConfig, ConnectError, ForwardEvent, Session};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use servers::EchoServer;

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
/// targets listen on 127.0.0.1).
#[derive(Debug, Clone)]
pub struct Vendor {
    pub id: String,
    pub targets: Vec<(String, String)>,
    pub source_networks: Option<Vec<String>>,
}

impl Vendor {
    pub fn new(id: &str) -> Vendor {
        Vendor {
            id: id.to_owned(),
            targets: Vec::new(),
            source_networks: None,
        }
    }

    /// Allows connections only from these networks (CIDR).
    pub fn source_networks(mut self, networks: &[&str]) -> Vendor {
        self.source_networks = Some(networks.iter().map(|n| (*n).to_owned()).collect());
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

    fn to_toml(&self) -> String {
        let mut toml = format!(
            "[vendor]\nid = \"{0}\"\nname = \"{0} Co., Ltd.\"\n\n",
            self.id
        );
        for (name, address) in &self.targets {
            let allow_loopback = !address.starts_with("localhost");
            toml.push_str(&format!(
                "[[target]]\nname = \"{name}\"\naddress = \"{address}\"\nallow_loopback = {allow_loopback}\n\n"
            ));
        }
        if let Some(networks) = &self.source_networks {
            let quoted: Vec<String> = networks.iter().map(|n| format!("\"{n}\"")).collect();
            toml.push_str(&format!(
                "[access]\nsource_networks = [{}]\n",
                quoted.join(", ")
            ));
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
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n",
    )
    .unwrap();
    for vendor in vendors {
        std::fs::write(
            policies.join("vendors").join(format!("{}.toml", vendor.id)),
            vendor.to_toml(),
        )
        .unwrap();
    }
    policies
}

/// A running broker on `127.0.0.1:0`, stopped when dropped.
pub struct TestBroker {
    addr: SocketAddr,
    pki: BrokerPki,
    shutdown: CancellationToken,
    stopped: Arc<Notify>,
    dir: TempDir,
}

impl TestBroker {
    /// Starts a broker whose policies name `vendors`.
    pub async fn start(vendors: &[Vendor]) -> TestBroker {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let policies = write_policies(dir.path(), vendors);
        TestBroker::start_in(dir, policies).await
    }

    async fn start_in(dir: TempDir, policies: PathBuf) -> TestBroker {
        let mut config = BrokerConfig::new(dir.path().join("data"), policies);
        config.listen = "127.0.0.1:0".parse().unwrap();
        let broker = Broker::bind(config).await.expect("the test broker binds");
        let addr = broker.local_addr();
        let pki = BrokerPki::load_or_create(&dir.path().join("data")).unwrap();
        let shutdown = CancellationToken::new();
        let stopped = Arc::new(Notify::new());
        let (run_shutdown, run_stopped) = (shutdown.clone(), stopped.clone());
        tokio::spawn(async move {
            broker.run(run_shutdown).await;
            run_stopped.notify_one();
        });
        TestBroker {
            addr,
            pki,
            shutdown,
            stopped,
            dir,
        }
    }

    /// The broker's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's CA, PEM.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// A working directory that lives as long as the broker.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate and key for `vendor`/`technician` from this broker's CA.
    pub fn issue(&self, vendor: &str, technician: &str) -> IssuedCertificate {
        let identity = TechnicianIdentity::new(vendor, technician).unwrap();
        self.pki
            .issue_client_certificate(&identity, Duration::from_secs(3600))
            .unwrap()
    }

    /// Client credentials for `vendor`/`technician`, issued by this broker's CA.
    pub fn client_config(&self, vendor: &str, technician: &str) -> ClientConfig {
        let issued = self.issue(vendor, technician);
        ClientConfig::from_pem(
            &self.addr.to_string(),
            self.ca_pem().as_bytes(),
            issued.certificate_pem.as_bytes(),
            issued.private_key_pem.as_bytes(),
        )
        .unwrap()
    }

    /// Writes client credentials to files (for the `sekisho` binary) and returns
    /// `[ca, cert, key]` paths.
    pub fn client_files(&self, vendor: &str, technician: &str) -> [PathBuf; 3] {
        self.issue(vendor, technician)
            .write_to(
                &self
                    .dir
                    .path()
                    .join(format!("client-{vendor}-{technician}")),
                self.ca_pem(),
            )
            .unwrap()
    }

    /// Opens a session as `vendor`/`technician`.
    pub async fn connect(&self, vendor: &str, technician: &str) -> Result<Session, ConnectError> {
        Session::connect(&self.client_config(vendor, technician)).await
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
    pub async fn start(session: Arc<Session>, target: &str) -> LocalForward {
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

/// Where PostgreSQL runs for tests, from `SEKISHO_TEST_POSTGRES` (`host:port`), if set.
/// `.ci/run` sets it, so in CI these tests always run.
pub fn env_postgres() -> Option<String> {
    std::env::var("SEKISHO_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}
