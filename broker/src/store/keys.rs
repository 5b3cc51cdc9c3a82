//! The database's record of which CA and sealing key it belongs to, and a sealed secret to
//! check a key against when no record was made yet. What the record means, and what happens
//! when it does not match, is decided in [`crate::keys`].

use std::time::SystemTime;

use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::to_unix_ms;

/// A one-time-password secret as sealed in the database, with whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedSecret {
    /// A technician's.
    Technician {
        /// The vendor.
        vendor: String,
        /// The technician.
        technician: String,
        /// The sealed secret.
        sealed: String,
    },
    /// A staff member's.
    Staff {
        /// The account.
        name: String,
        /// The sealed secret.
        sealed: String,
    },
}

/// The keys a database belongs to, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysRecord {
    /// The CA's fingerprint, `sha256:` and hex ([`crate::pki::BrokerPki::ca_fingerprint`]).
    pub ca_fingerprint: String,
    /// A fixed text sealed with the sealing key.
    pub sealing_check: String,
}

impl Store {
    /// The recorded keys, if any broker or command recorded them yet.
    pub async fn hospital_keys(&self) -> Result<Option<KeysRecord>, StoreError> {
        let row =
            sqlx::query("SELECT ca_fingerprint, sealing_check FROM hospital_keys WHERE id = 1")
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| {
            Ok(KeysRecord {
                ca_fingerprint: row.try_get(0)?,
                sealing_check: row.try_get(1)?,
            })
        })
        .transpose()
    }

    /// Records `keys`, unless keys are recorded already (another broker got there first):
    /// then nothing changes and `false` is returned. No audit event: this is the database's
    /// setup, like its migrations; a refusal later is recorded (see [`crate::keys`]).
    pub async fn record_hospital_keys(
        &self,
        keys: &KeysRecord,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO hospital_keys (id, ca_fingerprint, sealing_check, recorded_at) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&keys.ca_fingerprint)
        .bind(&keys.sealing_check)
        .bind(to_unix_ms(now))
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// One one-time-password secret already sealed in the database: a technician's if there
    /// is one, else a staff member's.
    pub async fn some_sealed_secret(&self) -> Result<Option<SealedSecret>, StoreError> {
        let technician = sqlx::query(
            "SELECT vendor, technician, totp_secret FROM technicians WHERE totp_secret <> '' ORDER BY vendor, technician LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = technician {
            return Ok(Some(SealedSecret::Technician {
                vendor: row.try_get(0)?,
                technician: row.try_get(1)?,
                sealed: row.try_get(2)?,
            }));
        }
        let staff = sqlx::query(
            "SELECT name, totp_secret FROM staff WHERE totp_secret <> '' ORDER BY name LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        staff
            .map(|row| {
                Ok(SealedSecret::Staff {
                    name: row.try_get(0)?,
                    sealed: row.try_get(1)?,
                })
            })
            .transpose()
    }
}
