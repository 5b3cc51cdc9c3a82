//! The technician's requests on the control stream: ask, list, open with a one-time password.
//!
//! Each handler checks, decides with [`crate::session`], writes through the store, and answers
//! with a message or a refusal. Nothing here holds a connection open or waits on time; that
//! is the connection driver's job.

use std::time::{Duration, SystemTime};

use proto::{ErrorCode, ErrorMessage, RequestAccess};

use super::Shared;
use crate::audit::{self, Actor, AuditEvent, EventKind};
use crate::otp;
use crate::pki::TechnicianIdentity;
use crate::session::{self, NewRequest, RequestId, RequestRecord};
use crate::store::{Opening, RequestFilter, StoreError};
use crate::targets::PinnedTargets;

/// How many requests a status query lists.
const STATUS_LIMIT: i64 = 20;

/// A session the technician just opened.
pub(super) struct OpenedSession {
    pub(super) record: RequestRecord,
    pub(super) end_at: SystemTime,
    pub(super) pinned: PinnedTargets,
}

fn store_refusal(error: &StoreError) -> ErrorMessage {
    tracing::error!(%error, "store failure while serving a technician");
    ErrorMessage::new(
        ErrorCode::StoreUnavailable,
        "The broker cannot record this right now, so it will not do it; try again in a minute, and tell the hospital's IT if it keeps happening.",
    )
}

fn not_found(id: &str) -> ErrorMessage {
    ErrorMessage::new(
        ErrorCode::RequestNotFound,
        format!("You have no request {id}; check the id with `sekisho status`."),
    )
}

/// A new request from `identity`.
pub(super) async fn request_access(
    shared: &Shared,
    identity: &TechnicianIdentity,
    ask: RequestAccess,
) -> Result<RequestRecord, ErrorMessage> {
    let policies = shared.policies.current();
    let defaults = &policies.hospital().defaults;
    let vendor = policies
        .vendor(identity.vendor())
        .ok_or_else(|| not_enrolled(identity))?;
    usable_technician(shared, identity).await?;
    let now = shared.clock.now();
    let input = NewRequest {
        targets: ask.targets,
        purpose: ask.purpose.trim().to_owned(),
        ticket: ask.ticket.trim().to_owned(),
        wanted: Duration::from_secs(u64::from(ask.duration_secs)),
    };
    let answer_by = match session::check_new_request(
        &input,
        vendor,
        shared.hub.lockdown_active(),
        now,
        defaults.answer_within,
    ) {
        Ok(answer_by) => answer_by,
        Err(refusal) => {
            let event = AuditEvent::new(now, technician_actor(identity), EventKind::RequestRefused)
                .technician(identity.vendor(), identity.technician())
                .detail("targets", input.targets.join(","))
                .detail("code", refusal.code.as_str())
                .detail("reason", &refusal.message);
            shared
                .store
                .record(&event)
                .await
                .map_err(|e| store_refusal(&e))?;
            return Err(refusal.to_wire());
        }
    };
    let id =
        RequestId::generate().map_err(|e| ErrorMessage::new(ErrorCode::Internal, e.to_string()))?;
    let approvals_needed = vendor.approvals_for(&input.targets);
    let record = RequestRecord::new(
        id,
        identity.vendor(),
        identity.technician(),
        input,
        now,
        answer_by,
        approvals_needed,
    );
    let event = AuditEvent::new(now, technician_actor(identity), EventKind::RequestMade)
        .request(&record.id)
        .technician(identity.vendor(), identity.technician())
        .detail("targets", record.targets.join(","))
        .detail("purpose", &record.purpose)
        .detail("ticket", &record.ticket)
        .detail("wanted", session::human_duration(record.wanted))
        .detail("answer_by", audit::timestamp(record.answer_by));
    shared
        .store
        .insert_request(&record, now, &event)
        .await
        .map_err(|e| store_refusal(&e))?;
    tracing::info!(
        request = %record.id,
        %identity,
        targets = %record.targets.join(","),
        purpose = %record.purpose,
        ticket = %record.ticket,
        wanted = %session::human_duration(record.wanted),
        "new request waiting for approval"
    );
    Ok(record)
}

/// The technician's record, if they are still enrolled and enabled: the connection was
/// admitted earlier, and a disabling or reset since then must stop what they do next.
async fn usable_technician(
    shared: &Shared,
    identity: &TechnicianIdentity,
) -> Result<crate::store::TechnicianRow, ErrorMessage> {
    let row = match shared
        .store
        .technician(identity.vendor(), identity.technician())
        .await
    {
        Ok(Some(row)) => row,
        Ok(None) => return Err(not_enrolled(identity)),
        Err(e) => return Err(store_refusal(&e)),
    };
    if !row.enabled {
        return Err(ErrorMessage::new(
            ErrorCode::IdentityDisabled,
            "The hospital has disabled your access; contact the hospital's IT.",
        ));
    }
    if !row.is_enrolled() {
        return Err(not_enrolled(identity));
    }
    Ok(row)
}

fn not_enrolled(identity: &TechnicianIdentity) -> ErrorMessage {
    ErrorMessage::new(
        ErrorCode::UnknownIdentity,
        format!(
            "{identity} is not enrolled at this hospital (or was reset); enroll with the token the hospital's IT gives you."
        ),
    )
}

/// `identity`'s own request `id`.
pub(super) async fn own_request(
    shared: &Shared,
    identity: &TechnicianIdentity,
    id: &str,
) -> Result<RequestRecord, ErrorMessage> {
    let request_id = RequestId::parse(id).ok_or_else(|| not_found(id))?;
    match shared.store.request(&request_id).await {
        // Another technician's request is "not found" too: ids are not secrets, but nothing
        // about other people's work is shown.
        Ok(record)
            if record.vendor == identity.vendor() && record.technician == identity.technician() =>
        {
            Ok(record)
        }
        Ok(_) | Err(StoreError::NotFound) => Err(not_found(id)),
        Err(e) => Err(store_refusal(&e)),
    }
}

/// `identity`'s recent requests, newest first.
pub(super) async fn status(
    shared: &Shared,
    identity: &TechnicianIdentity,
) -> Result<Vec<RequestRecord>, ErrorMessage> {
    shared
        .store
        .requests(&RequestFilter {
            vendor: Some(identity.vendor().to_owned()),
            technician: Some(identity.technician().to_owned()),
            states: Vec::new(),
            limit: STATUS_LIMIT,
        })
        .await
        .map_err(|e| store_refusal(&e))
}

/// Opens `id` as a session after checking the request, the policy again, and the OTP.
pub(super) async fn open(
    shared: &Shared,
    identity: &TechnicianIdentity,
    id: &str,
    code: &str,
) -> Result<OpenedSession, ErrorMessage> {
    let record = own_request(shared, identity, id).await?;
    let (vendor_id, technician) = (identity.vendor(), identity.technician());
    let technician_row = usable_technician(shared, identity).await?;
    let policies = shared.policies.current();
    let lockout_after = policies.hospital().defaults.otp_lockout_after;
    if technician_row.locked {
        return Err(locked(lockout_after));
    }
    // The request and the policy first: a code is not spent on a request that cannot open.
    let now = shared.clock.now();
    let decision = session::decide_opening(
        &record,
        policies.vendor(vendor_id),
        &shared.zone,
        shared.hub.lockdown_active(),
        now,
    );
    let end_at = match decision {
        Ok(end_at) => end_at,
        Err(refusal) => {
            let event = AuditEvent::new(
                now,
                technician_actor(identity),
                EventKind::SessionOpenRefused,
            )
            .request(&record.id)
            .technician(vendor_id, technician)
            .detail("code", refusal.code.as_str())
            .detail("reason", &refusal.message);
            shared
                .store
                .record(&event)
                .await
                .map_err(|e| store_refusal(&e))?;
            return Err(refusal.to_wire());
        }
    };

    let binding = identity.to_string();
    let secret = shared
        .sealing_key
        .open(&binding, &technician_row.sealed_totp_secret)
        .map_err(|e| {
            tracing::error!(%identity, error = %e, "cannot open a TOTP secret");
            ErrorMessage::new(
                ErrorCode::Internal,
                "The broker cannot check your one-time password; tell the hospital's IT.",
            )
        })?;
    let step = otp::matching_step(&secret, code, now)
        .map_err(|e| ErrorMessage::new(ErrorCode::Internal, e.to_string()))?;
    let event = AuditEvent::new(now, technician_actor(identity), EventKind::SessionOpened)
        .request(&record.id)
        .technician(vendor_id, technician)
        .detail("targets", record.targets.join(","))
        .detail("end_at", audit::timestamp(end_at))
        .detail("broker", &shared.broker_id);
    // Spending the code and opening the session are one transaction: one sync to disk.
    let opening = match step {
        Some(step) => shared
            .store
            .open_with_code(
                vendor_id,
                technician,
                step,
                &record.id,
                end_at,
                &shared.broker_id,
                now,
                &event,
            )
            .await
            .map_err(|e| store_refusal(&e))?,
        None => Opening::CodeRefused,
    };
    match opening {
        Opening::Opened => {}
        Opening::RequestChanged => {
            return Err(ErrorMessage::new(
                ErrorCode::RequestNotOpenable,
                format!(
                    "{} changed just now (revoked, expired or opened elsewhere); check it with `sekisho status`.",
                    record.id
                ),
            ));
        }
        Opening::CodeRefused => {
            let why = if step.is_some() { "reused" } else { "wrong" };
            let failure = shared
                .store
                .record_otp_failure(
                    vendor_id,
                    technician,
                    record.id.as_str(),
                    why,
                    i64::from(lockout_after),
                    now,
                )
                .await
                .map_err(|e| store_refusal(&e))?;
            tracing::warn!(%identity, request = %record.id, failures = failure.failures, locked = failure.locked, "one-time password refused");
            if failure.locked {
                return Err(locked(lockout_after));
            }
            let left = i64::from(lockout_after) - failure.failures;
            let why = if step.is_some() {
                "was already used; wait for the next code (at most 30 seconds) and type that"
            } else {
                "is not right; type the current code from your authenticator app"
            };
            return Err(ErrorMessage::new(
                ErrorCode::OtpRejected,
                format!(
                    "That one-time password {why} ({left} attempt(s) left before you are locked out)."
                ),
            ));
        }
    }
    let pinned = PinnedTargets::decode(record.pinned.as_deref().unwrap_or_default());
    tracing::info!(%identity, request = %record.id, end_at = %shared.zone.format(end_at), "session opened");
    Ok(OpenedSession {
        record,
        end_at,
        pinned,
    })
}

/// The technician as the audit log names them.
pub(super) fn technician_actor(identity: &TechnicianIdentity) -> Actor {
    Actor::Technician {
        vendor: identity.vendor().to_owned(),
        technician: identity.technician().to_owned(),
    }
}

fn locked(lockout_after: u32) -> ErrorMessage {
    ErrorMessage::new(
        ErrorCode::TechnicianLocked,
        format!(
            "You are locked out after {lockout_after} wrong one-time passwords; ask the hospital's IT to unlock you."
        ),
    )
}
