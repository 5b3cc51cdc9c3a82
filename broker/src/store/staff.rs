//! Staff accounts for the web UI, their logged-in browsers, and one-time account links.
//!
//! Like the rest of the store, this decides nothing: passwords, codes and roles are checked
//! in [`crate::staff`]. Every change to an account carries its audit event in the same
//! transaction.
//!
//! Setting up an account through a one-time link is two steps, so that nothing is
//! half-written: the chosen password and the new TOTP secret wait on the link's row
//! ([`PendingSetup`], [`Store::put_staff_setup_pending`]) while the account, if it exists,
//! keeps its old ones; once the person typed a code from the new authenticator, one
//! transaction spends the link and makes the account usable
//! ([`Store::activate_staff_setup`]).

use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::append;
use super::{Store, StoreError};
use crate::audit::AuditEvent;
use crate::clock::to_unix_ms;
use crate::policy::StaffLockout;

/// A staff account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffRow {
    /// The login name, also the name every action is recorded under.
    pub name: String,
    /// Comma-separated roles.
    pub roles: String,
    /// argon2id hash, PHC string.
    pub password_hash: String,
    /// The TOTP secret, sealed (see [`crate::secret::SealingKey`]).
    pub sealed_totp_secret: String,
    /// The last TOTP step accepted.
    pub totp_last_step: i64,
    /// Consecutive failed logins.
    pub login_failures: i64,
    /// Locked after too many failed logins (for the hospital's `staff_lockout`, or until an
    /// admin resets the account); see [`StaffRow::locked_until`].
    pub locked: bool,
    /// When the lock began (the Unix epoch when never locked).
    pub locked_at: SystemTime,
    /// Disabled by an admin.
    pub disabled: bool,
    /// When the last failed login was (the Unix epoch when never).
    pub login_failed_at: SystemTime,
}

impl StaffRow {
    /// Whether the account is locked at `now` under `lockout`: `None` when not (never
    /// locked, or the lock is over), `Some(None)` until an admin resets it, `Some(Some(end))`
    /// until `end`.
    pub fn locked_until(
        &self,
        lockout: StaffLockout,
        now: SystemTime,
    ) -> Option<Option<SystemTime>> {
        if !self.locked {
            return None;
        }
        match lockout {
            StaffLockout::UntilReset => Some(None),
            StaffLockout::For(length) => {
                // A lock whose end cannot be written as a time never ends by itself.
                let end = self.locked_at.checked_add(length)?;
                (now < end).then_some(Some(end))
            }
        }
    }
}

/// A logged-in browser, as stored (without its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSessionRow {
    /// The account.
    pub staff: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// When it was last used.
    pub last_seen: SystemTime,
    /// When it was made (the login).
    pub created_at: SystemTime,
}

/// A one-time link, as stored (without its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    /// The account it creates or resets; '' for the first admin's link (the person names it).
    pub name: String,
    /// The roles the account gets.
    pub roles: String,
    /// Who made it.
    pub created_by: String,
    /// When it stops working.
    pub expires_at: SystemTime,
    /// The setup chosen through it and waiting for its confirming code, if any.
    pub pending: Option<PendingSetup>,
    /// Wrong confirming codes typed on it so far.
    pub code_failures: i64,
}

/// A password and TOTP secret chosen through a one-time link, held on the link until the
/// person types a code from the new authenticator. Nothing of the account changes before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSetup {
    /// The account it is for.
    pub name: String,
    /// The chosen password's argon2id hash, PHC string.
    pub password_hash: String,
    /// The new TOTP secret, sealed to `name`.
    pub sealed_totp_secret: String,
}

/// A confirmed setup to make usable: the link's pending password and secret become the
/// account's.
#[derive(Debug, Clone)]
pub struct Activation<'a> {
    /// SHA-256 (hex) of the link's token.
    pub token_hash: &'a str,
    /// The roles the account gets.
    pub roles: &'a str,
    /// The pending setup that was confirmed, exactly as read: activation happens only if it
    /// is still the link's pending setup (not replaced by a setup begun again meanwhile).
    pub pending: &'a PendingSetup,
    /// The TOTP step of the confirming code, spent: no login accepts it or an earlier one.
    pub step: i64,
    /// Whether the link may replace an existing account's credentials (a reset). The first
    /// admin's link, whose person chose the name, never may.
    pub may_reset: bool,
}

/// What activating a confirmed setup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationOutcome {
    /// The link is spent and the account usable with its new password and secret.
    Activated,
    /// Nothing changed: the chosen name was taken meanwhile, and this link may not reset.
    NameTaken,
}

const STAFF_COLUMNS: &str = "name, roles, password_hash, totp_secret, totp_last_step, login_failures, locked, disabled, locked_at, login_failed_at";

fn staff_from_row(row: &AnyRow) -> Result<StaffRow, sqlx::Error> {
    Ok(StaffRow {
        name: row.try_get(0)?,
        roles: row.try_get(1)?,
        password_hash: row.try_get(2)?,
        sealed_totp_secret: row.try_get(3)?,
        totp_last_step: row.try_get(4)?,
        login_failures: row.try_get(5)?,
        locked: row.try_get::<i64, _>(6)? != 0,
        disabled: row.try_get::<i64, _>(7)? != 0,
        locked_at: crate::clock::from_unix_ms(row.try_get(8)?),
        login_failed_at: crate::clock::from_unix_ms(row.try_get(9)?),
    })
}

impl Store {
    /// Every staff account, by name.
    pub async fn staff_members(&self) -> Result<Vec<StaffRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STAFF_COLUMNS} FROM staff ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(staff_from_row)
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
    }

    /// One staff account, if it exists.
    pub async fn staff_member(&self, name: &str) -> Result<Option<StaffRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(staff_from_row)
        .transpose()
        .map_err(StoreError::from)
    }

    /// Stores a one-time link (its token's hash) with its audit event, and drops the pending
    /// setups of links that expired before they were confirmed.
    pub async fn put_staff_invite(
        &self,
        token_hash: &str,
        invite: &InviteRow,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO staff_invites (token_hash, name, roles, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(&invite.name)
        .bind(&invite.roles)
        .bind(&invite.created_by)
        .bind(to_unix_ms(now))
        .bind(to_unix_ms(invite.expires_at))
        .execute(&mut *tx)
        .await?;
        // Links that expired with a setup still pending can never be confirmed: their
        // password hash and sealed secret need not stay.
        sqlx::query(
            "UPDATE staff_invites SET pending_password_hash = '', pending_totp_secret = '' WHERE used_at IS NULL AND expires_at <= $1 AND pending_totp_secret <> ''",
        )
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The unused, unexpired link with this token hash.
    pub async fn staff_invite(
        &self,
        token_hash: &str,
        now: SystemTime,
    ) -> Result<Option<InviteRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, roles, created_by, expires_at, pending_name, pending_password_hash, pending_totp_secret, code_failures FROM staff_invites WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(to_unix_ms(now))
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            let pending = PendingSetup {
                name: row.try_get(4)?,
                password_hash: row.try_get(5)?,
                sealed_totp_secret: row.try_get(6)?,
            };
            Ok(InviteRow {
                name: row.try_get(0)?,
                roles: row.try_get(1)?,
                created_by: row.try_get(2)?,
                expires_at: crate::clock::from_unix_ms(row.try_get(3)?),
                pending: (!pending.sealed_totp_secret.is_empty()).then_some(pending),
                code_failures: row.try_get(7)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| StoreError::from(e))
    }

    /// Whether an unused, unexpired link exists for an admin account (the first admin's).
    pub async fn has_staff_admin_or_invite(&self, now: SystemTime) -> Result<bool, StoreError> {
        let admins = sqlx::query("SELECT name FROM staff WHERE roles LIKE '%admin%'")
            .fetch_all(self.pool())
            .await?;
        if !admins.is_empty() {
            return Ok(true);
        }
        let invites = sqlx::query(
            "SELECT token_hash FROM staff_invites WHERE roles LIKE '%admin%' AND used_at IS NULL AND expires_at > $1",
        )
        .bind(to_unix_ms(now))
        .fetch_all(self.pool())
        .await?;
        Ok(!invites.is_empty())
    }

    /// Holds `pending` on the unused, unexpired link (replacing a setup begun before on it),
    /// for the account the link is for (any name on the first admin's link). Changes no
    /// account, so it carries no audit event: the confirmation, or its failure, is the event.
    /// `Stale` when the link was used or expired meanwhile.
    pub async fn put_staff_setup_pending(
        &self,
        token_hash: &str,
        pending: &PendingSetup,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE staff_invites SET pending_name = $2, pending_password_hash = $3, pending_totp_secret = $4 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $5 AND (name = $2 OR name = '')",
        )
        .bind(token_hash)
        .bind(&pending.name)
        .bind(&pending.password_hash)
        .bind(&pending.sealed_totp_secret)
        .bind(to_unix_ms(now))
        .execute(self.pool())
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Stale);
        }
        Ok(())
    }

    /// Activates a confirmed setup in one transaction: spends the link (only if it is unused,
    /// unexpired and still holds exactly `activation.pending`), creates the account or
    /// replaces its password and TOTP secret (clearing its lock, failures and logged-in
    /// browsers), marks the confirming code's step used, and appends `event`. `Stale` when
    /// the link was used, voided, expired or given another setup meanwhile.
    pub async fn activate_staff_setup(
        &self,
        activation: &Activation<'_>,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<ActivationOutcome, StoreError> {
        let now_ms = to_unix_ms(now);
        let pending = activation.pending;
        let mut tx = self.begin().await?;
        // Spent first (the write that takes SQLite's lock); the pending copies go with it.
        let spent = sqlx::query(
            "UPDATE staff_invites SET used_at = $2, pending_password_hash = '', pending_totp_secret = '' WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND pending_name = $3 AND pending_password_hash = $4 AND pending_totp_secret = $5",
        )
        .bind(activation.token_hash)
        .bind(now_ms)
        .bind(&pending.name)
        .bind(&pending.password_hash)
        .bind(&pending.sealed_totp_secret)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        }
        let updated = if activation.may_reset {
            // The step only moves forward: a code the old secret's last login used stays
            // spent too.
            sqlx::query(
                "UPDATE staff SET roles = $2, password_hash = $3, totp_secret = $4, totp_last_step = CASE WHEN totp_last_step > $5 THEN totp_last_step ELSE $5 END, login_failures = 0, locked = 0, updated_at = $6 WHERE name = $1",
            )
            .bind(&pending.name)
            .bind(activation.roles)
            .bind(&pending.password_hash)
            .bind(&pending.sealed_totp_secret)
            .bind(activation.step)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            0
        };
        if updated == 0 {
            let inserted = sqlx::query(
                "INSERT INTO staff (name, roles, password_hash, totp_secret, totp_last_step, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&pending.name)
            .bind(activation.roles)
            .bind(&pending.password_hash)
            .bind(&pending.sealed_totp_secret)
            .bind(activation.step)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(ActivationOutcome::NameTaken);
            }
        }
        sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
            .bind(&pending.name)
            .execute(&mut *tx)
            .await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(ActivationOutcome::Activated)
    }

    /// Counts a wrong confirming code against the unused, unexpired link; at `limit` the
    /// link is spent (voided) and its pending setup dropped. Appends the event `failed`
    /// makes from the new count and whether the link is now void, and returns both. `Stale`
    /// (and nothing recorded) when the link was used or expired meanwhile.
    pub async fn record_staff_setup_failure(
        &self,
        token_hash: &str,
        limit: i64,
        now: SystemTime,
        failed: impl FnOnce(i64, bool) -> AuditEvent,
    ) -> Result<(i64, bool), StoreError> {
        let now_ms = to_unix_ms(now);
        let mut tx = self.begin().await?;
        // Every SET expression reads the row as it was before this update.
        let row = sqlx::query(
            "UPDATE staff_invites SET code_failures = code_failures + 1, used_at = CASE WHEN code_failures + 1 >= $2 THEN $3 ELSE used_at END, pending_password_hash = CASE WHEN code_failures + 1 >= $2 THEN '' ELSE pending_password_hash END, pending_totp_secret = CASE WHEN code_failures + 1 >= $2 THEN '' ELSE pending_totp_secret END WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $3 RETURNING code_failures",
        )
        .bind(token_hash)
        .bind(limit)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        };
        let failures: i64 = row.try_get(0)?;
        let void = failures >= limit;
        append(&mut tx, &failed(failures, void)).await?;
        tx.commit().await?;
        Ok((failures, void))
    }

    /// Accepts a login: TOTP `step` must be later than every step accepted before and the
    /// account enabled and unlocked; stores the new browser session. `Stale` when not.
    pub async fn accept_staff_login(
        &self,
        name: &str,
        step: i64,
        session_hash: &str,
        csrf: &str,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let now_ms = to_unix_ms(now);
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE staff SET totp_last_step = $2, login_failures = 0 WHERE name = $1 AND totp_last_step < $2 AND locked = 0 AND disabled = 0",
        )
        .bind(name)
        .bind(step)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::Stale);
        }
        sqlx::query(
            "INSERT INTO staff_sessions (id_hash, staff, csrf, created_at, last_seen) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(session_hash)
        .bind(name)
        .bind(csrf)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spends TOTP step `step` of account `name` for a command-line action (no browser
    /// session), resetting its count of failed logins, and records `event`; `Stale` when the
    /// step was spent already (here or at a web login) or the account is locked or disabled.
    pub async fn accept_staff_code(
        &self,
        name: &str,
        step: i64,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE staff SET totp_last_step = $2, login_failures = 0 WHERE name = $1 AND totp_last_step < $2 AND locked = 0 AND disabled = 0",
        )
        .bind(name)
        .bind(step)
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

    /// Counts a failed login against an existing account (locking it at `threshold`) and
    /// records `failed`, plus `locked` when this failure locked it. Returns the count and
    /// whether the account is now locked. For an unknown name only `failed` is recorded.
    pub async fn record_staff_login_failure(
        &self,
        name: &str,
        threshold: i64,
        now: SystemTime,
        failed: &AuditEvent,
        locked: &AuditEvent,
    ) -> Result<(i64, bool), StoreError> {
        let mut tx = self.begin().await?;
        // Every SET expression reads the row as it was before this update: the lock's start
        // is set by the failure that locks, and kept by later ones.
        let row = sqlx::query(
            "UPDATE staff SET login_failures = login_failures + 1, login_failed_at = $3, locked = CASE WHEN login_failures + 1 >= $2 THEN 1 ELSE locked END, locked_at = CASE WHEN locked = 0 AND login_failures + 1 >= $2 THEN $3 ELSE locked_at END WHERE name = $1 RETURNING login_failures, locked",
        )
        .bind(name)
        .bind(threshold)
        .bind(to_unix_ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            Some(row) => (row.try_get(0)?, row.try_get::<i64, _>(1)? != 0),
            None => (0, false),
        };
        append(&mut tx, failed).await?;
        if outcome.1 && outcome.0 == threshold {
            append(&mut tx, locked).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Lifts the lock that began at `locked_at` and has run its time: the account's count
    /// of failed logins starts again from zero. Nothing happens when the account was reset,
    /// or locked anew, meanwhile. No event: the `staff-locked` event said until when.
    pub async fn end_staff_lock(
        &self,
        name: &str,
        locked_at: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE staff SET locked = 0, login_failures = 0 WHERE name = $1 AND locked = 1 AND locked_at = $2",
        )
        .bind(name)
        .bind(to_unix_ms(locked_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The browser session with this id hash.
    pub async fn staff_session(
        &self,
        session_hash: &str,
    ) -> Result<Option<StaffSessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT staff, csrf, last_seen, created_at FROM staff_sessions WHERE id_hash = $1",
        )
        .bind(session_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(StaffSessionRow {
                staff: row.try_get(0)?,
                csrf: row.try_get(1)?,
                last_seen: crate::clock::from_unix_ms(row.try_get(2)?),
                created_at: crate::clock::from_unix_ms(row.try_get(3)?),
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| StoreError::from(e))
    }

    /// Marks the browser session used now.
    pub async fn touch_staff_session(
        &self,
        session_hash: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE staff_sessions SET last_seen = $2 WHERE id_hash = $1")
            .bind(session_hash)
            .bind(to_unix_ms(now))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends a browser session, recording `event` (a logout) when given.
    pub async fn end_staff_session(
        &self,
        session_hash: &str,
        event: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM staff_sessions WHERE id_hash = $1")
            .bind(session_hash)
            .execute(&mut *tx)
            .await?;
        if let Some(event) = event {
            append(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Disables (ending its browser sessions) or enables an account. `NotFound` if unknown.
    pub async fn set_staff_disabled(
        &self,
        name: &str,
        disabled: bool,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let updated =
            sqlx::query("UPDATE staff SET disabled = $2, updated_at = $3 WHERE name = $1")
                .bind(name)
                .bind(i64::from(disabled))
                .bind(to_unix_ms(now))
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::NotFound);
        }
        if disabled {
            sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
}
