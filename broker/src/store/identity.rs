//! Vendors, technicians' records, enrollment tokens and the certificate registry.
//!
//! Every change here is one transaction with its audit event. Disabling a technician or a
//! vendor and resetting a technician also end that technician's (or vendor's) open requests
//! and live sessions in the same transaction; the hub sees the ended rows within its poll
//! interval and the live connections close.

use std::collections::HashMap;
use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::append;
use super::tx::WriteTx;
use super::{Store, StoreError};
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::{from_unix_ms, to_unix_ms};
use crate::session::EndReason;

/// A vendor the hospital has taken on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRow {
    /// The vendor's id, as its policy file names it.
    pub vendor: String,
    /// Whether its technicians may connect.
    pub enabled: bool,
    /// When it was added.
    pub added_at: SystemTime,
    /// Who added it.
    pub added_by: String,
    /// Why it was disabled ('' while enabled).
    pub disabled_reason: String,
}

/// An enrollment token as stored (by its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The vendor it enrolls.
    pub vendor: String,
    /// The technician it enrolls.
    pub technician: String,
    /// When it stops working.
    pub expires_at: SystemTime,
    /// When it was spent, if it was.
    pub used_at: Option<SystemTime>,
    /// When a newer token or a disabling voided it, if one did.
    pub void_at: Option<SystemTime>,
}

/// A registered client certificate, with the state of its technician and vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStanding {
    /// The vendor the certificate was issued to.
    pub vendor: String,
    /// The technician the certificate was issued to.
    pub technician: String,
    /// When it stops being valid.
    pub not_after: SystemTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// Whether the technician is enabled (false if the technician row is gone).
    pub technician_enabled: bool,
    /// Whether the vendor is enabled (false if the vendor row is gone).
    pub vendor_enabled: bool,
    /// Why the technician was disabled ('' while enabled).
    pub technician_disabled_reason: String,
    /// Why the vendor was disabled ('' while enabled).
    pub vendor_disabled_reason: String,
}

/// A certificate to register, as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The serial number, hex.
    pub serial: String,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

/// A new technician's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTechnician<'a> {
    /// The vendor.
    pub vendor: &'a str,
    /// The technician's id within the vendor.
    pub technician: &'a str,
    /// Full name.
    pub display_name: &'a str,
    /// Contact address.
    pub email: &'a str,
}

/// A token to store: its hash and when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenToStore<'a> {
    /// SHA-256 of the token's bytes, hex.
    pub hash: &'a str,
    /// When it stops working.
    pub expires_at: SystemTime,
}

/// What finishing an enrollment stores.
pub struct EnrollmentRecord<'a> {
    /// The token's hash.
    pub token_hash: &'a str,
    /// Whom it enrolls.
    pub vendor: &'a str,
    /// Whom it enrolls.
    pub technician: &'a str,
    /// The new TOTP secret, sealed.
    pub sealed_totp_secret: &'a str,
    /// The new certificate.
    pub certificate: &'a CertificateRecord,
}

impl Store {
    /// Adds a vendor. `Stale` if it was already added.
    pub async fn add_vendor(
        &self,
        vendor: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO vendors (vendor, enabled, added_at, added_by) VALUES ($1, 1, $2, $3) ON CONFLICT (vendor) DO NOTHING",
        )
        .bind(vendor)
        .bind(to_unix_ms(now))
        .bind(by)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Err(StoreError::Stale);
        }
        let event = AuditEvent::new(now, Actor::Staff(by.to_owned()), EventKind::VendorAdded)
            .for_vendor(vendor);
        append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every vendor taken on, by id.
    pub async fn vendors(&self) -> Result<Vec<VendorRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT vendor, enabled, added_at, added_by, disabled_reason FROM vendors ORDER BY vendor",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(vendor_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// One vendor, if taken on.
    pub async fn vendor_row(&self, vendor: &str) -> Result<Option<VendorRow>, StoreError> {
        let row = sqlx::query(
            "SELECT vendor, enabled, added_at, added_by, disabled_reason FROM vendors WHERE vendor = $1",
        )
        .bind(vendor)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(vendor_from_row)
            .transpose()
            .map_err(StoreError::from)
    }

    /// Enables or disables a vendor. Disabling voids the vendor's unused enrollment tokens
    /// and ends every open request and live session of its technicians (reason
    /// `technician-disabled`), all recorded. `NotFound` if the vendor was never added,
    /// `Stale` if it already was in that state. Returns how many requests were ended.
    pub async fn set_vendor_enabled(
        &self,
        vendor: &str,
        enabled: bool,
        reason: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE vendors SET enabled = $2, disabled_reason = $3 WHERE vendor = $1 AND enabled <> $2",
        )
        .bind(vendor)
        .bind(i64::from(enabled))
        .bind(if enabled { "" } else { reason })
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(why_unchanged(
                &mut tx,
                "SELECT 1 FROM vendors WHERE vendor = $1",
                &[vendor],
            )
            .await);
        }
        let actor = Actor::Staff(by.to_owned());
        let kind = if enabled {
            EventKind::VendorEnabled
        } else {
            EventKind::VendorDisabled
        };
        let ended = if enabled {
            0
        } else {
            withdraw_access(
                &mut tx,
                vendor,
                None,
                EndReason::TechnicianDisabled,
                &actor,
                reason,
                now,
            )
            .await?
        };
        let event = AuditEvent::new(now, actor, kind)
            .for_vendor(vendor)
            .detail("reason", reason)
            .detail("requests_ended", ended);
        append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Adds a technician (not yet enrolled) with their first enrollment token. `NotFound` if
    /// the vendor was never added, `Stale` if the vendor is disabled or the technician exists.
    pub async fn add_technician(
        &self,
        new: &NewTechnician<'_>,
        token: TokenToStore<'_>,
        by: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // The write comes first (SQLite takes its write lock at once, see the module docs of
        // `store`); why nothing was inserted is asked afterwards.
        let inserted = sqlx::query(
            "INSERT INTO technicians (vendor, technician, totp_secret, created_at, display_name, email) SELECT $1, $2, '', $3, $4, $5 WHERE EXISTS (SELECT 1 FROM vendors WHERE vendor = $1 AND enabled = 1) ON CONFLICT (vendor, technician) DO NOTHING",
        )
        .bind(new.vendor)
        .bind(new.technician)
        .bind(to_unix_ms(now))
        .bind(new.display_name)
        .bind(new.email)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Err(why_unchanged(
                &mut tx,
                "SELECT 1 FROM vendors WHERE vendor = $1",
                &[new.vendor],
            )
            .await);
        }
        insert_token(&mut tx, new.vendor, new.technician, token, by, now).await?;
        let event = AuditEvent::new(now, Actor::Staff(by.to_owned()), EventKind::TechnicianAdded)
            .technician(new.vendor, new.technician)
            .detail("name", new.display_name)
            .detail("email", new.email)
            .detail(
                "token_expires_at",
                crate::audit::timestamp(token.expires_at),
            );
        append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Resets a technician: revokes every certificate they hold, forgets their TOTP secret,
    /// voids their unused tokens, stores a new token, and ends their open requests and live
    /// sessions (reason `credentials-revoked`). `NotFound` if unknown.
    pub async fn reset_technician(
        &self,
        vendor: &str,
        technician: &str,
        token: TokenToStore<'_>,
        by: &str,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE technicians SET totp_secret = '', totp_last_step = 0, otp_failures = 0, locked = 0, enrolled_at = 0 WHERE vendor = $1 AND technician = $2",
        )
        .bind(vendor)
        .bind(technician)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        let revoked = sqlx::query(
            "UPDATE certificates SET revoked_at = $3, revoked_by = $4, revoke_reason = 'reset' WHERE vendor = $1 AND technician = $2 AND revoked_at = 0",
        )
        .bind(vendor)
        .bind(technician)
        .bind(to_unix_ms(now))
        .bind(by)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let actor = Actor::Staff(by.to_owned());
        let ended = withdraw_access(
            &mut tx,
            vendor,
            Some(technician),
            EndReason::CredentialsRevoked,
            &actor,
            "reset",
            now,
        )
        .await?;
        insert_token(&mut tx, vendor, technician, token, by, now).await?;
        let event = AuditEvent::new(now, actor, EventKind::TechnicianReset)
            .technician(vendor, technician)
            .detail("certificates_revoked", revoked)
            .detail("requests_ended", ended)
            .detail(
                "token_expires_at",
                crate::audit::timestamp(token.expires_at),
            );
        append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Enables or disables a technician. Disabling voids their unused tokens and ends their
    /// open requests and live sessions (reason `technician-disabled`). `NotFound` if unknown,
    /// `Stale` if already in that state. Returns how many requests were ended.
    pub async fn set_technician_enabled(
        &self,
        vendor: &str,
        technician: &str,
        enabled: bool,
        reason: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE technicians SET enabled = $3, disabled_reason = $4 WHERE vendor = $1 AND technician = $2 AND enabled <> $3",
        )
        .bind(vendor)
        .bind(technician)
        .bind(i64::from(enabled))
        .bind(if enabled { "" } else { reason })
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(why_unchanged(
                &mut tx,
                "SELECT 1 FROM technicians WHERE vendor = $1 AND technician = $2",
                &[vendor, technician],
            )
            .await);
        }
        let actor = Actor::Staff(by.to_owned());
        let ended = if enabled {
            0
        } else {
            withdraw_access(
                &mut tx,
                vendor,
                Some(technician),
                EndReason::TechnicianDisabled,
                &actor,
                reason,
                now,
            )
            .await?
        };
        let kind = if enabled {
            EventKind::TechnicianEnabled
        } else {
            EventKind::TechnicianDisabled
        };
        let event = AuditEvent::new(now, actor, kind)
            .technician(vendor, technician)
            .detail("reason", reason)
            .detail("requests_ended", ended);
        append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// The token with this hash, if one was ever issued.
    pub async fn enrollment_token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query(
            "SELECT vendor, technician, expires_at, used_at, void_at FROM enrollment_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let optional = |index: usize| -> Result<Option<SystemTime>, sqlx::Error> {
            let ms: i64 = row.try_get(index)?;
            Ok((ms != 0).then(|| from_unix_ms(ms)))
        };
        Ok(Some(TokenRow {
            vendor: row.try_get(0)?,
            technician: row.try_get(1)?,
            expires_at: from_unix_ms(row.try_get(2)?),
            used_at: optional(3)?,
            void_at: optional(4)?,
        }))
    }

    /// Spends the token and stores what enrollment made: the technician's sealed TOTP secret
    /// (replacing any, with fresh OTP memory) and their certificate, with `events`, in one
    /// transaction. `Stale` if the token was spent, voided or expired in the meantime, or the
    /// technician or vendor was disabled.
    pub async fn complete_enrollment(
        &self,
        record: &EnrollmentRecord<'_>,
        now: SystemTime,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let spent = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at = 0 AND void_at = 0 AND expires_at > $2 AND vendor = $3 AND technician = $4",
        )
        .bind(record.token_hash)
        .bind(to_unix_ms(now))
        .bind(record.vendor)
        .bind(record.technician)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            return Err(StoreError::Stale);
        }
        let enrolled = sqlx::query(
            "UPDATE technicians SET totp_secret = $3, totp_last_step = 0, otp_failures = 0, locked = 0, enrolled_at = $4 WHERE vendor = $1 AND technician = $2 AND enabled = 1 AND EXISTS (SELECT 1 FROM vendors WHERE vendors.vendor = $1 AND vendors.enabled = 1)",
        )
        .bind(record.vendor)
        .bind(record.technician)
        .bind(record.sealed_totp_secret)
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await?;
        if enrolled.rows_affected() != 1 {
            return Err(StoreError::Stale);
        }
        insert_certificate(
            &mut tx,
            record.vendor,
            record.technician,
            record.certificate,
            now,
        )
        .await?;
        for event in events {
            append(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Registers a certificate issued outside enrollment (tools that provision many
    /// technicians at once, such as the benchmark), with its audit event.
    pub async fn register_certificate(
        &self,
        vendor: &str,
        technician: &str,
        certificate: &CertificateRecord,
        now: SystemTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_certificate(&mut tx, vendor, technician, certificate, now).await?;
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The registry's view of the certificate with this fingerprint, if it is registered.
    pub async fn certificate_standing(
        &self,
        fingerprint: &str,
    ) -> Result<Option<CertificateStanding>, StoreError> {
        let row = sqlx::query(
            "SELECT c.vendor, c.technician, c.not_after, c.revoked_at, COALESCE(t.enabled, 0), COALESCE(v.enabled, 0), COALESCE(t.disabled_reason, ''), COALESCE(v.disabled_reason, '') FROM certificates c LEFT JOIN technicians t ON t.vendor = c.vendor AND t.technician = c.technician LEFT JOIN vendors v ON v.vendor = c.vendor WHERE c.fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(standing_from_row).transpose()
    }

    /// The registry's view of each of `fingerprints` that is registered, in one read.
    pub async fn certificate_standings(
        &self,
        fingerprints: &[String],
    ) -> Result<HashMap<String, CertificateStanding>, StoreError> {
        let mut standings = HashMap::new();
        // A few hundred at a time keeps well under every driver's limit on bound parameters.
        for chunk in fingerprints.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT c.vendor, c.technician, c.not_after, c.revoked_at, COALESCE(t.enabled, 0), COALESCE(v.enabled, 0), COALESCE(t.disabled_reason, ''), COALESCE(v.disabled_reason, ''), c.fingerprint FROM certificates c LEFT JOIN technicians t ON t.vendor = c.vendor AND t.technician = c.technician LEFT JOIN vendors v ON v.vendor = c.vendor WHERE c.fingerprint IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for fingerprint in chunk {
                query = query.bind(fingerprint);
            }
            for row in query.fetch_all(self.pool()).await? {
                standings.insert(row.try_get(8)?, standing_from_row(&row)?);
            }
        }
        Ok(standings)
    }

    /// When each technician's newest unrevoked certificate expires, by `(vendor, technician)`.
    pub async fn certificate_expiries(
        &self,
    ) -> Result<Vec<(String, String, SystemTime)>, StoreError> {
        let rows = sqlx::query(
            "SELECT vendor, technician, MAX(not_after) FROM certificates WHERE revoked_at = 0 GROUP BY vendor, technician",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    from_unix_ms(row.try_get(2)?),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// Why a conditional write changed nothing: `Stale` when the row `exists_sql` looks for is
/// there (it was already in that state, or is disabled), `NotFound` when it is not.
async fn why_unchanged(tx: &mut WriteTx, exists_sql: &'static str, binds: &[&str]) -> StoreError {
    let mut query = sqlx::query(exists_sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    match query.fetch_optional(&mut **tx).await {
        Ok(Some(_)) => StoreError::Stale,
        Ok(None) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}

fn vendor_from_row(row: &AnyRow) -> Result<VendorRow, sqlx::Error> {
    Ok(VendorRow {
        vendor: row.try_get(0)?,
        enabled: row.try_get::<i64, _>(1)? != 0,
        added_at: from_unix_ms(row.try_get(2)?),
        added_by: row.try_get(3)?,
        disabled_reason: row.try_get(4)?,
    })
}

async fn insert_token(
    tx: &mut WriteTx,
    vendor: &str,
    technician: &str,
    token: TokenToStore<'_>,
    by: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrollment_tokens (token_hash, vendor, technician, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token.hash)
    .bind(vendor)
    .bind(technician)
    .bind(to_unix_ms(now))
    .bind(by)
    .bind(to_unix_ms(token.expires_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes away what one technician (or every technician of `vendor`) holds: voids their
/// unused enrollment tokens and ends their open requests and live sessions for `reason`,
/// each recorded. Returns how many requests were ended.
async fn withdraw_access(
    tx: &mut WriteTx,
    vendor: &str,
    technician: Option<&str>,
    reason: EndReason,
    actor: &Actor,
    note: &str,
    now: SystemTime,
) -> Result<u64, StoreError> {
    void_tokens(tx, vendor, technician, now).await?;
    end_requests_of(tx, vendor, technician, reason, actor, note, now).await
}

/// Voids the unused tokens of one technician, or of every technician of `vendor`.
async fn void_tokens(
    tx: &mut WriteTx,
    vendor: &str,
    technician: Option<&str>,
    now: SystemTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE enrollment_tokens SET void_at = $3 WHERE vendor = $1 AND ($2 IS NULL OR technician = $2) AND used_at = 0 AND void_at = 0",
    )
    .bind(vendor)
    .bind(technician)
    .bind(to_unix_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_certificate(
    tx: &mut WriteTx,
    vendor: &str,
    technician: &str,
    certificate: &CertificateRecord,
    now: SystemTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO certificates (fingerprint, serial, vendor, technician, issued_at, not_after) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&certificate.fingerprint)
    .bind(&certificate.serial)
    .bind(vendor)
    .bind(technician)
    .bind(to_unix_ms(now))
    .bind(to_unix_ms(certificate.not_after))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends every open request (requested, approved, active) of one technician, or of every
/// technician of `vendor`, recording each: `session-ended` for live sessions,
/// `request-expired` for requests that never opened. Returns how many.
async fn end_requests_of(
    tx: &mut WriteTx,
    vendor: &str,
    technician: Option<&str>,
    reason: EndReason,
    actor: &Actor,
    note: &str,
    now: SystemTime,
) -> Result<u64, StoreError> {
    let by = match actor {
        Actor::Staff(name) => Some(name.as_str()),
        _ => None,
    };
    let rows = sqlx::query(
        "UPDATE requests SET state = 'ended', end_reason = $3, ended_by = $4, note = $5, ended_at = $6, updated_at = $6 WHERE vendor = $1 AND ($2 IS NULL OR technician = $2) AND state IN ('requested', 'approved', 'active') RETURNING id, technician, CASE WHEN opened_at IS NULL THEN 0 ELSE 1 END",
    )
    .bind(vendor)
    .bind(technician)
    .bind(reason.as_str())
    .bind(by)
    .bind(note)
    .bind(to_unix_ms(now))
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let id: String = row.try_get(0)?;
        let technician: String = row.try_get(1)?;
        let was_live = row.try_get::<i64, _>(2)? != 0;
        let kind = if was_live {
            EventKind::SessionEnded
        } else {
            EventKind::RequestExpired
        };
        let event = AuditEvent::new(now, actor.clone(), kind)
            .request(id)
            .technician(vendor, &technician)
            .detail("reason", reason.as_str());
        append(tx, &event).await?;
    }
    Ok(rows.len() as u64)
}

/// A standing from the first eight columns of a registry query.
fn standing_from_row(row: &AnyRow) -> Result<CertificateStanding, StoreError> {
    let revoked_at: i64 = row.try_get(3)?;
    Ok(CertificateStanding {
        vendor: row.try_get(0)?,
        technician: row.try_get(1)?,
        not_after: from_unix_ms(row.try_get(2)?),
        revoked_at: (revoked_at != 0).then(|| from_unix_ms(revoked_at)),
        technician_enabled: row.try_get::<i64, _>(4)? != 0,
        vendor_enabled: row.try_get::<i64, _>(5)? != 0,
        technician_disabled_reason: row.try_get(6)?,
        vendor_disabled_reason: row.try_get(7)?,
    })
}
