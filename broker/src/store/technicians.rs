//! Technicians: their sealed TOTP secret, the last accepted step, and the lockout counter.
//! Adding, enrolling, disabling and resetting technicians is in `identity.rs`.

use sqlx::Row;

use std::time::SystemTime;

use super::audit::append;
use super::{Store, StoreError};
use crate::audit::{Actor, AuditEvent, EventKind};

/// A technician as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TechnicianRow {
    /// The vendor.
    pub vendor: String,
    /// The technician.
    pub technician: String,
    /// The TOTP secret, sealed (see [`crate::secret::SealingKey`]); empty until the
    /// technician enrolls.
    pub sealed_totp_secret: String,
    /// The last TOTP step accepted.
    pub totp_last_step: i64,
    /// Consecutive wrong codes.
    pub otp_failures: i64,
    /// Locked after too many wrong codes, until an admin unlocks.
    pub locked: bool,
    /// Full name, as the hospital typed it.
    pub display_name: String,
    /// Contact address.
    pub email: String,
    /// Whether the technician may connect.
    pub enabled: bool,
    /// Why the technician was disabled ('' while enabled).
    pub disabled_reason: String,
    /// When the technician last enrolled (`None`: not enrolled, or reset since).
    pub enrolled_at: Option<SystemTime>,
}

impl TechnicianRow {
    /// Whether the technician has enrolled (has a certificate and a TOTP secret).
    pub fn is_enrolled(&self) -> bool {
        !self.sealed_totp_secret.is_empty()
    }
}

/// What a wrong code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpFailure {
    /// Consecutive wrong codes now.
    pub failures: i64,
    /// Whether this one locked the technician.
    pub locked: bool,
}

impl Store {
    /// The technician, if known.
    pub async fn technician(
        &self,
        vendor: &str,
        technician: &str,
    ) -> Result<Option<TechnicianRow>, StoreError> {
        let row = sqlx::query(
            "SELECT vendor, technician, totp_secret, totp_last_step, otp_failures, locked, display_name, email, enabled, disabled_reason, enrolled_at FROM technicians WHERE vendor = $1 AND technician = $2",
        )
        .bind(vendor)
        .bind(technician)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(technician_from_row)
            .transpose()
            .map_err(StoreError::from)
    }

    /// Every technician, by vendor then name.
    pub async fn technicians(&self) -> Result<Vec<TechnicianRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT vendor, technician, totp_secret, totp_last_step, otp_failures, locked, display_name, email, enabled, disabled_reason, enrolled_at FROM technicians ORDER BY vendor, technician",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(technician_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Counts a wrong code, and records it (and a lockout at `lockout_after` consecutive
    /// failures, the hospital's `otp_lockout_after`) in the audit log, in one transaction.
    pub async fn record_otp_failure(
        &self,
        vendor: &str,
        technician: &str,
        request: &str,
        why: &str,
        lockout_after: i64,
        at: SystemTime,
    ) -> Result<OtpFailure, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE technicians SET otp_failures = otp_failures + 1, locked = CASE WHEN otp_failures + 1 >= $3 THEN 1 ELSE locked END WHERE vendor = $1 AND technician = $2 RETURNING otp_failures, locked",
        )
        .bind(vendor)
        .bind(technician)
        .bind(lockout_after)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let failure = OtpFailure {
            failures: row.try_get(0)?,
            locked: row.try_get::<i64, _>(1)? != 0,
        };
        let actor = Actor::Technician {
            vendor: vendor.to_owned(),
            technician: technician.to_owned(),
        };
        let event = AuditEvent::new(at, actor.clone(), EventKind::OtpFailed)
            .request(request)
            .technician(vendor, technician)
            .detail("why", why)
            .detail("consecutive_failures", failure.failures);
        append(&mut tx, &event).await?;
        if failure.locked && failure.failures == lockout_after {
            let locked = AuditEvent::new(at, actor, EventKind::TechnicianLocked)
                .technician(vendor, technician)
                .detail("consecutive_failures", failure.failures);
            append(&mut tx, &locked).await?;
        }
        tx.commit().await?;
        Ok(failure)
    }

    /// Unlocks a technician locked by wrong codes, recording who did. `NotFound` if unknown.
    pub async fn unlock_technician(
        &self,
        vendor: &str,
        technician: &str,
        by: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE technicians SET locked = 0, otp_failures = 0 WHERE vendor = $1 AND technician = $2",
        )
        .bind(vendor)
        .bind(technician)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        let event = AuditEvent::new(
            at,
            Actor::Staff(by.to_owned()),
            EventKind::TechnicianUnlocked,
        )
        .technician(vendor, technician);
        append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Reads `vendor, technician, totp_secret, totp_last_step, otp_failures, locked,
/// display_name, email, enabled, disabled_reason, enrolled_at`.
fn technician_from_row(row: &sqlx::any::AnyRow) -> Result<TechnicianRow, sqlx::Error> {
    Ok(TechnicianRow {
        vendor: row.try_get(0)?,
        technician: row.try_get(1)?,
        sealed_totp_secret: row.try_get(2)?,
        totp_last_step: row.try_get(3)?,
        otp_failures: row.try_get(4)?,
        locked: row.try_get::<i64, _>(5)? != 0,
        display_name: row.try_get(6)?,
        email: row.try_get(7)?,
        enabled: row.try_get::<i64, _>(8)? != 0,
        disabled_reason: row.try_get(9)?,
        enrolled_at: match row.try_get::<i64, _>(10)? {
            0 => None,
            ms => Some(crate::clock::from_unix_ms(ms)),
        },
    })
}
