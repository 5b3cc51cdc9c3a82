//! Sender leases: which broker sends to a destination (the approvers' webhook, a syslog
//! collector), until when, and how far it got. What the lease means, and when a takeover is
//! recorded, is decided in [`crate::sender`]; here are the conditional writes.
//!
//! Lease times are the database's clock (`expires_at` and "now" are both computed by the
//! database, in Unix milliseconds), so brokers whose own clocks disagree still agree on when
//! a lease ends. Every write names the holder and the term it holds; a broker that lost its
//! lease changes nothing.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};

use super::audit::append;
use super::{Backend, Store, StoreError};
use crate::audit::AuditEvent;

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderLease {
    /// `webhook`, `audit-syslog`.
    pub feature: String,
    /// Where it sends (never a webhook URL's path).
    pub destination: String,
    /// The broker holding it, or that held it last.
    pub holder: String,
    /// Bumped at each acquisition.
    pub term: i64,
    /// When it ends unless renewed, in the database's Unix milliseconds; 0 when let go.
    pub expires_at: i64,
    /// The last audit event handled: the next holder starts after it.
    pub after_seq: i64,
}

/// The lease as it was before this broker took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousLease {
    /// Who held it.
    pub holder: String,
    /// How it stood.
    pub state: LeaseState,
}

/// How a lease stood when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Its holder let it go at shutdown.
    Released,
    /// It ran out without being renewed (its holder stopped, crashed, was paused or cut off).
    Expired,
    /// It was still running (only ever taken so by its own holder, back from a crash).
    Running,
}

/// What became of an attempt to take a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This broker holds it now, in `term`, and resumes after `after_seq`.
    Taken {
        /// The term this broker holds.
        term: i64,
        /// The last audit event handled by the previous holders.
        after_seq: i64,
        /// `None` when the lease did not exist before.
        previous: Option<PreviousLease>,
    },
    /// Another broker holds it, for this long still (by the database's clock).
    HeldBy {
        /// The broker.
        holder: String,
        /// Until its lease runs out unless renewed.
        remaining: Duration,
    },
}

impl Backend {
    /// The database's time now, in Unix milliseconds, as an SQL expression.
    fn now_ms(self) -> &'static str {
        match self {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Takes the lease of (`feature`, `destination`) for `holder` for `ttl`, when nobody holds
    /// it, it ran out, or `holder` holds it already (a broker back from a crash). A lease that
    /// does not exist yet starts after `first_after_seq`. When `takeover` makes an event of
    /// the lease as it was, it is recorded in the same transaction as the taking.
    ///
    /// Correct under concurrency: the lease is read, then taken with an update conditional on
    /// its term being the one read (and still free); of two brokers racing, one changes the
    /// row and the other finds it held.
    pub async fn acquire_lease(
        &self,
        feature: &str,
        destination: &str,
        holder: &str,
        ttl: Duration,
        first_after_seq: i64,
        takeover: impl FnOnce(&PreviousLease, i64) -> Option<AuditEvent>,
    ) -> Result<Acquired, StoreError> {
        let now = self.backend().now_ms();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT holder, term, expires_at, after_seq, {now} FROM sender_leases WHERE feature = $1 AND destination = $2"
        )))
        .bind(feature)
        .bind(destination)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            let inserted = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO sender_leases (feature, destination, holder, term, expires_at, after_seq) VALUES ($1, $2, $3, 1, {now} + $4, $5) ON CONFLICT (feature, destination) DO NOTHING"
            )))
            .bind(feature)
            .bind(destination)
            .bind(holder)
            .bind(ms(ttl))
            .bind(first_after_seq)
            .execute(self.pool())
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Acquired::Taken {
                    term: 1,
                    after_seq: first_after_seq,
                    previous: None,
                });
            }
            // Another broker made it first: it holds it.
            return Ok(Acquired::HeldBy {
                holder: String::new(),
                remaining: ttl,
            });
        };
        let previous_holder: String = row.try_get(0)?;
        let term: i64 = row.try_get(1)?;
        let expires_at: i64 = row.try_get(2)?;
        let after_seq: i64 = row.try_get(3)?;
        let db_now: i64 = row.try_get(4)?;
        if previous_holder != holder && expires_at > db_now {
            return Ok(Acquired::HeldBy {
                holder: previous_holder,
                remaining: Duration::from_millis(u64::try_from(expires_at - db_now).unwrap_or(0)),
            });
        }
        let previous = PreviousLease {
            holder: previous_holder,
            state: if expires_at == 0 {
                LeaseState::Released
            } else if expires_at <= db_now {
                LeaseState::Expired
            } else {
                LeaseState::Running
            },
        };
        let mut tx = self.begin().await?;
        let taken = sqlx::query(AssertSqlSafe(format!(
            "UPDATE sender_leases SET holder = $3, term = term + 1, expires_at = {now} + $4 WHERE feature = $1 AND destination = $2 AND term = $5 AND (holder = $3 OR expires_at <= {now})"
        )))
        .bind(feature)
        .bind(destination)
        .bind(holder)
        .bind(ms(ttl))
        .bind(term)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken != 1 {
            tx.rollback().await?;
            return Ok(Acquired::HeldBy {
                holder: String::new(),
                remaining: ttl,
            });
        }
        if let Some(event) = takeover(&previous, after_seq) {
            append(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(Acquired::Taken {
            term: term + 1,
            after_seq,
            previous: Some(previous),
        })
    }

    /// Extends `holder`'s lease in `term` by `ttl` from now and, with `after_seq`, moves its
    /// cursor there (never back). `false` when the lease is no longer `holder`'s in `term`,
    /// or ran out: nothing changed, and the holder must stop sending.
    pub async fn renew_lease(
        &self,
        feature: &str,
        destination: &str,
        holder: &str,
        term: i64,
        ttl: Duration,
        after_seq: Option<i64>,
    ) -> Result<bool, StoreError> {
        let now = self.backend().now_ms();
        let renewed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE sender_leases SET expires_at = {now} + $5, after_seq = CASE WHEN $6 > after_seq THEN $6 ELSE after_seq END WHERE feature = $1 AND destination = $2 AND holder = $3 AND term = $4 AND expires_at > {now}"
        )))
        .bind(feature)
        .bind(destination)
        .bind(holder)
        .bind(term)
        .bind(ms(ttl))
        .bind(after_seq.unwrap_or(i64::MIN))
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Lets `holder`'s lease in `term` go (at shutdown), so another broker takes it at once
    /// rather than when it runs out. Nothing changes when it is no longer `holder`'s.
    pub async fn release_lease(
        &self,
        feature: &str,
        destination: &str,
        holder: &str,
        term: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sender_leases SET expires_at = 0 WHERE feature = $1 AND destination = $2 AND holder = $3 AND term = $4",
        )
        .bind(feature)
        .bind(destination)
        .bind(holder)
        .bind(term)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The database's clock now, in Unix milliseconds: what lease expiries are counted on.
    pub async fn database_now_ms(&self) -> Result<i64, StoreError> {
        let sql = format!("SELECT {}", self.backend().now_ms());
        let row = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Every lease, by feature and destination.
    pub async fn sender_leases(&self) -> Result<Vec<SenderLease>, StoreError> {
        sqlx::query(
            "SELECT feature, destination, holder, term, expires_at, after_seq FROM sender_leases ORDER BY feature, destination",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok(SenderLease {
                feature: row.try_get(0)?,
                destination: row.try_get(1)?,
                holder: row.try_get(2)?,
                term: row.try_get(3)?,
                expires_at: row.try_get(4)?,
                after_seq: row.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
    }
}
