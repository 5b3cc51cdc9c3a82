//! The hospital's keys, checked against the database's record of them.
//!
//! Every broker of one hospital, and every admin command, must hold the same CA
//! (`DATA_DIR/pki/`) and sealing key (`DATA_DIR/secret.key`): the CA is what technicians'
//! clients pin and what their certificates chain to, and the sealing key is the only key that
//! opens the one-time-password secrets in the database. A broker started against a shared
//! PostgreSQL with a fresh data directory, or a data directory restored without its
//! `secret.key`, would otherwise make keys of its own and fail later, one technician at a
//! time; worse, it would enroll technicians under a second CA and seal their secrets with a
//! second key, into the same database.
//!
//! So the first broker or command that opens a database records the CA's fingerprint and a
//! fixed text sealed with the sealing key (it opens with that key only, and tells nothing
//! about it). Every later open compares, before this data directory gets any key of its own:
//! missing or other keys stop the program with one sentence saying what to copy from where,
//! and the refusal is recorded (`keys-refused`). A database made before the record existed
//! is checked against a secret already sealed in it before its record is written.
//!
//! This module makes no key itself ([`crate::pki`] and [`crate::secret`] do) and never
//! replaces one: which keys are right is the admin's call, made by copying files.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::pki::{BrokerPki, PkiError, TechnicianIdentity};
use crate::secret::SealingKey;
use crate::store::{KeysRecord, SealedSecret, Store, StoreError};

/// What the sealing-key check value is bound to (distinct from any secret's row).
const CHECK_BINDING: &str = "sekisho:sealing-key-check";
/// What the check value says once opened.
const CHECK_TEXT: &[u8] = b"this database's secrets are sealed with this key";

/// The files of a data directory that hold the hospital's keys (the others, `broker.pem`,
/// `broker.key` and `broker-id`, belong to each broker).
const KEY_FILES: [&str; 3] = ["secret.key", "pki/ca.pem", "pki/ca.key"];

/// What every admin who sees a refusal must do, in the same words each time.
const WHAT_TO_DO: &str = "copy pki/ca.pem, pki/ca.key and secret.key from a broker of this \
                          hospital (or restore them from its backup) into the data directory, \
                          then start again";

/// Why this data directory's keys were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The database has recorded keys, and a key file is missing here.
    #[error(
        "{data_dir} has no {file}, but the database belongs to brokers whose CA is {recorded}: {WHAT_TO_DO}"
    )]
    Missing {
        /// The data directory.
        data_dir: PathBuf,
        /// The missing file, relative to the data directory.
        file: &'static str,
        /// The recorded CA fingerprint.
        recorded: String,
    },
    /// The CA here is not the recorded one.
    #[error(
        "{data_dir}/pki holds the CA {found}, but the database belongs to brokers whose CA is {recorded}: {WHAT_TO_DO}"
    )]
    OtherCa {
        /// The data directory.
        data_dir: PathBuf,
        /// This directory's CA fingerprint.
        found: String,
        /// The recorded CA fingerprint.
        recorded: String,
    },
    /// The sealing key here does not open the recorded check value.
    #[error(
        "{data_dir}/secret.key is not the key the database's secrets are sealed with (its brokers' CA is {recorded}): {WHAT_TO_DO}"
    )]
    OtherSealingKey {
        /// The data directory.
        data_dir: PathBuf,
        /// The recorded CA fingerprint.
        recorded: String,
    },
    /// Nothing recorded yet, and a secret already in the database does not open with the
    /// sealing key here.
    #[error(
        "{data_dir}/secret.key does not open the one-time-password secrets already in the database: {WHAT_TO_DO}"
    )]
    SecretsSealedElsewhere {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A key file could not be read or made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The database could not be read or written.
    #[error("the database cannot be used: {0}")]
    Store(#[from] StoreError),
}

impl KeysError {
    /// Why, in a word for the audit record.
    fn reason(&self) -> &'static str {
        match self {
            KeysError::Missing { .. } => "missing",
            KeysError::OtherCa { .. } => "other-ca",
            KeysError::OtherSealingKey { .. } => "other-sealing-key",
            KeysError::SecretsSealedElsewhere { .. } => "secrets-sealed-elsewhere",
            KeysError::Pki(_) | KeysError::Store(_) => "unusable",
        }
    }
}

/// The sealing key and CA of `data_dir`, made on the first start of a new hospital, and
/// checked against (or, the first time, recorded in) `store`. A refusal is recorded with
/// `actor` before it is returned; nothing is created in `data_dir` when the database has
/// recorded keys that are missing there.
pub async fn open(
    data_dir: &Path,
    store: &Store,
    actor: &Actor,
    now: SystemTime,
) -> Result<(SealingKey, BrokerPki), KeysError> {
    match open_checked(data_dir, store, now).await {
        Ok(keys) => Ok(keys),
        Err(refusal @ (KeysError::Pki(_) | KeysError::Store(_))) => Err(refusal),
        Err(refusal) => {
            let event = AuditEvent::new(now, actor.clone(), EventKind::KeysRefused)
                .detail("data_dir", data_dir.display())
                .detail("reason", refusal.reason())
                .detail("message", &refusal);
            // The refusal stands whether or not it could be recorded.
            if let Err(e) = store.record(&event).await {
                tracing::error!(error = %e, "could not record the refusal of this data directory's keys");
            }
            Err(refusal)
        }
    }
}

async fn open_checked(
    data_dir: &Path,
    store: &Store,
    now: SystemTime,
) -> Result<(SealingKey, BrokerPki), KeysError> {
    let recorded = store.hospital_keys().await?;
    if let Some(record) = &recorded
        && let Some(file) = KEY_FILES.iter().find(|f| !data_dir.join(f).exists())
    {
        return Err(KeysError::Missing {
            data_dir: data_dir.to_owned(),
            file,
            recorded: record.ca_fingerprint.clone(),
        });
    }
    let sealing_key = SealingKey::load_or_create(data_dir)?;
    let pki = BrokerPki::load_or_create(data_dir)?;
    let record = match recorded {
        Some(record) => record,
        None => record_first(data_dir, store, &sealing_key, &pki, now).await?,
    };
    check(data_dir, &record, &sealing_key, &pki)?;
    Ok((sealing_key, pki))
}

/// Records this directory's keys for a database that has none recorded, after checking
/// them against a secret already sealed in it. Returns the record now in force: ours, or
/// the one another broker wrote first.
async fn record_first(
    data_dir: &Path,
    store: &Store,
    sealing_key: &SealingKey,
    pki: &BrokerPki,
    now: SystemTime,
) -> Result<KeysRecord, KeysError> {
    if let Some(secret) = store.some_sealed_secret().await? {
        let (binding, sealed) = match &secret {
            SealedSecret::Technician {
                vendor,
                technician,
                sealed,
            } => {
                let identity = TechnicianIdentity::new(vendor, technician).map_err(|e| {
                    StoreError::Corrupt(format!("technician {vendor}/{technician}: {e}"))
                })?;
                (identity.to_string(), sealed)
            }
            SealedSecret::Staff { name, sealed } => (crate::staff::binding(name), sealed),
        };
        if sealing_key.open(&binding, sealed).is_err() {
            return Err(KeysError::SecretsSealedElsewhere {
                data_dir: data_dir.to_owned(),
            });
        }
    }
    let ours = KeysRecord {
        ca_fingerprint: pki.ca_fingerprint(),
        sealing_check: sealing_key
            .seal(CHECK_BINDING, CHECK_TEXT)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?,
    };
    if store.record_hospital_keys(&ours, now).await? {
        tracing::info!(ca = %ours.ca_fingerprint, "recorded this hospital's CA and sealing key in the database");
        return Ok(ours);
    }
    store
        .hospital_keys()
        .await?
        .ok_or(KeysError::Store(StoreError::Stale))
}

fn check(
    data_dir: &Path,
    record: &KeysRecord,
    sealing_key: &SealingKey,
    pki: &BrokerPki,
) -> Result<(), KeysError> {
    let found = pki.ca_fingerprint();
    if found != record.ca_fingerprint {
        return Err(KeysError::OtherCa {
            data_dir: data_dir.to_owned(),
            found,
            recorded: record.ca_fingerprint.clone(),
        });
    }
    match sealing_key.open(CHECK_BINDING, &record.sealing_check) {
        Ok(text) if text.expose_secret().as_slice() == CHECK_TEXT => Ok(()),
        _ => Err(KeysError::OtherSealingKey {
            data_dir: data_dir.to_owned(),
            recorded: record.ca_fingerprint.clone(),
        }),
    }
}
