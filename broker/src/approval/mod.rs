//! The hospital's side of a session: approve, deny, revoke, change the end time, lockdown.
//!
//! [`Desk`] joins the lifecycle rules ([`crate::session`]), the policies, the clock and the
//! store. The admin CLI uses it against the same database the broker uses; a running broker
//! learns of each change by watching the store (see [`crate::hub`]), so a revocation reaches
//! the live session within a second whichever process made it. The desk never talks to
//! clients.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{self, Actor, AuditEvent, EventKind};
use crate::clock::Clock;
use crate::policy::PolicySet;
use crate::reload::LivePolicies;
use crate::session::{
    self, ApprovalRecord, EndReason, Extension, ExtensionDecision, ExtensionProposal, HospitalZone,
    Refusal, RequestId, RequestRecord, Stage,
};
use crate::store::{LockdownState, RequestFilter, Store, StoreError};
use crate::targets::PinnedTargets;

/// An end time as an approver gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// This long from now.
    For(Duration),
    /// At this time.
    At(SystemTime),
}

impl Until {
    fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            Until::For(duration) => now + duration,
            Until::At(time) => time,
        }
    }
}

/// Why a desk action did not happen; `Display` is one sentence for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// No such request.
    #[error("There is no request {0}; list them with `sekisho-broker request list`.")]
    NotFound(RequestId),
    /// The rules refuse it.
    #[error("{0}")]
    Refused(Refusal),
    /// Someone else acted on the request first.
    #[error(
        "Request {0} changed while you were acting on it (another approver, an expiry, or the technician); look at it again with `sekisho-broker request list`."
    )]
    Stale(RequestId),
    /// The database cannot be used; nothing was changed.
    #[error("Nothing was changed: {0}. Check the broker's database and try again.")]
    Store(StoreError),
}

impl DeskError {
    fn from_store(id: &RequestId, error: StoreError) -> DeskError {
        match error {
            StoreError::NotFound => DeskError::NotFound(id.clone()),
            StoreError::Stale => DeskError::Stale(id.clone()),
            other => DeskError::Store(other),
        }
    }
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approved {
    /// The request is approved and may be opened until `end_at`.
    Complete {
        /// The session's end time.
        end_at: SystemTime,
    },
    /// More approvers are needed.
    Partial {
        /// Approvals so far.
        have: usize,
        /// Approvals needed.
        need: usize,
    },
}

/// What a change of a live session's end time did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// The end time moved.
    Moved {
        /// The new end time.
        end_at: SystemTime,
    },
    /// The ask for a later end is on the record, waiting for more approvers.
    Asked {
        /// The end time asked for.
        end_at: SystemTime,
        /// Approvers who have asked so far.
        have: usize,
        /// Approvers needed.
        need: usize,
    },
}

/// The longest comment an approver may give, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// The hospital's actions on requests and sessions.
#[derive(Clone)]
pub struct Desk {
    store: Store,
    policies: LivePolicies,
    zone: HospitalZone,
    clock: Arc<dyn Clock>,
}

impl Desk {
    /// A desk over `store`, judging by `policies` (a fixed set, or the broker's live one)
    /// in `zone`.
    pub fn new(
        store: Store,
        policies: impl Into<LivePolicies>,
        zone: HospitalZone,
        clock: Arc<dyn Clock>,
    ) -> Desk {
        Desk {
            store,
            policies: policies.into(),
            zone,
            clock,
        }
    }

    /// The policies the desk judges by now.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.current()
    }

    /// The time now, from the desk's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The hospital's time zone.
    pub fn zone(&self) -> &HospitalZone {
        &self.zone
    }

    /// The store the desk acts on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Requests matching `filter`.
    pub async fn requests(&self, filter: &RequestFilter) -> Result<Vec<RequestRecord>, DeskError> {
        self.store.requests(filter).await.map_err(DeskError::Store)
    }

    async fn load(&self, id: &RequestId) -> Result<RequestRecord, DeskError> {
        self.store
            .request(id)
            .await
            .map_err(|e| DeskError::from_store(id, e))
    }

    /// Refuses to approve for a technician or vendor the hospital has disabled (their open
    /// requests were ended when they were disabled; this closes the gap of a request made
    /// in between).
    async fn requester_enabled(&self, record: &RequestRecord) -> Result<(), DeskError> {
        let vendor = self
            .store
            .vendor_row(&record.vendor)
            .await
            .map_err(DeskError::Store)?;
        let technician = self
            .store
            .technician(&record.vendor, &record.technician)
            .await
            .map_err(DeskError::Store)?;
        let disabled = |who: String, reason: &str| {
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            Err(DeskError::Refused(Refusal {
                code: proto::ErrorCode::IdentityDisabled,
                message: format!(
                    "{who} is disabled{why}, so {} cannot be approved; deny it, or enable them first.",
                    record.id
                ),
            }))
        };
        match (vendor, technician) {
            (Some(vendor), _) if !vendor.enabled => disabled(
                format!("Vendor `{}`", record.vendor),
                &vendor.disabled_reason,
            ),
            (_, Some(technician)) if !technician.enabled => disabled(
                format!("Technician {}/{}", record.vendor, record.technician),
                &technician.disabled_reason,
            ),
            _ => Ok(()),
        }
    }

    async fn lockdown_active(&self) -> Result<bool, DeskError> {
        Ok(self
            .store
            .lockdown()
            .await
            .map_err(DeskError::Store)?
            .active)
    }

    /// `approver` approves request `id` until `until`. The last approval needed resolves and
    /// pins the request's targets.
    pub async fn approve(
        &self,
        id: &RequestId,
        approver: &str,
        until: Until,
    ) -> Result<Approved, DeskError> {
        self.approve_with_comment(id, approver, until, "").await
    }

    /// `approver` approves request `id` until `until`, saying why in `comment` (which the
    /// hospital's policy may require).
    pub async fn approve_with_comment(
        &self,
        id: &RequestId,
        approver: &str,
        until: Until,
        comment: &str,
    ) -> Result<Approved, DeskError> {
        let now = self.clock.now();
        let record = self.load(id).await?;
        let policies = self.policies.current();
        let comment = checked_comment(&policies, comment, "approval")?;
        let vendor = policies.vendor(&record.vendor);
        let lockdown = self.lockdown_active().await?;
        if matches!(record.stage, Stage::Requested) {
            self.requester_enabled(&record).await?;
        }
        let decision = session::decide_approval(
            &record,
            approver,
            until.resolve(now),
            vendor,
            &self.zone,
            lockdown,
            now,
        )
        .map_err(DeskError::Refused)?;
        let pinned = match (decision.completes, vendor) {
            (true, Some(vendor)) => {
                let pinned = PinnedTargets::resolve(vendor, &record.targets).await;
                if let Some((name, problem)) = pinned.first_problem() {
                    let refusal = problem.to_refusal(name);
                    return Err(DeskError::Refused(Refusal {
                        code: refusal.code,
                        message: format!("{} Deny the request or fix the policy.", refusal.message),
                    }));
                }
                Some(pinned.encode())
            }
            _ => None,
        };
        let approval = ApprovalRecord {
            approver: approver.to_owned(),
            approved_at: now,
            until: decision.until,
            comment: comment.clone(),
        };
        let event = AuditEvent::new(
            now,
            Actor::Staff(approver.to_owned()),
            EventKind::RequestApproved,
        )
        .request(id)
        .technician(&record.vendor, &record.technician)
        .detail("until", audit::timestamp(decision.until))
        .detail(
            "approval",
            format!(
                "{} of {}",
                record.approvals.len() + 1,
                record.approvals_needed
            ),
        )
        .detail(
            "pinned",
            pinned.as_deref().unwrap_or("").replace('\n', "; "),
        )
        .detail("comment", &comment);
        self.store
            .add_approval(
                id,
                &approval,
                pinned.as_deref().map(|p| (decision.until, p)),
                now,
                &event,
            )
            .await
            .map_err(|e| DeskError::from_store(id, e))?;
        let after = self.load(id).await?;
        Ok(match (after.stage, after.end_at) {
            (Stage::Approved, Some(end_at)) => Approved::Complete { end_at },
            _ => Approved::Partial {
                have: after.approvals.len(),
                need: usize::from(after.approvals_needed),
            },
        })
    }

    /// `approver` denies request `id`, telling the technician `reason`.
    pub async fn deny(
        &self,
        id: &RequestId,
        approver: &str,
        reason: &str,
    ) -> Result<(), DeskError> {
        let now = self.clock.now();
        let record = self.load(id).await?;
        session::decide_denial(&record, approver, reason, now).map_err(DeskError::Refused)?;
        let event = AuditEvent::new(
            now,
            Actor::Staff(approver.to_owned()),
            EventKind::RequestDenied,
        )
        .request(id)
        .technician(&record.vendor, &record.technician)
        .detail("reason", reason.trim());
        self.store
            .end_request(
                id,
                &[Stage::Requested],
                EndReason::Denied,
                Some(approver),
                Some(reason.trim()),
                &event,
            )
            .await
            .map_err(|e| DeskError::from_store(id, e))
    }

    /// `by` cuts live session `id` (or withdraws an approved one before it opens).
    pub async fn revoke(&self, id: &RequestId, by: &str, reason: &str) -> Result<(), DeskError> {
        let now = self.clock.now();
        let record = self.load(id).await?;
        if !matches!(record.stage, Stage::Active | Stage::Approved) {
            return Err(DeskError::Refused(Refusal {
                code: proto::ErrorCode::RequestNotOpenable,
                message: format!(
                    "{id} is {}; only approved or live sessions can be revoked.",
                    record.stage.state_word()
                ),
            }));
        }
        let event = AuditEvent::new(now, Actor::Staff(by.to_owned()), EventKind::SessionEnded)
            .request(id)
            .technician(&record.vendor, &record.technician)
            .detail("reason", EndReason::Revoked.as_str())
            .detail("was", record.stage.state_word())
            .detail("note", reason.trim());
        self.store
            .end_request(
                id,
                &[Stage::Active, Stage::Approved],
                EndReason::Revoked,
                Some(by),
                Some(reason.trim()),
                &event,
            )
            .await
            .map_err(|e| DeskError::from_store(id, e))
    }

    /// `by` moves live session `id`'s end time (later or earlier); returns the new end time.
    /// A later end needs as many different approvers as the request did: see
    /// [`Desk::extend_with_comment`].
    pub async fn extend(
        &self,
        id: &RequestId,
        by: &str,
        until: Until,
    ) -> Result<Extended, DeskError> {
        self.extend_with_comment(id, by, until, "").await
    }

    /// `by` moves live session `id`'s end time, saying why in `comment`. An earlier end
    /// moves at once. A later end follows the rules of an approval
    /// ([`session::decide_extension`]): for a vendor that needs several approvers it is asked
    /// for ([`Extended::Asked`]) and moves when enough different approvers have asked, to the
    /// earliest end any of them gave.
    pub async fn extend_with_comment(
        &self,
        id: &RequestId,
        by: &str,
        until: Until,
        comment: &str,
    ) -> Result<Extended, DeskError> {
        let policies = self.policies.current();
        let comment = checked_comment(&policies, comment, "extension")?;
        // Two approvers asking at the same moment: the second sees the first's ask on the
        // next try.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_extend(id, by, until, &comment).await {
                Err(DeskError::Stale(_)) if tries < 3 => continue,
                other => return other,
            }
        }
    }

    async fn try_extend(
        &self,
        id: &RequestId,
        by: &str,
        until: Until,
        comment: &str,
    ) -> Result<Extended, DeskError> {
        let now = self.clock.now();
        let record = self.load(id).await?;
        let new_end = match until {
            // "--for 30m" on a live session means thirty more minutes.
            Until::For(more) => record.end_at.unwrap_or(now) + more,
            Until::At(at) => at,
        };
        let policies = self.policies.current();
        let vendor = policies.vendor(&record.vendor);
        let decision = session::decide_extension(&record, by, new_end, vendor, &self.zone, now)
            .map_err(DeskError::Refused)?;
        let from = record.end_at.map(audit::timestamp).unwrap_or_default();
        let base = |kind| {
            AuditEvent::new(now, Actor::Staff(by.to_owned()), kind)
                .request(id)
                .technician(&record.vendor, &record.technician)
                .detail("from", &from)
                .detail("comment", comment)
        };
        let (end_at, approvers) = match decision {
            ExtensionDecision::Shorten(end_at) => (end_at, vec![by.to_owned()]),
            ExtensionDecision::Extend { end_at, approvers } => (end_at, approvers),
            ExtensionDecision::Propose { have, need } => {
                let event = base(EventKind::SessionExtensionAsked)
                    .detail("to", audit::timestamp(new_end))
                    .detail("approval", format!("{have} of {need}"));
                let proposal = ExtensionProposal {
                    approver: by.to_owned(),
                    at: now,
                    end_at: new_end,
                    comment: comment.to_owned(),
                };
                self.store
                    .propose_extension(id, &proposal, have - 1, now, &event)
                    .await
                    .map_err(|e| DeskError::from_store(id, e))?;
                return Ok(Extended::Asked {
                    end_at: new_end,
                    have,
                    need,
                });
            }
        };
        let agreed = approvers.len().saturating_sub(1);
        let event = base(EventKind::SessionExtended)
            .detail("to", audit::timestamp(end_at))
            .detail("approvers", approvers.join(","));
        let change = Extension {
            by: by.to_owned(),
            at: now,
            end_at,
            comment: comment.to_owned(),
        };
        self.store
            .set_session_end(id, &change, agreed, now, &event)
            .await
            .map_err(|e| DeskError::from_store(id, e))?;
        Ok(Extended::Moved { end_at })
    }

    /// Stops (or resumes) all remote access. Returns how many live sessions were cut.
    pub async fn set_lockdown(
        &self,
        active: bool,
        reason: &str,
        by: &str,
    ) -> Result<u64, DeskError> {
        self.store
            .set_lockdown(active, reason, by, self.clock.now())
            .await
            .map_err(DeskError::Store)
    }

    /// Records `by`'s lift of the active lockdown as pending, for a second, different admin to
    /// confirm (`lockdown_lift_admins = 2`); the lockdown stays on.
    pub async fn ask_lockdown_lift(&self, reason: &str, by: &str) -> Result<(), DeskError> {
        let now = self.clock.now();
        let event = AuditEvent::new(
            now,
            Actor::Staff(by.to_owned()),
            EventKind::LockdownLiftPending,
        )
        .detail("reason", reason)
        .detail("admins_needed", 2);
        self.store
            .set_lockdown_lift_pending(by, reason, now, &event)
            .await
            .map_err(|e| match e {
                StoreError::Stale => DeskError::Refused(Refusal {
                    code: proto::ErrorCode::RequestNotOpenable,
                    message: "The lockdown changed while you were lifting it (lifted, or another admin's lift is pending); look at it again with `sekisho-broker lockdown status`.".to_owned(),
                }),
                other => DeskError::Store(other),
            })
    }

    /// The lockdown state.
    pub async fn lockdown(&self) -> Result<LockdownState, DeskError> {
        self.store.lockdown().await.map_err(DeskError::Store)
    }
}

/// `comment` trimmed, if the hospital's policy is satisfied with it: required when
/// `require_approval_comment` is set, never longer than [`MAX_COMMENT_CHARS`].
fn checked_comment(policies: &PolicySet, comment: &str, what: &str) -> Result<String, DeskError> {
    let comment = comment.trim();
    if comment.is_empty() && policies.hospital().defaults.require_approval_comment {
        return Err(DeskError::Refused(Refusal {
            code: proto::ErrorCode::InvalidRequest,
            message: format!(
                "This hospital asks for a comment with every {what}; say why (--comment on the command line, the comment field on the web)."
            ),
        }));
    }
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(DeskError::Refused(Refusal {
            code: proto::ErrorCode::InvalidRequest,
            message: format!(
                "A comment may be at most {MAX_COMMENT_CHARS} characters; shorten it."
            ),
        }));
    }
    Ok(comment.to_owned())
}
