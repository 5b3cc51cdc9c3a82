//! A hospital for the benchmark: policies naming the targets, a data directory, a broker
//! process, technicians with certificates and one-time-password secrets, approved requests.
//!
//! The broker runs as a process of its own (on loopback or in the veth namespace); the
//! benchmark opens the same database through the library to act as the hospital's admin and
//! approver, as `sekisho-broker` CLI commands would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use proto::RequestAccess;
use sekisho_broker::approval::Until;
use sekisho_broker::audit::EventKind;
use sekisho_broker::clock::SystemClock;
use sekisho_broker::identity;
use sekisho_broker::pki::BrokerPki;
use sekisho_broker::secret::Secret;
use sekisho_broker::session::RequestId;
use sekisho_broker::store::{AuditFilter, NewTechnician};
use sekisho_broker::{BrokerConfig, Hospital, otp};
use sekisho_client::enroll::EnrollArgs;
use sekisho_client::{ClientConfig, Session};
use tempfile::TempDir;

use crate::netns::Network;
use crate::procs::Child;

/// The vendor every benchmark technician belongs to.
pub(crate) const VENDOR: &str = "bench-vendor";
/// Who approves the benchmark's requests.
const APPROVER: &str = "bench-approver";

/// A technician the broker accepts.
pub(crate) struct Technician {
    pub(crate) name: String,
    pub(crate) config: ClientConfig,
    certificate_pem: String,
    key_pem: String,
    totp: Secret<Vec<u8>>,
}

/// A running broker with its hospital.
pub(crate) struct Lab {
    dir: TempDir,
    hospital: Hospital,
    pki: BrokerPki,
    pub(crate) broker: Child,
    pub(crate) broker_addr: SocketAddr,
    /// The web UI's address, when the broker serves one.
    web_addr: Option<SocketAddr>,
    technicians: AtomicUsize,
}

impl Lab {
    /// Writes policies naming `targets` (name, address as the broker dials it), prepares the
    /// data directory and starts the broker on `network`'s server side.
    pub(crate) async fn start(
        network: &Network,
        targets: &[(&str, SocketAddr)],
        max_packet: tunnel::udp::PacketSize,
    ) -> anyhow::Result<Lab> {
        Lab::start_with(network, targets, max_packet, None, None).await
    }

    /// [`start`](Lab::start) with Ethernet-sized packets, the broker's QUIC connections sending
    /// under `congestion`.
    pub(crate) async fn start_sending_with(
        network: &Network,
        targets: &[(&str, SocketAddr)],
        congestion: tunnel::udp::Congestion,
    ) -> anyhow::Result<Lab> {
        Lab::start_with(
            network,
            targets,
            tunnel::udp::PacketSize::ETHERNET,
            None,
            Some(congestion),
        )
        .await
    }

    /// [`start`](Lab::start), the broker also serving its web UI and limited to `open_files`
    /// file descriptors (as systemd's default soft limit of 1,024 would): the web UI's
    /// address comes back too.
    pub(crate) async fn start_with_web(
        network: &Network,
        targets: &[(&str, SocketAddr)],
        open_files: u32,
    ) -> anyhow::Result<(Lab, SocketAddr)> {
        let lab = Lab::start_with(
            network,
            targets,
            tunnel::udp::PacketSize::ETHERNET,
            Some(open_files),
            None,
        )
        .await?;
        let web = lab
            .web_addr
            .ok_or_else(|| anyhow!("the broker printed no web address"))?;
        Ok((lab, web))
    }

    async fn start_with(
        network: &Network,
        targets: &[(&str, SocketAddr)],
        max_packet: tunnel::udp::PacketSize,
        web_with_open_files: Option<u32>,
        congestion: Option<tunnel::udp::Congestion>,
    ) -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let policies = write_policies(dir.path(), targets)?;
        let data_dir = dir.path().join("data");
        let mut config = BrokerConfig::new(data_dir.clone(), policies.clone());
        config.listen = SocketAddr::new(network.server_ip, 0);
        let hospital = Hospital::open(&config).await?;
        let pki = BrokerPki::load_or_create(&data_dir)?;
        let exe = std::env::current_exe()?;
        let mut command = match web_with_open_files {
            // The shell lowers the limit, then becomes the broker.
            Some(open_files) => {
                let mut shell = network.server_command(std::path::Path::new("/bin/sh"));
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
                    .arg(&exe);
                shell
            }
            None => network.server_command(&exe),
        };
        command
            .arg("broker")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--policies")
            .arg(&policies)
            .arg("--listen")
            .arg(config.listen.to_string())
            .arg("--max-packet")
            .arg(max_packet.to_string());
        if web_with_open_files.is_some() {
            command.arg("--web");
        }
        if let Some(congestion) = congestion {
            command.arg("--congestion").arg(congestion.name());
        }
        let mut broker = Child::spawn(&format!("broker ({})", network.name), command)?;
        let web_addr = match web_with_open_files {
            Some(_) => Some(
                broker
                    .expect_stdout("WEB")
                    .await?
                    .parse()
                    .context("the broker printed a web address that is not one")?,
            ),
            None => None,
        };
        let broker_addr = broker
            .expect_stdout("LISTENING")
            .await?
            .parse()
            .context("the broker printed an address that is not one")?;
        broker.drain();
        Ok(Lab {
            dir,
            hospital,
            pki,
            broker,
            broker_addr,
            web_addr,
            technicians: AtomicUsize::new(0),
        })
    }

    /// A new technician of [`VENDOR`] with a certificate and a TOTP secret.
    pub(crate) async fn technician(&self) -> anyhow::Result<Technician> {
        let number = self.technicians.fetch_add(1, Ordering::Relaxed);
        make_technician(
            &self.hospital,
            &self.pki,
            self.broker_addr,
            self.dir.path(),
            &format!("tech-{number:05}"),
        )
        .await
    }

    /// Asks for `targets` as `technician` (over its own connection, closed afterwards) and
    /// approves the request; returns its id.
    pub(crate) async fn approved_request(
        &self,
        technician: &Technician,
        targets: &[&str],
    ) -> anyhow::Result<String> {
        let mut session = Session::connect(&technician.config).await?;
        let view = session
            .request(RequestAccess {
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                purpose: "benchmark".into(),
                ticket: "BENCH".into(),
                duration_secs: 3600,
            })
            .await?;
        session.close().await;
        let id = RequestId::parse(&view.id).ok_or_else(|| anyhow!("bad request id {}", view.id))?;
        self.hospital
            .desk(Arc::new(SystemClock))
            .approve(&id, APPROVER, Until::For(Duration::from_secs(3600)))
            .await?;
        Ok(view.id)
    }

    /// The code `technician`'s authenticator shows now.
    pub(crate) fn otp(&self, technician: &Technician) -> anyhow::Result<String> {
        Ok(otp::code_at(&technician.totp, SystemTime::now())?)
    }

    /// How many `forward-opened` events of `request` are on the record.
    pub(crate) async fn forwards_on_record(&self, request: &str) -> anyhow::Result<usize> {
        let events = self
            .hospital
            .store
            .audit_events(&AuditFilter {
                request: Some(request.to_owned()),
                kinds: vec![EventKind::ForwardOpened],
                ..AuditFilter::default()
            })
            .await?;
        Ok(events.len())
    }

    /// Writes `technician`'s credentials as files (for a client process); returns
    /// `[ca, cert, key]`.
    pub(crate) fn credential_files(&self, technician: &Technician) -> anyhow::Result<[PathBuf; 3]> {
        let dir = self.dir.path().join(format!("client-{}", technician.name));
        let issued = sekisho_broker::pki::IssuedCertificate {
            certificate_pem: technician.certificate_pem.clone(),
            private_key_pem: technician.key_pem.clone(),
        };
        Ok(issued.write_to(&dir, self.pki.ca_pem())?)
    }

    /// The broker's process id.
    /// The hospital's policies, database and keys, as the admin's commands open them.
    pub(crate) fn hospital(&self) -> &Hospital {
        &self.hospital
    }

    /// The broker's CA, PEM (what clients trust).
    pub(crate) fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    pub(crate) fn broker_pid(&self) -> u32 {
        self.broker.pid
    }
}

/// Makes a technician the broker accepts, as a hospital and a technician do: the admin adds
/// the technician (`technician add`), and the technician enrolls over QUIC (`sekisho enroll`:
/// a key made here, a certificate request, the TOTP secret read from the `otpauth://` URI).
/// This is the one place that knows how technicians come to be.
async fn make_technician(
    hospital: &Hospital,
    pki: &BrokerPki,
    broker: SocketAddr,
    dir: &Path,
    name: &str,
) -> anyhow::Result<Technician> {
    let now = SystemTime::now();
    match identity::add_vendor(
        &hospital.store,
        &hospital.policies,
        VENDOR,
        "bench-admin",
        now,
    )
    .await
    {
        Ok(()) | Err(identity::IdentityError::VendorExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let new = NewTechnician {
        vendor: VENDOR,
        technician: name,
        display_name: name,
        email: "",
    };
    let token = identity::add_technician(
        &hospital.store,
        &hospital.policies,
        &new,
        identity::DEFAULT_TOKEN_VALIDITY,
        "bench-admin",
        now,
    )
    .await?;
    let laptop = dir.join(format!("client-{name}"));
    let enrollment = sekisho_client::enroll::enroll(&EnrollArgs {
        broker: broker.to_string(),
        further_brokers: Vec::new(),
        transport: sekisho_client::transport::TransportChoice::default(),
        proxy: None,
        token: token.text.expose_secret().clone(),
        ca_fingerprint: pki.ca_fingerprint(),
        dir: laptop.clone(),
        connect_timeout: Duration::from_secs(10),
    })
    .await?;
    let totp = otp::secret_from_uri(&enrollment.otpauth_uri)
        .ok_or_else(|| anyhow!("the enrollment's otpauth URI holds no secret"))?;
    let config = ClientConfig::from_dir(&laptop)?
        .ok_or_else(|| anyhow!("enrollment wrote nothing to {}", laptop.display()))?;
    Ok(Technician {
        name: name.to_owned(),
        config,
        certificate_pem: std::fs::read_to_string(
            laptop.join(sekisho_client::files::CERTIFICATE_FILE),
        )?,
        key_pem: std::fs::read_to_string(laptop.join(sekisho_client::files::KEY_FILE))?,
        totp,
    })
}

fn write_policies(dir: &Path, targets: &[(&str, SocketAddr)]) -> anyhow::Result<PathBuf> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join("vendors"))?;
    std::fs::write(
        policies.join("hospital.toml"),
        "[hospital]\nname = \"Benchmark Hospital\"\ntimezone = \"Asia/Tokyo\"\n",
    )?;
    let mut vendor = format!(
        "[vendor]\nid = \"{VENDOR}\"\nname = \"Benchmark Vendor\"\n\n[access]\nmax_session = \"8h\"\n\n"
    );
    for (name, address) in targets {
        vendor.push_str(&format!(
            "[[target]]\nname = \"{name}\"\naddress = \"{address}\"\nallow_loopback = true\n\n"
        ));
    }
    std::fs::write(
        policies.join("vendors").join(format!("{VENDOR}.toml")),
        vendor,
    )?;
    Ok(policies)
}
