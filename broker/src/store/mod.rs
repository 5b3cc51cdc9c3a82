//! Persistence: requests, approvals, sessions, vendors, technicians, enrollment tokens, the
//! certificate registry, lockdown, staff, through sqlx.
//!
//! One code path serves both databases through sqlx's `Any` driver: SQLite (the embedded
//! default, a file in the data directory, WAL with `synchronous=FULL`, so an acknowledged step
//! survives power loss) and PostgreSQL (for hospitals that run several brokers against one
//! database). The schema is portable: TEXT and BIGINT columns only, times in Unix
//! milliseconds. Migrations run at open.
//!
//! Every state change is a conditional update (`… WHERE id = $1 AND state = 'approved'`); when
//! no row changes, someone else got there first and the caller gets [`StoreError::Stale`].
//! A transaction is `BEGIN IMMEDIATE` on SQLite, so it takes its write lock at once and
//! concurrent writers wait (`busy_timeout`) rather than fail, and a connection whose
//! transaction did not end cleanly is closed, never reused (see `tx`).
//!
//! Every change carries its audit event, appended in the same transaction: if the event
//! cannot be written, the change does not happen (see [`crate::audit`]).
//!
//! This module decides nothing: the rules live in [`crate::session`].

mod audit;
mod identity;
mod keys;
mod leases;
mod requests;
mod staff;
mod technicians;
mod tx;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditFilter, Review};
pub use identity::{
    CertificateRecord, CertificateStanding, EnrollmentRecord, NewTechnician, TokenRow,
    TokenToStore, VendorRow,
};
pub use keys::{KeysRecord, SealedSecret};
pub use leases::{Acquired, LeaseState, PreviousLease, SenderLease};
pub use requests::{LockdownState, Opening, RequestFilter};
pub use staff::{
    Activation, ActivationOutcome, InviteRow, PendingSetup, StaffRow, StaffSessionRow,
};
pub use technicians::TechnicianRow;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or written (disk full, connection lost, …).
    #[error("the database cannot be used right now ({0})")]
    Unavailable(String),
    /// The row changed under us: another approver, an expiry or another broker got there first.
    #[error("it changed in the meantime; look at it again")]
    Stale,
    /// No such row.
    #[error("not found")]
    NotFound,
    /// A row holds something this version does not understand.
    #[error("the database holds an unexpected value: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Which database, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (created if missing).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL, `postgres://user@host:port/db`.
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else is a SQLite path
    /// (`sqlite://` prefix optional).
    pub fn parse(text: &str) -> StoreLocation {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StoreLocation::Postgres(text.to_owned())
        } else {
            StoreLocation::Sqlite(text.trim_start_matches("sqlite://").into())
        }
    }

    /// The default: `DATA_DIR/sekisho.db`.
    pub fn default_in(data_dir: &Path) -> StoreLocation {
        StoreLocation::Sqlite(data_dir.join("sekisho.db"))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            // Never print a password that may be in the URL.
            StoreLocation::Postgres(url) => {
                let shown = match url.split_once('@') {
                    Some((scheme_user, host)) => {
                        let scheme = scheme_user.split("://").next().unwrap_or("postgres");
                        format!("{scheme}://…@{host}")
                    }
                    None => url.clone(),
                };
                write!(f, "PostgreSQL {shown}")
            }
        }
    }
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    group: std::sync::Arc<audit::GroupCommit>,
}

/// Which database a store is: the SQL is the same for both but for the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects, applies migrations, and returns the store.
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, max_connections, backend) = match location {
            StoreLocation::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                // Made readable by its owner only before SQLite opens it: SQLite gives the
                // WAL and shared-memory files the database file's mode.
                private_file(path).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
                })?;
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    4,
                    Backend::Sqlite,
                )
            }
            StoreLocation::Postgres(url) => (url.clone(), 8, Backend::Postgres),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|connection, _| {
                Box::pin(async move {
                    if connection.backend_name().eq_ignore_ascii_case("sqlite") {
                        // WAL lets readers run beside the writer; FULL syncs every commit, so
                        // an acknowledged step survives power loss; the busy timeout makes a
                        // second writer (the admin CLI, another connection) wait, not fail.
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(Store {
            pool,
            backend,
            group: std::sync::Arc::default(),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    fn group(&self) -> &audit::GroupCommit {
        &self.group
    }
}

/// Creates `path` empty with mode 0600 if it is missing, and sets an existing one (and its
/// `-wal` and `-shm` files) to 0600.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
