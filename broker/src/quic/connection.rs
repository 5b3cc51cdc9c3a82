//! One technician's connection, from TLS handshake to close.
//!
//! Order matters: the TLS handshake (bounded in time, holding a handshake slot), the ALPN
//! (an enrollment connection goes to `enroll` instead), the client's `Hello` on the control
//! stream, the certificate registry (issued by us, not revoked or expired, technician and
//! vendor enabled), the vendor's policy and source-network checks, the bound on connections
//! per technician, `Welcome`. Then the [`Driver`] serves the control stream (requests,
//! status, watching a request, opening a session with a one-time password) and, once a
//! session is open, sends its warnings, follows end-time changes and carries its forwards.
//! Forwards before a session is open are refused. A refusal before `Welcome` is sent on the
//! control stream as an error frame and repeated as the connection's close reason, so the
//! client can print it whichever arrives first.
//!
//! The driver never waits on the peer where that could hold anything up: what it sends goes
//! through the control stream's [`ControlWriter`], every write before `Welcome` has a
//! deadline, and the end of a session is enforced beside it ([`super::enforce`]) and carried
//! out by the connection's [`Cut`], which closes the forwards' target sockets at once and the
//! connection within [`super::cut::GRACE`], whatever the client does.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use proto::{
    Ended, ErrorCode, ErrorMessage, Extended, Hello, Message, Opened, StatusDone, Warning, Welcome,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::close_code;
use tunnel::frames::{MessageReader, ReadFrameError, write_message};
use tunnel::link::{Link, LinkEnd, RecvHalf, SendHalf};

use super::admission::HandshakePermit;
use super::cut::{Cut, CutOrder, GRACE};
use super::enforce::{self, Watched};
use super::forward::{self, ForwardAudit, SessionContext};
use super::registry::Registration;
use super::writer::{ControlWriter, Unsent};
use super::{Shared, control};
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::to_unix_secs;
use crate::identity::{self, Refusal};
use crate::pki::{TechnicianIdentity, identity_from_certificate};
use crate::policy::IpNetwork;
use crate::session::{self, EndReason, RequestId, RequestRecord, SessionDeadline};
use crate::store::StoreError;

/// How long a failed control stream waits for its connection's own end (and its reason)
/// before the failure is taken as a lost connection.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(1);

/// How long forwards may take, after a cut, to put their end on the record before the
/// connection's task stops waiting for them.
const FORWARDS_RECORD_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn serve_connection(
    incoming: quinn::Incoming,
    handshake_slot: HandshakePermit,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            // The client's first flight did not make a handshake: another protocol (ALPN),
            // TLS below 1.3, a malformed hello. rustls has sent the alert that says why.
            tracing::info!(%peer, error = %e, "connection failed before its handshake");
            record_refused_handshake(&shared, peer, &e.to_string()).await;
            return;
        }
    };
    let connection = match tokio::time::timeout(shared.limits.handshake_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            // Certificates from another CA, expired ones and wrong ALPNs end here: rustls
            // has already sent the TLS alert that tells the client why.
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            record_refused_handshake(&shared, peer, &e.to_string()).await;
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    let certificates = connection.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let peer_kind = classify(alpn.as_deref(), certificates.as_deref().map(Vec::as_slice));
    serve_handshaken(
        Link::Quic(connection),
        peer_kind,
        handshake_slot,
        shared,
        shutdown,
    )
    .await;
}

/// A connection whose TLS handshake is done, on either transport: an enrollment goes to
/// `enroll`; a technician says `Hello`, is admitted (the registry, the policy, the bounds) and
/// welcomed, and the [`Driver`] serves them.
pub(super) async fn serve_handshaken(
    connection: Link,
    peer_kind: Result<Peer, ErrorMessage>,
    handshake_slot: HandshakePermit,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let peer = connection.remote_address();
    let leaf = match peer_kind {
        Ok(Peer::Technician(leaf)) => leaf,
        Ok(Peer::Enrolling) => {
            super::enroll::serve(connection, handshake_slot, shared, peer).await;
            return;
        }
        Err(refusal) => {
            tracing::warn!(%peer, reason = %refusal, "connection refused after handshake");
            record_refused_handshake(&shared, peer, &refusal.message).await;
            connection.close(close_code::REFUSED, refusal.message.as_bytes());
            return;
        }
    };

    let control =
        tokio::time::timeout(shared.limits.handshake_timeout, open_control(&connection)).await;
    drop(handshake_slot);
    let (control_send, control_recv, hello) = match control {
        Ok(Ok(control)) => control,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "no valid Hello on the control stream");
            connection.close(
                close_code::PROTOCOL_VIOLATION,
                b"the client did not say Hello",
            );
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "the client did not say Hello in time");
            connection.close(
                close_code::PROTOCOL_VIOLATION,
                b"the client did not say Hello in time",
            );
            return;
        }
    };

    let admitted = if hello.version != proto::PROTOCOL_VERSION {
        Err(Refusal {
            error: ErrorMessage::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "This broker speaks sekisho protocol version {}, your client speaks {}; install the client version the hospital gives you.",
                    proto::PROTOCOL_VERSION,
                    hello.version
                ),
            ),
            identity: identity_from_certificate(&leaf).ok(),
        })
    } else {
        // The registry: issued by us, not revoked, not expired, technician and vendor enabled.
        match identity::admit(&shared.store, &leaf, shared.clock.now()).await {
            Err(refusal) => Err(refusal),
            Ok(identity) => match shared.policies.current().vendor(identity.vendor()) {
                None => Err(Refusal {
                    error: ErrorMessage::new(
                        ErrorCode::UnknownIdentity,
                        format!(
                            "The hospital has no agreement on file for vendor `{}`; ask the hospital's IT to check your vendor's policy.",
                            identity.vendor()
                        ),
                    ),
                    identity: Some(identity),
                }),
                Some(vendor) if !source_allowed(&vendor.access.source_networks, peer.ip()) => {
                    Err(Refusal {
                        error: ErrorMessage::new(
                            ErrorCode::SourceNotAllowed,
                            format!(
                                "Your address {} is not one your vendor's agreement allows; connect from your company's network, or ask the hospital to add this one.",
                                peer.ip()
                            ),
                        ),
                        identity: Some(identity),
                    })
                }
                Some(_) => Ok(identity),
            },
        }
    };
    let identity = match admitted {
        Ok(identity) => identity,
        Err(Refusal {
            error: refusal,
            identity,
        }) => {
            tracing::warn!(%peer, identity = ?identity.as_ref().map(ToString::to_string), code = refusal.code.as_str(), "session refused");
            record_refused_connection(&shared, identity.as_ref(), peer, &refusal).await;
            refuse_and_close(&connection, control_send, &refusal, &shared).await;
            return;
        }
    };
    let fingerprint = crate::pki::fingerprint(&leaf);
    let cut = Cut::new(connection.clone());
    let registration = match shared
        .connections
        .register(&identity, &fingerprint, cut.clone())
    {
        Ok(registration) => registration,
        Err(held) => {
            let refusal = ErrorMessage::new(
                ErrorCode::RateLimited,
                format!(
                    "You already have {held} connections to this broker, the most one technician may hold; close one (another `sekisho connect` or `sekisho status`) and try again."
                ),
            );
            tracing::warn!(%peer, %identity, held, "too many connections of one technician");
            record_refused_connection(&shared, Some(&identity), peer, &refusal).await;
            refuse_and_close(&connection, control_send, &refusal, &shared).await;
            return;
        }
    };
    let writer = ControlWriter::spawn(control_send, cut.clone());
    let welcome = Message::Welcome(Welcome {
        version: proto::PROTOCOL_VERSION,
        vendor: identity.vendor().to_owned(),
        technician: identity.technician().to_owned(),
        broker_name: shared.policies.current().hospital().name.clone(),
    });
    if writer.send(welcome).is_err() {
        tracing::info!(%peer, %identity, "client left before Welcome");
        return;
    }
    tracing::info!(%peer, %identity, client = %hello.client_software, "connection authenticated");
    let policy_updates = shared.policies.subscribe();
    let driver = Driver {
        shared,
        policy_updates,
        identity,
        certificate_fingerprint: fingerprint,
        connection,
        writer,
        cut,
        registration,
        forwards: TaskTracker::new(),
        watching: None,
        session: None,
        store_failed: CancellationToken::new(),
        shutdown,
    };
    driver.run(control_recv).await;
}

/// Records a connection refused after its handshake, by the technician when known.
async fn record_refused_connection(
    shared: &Shared,
    identity: Option<&TechnicianIdentity>,
    peer: std::net::SocketAddr,
    refusal: &ErrorMessage,
) {
    let actor = identity
        .map(control::technician_actor)
        .unwrap_or_else(|| Actor::Broker(shared.broker_id.clone()));
    let mut event = AuditEvent::new(shared.clock.now(), actor, EventKind::ConnectionRefused);
    if let Some(identity) = identity {
        event = event.technician(identity.vendor(), identity.technician());
    }
    let event = event
        .detail("peer", peer)
        .detail("code", refusal.code.as_str())
        .detail("reason", &refusal.message);
    shared.refusals.record(&shared.store, event).await;
}

/// Sends `refusal` on the control stream (bounded in time: a client that gives no credit
/// gets only the close frame), then closes the connection with it.
async fn refuse_and_close(
    connection: &Link,
    mut control_send: SendHalf,
    refusal: &ErrorMessage,
    shared: &Shared,
) {
    let told = async {
        write_message(&mut control_send, &refusal.clone().into()).await?;
        let _ = control_send.finish();
        // Wait for the error frame to be acknowledged before closing, so the client reads
        // the sentence rather than only a close code.
        let _ = control_send.stopped().await;
        Ok::<(), tunnel::link::StreamError>(())
    };
    let _ = tokio::time::timeout(shared.limits.handshake_timeout, told).await;
    connection.close(close_code::REFUSED, refusal.message.as_bytes());
}

/// A live session on this connection.
struct LiveSession {
    id: RequestId,
    /// Which connection of the session this is (1 when opened, one more per resumption).
    attachment: u64,
    /// The end time on the record (shown and sent to the client).
    end_at: SystemTime,
    /// The same end on the monotonic clock, fixed when it was set: warnings are reckoned
    /// from it.
    end_deadline: Instant,
    warned: Vec<Duration>,
    updates: watch::Receiver<Option<RequestRecord>>,
    forwards: Arc<SessionContext>,
    /// When a forward last carried bytes (or the session opened).
    activity: Arc<SessionActivity>,
}

/// When a session's forwards last carried bytes, on the broker's monotonic clock, in
/// milliseconds from when the session opened. The forwards store into it per chunk; the
/// driver reads it to end an idle session.
pub(super) struct SessionActivity {
    clock: Arc<dyn crate::clock::Clock>,
    opened: Instant,
    last_ms: AtomicU64,
}

impl SessionActivity {
    fn new(clock: Arc<dyn crate::clock::Clock>) -> SessionActivity {
        SessionActivity {
            opened: clock.instant(),
            clock,
            last_ms: AtomicU64::new(0),
        }
    }

    /// When bytes last passed, on the monotonic clock.
    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When bytes last passed, on the wall clock as it reads now (for the record).
    fn last_on_wall_clock(&self) -> SystemTime {
        let ago = self.clock.instant().saturating_duration_since(self.last());
        self.clock.now() - ago
    }
}

impl tunnel::splice::Activity for SessionActivity {
    fn carried(&self) {
        let since = self.clock.instant().saturating_duration_since(self.opened);
        self.last_ms.store(
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The idle deadline of a live session under the policies in force: its last traffic plus
/// the vendor's idle timeout (`None` if the vendor has no policy any more: the reload ends
/// such sessions).
fn idle_deadline(
    shared: &Shared,
    identity: &TechnicianIdentity,
    session: &LiveSession,
) -> Option<Instant> {
    let policies = shared.policies.current();
    let vendor = policies.vendor(identity.vendor())?;
    Some(session.activity.last() + vendor.access.idle_timeout)
}

/// Drives one authenticated connection: control messages, the watched request, the live
/// session's warnings and changes, and its forwards.
struct Driver {
    shared: Arc<Shared>,
    /// Told of every policy reload, for what only this connection can check (its address).
    policy_updates: watch::Receiver<Arc<crate::policy::PolicySet>>,
    identity: TechnicianIdentity,
    /// The SHA-256 fingerprint of the certificate the technician connected with.
    certificate_fingerprint: String,
    connection: Link,
    writer: ControlWriter,
    cut: Arc<Cut>,
    registration: Registration,
    forwards: TaskTracker,
    watching: Option<watch::Receiver<Option<RequestRecord>>>,
    session: Option<LiveSession>,
    /// Cancelled by a forward whose events cannot be recorded.
    store_failed: CancellationToken,
    shutdown: CancellationToken,
}

impl Driver {
    async fn run(mut self, mut control_recv: RecvHalf) {
        let mut control_reader = MessageReader::new();
        let mut cut_order = self.cut.order();
        let order = loop {
            let warnings = self
                .shared
                .policies
                .current()
                .hospital()
                .defaults
                .warnings
                .clone();
            let deadline = self.session.as_ref().map(|session| {
                session::next_deadline(
                    session.end_deadline,
                    self.shared.clock.instant(),
                    &warnings,
                    &session.warned,
                )
            });
            // The end itself is the enforcer's; the driver only warns ahead of it.
            let warn = match deadline {
                Some(SessionDeadline::Warn { at, .. }) => self.shared.clock.sleep_until(at),
                _ => Box::pin(std::future::pending()),
            };
            let idle_at = self
                .session
                .as_ref()
                .and_then(|session| idle_deadline(&self.shared, &self.identity, session));
            let idle = match idle_at {
                Some(at) => self.shared.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            let outcome = tokio::select! {
                biased;
                _ = cut_order.changed() => Err(None),
                () = self.shutdown.cancelled() => {
                    Err(Some(CutOrder::new(EndReason::BrokerShutdown)))
                }
                message = control_reader.next(&mut control_recv) => match message {
                    Ok(Some(message)) => self.handle_message(message).await,
                    Ok(None) => Err(Some(CutOrder::with_note(EndReason::Closed, "closed by the technician"))),
                    Err(ReadFrameError::Read(e)) => {
                        // The stream fails a moment before the connection says why (on TCP the
                        // close travels on a stream of its own): give it that moment.
                        let _ = tokio::time::timeout(CLOSE_REASON_WAIT, self.connection.closed()).await;
                        Err(Some(self.gone(&e.to_string())))
                    }
                    Err(e) => Err(Some(CutOrder::with_note(EndReason::Closed, format!("control stream failed: {e}")))),
                },
                stream = self.connection.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        self.start_forward(send, recv);
                        Ok(())
                    }
                    Err(e) => Err(Some(self.gone(&e.to_string()))),
                },
                () = warn => self.handle_warning(deadline),
                () = idle => self.handle_idle().await,
                changed = changed(self.session.as_mut().map(|s| &mut s.updates)) => {
                    self.handle_session_change(changed)
                }
                changed = changed(self.watching.as_mut()) => self.handle_watch_change(changed),
                // `shared` holds the sender, so this never fails while the driver lives.
                Ok(()) = self.policy_updates.changed(), if self.session.is_some() => {
                    self.recheck_source_after_reload().await
                }
            };
            match outcome {
                Ok(()) => {}
                // Cut by the driver itself, or by someone else (the order says why).
                Err(Some(order)) => {
                    self.cut.cut(order);
                    break self.cut.order().borrow().clone();
                }
                Err(None) => break self.cut.order().borrow().clone(),
            }
        };
        // An order is always set once the loop breaks; a closed connection is the fallback.
        self.finish(order.unwrap_or_else(|| CutOrder::new(EndReason::Closed)))
            .await;
    }

    /// Why the connection is gone when it failed under the driver: closed by the technician
    /// only when their client said so (its close frame names the technician); anything else
    /// (a timeout, a reset, a client that vanished or dropped the connection without a word)
    /// is a lost connection, which a session may outlive.
    fn gone(&self, what: &str) -> CutOrder {
        match self.connection.close_reason() {
            Some(LinkEnd::Closed {
                code,
                reason,
                by_peer: true,
            }) if code == close_code::SESSION_CLOSED && !reason.is_empty() => {
                CutOrder::with_note(EndReason::Closed, "closed by the technician")
            }
            Some(end) => CutOrder::with_note(EndReason::ConnectionLost, end.to_string()),
            None => CutOrder::with_note(EndReason::ConnectionLost, what),
        }
    }

    /// Queues `message` for the client; `Err` carries the cut when the client is not
    /// reading or the stream is gone.
    fn send(&self, message: Message) -> Result<(), Option<CutOrder>> {
        match self.writer.send(message) {
            Ok(()) => Ok(()),
            // The writer cut the connection; the order is on the cut.
            Err(Unsent::NotReading) => Err(None),
            Err(Unsent::Gone) => Err(Some(CutOrder::with_note(
                EndReason::Closed,
                "the control stream is gone",
            ))),
        }
    }

    async fn handle_message(&mut self, message: Message) -> Result<(), Option<CutOrder>> {
        let shared = self.shared.clone();
        match message {
            Message::RequestAccess(ask) => {
                match control::request_access(&shared, &self.identity, ask).await {
                    Ok(record) => self.send(Message::RequestStatus(record.view())),
                    Err(refusal) => self.send(refusal.into()),
                }
            }
            Message::StatusQuery => match control::status(&shared, &self.identity).await {
                Ok(records) => {
                    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
                    for record in records {
                        self.send(Message::RequestStatus(record.view()))?;
                    }
                    self.send(Message::StatusDone(StatusDone { count }))
                }
                Err(refusal) => self.send(refusal.into()),
            },
            Message::Watch(watch) => {
                match control::own_request(&shared, &self.identity, &watch.request_id).await {
                    Ok(record) => {
                        let view = record.view();
                        self.watching = Some(shared.hub.watch(record));
                        self.send(Message::RequestStatus(view))
                    }
                    Err(refusal) => self.send(refusal.into()),
                }
            }
            Message::Open(open) => {
                if self.session.is_some() {
                    let refusal = ErrorMessage::new(
                        ErrorCode::NoSession,
                        "A session is already open on this connection.",
                    );
                    return self.send(refusal.into());
                }
                let origin = control::Origin {
                    source: self.connection.remote_address(),
                    certificate_fingerprint: &self.certificate_fingerprint,
                    transport: self.connection.transport().as_str(),
                };
                match control::open(
                    &shared,
                    &self.identity,
                    &origin,
                    &open.request_id,
                    &open.otp,
                )
                .await
                {
                    Ok(opened) => self.start_session(opened),
                    Err(refusal) => self.send(refusal.into()),
                }
            }
            other => {
                self.connection.close(
                    close_code::PROTOCOL_VIOLATION,
                    b"unexpected message on the control stream",
                );
                Err(Some(CutOrder::with_note(
                    EndReason::Closed,
                    format!(
                        "protocol violation: unexpected {} on the control stream",
                        other.name()
                    ),
                )))
            }
        }
    }

    /// The session just opened: its enforcer starts before anything can flow.
    fn start_session(&mut self, opened: control::OpenedSession) -> Result<(), Option<CutOrder>> {
        let shared = self.shared.clone();
        let targets = opened.record.targets.clone();
        let id = opened.record.id.clone();
        let attachment = opened.record.attachment;
        // Watching the record as it now stands also tells a connection that held the session
        // before (on this broker) that it is taken up here; other brokers learn it from the
        // store.
        let enforced = shared.hub.watch(opened.record.clone());
        let updates = shared.hub.watch(opened.record);
        self.registration.hold_session(Some(id.clone()));
        tokio::spawn(enforce::enforce(
            self.cut.clone(),
            shared.clock.clone(),
            Watched {
                record: enforced,
                end_at: opened.end_at,
                attachment,
                store_failed: self.store_failed.clone(),
                shutdown: self.shutdown.clone(),
            },
        ));
        let activity = Arc::new(SessionActivity::new(shared.clock.clone()));
        self.watching = None;
        if opened.resumed {
            tracing::info!(identity = %self.identity, request = %id, attachment, "session taken up again on this connection");
        }
        self.session = Some(LiveSession {
            id: id.clone(),
            attachment,
            end_at: opened.end_at,
            end_deadline: shared.clock.deadline_for(opened.end_at),
            warned: Vec::new(),
            updates,
            forwards: Arc::new(SessionContext {
                identity: self.identity.clone(),
                targets: targets.clone(),
                pinned: opened.pinned,
                own_addresses: shared.own_addresses.clone(),
                broker_port_allowed: shared
                    .policies
                    .current()
                    .vendor(self.identity.vendor())
                    .map(|vendor| {
                        vendor
                            .targets
                            .iter()
                            .filter(|target| target.allow_broker_port.is_some())
                            .map(|target| target.name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                limits: shared.limits.clone(),
                audit: ForwardAudit {
                    store: shared.store.clone(),
                    clock: shared.clock.clone(),
                    identity: self.identity.clone(),
                    request: Some(id.clone()),
                    failed: self.store_failed.clone(),
                    refusals: shared.refusals.clone(),
                },
                activity: activity.clone(),
                cut: self.cut.forwards().clone(),
            }),
            activity,
        });
        self.send(Message::Opened(Opened {
            request_id: id.to_string(),
            end_at: to_unix_secs(opened.end_at),
            targets,
        }))
    }

    fn start_forward(&mut self, send: SendHalf, recv: RecvHalf) {
        match &self.session {
            Some(session) => {
                self.forwards
                    .spawn(forward::serve_forward(send, recv, session.forwards.clone()));
            }
            None => {
                let audit = ForwardAudit {
                    store: self.shared.store.clone(),
                    clock: self.shared.clock.clone(),
                    identity: self.identity.clone(),
                    request: None,
                    failed: self.store_failed.clone(),
                    refusals: self.shared.refusals.clone(),
                };
                self.forwards
                    .spawn(forward::refuse_without_session(send, recv, audit));
            }
        }
    }

    /// A warning's moment came: record it and tell the client (queued; never waits).
    fn handle_warning(
        &mut self,
        deadline: Option<SessionDeadline<Instant>>,
    ) -> Result<(), Option<CutOrder>> {
        let now = self.shared.clock.instant();
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        let Some(SessionDeadline::Warn { at, left }) = deadline else {
            return Ok(());
        };
        if now < at {
            // Woken early: recompute.
            return Ok(());
        }
        session.warned.push(left);
        let seconds_left = session
            .end_deadline
            .saturating_duration_since(now)
            .as_secs();
        let seconds_left = u32::try_from(seconds_left).unwrap_or(u32::MAX);
        tracing::info!(identity = %self.identity, request = %session.id, seconds_left, "end-of-session warning");
        let event = AuditEvent::new(
            self.shared.clock.now(),
            Actor::Broker(self.shared.broker_id.clone()),
            EventKind::SessionWarned,
        )
        .request(&session.id)
        .technician(self.identity.vendor(), self.identity.technician())
        .detail("seconds_left", seconds_left);
        // Recorded beside the driver: a slow store delays the record, not the session.
        let store = self.shared.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.record(&event).await {
                tracing::error!(error = %e, "cannot record an end-of-session warning");
            }
        });
        self.send(Message::Warning(Warning { seconds_left }))
    }

    /// The idle deadline passed: end the session unless a forward carried bytes since.
    async fn handle_idle(&mut self) -> Result<(), Option<CutOrder>> {
        let now = self.shared.clock.instant();
        let Some(session) = self.session.as_ref() else {
            return Ok(());
        };
        match idle_deadline(&self.shared, &self.identity, session) {
            Some(at) if now >= at => {
                let id = session.id.clone();
                let last = Some(session.activity.last_on_wall_clock());
                // Cut first, record after: the record never runs ahead of the wire.
                self.cut.cut(CutOrder::new(EndReason::Idle));
                record_session_end(
                    &self.shared,
                    &self.identity,
                    &id,
                    EndReason::Idle,
                    self.shared.clock.now(),
                    last,
                    None,
                )
                .await;
                Err(None)
            }
            // Traffic since, or the policy changed: recompute.
            _ => Ok(()),
        }
    }

    /// After a reload, ends the live session if the vendor's `source_networks` no longer
    /// include the technician's address. The reload itself ends sessions whose vendor or
    /// targets are gone and pulls in end times, but only this connection knows the address.
    async fn recheck_source_after_reload(&mut self) -> Result<(), Option<CutOrder>> {
        let Some(session) = self.session.as_ref() else {
            return Ok(());
        };
        let peer = self.connection.remote_address().ip();
        let still_allowed = self
            .shared
            .policies
            .current()
            .vendor(self.identity.vendor())
            .is_none_or(|vendor| source_allowed(&vendor.access.source_networks, peer));
        if still_allowed {
            return Ok(());
        }
        let why = format!("the address {peer} is no longer one the vendor's agreement allows");
        self.cut.cut(CutOrder {
            reason: EndReason::Revoked,
            by: Some(crate::reload::RELOAD_ACTOR.to_owned()),
            note: Some(why.clone()),
        });
        let ended = crate::reload::end_disallowed_session(
            &self.shared.store,
            &self.shared.broker_id,
            &session.id,
            (self.identity.vendor(), self.identity.technician()),
            &why,
            self.shared.clock.now(),
        )
        .await;
        match ended {
            // Ended meanwhile by someone else: that is on the record already.
            Ok(()) | Err(StoreError::Stale) => {}
            Err(e) => {
                tracing::error!(identity = %self.identity, error = %e, "cannot record the end of a session whose address a reload no longer allows");
            }
        }
        Err(None)
    }

    /// The session's record changed: a moved end time is told to the client (the enforcer
    /// has moved the deadline itself); an end is the enforcer's to carry out.
    fn handle_session_change(
        &mut self,
        changed: Option<RequestRecord>,
    ) -> Result<(), Option<CutOrder>> {
        let (Some(record), Some(session)) = (changed, self.session.as_mut()) else {
            return Ok(());
        };
        let (session::Stage::Active, Some(end_at)) = (record.stage, record.end_at) else {
            return Ok(());
        };
        if end_at == session.end_at {
            return Ok(());
        }
        session.end_at = end_at;
        session.end_deadline = self.shared.clock.deadline_for(end_at);
        // Warnings whose moment is still ahead are sent again for the new end.
        let now = self.shared.clock.instant();
        let end_deadline = session.end_deadline;
        session
            .warned
            .retain(|left| end_deadline.checked_sub(*left).is_none_or(|at| at <= now));
        let by = record
            .extensions
            .last()
            .map(|extension| extension.by.clone())
            .unwrap_or_default();
        tracing::info!(identity = %self.identity, request = %record.id, end_at = %self.shared.zone.format(end_at), %by, "session end time changed");
        self.send(Message::Extended(Extended {
            end_at: to_unix_secs(end_at),
            by,
        }))
    }

    fn handle_watch_change(
        &mut self,
        changed: Option<RequestRecord>,
    ) -> Result<(), Option<CutOrder>> {
        let Some(record) = changed else {
            // The hub dropped the channel; stop watching.
            self.watching = None;
            return Ok(());
        };
        if matches!(record.stage, session::Stage::Ended(_)) {
            self.watching = None;
        }
        self.send(Message::RequestStatus(record.view()))
    }

    /// After the cut: records the end if it is this connection's to record, tells the client
    /// why (best effort, within [`GRACE`]), closes, and waits (bounded) for the forwards to
    /// put their ends on the record.
    async fn finish(mut self, order: CutOrder) {
        if let Some(session) = self.session.take() {
            let outlives = matches!(
                order.reason,
                EndReason::ConnectionLost | EndReason::BrokerShutdown
            );
            if outlives && self.taken_up_elsewhere(&session) {
                // Another connection holds the session now: nothing of ours to record.
                let _ = self.writer.send(Message::Ended(Ended {
                    reason: EndReason::ConnectionLost.as_str().to_owned(),
                    message: format!(
                        "{} was taken up on another connection; this one is closed.",
                        session.id
                    ),
                }));
                tracing::info!(identity = %self.identity, request = %session.id, "session taken up on another connection");
            } else if outlives && self.may_resume(&session) {
                self.detach(&session, &order).await;
            } else {
                self.end_session(&session, &order).await;
            }
        }
        // The client gets `Ended` if it is reading; the close frame (its sentence) either way.
        self.writer.finish(GRACE).await;
        self.cut.close_now();
        self.registration.hold_session(None);
        self.forwards.close();
        if tokio::time::timeout(FORWARDS_RECORD_WAIT, self.forwards.wait())
            .await
            .is_err()
        {
            tracing::warn!(identity = %self.identity, "forwards still recording their end; not waiting for them");
        }
        tracing::info!(identity = %self.identity, reason = order.reason.as_str(), note = order.note.as_deref().unwrap_or(""), "connection closed");
    }

    /// Whether a later connection has taken the session up (the record carries a later
    /// attachment than this connection's).
    fn taken_up_elsewhere(&self, session: &LiveSession) -> bool {
        session
            .updates
            .borrow()
            .as_ref()
            .is_some_and(|record| record.attachment > session.attachment)
    }

    /// Whether the session may outlive this connection: the vendor's policy allows it, the
    /// end time is ahead, and the hospital has not stopped remote access.
    fn may_resume(&self, session: &LiveSession) -> bool {
        let policies = self.shared.policies.current();
        policies
            .vendor(self.identity.vendor())
            .is_some_and(|vendor| vendor.access.resume.allowed)
            && session.end_at > self.shared.clock.now()
            && !self.shared.hub.lockdown_active()
    }

    /// Lets the session go on the record (`connection-lost`): it stays approved, held by no
    /// connection, until it is taken up again or ends. No `Ended` is sent: the session has
    /// not ended, and a client still listening reconnects. A store that cannot take it ends
    /// the session instead (as this connection's end, retried until recorded).
    async fn detach(&self, session: &LiveSession, order: &CutOrder) {
        let now = self.shared.clock.now();
        let mut event = AuditEvent::new(
            now,
            Actor::Broker(self.shared.broker_id.clone()),
            EventKind::ConnectionLost,
        )
        .request(&session.id)
        .technician(self.identity.vendor(), self.identity.technician())
        .detail("source", self.connection.remote_address())
        .detail("cause", order.reason.as_str())
        .detail("end_at", crate::audit::timestamp(session.end_at))
        .detail(
            "last_traffic",
            crate::audit::timestamp(session.activity.last_on_wall_clock()),
        );
        if let Some(note) = &order.note {
            event = event.detail("note", note);
        }
        match self
            .shared
            .store
            .detach_session(&session.id, session.attachment, &event)
            .await
        {
            Ok(()) => {
                tracing::info!(identity = %self.identity, request = %session.id, cause = order.reason.as_str(), "connection lost; the session stays approved until its end time");
            }
            // Ended meanwhile, or taken up elsewhere: on the record already.
            Err(StoreError::Stale) => {}
            Err(e) => {
                tracing::error!(identity = %self.identity, request = %session.id, error = %e, "cannot record a lost connection; ending the session instead");
                record_session_end(
                    &self.shared,
                    &self.identity,
                    &session.id,
                    order.reason,
                    now,
                    None,
                    order.note.as_deref(),
                )
                .await;
            }
        }
    }

    /// Ends the session with this connection: records the end if it is this connection's to
    /// record, and tells the client why.
    async fn end_session(&self, session: &LiveSession, order: &CutOrder) {
        if matches!(
            order.reason,
            EndReason::Closed
                | EndReason::Expired
                | EndReason::BrokerShutdown
                | EndReason::StoreUnavailable
                | EndReason::ConnectionLost
        ) {
            // Ours to record; a revocation, lockdown or disabling was recorded by whoever
            // made it, an idle end or a reload's by the handler that cut.
            record_session_end(
                &self.shared,
                &self.identity,
                &session.id,
                order.reason,
                self.shared.clock.now(),
                None,
                order.note.as_deref(),
            )
            .await;
        }
        let _ = self.writer.send(Message::Ended(Ended {
            reason: order.reason.as_str().to_owned(),
            message: order.sentence(),
        }));
        tracing::info!(identity = %self.identity, request = %session.id, reason = order.reason.as_str(), "session ended");
    }
}

/// Records that live session `id` ended for `reason`. A session someone else already ended
/// (a revocation that crossed the end time) stays as they recorded it; a store that cannot
/// be written is logged, and the session is cut all the same.
///
/// An idle end also records when the session last carried bytes (`last_traffic`).
async fn record_session_end(
    shared: &Shared,
    identity: &TechnicianIdentity,
    id: &RequestId,
    reason: EndReason,
    now: SystemTime,
    last_traffic: Option<SystemTime>,
    note: Option<&str>,
) {
    let actor = match reason {
        EndReason::Closed => control::technician_actor(identity),
        _ => Actor::Broker(shared.broker_id.clone()),
    };
    let mut event = AuditEvent::new(now, actor, EventKind::SessionEnded)
        .request(id)
        .technician(identity.vendor(), identity.technician())
        .detail("reason", reason.as_str());
    if let Some(last) = last_traffic {
        event = event.detail("last_traffic", crate::audit::timestamp(last));
    }
    if let Some(note) = note {
        event = event.detail("note", note);
    }
    match shared
        .store
        .end_request(id, &[session::Stage::Active], reason, None, None, &event)
        .await
    {
        Ok(()) | Err(StoreError::Stale) => {}
        Err(e) => {
            tracing::error!(request = %id, error = %e, "cannot record the end of a session; cutting it anyway and retrying the record");
            // The session is cut now; its record catches up when the store is back, so it
            // never shows as live longer than the store was unwritable. Kept beside the
            // database too, so a restart meanwhile still records it as what it was.
            shared.pending_ends.remember(id, reason, &event);
            let (store, pending, id) = (
                shared.store.clone(),
                shared.pending_ends.clone(),
                id.clone(),
            );
            tokio::spawn(async move {
                let mut retry = tokio::time::interval(Duration::from_secs(1));
                loop {
                    retry.tick().await;
                    match store
                        .end_request(&id, &[session::Stage::Active], reason, None, None, &event)
                        .await
                    {
                        Ok(()) | Err(StoreError::Stale | StoreError::NotFound) => {
                            pending.forget(&id);
                            return;
                        }
                        Err(_) => continue,
                    }
                }
            });
        }
    }
}

/// Waits for the next value on an optional watch channel; never resolves without one.
async fn changed(
    receiver: Option<&mut watch::Receiver<Option<RequestRecord>>>,
) -> Option<RequestRecord> {
    match receiver {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => receiver.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Records a connection refused before any technician was known (another CA's certificate,
/// an expired one, another protocol): the broker is the actor, the peer's address the subject.
/// Pre-authentication work stays bounded: at most one event per peer address and window
/// ([`crate::refusals`]), and a store that cannot take it only costs a log line.
pub(super) async fn record_refused_handshake(
    shared: &Shared,
    peer: std::net::SocketAddr,
    why: &str,
) {
    let event = AuditEvent::new(
        shared.clock.now(),
        Actor::Broker(shared.broker_id.clone()),
        EventKind::ConnectionRefused,
    )
    .detail("peer", peer)
    .detail("stage", "handshake")
    .detail("reason", why);
    shared.refusals.record(&shared.store, event).await;
}

/// Whether `source` may connect: an empty list allows every address.
fn source_allowed(networks: &[IpNetwork], source: IpAddr) -> bool {
    networks.is_empty() || networks.iter().any(|network| network.contains(source))
}

/// What a connection is, by its ALPN and certificate.
pub(super) enum Peer {
    /// A technician's client, with its certificate (DER), not yet checked in the registry.
    Technician(Vec<u8>),
    /// A client enrolling: no certificate, enrollment messages only.
    Enrolling,
}

/// Tells technicians' connections from enrollments by the handshake's ALPN and the client's
/// certificate chain; refuses anything else. The same on both transports.
pub(super) fn classify(
    alpn: Option<&[u8]>,
    certificates: Option<&[rustls_pki_types::CertificateDer<'static>]>,
) -> Result<Peer, ErrorMessage> {
    match alpn {
        Some(alpn) if alpn == proto::ALPN => {}
        Some(alpn) if alpn == proto::ENROLL_ALPN => return Ok(Peer::Enrolling),
        _ => {
            return Err(ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                "This port speaks only the sekisho protocol; use the sekisho client.",
            ));
        }
    }
    let leaf = certificates.and_then(|chain| chain.first()).ok_or_else(|| {
        ErrorMessage::new(
            ErrorCode::CertificateMissing,
            "No client certificate was presented; enroll first with `sekisho enroll` and the token the hospital gave you.",
        )
    })?;
    Ok(Peer::Technician(leaf.to_vec()))
}

/// Accepts the control stream and reads the client's `Hello`.
async fn open_control(connection: &Link) -> Result<(SendHalf, RecvHalf, Hello), String> {
    let (send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
    match MessageReader::new().expect(&mut recv).await {
        Ok(Message::Hello(hello)) => Ok((send, recv, hello)),
        Ok(other) => Err(format!("expected Hello, got {}", other.name())),
        Err(e) => Err(e.to_string()),
    }
}
