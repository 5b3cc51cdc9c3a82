//! One technician's connection, from TLS handshake to close.
//!
//! Order matters: the TLS handshake (bounded in time, holding a handshake slot), the ALPN and
//! identity checks, the client's `Hello` on the control stream, the vendor's policy lookup,
//! `Welcome`, and only then forwards. A refusal before `Welcome` is sent on the control
//! stream as an error frame and repeated as the connection's close reason, so the client can
//! print it whichever arrives first.

use std::net::IpAddr;
use std::sync::Arc;

use proto::{ErrorCode, ErrorMessage, Hello, Message, Welcome};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::close_code;
use tunnel::frames::{MessageReader, write_message};

use super::Shared;
use super::forward::{self, SessionContext};
use super::targets::PinnedTargets;
use crate::pki::{TechnicianIdentity, identity_from_certificate};
use crate::policy::IpNetwork;

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
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = match authenticate(&connection) {
        Ok(identity) => identity,
        Err(refusal) => {
            tracing::warn!(%peer, reason = %refusal, "connection refused after handshake");
            connection.close(close_code::REFUSED, refusal.message.as_bytes());
            return;
        }
    };

    let control =
        tokio::time::timeout(shared.limits.handshake_timeout, open_control(&connection)).await;
    drop(handshake_slot);
    let (mut control_send, mut control_recv, hello) = match control {
        Ok(Ok(control)) => control,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %identity, error = %e, "no valid Hello on the control stream");
            connection.close(
                close_code::PROTOCOL_VIOLATION,
                b"the client did not say Hello",
            );
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %identity, "the client did not say Hello in time");
            connection.close(
                close_code::PROTOCOL_VIOLATION,
                b"the client did not say Hello in time",
            );
            return;
        }
    };

    let refusal = if hello.version != proto::PROTOCOL_VERSION {
        Some(ErrorMessage::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "This broker speaks sekisho protocol version {}, your client speaks {}; install the client version the hospital gives you.",
                proto::PROTOCOL_VERSION,
                hello.version
            ),
        ))
    } else {
        match shared.policies.vendor(identity.vendor()) {
            None => Some(ErrorMessage::new(
                ErrorCode::UnknownIdentity,
                format!(
                    "The hospital has no agreement on file for vendor `{}`; ask the hospital's IT to check your vendor's policy.",
                    identity.vendor()
                ),
            )),
            Some(vendor) if !source_allowed(&vendor.access.source_networks, peer.ip()) => {
                Some(ErrorMessage::new(
                    ErrorCode::SourceNotAllowed,
                    format!(
                        "Your address {} is not one your vendor's agreement allows; connect from your company's network, or ask the hospital to add this one.",
                        peer.ip()
                    ),
                ))
            }
            Some(_) => None,
        }
    };
    if let Some(refusal) = refusal {
        tracing::warn!(%peer, %identity, code = refusal.code.as_str(), "session refused");
        let _ = write_message(&mut control_send, &refusal.clone().into()).await;
        let _ = control_send.finish();
        // Wait (briefly) for the error frame to be acknowledged before closing, so the
        // client reads the sentence rather than only a close code.
        let _ = tokio::time::timeout(shared.limits.handshake_timeout, control_send.stopped()).await;
        connection.close(close_code::REFUSED, refusal.message.as_bytes());
        return;
    }
    let Some(vendor) = shared.policies.vendor(identity.vendor()) else {
        return;
    };

    // Names resolve once, now; every forward of this session dials only these addresses.
    let pinned = PinnedTargets::resolve(vendor, &shared.own_addresses).await;
    let welcome = Message::Welcome(Welcome {
        version: proto::PROTOCOL_VERSION,
        vendor: identity.vendor().to_owned(),
        technician: identity.technician().to_owned(),
        broker_name: shared.policies.hospital().name.clone(),
    });
    if let Err(e) = write_message(&mut control_send, &welcome).await {
        tracing::info!(%peer, %identity, error = %e, "client left before Welcome");
        return;
    }
    tracing::info!(%peer, %identity, client = %hello.client_software, "session opened");

    let context = Arc::new(SessionContext {
        identity: identity.clone(),
        pinned,
        limits: shared.limits.clone(),
    });
    let forwards = TaskTracker::new();
    let mut control_reader = MessageReader::new();
    let end = loop {
        tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    forwards.spawn(forward::serve_forward(send, recv, context.clone()));
                }
                Err(e) => break format!("connection ended: {e}"),
            },
            message = control_reader.next(&mut control_recv) => match message {
                Ok(None) => {
                    connection.close(close_code::SESSION_CLOSED, b"session closed by the technician");
                    break "closed by the technician".to_owned();
                }
                Ok(Some(other)) => {
                    connection.close(close_code::PROTOCOL_VIOLATION, b"unexpected message on the control stream");
                    break format!("protocol violation: unexpected {} on the control stream", other.name());
                }
                Err(e) => break format!("control stream failed: {e}"),
            },
            () = shutdown.cancelled() => {
                connection.close(close_code::BROKER_SHUTDOWN, b"the broker is shutting down");
                break "broker shutdown".to_owned();
            }
        }
    };
    forwards.close();
    forwards.wait().await;
    tracing::info!(%peer, %identity, reason = %end, "session ended");
}

/// Whether `source` may connect: an empty list allows every address.
fn source_allowed(networks: &[IpNetwork], source: IpAddr) -> bool {
    networks.is_empty() || networks.iter().any(|network| network.contains(source))
}

/// The technician named by the client certificate, once ALPN is confirmed.
fn authenticate(connection: &quinn::Connection) -> Result<TechnicianIdentity, ErrorMessage> {
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if alpn.as_deref() != Some(proto::ALPN) {
        return Err(ErrorMessage::new(
            ErrorCode::ProtocolViolation,
            "This port speaks only the sekisho protocol; use the sekisho client.",
        ));
    }
    let certificates = connection.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let leaf = certificates.as_deref().and_then(|chain| chain.first()).ok_or_else(|| {
        ErrorMessage::new(
            ErrorCode::UnknownIdentity,
            "No client certificate was presented; run the client with the certificate the hospital issued to you.",
        )
    })?;
    identity_from_certificate(leaf).map_err(|e| {
        ErrorMessage::new(
            ErrorCode::UnknownIdentity,
            format!("Your client certificate cannot be used here ({e}); ask the hospital's IT for a new one."),
        )
    })
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
