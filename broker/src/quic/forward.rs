//! One forward: the technician's `Connect`, the decision, the dial, and the splice.
//!
//! Every step is bounded: the `Connect` and every answer to it within the connect-request
//! timeout, the dial within the target-connect timeout, and all of it, the splice included,
//! by the session's cut: when the session ends, the target's socket is reset at once,
//! wherever the forward stood.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use proto::{Connected, ErrorCode, ErrorMessage, Message};
use tokio::net::TcpStream;
use tunnel::frames::{MessageReader, ReadFrameError, write_message};
use tunnel::link::{RecvHalf, SendHalf};
use tunnel::splice::{SpliceEnd, splice_until};

use super::control;
use crate::Limits;
use crate::audit::{AuditEvent, EventKind};
use crate::clock::Clock;
use crate::pki::TechnicianIdentity;
use crate::refusals::RefusalLog;
use crate::session::RequestId;
use crate::store::Store;
use crate::targets::PinnedTargets;
use tokio_util::sync::CancellationToken;

/// How long a refused forward's client gets to take the refusal.
const REFUSAL_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the forwards of one session share.
pub(super) struct SessionContext {
    pub(super) identity: TechnicianIdentity,
    /// The targets the session was approved for.
    pub(super) targets: Vec<String>,
    /// Their addresses, pinned at approval.
    pub(super) pinned: PinnedTargets,
    /// The broker's own listening addresses, never dialled...
    pub(super) own_addresses: Vec<SocketAddr>,
    /// ...except for these targets, whose policy says why they may be.
    pub(super) broker_port_allowed: Vec<String>,
    pub(super) limits: Limits,
    pub(super) audit: ForwardAudit,
    /// Told of every chunk carried, for the idle timeout.
    pub(super) activity: Arc<super::connection::SessionActivity>,
    /// Cancelled when the session is cut.
    pub(super) cut: CancellationToken,
}

/// Records what happens to forwards in the audit log.
pub(super) struct ForwardAudit {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) identity: TechnicianIdentity,
    /// The session's request, when there is a session.
    pub(super) request: Option<RequestId>,
    /// Cancelled when an event cannot be recorded: the session must not go on unrecorded.
    pub(super) failed: CancellationToken,
    /// Where refusals go, at a bounded rate.
    pub(super) refusals: Arc<RefusalLog>,
}

impl ForwardAudit {
    fn event(&self, kind: EventKind, target: &str) -> AuditEvent {
        let mut event = AuditEvent::new(
            self.clock.now(),
            control::technician_actor(&self.identity),
            kind,
        )
        .technician(self.identity.vendor(), self.identity.technician())
        .target(target);
        if let Some(request) = &self.request {
            event = event.request(request);
        }
        event
    }

    /// Records `event`; `false` (and a log line) when the store cannot take it.
    async fn record(&self, event: AuditEvent) -> bool {
        match self.store.record(&event).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(identity = %self.identity, kind = event.kind.as_str(), error = %e, "cannot record a forward event; ending the session");
                self.failed.cancel();
                false
            }
        }
    }
}

/// A forward on a connection with no open session.
pub(super) async fn refuse_without_session(send: SendHalf, recv: RecvHalf, audit: ForwardAudit) {
    let refusal = ErrorMessage::new(
        ErrorCode::NoSession,
        "No session is open on this connection; open one with `sekisho connect REQUEST_ID`.",
    );
    refuse(send, recv, refusal, &audit, "?").await;
}

/// Serves one forward of a live session until it ends or the session is cut.
pub(super) async fn serve_forward(send: SendHalf, recv: RecvHalf, session: Arc<SessionContext>) {
    let cut = session.cut.clone();
    // Until the forward is on the record and told `Connected`, a cut simply drops it (its
    // streams are reset with the connection, a dialled socket is closed).
    let Some(Some(opened)) = cut.run_until_cancelled(open(send, recv, &session)).await else {
        return;
    };
    let Opened {
        tcp,
        send,
        recv,
        target,
        dialled,
    } = opened;
    let identity = &session.identity;
    let audit = &session.audit;
    let dialled_text = dialled.map(|a| a.to_string()).unwrap_or_default();
    let started = Instant::now();
    tracing::info!(%identity, %target, ?dialled, "forward opened");
    let outcome = splice_until(
        tcp,
        send,
        recv,
        Some(session.activity.as_ref()),
        cut.cancelled(),
    )
    .await;
    let end = match &outcome.end {
        SpliceEnd::Finished => "finished".to_owned(),
        SpliceEnd::TcpFailed(why) => format!("target side failed: {why}"),
        SpliceEnd::QuicFailed(why) => format!("technician side failed: {why}"),
        SpliceEnd::Cut => "the session ended".to_owned(),
    };
    audit
        .record(
            audit
                .event(EventKind::ForwardClosed, &target)
                .detail("address", &dialled_text)
                .detail("bytes_to_target", outcome.quic_to_tcp)
                .detail("bytes_from_target", outcome.tcp_to_quic)
                .detail("duration_ms", started.elapsed().as_millis())
                .detail("end", end),
        )
        .await;
    tracing::info!(
        %identity,
        %target,
        ?dialled,
        bytes_to_target = outcome.quic_to_tcp,
        bytes_from_target = outcome.tcp_to_quic,
        duration_ms = started.elapsed().as_millis() as u64,
        end = ?outcome.end,
        "forward closed"
    );
}

/// A forward that reached its target, is on the record, and was told so.
struct Opened {
    tcp: TcpStream,
    send: SendHalf,
    recv: RecvHalf,
    target: String,
    dialled: Option<SocketAddr>,
}

/// The forward's `Connect`, the decision, the dial, the record, and `Connected`; `None` when
/// it was refused (and told why) or the technician went away.
async fn open(mut send: SendHalf, mut recv: RecvHalf, session: &SessionContext) -> Option<Opened> {
    let identity = &session.identity;
    let audit = &session.audit;
    let request = tokio::time::timeout(
        session.limits.connect_request_timeout,
        MessageReader::new().expect(&mut recv),
    )
    .await;
    let target = match request {
        Ok(Ok(Message::Connect(connect))) => connect.target,
        Ok(Ok(other)) => {
            let refusal = ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                format!("A forward must start with Connect, not {}.", other.name()),
            );
            return refused(send, recv, refusal, audit, "?").await;
        }
        Ok(Err(ReadFrameError::Invalid(e))) => {
            let refusal = ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                format!("The forward did not start with a valid Connect frame ({e})."),
            );
            return refused(send, recv, refusal, audit, "?").await;
        }
        Ok(Err(e)) => {
            tracing::info!(%identity, error = %e, "forward stream failed before Connect");
            return None;
        }
        Err(_) => {
            let refusal = ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                "The forward did not name its target in time.",
            );
            return refused(send, recv, refusal, audit, "?").await;
        }
    };

    let dialable = if session.targets.contains(&target) {
        session.pinned.dialable(
            &target,
            &session.own_addresses,
            session.broker_port_allowed.contains(&target),
        )
    } else {
        None
    };
    let addresses = match &dialable {
        Some(Ok(addresses)) => addresses,
        Some(Err(problem)) => {
            let refusal = problem.to_refusal(&target);
            return refused(send, recv, refusal, audit, &target).await;
        }
        // Not in this session, unknown, or another vendor's: the same answer, so nothing is
        // learned about which targets exist.
        None => {
            let refusal = crate::session::Refusal::target_refused(&target).to_wire();
            return refused(send, recv, refusal, audit, &target).await;
        }
    };

    let tcp = match dial(addresses, &session.limits).await {
        Ok(tcp) => tcp,
        Err(reason) => {
            let refusal = ErrorMessage::new(
                ErrorCode::TargetUnreachable,
                format!(
                    "The hospital's `{target}` did not accept the connection ({reason}); try again, or tell the hospital's IT."
                ),
            );
            return refused(send, recv, refusal, audit, &target).await;
        }
    };
    let dialled = tcp.peer_addr().ok();
    let dialled_text = dialled.map(|a| a.to_string()).unwrap_or_default();
    // The broker's side of the connection: what the target's own logs show.
    let local_text = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    // No bytes flow unless the forward is on the record.
    if !audit
        .record(
            audit
                .event(EventKind::ForwardOpened, &target)
                .detail("address", &dialled_text)
                .detail("local", &local_text),
        )
        .await
    {
        let refusal = ErrorMessage::new(
            ErrorCode::StoreUnavailable,
            "The broker cannot record this forward right now, so it will not open it; try again in a minute, and tell the hospital's IT if it keeps happening.",
        );
        refuse(send, recv, refusal, audit, &target).await;
        return None;
    }
    let connected = tokio::time::timeout(
        session.limits.connect_request_timeout,
        write_message(&mut send, &Message::Connected(Connected)),
    )
    .await;
    if !matches!(connected, Ok(Ok(()))) {
        return None;
    }
    Some(Opened {
        tcp,
        send,
        recv,
        target,
        dialled,
    })
}

/// Tries the pinned addresses in order; the first that accepts wins.
async fn dial(addresses: &[SocketAddr], limits: &Limits) -> Result<TcpStream, String> {
    let mut last_error = "no addresses".to_owned();
    for address in addresses {
        match tokio::time::timeout(limits.target_connect_timeout, TcpStream::connect(address)).await
        {
            Ok(Ok(tcp)) => {
                // Interactive protocols (ssh, psql) send small writes; don't hold them back.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "timed out".to_owned(),
        }
    }
    Err(last_error)
}

/// [`refuse`], for [`open`]'s returns.
async fn refused(
    send: SendHalf,
    recv: RecvHalf,
    refusal: ErrorMessage,
    audit: &ForwardAudit,
    target: &str,
) -> Option<Opened> {
    refuse(send, recv, refusal, audit, target).await;
    None
}

/// Records the refusal (at a bounded rate, see [`crate::refusals`]) and tells the client,
/// within the connect-request timeout: a client that gives no credit gets the stream reset.
async fn refuse(
    mut send: SendHalf,
    mut recv: RecvHalf,
    refusal: ErrorMessage,
    audit: &ForwardAudit,
    target: &str,
) {
    tracing::warn!(identity = %audit.identity, %target, code = refusal.code.as_str(), "forward refused");
    if refusal.code != ErrorCode::StoreUnavailable {
        let event = audit
            .event(EventKind::ForwardRefused, target)
            .detail("code", refusal.code.as_str())
            .detail("reason", &refusal.message);
        audit.refusals.record(&audit.store, event).await;
    }
    recv.stop(tunnel::close_code::REFUSED);
    let told = tokio::time::timeout(
        REFUSAL_WRITE_TIMEOUT,
        write_message(&mut send, &Message::Error(refusal)),
    )
    .await;
    match told {
        Ok(_) => {
            let _ = send.finish();
        }
        Err(_) => {
            send.reset(tunnel::close_code::REFUSED);
        }
    }
}
