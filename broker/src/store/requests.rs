//! Requests (and the sessions they become), approvals, lockdown.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

// Dynamic SQL here is built only from fixed fragments and numbered placeholders; every value
// is bound.
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::audit::append;
use super::tx::WriteTx;
use super::{Store, StoreError};
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::{from_unix_ms, to_unix_ms};
use crate::session::{
    ApprovalRecord, EndReason, Extension, ExtensionProposal, RequestId, RequestRecord, Stage,
};

const REQUEST_COLUMNS: &str = "id, vendor, technician, targets, purpose, ticket, wanted_ms, state, created_at, answer_by, approvals_needed, end_at, pinned, opened_at, broker_id, ended_at, end_reason, ended_by, note, attachment, detached_at";

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this vendor's.
    pub vendor: Option<String>,
    /// Only this technician's (with `vendor`).
    pub technician: Option<String>,
    /// Only in these states (`requested`, `approved`, `active`, `ended`); empty means all.
    pub states: Vec<&'static str>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The hospital's emergency stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockdownState {
    /// Whether remote access is stopped.
    pub active: bool,
    /// Why (as the person who set it said).
    pub reason: String,
    /// Who set or lifted it.
    pub by: String,
    /// Since when.
    pub since: SystemTime,
    /// The admin whose lift waits for a second, different admin (`lockdown_lift_admins =
    /// 2`); empty when none waits.
    pub lift_pending_by: String,
    /// When that lift was asked.
    pub lift_pending_at: SystemTime,
}

impl Store {
    /// Stores a new request.
    pub async fn insert_request(
        &self,
        record: &RequestRecord,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO requests (id, vendor, technician, targets, purpose, ticket, wanted_ms, state, created_at, answer_by, approvals_needed, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(record.id.as_str())
        .bind(&record.vendor)
        .bind(&record.technician)
        .bind(record.targets.join("\n"))
        .bind(&record.purpose)
        .bind(&record.ticket)
        .bind(i64::try_from(record.wanted.as_millis()).unwrap_or(i64::MAX))
        .bind(record.stage.state_word())
        .bind(to_unix_ms(record.created_at))
        .bind(to_unix_ms(record.answer_by))
        .bind(i64::from(record.approvals_needed))
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One request with its approvals.
    pub async fn request(&self, id: &RequestId) -> Result<RequestRecord, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        self.with_approvals(vec![row])
            .await?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    /// Requests matching `filter`, newest first.
    pub async fn requests(&self, filter: &RequestFilter) -> Result<Vec<RequestRecord>, StoreError> {
        // The filter is built from fixed fragments; values are always bound.
        let mut clauses = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(vendor) = &filter.vendor {
            binds.push(vendor.clone());
            clauses.push(format!("vendor = ${}", binds.len()));
        }
        if let Some(technician) = &filter.technician {
            binds.push(technician.clone());
            clauses.push(format!("technician = ${}", binds.len()));
        }
        if !filter.states.is_empty() {
            let mut slots = Vec::new();
            for state in &filter.states {
                binds.push((*state).to_owned());
                slots.push(format!("${}", binds.len()));
            }
            clauses.push(format!("state IN ({})", slots.join(", ")));
        }
        let where_clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let limit = if filter.limit > 0 { filter.limit } else { 100 };
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests {where_clause} ORDER BY created_at DESC, id LIMIT {limit}"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
        for value in &binds {
            query = query.bind(value.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        self.with_approvals(rows).await
    }

    /// Requests that are not over, and those that ended after `ended_since`: what a broker
    /// must watch.
    pub async fn live_requests(
        &self,
        ended_since: SystemTime,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE state <> 'ended' OR ended_at >= $1"
        )))
        .bind(to_unix_ms(ended_since))
        .fetch_all(self.pool())
        .await?;
        self.with_approvals(rows).await
    }

    async fn with_approvals(&self, rows: Vec<AnyRow>) -> Result<Vec<RequestRecord>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        let slots: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT request_id, approver, approved_at, until_at, comment FROM approvals WHERE request_id IN ({}) ORDER BY approved_at",
            slots.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
        for id in &ids {
            query = query.bind(id.as_str());
        }
        let mut approvals = group_approvals(query.fetch_all(self.pool()).await?)?;
        let sql = format!(
            "SELECT request_id, changed_by, changed_at, end_at, comment FROM extensions WHERE request_id IN ({}) ORDER BY changed_at",
            slots.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
        for id in &ids {
            query = query.bind(id.as_str());
        }
        let mut extensions = group_extensions(query.fetch_all(self.pool()).await?)?;
        let sql = format!(
            "SELECT request_id, approver, proposed_at, end_at, comment FROM extension_proposals WHERE request_id IN ({}) ORDER BY proposed_at",
            slots.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
        for id in &ids {
            query = query.bind(id.as_str());
        }
        let mut proposals = group_proposals(query.fetch_all(self.pool()).await?)?;
        rows.iter()
            .zip(ids)
            .map(|(row, id)| {
                let mut record = record_from_row(
                    row,
                    approvals.remove(&id).unwrap_or_default(),
                    extensions.remove(&id).unwrap_or_default(),
                )?;
                record.extension_proposals = proposals.remove(&id).unwrap_or_default();
                Ok(record)
            })
            .collect()
    }

    /// Records one approval. When `completes` carries the end time and pinned addresses, the
    /// request becomes approved in the same transaction. `Stale` if the request is no longer
    /// pending, if this approver already approved, or (for a completing approval) if the
    /// count of approvals is not what the decision assumed.
    pub async fn add_approval(
        &self,
        id: &RequestId,
        approval: &ApprovalRecord,
        completes: Option<(SystemTime, &str)>,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // The write comes first: it takes the row (PostgreSQL) or database (SQLite) lock, so
        // concurrent approvers queue here and each sees the others' approvals.
        let count = sqlx::query(
            "UPDATE requests SET approvals_count = approvals_count + 1, updated_at = $2 WHERE id = $1 AND state = 'requested' AND answer_by > $2 RETURNING approvals_count, approvals_needed",
        )
        .bind(id.as_str())
        .bind(to_unix_ms(now))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::Stale)?;
        let (count, needed): (i64, i64) = (count.try_get(0)?, count.try_get(1)?);
        let inserted = sqlx::query(
            "INSERT INTO approvals (request_id, approver, approved_at, until_at, comment) SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM approvals WHERE request_id = $1 AND approver = $2)",
        )
        .bind(id.as_str())
        .bind(&approval.approver)
        .bind(to_unix_ms(approval.approved_at))
        .bind(to_unix_ms(approval.until))
        .bind(&approval.comment)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        }
        match completes {
            Some((_, pinned)) if count >= needed => {
                // The session ends at the earliest end time any approver gave.
                sqlx::query(
                    "UPDATE requests SET state = 'approved', pinned = $2, end_at = (SELECT MIN(until_at) FROM approvals WHERE request_id = $1), updated_at = $3 WHERE id = $1 AND state = 'requested'",
                )
                .bind(id.as_str())
                .bind(pinned)
                .bind(to_unix_ms(now))
                .execute(&mut *tx)
                .await?;
            }
            Some(_) | None if count >= needed => {
                // Another approval landed in between and this one completes the request, but
                // the caller did not resolve targets for it: let it decide again.
                tx.rollback().await?;
                return Err(StoreError::Stale);
            }
            _ => {}
        }
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `approved → active` on this broker, with the (possibly pulled-in) end time.
    pub async fn activate(
        &self,
        id: &RequestId,
        end_at: SystemTime,
        broker_id: &str,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        expect_one(activate_in(&mut tx, id, end_at, broker_id, now).await?)?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Opens an approved request as a session with a one-time password's `step`, in one
    /// transaction (one sync to disk): the step is spent (it must be later than every step
    /// accepted before, and the technician enabled and not locked) and the request becomes
    /// active, with its audit `event`. If either cannot happen, neither does.
    #[allow(clippy::too_many_arguments, reason = "one transaction's every input")]
    pub async fn open_with_code(
        &self,
        vendor: &str,
        technician: &str,
        step: i64,
        id: &RequestId,
        end_at: SystemTime,
        broker_id: &str,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<Opening, StoreError> {
        let mut tx = self.begin().await?;
        if !spend_code_in(&mut tx, vendor, technician, step).await? {
            return Ok(Opening::CodeRefused);
        }
        if activate_in(&mut tx, id, end_at, broker_id, now).await? != 1 {
            return Ok(Opening::RequestChanged);
        }
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Opening::Opened)
    }

    /// Takes up live session `id` on a new connection of `broker_id`, in one transaction:
    /// the one-time password's `step` is spent when there is one (as [`open_with_code`]
    /// does), and the session's attachment moves from `attachment` (what the caller read) to
    /// the next, so the connection that held it before lets it go. `RequestChanged` when the
    /// session ended, reached its end time or was taken up by another connection meanwhile.
    ///
    /// [`open_with_code`]: Store::open_with_code
    #[allow(clippy::too_many_arguments, reason = "one transaction's every input")]
    pub async fn resume_session(
        &self,
        vendor: &str,
        technician: &str,
        step: Option<i64>,
        id: &RequestId,
        attachment: u64,
        broker_id: &str,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<Opening, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(step) = step
            && !spend_code_in(&mut tx, vendor, technician, step).await?
        {
            return Ok(Opening::CodeRefused);
        }
        let taken = sqlx::query(
            "UPDATE requests SET broker_id = $2, attachment = attachment + 1, detached_at = NULL, updated_at = $3 WHERE id = $1 AND state = 'active' AND attachment = $4 AND end_at > $3",
        )
        .bind(id.as_str())
        .bind(broker_id)
        .bind(to_unix_ms(now))
        .bind(i64::try_from(attachment).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            return Ok(Opening::RequestChanged);
        }
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Opening::Opened)
    }

    /// Lets go of live session `id` whose connection (attached as `attachment`) was lost: it
    /// stays active, held by no broker, until it is resumed or ends; `event` (the
    /// `connection-lost`) goes on the record with it. `Stale` when the session is over or
    /// another connection has taken it up meanwhile: then nothing is recorded.
    pub async fn detach_session(
        &self,
        id: &RequestId,
        attachment: u64,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let now = to_unix_ms(event.at);
        let mut tx = self.begin().await?;
        let detached = sqlx::query(
            "UPDATE requests SET broker_id = NULL, detached_at = $2, updated_at = $2 WHERE id = $1 AND state = 'active' AND attachment = $3",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(i64::try_from(attachment).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        expect_one(detached.rows_affected())?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live sessions `broker_id` holds on the record, with the attachment each holds
    /// them by (at start, those a crash left behind).
    pub async fn sessions_of_broker(
        &self,
        broker_id: &str,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE state = 'active' AND broker_id = $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(broker_id)
            .fetch_all(self.pool())
            .await?;
        self.with_approvals(rows).await
    }

    /// Ends a request that is in one of `from` states, at the time of its audit `event`.
    pub async fn end_request(
        &self,
        id: &RequestId,
        from: &[Stage],
        reason: EndReason,
        by: Option<&str>,
        note: Option<&str>,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let now = event.at;
        let mut tx = self.begin().await?;
        let slots: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 6)).collect();
        let sql = format!(
            "UPDATE requests SET state = 'ended', end_reason = $2, ended_by = $3, note = $4, ended_at = $5, updated_at = $5 WHERE id = $1 AND state IN ({})",
            slots.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(id.as_str())
            .bind(reason.as_str())
            .bind(by)
            .bind(note)
            .bind(to_unix_ms(now));
        for stage in from {
            query = query.bind(stage.state_word());
        }
        expect_one(query.execute(&mut *tx).await?.rows_affected())?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a live session's end time, as `change.by` asked; clears the asks for a later
    /// end that waited for more approvers. `agreed` is how many other approvers' asks (for an
    /// end after `now`) the decision counted: `Stale` if fewer are still there.
    pub async fn set_session_end(
        &self,
        id: &RequestId,
        change: &Extension,
        agreed: usize,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE requests SET end_at = $2, updated_at = $3 WHERE id = $1 AND state = 'active' AND end_at > $3",
        )
        .bind(id.as_str())
        .bind(to_unix_ms(change.end_at))
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await?;
        expect_one(updated.rows_affected())?;
        if agreed > 0 && other_proposals(&mut tx, id, &change.by, now).await? < agreed {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        }
        // An extension is an approval of its own, kept apart from the approvals that opened
        // the request.
        sqlx::query(
            "INSERT INTO extensions (request_id, changed_by, changed_at, end_at, comment) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_str())
        .bind(&change.by)
        .bind(to_unix_ms(now))
        .bind(to_unix_ms(change.end_at))
        .bind(&change.comment)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM extension_proposals WHERE request_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records `proposal`, one approver's ask for a later end of live session `id` that
    /// waits for more approvers (replacing their earlier ask). `others` is how many other
    /// approvers' asks the decision counted: `Stale` if that changed meanwhile, so two
    /// approvers asking at once cannot each wait for the other.
    pub async fn propose_extension(
        &self,
        id: &RequestId,
        proposal: &ExtensionProposal,
        others: usize,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // The write first: it takes the row (PostgreSQL) or database (SQLite) lock, so asks
        // made at once queue here and each sees the others.
        let updated = sqlx::query(
            "UPDATE requests SET updated_at = $2 WHERE id = $1 AND state = 'active' AND end_at > $2",
        )
        .bind(id.as_str())
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await?;
        expect_one(updated.rows_affected())?;
        if other_proposals(&mut tx, id, &proposal.approver, now).await? != others {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        }
        sqlx::query("DELETE FROM extension_proposals WHERE request_id = $1 AND approver = $2")
            .bind(id.as_str())
            .bind(&proposal.approver)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO extension_proposals (request_id, approver, proposed_at, end_at, comment) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_str())
        .bind(&proposal.approver)
        .bind(to_unix_ms(proposal.at))
        .bind(to_unix_ms(proposal.end_at))
        .bind(&proposal.comment)
        .execute(&mut *tx)
        .await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every live session held by `broker_id` (at start after a crash, or at shutdown),
    /// recording each end; returns how many.
    pub async fn end_sessions_of_broker(
        &self,
        broker_id: &str,
        reason: EndReason,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let ended = sqlx::query(
            "UPDATE requests SET state = 'ended', end_reason = $2, ended_at = $3, updated_at = $3 WHERE state = 'active' AND broker_id = $1 RETURNING id, vendor, technician",
        )
        .bind(broker_id)
        .bind(reason.as_str())
        .bind(to_unix_ms(now))
        .fetch_all(&mut *tx)
        .await?;
        let actor = Actor::Broker(broker_id.to_owned());
        record_ended_sessions(&mut tx, &ended, &actor, reason, now).await?;
        tx.commit().await?;
        Ok(ended.len() as u64)
    }

    /// The lockdown state (inactive if never set).
    pub async fn lockdown(&self) -> Result<LockdownState, StoreError> {
        let row = sqlx::query(
            "SELECT active, reason, set_by, since, lift_pending_by, lift_pending_at FROM lockdown WHERE id = 1",
        )
            .fetch_optional(self.pool())
            .await?;
        match row {
            None => Ok(LockdownState {
                active: false,
                reason: String::new(),
                by: String::new(),
                since: SystemTime::UNIX_EPOCH,
                lift_pending_by: String::new(),
                lift_pending_at: SystemTime::UNIX_EPOCH,
            }),
            Some(row) => Ok(LockdownState {
                active: row.try_get::<i64, _>(0)? != 0,
                reason: row.try_get(1)?,
                by: row.try_get(2)?,
                since: from_unix_ms(row.try_get(3)?),
                lift_pending_by: row.try_get(4)?,
                lift_pending_at: from_unix_ms(row.try_get(5)?),
            }),
        }
    }

    /// Records `by`'s lift of the active lockdown as pending, for a second, different admin
    /// to confirm (`lockdown_lift_admins = 2`); the lockdown stays. `Stale` when the lockdown
    /// is not on or a lift is pending already (the caller looks again).
    pub async fn set_lockdown_lift_pending(
        &self,
        by: &str,
        reason: &str,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE lockdown SET lift_pending_by = $1, lift_pending_at = $2, lift_pending_reason = $3 WHERE id = 1 AND active = 1 AND lift_pending_by = ''",
        )
        .bind(by)
        .bind(to_unix_ms(now))
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        }
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets or lifts the lockdown. Setting it ends every live session with reason
    /// `lockdown` in the same transaction, each recorded; returns how many were ended.
    pub async fn set_lockdown(
        &self,
        active: bool,
        reason: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE lockdown SET active = $1, reason = $2, set_by = $3, since = $4, lift_pending_by = '', lift_pending_at = 0, lift_pending_reason = '' WHERE id = 1",
        )
        .bind(i64::from(active))
        .bind(reason)
        .bind(by)
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query("INSERT INTO lockdown (id, active, reason, set_by, since) VALUES (1, $1, $2, $3, $4)")
                .bind(i64::from(active))
                .bind(reason)
                .bind(by)
                .bind(to_unix_ms(now))
                .execute(&mut *tx)
                .await?;
        }
        let actor = Actor::Staff(by.to_owned());
        let kind = if active {
            EventKind::LockdownOn
        } else {
            EventKind::LockdownOff
        };
        append(
            &mut tx,
            &AuditEvent::new(now, actor.clone(), kind).detail("reason", reason),
        )
        .await?;
        let mut ended = Vec::new();
        if active {
            ended = sqlx::query(
                "UPDATE requests SET state = 'ended', end_reason = 'lockdown', ended_by = $1, note = $2, ended_at = $3, updated_at = $3 WHERE state = 'active' RETURNING id, vendor, technician",
            )
            .bind(by)
            .bind(reason)
            .bind(to_unix_ms(now))
            .fetch_all(&mut *tx)
            .await?;
            record_ended_sessions(&mut tx, &ended, &actor, EndReason::Lockdown, now).await?;
        }
        tx.commit().await?;
        Ok(ended.len() as u64)
    }
}

/// One `session-ended` event per `(id, vendor, technician)` row.
async fn record_ended_sessions(
    tx: &mut WriteTx,
    rows: &[AnyRow],
    actor: &Actor,
    reason: EndReason,
    now: SystemTime,
) -> Result<(), StoreError> {
    for row in rows {
        let (id, vendor, technician): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let event = AuditEvent::new(now, actor.clone(), EventKind::SessionEnded)
            .request(id)
            .technician(&vendor, &technician)
            .detail("reason", reason.as_str());
        append(tx, &event).await?;
    }
    Ok(())
}

/// What [`Store::open_with_code`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The step was spent and the session is active.
    Opened,
    /// The step (or a later one) was already used, or the technician is locked or disabled;
    /// nothing changed.
    CodeRefused,
    /// The request is no longer approved (revoked, expired, opened elsewhere); nothing
    /// changed, the code is not spent.
    RequestChanged,
}

/// Spends one-time-password step `step` of `vendor`/`technician`: only a step later than
/// every one accepted before, of a technician enabled and not locked. Whether it was spent.
async fn spend_code_in(
    tx: &mut WriteTx,
    vendor: &str,
    technician: &str,
    step: i64,
) -> Result<bool, StoreError> {
    let spent = sqlx::query(
        "UPDATE technicians SET totp_last_step = $3, otp_failures = 0 WHERE vendor = $1 AND technician = $2 AND totp_last_step < $3 AND locked = 0 AND enabled = 1",
    )
    .bind(vendor)
    .bind(technician)
    .bind(step)
    .execute(&mut **tx)
    .await?;
    Ok(spent.rows_affected() == 1)
}

/// Makes approved request `id` active on `broker_id` until `end_at`; the rows changed.
async fn activate_in(
    tx: &mut WriteTx,
    id: &RequestId,
    end_at: SystemTime,
    broker_id: &str,
    now: SystemTime,
) -> Result<u64, StoreError> {
    let updated = sqlx::query(
        "UPDATE requests SET state = 'active', end_at = $2, opened_at = $3, broker_id = $4, attachment = 1, detached_at = NULL, updated_at = $3 WHERE id = $1 AND state = 'approved' AND end_at > $3",
    )
    .bind(id.as_str())
    .bind(to_unix_ms(end_at))
    .bind(to_unix_ms(now))
    .bind(broker_id)
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected())
}

fn expect_one(rows: u64) -> Result<(), StoreError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Stale)
    }
}

/// Groups rows whose first column is a request id, reading the rest of each with `read`.
fn group_by_request<T>(
    rows: Vec<AnyRow>,
    read: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<HashMap<String, Vec<T>>, StoreError> {
    let mut grouped: HashMap<String, Vec<T>> = HashMap::new();
    for row in rows {
        let id: String = row.try_get(0)?;
        grouped.entry(id).or_default().push(read(&row)?);
    }
    Ok(grouped)
}

fn group_approvals(rows: Vec<AnyRow>) -> Result<HashMap<String, Vec<ApprovalRecord>>, StoreError> {
    group_by_request(rows, |row| {
        Ok(ApprovalRecord {
            approver: row.try_get(1)?,
            approved_at: from_unix_ms(row.try_get(2)?),
            until: from_unix_ms(row.try_get(3)?),
            comment: row.try_get(4)?,
        })
    })
}

fn group_extensions(rows: Vec<AnyRow>) -> Result<HashMap<String, Vec<Extension>>, StoreError> {
    group_by_request(rows, |row| {
        Ok(Extension {
            by: row.try_get(1)?,
            at: from_unix_ms(row.try_get(2)?),
            end_at: from_unix_ms(row.try_get(3)?),
            comment: row.try_get(4)?,
        })
    })
}

fn group_proposals(
    rows: Vec<AnyRow>,
) -> Result<HashMap<String, Vec<ExtensionProposal>>, StoreError> {
    group_by_request(rows, |row| {
        Ok(ExtensionProposal {
            approver: row.try_get(1)?,
            at: from_unix_ms(row.try_get(2)?),
            end_at: from_unix_ms(row.try_get(3)?),
            comment: row.try_get(4)?,
        })
    })
}

/// How many approvers other than `by` wait with an ask for an end after `now`.
async fn other_proposals(
    tx: &mut WriteTx,
    id: &RequestId,
    by: &str,
    now: SystemTime,
) -> Result<usize, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM extension_proposals WHERE request_id = $1 AND approver <> $2 AND end_at > $3",
    )
    .bind(id.as_str())
    .bind(by)
    .bind(to_unix_ms(now))
    .fetch_one(&mut **tx)
    .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

fn record_from_row(
    row: &AnyRow,
    approvals: Vec<ApprovalRecord>,
    extensions: Vec<Extension>,
) -> Result<RequestRecord, StoreError> {
    let id: String = row.try_get(0)?;
    let state: String = row.try_get(7)?;
    let end_reason: Option<String> = row.try_get(16)?;
    let stage = match state.as_str() {
        "requested" => Stage::Requested,
        "approved" => Stage::Approved,
        "active" => Stage::Active,
        "ended" => Stage::Ended(
            end_reason
                .as_deref()
                .and_then(EndReason::parse)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("request {id} ended without a known reason"))
                })?,
        ),
        other => {
            return Err(StoreError::Corrupt(format!(
                "request {id} is in unknown state `{other}`"
            )));
        }
    };
    let targets: String = row.try_get(3)?;
    let optional_time = |index: usize| -> Result<Option<SystemTime>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(index)?.map(from_unix_ms))
    };
    Ok(RequestRecord {
        id: RequestId::parse(&id)
            .ok_or_else(|| StoreError::Corrupt(format!("request id `{id}`")))?,
        vendor: row.try_get(1)?,
        technician: row.try_get(2)?,
        targets: targets.lines().map(str::to_owned).collect(),
        purpose: row.try_get(4)?,
        ticket: row.try_get(5)?,
        wanted: Duration::from_millis(u64::try_from(row.try_get::<i64, _>(6)?).unwrap_or(0)),
        created_at: from_unix_ms(row.try_get(8)?),
        answer_by: from_unix_ms(row.try_get(9)?),
        approvals_needed: u8::try_from(row.try_get::<i64, _>(10)?).unwrap_or(u8::MAX),
        approvals,
        extensions,
        extension_proposals: Vec::new(),
        stage,
        end_at: optional_time(11)?,
        pinned: row.try_get(12)?,
        opened_at: optional_time(13)?,
        broker_id: row.try_get(14)?,
        ended_at: optional_time(15)?,
        ended_by: row.try_get(17)?,
        note: row.try_get(18)?,
        attachment: u64::try_from(row.try_get::<i64, _>(19)?).unwrap_or(0),
        detached_at: optional_time(20)?,
    })
}
