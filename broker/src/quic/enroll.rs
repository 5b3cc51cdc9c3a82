//! One enrollment connection (ALPN `sekisho-enroll/1`, no client certificate): token, offer,
//! certificate request, certificate. See [`crate::identity`] for the rules; this is only the
//! conversation. Every refusal is sent to the client as one sentence and recorded.

use std::net::SocketAddr;
use std::sync::Arc;

use proto::{ErrorCode, ErrorMessage, Message};
use tunnel::close_code;
use tunnel::frames::{MessageReader, write_message};
use tunnel::link::{Link, SendHalf};

use super::Shared;
use super::admission::HandshakePermit;
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::identity::{self, EnrollmentContext, Refusal};

pub(super) async fn serve(
    connection: Link,
    handshake_slot: HandshakePermit,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    // The whole conversation is bounded like a handshake (its first message within the
    // handshake timeout, all of it within three): an enrollment holds its place among the
    // handshakes under way until it ends, so unauthenticated peers can hold only so many.
    let outcome = tokio::time::timeout(
        shared.limits.handshake_timeout * 3,
        converse(&connection, &shared, peer),
    )
    .await;
    drop(handshake_slot);
    match outcome {
        Ok(Ok(())) => connection.close(close_code::SESSION_CLOSED, b"enrolled"),
        Ok(Err(why)) => {
            tracing::info!(%peer, why, "enrollment connection ended");
            connection.close(close_code::REFUSED, why.as_bytes());
        }
        Err(_) => {
            tracing::warn!(%peer, "enrollment took too long");
            connection.close(close_code::REFUSED, b"enrollment took too long");
        }
    }
}

/// The conversation; `Err` carries what the connection is closed with.
async fn converse(connection: &Link, shared: &Shared, peer: SocketAddr) -> Result<(), String> {
    let mut reader = MessageReader::new();
    let first = tokio::time::timeout(shared.limits.handshake_timeout, async {
        let (send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        let start = reader.expect(&mut recv).await;
        Ok::<_, String>((send, recv, start))
    })
    .await
    .map_err(|_| "the client said nothing in time".to_owned())??;
    let (mut send, mut recv, start) = first;
    let start = match start {
        Ok(Message::EnrollStart(start)) => start,
        Ok(other) => return Err(format!("expected EnrollStart, got {}", other.name())),
        Err(e) => return Err(e.to_string()),
    };
    if start.version != proto::PROTOCOL_VERSION {
        let refusal = Refusal {
            error: ErrorMessage::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "This broker speaks sekisho protocol version {}, your client speaks {}; install the client version the hospital gives you.",
                    proto::PROTOCOL_VERSION,
                    start.version
                ),
            ),
            identity: None,
        };
        return refuse(shared, &mut send, peer, refusal).await;
    }
    let accepted =
        match identity::begin_enrollment(&shared.store, &start.token, shared.clock.now()).await {
            Ok(accepted) => accepted,
            Err(refusal) => return refuse(shared, &mut send, peer, refusal).await,
        };
    let hospital = shared.policies.current().hospital().name.clone();
    write_message(&mut send, &Message::EnrollOffer(accepted.offer(&hospital)))
        .await
        .map_err(|e| e.to_string())?;
    let csr = match reader.expect(&mut recv).await {
        Ok(Message::EnrollCsr(csr)) => csr,
        Ok(other) => return Err(format!("expected EnrollCsr, got {}", other.name())),
        Err(e) => return Err(e.to_string()),
    };
    let context = EnrollmentContext {
        store: &shared.store,
        pki: &shared.pki,
        sealing_key: &shared.sealing_key,
        hospital: &hospital,
        actor: Actor::Broker(shared.broker_id.clone()),
    };
    let enrolled =
        match identity::complete_enrollment(&context, &accepted, &csr.csr_pem, shared.clock.now())
            .await
        {
            Ok(enrolled) => enrolled,
            Err(refusal) => return refuse(shared, &mut send, peer, refusal).await,
        };
    tracing::info!(%peer, identity = %accepted.identity(), "technician enrolled");
    write_message(&mut send, &Message::Enrolled(enrolled))
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    // The certificate and secret are stored already; wait (briefly) until the client has
    // them before closing, so it is not left without what it enrolled for.
    let _ = tokio::time::timeout(shared.limits.handshake_timeout, send.stopped()).await;
    Ok(())
}

/// Records the refusal, sends its sentence, and ends the conversation.
async fn refuse(
    shared: &Shared,
    send: &mut SendHalf,
    peer: SocketAddr,
    refusal: Refusal,
) -> Result<(), String> {
    tracing::warn!(%peer, code = refusal.error.code.as_str(), reason = %refusal.error.message, "enrollment refused");
    let mut event = AuditEvent::new(
        shared.clock.now(),
        Actor::Broker(shared.broker_id.clone()),
        EventKind::EnrollmentRefused,
    );
    if let Some(identity) = &refusal.identity {
        event = event.technician(identity.vendor(), identity.technician());
    }
    let event = event
        .detail("peer", peer)
        .detail("code", refusal.error.code.as_str())
        .detail("reason", &refusal.error.message);
    shared.refusals.record(&shared.store, event).await;
    let told = async {
        let _ = write_message(send, &refusal.error.clone().into()).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    };
    let _ = tokio::time::timeout(shared.limits.handshake_timeout, told).await;
    Err(refusal.error.message)
}
