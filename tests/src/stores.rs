//! Which database a test broker uses.
//!
//! `SEKISHO_TEST_STORE=postgres` runs every end-to-end test against PostgreSQL (at
//! `SEKISHO_TEST_POSTGRES`, `host:port`, trust auth, user `postgres`), each test in a database
//! of its own; anything else (the default) uses a SQLite file in the test's directory.
//! `.ci/run` runs the suite both ways.

use std::path::Path;
use std::sync::OnceLock;

use sekisho_broker::store::StoreLocation;
use sqlx::{AnyConnection, Connection, Executor, Row};

/// Whether this run uses PostgreSQL.
pub fn postgres_selected() -> bool {
    std::env::var("SEKISHO_TEST_STORE").is_ok_and(|store| store.eq_ignore_ascii_case("postgres"))
}

/// Where PostgreSQL runs for tests, from `SEKISHO_TEST_POSTGRES` (`host:port`), if set.
/// `.ci/run` sets it, so in CI these tests always run.
pub fn env_postgres() -> Option<String> {
    std::env::var("SEKISHO_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The store for a new test broker whose files live in `dir`.
pub async fn fresh_store(dir: &Path) -> StoreLocation {
    if !postgres_selected() {
        return StoreLocation::Sqlite(dir.join("data").join("sekisho.db"));
    }
    let host =
        env_postgres().expect("SEKISHO_TEST_STORE=postgres needs SEKISHO_TEST_POSTGRES=host:port");
    let admin_url = format!("postgres://postgres@{host}/postgres");
    sqlx::any::install_default_drivers();
    let mut admin = AnyConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {host}: {e}"));
    drop_stale_databases(&mut admin).await;
    let name = format!(
        "sekisho_t_{}_{}",
        std::process::id(),
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    StoreLocation::Postgres(format!("postgres://postgres@{host}/{name}"))
}

/// Databases of earlier test runs (other process ids) are dropped once per run.
async fn drop_stale_databases(admin: &mut AnyConnection) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let ours = format!("sekisho_t_{}_", std::process::id());
    let rows = sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'sekisho_t_%'")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        if !name.starts_with(&ours) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }
}
