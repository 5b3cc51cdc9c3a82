//! The hospital's keys: a broker whose data directory lacks the CA and sealing key its
//! database belongs to, or holds other ones, is refused at start with what to copy, creates
//! nothing, and the refusal is on the record.

use std::path::Path;

use sekisho_broker::audit::EventKind;
use sekisho_broker::keys::KeysError;
use sekisho_broker::pki::BrokerPki;
use sekisho_broker::secret::SealingKey;
use sekisho_broker::store::{KeysRecord, StoreLocation};
use sekisho_broker::{BindError, Broker, BrokerConfig};
use sekisho_e2e::{EchoServer, TestBroker, Vendor, detail, echo_once};

/// The files an admin copies to a new broker of the same hospital.
const HOSPITAL_KEY_FILES: [&str; 3] = ["pki/ca.pem", "pki/ca.key", "secret.key"];

fn copy_hospital_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("pki")).unwrap();
    for file in HOSPITAL_KEY_FILES {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// The first broker's configuration with another data directory: a second broker of the
/// same database.
fn second_broker_config(first: &TestBroker, data_dir: &Path) -> BrokerConfig {
    let mut config = first.config().clone();
    config.data_dir = data_dir.to_owned();
    // Beside the first broker: QUIC shares its port (each data thread's socket does), a TCP
    // listener could not; these tests are about keys.
    config.listen_tcp = None;
    config
}

async fn bind_error(config: BrokerConfig) -> KeysError {
    match Broker::bind(config).await {
        Err(BindError::Keys(refusal)) => refusal,
        Err(other) => panic!("expected a refusal of the keys, got {other}"),
        Ok(_) => panic!("a broker with the wrong keys started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_without_the_hospitals_keys_is_refused_and_creates_none() {
    let echo = EchoServer::start().await;
    let first = broker_with_a_sealed_secret(&echo).await;
    let recorded = recorded_keys(&first).await;
    assert_eq!(recorded.ca_fingerprint, first_ca(&first));

    let fresh = tempfile::tempdir().unwrap();
    let data_dir = fresh.path().join("data");
    let refusal = bind_error(second_broker_config(&first, &data_dir)).await;
    let message = refusal.to_string();
    assert!(matches!(refusal, KeysError::Missing { .. }), "{message}");
    assert!(message.contains(&first_ca(&first)), "{message}");
    assert!(
        message
            .contains("copy pki/ca.pem, pki/ca.key and secret.key from a broker of this hospital"),
        "{message}"
    );
    for file in HOSPITAL_KEY_FILES {
        assert!(
            !data_dir.join(file).exists(),
            "{file} was made for a refused broker"
        );
    }
    let refused = first.events_of(EventKind::KeysRefused).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(detail(&refused[0], "reason"), "missing");
    assert_eq!(detail(&refused[0], "message"), message);

    // With the hospital's keys copied over, the same directory starts and serves the
    // technician enrolled on the first broker (its certificate and one-time-password
    // secret are the hospital's, not one broker's).
    copy_hospital_keys(&first.config().data_dir, &data_dir);
    let second = Broker::bind(second_broker_config(&first, &data_dir))
        .await
        .expect("a broker with the hospital's keys starts");
    assert_eq!(second.pki().ca_fingerprint(), first_ca(&first));
    drop(second);
    assert_eq!(
        recorded_keys(&first).await,
        recorded,
        "the record stays as made"
    );
    technician_still_works(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_another_ca_or_another_sealing_key_is_refused() {
    let first = TestBroker::start(&[Vendor::new("acme-ehr")]).await;
    let other = tempfile::tempdir().unwrap();
    let data_dir = other.path().join("data");
    // Keys of its own, as a broker started alone once would have made.
    std::fs::create_dir_all(&data_dir).unwrap();
    let own_ca = BrokerPki::load_or_create(&data_dir)
        .unwrap()
        .ca_fingerprint();
    SealingKey::load_or_create(&data_dir).unwrap();

    let refusal = bind_error(second_broker_config(&first, &data_dir)).await;
    let message = refusal.to_string();
    assert!(matches!(refusal, KeysError::OtherCa { .. }), "{message}");
    assert!(message.contains(&own_ca), "{message}");
    assert!(message.contains(&first_ca(&first)), "{message}");

    // The right CA but its own sealing key: still refused, for the key.
    for file in ["pki/ca.pem", "pki/ca.key"] {
        std::fs::copy(first.config().data_dir.join(file), data_dir.join(file)).unwrap();
    }
    let refusal = bind_error(second_broker_config(&first, &data_dir)).await;
    let message = refusal.to_string();
    assert!(
        matches!(refusal, KeysError::OtherSealingKey { .. }),
        "{message}"
    );
    assert!(message.contains("secret.key is not the key"), "{message}");

    let reasons: Vec<String> = first
        .events_of(EventKind::KeysRefused)
        .await
        .iter()
        .map(|e| detail(e, "reason").to_owned())
        .collect();
    assert_eq!(reasons, ["other-ca", "other-sealing-key"]);

    copy_hospital_keys(&first.config().data_dir, &data_dir);
    Broker::bind(second_broker_config(&first, &data_dir))
        .await
        .expect("a broker with the hospital's keys starts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_secret_key_is_not_replaced_by_a_new_one() {
    let echo = EchoServer::start().await;
    let mut broker = broker_with_a_sealed_secret(&echo).await;
    let config = broker.config().clone();
    let key_path = config.data_dir.join("secret.key");
    broker
        .restart_after(async {
            let saved = std::fs::read(&key_path).unwrap();
            std::fs::remove_file(&key_path).unwrap();
            let refusal = bind_error(config.clone()).await;
            assert!(
                matches!(
                    refusal,
                    KeysError::Missing {
                        file: "secret.key",
                        ..
                    }
                ),
                "{refusal}"
            );
            assert!(!key_path.exists(), "a new secret.key was made");
            // Restored from the backup, it starts again.
            std::fs::write(&key_path, saved).unwrap();
        })
        .await;
    technician_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_the_record_is_checked_against_its_sealed_secrets() {
    let echo = EchoServer::start().await;
    let mut broker = broker_with_a_sealed_secret(&echo).await;
    let config = broker.config().clone();
    let key_path = config.data_dir.join("secret.key");
    broker
        .restart_after(async {
            // As a database from before the record existed: secrets sealed, nothing recorded.
            execute(&config, "DELETE FROM hospital_keys").await;
            let saved = std::fs::read(&key_path).unwrap();
            std::fs::remove_file(&key_path).unwrap();
            SealingKey::load_or_create(&config.data_dir).unwrap();
            let refusal = bind_error(config.clone()).await;
            assert!(
                matches!(refusal, KeysError::SecretsSealedElsewhere { .. }),
                "{refusal}"
            );
            std::fs::write(&key_path, saved).unwrap();
        })
        .await;
    // The right key opens the secrets, and is recorded now.
    assert_eq!(
        recorded_keys(&broker).await.ca_fingerprint,
        first_ca(&broker)
    );
    technician_still_works(&broker).await;
}

/// Runs `sql` on the test broker's database, behind the broker's back.
async fn execute(config: &BrokerConfig, sql: &'static str) {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let url = match config
        .database
        .as_ref()
        .expect("the test broker names its database")
    {
        StoreLocation::Sqlite(path) => format!("sqlite://{}", path.display()),
        StoreLocation::Postgres(url) => url.clone(),
    };
    let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
    connection.execute(sql).await.unwrap();
    connection.close().await.unwrap();
}

/// A broker whose technician acme-ehr/tanaka enrolled and opened a session, so that a
/// one-time-password secret is sealed in its database.
async fn broker_with_a_sealed_secret(echo: &EchoServer) -> TestBroker {
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    broker
}

/// acme-ehr/tanaka opens a session and carries bytes: their secret opens with the key the
/// broker holds.
async fn technician_still_works(broker: &TestBroker) {
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    echo_once(&session, "echo").await;
}

async fn recorded_keys(broker: &TestBroker) -> KeysRecord {
    let store = broker.desk().store().clone();
    store
        .hospital_keys()
        .await
        .unwrap()
        .expect("the keys are recorded")
}

fn first_ca(broker: &TestBroker) -> String {
    BrokerPki::load_or_create(&broker.config().data_dir)
        .unwrap()
        .ca_fingerprint()
}
