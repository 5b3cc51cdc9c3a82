//! What the client needs to reach a broker: its address, the CA to pin, and the technician's
//! certificate and key.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;
use tunnel::udp::PacketSize;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ConnectError;
use crate::transport::TransportChoice;

/// How long to wait for the broker's first answer before saying it is unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alives must come well within the broker's idle timeout (30 s by default).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker to connect to and the credentials to connect with.
#[derive(Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` of the broker, as the technician typed it.
    pub broker: String,
    /// The hospital's other brokers (several brokers on one database), tried in order when
    /// `broker` cannot be reached.
    pub further_brokers: Vec<String>,
    /// Which transport to use (QUIC first, TLS over TCP if QUIC does not answer, by default).
    pub transport: TransportChoice,
    /// Where the client remembers which transport last reached each broker (the
    /// configuration directory), if anywhere.
    pub remember_in: Option<std::path::PathBuf>,
    /// The HTTP proxy TLS over TCP goes through, if any.
    pub proxy: Option<crate::proxy::Proxy>,
    /// How long to wait for the broker before giving up.
    pub connect_timeout: Duration,
    /// The largest packets to probe the path for ([`PacketSize::ETHERNET`] unless the path
    /// to the broker is known to carry jumbo frames; the broker must allow as much).
    pub max_packet: PacketSize,
    /// The congestion controller QUIC sends with (what flows to the targets); see
    /// [`tunnel::udp::Congestion`].
    pub congestion: tunnel::udp::Congestion,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("broker", &self.broker)
            .field("further_brokers", &self.further_brokers)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_packet", &self.max_packet)
            .field("congestion", &self.congestion)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Reads the pinned CA, the client certificate and its key from PEM files.
    pub fn from_files(
        broker: &str,
        ca: &Path,
        certificate: &Path,
        key: &Path,
    ) -> Result<ClientConfig, ConnectError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                ConnectError::Credentials(format!("cannot read {}: {e}", path.display()))
            })
        };
        ClientConfig::from_pem(broker, &read(ca)?, &read(certificate)?, &read(key)?)
    }

    /// Reads what `sekisho enroll` wrote into the configuration directory `dir`; `None` when
    /// nothing was enrolled there.
    pub fn from_dir(dir: &Path) -> Result<Option<ClientConfig>, ConnectError> {
        use crate::files::{BROKER_FILE, CA_FILE, CERTIFICATE_FILE, KEY_FILE};
        let broker_path = dir.join(BROKER_FILE);
        let brokers = match std::fs::read_to_string(&broker_path) {
            Ok(brokers) => brokers,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ConnectError::Credentials(format!(
                    "cannot read {}: {e}",
                    broker_path.display()
                )));
            }
        };
        // One address per line, tried in order.
        let mut addresses = brokers
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty());
        let first = addresses.next().ok_or_else(|| {
            ConnectError::Credentials(format!("{} names no broker", broker_path.display()))
        })?;
        let mut config = ClientConfig::from_files(
            first,
            &dir.join(CA_FILE),
            &dir.join(CERTIFICATE_FILE),
            &dir.join(KEY_FILE),
        )?;
        config.further_brokers = addresses.map(str::to_owned).collect();
        config.remember_in = Some(dir.to_owned());
        Ok(Some(config))
    }

    /// Builds a configuration from PEM bytes.
    pub fn from_pem(
        broker: &str,
        ca_pem: &[u8],
        certificate_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<ClientConfig, ConnectError> {
        let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|_| {
            ConnectError::Credentials("the broker CA file holds no PEM certificate".into())
        })?;
        let chain = CertificateDer::pem_slice_iter(certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| {
                ConnectError::Credentials(
                    "the client certificate file holds no PEM certificate".into(),
                )
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            ConnectError::Credentials("the key file holds no PEM private key".into())
        })?;
        Ok(ClientConfig {
            broker: broker.to_owned(),
            further_brokers: Vec::new(),
            transport: TransportChoice::Auto,
            remember_in: None,
            proxy: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_packet: PacketSize::default(),
            congestion: tunnel::udp::Congestion::default(),
            ca,
            chain,
            key: Arc::new(key),
        })
    }

    /// Every broker address, in the order they are tried.
    pub fn addresses(&self) -> Vec<&str> {
        std::iter::once(self.broker.as_str())
            .chain(self.further_brokers.iter().map(String::as_str))
            .collect()
    }

    /// The TLS configuration of both transports: TLS 1.3 only, the broker CA as the only
    /// root, our certificate, ALPN `sekisho/1`, no resumption and no early data.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, ConnectError> {
        let provider = tunnel::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(|e| {
            ConnectError::Credentials(format!("the broker CA certificate is not usable: {e}"))
        })?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Credentials(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                ConnectError::Credentials(format!(
                    "the client certificate and key do not fit together: {e}"
                ))
            })?;
        tls.alpn_protocols = vec![proto::ALPN.to_vec()];
        tls.resumption = Resumption::disabled();
        tls.enable_early_data = false;
        Ok(tls)
    }

    /// The QUIC client configuration over [`tls_config`](ClientConfig::tls_config). Public
    /// for tools and tests that speak the protocol themselves.
    pub fn quic_config(&self) -> Result<quinn::ClientConfig, ConnectError> {
        quic_client_config(self.tls_config()?, self.max_packet, self.congestion)
    }

    /// How [`crate::transport`] reaches the broker with these credentials.
    pub(crate) fn dial(&self) -> Result<crate::transport::Dial<'_>, ConnectError> {
        let tls = self.tls_config()?;
        Ok(crate::transport::Dial {
            quic: quic_client_config(tls.clone(), self.max_packet, self.congestion)?,
            tls,
            max_packet: self.max_packet,
            transport: self.transport,
            remember_in: self.remember_in.as_deref(),
            proxy: self.proxy.as_ref(),
        })
    }
}

/// A QUIC client configuration over `tls`: keep-alives well within the broker's idle
/// timeout, no streams from the broker, packets up to `max_packet`.
pub(crate) fn quic_client_config(
    tls: rustls::ClientConfig,
    max_packet: PacketSize,
    congestion: tunnel::udp::Congestion,
) -> Result<quinn::ClientConfig, ConnectError> {
    let quic_tls =
        QuicClientConfig::try_from(tls).map_err(|e| ConnectError::Credentials(e.to_string()))?;
    let mut transport = TransportConfig::default();
    tunnel::udp::tune_transport(&mut transport, max_packet, congestion);
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    // The broker never opens streams towards the client.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(0));
    transport.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    let mut config = quinn::ClientConfig::new(Arc::new(quic_tls));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
