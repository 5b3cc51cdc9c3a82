//! The audit stream sent straight to the hospital's syslog collector or SIEM
//! (`serve --audit-syslog URL`): every event, as it is recorded, as one RFC 5424 message
//! whose text is the event's export line ([`message`]).
//!
//! - **Transports.** `tcp://HOST:PORT` (plain, default port 514: for a collector on this host
//!   or a trusted management network) and `tls://HOST:PORT` (RFC 5425, default port 6514),
//!   verified with rustls against the broker's own CA plus either the CA file given
//!   (`--audit-syslog-ca`, which replaces the system's roots, as for the webhook) or, without
//!   one, the host's trust store. No client certificate is sent. Both frame messages by octet
//!   counting (RFC 6587 §3.4.1). `udp://` is refused: a datagram that is dropped, or cut at
//!   the path's size, is lost without anyone knowing, and an audit trail must not have holes
//!   nobody can see.
//! - **Checked at start.** [`Syslog::prepare`] reads the URL and the CA file before the broker
//!   creates anything; a mistake stops `serve` with one sentence ([`SyslogError`]).
//! - **Follows the log** as the file stream does (`audit::follow`): in chain order, from
//!   every broker sharing the database, never blocking the broker. A collector that is down,
//!   refuses TLS or stops reading is recorded once as `audit-syslog-failed`; the events are
//!   kept (the database is the queue), the connection is tried again with a growing wait (up
//!   to [`MAX_RETRY_WAIT`]), and when it works `audit-syslog-recovered` is recorded and
//!   everything kept is sent.
//! - **One sender per collector.** Of the brokers sharing a database, the one holding the
//!   collector's lease sends (`crate::sender`); the others stand by and take over when it
//!   stops, recording `sender-took-over`. A broker that loses the lease stops sending at once.
//! - **Resumes where it left off.** After each batch is written the number of its last event
//!   is stored with the lease in the database (only while the lease is this broker's); the
//!   next sender, this broker after a restart or another one, sends what comes after it. A
//!   collector never sent to gets the whole log, or, the first time after an upgrade from a
//!   version that kept the number in `DATA_DIR/audit-syslog.seq`, what comes after that file's
//!   number (the file is read then, and no longer written).
//! - **At least once.** A crash between sending a batch and storing its number sends the batch
//!   again; so does a connection found closed by the collector (TCP accepts bytes that a
//!   collector going down never reads, so the batch sent last on it is sent again on the next
//!   one). A SIEM drops repeats by `seq` or `hash`.
//!
//! Signed checkpoints of the chain ([`super::checkpoint`]) are sent too, each as a message of
//! its own (MSGID `audit-checkpoint`, severity notice) whose text is the checkpoint's line,
//! after the event it commits to.
//!
//! It never sends anything but audit lines, never logs or records more of the URL than its
//! scheme, host and port, and never reads what the collector sends (beyond noticing that it
//! closed the connection).
//!
//! # Layout
//!
//! - this file: the configuration, the check at start, the connection, the old cursor file;
//! - [`message`]: one event as one framed RFC 5424 message (pure).

pub mod message;

use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::follow::{self, Follow, Sink};
use super::{EventKind, StoredEvent};
use crate::sender::{self, Destination, Holding, Leases};
use crate::store::Store;
use message::Origin;

/// The file in the data directory where versions before the database's cursor kept the last
/// event sent: read once, when the database has no cursor for the collector yet.
pub const CURSOR_FILE: &str = "audit-syslog.seq";
/// How long connecting (with TLS) and writing one batch may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before trying a failed collector again; it doubles up to
/// [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between attempts: a collector back from a restart gets the events it
/// missed within this.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// The collector as configured, not yet checked: `--audit-syslog URL`, `--audit-syslog-ca FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub url: String,
    /// PEM certificates of the CA(s) that issue the collector's certificate (`tls://` only).
    pub ca_file: Option<PathBuf>,
}

/// Why the collector's configuration cannot be used; `serve` stops with this sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// The URL does not parse.
    #[error(
        "--audit-syslog {url:?} is not a URL ({reason}); give one like tls://siem.hospital.local:6514 or tcp://127.0.0.1:514."
    )]
    NotAUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `udp://`: refused, see the module's documentation.
    #[error(
        "--audit-syslog udp:// is refused because UDP loses messages without anyone knowing and an audit trail must not have silent gaps; use tcp:// or tls:// (the collector's TCP or TLS input, RFC 6587 or 5425)."
    )]
    UdpRefused,
    /// Neither `tcp://` nor `tls://`.
    #[error(
        "--audit-syslog must start with tls:// (RFC 5425) or tcp:// (plain, for a collector on this host or a trusted management network), not {scheme}."
    )]
    UnsupportedScheme {
        /// The scheme given, with its `://`.
        scheme: String,
    },
    /// A CA file for a plain `tcp://` collector, which is never verified.
    #[error(
        "--audit-syslog-ca is for a tls:// collector, and {url} is plain TCP; use tls:// or drop --audit-syslog-ca."
    )]
    CaWithoutTls {
        /// The collector, without anything after its port.
        url: String,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error(
        "--audit-syslog-ca {}: {reason}; give the PEM file of the CA that issued the collector's certificate.",
        path.display()
    )]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("the audit syslog's TLS configuration could not be built: {0}.")]
    Tls(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Tcp,
    Tls,
}

/// The collector's address, parsed once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    scheme: Scheme,
    /// A DNS name or an IP address, without IPv6 brackets.
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, SyslogError> {
        let not_a_url = |reason: &str| SyslogError::NotAUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = url.trim().split_once("://") else {
            return Err(not_a_url("it does not start with tls:// or tcp://"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "udp" => return Err(SyslogError::UdpRefused),
            other => {
                return Err(SyslogError::UnsupportedScheme {
                    scheme: format!("{other}://"),
                });
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(not_a_url("a collector's address has no path"));
        }
        if authority.contains('@') {
            return Err(not_a_url(
                "a collector's address has no user name or password",
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]`, `[::1]:6514`, `host:6514`, `host`.
            Some((host, port))
                if !port.contains(']') && (!host.contains(':') || host.ends_with(']')) =>
            {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| not_a_url("its port is not a number from 1 to 65535"))?;
                (host, port)
            }
            _ => (
                authority,
                match scheme {
                    Scheme::Tcp => 514,
                    Scheme::Tls => 6514,
                },
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(not_a_url("it names no host"));
        }
        if ServerName::try_from(host).is_err() {
            return Err(not_a_url(
                "its host is neither a DNS name nor an IP address",
            ));
        }
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
        })
    }

    /// `tls://siem.hospital.local:6514`: what logs, the audit log and the cursor file name.
    fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A checked collector: its URL understood and its CA file read. Made at start, before
/// anything is created, so that a mistake stops the broker there.
pub struct Syslog {
    endpoint: Endpoint,
    /// For `tls://`: the CA file's certificates, or else the system's roots.
    roots: rustls::RootCertStore,
}

impl Syslog {
    /// Checks `config`: the URL (scheme, host, port) and, for `tls://`, the CA file (or the
    /// system's roots).
    pub fn prepare(config: &SyslogConfig) -> Result<Syslog, SyslogError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let roots = match (endpoint.scheme, &config.ca_file) {
            (Scheme::Tcp, None) => rustls::RootCertStore::empty(),
            (Scheme::Tcp, Some(_)) => {
                return Err(SyslogError::CaWithoutTls {
                    url: endpoint.url(),
                });
            }
            (Scheme::Tls, Some(path)) => {
                crate::pki::trust::read_ca_file(path).map_err(|reason| SyslogError::CaFile {
                    path: path.clone(),
                    reason,
                })?
            }
            (Scheme::Tls, None) => {
                crate::pki::trust::system_roots("audit syslog", "--audit-syslog-ca")
            }
        };
        Ok(Syslog { endpoint, roots })
    }

    /// `tls://host:port`: what the broker says at start.
    pub fn url(&self) -> String {
        self.endpoint.url()
    }

    /// The sender, trusting the broker's own CA too (known only once the PKI is loaded, hence
    /// this second step), finding an old cursor file in `data_dir`.
    pub(crate) fn sender(
        mut self,
        broker_ca: &CertificateDer<'static>,
        data_dir: &Path,
    ) -> Result<Sender, SyslogError> {
        let tls = match self.endpoint.scheme {
            Scheme::Tcp => None,
            Scheme::Tls => {
                self.roots.add(broker_ca.clone()).map_err(|e| {
                    SyslogError::Tls(format!("the broker's CA is not usable ({e})"))
                })?;
                let config = rustls::ClientConfig::builder_with_provider(tunnel::crypto_provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| SyslogError::Tls(e.to_string()))?
                    .with_root_certificates(self.roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(self.endpoint.host.clone()).map_err(|e| {
                    SyslogError::Tls(format!("{:?} cannot be verified ({e})", self.endpoint.host))
                })?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Sender {
            endpoint: self.endpoint,
            tls,
            cursor: data_dir.join(CURSOR_FILE),
        })
    }
}

/// The checked collector with its TLS client, ready to follow the log.
pub(crate) struct Sender {
    endpoint: Endpoint,
    /// For `tls://`: the client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The old cursor file.
    cursor: PathBuf,
}

impl Sender {
    /// `tls://host:port`.
    pub(crate) fn url(&self) -> String {
        self.endpoint.url()
    }
}

/// Follows the audit log to the collector whenever this broker holds its lease, until
/// `shutdown` (then sends what is left, once and within [`ATTEMPT_TIMEOUT`], lets the lease
/// go, and stops).
pub(crate) async fn run(sender: Sender, leases: Leases, shutdown: CancellationToken) {
    let store = leases.store.clone();
    let first_after_seq = first_after_seq(&sender, &store).await;
    let destination = Destination {
        feature: "audit-syslog",
        key: sender.url(),
        shown: sender.url(),
    };
    let origin = Origin::new(&hostname(), &leases.broker_id);
    let follow = Follow {
        store,
        clock: leases.clock.clone(),
        broker_id: leases.broker_id.clone(),
    };
    let sender = Arc::new(sender);
    sender::serve(
        leases,
        destination,
        first_after_seq,
        shutdown,
        |holding, shutdown| {
            let sink = SyslogSink {
                origin: origin.clone(),
                sender: sender.clone(),
                holding,
                connection: None,
                sent_last: Vec::new(),
                send_again: Vec::new(),
                retry: Retry::default(),
            };
            follow::run(sink, follow.clone(), shutdown)
        },
    )
    .await;
}

/// Where a collector that has no cursor in the database yet starts: after the number in the
/// old cursor file, when it names this collector (an upgrade); else at the start of the log
/// (a new collector gets the whole log). A file that cannot be read starts after the log's
/// current head, as before.
async fn first_after_seq(sender: &Sender, store: &Store) -> i64 {
    let path = &sender.cursor;
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the old audit syslog cursor file; a collector never sent to starts after the current head");
            return store.audit_head().await.map(|(seq, _)| seq).unwrap_or(0);
        }
    };
    match Cursor::parse(&text) {
        Some(cursor) if cursor.url == sender.url() => cursor.seq,
        Some(_) => 0,
        None => {
            tracing::error!(path = %path.display(), "the old audit syslog cursor file holds no cursor; a collector never sent to starts after the current head");
            store.audit_head().await.map(|(seq, _)| seq).unwrap_or(0)
        }
    }
}

/// This host's name, for the HOSTNAME field (`-` when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// A connection to the collector, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// When the collector may be tried again after a failure.
#[derive(Debug, Default)]
struct Retry {
    /// No attempt before this (after a failure).
    not_before: Option<Instant>,
    /// The wait after the next failure.
    next_wait: Option<Duration>,
    /// What went wrong last, repeated while waiting.
    last_error: String,
}

struct SyslogSink {
    sender: Arc<Sender>,
    origin: Origin,
    /// This broker's lease on the collector: it writes only while it holds it.
    holding: Holding,
    connection: Option<Box<dyn Stream>>,
    /// The frames of the last batch written on `connection`. If the collector is then found
    /// to have closed it, they may never have been read, and are sent again first.
    sent_last: Vec<u8>,
    /// Frames to send first on the next connection.
    send_again: Vec<u8>,
    retry: Retry,
}

impl SyslogSink {
    fn drop_connection(&mut self) {
        self.connection = None;
        if self.send_again.is_empty() {
            self.send_again = std::mem::take(&mut self.sent_last);
        } else {
            self.sent_last.clear();
        }
    }

    async fn send(&mut self, frames: &[u8]) -> Result<(), String> {
        if let Some(connection) = self.connection.as_mut()
            && !still_open(connection).await
        {
            tracing::info!(url = %self.sender.url(), "the syslog collector closed the connection; reconnecting");
            self.drop_connection();
        }
        if self.connection.is_none() {
            self.connection = Some(connect(&self.sender).await?);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err("no connection to the collector".to_owned());
        };
        if !self.send_again.is_empty() {
            connection
                .write_all(&self.send_again)
                .await
                .map_err(|e| e.to_string())?;
        }
        connection
            .write_all(frames)
            .await
            .map_err(|e| e.to_string())?;
        connection.flush().await.map_err(|e| e.to_string())?;
        self.send_again.clear();
        self.sent_last = frames.to_vec();
        Ok(())
    }
}

impl Sink for SyslogSink {
    const NAME: &'static str = "audit syslog";
    const FAILED: EventKind = EventKind::AuditSyslogFailed;
    const RECOVERED: EventKind = EventKind::AuditSyslogRecovered;

    fn place(&self) -> (&'static str, String) {
        ("url", self.sender.url())
    }

    async fn resume_after(&mut self) -> Result<i64, String> {
        Ok(self.holding.after_seq())
    }

    fn is_revoked(&self) -> bool {
        !self.holding.is_held()
    }

    async fn write(&mut self, events: &[StoredEvent]) -> Result<(), String> {
        let mut frames = Vec::new();
        for event in events {
            message::frame(&self.origin.message(event), &mut frames);
        }
        // `events` is never empty (the follower's promise); 0 would only resend everything.
        let last = events.last().map_or(0, |event| event.seq);
        self.send_batch(&frames, Some(last)).await
    }

    async fn write_checkpoints(&mut self, checkpoints: &[Checkpoint]) -> Result<(), String> {
        let mut frames = Vec::new();
        for checkpoint in checkpoints {
            message::frame(&self.origin.checkpoint_message(checkpoint), &mut frames);
        }
        self.send_batch(&frames, None).await
    }
}

impl SyslogSink {
    /// Sends `frames` (events or checkpoints), then, for events, moves the lease's cursor to
    /// `last`.
    async fn send_batch(&mut self, frames: &[u8], last: Option<i64>) -> Result<(), String> {
        if let Some(not_before) = self.retry.not_before
            && Instant::now() < not_before
        {
            return Err(self.retry.last_error.clone());
        }
        if !self.holding.is_held() {
            return Err("another broker sends to the collector now".to_owned());
        }
        // Cut off when the lease is lost: another broker may start sending soon after.
        let holding = self.holding.clone();
        let sent = tokio::select! {
            sent = tokio::time::timeout(ATTEMPT_TIMEOUT, self.send(frames)) => Some(sent),
            () = holding.lost() => None,
        };
        let sent = match sent {
            Some(Ok(sent)) => sent,
            Some(Err(_)) => Err(format!(
                "the collector did not take the events within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            )),
            None => {
                self.drop_connection();
                return Err("another broker sends to the collector now".to_owned());
            }
        };
        if let Err(error) = sent {
            self.drop_connection();
            let wait = self.retry.next_wait.unwrap_or(FIRST_RETRY_WAIT);
            self.retry = Retry {
                not_before: Some(Instant::now() + wait),
                next_wait: Some((wait * 2).min(MAX_RETRY_WAIT)),
                last_error: error.clone(),
            };
            return Err(error);
        }
        self.retry = Retry::default();
        let Some(last) = last else {
            return Ok(());
        };
        // Sent; if the lease was lost meanwhile, the next sender sends the batch again (at
        // least once, as documented).
        self.holding
            .advance(last)
            .await
            .map_err(|_| "another broker sends to the collector now".to_owned())
    }
}

/// Connects to the collector (and does the TLS handshake).
async fn connect(sender: &Sender) -> Result<Box<dyn Stream>, String> {
    let endpoint = &sender.endpoint;
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", endpoint.url()))?;
    // Each batch is written at once and flushed; Nagle would only delay its last segment.
    let _ = tcp.set_nodelay(true);
    match &sender.tls {
        None => Ok(Box::new(tcp)),
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS with {} failed: {e}", endpoint.url()))?;
            Ok(Box::new(tls))
        }
    }
}

/// Whether the collector still has the connection open: a collector never sends (RFC 6587,
/// 5425), so a read that is ready means it closed it (end of stream, a reset, a TLS
/// close_notify). One poll, never a wait. Bytes it did send (a TLS session ticket is handled
/// below this) are dropped.
async fn still_open(connection: &mut Box<dyn Stream>) -> bool {
    let mut scratch = [0u8; 512];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut **connection).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Ready(true),
            Poll::Ready(Ok(())) => Poll::Ready(!buf.filled().is_empty()),
            Poll::Ready(Err(_)) => Poll::Ready(false),
        }
    })
    .await
}

/// The old cursor file: the last event sent, and to which collector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    seq: i64,
    url: String,
}

impl Cursor {
    /// `SEQ\nURL\n`.
    #[cfg(test)]
    fn to_text(&self) -> String {
        format!("{}\n{}\n", self.seq, self.url)
    }

    fn parse(text: &str) -> Option<Cursor> {
        let mut lines = text.lines();
        let seq = lines
            .next()?
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)?;
        let url = lines.next()?.trim().to_owned();
        Some(Cursor { seq, url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Result<Endpoint, SyslogError> {
        Endpoint::parse(url)
    }

    #[test]
    fn tcp_and_tls_urls_are_understood_with_their_default_ports() {
        assert_eq!(
            parsed("tls://siem.hospital.local:6514").unwrap(),
            Endpoint {
                scheme: Scheme::Tls,
                host: "siem.hospital.local".into(),
                port: 6514
            }
        );
        assert_eq!(parsed("tls://siem.hospital.local").unwrap().port, 6514);
        assert_eq!(parsed("TCP://127.0.0.1/").unwrap().port, 514);
        let v6 = parsed("tcp://[fd00::7]:1514").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::7", 1514));
        assert_eq!(v6.url(), "tcp://[fd00::7]:1514");
        assert_eq!(parsed("tls://[::1]").unwrap().port, 6514);
    }

    #[test]
    fn a_bad_url_is_refused_in_one_sentence_that_says_what_to_do() {
        assert_eq!(
            parsed("udp://127.0.0.1:514").unwrap_err(),
            SyslogError::UdpRefused
        );
        assert_eq!(
            parsed("ftp://siem/").unwrap_err(),
            SyslogError::UnsupportedScheme {
                scheme: "ftp://".into()
            }
        );
        for (url, reason) in [
            (
                "siem.hospital.local:514",
                "it does not start with tls:// or tcp://",
            ),
            ("tcp://siem:0", "its port is not a number from 1 to 65535"),
            (
                "tcp://siem:70000",
                "its port is not a number from 1 to 65535",
            ),
            (
                "tcp://siem:five",
                "its port is not a number from 1 to 65535",
            ),
            ("tls://siem/sekisho", "a collector's address has no path"),
            (
                "tls://me@siem",
                "a collector's address has no user name or password",
            ),
            ("tls://", "it names no host"),
            (
                "tls://siem hospital",
                "its host is neither a DNS name nor an IP address",
            ),
        ] {
            assert_eq!(
                parsed(url).unwrap_err(),
                SyslogError::NotAUrl {
                    url: url.into(),
                    reason: reason.into()
                },
                "{url}"
            );
        }
        for error in [
            parsed("udp://x").unwrap_err(),
            parsed("ftp://x").unwrap_err(),
            parsed("tcp://x:0").unwrap_err(),
            SyslogError::CaWithoutTls {
                url: "tcp://x:514".into(),
            },
        ] {
            let sentence = error.to_string();
            assert!(sentence.starts_with("--audit-syslog"), "{sentence}");
            assert!(sentence.ends_with('.'), "{sentence}");
            assert_eq!(
                sentence.matches(". ").count(),
                0,
                "one sentence: {sentence}"
            );
        }
    }

    #[test]
    fn a_ca_file_is_read_at_start_and_only_for_tls() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("siem-ca.pem");
        let config = SyslogConfig {
            url: "tls://siem.hospital.local".into(),
            ca_file: Some(missing.clone()),
        };
        let Err(SyslogError::CaFile { path, reason }) = Syslog::prepare(&config) else {
            panic!("a missing CA file must be refused");
        };
        assert_eq!(path, missing);
        assert!(reason.contains("cannot read it"), "{reason}");
        std::fs::write(&missing, "not a certificate\n").unwrap();
        let Err(SyslogError::CaFile { reason, .. }) = Syslog::prepare(&config) else {
            panic!("a CA file without certificates must be refused");
        };
        assert!(reason.contains("no PEM certificate"), "{reason}");
        let plain = SyslogConfig {
            url: "tcp://127.0.0.1:514".into(),
            ..config
        };
        assert_eq!(
            Syslog::prepare(&plain).err(),
            Some(SyslogError::CaWithoutTls {
                url: "tcp://127.0.0.1:514".into()
            })
        );
    }

    #[test]
    fn the_cursor_file_round_trips_and_refuses_junk() {
        let cursor = Cursor {
            seq: 42,
            url: "tls://siem:6514".into(),
        };
        assert_eq!(Cursor::parse(&cursor.to_text()), Some(cursor));
        assert_eq!(Cursor::parse("forty-two\ntls://siem:6514\n"), None);
        assert_eq!(Cursor::parse("42\n"), None);
        assert_eq!(Cursor::parse("-1\ntls://siem:6514\n"), None);
    }
}
