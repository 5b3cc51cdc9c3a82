//! The session lifecycle, as pure decisions: `requested → approved → active → ended`.
//!
//! A [`RequestRecord`] is one request as the store holds it. The functions here decide
//! whether a step may happen (approve, deny, open, extend, expire, end) from the record, the
//! vendor's policy, the lockdown state and the time, all passed as arguments; they never read
//! a clock, the network or the database. The store then makes the step happen as a
//! conditional update (`… WHERE state = 'approved'`), so two approvers clicking at once, or an
//! approval racing an expiry, cannot both win.
//!
//! The state is a database row read by several processes (the broker, the admin CLI, other
//! brokers on a shared PostgreSQL), so it is modelled as a record plus decision functions
//! rather than one Rust type per state: the row is the state, these functions are its rules,
//! and the store's conditional updates are what makes each transition happen once.

pub mod hours;

use std::fmt;
use std::time::{Duration, SystemTime};

use proto::{ErrorCode, ErrorMessage, RequestState};

use crate::policy::VendorPolicy;

pub use hours::{HospitalZone, check_holidays, check_hours, first_disallowed};

/// Longest purpose text accepted, in characters.
pub const MAX_PURPOSE_CHARS: usize = 500;
/// Longest ticket reference accepted, in characters.
pub const MAX_TICKET_CHARS: usize = 100;
/// Most targets one request may name.
pub const MAX_TARGETS: usize = 16;

/// A request's id: `r-` and ten lowercase base32 characters (50 random bits), short enough to
/// read over the phone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh random id.
    pub fn generate() -> Result<RequestId, crate::secret::SealError> {
        const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let mut bytes = [0u8; 10];
        crate::secret::random_bytes(&mut bytes)?;
        let id: String = bytes
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(byte % 32)]))
            .collect();
        Ok(RequestId(format!("r-{id}")))
    }

    /// An id as typed or stored; not checked beyond being non-empty and short.
    pub fn parse(text: &str) -> Option<RequestId> {
        let text = text.trim();
        (!text.is_empty() && text.len() <= 32 && text.is_ascii())
            .then(|| RequestId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a request or session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// An approver said no.
    Denied,
    /// Nobody answered in time, nobody opened it in time, or the session reached its end.
    Expired,
    /// The technician closed the session (or the connection went away).
    Closed,
    /// An approver cut the session.
    Revoked,
    /// The hospital stopped all remote access.
    Lockdown,
    /// No traffic for the idle limit.
    Idle,
    /// The technician or their vendor was disabled.
    TechnicianDisabled,
    /// The technician's certificate and one-time-password secret were revoked (a reset).
    CredentialsRevoked,
    /// The broker holding the session stopped.
    BrokerShutdown,
    /// The broker could not record the session's activity, so it stopped it.
    StoreUnavailable,
    /// The session's connection was lost (network, client crash, broker restart) and the
    /// vendor's policy does not let a session outlive its connection.
    ConnectionLost,
}

impl EndReason {
    /// The stable word stored and sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Denied => "denied",
            EndReason::Expired => "expired",
            EndReason::Closed => "closed",
            EndReason::Revoked => "revoked",
            EndReason::Lockdown => "lockdown",
            EndReason::Idle => "idle",
            EndReason::TechnicianDisabled => "technician-disabled",
            EndReason::CredentialsRevoked => "credentials-revoked",
            EndReason::BrokerShutdown => "broker-shutdown",
            EndReason::StoreUnavailable => "store-unavailable",
            EndReason::ConnectionLost => "connection-lost",
        }
    }

    /// The reason for a stored word.
    pub fn parse(word: &str) -> Option<EndReason> {
        [
            EndReason::Denied,
            EndReason::Expired,
            EndReason::Closed,
            EndReason::Revoked,
            EndReason::Lockdown,
            EndReason::Idle,
            EndReason::TechnicianDisabled,
            EndReason::CredentialsRevoked,
            EndReason::BrokerShutdown,
            EndReason::StoreUnavailable,
            EndReason::ConnectionLost,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == word)
    }

    /// What the technician is told when a live session ends this way.
    pub fn sentence(self, by: Option<&str>, note: Option<&str>) -> String {
        let by = by.map(|by| format!(" by {by}")).unwrap_or_default();
        let note = note
            .filter(|note| !note.is_empty())
            .map(|note| format!(": {note}"))
            .unwrap_or_default();
        match self {
            EndReason::Expired => "The session reached its end time and was closed by the broker; ask for a new session if the work is not finished.".to_owned(),
            EndReason::Revoked => format!("The hospital ended the session{by}{note}."),
            EndReason::Lockdown => format!("The hospital has stopped all remote access (lockdown){note}; call the hospital before trying again."),
            EndReason::Closed => "The session was closed.".to_owned(),
            EndReason::Idle => "The session was closed after a period without traffic.".to_owned(),
            EndReason::TechnicianDisabled => format!("Your access has been disabled by the hospital{by}{note}; contact the hospital's IT."),
            EndReason::CredentialsRevoked => "The hospital revoked your certificate and one-time password (a reset); enroll again with the new token the hospital gives you.".to_owned(),
            EndReason::BrokerShutdown => "The broker shut down, so the session has ended; ask for a new session when it is back.".to_owned(),
            EndReason::Denied => format!("The request was denied{by}{note}."),
            EndReason::ConnectionLost => "The connection to the broker was lost and your vendor's agreement does not let a session outlive its connection, so the session has ended; ask for a new session.".to_owned(),
            EndReason::StoreUnavailable => "The broker can no longer record what this session does, so it has ended it; tell the hospital's IT, and ask for a new session when they have fixed it.".to_owned(),
        }
    }
}

/// Where a request is, with the end reason once over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for approvers.
    Requested,
    /// Approved, not yet opened.
    Approved,
    /// A live session.
    Active,
    /// Over.
    Ended(EndReason),
}

impl Stage {
    /// The word stored in the `state` column.
    pub fn state_word(self) -> &'static str {
        self.wire().as_str()
    }

    /// The state as the protocol names it.
    pub fn wire(self) -> RequestState {
        match self {
            Stage::Requested => RequestState::Requested,
            Stage::Approved => RequestState::Approved,
            Stage::Active => RequestState::Active,
            Stage::Ended(_) => RequestState::Ended,
        }
    }
}

/// One approver's yes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// Who.
    pub approver: String,
    /// When.
    pub approved_at: SystemTime,
    /// The end time they approved.
    pub until: SystemTime,
    /// Why, in their words ('' when they gave none).
    pub comment: String,
}

/// A change of a live session's end time, by a person: an approval of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Who changed it.
    pub by: String,
    /// When.
    pub at: SystemTime,
    /// The new end time.
    pub end_at: SystemTime,
    /// Why, in their words ('' when they gave none).
    pub comment: String,
}

/// A later end time one approver asked for, waiting for more approvers (a vendor whose
/// policy needs several approvals needs as many for an extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionProposal {
    /// Who asked.
    pub approver: String,
    /// When.
    pub at: SystemTime,
    /// The end time they asked for.
    pub end_at: SystemTime,
    /// Why, in their words ('' when they gave none).
    pub comment: String,
}

/// A request as stored: its whole life in one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The id.
    pub id: RequestId,
    /// The vendor of the technician who asked.
    pub vendor: String,
    /// The technician who asked.
    pub technician: String,
    /// Target names asked for.
    pub targets: Vec<String>,
    /// What the work is.
    pub purpose: String,
    /// The technician's ticket reference, possibly empty.
    pub ticket: String,
    /// How long the technician asked for.
    pub wanted: Duration,
    /// When it was asked.
    pub created_at: SystemTime,
    /// When an unanswered request expires.
    pub answer_by: SystemTime,
    /// How many distinct approvers the policy required when it was asked.
    pub approvals_needed: u8,
    /// The yeses so far.
    pub approvals: Vec<ApprovalRecord>,
    /// Changes of the end time while live, oldest first.
    pub extensions: Vec<Extension>,
    /// Later end times asked for that still wait for more approvers, oldest first.
    pub extension_proposals: Vec<ExtensionProposal>,
    /// Where it is.
    pub stage: Stage,
    /// The end time, once approved.
    pub end_at: Option<SystemTime>,
    /// The target addresses pinned at approval.
    pub pinned: Option<String>,
    /// When the session opened.
    pub opened_at: Option<SystemTime>,
    /// Which broker holds the live session.
    pub broker_id: Option<String>,
    /// When it ended.
    pub ended_at: Option<SystemTime>,
    /// Who ended it, if a person did.
    pub ended_by: Option<String>,
    /// The reason a person gave.
    pub note: Option<String>,
    /// How many connections have carried the live session: 1 once opened, one more per
    /// resumption. A connection holds the session only while this is the number it took.
    pub attachment: u64,
    /// When the live session's connection was lost; `None` while a connection holds it
    /// (or before it opened).
    pub detached_at: Option<SystemTime>,
}

impl RequestRecord {
    /// A request just made: `requested`, with no approvals and nothing after yet.
    pub fn new(
        id: RequestId,
        vendor: &str,
        technician: &str,
        ask: NewRequest,
        created_at: SystemTime,
        answer_by: SystemTime,
        approvals_needed: u8,
    ) -> RequestRecord {
        RequestRecord {
            id,
            vendor: vendor.to_owned(),
            technician: technician.to_owned(),
            targets: ask.targets,
            purpose: ask.purpose,
            ticket: ask.ticket,
            wanted: ask.wanted,
            created_at,
            answer_by,
            approvals_needed,
            approvals: Vec::new(),
            extensions: Vec::new(),
            extension_proposals: Vec::new(),
            stage: Stage::Requested,
            end_at: None,
            pinned: None,
            opened_at: None,
            broker_id: None,
            attachment: 0,
            detached_at: None,
            ended_at: None,
            ended_by: None,
            note: None,
        }
    }

    /// The identity that asked, as `vendor/technician`.
    pub fn requester(&self) -> String {
        format!("{}/{}", self.vendor, self.technician)
    }

    /// The request as the technician sees it.
    pub fn view(&self) -> proto::RequestView {
        use crate::clock::to_unix_secs;
        proto::RequestView {
            id: self.id.to_string(),
            state: self.stage.wire(),
            targets: self.targets.clone(),
            purpose: self.purpose.clone(),
            ticket: self.ticket.clone(),
            wanted_secs: u32::try_from(self.wanted.as_secs()).unwrap_or(u32::MAX),
            created_at: to_unix_secs(self.created_at),
            answer_by: to_unix_secs(self.answer_by),
            approvers: self.approvals.iter().map(|a| a.approver.clone()).collect(),
            approvals_needed: self.approvals_needed,
            end_at: self.end_at.map(to_unix_secs).unwrap_or(0),
            ended_at: self.ended_at.map(to_unix_secs).unwrap_or(0),
            end_reason: match self.stage {
                Stage::Ended(reason) => reason.as_str().to_owned(),
                _ => String::new(),
            },
            ended_by: self.ended_by.clone().unwrap_or_default(),
            note: self.note.clone().unwrap_or_default(),
        }
    }
}

/// What a technician asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// Target names.
    pub targets: Vec<String>,
    /// What the work is.
    pub purpose: String,
    /// A ticket reference, possibly empty.
    pub ticket: String,
    /// How long the work needs.
    pub wanted: Duration,
}

/// A refusal of a step, as a code and a sentence; mapped to the wire and the CLI alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The stable code.
    pub code: ErrorCode,
    /// One sentence saying what happened and what to do.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The refusal as an error frame.
    pub fn to_wire(&self) -> ErrorMessage {
        ErrorMessage::new(self.code, self.message.clone())
    }

    /// The answer for a target the vendor may not reach, the same for every such name.
    pub fn target_refused(target: &str) -> Refusal {
        Refusal::new(
            ErrorCode::TargetRefused,
            format!(
                "`{target}` is not a target you may reach; check the name, or ask the hospital to add it to your vendor's agreement."
            ),
        )
    }

    fn lockdown() -> Refusal {
        Refusal::new(
            ErrorCode::Lockdown,
            "The hospital has stopped all remote access (lockdown); no requests or sessions are possible until it is lifted. Call the hospital.",
        )
    }
}

/// The time a request stays unanswered before it expires, and the start of the answer window.
pub fn check_new_request(
    input: &NewRequest,
    vendor: &VendorPolicy,
    lockdown: bool,
    now: SystemTime,
    answer_within: Duration,
) -> Result<SystemTime, Refusal> {
    if lockdown {
        return Err(Refusal::lockdown());
    }
    if input.targets.is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "Name at least one target with --target.",
        ));
    }
    if input.targets.len() > MAX_TARGETS {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!("A request may name at most {MAX_TARGETS} targets."),
        ));
    }
    if let Some(unknown) = input
        .targets
        .iter()
        .find(|name| vendor.target(name).is_none())
    {
        return Err(Refusal::target_refused(unknown));
    }
    let purpose = input.purpose.trim();
    if purpose.is_empty() || purpose.chars().count() > MAX_PURPOSE_CHARS {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!("Say what the work is with --purpose (1 to {MAX_PURPOSE_CHARS} characters)."),
        ));
    }
    if input.ticket.chars().count() > MAX_TICKET_CHARS {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!("A ticket reference may be at most {MAX_TICKET_CHARS} characters."),
        ));
    }
    if input.wanted.is_zero() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "Say how long the work needs with --for (e.g. 30m, 1h).",
        ));
    }
    let max = vendor.access.max_session;
    if input.wanted > max {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "Your vendor's agreement allows sessions of at most {}; ask for --for {} or less.",
                human_duration(max),
                human_duration(max)
            ),
        ));
    }
    Ok(now + answer_within)
}

/// What an approval does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// The end time this approver approved.
    pub until: SystemTime,
    /// Whether this approval is the last one needed.
    pub completes: bool,
}

/// Decides whether `approver` may approve `record` until `until`.
pub fn decide_approval(
    record: &RequestRecord,
    approver: &str,
    until: SystemTime,
    vendor: Option<&VendorPolicy>,
    zone: &HospitalZone,
    lockdown: bool,
    now: SystemTime,
) -> Result<ApprovalDecision, Refusal> {
    expect_pending(record, now)?;
    if lockdown {
        return Err(Refusal::lockdown());
    }
    check_not_self(record, approver)?;
    if record.approvals.iter().any(|a| a.approver == approver) {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "{approver} has already approved {}; it needs {} different approvers.",
                record.id, record.approvals_needed
            ),
        ));
    }
    let vendor = vendor.ok_or_else(|| vendor_gone(record))?;
    if let Some(gone) = record.targets.iter().find(|t| vendor.target(t).is_none()) {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "Target `{gone}` is no longer in {}'s policy; deny this request.",
                record.vendor
            ),
        ));
    }
    check_span(vendor, zone, now, until)?;
    Ok(ApprovalDecision {
        until,
        completes: record.approvals.len() + 1 >= usize::from(record.approvals_needed),
    })
}

/// Decides whether `approver` may deny `record`.
pub fn decide_denial(
    record: &RequestRecord,
    approver: &str,
    reason: &str,
    now: SystemTime,
) -> Result<(), Refusal> {
    expect_pending(record, now)?;
    check_not_self(record, approver)?;
    if reason.trim().is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "Give the technician a reason with --reason.",
        ));
    }
    Ok(())
}

/// Decides whether the technician may open `record` now; returns the session's end time,
/// pulled in if the policy has tightened since approval.
pub fn decide_opening(
    record: &RequestRecord,
    vendor: Option<&VendorPolicy>,
    zone: &HospitalZone,
    lockdown: bool,
    now: SystemTime,
) -> Result<SystemTime, Refusal> {
    if lockdown {
        return Err(Refusal::lockdown());
    }
    let end_at = match (record.stage, record.end_at) {
        (Stage::Approved, Some(end_at)) if end_at > now => end_at,
        (Stage::Approved, _) => {
            return Err(Refusal::new(
                ErrorCode::RequestNotOpenable,
                format!(
                    "{} reached its end time before it was opened; ask for a new session.",
                    record.id
                ),
            ));
        }
        (Stage::Requested, _) => {
            return Err(Refusal::new(
                ErrorCode::RequestNotOpenable,
                format!(
                    "{} is not approved yet; wait for the hospital's answer.",
                    record.id
                ),
            ));
        }
        (Stage::Active, _) => {
            return Err(Refusal::new(
                ErrorCode::RequestNotOpenable,
                format!("{} is already open in another session.", record.id),
            ));
        }
        (Stage::Ended(reason), _) => {
            return Err(Refusal::new(
                ErrorCode::RequestNotOpenable,
                format!(
                    "{} is over ({}); ask for a new session.",
                    record.id,
                    reason.as_str()
                ),
            ));
        }
    };
    // The policy may have tightened since approval: check it again.
    let vendor = vendor.ok_or_else(|| vendor_gone(record))?;
    if let Some(gone) = record.targets.iter().find(|t| vendor.target(t).is_none()) {
        return Err(Refusal::target_refused(gone));
    }
    let end_at = end_at.min(now + vendor.access.max_session);
    check_span(vendor, zone, now, end_at)?;
    Ok(end_at)
}

/// How a live session may be taken up again on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeTerms {
    /// The session's end time, unchanged by resuming.
    pub end_at: SystemTime,
    /// Whether a new one-time password is needed: always, unless the vendor's policy gives
    /// a window after the loss and the loss was recorded within it.
    pub code_needed: bool,
}

/// Decides whether live session `record` may be taken up again on a new connection at `now`.
/// The technician's identity, certificate and address were checked when they connected.
pub fn decide_resuming(
    record: &RequestRecord,
    vendor: Option<&VendorPolicy>,
    lockdown: bool,
    now: SystemTime,
) -> Result<ResumeTerms, Refusal> {
    if lockdown {
        return Err(Refusal::lockdown());
    }
    let end_at = match (record.stage, record.end_at) {
        (Stage::Active, Some(end_at)) if end_at > now => end_at,
        (Stage::Active, _) => {
            return Err(Refusal::new(
                ErrorCode::RequestNotOpenable,
                format!(
                    "{} has reached its end time; ask for a new session if the work is not finished.",
                    record.id
                ),
            ));
        }
        _ => {
            return Err(Refusal::new(
                ErrorCode::RequestNotOpenable,
                format!("{} is not a live session.", record.id),
            ));
        }
    };
    let vendor = vendor.ok_or_else(|| vendor_gone(record))?;
    if !vendor.access.resume.allowed {
        return Err(Refusal::new(
            ErrorCode::RequestNotOpenable,
            format!(
                "{} is open on another connection, and your vendor's agreement does not let a session move to a new one; close the other (Ctrl-C where `sekisho connect` runs), or check with `sekisho status`.",
                record.id
            ),
        ));
    }
    if let Some(gone) = record.targets.iter().find(|t| vendor.target(t).is_none()) {
        return Err(Refusal::target_refused(gone));
    }
    let window = vendor.access.resume.without_code_within;
    let within_window =
        !window.is_zero() && record.detached_at.is_some_and(|lost| now < lost + window);
    Ok(ResumeTerms {
        end_at,
        code_needed: !within_window,
    })
}

/// What a change of a live session's end time does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionDecision {
    /// An earlier end: any approver may bring it forward, alone and at once, as they may
    /// revoke.
    Shorten(SystemTime),
    /// A later end that enough different approvers have now asked for: it moves to the
    /// earliest end any of them gave.
    Extend {
        /// The new end.
        end_at: SystemTime,
        /// Everyone whose ask counts, this approver last.
        approvers: Vec<String>,
    },
    /// A later end that still needs more approvers; it waits on the record.
    Propose {
        /// Approvers who have asked, this one included.
        have: usize,
        /// Approvers needed.
        need: usize,
    },
}

/// Decides what `by` moving live session `record`'s end to `new_end` does. A later end
/// follows the rules of an approval: the whole session, from its opening to the new end,
/// within the vendor's `max_session`, hours and holidays, and as many different approvers as
/// the request needed (or the vendor's policy needs now, if more).
pub fn decide_extension(
    record: &RequestRecord,
    by: &str,
    new_end: SystemTime,
    vendor: Option<&VendorPolicy>,
    zone: &HospitalZone,
    now: SystemTime,
) -> Result<ExtensionDecision, Refusal> {
    if record.stage != Stage::Active {
        return Err(Refusal::new(
            ErrorCode::RequestNotOpenable,
            format!(
                "{} is not a live session ({}).",
                record.id,
                record.stage.state_word()
            ),
        ));
    }
    check_not_self(record, by)?;
    if new_end <= now {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "The end time has already passed; choose a later one.",
        ));
    }
    let vendor = vendor.ok_or_else(|| vendor_gone(record))?;
    let current_end = record.end_at.unwrap_or(now);
    if new_end <= current_end {
        return Ok(ExtensionDecision::Shorten(new_end));
    }
    let opened_at = record.opened_at.unwrap_or(now);
    let max = vendor.access.max_session;
    // Counted from the opening, not from now: extending again and again cannot make a
    // session longer than the agreement allows. A second of slack, as in `check_span`.
    if new_end
        .duration_since(opened_at)
        .is_ok_and(|length| length > max + Duration::from_secs(1))
    {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "{}'s agreement allows sessions of at most {} and {} opened at {}, so it can end at {} at the latest.",
                vendor.name,
                human_duration(max),
                record.id,
                zone.format(opened_at),
                zone.format(opened_at + max)
            ),
        ));
    }
    check_span(vendor, zone, opened_at, new_end)?;
    let need = usize::from(
        record
            .approvals_needed
            .max(vendor.approvals_for(&record.targets)),
    );
    // Asks for an end later than the current one still count; one made before the end was
    // brought forward past it does too, at its own (earlier) end.
    let others: Vec<&ExtensionProposal> = record
        .extension_proposals
        .iter()
        .filter(|proposal| proposal.approver != by && proposal.end_at > now)
        .collect();
    if others.len() + 1 < need {
        return Ok(ExtensionDecision::Propose {
            have: others.len() + 1,
            need,
        });
    }
    let end_at = others
        .iter()
        .map(|proposal| proposal.end_at)
        .fold(new_end, SystemTime::min);
    let mut approvers: Vec<String> = others.iter().map(|p| p.approver.clone()).collect();
    approvers.push(by.to_owned());
    Ok(ExtensionDecision::Extend { end_at, approvers })
}

/// The end a record has reached at `now` without anyone acting: an unanswered request, an
/// approved request never opened, or a live session at its end time.
pub fn due_expiry(record: &RequestRecord, now: SystemTime) -> Option<EndReason> {
    let due = match record.stage {
        Stage::Requested => now >= record.answer_by,
        Stage::Approved | Stage::Active => record.end_at.is_some_and(|end| now >= end),
        Stage::Ended(_) => false,
    };
    due.then_some(EndReason::Expired)
}

/// A point in time a deadline is reckoned in: the wall clock (`SystemTime`, as the record
/// speaks) or the monotonic clock (`Instant`, as the broker waits).
pub trait Moment: Copy + Ord {
    /// This moment moved `by` earlier, if representable.
    fn earlier_by(self, by: Duration) -> Option<Self>;
}

impl Moment for SystemTime {
    fn earlier_by(self, by: Duration) -> Option<SystemTime> {
        self.checked_sub(by)
    }
}

impl Moment for std::time::Instant {
    fn earlier_by(self, by: Duration) -> Option<std::time::Instant> {
        self.checked_sub(by)
    }
}

/// The next thing a live session's driver must do, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionDeadline<T = SystemTime> {
    /// Warn the technician that `left` remains, at `at`.
    Warn {
        /// When.
        at: T,
        /// How much time will be left then.
        left: Duration,
    },
    /// Cut the session at `at`.
    End {
        /// When.
        at: T,
    },
}

/// The next deadline of a live session ending at `end_at`, given the hospital's `warnings`
/// (furthest first) and those already sent. Warnings whose moment has passed are skipped,
/// not sent late.
pub fn next_deadline<T: Moment>(
    end_at: T,
    now: T,
    warnings: &[Duration],
    warned: &[Duration],
) -> SessionDeadline<T> {
    warnings
        .iter()
        .filter(|left| !warned.contains(left))
        .filter_map(|left| {
            let at = end_at.earlier_by(*left)?;
            (at > now).then_some(SessionDeadline::Warn { at, left: *left })
        })
        .next()
        .unwrap_or(SessionDeadline::End { at: end_at })
}

fn expect_pending(record: &RequestRecord, now: SystemTime) -> Result<(), Refusal> {
    match record.stage {
        Stage::Requested if now < record.answer_by => Ok(()),
        Stage::Requested => Err(Refusal::new(
            ErrorCode::RequestNotOpenable,
            format!(
                "{} waited too long for an answer and has expired.",
                record.id
            ),
        )),
        Stage::Ended(reason) => Err(Refusal::new(
            ErrorCode::RequestNotOpenable,
            format!(
                "{} is already over ({}); only pending requests can be answered.",
                record.id,
                reason.as_str()
            ),
        )),
        other => Err(Refusal::new(
            ErrorCode::RequestNotOpenable,
            format!(
                "{} is already {}; only pending requests can be answered.",
                record.id,
                other.state_word()
            ),
        )),
    }
}

fn check_not_self(record: &RequestRecord, approver: &str) -> Result<(), Refusal> {
    if approver == record.technician || approver == record.requester() {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "{approver} made request {} and cannot answer it; ask another approver.",
                record.id
            ),
        ));
    }
    Ok(())
}

fn vendor_gone(record: &RequestRecord) -> Refusal {
    Refusal::new(
        ErrorCode::PolicyRefused,
        format!(
            "Vendor `{}` no longer has a policy at this hospital.",
            record.vendor
        ),
    )
}

/// Checks a session span `[start, end)` against the vendor's limits.
fn check_span(
    vendor: &VendorPolicy,
    zone: &HospitalZone,
    start: SystemTime,
    end: SystemTime,
) -> Result<(), Refusal> {
    let Ok(length) = end.duration_since(start) else {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "The end time has already passed; choose a later one.",
        ));
    };
    if length.is_zero() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "The end time has already passed; choose a later one.",
        ));
    }
    let max = vendor.access.max_session;
    // A second of slack: "--for 2h" is computed from a slightly earlier `now`.
    if length > max + Duration::from_secs(1) {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "{}'s agreement allows sessions of at most {}; choose an earlier end time.",
                vendor.name,
                human_duration(max)
            ),
        ));
    }
    if let Err(holiday) = check_holidays(&vendor.access.holidays, zone, start, end) {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "{}'s agreement allows no sessions on {holiday} ({}); choose another day.",
                vendor.name,
                zone.name()
            ),
        ));
    }
    if let Some(hours) = &vendor.access.hours
        && let Err(outside) = check_hours(hours, zone, start, end)
    {
        return Err(Refusal::new(
            ErrorCode::PolicyRefused,
            format!(
                "{}'s agreed hours are {hours} ({}); {outside} falls outside them.",
                vendor.name,
                zone.name()
            ),
        ));
    }
    Ok(())
}

/// `1h30m`, `45m`, `2h`, `30s`.
pub fn human_duration(duration: Duration) -> String {
    proto::duration::format_duration(duration)
}

#[cfg(test)]
mod tests;
