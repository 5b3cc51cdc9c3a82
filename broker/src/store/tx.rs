//! Write transactions that never leave a connection in an unknown state.
//!
//! A connection whose `COMMIT` failed (a full disk, a read-only filesystem, a killed
//! PostgreSQL backend) may still be inside its transaction: a driver that only leaves the
//! transaction when `COMMIT` or `ROLLBACK` succeeds would hand it back to the pool, and every
//! later "transaction" on it would be a savepoint that never reaches the disk, acknowledged
//! all the same. So the store runs its own transactions ([`WriteTx`]): `BEGIN` (on SQLite
//! `BEGIN IMMEDIATE`, which takes the write lock at once) and `COMMIT` are plain statements,
//! and a connection goes back to the pool only after a `COMMIT` or a `ROLLBACK` that
//! succeeded. Any other way out (a failed statement, a failed commit, a transaction dropped
//! half-way) rolls back on a task of its own and, unless that rollback succeeds, closes the
//! connection: the pool opens a fresh one when it is next needed, which is also how the store
//! recovers by itself once the database can be written again.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Executor};

use super::{Backend, Store, StoreError};

/// A write transaction on one pooled connection; derefs to the connection for queries.
pub(crate) struct WriteTx {
    connection: Option<PoolConnection<Any>>,
}

impl Store {
    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> Result<WriteTx, StoreError> {
        let mut connection = self.pool().acquire().await?;
        let begin = match self.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = connection.execute(begin).await {
            // Whatever state it is in, it is not one to hand out again.
            discard(connection);
            return Err(e.into());
        }
        Ok(WriteTx {
            connection: Some(connection),
        })
    }
}

impl WriteTx {
    /// Commits; the connection goes back to the pool only if the commit succeeded.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut connection) = self.connection.take() else {
            return Err(StoreError::Unavailable(
                "the transaction was already finished".into(),
            ));
        };
        match connection.execute("COMMIT").await {
            Ok(_) => Ok(()),
            Err(e) => {
                discard(connection);
                Err(e.into())
            }
        }
    }

    /// Rolls back; the connection goes back to the pool only if the rollback succeeded.
    pub(crate) async fn rollback(mut self) -> Result<(), StoreError> {
        match self.connection.take() {
            Some(connection) => roll_back(connection).await,
            None => Ok(()),
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        // Taken only by commit and rollback, which consume the transaction.
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("a finished transaction is never used again"),
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.connection {
            Some(connection) => connection,
            None => unreachable!("a finished transaction is never used again"),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        // Left half-way (an error, a refusal, a caller that went away): roll back beside the
        // caller. Outside a runtime there is nothing to run it on; close the connection.
        tracing::debug!("transaction left half-way; rolling back");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = roll_back(connection).await;
                });
            }
            Err(_) => discard(connection),
        }
    }
}

async fn roll_back(mut connection: PoolConnection<Any>) -> Result<(), StoreError> {
    match connection.execute("ROLLBACK").await {
        Ok(_) => {
            tracing::debug!("rolled back");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "rollback failed");
            discard(connection);
            Err(e.into())
        }
    }
}

/// Takes `connection` out of the pool for good and closes it (the database rolls back
/// whatever it held open).
fn discard(connection: PoolConnection<Any>) {
    tracing::warn!("closing a database connection whose transaction did not end cleanly");
    let raw = connection.detach();
    tokio::spawn(async move {
        if let Err(e) = raw.close_hard().await {
            tracing::warn!(error = %e, "closing a database connection failed");
        }
    });
}
