//! Reaching the broker: QUIC over UDP, or TLS 1.3 over TCP where UDP cannot pass, both on the
//! broker's one `HOST:PORT`.
//!
//! With [`TransportChoice::Auto`] (the default) both are tried the way a browser races its
//! connections: QUIC starts first and TCP [`HEAD_START`] later, and the first whose TLS
//! handshake completes carries the session. The winner is remembered per broker in the
//! configuration directory; a broker last reached over TCP gets TCP first next time (within
//! [`REMEMBER_FOR`]), with QUIC still raced behind it, so a network that lets UDP through again
//! is back on QUIC at the next connection, never stuck on TCP. Only the handshake is raced:
//! the loser is dropped before anything is said on it.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tunnel::link::Link;
use tunnel::tcp::{LinkError, TcpLink, Tuning};

use crate::error::ConnectError;
use crate::proxy::Proxy;
use crate::session::{classify, client_endpoint, udp_refused};

/// How long QUIC (or the transport remembered) runs alone before the other starts.
pub const HEAD_START: Duration = Duration::from_millis(250);
/// How long a broker reached over TCP gets TCP first.
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);
/// The file in the configuration directory: one `HOST:PORT TRANSPORT UNIX_SECONDS` line per
/// broker.
pub const TRANSPORT_FILE: &str = "transport";

/// Which transport the client uses (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Race both, QUIC first (the default).
    #[default]
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

impl FromStr for TransportChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<TransportChoice, String> {
        match text {
            "auto" => Ok(TransportChoice::Auto),
            "quic" => Ok(TransportChoice::Quic),
            "tcp" => Ok(TransportChoice::Tcp),
            other => Err(format!(
                "`{other}` is not a transport; use auto, quic or tcp"
            )),
        }
    }
}

/// How to reach a broker: the TLS configuration (the technician's certificate, or
/// enrollment's pinned fingerprint), the same as a QUIC configuration, and the choice.
pub(crate) struct Dial<'a> {
    pub(crate) tls: rustls::ClientConfig,
    pub(crate) quic: quinn::ClientConfig,
    pub(crate) max_packet: tunnel::udp::PacketSize,
    pub(crate) transport: TransportChoice,
    pub(crate) remember_in: Option<&'a Path>,
    pub(crate) proxy: Option<&'a Proxy>,
}

/// A link to the broker, and the QUIC endpoint under it (kept while the link lives).
pub(crate) struct Dialed {
    pub(crate) link: Link,
    pub(crate) endpoint: Option<quinn::Endpoint>,
}

/// Reaches the broker at `broker` (`address`, resolved) as `config` says.
pub(crate) async fn dial(
    config: &Dial<'_>,
    broker: &str,
    address: SocketAddr,
) -> Result<Dialed, ConnectError> {
    match config.transport {
        TransportChoice::Quic => dial_quic(config, broker, address).await,
        TransportChoice::Tcp => dial_tcp(config, broker, address).await,
        TransportChoice::Auto => race(config, broker, address).await,
    }
}

/// Both transports, the remembered one (QUIC unless TCP won lately) first.
async fn race(
    config: &Dial<'_>,
    broker: &str,
    address: SocketAddr,
) -> Result<Dialed, ConnectError> {
    let tcp_first = config
        .remember_in
        .is_some_and(|dir| remembered_tcp(dir, broker, SystemTime::now()));
    let quic = dial_quic(config, broker, address);
    let tcp = dial_tcp(config, broker, address);
    tokio::pin!(quic, tcp);
    let head_start = tokio::time::sleep(HEAD_START);
    tokio::pin!(head_start);
    let (mut quic_failed, mut tcp_failed) = (None, None);
    let (mut quic_started, mut tcp_started) = (!tcp_first, tcp_first);
    loop {
        tokio::select! {
            () = &mut head_start, if !(quic_started && tcp_started) => {
                quic_started = true;
                tcp_started = true;
            }
            dialed = &mut quic, if quic_started && quic_failed.is_none() => match dialed {
                Ok(dialed) => {
                    remember(config, broker, "quic");
                    return Ok(dialed);
                }
                Err(e) => {
                    quic_failed = Some(e);
                    // No reason to wait for TCP's turn.
                    tcp_started = true;
                }
            },
            dialed = &mut tcp, if tcp_started && tcp_failed.is_none() => match dialed {
                Ok(dialed) => {
                    remember(config, broker, "tcp");
                    return Ok(dialed);
                }
                Err(e) => {
                    tcp_failed = Some(e);
                    quic_started = true;
                }
            },
        }
        if let (Some(quic), Some(tcp)) = (&quic_failed, &tcp_failed) {
            return Err(neither(broker, quic, tcp));
        }
    }
}

/// Both failed: a certificate problem on either is told as it is (it would fail the same
/// way on the other); else one sentence naming both ports.
fn neither(broker: &str, quic: &ConnectError, tcp: &ConnectError) -> ConnectError {
    for error in [quic, tcp] {
        if matches!(
            error,
            ConnectError::BrokerNotTrusted { .. }
                | ConnectError::CertificateRejected { .. }
                | ConnectError::Credentials(_)
                | ConnectError::Refused(_)
        ) {
            return error.clone();
        }
    }
    ConnectError::NoTransport {
        broker: broker.to_owned(),
        quic: quic.to_string(),
        tcp: tcp.to_string(),
    }
}

/// QUIC: the handshake on a fresh endpoint, an ICMP error ending it at once.
async fn dial_quic(
    config: &Dial<'_>,
    broker: &str,
    address: SocketAddr,
) -> Result<Dialed, ConnectError> {
    let endpoint = client_endpoint(broker, address, config.quic.clone(), config.max_packet)?;
    let connecting = endpoint
        .connect(address, proto::BROKER_SERVER_NAME)
        .map_err(|e| ConnectError::Connection(e.to_string()))?;
    let handshake = async { connecting.await.map_err(|e| classify(broker, e)) };
    // Beside the handshake, a probe that hears an ICMP error at once (quinn's socket is not
    // connected, so the kernel does not report those to it).
    let connection = tokio::select! {
        connected = handshake => connected?,
        refused = udp_refused(address) => {
            return Err(ConnectError::UdpRefused {
                broker: broker.to_owned(),
                reason: refused.to_string(),
            });
        }
    };
    Ok(Dialed {
        link: Link::Quic(connection),
        endpoint: Some(endpoint),
    })
}

/// TLS 1.3 over TCP, then the link's HTTP/2 framing.
async fn dial_tcp(
    config: &Dial<'_>,
    broker: &str,
    address: SocketAddr,
) -> Result<Dialed, ConnectError> {
    let tcp = match config.proxy {
        Some(proxy) => proxy.connect(broker).await?,
        None => TcpStream::connect(address)
            .await
            .map_err(|e| ConnectError::TcpUnreachable {
                broker: broker.to_owned(),
                reason: e.to_string(),
            })?,
    };
    tunnel::tcp::prepare_socket(&tcp);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config.tls.clone()));
    let name = rustls_pki_types::ServerName::try_from(proto::BROKER_SERVER_NAME)
        .map_err(|e| ConnectError::Connection(e.to_string()))?;
    let tls = connector.connect(name, tcp).await.map_err(|e| {
        match (tls_error(broker, &e), config.proxy) {
            // Through a proxy, a certificate that is not the broker's is the proxy's own.
            (ConnectError::BrokerNotTrusted { reason, .. }, Some(proxy)) => {
                ConnectError::ProxyInspects {
                    proxy: proxy.to_string(),
                    broker: broker.to_owned(),
                    reason,
                }
            }
            (other, _) => other,
        }
    })?;
    let link = TcpLink::client(tls, address, &Tuning::default())
        .await
        .map_err(|e| match e {
            LinkError::Tls(tls) => tls_refusal(broker, &tls),
            other => ConnectError::Connection(other.to_string()),
        })?;
    Ok(Dialed {
        link: Link::Tcp(Arc::new(link)),
        endpoint: None,
    })
}

/// A failed TLS handshake over TCP, as the sentence the technician needs.
fn tls_error(broker: &str, error: &std::io::Error) -> ConnectError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls_refusal(broker, tls),
        None => ConnectError::TcpUnreachable {
            broker: broker.to_owned(),
            reason: error.to_string(),
        },
    }
}

fn tls_refusal(broker: &str, error: &rustls::Error) -> ConnectError {
    match error {
        // We refused the broker's certificate (or whatever answered on that port).
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            ConnectError::BrokerNotTrusted {
                broker: broker.to_owned(),
                reason: error.to_string(),
            }
        }
        // The broker refused ours, or our protocol.
        rustls::Error::AlertReceived(alert) => crate::session::alert_refusal(u8::from(*alert)),
        other => ConnectError::Connection(format!("TLS: {other}")),
    }
}

/// Whether `broker` was last reached over TCP, within [`REMEMBER_FOR`] of `now`.
fn remembered_tcp(dir: &Path, broker: &str, now: SystemTime) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(TRANSPORT_FILE)) else {
        return false;
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(host), Some("tcp"), Some(at)) if host == broker => at
                .parse::<u64>()
                .is_ok_and(|at| now.saturating_sub(at) < REMEMBER_FOR.as_secs()),
            _ => false,
        }
    })
}

/// Notes which transport reached `broker` (best effort: a directory that cannot be written
/// only costs the head start next time).
fn remember(config: &Dial<'_>, broker: &str, transport: &str) {
    let Some(dir) = config.remember_in else {
        return;
    };
    let path = dir.join(TRANSPORT_FILE);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split_whitespace().next() != Some(broker))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{broker} {transport} {now}"));
    let _ = crate::files::write_atomically(&path, lines.join("\n").as_bytes(), 0o644);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_reached_over_tcp_lately_gets_tcp_first_and_only_for_a_day() {
        let dir = tempfile_dir();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        std::fs::write(
            dir.join(TRANSPORT_FILE),
            "a.example:4433 tcp 999000\nb.example:4433 quic 999000\n",
        )
        .unwrap();
        assert!(remembered_tcp(&dir, "a.example:4433", now));
        assert!(!remembered_tcp(&dir, "b.example:4433", now));
        assert!(!remembered_tcp(&dir, "c.example:4433", now));
        assert!(!remembered_tcp(&dir, "a.example:4433", now + REMEMBER_FOR));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sekisho-transport-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_choice_reads_as_typed() {
        assert_eq!("auto".parse(), Ok(TransportChoice::Auto));
        assert_eq!("tcp".parse(), Ok(TransportChoice::Tcp));
        assert!("udp".parse::<TransportChoice>().is_err());
    }
}
