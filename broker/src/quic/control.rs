//! The technician's requests on the control stream: ask, list, open with a one-time password.
//!
//! Each handler checks, decides with [`crate::session`], writes through the store, and answers
//! with a message or a refusal. Nothing here holds a connection open or waits on time; that
//! is the connection driver's job.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

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

/// A session the technician just opened, or took up again after a lost connection.
pub(super) struct OpenedSession {
    /// The record as it now stands (active, held by this broker).
    pub(super) record: RequestRecord,
    pub(super) end_at: SystemTime,
    pub(super) pinned: PinnedTargets,
    /// Whether this took up a live session again rather than opening an approved request.
    pub(super) resumed: bool,
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

/// How many requests each technician made in the last minute, on this broker.
pub(crate) struct RequestRate {
    per_minute: u32,
    recent: Mutex<HashMap<TechnicianIdentity, VecDeque<Instant>>>,
}

impl RequestRate {
    pub(crate) fn new(per_minute: u32) -> RequestRate {
        RequestRate {
            per_minute,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `identity` at `now` if they have made fewer than the limit in
    /// the minute before; `false` (and nothing counted) otherwise.
    fn admit(&self, identity: &TechnicianIdentity, now: Instant) -> bool {
        const MINUTE: Duration = Duration::from_secs(60);
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget technicians with nothing in the last minute, so the map stays small.
        if recent.len() > 1024 {
            recent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|last| now.saturating_duration_since(*last) < MINUTE)
            });
        }
        let times = recent.entry(identity.clone()).or_default();
        while times
            .front()
            .is_some_and(|first| now.saturating_duration_since(*first) >= MINUTE)
        {
            times.pop_front();
        }
        if times.len() >= self.per_minute as usize {
            return false;
        }
        times.push_back(now);
        true
    }
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
            let refusal = refusal.to_wire();
            record_request_refused(shared, identity, &input.targets, &refusal, now).await;
            return Err(refusal);
        }
    };
    // Only requests that would be taken count: refusals are on the record at a bounded rate
    // already, and a technician refused during a lockdown may ask as soon as it is lifted.
    if !shared.request_rate.admit(identity, shared.clock.instant()) {
        let refusal = ErrorMessage::new(
            ErrorCode::RateLimited,
            format!(
                "You have made {} requests in the last minute, the most the broker takes; wait a minute and ask again.",
                shared.limits.requests_per_minute
            ),
        );
        record_request_refused(shared, identity, &input.targets, &refusal, now).await;
        return Err(refusal);
    }
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

/// Records a refused request (at a bounded rate, see [`crate::refusals`]).
async fn record_request_refused(
    shared: &Shared,
    identity: &TechnicianIdentity,
    targets: &[String],
    refusal: &ErrorMessage,
    now: SystemTime,
) {
    let event = AuditEvent::new(now, technician_actor(identity), EventKind::RequestRefused)
        .technician(identity.vendor(), identity.technician())
        .detail("targets", targets.join(","))
        .detail("code", refusal.code.as_str())
        .detail("reason", &refusal.message);
    shared.refusals.record(&shared.store, event).await;
}

/// The technician's record, if they are still enrolled and enabled and their vendor too:
/// the connection was admitted earlier, and a disabling or reset since then must stop what
/// they do next (the registry cuts such connections within a hub round; this closes the gap).
async fn usable_technician(
    shared: &Shared,
    identity: &TechnicianIdentity,
) -> Result<crate::store::TechnicianRow, ErrorMessage> {
    match shared.store.vendor_row(identity.vendor()).await {
        Ok(Some(vendor)) if vendor.enabled => {}
        Ok(_) => {
            return Err(ErrorMessage::new(
                ErrorCode::IdentityDisabled,
                format!(
                    "The hospital has disabled access for vendor `{}`; contact the hospital's IT.",
                    identity.vendor()
                ),
            ));
        }
        Err(e) => return Err(store_refusal(&e)),
    }
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

/// Where a session is opened from, for the record: what the technician's own firewall and
/// the hospital's investigators can match against.
pub(super) struct Origin<'a> {
    /// The technician's address and port as the broker sees them.
    pub(super) source: std::net::SocketAddr,
    /// The SHA-256 fingerprint of the certificate they connected with.
    pub(super) certificate_fingerprint: &'a str,
    /// The transport the connection came over (`quic`).
    pub(super) transport: &'static str,
}

/// Opens `id` as a session after checking the request, the policy again, and the OTP.
pub(super) async fn open(
    shared: &Shared,
    identity: &TechnicianIdentity,
    origin: &Origin<'_>,
    id: &str,
    code: &str,
) -> Result<OpenedSession, ErrorMessage> {
    let record = own_request(shared, identity, id).await?;
    if record.stage == session::Stage::Active {
        return resume(shared, identity, origin, record, code).await;
    }
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
        Err(refusal) => return Err(refuse_opening(shared, identity, &record, &refusal, None).await),
    };

    let step = matching_step(shared, identity, &technician_row, code, now)?;
    let event = AuditEvent::new(now, technician_actor(identity), EventKind::SessionOpened)
        .request(&record.id)
        .technician(vendor_id, technician)
        .detail("targets", record.targets.join(","))
        .detail("end_at", audit::timestamp(end_at))
        .detail("broker", &shared.broker_id)
        .detail("source", origin.source.to_string())
        .detail("certificate", origin.certificate_fingerprint);
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
            return Err(refuse_code(shared, identity, &record.id, step.is_some()).await);
        }
    }
    let pinned = PinnedTargets::decode(record.pinned.as_deref().unwrap_or_default());
    tracing::info!(%identity, request = %record.id, end_at = %shared.zone.format(end_at), "session opened");
    let record = RequestRecord {
        stage: session::Stage::Active,
        end_at: Some(end_at),
        opened_at: Some(now),
        broker_id: Some(shared.broker_id.clone()),
        attachment: 1,
        detached_at: None,
        ..record
    };
    Ok(OpenedSession {
        record,
        end_at,
        pinned,
        resumed: false,
    })
}

/// Takes up live session `record` again on this connection after its connection was lost
/// (or while the broker still thinks the old one is there: the old one is let go). A new
/// one-time password is needed unless the vendor's policy allows a short window after the
/// loss; a code given is always checked.
async fn resume(
    shared: &Shared,
    identity: &TechnicianIdentity,
    origin: &Origin<'_>,
    record: RequestRecord,
    code: &str,
) -> Result<OpenedSession, ErrorMessage> {
    let (vendor_id, technician) = (identity.vendor(), identity.technician());
    let technician_row = usable_technician(shared, identity).await?;
    let policies = shared.policies.current();
    if technician_row.locked {
        return Err(locked(policies.hospital().defaults.otp_lockout_after));
    }
    let now = shared.clock.now();
    let terms = match session::decide_resuming(
        &record,
        policies.vendor(vendor_id),
        shared.hub.lockdown_active(),
        now,
    ) {
        Ok(terms) => terms,
        Err(refusal) => {
            return Err(
                refuse_opening(shared, identity, &record, &refusal, Some("resuming")).await,
            );
        }
    };
    let step = if code.is_empty() {
        if terms.code_needed {
            // Asking without a code is how a client learns whether it needs one: no attempt.
            return Err(ErrorMessage::new(
                ErrorCode::OtpRequired,
                format!(
                    "Taking up {} again needs a new one-time password; type the current code from your authenticator app.",
                    record.id
                ),
            ));
        }
        None
    } else {
        match matching_step(shared, identity, &technician_row, code, now)? {
            Some(step) => Some(step),
            None => return Err(refuse_code(shared, identity, &record.id, false).await),
        }
    };
    let attachment = record.attachment + 1;
    let mut event = AuditEvent::new(now, technician_actor(identity), EventKind::SessionResumed)
        .request(&record.id)
        .technician(vendor_id, technician)
        .detail("end_at", audit::timestamp(terms.end_at))
        .detail("broker", &shared.broker_id)
        .detail("source", origin.source.to_string())
        .detail("certificate", origin.certificate_fingerprint)
        .detail("transport", origin.transport)
        .detail("with_code", step.is_some())
        .detail("attachment", attachment);
    if let Some(lost) = record.detached_at {
        let away = now.duration_since(lost).unwrap_or_default();
        event = event.detail("lost_for_s", away.as_secs());
    }
    let resumed = shared
        .store
        .resume_session(
            vendor_id,
            technician,
            step,
            &record.id,
            record.attachment,
            &shared.broker_id,
            now,
            &event,
        )
        .await
        .map_err(|e| store_refusal(&e))?;
    match resumed {
        Opening::Opened => {}
        Opening::RequestChanged => {
            return Err(ErrorMessage::new(
                ErrorCode::RequestNotOpenable,
                format!(
                    "{} changed just now (ended, or taken up on another connection); check it with `sekisho status`.",
                    record.id
                ),
            ));
        }
        Opening::CodeRefused => return Err(refuse_code(shared, identity, &record.id, true).await),
    }
    let pinned = PinnedTargets::decode(record.pinned.as_deref().unwrap_or_default());
    tracing::info!(%identity, request = %record.id, attachment, source = %origin.source, "session resumed");
    let record = RequestRecord {
        broker_id: Some(shared.broker_id.clone()),
        attachment,
        detached_at: None,
        ..record
    };
    Ok(OpenedSession {
        end_at: terms.end_at,
        record,
        pinned,
        resumed: true,
    })
}

/// Records a refused opening (or, `what` says, resumption) of `record`; the refusal to send.
async fn refuse_opening(
    shared: &Shared,
    identity: &TechnicianIdentity,
    record: &RequestRecord,
    refusal: &session::Refusal,
    what: Option<&str>,
) -> ErrorMessage {
    let mut event = AuditEvent::new(
        shared.clock.now(),
        technician_actor(identity),
        EventKind::SessionOpenRefused,
    )
    .request(&record.id)
    .technician(identity.vendor(), identity.technician());
    if let Some(what) = what {
        event = event.detail(what, true);
    }
    let event = event
        .detail("code", refusal.code.as_str())
        .detail("reason", &refusal.message);
    shared.refusals.record(&shared.store, event).await;
    refusal.to_wire()
}

/// The TOTP step `code` is valid for at `now`, if any (spent or not: the store decides).
fn matching_step(
    shared: &Shared,
    identity: &TechnicianIdentity,
    technician_row: &crate::store::TechnicianRow,
    code: &str,
    now: SystemTime,
) -> Result<Option<i64>, ErrorMessage> {
    let secret = shared
        .sealing_key
        .open(&identity.to_string(), &technician_row.sealed_totp_secret)
        .map_err(|e| {
            tracing::error!(%identity, error = %e, "cannot open a TOTP secret");
            ErrorMessage::new(
                ErrorCode::Internal,
                "The broker cannot check your one-time password; tell the hospital's IT.",
            )
        })?;
    otp::matching_step(&secret, code, now)
        .map_err(|e| ErrorMessage::new(ErrorCode::Internal, e.to_string()))
}

/// Records a refused one-time password (`reused`: right but already spent) and says what
/// the technician can do: try again with how many attempts are left, or that they are locked.
async fn refuse_code(
    shared: &Shared,
    identity: &TechnicianIdentity,
    id: &RequestId,
    reused: bool,
) -> ErrorMessage {
    let lockout_after = shared
        .policies
        .current()
        .hospital()
        .defaults
        .otp_lockout_after;
    let failure = match shared
        .store
        .record_otp_failure(
            identity.vendor(),
            identity.technician(),
            id.as_str(),
            if reused { "reused" } else { "wrong" },
            i64::from(lockout_after),
            shared.clock.now(),
        )
        .await
    {
        Ok(failure) => failure,
        Err(e) => return store_refusal(&e),
    };
    tracing::warn!(%identity, request = %id, failures = failure.failures, locked = failure.locked, "one-time password refused");
    if failure.locked {
        return locked(lockout_after);
    }
    let left = i64::from(lockout_after) - failure.failures;
    let why = if reused {
        "was already used; wait for the next code (at most 30 seconds) and type that"
    } else {
        "is not right; type the current code from your authenticator app"
    };
    ErrorMessage::new(
        ErrorCode::OtpRejected,
        format!("That one-time password {why} ({left} attempt(s) left before you are locked out)."),
    )
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
