//! The approvers' webhook: each new access request, approval, denial and revocation, and
//! each staff account locked after failed logins, POSTed as JSON to a URL the hospital runs
//! (a relay to its chat, pager or ticketing system), so that the staff on duty learn of a
//! request without watching the web UI, and admins of a lock (someone may be guessing a
//! password, or keeping an approver out).
//!
//! It follows the audit log, as the SIEM stream does ([`crate::audit::stream`]): a message
//! is sent for what was recorded, whichever broker or admin command recorded it, with the
//! actor and reason the log names.
//!
//! - **One sender per URL.** Of the brokers sharing a database, the one holding the webhook's
//!   lease for the URL sends ([`crate::sender`]); the others stand by and take over when it
//!   stops. The lease keeps a cursor: the highest event below which every message is handled
//!   (delivered, or recorded as not; deliveries finish in any order). The next sender resumes
//!   there, so what was recorded while no broker sent is sent when one starts, and messages
//!   waiting at a shutdown are sent by the next sender. The first sender ever for a URL starts
//!   at the log's head (an old log is not replayed). Events older than [`DEFAULT_MAX_AGE`] when
//!   read, after an outage, are not sent and are recorded once as `webhook-skipped`.
//!
//! - **Checked at start.** [`Webhook::prepare`] reads the URL, the CA file and the secret file
//!   before the broker creates or serves anything; a mistake stops `serve` with one sentence.
//! - **Transport.** `https://`, verified with rustls against the broker's own CA plus either
//!   the CA file given (`--web-webhook-ca`, which replaces the system's roots, as curl's
//!   `--cacert` does) or, without one, the host's trust store. `http://` only to this host
//!   (`127.0.0.1`, `[::1]`, `localhost`), for a relay beside the broker: request details
//!   (vendor, technician, targets, purpose) never cross the network in clear.
//! - **Signed.** With a shared secret (`--web-webhook-secret-file`), every POST carries
//!   `X-Sekisho-Signature: sha256=HEX`, the HMAC-SHA256 of the raw body. The body holds the
//!   delivery id (the audit event's hash, the same for every attempt and every broker) and
//!   the time of this attempt, so a receiver that checks the signature can refuse replays
//!   (`message`).
//! - **Delivered, or known not to be.** Connection errors, attempts over their time limit,
//!   408, 429 and 5xx answers are tried again after a wait ([`RetryPolicy`]: 4 attempts over
//!   about a minute); other answers and a certificate the broker does not trust are not. A
//!   message that is finally not delivered is recorded once as `webhook-failed`, with the
//!   request, the last error and the number of attempts, so auditors see that approvers may
//!   not have been alerted (the request still shows in the web UI).
//!   Delivery is at least once: a message under way when its sender crashed is sent again by
//!   the next (the delivery id lets a receiver drop the repeat).
//!
//! It never holds up anything else: deliveries run on their own tasks, at most
//! [`MAX_IN_FLIGHT`] at once, and the follower waits for a free slot rather than queueing
//! without bound (the audit log is the queue). It never follows a redirect, never puts the
//! secret anywhere but into the HMAC, and never logs or records more of the URL than its
//! scheme, host and port (a relay's URL may carry a token in its path).
//!
//! # Layout
//!
//! - this file: the configuration, the check at start, following the log;
//! - `message`: which events are sent, the JSON body, the signature;
//! - `delivery`: one message to the URL: connection, TLS, attempts and waits.

mod delivery;
mod message;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::audit::{Actor, AuditEvent, EventKind, StoredEvent};
use crate::clock::Clock;
use crate::secret::Secret;
use crate::sender::{self, Destination, Holding, Leases};
use crate::session::{RequestId, RequestRecord};
use crate::store::{AuditFilter, Store, StoreError};

use delivery::Outcome;
pub(crate) use delivery::Sender;
use message::Message;

/// How often the audit log is read for new events to send.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Events read at once.
const BATCH: i64 = 100;
/// Deliveries under way at once (most of them wait between attempts when the receiver is
/// down). The follower waits for a free slot.
pub const MAX_IN_FLIGHT: usize = 16;
/// How old an event may be when it is read and still be sent: after an outage longer than
/// this, approvers are not paged for what has long been answered or expired (a request
/// waits `answer_within`, 30 minutes in the example policy); what is skipped is recorded.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// The shortest secret accepted, in bytes: a guessable secret signs nothing.
const MIN_SECRET_LEN: usize = 16;

/// The webhook as configured, not yet checked: `--web-webhook URL`, `--web-webhook-ca FILE`,
/// `--web-webhook-secret-file FILE`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to POST: `https://…`, or `http://` to a relay on this host.
    pub url: String,
    /// PEM certificates of the CA(s) that issue the receiver's certificate (the hospital's
    /// internal CA). Trusted with the broker's own CA, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A file holding the shared secret that signs every message (its contents, without the
    /// final line break).
    pub secret_file: Option<PathBuf>,
    /// How often and how long a message is tried.
    pub retry: RetryPolicy,
    /// Events older than this when they are read, after an outage, are not sent (and that is
    /// recorded, `webhook-skipped`); [`DEFAULT_MAX_AGE`].
    pub max_age: Duration,
}

impl WebhookConfig {
    /// POSTs to `url`, trusting the system's roots and the broker's CA, unsigned, with the
    /// default retries.
    pub fn new(url: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ca_file: None,
            secret_file: None,
            retry: RetryPolicy::default(),
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &origin_of(&self.url))
            .field("ca_file", &self.ca_file)
            .field("secret_file", &self.secret_file)
            .field("retry", &self.retry)
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// How hard one message is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The waits between attempts: a first attempt, then one more after each wait.
    pub backoff: Vec<Duration>,
    /// How long one attempt may take: connecting, TLS, sending, and the answer's status.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts: at once, then after 5, 15 and 40 seconds (the last a minute after the
    /// first), each within 10 seconds. Long enough to ride out a relay's restart, short
    /// enough that the audit log soon says when approvers were not alerted.
    fn default() -> RetryPolicy {
        RetryPolicy {
            backoff: vec![
                Duration::from_secs(5),
                Duration::from_secs(15),
                Duration::from_secs(40),
            ],
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the webhook's configuration cannot be used; `serve` stops with this sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse.
    #[error(
        "--web-webhook {url:?} is not a URL ({reason}); give one like https://relay.hospital.local/sekisho."
    )]
    NotAUrl {
        /// What was given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// Neither `https://` nor `http://`.
    #[error(
        "--web-webhook must start with https:// (or http:// for a relay on this host), not {scheme}."
    )]
    UnsupportedScheme {
        /// The scheme given, with its `://`.
        scheme: String,
    },
    /// `http://` to another host: request details would cross the network in clear.
    #[error(
        "--web-webhook http://{host}… would send request details unencrypted across the network; use https:// (with --web-webhook-ca for the hospital's CA) or a relay on this host (http://127.0.0.1:PORT/…)."
    )]
    PlainHttpNotLoopback {
        /// The host named.
        host: String,
    },
    /// A user name or password in the URL.
    #[error(
        "--web-webhook carries a user name or password, which this broker does not send; drop it and sign the messages with --web-webhook-secret-file instead."
    )]
    CredentialsInUrl,
    /// The CA file cannot be read or holds no certificate.
    #[error(
        "--web-webhook-ca {}: {reason}; give the PEM file of the CA that issued the receiver's certificate.",
        path.display()
    )]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The secret file cannot be read, or its secret is too short.
    #[error(
        "--web-webhook-secret-file {}: {reason}; put a long random secret in it (openssl rand -hex 32 > FILE) and give the receiver the same.",
        path.display()
    )]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("the webhook's TLS configuration could not be built: {0}.")]
    Tls(String),
}

/// A checked webhook: its URL understood, its CA file and secret read. Made at start, before
/// anything is created or served, so that a mistake stops the broker there.
pub struct Webhook {
    endpoint: Endpoint,
    /// For `https://`: the CA file's certificates, or else the system's roots.
    roots: rustls::RootCertStore,
    secret: Option<Secret<Vec<u8>>>,
    retry: RetryPolicy,
    max_age: Duration,
}

impl Webhook {
    /// Checks `config`: the URL (scheme, host, `http://` only to this host), the CA file (or
    /// the system's roots), the secret file.
    pub fn prepare(config: &WebhookConfig) -> Result<Webhook, WebhookError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let roots = match (&endpoint.scheme, &config.ca_file) {
            (Scheme::Http, _) => rustls::RootCertStore::empty(),
            (Scheme::Https, Some(path)) => read_ca_file(path)?,
            (Scheme::Https, None) => system_roots(),
        };
        let secret = config.secret_file.as_deref().map(read_secret).transpose()?;
        Ok(Webhook {
            endpoint,
            roots,
            secret,
            retry: config.retry.clone(),
            max_age: config.max_age,
        })
    }

    /// The sender, trusting the broker's own CA too (known only once the PKI is loaded, hence
    /// this second step).
    pub(crate) fn sender(
        mut self,
        broker_ca: &CertificateDer<'static>,
        clock: Arc<dyn Clock>,
    ) -> Result<Sender, WebhookError> {
        if self.endpoint.scheme == Scheme::Https {
            self.roots
                .add(broker_ca.clone())
                .map_err(|e| WebhookError::Tls(format!("the broker's CA is not usable ({e})")))?;
        }
        Sender::new(
            self.endpoint,
            self.roots,
            self.secret,
            self.retry,
            self.max_age,
            clock,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

/// Where messages go, parsed once at start.
#[derive(Debug, Clone)]
struct Endpoint {
    scheme: Scheme,
    /// The host to connect to and (for TLS) to verify: a DNS name or an IP address, without
    /// IPv6 brackets.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    /// What the request line asks for.
    path_and_query: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, WebhookError> {
        if !url.contains("://") {
            return Err(WebhookError::NotAUrl {
                url: url.to_owned(),
                reason: "it does not start with https://".to_owned(),
            });
        }
        let uri: hyper::Uri = url.trim().parse().map_err(|e| WebhookError::NotAUrl {
            url: url.to_owned(),
            reason: format!("{e}"),
        })?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            other => {
                return Err(WebhookError::UnsupportedScheme {
                    scheme: format!("{}://", other.unwrap_or_default()),
                });
            }
        };
        let authority = uri.authority().ok_or_else(|| WebhookError::NotAUrl {
            url: url.to_owned(),
            reason: "it names no host".to_owned(),
        })?;
        if authority.as_str().contains('@') {
            return Err(WebhookError::CredentialsInUrl);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(WebhookError::NotAUrl {
                url: url.to_owned(),
                reason: "it names no host".to_owned(),
            });
        }
        if scheme == Scheme::Http && !is_loopback_host(&host) {
            return Err(WebhookError::PlainHttpNotLoopback { host });
        }
        if scheme == Scheme::Https && rustls_pki_types::ServerName::try_from(host.as_str()).is_err()
        {
            return Err(WebhookError::NotAUrl {
                url: url.to_owned(),
                reason: format!("{host:?} is neither a DNS name nor an IP address"),
            });
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(Endpoint {
            scheme,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }

    /// `https://relay.hospital.local:443 path-sha256:0123456789abcdef`: the origin and the
    /// start of the path's SHA-256, so that two URLs of one relay are two destinations, and
    /// the database never holds the path (it may carry a token).
    fn lease_key(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.path_and_query.as_bytes());
        let hex = crate::encoding::hex(digest.as_ref());
        format!("{} path-sha256:{}", self.origin(), &hex[..16])
    }

    /// `https://relay.hospital.local:443`: what logs and the audit log name (never the path,
    /// which may carry a token).
    fn origin(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `127.0.0.1`, `::1` (any loopback address) or `localhost`. (A `localhost` that resolves
/// elsewhere is not dialled: see `delivery`.)
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL up to its path, for debug output of a configuration that was not parsed yet.
fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => format!("{}/…", &url[..after_scheme + slash]),
        None => url.to_owned(),
    }
}

fn read_ca_file(path: &Path) -> Result<rustls::RootCertStore, WebhookError> {
    crate::pki::trust::read_ca_file(path).map_err(|reason| WebhookError::CaFile {
        path: path.to_owned(),
        reason,
    })
}

/// The host's trust store, for `https://` without `--web-webhook-ca`.
fn system_roots() -> rustls::RootCertStore {
    crate::pki::trust::system_roots("webhook", "--web-webhook-ca")
}

fn read_secret(path: &Path) -> Result<Secret<Vec<u8>>, WebhookError> {
    let problem = |reason: String| WebhookError::SecretFile {
        path: path.to_owned(),
        reason,
    };
    let mut bytes = std::fs::read(path).map_err(|e| problem(format!("cannot read it ({e})")))?;
    // A file written by `echo` or an editor ends with a line break that is not part of the
    // secret (receivers that read it with `$(cat FILE)` drop it too).
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_LEN {
        return Err(problem(format!(
            "holds {} byte(s), fewer than the {MIN_SECRET_LEN} a secret needs",
            bytes.len()
        )));
    }
    Ok(Secret::new(bytes))
}

/// The audit kinds the webhook reads (a `session-ended` is sent only for a revocation).
const FOLLOWED: [EventKind; 5] = [
    EventKind::RequestMade,
    EventKind::RequestApproved,
    EventKind::RequestDenied,
    EventKind::SessionEnded,
    EventKind::StaffLocked,
];

/// What the follower needs besides the sender.
pub(crate) struct Follow {
    /// The database whose audit log is followed, where failures are recorded and where the
    /// lease and its cursor are; the broker, named by `webhook-failed`, and its leases.
    pub(crate) leases: Leases,
    /// Where a destination never sent to starts: the log's head at this broker's start
    /// (requests recorded before are not sent).
    pub(crate) first_after_seq: i64,
}

/// Follows the audit log and delivers a message for each event approvers want, whenever this
/// broker holds the webhook's lease (another broker sharing the database may hold it: then
/// this one stands by), until `shutdown`. The lease's cursor moves past an event only once
/// its message is delivered, or finally not and recorded so; the next sender (another broker,
/// or this one after a restart) resumes there.
///
/// At `shutdown` no new attempt starts: attempts under way finish (each within its time
/// limit), the cursor is stored, the lease let go, and it returns. Messages waiting to be tried
/// again, and events not yet started on, are left for the next sender. A lost lease stops
/// everything at once, attempts under way included.
pub(crate) async fn run(sender: Sender, follow: Follow, shutdown: CancellationToken) {
    let destination = Destination {
        feature: "webhook",
        key: sender.lease_key(),
        shown: sender.origin(),
    };
    let sender = Arc::new(sender);
    let leases = follow.leases.clone();
    sender::serve(
        leases,
        destination,
        follow.first_after_seq,
        shutdown,
        |holding, shutdown| deliver_while_held(sender.clone(), &follow.leases, holding, shutdown),
    )
    .await;
}

/// Which events are handled: the lease's cursor is the highest number below which every
/// event read was handled (deliveries run concurrently and finish in any order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    /// The last event read and handed out (or passed over): the next read starts after it.
    read: i64,
    /// Events whose delivery has not finished.
    pending: std::collections::BTreeSet<i64>,
}

impl Progress {
    fn after(seq: i64) -> Progress {
        Progress {
            read: seq,
            pending: std::collections::BTreeSet::new(),
        }
    }

    /// Event `seq` was read; `delivering` when a message for it is under way.
    fn read(&mut self, seq: i64, delivering: bool) {
        if delivering {
            self.pending.insert(seq);
        }
        self.read = self.read.max(seq);
    }

    /// The delivery for event `seq` finished (delivered, or finally not and recorded so).
    fn finished(&mut self, seq: i64) {
        self.pending.remove(&seq);
    }

    /// Every event up to this one is handled.
    fn handled(&self) -> i64 {
        self.pending
            .first()
            .map_or(self.read, |first| (first - 1).min(self.read))
    }
}

/// Old events passed over in a row, recorded once as `webhook-skipped`.
struct Skipped {
    first: i64,
    last: i64,
    count: usize,
}

/// The follower while this broker holds the lease (see [`run`]).
async fn deliver_while_held(
    sender: Arc<Sender>,
    leases: &Leases,
    holding: Holding,
    shutdown: CancellationToken,
) {
    let store = &leases.store;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut deliveries: JoinSet<Option<i64>> = JoinSet::new();
    let mut progress = Progress::after(holding.after_seq());
    let mut stored_cursor = holding.after_seq();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'follow: loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
            () = holding.lost() => break,
        }
        while let Some(joined) = deliveries.try_join_next() {
            if let Ok(Some(seq)) = joined {
                progress.finished(seq);
            }
        }
        if progress.handled() > stored_cursor {
            if holding.advance(progress.handled()).await.is_err() {
                break;
            }
            stored_cursor = progress.handled();
        }
        let events = match next_events(store, progress.read).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot read the audit log; trying again");
                continue;
            }
        };
        let mut skipped: Option<Skipped> = None;
        for stored in events {
            if is_too_old(&stored, &sender) {
                let run = skipped.get_or_insert(Skipped {
                    first: stored.seq,
                    last: stored.seq,
                    count: 0,
                });
                run.last = stored.seq;
                run.count += 1;
                continue;
            }
            if let Some(run) = skipped.take() {
                if !record_skipped(&sender, leases, &run).await {
                    continue 'follow;
                }
                progress.read(run.last, false);
            }
            let record = match request_of(store, &stored).await {
                Ok(record) => record,
                Err(e) => {
                    // Not skipped: the same event is read again at the next tick.
                    tracing::warn!(error = %e, "webhook: cannot read a request; trying again");
                    continue 'follow;
                }
            };
            let mut message = Message::of(&stored, record.as_ref());
            if let Some(message) = &mut message {
                // The newest signed checkpoint rides along, so the relay's own log keeps one
                // where the database's writer cannot reach it, without a message of its own.
                match store.newest_checkpoint().await {
                    Ok(Some(checkpoint)) => message.carry_checkpoint(&checkpoint),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook: cannot read the newest checkpoint; sending without it")
                    }
                }
            }
            if let Some(message) = &message {
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => slot,
                    () = shutdown.cancelled() => break 'follow,
                    () = holding.lost() => break 'follow,
                };
                let Ok(slot) = slot else { break 'follow };
                let sender = sender.clone();
                let (store, broker_id) = (store.clone(), leases.broker_id.clone());
                let (shutdown, lost) = (shutdown.clone(), holding.lost_token());
                let message = message.clone();
                let seq = stored.seq;
                deliveries.spawn(async move {
                    let handled =
                        deliver_and_record(&sender, &store, broker_id, &message, &shutdown, &lost)
                            .await;
                    drop(slot);
                    handled.then_some(seq)
                });
            }
            progress.read(stored.seq, message.is_some());
        }
        if let Some(run) = skipped.take()
            && record_skipped(&sender, leases, &run).await
        {
            progress.read(run.last, false);
        }
    }
    if !holding.is_held() {
        // Another broker may send now: nothing more from this one.
        deliveries.abort_all();
        return;
    }
    // Shutting down: attempts under way finish, the others give up their turn.
    while let Some(joined) = deliveries.join_next().await {
        if let Ok(Some(seq)) = joined {
            progress.finished(seq);
        }
    }
    if progress.handled() > stored_cursor {
        let _ = holding.advance(progress.handled()).await;
    }
}

/// Whether `stored` is too old to page anyone for (see [`DEFAULT_MAX_AGE`]).
fn is_too_old(stored: &StoredEvent, sender: &Sender) -> bool {
    sender
        .now()
        .duration_since(stored.event.at)
        .is_ok_and(|age| age > sender.max_age())
}

/// Records that a run of old events was not sent; `false` when that cannot be recorded (they
/// are read again, and passed over again, at the next tick).
async fn record_skipped(sender: &Sender, leases: &Leases, run: &Skipped) -> bool {
    tracing::warn!(url = %sender.origin(), count = run.count, first = run.first, last = run.last, "webhook: events older than {:?} were not sent", sender.max_age());
    let event = AuditEvent::new(
        sender.now(),
        Actor::Broker(leases.broker_id.clone()),
        EventKind::WebhookSkipped,
    )
    .detail("url", sender.origin())
    .detail("events", run.count)
    .detail("first_seq", run.first)
    .detail("last_seq", run.last)
    .detail("older_than", format!("{}s", sender.max_age().as_secs()));
    match leases.store.record(&event).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot record that webhook messages were skipped");
            false
        }
    }
}

async fn next_events(store: &Store, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
    store
        .audit_events(&AuditFilter {
            kinds: FOLLOWED.to_vec(),
            after_seq: after,
            limit: BATCH,
            ..AuditFilter::default()
        })
        .await
}

/// The request `stored` is about, as it is now (for its targets and purpose); `None` when
/// the event names none the store knows.
async fn request_of(
    store: &Store,
    stored: &StoredEvent,
) -> Result<Option<RequestRecord>, StoreError> {
    let Some(id) = stored.event.request.as_deref().and_then(RequestId::parse) else {
        return Ok(None);
    };
    match store.request(&id).await {
        Ok(record) => Ok(Some(record)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Delivers `message`; records a final failure once, as `webhook-failed`. `true` once the
/// message is handled (delivered, or recorded as not); `false` when it is left for the next
/// sender (the broker stopped, or lost its lease, before it was), or its failure could not be
/// recorded.
async fn deliver_and_record(
    sender: &Sender,
    store: &Store,
    broker_id: String,
    message: &Message,
    shutdown: &CancellationToken,
    lost: &CancellationToken,
) -> bool {
    let origin = sender.origin();
    match sender.deliver(message, shutdown, lost).await {
        Outcome::Delivered { attempts } => {
            tracing::info!(event = message.event(), request = message.request(), url = %origin, attempts, "webhook delivered");
            true
        }
        Outcome::Abandoned { attempts } => {
            tracing::info!(event = message.event(), request = message.request(), url = %origin, attempts, "webhook message left for the next sender");
            false
        }
        Outcome::Failed { attempts, error } => {
            tracing::error!(event = message.event(), request = message.request(), url = %origin, attempts, %error, "webhook not delivered; approvers may not have been alerted");
            let mut event = AuditEvent::new(
                sender.now(),
                Actor::Broker(broker_id),
                EventKind::WebhookFailed,
            );
            if let Some(request) = message.request() {
                event = event.request(request);
            }
            if let Some((vendor, technician)) = message.technician() {
                event = event.technician(vendor, technician);
            }
            let event = event
                .detail("event", message.event())
                .detail("delivery", message.delivery())
                .detail("url", &origin)
                .detail("attempts", attempts)
                .detail("error", &error);
            match store.record(&event).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record that a webhook was not delivered");
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Result<Endpoint, WebhookError> {
        Endpoint::parse(url)
    }

    #[test]
    fn https_urls_are_understood_with_their_default_port_and_path() {
        let endpoint = parsed("https://relay.hospital.local/sekisho?room=it").unwrap();
        assert_eq!(endpoint.scheme, Scheme::Https);
        assert_eq!(endpoint.host, "relay.hospital.local");
        assert_eq!(endpoint.port, 443);
        assert_eq!(endpoint.authority, "relay.hospital.local");
        assert_eq!(endpoint.path_and_query, "/sekisho?room=it");
        assert_eq!(endpoint.origin(), "https://relay.hospital.local:443");

        let endpoint = parsed("https://[fd00::7]:8443").unwrap();
        assert_eq!(endpoint.host, "fd00::7");
        assert_eq!(endpoint.port, 8443);
        assert_eq!(endpoint.path_and_query, "/");
        assert_eq!(endpoint.origin(), "https://[fd00::7]:8443");
    }

    #[test]
    fn plain_http_is_accepted_only_to_this_host() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]:9000/",
            "http://127.0.0.53/",
        ] {
            assert_eq!(parsed(url).unwrap().scheme, Scheme::Http, "{url}");
        }
        for (url, host) in [
            ("http://relay.hospital.local/hook", "relay.hospital.local"),
            ("http://10.1.2.3:8080/hook", "10.1.2.3"),
            ("http://localhost.example.com/", "localhost.example.com"),
        ] {
            assert_eq!(
                parsed(url).unwrap_err(),
                WebhookError::PlainHttpNotLoopback { host: host.into() },
                "{url}"
            );
        }
    }

    #[test]
    fn a_bad_url_is_refused_in_one_sentence_that_says_what_to_do() {
        let not_a_url = parsed("https://relay hospital/").unwrap_err();
        assert!(matches!(not_a_url, WebhookError::NotAUrl { .. }));
        assert_eq!(
            parsed("ftp://relay.hospital.local/").unwrap_err(),
            WebhookError::UnsupportedScheme {
                scheme: "ftp://".into()
            }
        );
        assert_eq!(
            parsed("relay.hospital.local/hook").unwrap_err(),
            WebhookError::NotAUrl {
                url: "relay.hospital.local/hook".into(),
                reason: "it does not start with https://".into()
            }
        );
        assert_eq!(
            parsed("https://me:pw@relay.hospital.local/").unwrap_err(),
            WebhookError::CredentialsInUrl
        );
        for error in [
            not_a_url,
            parsed("ftp://relay/").unwrap_err(),
            parsed("http://relay.hospital.local/").unwrap_err(),
        ] {
            let sentence = error.to_string();
            assert!(sentence.starts_with("--web-webhook "), "{sentence}");
            assert!(sentence.ends_with('.'), "{sentence}");
            assert_eq!(
                sentence.matches(". ").count(),
                0,
                "one sentence: {sentence}"
            );
            assert!(!sentence.contains('\n'), "{sentence}");
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_and_a_short_secret_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("hospital-ca.pem");
        let config = WebhookConfig {
            ca_file: Some(missing.clone()),
            ..WebhookConfig::new("https://relay.hospital.local/")
        };
        let Err(WebhookError::CaFile { path, reason }) = Webhook::prepare(&config) else {
            panic!("a missing CA file must be refused");
        };
        assert_eq!(path, missing);
        assert!(reason.contains("cannot read it"), "{reason}");

        std::fs::write(&missing, "not a certificate\n").unwrap();
        let Err(WebhookError::CaFile { reason, .. }) = Webhook::prepare(&config) else {
            panic!("a CA file without certificates must be refused");
        };
        assert!(reason.contains("no PEM certificate"), "{reason}");

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "short\n").unwrap();
        let config = WebhookConfig {
            secret_file: Some(secret),
            ..WebhookConfig::new("http://127.0.0.1:9/")
        };
        let Err(error @ WebhookError::SecretFile { .. }) = Webhook::prepare(&config) else {
            panic!("a short secret must be refused");
        };
        let sentence = error.to_string();
        assert!(sentence.contains("5 byte(s)"), "{sentence}");
        assert!(
            !sentence.contains("short"),
            "the secret is never shown: {sentence}"
        );
    }

    #[test]
    fn the_secret_is_the_file_without_its_final_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123\r\n").unwrap();
        assert_eq!(
            read_secret(&path).unwrap().expose_secret().as_slice(),
            b"0123456789abcdef0123"
        );
    }

    #[test]
    fn the_cursor_stays_below_the_first_delivery_not_finished() {
        let mut progress = Progress::after(10);
        assert_eq!(progress.handled(), 10);
        progress.read(11, true);
        progress.read(12, false);
        progress.read(13, true);
        progress.read(15, true);
        assert_eq!(progress.handled(), 10, "11 is under way");
        progress.finished(13);
        assert_eq!(progress.handled(), 10, "13 finished first: still 11");
        progress.finished(11);
        assert_eq!(progress.handled(), 14, "everything below 15 is done");
        progress.finished(15);
        assert_eq!(progress.handled(), 15);
        progress.read(20, false);
        assert_eq!(progress.handled(), 20);
    }

    #[test]
    fn the_lease_key_tells_two_paths_apart_without_holding_either() {
        let one = parsed("https://relay.hospital.local/hooks/T000/SECRETTOKEN").unwrap();
        let two = parsed("https://relay.hospital.local/hooks/T000/OTHER").unwrap();
        assert_ne!(one.lease_key(), two.lease_key());
        assert!(
            one.lease_key()
                .starts_with("https://relay.hospital.local:443 path-sha256:")
        );
        assert!(!one.lease_key().contains("SECRETTOKEN"));
    }

    #[test]
    fn debug_output_names_no_path_or_token_of_the_url() {
        let config = WebhookConfig::new("https://hooks.example/services/T000/B000/XXXXSECRET");
        let printed = format!("{config:?}");
        assert!(!printed.contains("XXXXSECRET"), "{printed}");
        assert!(printed.contains("https://hooks.example/…"), "{printed}");
    }
}
