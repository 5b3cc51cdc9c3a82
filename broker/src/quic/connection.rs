//! One technician's connection, from TLS handshake to close.
//!
//! Order matters: the TLS handshake (bounded in time, holding a handshake slot), the ALPN
//! (an enrollment connection goes to `enroll` instead), the client's `Hello` on the control
//! stream, the certificate registry (issued by us, not revoked or expired, technician and
//! vendor enabled), the vendor's policy and source-network checks, `Welcome`. Then the [`Driver`] serves the control stream (requests,
//! status, watching a request, opening a session with a one-time password) and, once a
//! session is open, enforces its end time with warnings, follows revocations and end-time
//! changes from the store, and carries its forwards. Forwards before a session is open are
//! refused. A refusal before `Welcome` is sent on the control
//! stream as an error frame and repeated as the connection's close reason, so the client can
//! print it whichever arrives first.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::{
    Ended, ErrorCode, ErrorMessage, Extended, Hello, Message, Opened, StatusDone, Warning, Welcome,
};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::close_code;
use tunnel::frames::{MessageReader, write_message};

use super::forward::{self, ForwardAudit, SessionContext};
use super::{Shared, control};
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::to_unix_secs;
use crate::identity::{self, Refusal};
use crate::pki::{TechnicianIdentity, identity_from_certificate};
use crate::policy::IpNetwork;
use crate::session::{self, EndReason, RequestId, RequestRecord, SessionDeadline};
use crate::store::StoreError;

pub(super) async fn serve_connection(
    incoming: quinn::Incoming,
    handshake_slot: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::info!(%peer, error = %e, "connection failed before its handshake");
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
    let leaf = match classify(&connection) {
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
    let (mut control_send, control_recv, hello) = match control {
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
            let actor = identity
                .as_ref()
                .map(control::technician_actor)
                .unwrap_or_else(|| Actor::Broker(shared.broker_id.clone()));
            let mut event =
                AuditEvent::new(shared.clock.now(), actor, EventKind::ConnectionRefused);
            if let Some(identity) = &identity {
                event = event.technician(identity.vendor(), identity.technician());
            }
            let event = event
                .detail("peer", peer)
                .detail("code", refusal.code.as_str())
                .detail("reason", &refusal.message);
            if let Err(e) = shared.store.record(&event).await {
                tracing::error!(error = %e, "cannot record a refused connection");
            }
            let _ = write_message(&mut control_send, &refusal.clone().into()).await;
            let _ = control_send.finish();
            // Wait (briefly) for the error frame to be acknowledged before closing, so the
            // client reads the sentence rather than only a close code.
            let _ =
                tokio::time::timeout(shared.limits.handshake_timeout, control_send.stopped()).await;
            connection.close(close_code::REFUSED, refusal.message.as_bytes());
            return;
        }
    };
    let welcome = Message::Welcome(Welcome {
        version: proto::PROTOCOL_VERSION,
        vendor: identity.vendor().to_owned(),
        technician: identity.technician().to_owned(),
        broker_name: shared.policies.current().hospital().name.clone(),
    });
    if let Err(e) = write_message(&mut control_send, &welcome).await {
        tracing::info!(%peer, %identity, error = %e, "client left before Welcome");
        return;
    }
    tracing::info!(%peer, %identity, client = %hello.client_software, "connection authenticated");
    let policy_updates = shared.policies.subscribe();
    let driver = Driver {
        shared,
        policy_updates,
        identity,
        connection,
        control_send,
        forwards: TaskTracker::new(),
        watching: None,
        session: None,
        store_failed: CancellationToken::new(),
    };
    driver.run(control_recv, shutdown).await;
}

/// A live session on this connection.
struct LiveSession {
    id: RequestId,
    end_at: SystemTime,
    warned: Vec<Duration>,
    updates: watch::Receiver<Option<RequestRecord>>,
    forwards: Arc<SessionContext>,
    /// When a forward last carried bytes (or the session opened).
    activity: Arc<SessionActivity>,
}

/// When a session's forwards last carried bytes, in milliseconds of the broker's clock. The
/// forwards store into it per chunk; the driver reads it to end an idle session.
pub(super) struct SessionActivity {
    clock: Arc<dyn crate::clock::Clock>,
    last_ms: std::sync::atomic::AtomicI64,
}

impl SessionActivity {
    fn new(clock: Arc<dyn crate::clock::Clock>, now: SystemTime) -> SessionActivity {
        SessionActivity {
            clock,
            last_ms: std::sync::atomic::AtomicI64::new(crate::clock::to_unix_ms(now)),
        }
    }

    fn last(&self) -> SystemTime {
        crate::clock::from_unix_ms(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl tunnel::splice::Activity for SessionActivity {
    fn carried(&self) {
        self.last_ms.store(
            crate::clock::to_unix_ms(self.clock.now()),
            std::sync::atomic::Ordering::Relaxed,
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
) -> Option<SystemTime> {
    let policies = shared.policies.current();
    let vendor = policies.vendor(identity.vendor())?;
    Some(session.activity.last() + vendor.access.idle_timeout)
}

/// Drives one authenticated connection: control messages, the watched request, the live
/// session's deadlines and changes, and its forwards.
struct Driver {
    shared: Arc<Shared>,
    /// Told of every policy reload, for what only this connection can check (its address).
    policy_updates: watch::Receiver<Arc<crate::policy::PolicySet>>,
    identity: TechnicianIdentity,
    connection: quinn::Connection,
    control_send: quinn::SendStream,
    forwards: TaskTracker,
    watching: Option<watch::Receiver<Option<RequestRecord>>>,
    session: Option<LiveSession>,
    /// Cancelled by a forward whose events cannot be recorded.
    store_failed: CancellationToken,
}

/// Why the driver stops.
enum Stop {
    /// The connection is gone (closed by the client, lost, or broke the protocol).
    Gone(String),
    /// The session ended on the broker's side; tell the client and close.
    SessionEnded(EndReason, Option<String>, Option<String>),
    /// The broker is stopping.
    Shutdown,
}

impl Driver {
    async fn run(mut self, mut control_recv: quinn::RecvStream, shutdown: CancellationToken) {
        let mut control_reader = MessageReader::new();
        let stop = loop {
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
                    session.end_at,
                    self.shared.clock.now(),
                    &warnings,
                    &session.warned,
                )
            });
            let sleep = match deadline {
                Some(SessionDeadline::Warn { at, .. }) | Some(SessionDeadline::End { at }) => {
                    self.shared.clock.sleep_until(at)
                }
                None => Box::pin(std::future::pending()),
            };
            let idle_at = self
                .session
                .as_ref()
                .and_then(|session| idle_deadline(&self.shared, &self.identity, session));
            let idle = match idle_at {
                Some(at) => self.shared.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                message = control_reader.next(&mut control_recv) => match message {
                    Ok(Some(message)) => {
                        if let Err(stop) = self.handle_message(message).await {
                            break stop;
                        }
                    }
                    Ok(None) => break Stop::Gone("closed by the technician".into()),
                    Err(e) => break Stop::Gone(format!("control stream failed: {e}")),
                },
                stream = self.connection.accept_bi() => match stream {
                    Ok((send, recv)) => self.start_forward(send, recv),
                    Err(e) => break Stop::Gone(format!("connection ended: {e}")),
                },
                () = sleep => {
                    if let Err(stop) = self.handle_deadline(deadline).await {
                        break stop;
                    }
                }
                () = idle => {
                    if let Err(stop) = self.handle_idle().await {
                        break stop;
                    }
                }
                changed = changed(self.session.as_mut().map(|s| &mut s.updates)) => {
                    if let Err(stop) = self.handle_session_change(changed).await {
                        break stop;
                    }
                }
                changed = changed(self.watching.as_mut()) => self.handle_watch_change(changed).await,
                // `shared` holds the sender, so this never fails while the driver lives.
                Ok(()) = self.policy_updates.changed(), if self.session.is_some() => {
                    if let Err(stop) = self.recheck_source_after_reload().await {
                        break stop;
                    }
                }
                () = self.store_failed.cancelled(), if self.session.is_some() => {
                    break Stop::SessionEnded(EndReason::StoreUnavailable, None, None);
                }
                () = shutdown.cancelled() => break Stop::Shutdown,
            }
        };
        self.finish(stop).await;
    }

    async fn send(&mut self, message: &Message) -> Result<(), Stop> {
        write_message(&mut self.control_send, message)
            .await
            .map_err(|e| Stop::Gone(format!("control stream failed: {e}")))
    }

    async fn handle_message(&mut self, message: Message) -> Result<(), Stop> {
        let shared = self.shared.clone();
        match message {
            Message::RequestAccess(ask) => {
                match control::request_access(&shared, &self.identity, ask).await {
                    Ok(record) => self.send(&Message::RequestStatus(record.view())).await,
                    Err(refusal) => self.send(&refusal.into()).await,
                }
            }
            Message::StatusQuery => match control::status(&shared, &self.identity).await {
                Ok(records) => {
                    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
                    for record in records {
                        self.send(&Message::RequestStatus(record.view())).await?;
                    }
                    self.send(&Message::StatusDone(StatusDone { count })).await
                }
                Err(refusal) => self.send(&refusal.into()).await,
            },
            Message::Watch(watch) => {
                match control::own_request(&shared, &self.identity, &watch.request_id).await {
                    Ok(record) => {
                        let view = record.view();
                        self.watching = Some(shared.hub.watch(record));
                        self.send(&Message::RequestStatus(view)).await
                    }
                    Err(refusal) => self.send(&refusal.into()).await,
                }
            }
            Message::Open(open) => {
                if self.session.is_some() {
                    let refusal = ErrorMessage::new(
                        ErrorCode::NoSession,
                        "A session is already open on this connection.",
                    );
                    return self.send(&refusal.into()).await;
                }
                match control::open(&shared, &self.identity, &open.request_id, &open.otp).await {
                    Ok(opened) => {
                        let targets = opened.record.targets.clone();
                        let id = opened.record.id.clone();
                        let mut record = opened.record;
                        record.stage = session::Stage::Active;
                        record.end_at = Some(opened.end_at);
                        let updates = shared.hub.watch(record);
                        let activity = Arc::new(SessionActivity::new(
                            shared.clock.clone(),
                            shared.clock.now(),
                        ));
                        self.watching = None;
                        self.session = Some(LiveSession {
                            id: id.clone(),
                            end_at: opened.end_at,
                            warned: Vec::new(),
                            updates,
                            forwards: Arc::new(SessionContext {
                                identity: self.identity.clone(),
                                targets: targets.clone(),
                                pinned: opened.pinned,
                                own_addresses: shared.own_addresses.clone(),
                                limits: shared.limits.clone(),
                                audit: ForwardAudit {
                                    store: shared.store.clone(),
                                    clock: shared.clock.clone(),
                                    identity: self.identity.clone(),
                                    request: Some(id.clone()),
                                    failed: self.store_failed.clone(),
                                },
                                activity: activity.clone(),
                            }),
                            activity,
                        });
                        self.send(&Message::Opened(Opened {
                            request_id: id.to_string(),
                            end_at: to_unix_secs(opened.end_at),
                            targets,
                        }))
                        .await
                    }
                    Err(refusal) => self.send(&refusal.into()).await,
                }
            }
            other => {
                self.connection.close(
                    close_code::PROTOCOL_VIOLATION,
                    b"unexpected message on the control stream",
                );
                Err(Stop::Gone(format!(
                    "protocol violation: unexpected {} on the control stream",
                    other.name()
                )))
            }
        }
    }

    fn start_forward(&mut self, send: quinn::SendStream, recv: quinn::RecvStream) {
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
                };
                self.forwards
                    .spawn(forward::refuse_without_session(send, recv, audit));
            }
        }
    }

    async fn handle_deadline(&mut self, deadline: Option<SessionDeadline>) -> Result<(), Stop> {
        let now = self.shared.clock.now();
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        match deadline {
            Some(SessionDeadline::Warn { at, left }) if now >= at => {
                session.warned.push(left);
                let seconds_left = session
                    .end_at
                    .duration_since(now)
                    .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                    .unwrap_or(0);
                tracing::info!(identity = %self.identity, request = %session.id, seconds_left, "end-of-session warning");
                let event = AuditEvent::new(
                    now,
                    Actor::Broker(self.shared.broker_id.clone()),
                    EventKind::SessionWarned,
                )
                .request(&session.id)
                .technician(self.identity.vendor(), self.identity.technician())
                .detail("seconds_left", seconds_left);
                if let Err(e) = self.shared.store.record(&event).await {
                    tracing::error!(error = %e, "cannot record an end-of-session warning");
                }
                self.send(&Message::Warning(Warning { seconds_left })).await
            }
            Some(SessionDeadline::End { at }) if now >= at => {
                let id = session.id.clone();
                record_session_end(
                    &self.shared,
                    &self.identity,
                    &id,
                    EndReason::Expired,
                    now,
                    None,
                )
                .await;
                Err(Stop::SessionEnded(EndReason::Expired, None, None))
            }
            // Woken early (the clock was set, or the end time moved): recompute.
            _ => Ok(()),
        }
    }

    /// The idle deadline passed: end the session unless a forward carried bytes since.
    async fn handle_idle(&mut self) -> Result<(), Stop> {
        let now = self.shared.clock.now();
        let Some(session) = self.session.as_ref() else {
            return Ok(());
        };
        match idle_deadline(&self.shared, &self.identity, session) {
            Some(at) if now >= at => {
                let id = session.id.clone();
                let last = Some(session.activity.last());
                record_session_end(
                    &self.shared,
                    &self.identity,
                    &id,
                    EndReason::Idle,
                    now,
                    last,
                )
                .await;
                Err(Stop::SessionEnded(EndReason::Idle, None, None))
            }
            // Traffic since, or the policy changed: recompute.
            _ => Ok(()),
        }
    }

    /// After a reload, ends the live session if the vendor's `source_networks` no longer
    /// include the technician's address. The reload itself ends sessions whose vendor or
    /// targets are gone and pulls in end times, but only this connection knows the address.
    async fn recheck_source_after_reload(&mut self) -> Result<(), Stop> {
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
            Ok(()) => Err(Stop::SessionEnded(
                EndReason::Revoked,
                Some(crate::reload::RELOAD_ACTOR.to_owned()),
                Some(why),
            )),
            // Ended meanwhile by someone else: that change arrives through the hub.
            Err(StoreError::Stale) => Ok(()),
            Err(e) => {
                tracing::error!(identity = %self.identity, error = %e, "cannot end a session whose address a reload no longer allows");
                Err(Stop::SessionEnded(EndReason::StoreUnavailable, None, None))
            }
        }
    }

    async fn handle_session_change(&mut self, changed: Option<RequestRecord>) -> Result<(), Stop> {
        let (Some(record), Some(session)) = (changed, self.session.as_mut()) else {
            return Ok(());
        };
        match record.stage {
            session::Stage::Ended(reason) => {
                Err(Stop::SessionEnded(reason, record.ended_by, record.note))
            }
            session::Stage::Active => match record.end_at {
                Some(end_at) if end_at != session.end_at => {
                    session.end_at = end_at;
                    // Warnings whose moment is still ahead are sent again for the new end.
                    let now = self.shared.clock.now();
                    session
                        .warned
                        .retain(|left| end_at.checked_sub(*left).is_none_or(|at| at <= now));
                    let by = record
                        .extensions
                        .last()
                        .map(|extension| extension.by.clone())
                        .unwrap_or_default();
                    tracing::info!(identity = %self.identity, request = %record.id, end_at = %self.shared.zone.format(end_at), %by, "session end time changed");
                    self.send(&Message::Extended(Extended {
                        end_at: to_unix_secs(end_at),
                        by,
                    }))
                    .await
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    async fn handle_watch_change(&mut self, changed: Option<RequestRecord>) {
        let Some(record) = changed else {
            // The hub dropped the channel; stop watching.
            self.watching = None;
            return;
        };
        if matches!(record.stage, session::Stage::Ended(_)) {
            self.watching = None;
        }
        if self
            .send(&Message::RequestStatus(record.view()))
            .await
            .is_err()
        {
            self.watching = None;
        }
    }

    async fn finish(mut self, stop: Stop) {
        let now = self.shared.clock.now();
        let (reason, by, note, log) = match stop {
            Stop::Gone(why) => (EndReason::Closed, None, None, why),
            Stop::SessionEnded(reason, by, note) => (reason, by, note, reason.as_str().to_owned()),
            Stop::Shutdown => (
                EndReason::BrokerShutdown,
                None,
                None,
                "broker shutdown".to_owned(),
            ),
        };
        if let Some(session) = self.session.take() {
            if matches!(
                reason,
                EndReason::Closed | EndReason::BrokerShutdown | EndReason::StoreUnavailable
            ) {
                // Ours to record; a revocation or lockdown was recorded by whoever made it.
                record_session_end(&self.shared, &self.identity, &session.id, reason, now, None)
                    .await;
            }
            let ended = Message::Ended(Ended {
                reason: reason.as_str().to_owned(),
                message: reason.sentence(by.as_deref(), note.as_deref()),
            });
            if write_message(&mut self.control_send, &ended).await.is_ok() {
                let _ = self.control_send.finish();
                // Closing the connection drops unsent stream data: wait (briefly) until the
                // client has the `Ended` message, so it learns the reason, not just a close.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), self.control_send.stopped()).await;
            }
            tracing::info!(identity = %self.identity, request = %session.id, reason = reason.as_str(), "session ended");
        }
        let code = match reason {
            EndReason::BrokerShutdown => close_code::BROKER_SHUTDOWN,
            EndReason::Closed => close_code::SESSION_CLOSED,
            _ => close_code::SESSION_ENDED,
        };
        let sentence = reason.sentence(by.as_deref(), note.as_deref());
        self.connection.close(code, sentence.as_bytes());
        self.forwards.close();
        self.forwards.wait().await;
        tracing::info!(identity = %self.identity, reason = %log, "connection closed");
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
    match shared
        .store
        .end_request(id, &[session::Stage::Active], reason, None, None, &event)
        .await
    {
        Ok(()) | Err(StoreError::Stale) => {}
        Err(e) => {
            tracing::error!(request = %id, error = %e, "cannot record the end of a session; cutting it anyway and retrying the record");
            // The session is cut now; its record catches up when the store is back, so it
            // never shows as live longer than the store was unwritable (bounded: 10 minutes;
            // after that the next start of this broker ends it).
            let (store, id) = (shared.store.clone(), id.clone());
            tokio::spawn(async move {
                let mut retry = tokio::time::interval(Duration::from_secs(1));
                for _ in 0..600 {
                    retry.tick().await;
                    match store
                        .end_request(&id, &[session::Stage::Active], reason, None, None, &event)
                        .await
                    {
                        Ok(()) | Err(StoreError::Stale) => return,
                        Err(_) => continue,
                    }
                }
                tracing::error!(request = %id, "gave up recording the end of a session");
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
/// Pre-authentication work stays bounded: one small append, and a store that cannot take it
/// only costs a log line.
async fn record_refused_handshake(shared: &Shared, peer: std::net::SocketAddr, why: &str) {
    let event = AuditEvent::new(
        shared.clock.now(),
        Actor::Broker(shared.broker_id.clone()),
        EventKind::ConnectionRefused,
    )
    .detail("peer", peer)
    .detail("stage", "handshake")
    .detail("reason", why);
    if let Err(e) = shared.store.record(&event).await {
        tracing::error!(error = %e, "cannot record a refused handshake");
    }
}

/// Whether `source` may connect: an empty list allows every address.
fn source_allowed(networks: &[IpNetwork], source: IpAddr) -> bool {
    networks.is_empty() || networks.iter().any(|network| network.contains(source))
}

/// What a connection is, by its ALPN and certificate.
enum Peer {
    /// A technician's client, with its certificate (DER), not yet checked in the registry.
    Technician(Vec<u8>),
    /// A client enrolling: no certificate, enrollment messages only.
    Enrolling,
}

/// Tells technicians' connections from enrollments; refuses anything else.
fn classify(connection: &quinn::Connection) -> Result<Peer, ErrorMessage> {
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(alpn) if alpn == proto::ALPN => {}
        Some(alpn) if alpn == proto::ENROLL_ALPN => return Ok(Peer::Enrolling),
        _ => {
            return Err(ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                "This port speaks only the sekisho protocol; use the sekisho client.",
            ));
        }
    }
    let certificates = connection.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let leaf = certificates.as_deref().and_then(|chain| chain.first()).ok_or_else(|| {
        ErrorMessage::new(
            ErrorCode::CertificateMissing,
            "No client certificate was presented; enroll first with `sekisho enroll` and the token the hospital gave you.",
        )
    })?;
    Ok(Peer::Technician(leaf.to_vec()))
}

/// Accepts the control stream and reads the client's `Hello`.
async fn open_control(
    connection: &quinn::Connection,
) -> Result<(quinn::SendStream, quinn::RecvStream, Hello), String> {
    let (send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
    match MessageReader::new().expect(&mut recv).await {
        Ok(Message::Hello(hello)) => Ok((send, recv, hello)),
        Ok(other) => Err(format!("expected Hello, got {}", other.name())),
        Err(e) => Err(e.to_string()),
    }
}
