//! What the command-line tests share: staff accounts made as their people would make them,
//! and commands run with a one-time code on standard input.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use sekisho_broker::audit::Actor;
use sekisho_broker::otp;
use sekisho_broker::secret::Secret;
use sekisho_broker::staff::{Role, Roles, StaffDirectory};

/// Makes staff account `name` with `roles` in the database of `config` through a one-time
/// link, as its person would (password, then a code from the new authenticator); returns its
/// TOTP secret.
pub fn make_staff(
    runtime: &tokio::runtime::Runtime,
    config: &sekisho_broker::BrokerConfig,
    name: &str,
    roles: &[Role],
) -> Secret<Vec<u8>> {
    runtime.block_on(staff_account(config, name, roles))
}

/// [`make_staff`] inside a runtime.
pub async fn staff_account(
    config: &sekisho_broker::BrokerConfig,
    name: &str,
    roles: &[Role],
) -> Secret<Vec<u8>> {
    {
        let hospital = sekisho_broker::Hospital::open(config).await.unwrap();
        let directory = StaffDirectory::new(
            hospital.store.clone(),
            hospital.sealing_key.clone(),
            std::sync::Arc::new(sekisho_broker::clock::SystemClock),
            "test hospital",
            sekisho_broker::staff::DEFAULT_IDLE_TIMEOUT,
        );
        let token = directory
            .invite_as(
                name,
                &Roles::new(roles.iter().copied()),
                &Actor::Host("test".to_owned()),
            )
            .await
            .unwrap();
        let password = "correct horse battery staple";
        let authenticator = directory
            .begin_enrollment(token.expose_secret(), name, password, password)
            .await
            .unwrap();
        let code = otp::code_at(&authenticator.secret, SystemTime::now()).unwrap();
        directory
            .confirm_enrollment(token.expose_secret(), &code, "test")
            .await
            .unwrap();
        hospital.store.close().await;
        authenticator.secret
    }
}

/// Runs one statement with one text parameter on the SQLite file `path` directly, as
/// someone with access to the disk could.
pub fn sql_on(
    runtime: &tokio::runtime::Runtime,
    path: &Path,
    statement: &'static str,
    value: &str,
) {
    runtime.block_on(sql(path, statement, value));
}

/// [`sql_on`] inside a runtime.
pub async fn sql(path: &Path, statement: &'static str, value: &str) {
    use sqlx::Connection;
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query(statement)
            .bind(value)
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
    }
}

/// Runs `command` with `code` on its standard input (`--code-stdin` added).
pub fn run_with_code(command: &mut Command, code: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .arg("--code-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The command may refuse before it reads; a closed pipe is then expected.
    let _ = writeln!(stdin, "{code}");
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// A current code of `secret` that the broker takes for account `name` in the SQLite file
/// `database`: the step the account last spent is forgotten first, so one person can act
/// several times within one 30-second step in a test.
pub fn fresh_code(
    runtime: &tokio::runtime::Runtime,
    database: &Path,
    name: &str,
    secret: &Secret<Vec<u8>>,
) -> String {
    sql_on(
        runtime,
        database,
        "UPDATE staff SET totp_last_step = 0, login_failures = 0, login_failed_at = 0 WHERE name = $1",
        name,
    );
    otp::code_at(secret, SystemTime::now()).unwrap()
}

/// [`fresh_code`] inside a runtime.
pub async fn fresh_code_now(database: &Path, name: &str, secret: &Secret<Vec<u8>>) -> String {
    sql(
        database,
        "UPDATE staff SET totp_last_step = 0, login_failures = 0, login_failed_at = 0 WHERE name = $1",
        name,
    )
    .await;
    otp::code_at(secret, SystemTime::now()).unwrap()
}
