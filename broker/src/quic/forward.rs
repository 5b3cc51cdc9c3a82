//! One forward: the technician's `Connect`, the decision, the dial, and the splice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use proto::{Connected, ErrorCode, ErrorMessage, Message};
use tokio::net::TcpStream;
use tunnel::frames::{MessageReader, ReadFrameError, write_message};
use tunnel::splice::splice;

use crate::Limits;
use crate::pki::TechnicianIdentity;
use crate::targets::PinnedTargets;

/// What the forwards of one session share.
pub(super) struct SessionContext {
    pub(super) identity: TechnicianIdentity,
    /// The targets the session was approved for.
    pub(super) targets: Vec<String>,
    /// Their addresses, pinned at approval.
    pub(super) pinned: PinnedTargets,
    /// The broker's own listening addresses, never dialled.
    pub(super) own_addresses: Vec<SocketAddr>,
    pub(super) limits: Limits,
}

/// A forward on a connection with no open session.
pub(super) async fn refuse_without_session(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    identity: TechnicianIdentity,
) {
    let refusal = ErrorMessage::new(
        ErrorCode::NoSession,
        "No session is open on this connection; open one with `sekisho connect REQUEST_ID`.",
    );
    refuse(send, recv, refusal, &identity, "?").await;
}

pub(super) async fn serve_forward(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    session: Arc<SessionContext>,
) {
    let identity = &session.identity;
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
            return refuse(send, recv, refusal, identity, "?").await;
        }
        Ok(Err(ReadFrameError::Invalid(e))) => {
            let refusal = ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                format!("The forward did not start with a valid Connect frame ({e})."),
            );
            return refuse(send, recv, refusal, identity, "?").await;
        }
        Ok(Err(e)) => {
            tracing::info!(%identity, error = %e, "forward stream failed before Connect");
            return;
        }
        Err(_) => {
            let refusal = ErrorMessage::new(
                ErrorCode::ProtocolViolation,
                "The forward did not name its target in time.",
            );
            return refuse(send, recv, refusal, identity, "?").await;
        }
    };

    let dialable = if session.targets.contains(&target) {
        session.pinned.dialable(&target, &session.own_addresses)
    } else {
        None
    };
    let addresses = match &dialable {
        Some(Ok(addresses)) => addresses,
        Some(Err(problem)) => {
            let refusal = problem.to_refusal(&target);
            return refuse(send, recv, refusal, identity, &target).await;
        }
        // Not in this session, unknown, or another vendor's: the same answer, so nothing is
        // learned about which targets exist.
        None => {
            let refusal = crate::session::Refusal::target_refused(&target).to_wire();
            return refuse(send, recv, refusal, identity, &target).await;
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
            return refuse(send, recv, refusal, identity, &target).await;
        }
    };
    let dialled = tcp.peer_addr().ok();
    if write_message(&mut send, &Message::Connected(Connected))
        .await
        .is_err()
    {
        return;
    }
    let started = Instant::now();
    tracing::info!(%identity, %target, ?dialled, "forward opened");
    let outcome = splice(tcp, send, recv).await;
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

async fn refuse(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    refusal: ErrorMessage,
    identity: &TechnicianIdentity,
    target: &str,
) {
    tracing::warn!(%identity, %target, code = refusal.code.as_str(), "forward refused");
    let _ = recv.stop(tunnel::close_code::REFUSED);
    let _ = write_message(&mut send, &Message::Error(refusal)).await;
    let _ = send.finish();
}
