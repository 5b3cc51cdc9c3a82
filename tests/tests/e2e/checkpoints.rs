//! Signed checkpoints of the audit log against an attacker who can write the database: each
//! tamper is made with SQL on the real database (SQLite file, or PostgreSQL with
//! `SEKISHO_TEST_STORE=postgres`), the database's own checkpoints deleted as such an attacker
//! would, and `audit verify` then finds it with the checkpoints of the broker's checkpoint file,
//! and again with those of a captured SIEM stream. The chain alone (`check_chain`, what `audit
//! verify` checked before checkpoints) says each tampered log is intact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sekisho_broker::audit::checkpoint::{self, Checkpoint};
use sekisho_broker::audit::{ExportLine, GENESIS_HASH, chain_hash};
use sekisho_broker::cli::{
    AuditError, CheckpointSources, EventQuery, ExportFormat, ExportRequest, audit_export,
    audit_verify, audit_verify_file, check_chain,
};
use sekisho_e2e::{EchoServer, TestBroker, Vendor};

const PATIENCE: Duration = Duration::from_secs(20);

/// A broker with a JSON-lines stream, signing checkpoints often, with a session's events on
/// the record; and the stream's path.
async fn broker_with_stream(echo: &EchoServer, dir: &Path) -> (TestBroker, PathBuf) {
    let stream = dir.join("siem.jsonl");
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.audit_stream = Some(stream.clone());
            config.checkpoint_interval = Duration::from_millis(50);
        },
    )
    .await;
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    drop(session);
    (broker, stream)
}

/// Waits until the file at `path` holds a checkpoint of event `seq` or later; returns the
/// newest checkpoint in it.
async fn checkpoint_in(path: &Path, seq: i64) -> Checkpoint {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
            if let Some(newest) = checkpoint::parse_all(&text)
                .into_iter()
                .max_by_key(|c| c.seq)
                .filter(|c| c.seq >= seq)
            {
                return newest;
            }
            // sync-ok: the checkpoint is written by the broker's tasks; the file is polled, bounded.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} got no checkpoint of event {seq}", path.display()))
}

/// The broker's checkpoint file.
fn checkpoint_file(broker: &TestBroker) -> PathBuf {
    broker.config().data_dir.join(checkpoint::CHECKPOINT_FILE)
}

/// Waits until the checkpoint file and the stream both hold a checkpoint of the head as it is
/// now, then stops the broker (which signs its last checkpoint).
async fn settle(broker: &TestBroker, stream: &Path) {
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    checkpoint_in(&checkpoint_file(broker), head).await;
    checkpoint_in(stream, head).await;
    broker.halt().await;
}

/// Re-chains every event from the first, as an attacker who changed rows does, with SQL.
async fn rechain(broker: &TestBroker) {
    let events = broker.desk().store().all_audit_events().await.unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    for stored in events {
        let hash = chain_hash(stored.seq, &prev, &stored.event);
        if hash != stored.hash || prev != stored.prev_hash {
            broker
                .execute_sql(&format!(
                    "UPDATE audit_events SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}",
                    stored.seq
                ))
                .await;
        }
        prev = hash;
    }
    broker
        .execute_sql(&format!(
            "UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit_events), hash = '{prev}' WHERE id = 1"
        ))
        .await;
}

/// `audit verify` with the checkpoint file of the data directory, then with the stream only
/// (the checkpoint file moved away): both must fail, each with a sentence holding `wanted`.
async fn found_by_file_and_stream(broker: &TestBroker, stream: &Path, wanted: &str) {
    // The attacker removes the database's own checkpoints too.
    broker.execute_sql("DELETE FROM audit_checkpoints").await;
    // What `audit verify` checked before checkpoints: the chain holds together.
    let chain = check_chain(&broker.desk(), None).await;
    assert!(chain.is_ok(), "the chain alone finds it: {chain:?}");

    let data_dir = broker.config().data_dir.clone();
    let from_file = CheckpointSources {
        data_dir: Some(data_dir.clone()),
        ..CheckpointSources::default()
    };
    let verdict = audit_verify(&broker.desk(), None, &from_file).await;
    let Err(AuditError::Checkpoints(sentences)) = verdict else {
        panic!("the checkpoint file did not reveal it: {verdict:?}");
    };
    assert!(sentences.contains(wanted), "{sentences}");
    assert!(
        sentences.contains(&checkpoint_file(broker).display().to_string()),
        "says where: {sentences}"
    );

    let moved = data_dir.join("moved-away.jsonl");
    std::fs::rename(checkpoint_file(broker), &moved).unwrap();
    let from_stream = CheckpointSources {
        data_dir: Some(data_dir.clone()),
        files: vec![stream.to_owned()],
        ..CheckpointSources::default()
    };
    let verdict = audit_verify(&broker.desk(), None, &from_stream).await;
    std::fs::rename(&moved, checkpoint_file(broker)).unwrap();
    let Err(AuditError::Checkpoints(sentences)) = verdict else {
        panic!("the stream did not reveal it: {verdict:?}");
    };
    assert!(sentences.contains(wanted), "{sentences}");
    assert!(
        sentences.contains(&stream.display().to_string()),
        "says where: {sentences}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_log_verifies_against_its_newest_signed_checkpoint() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (broker, stream) = broker_with_stream(&echo, dir.path()).await;
    settle(&broker, &stream).await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    let newest = checkpoint_in(&checkpoint_file(&broker), head).await;
    assert_eq!(
        newest.seq, head,
        "the shutdown's checkpoint covers the stop"
    );
    assert!(newest.signature_verifies());
    let sources = CheckpointSources {
        data_dir: Some(broker.config().data_dir.clone()),
        files: vec![stream.clone()],
        ..CheckpointSources::default()
    };
    let verdict = audit_verify(&broker.desk(), None, &sources).await.unwrap();
    assert!(
        verdict.contains(&format!("at event {head} (broker {}", broker.broker_id())),
        "{verdict}"
    );
    // The stream carries checkpoints as lines of their own, after the event they commit to.
    let text = std::fs::read_to_string(&stream).unwrap();
    let mut last_event = 0;
    for line in text.lines() {
        match Checkpoint::from_line(line) {
            Some(checkpoint) => assert!(checkpoint.seq <= last_event, "{line}"),
            None => last_event = serde_json::from_str::<ExportLine>(line).unwrap().seq(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_edited_and_re_chained_is_found_with_the_checkpoint_file_and_the_stream() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (broker, stream) = broker_with_stream(&echo, dir.path()).await;
    settle(&broker, &stream).await;
    broker
        .execute_sql(
            "UPDATE audit_events SET actor = 'staff:mallory' WHERE kind = 'request-approved'",
        )
        .await;
    rechain(&broker).await;
    found_by_file_and_stream(
        &broker,
        &stream,
        "The audit log was rewritten between event",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_deleted_and_renumbered_are_found_with_the_checkpoint_file_and_the_stream() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (broker, stream) = broker_with_stream(&echo, dir.path()).await;
    settle(&broker, &stream).await;
    broker
        .execute_sql("DELETE FROM audit_events WHERE seq IN (4, 5)")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = seq + 1000000 WHERE seq > 5")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = seq - 1000002 WHERE seq > 1000000")
        .await;
    rechain(&broker).await;
    found_by_file_and_stream(&broker, &stream, "Events were deleted between event").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_with_the_head_reset_is_found_with_the_checkpoint_file_and_the_stream() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (broker, stream) = broker_with_stream(&echo, dir.path()).await;
    settle(&broker, &stream).await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    // With the database's own checkpoints left in place, the cut is named as one.
    let keep = head - 3;
    broker
        .execute_sql(&format!("DELETE FROM audit_events WHERE seq > {keep}"))
        .await;
    rechain(&broker).await;
    let sources = CheckpointSources {
        data_dir: Some(broker.config().data_dir.clone()),
        ..CheckpointSources::default()
    };
    let verdict = audit_verify(&broker.desk(), None, &sources).await;
    let Err(AuditError::Checkpoints(sentences)) = verdict else {
        panic!("the cut went unnoticed: {verdict:?}");
    };
    assert!(
        sentences.contains(&format!("The audit log was cut off after event {keep}")),
        "{sentences}"
    );
    found_by_file_and_stream(&broker, &stream, &format!("The log ends at event {keep}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_of_the_database_put_back_is_found_with_the_checkpoint_file_and_the_stream() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, stream) = broker_with_stream(&echo, dir.path()).await;
    // The copy is made while the broker is stopped, as a backup would be.
    broker.halt().await;
    broker_copy_audit_tables(&broker).await;
    let copied = broker.desk().store().audit_head().await.unwrap().0;
    broker.relaunch().await;
    // The restarted broker appends (its start, its clock) and signs beyond the copy.
    settle(&broker, &stream).await;
    assert!(checkpoint_in(&stream, copied + 1).await.seq > copied);
    for table in ["audit_events", "audit_head", "audit_checkpoints"] {
        broker.execute_sql(&format!("DELETE FROM {table}")).await;
        broker
            .execute_sql(&format!("INSERT INTO {table} SELECT * FROM old_{table}"))
            .await;
    }
    found_by_file_and_stream(&broker, &stream, &format!("The log ends at event {copied}")).await;
}

/// The backup an attacker later puts back: the audit tables as they are now.
async fn broker_copy_audit_tables(broker: &TestBroker) {
    for table in ["audit_events", "audit_head", "audit_checkpoints"] {
        broker
            .execute_sql(&format!(
                "CREATE TABLE old_{table} AS SELECT * FROM {table}"
            ))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_carries_its_checkpoints_and_verifies_alone_and_a_re_chained_export_does_not() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (broker, stream) = broker_with_stream(&echo, dir.path()).await;
    settle(&broker, &stream).await;
    let export = dir.path().join("export.jsonl");
    audit_export(
        &broker.desk(),
        &ExportRequest {
            format: ExportFormat::JsonLines,
            query: EventQuery::default(),
            out: Some(export.clone()),
        },
        "kato",
    )
    .await
    .unwrap();
    // Verified elsewhere: no data directory, the broker's key given by its fingerprint.
    let fingerprint = checkpoint::fingerprint_in(&broker.config().data_dir).unwrap();
    let elsewhere = CheckpointSources {
        trust: vec![fingerprint],
        ..CheckpointSources::default()
    };
    let verdict = audit_verify_file(&export, None, &elsewhere).unwrap();
    assert!(
        verdict.contains("Signed checkpoint: the chain matches"),
        "{verdict}"
    );
    // Without trusting the key, it proves itself only, and says so.
    let alone = audit_verify_file(&export, None, &CheckpointSources::default()).unwrap();
    assert!(
        alone.contains("No signed checkpoint from a trusted key"),
        "{alone}"
    );

    // The export edited and re-chained: its own chain holds, its checkpoints do not.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    let mut tampered = String::new();
    for line in text.lines() {
        if Checkpoint::from_line(line).is_some() {
            tampered.push_str(line);
        } else {
            let mut stored = serde_json::from_str::<ExportLine>(line)
                .unwrap()
                .to_stored()
                .unwrap();
            if stored.event.kind == sekisho_broker::audit::EventKind::RequestApproved {
                stored.event.actor = sekisho_broker::audit::Actor::Staff("mallory".into());
            }
            stored.prev_hash = prev.clone();
            stored.hash = chain_hash(stored.seq, &prev, &stored.event);
            prev = stored.hash.clone();
            tampered.push_str(&ExportLine::of(&stored).to_json());
        }
        tampered.push('\n');
    }
    std::fs::write(&export, tampered).unwrap();
    let verdict = audit_verify_file(&export, None, &elsewhere);
    let Err(AuditError::Checkpoints(sentences)) = verdict else {
        panic!("the re-chained export was not found out: {verdict:?}");
    };
    assert!(
        sentences.contains("was rewritten between event"),
        "{sentences}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_in_the_data_directory_is_the_owners_only_after_a_first_start() {
    use std::os::unix::fs::PermissionsExt;
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (broker, stream) = broker_with_stream(&echo, dir.path()).await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    checkpoint_in(&checkpoint_file(&broker), head).await;
    checkpoint_in(&stream, head).await;
    let data_dir = broker.config().data_dir.clone();
    let mut seen = Vec::new();
    for dir in [data_dir.clone(), data_dir.join("pki")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let mode = entry.metadata().unwrap().permissions().mode();
                let name = entry.file_name().to_string_lossy().into_owned();
                assert_eq!(mode & 0o777, 0o600, "{name}");
                seen.push(name);
            }
        }
    }
    let mut expected = vec![
        "broker-id",
        "checkpoint.key",
        "audit-checkpoints.jsonl",
        "secret.key",
        "ca.pem",
        "ca.key",
        "broker.pem",
        "broker.key",
    ];
    if !sekisho_e2e::stores::postgres_selected() {
        expected.extend(["sekisho.db", "sekisho.db-wal", "sekisho.db-shm"]);
    }
    for name in expected {
        assert!(seen.iter().any(|s| s == name), "{name} in {seen:?}");
    }
}

/// The auditor's chain page and `GET /api/audit/verify` check the chain against the signed
/// checkpoints too: a row edited and re-chained, which the chain alone cannot show, is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chain_check_finds_a_re_chained_rewrite_by_the_signed_checkpoints() {
    use sekisho_broker::staff::Role;
    use sekisho_broker::web::{WebConfig, WebTls};
    use sekisho_e2e::web::{StaffAccount, WebClient};

    let echo = EchoServer::start().await;
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.checkpoint_interval = Duration::from_millis(50);
            let mut web = WebConfig::new("127.0.0.1:0".parse().unwrap());
            web.tls = WebTls::PlainHttpOnLoopback;
            config.web = Some(web);
        },
    )
    .await;
    let auditor = StaffAccount::create(&broker, "ito", &[Role::Auditor]).await;
    drop(broker.open_session("acme-ehr", "tanaka", &["echo"]).await);
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &auditor).await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    checkpoint_in(&checkpoint_file(&broker), head).await;

    let untouched = client.get("/api/audit/verify").await;
    assert_eq!(untouched.status, 200, "{}", untouched.body);
    assert!(
        untouched.body.contains("\"intact\":true"),
        "{}",
        untouched.body
    );
    assert!(untouched.body.contains("checkpoint"), "{}", untouched.body);

    broker
        .execute_sql(
            "UPDATE audit_events SET actor = 'staff:mallory' WHERE kind = 'request-approved'",
        )
        .await;
    rechain(&broker).await;
    broker.execute_sql("DELETE FROM audit_checkpoints").await;
    assert!(check_chain(&broker.desk(), None).await.is_ok());

    let api = client.get("/api/audit/verify").await;
    assert!(api.body.contains("\"intact\":false"), "{}", api.body);
    assert!(api.body.contains("rewritten"), "{}", api.body);
    let page = client.get("/audit/chain").await;
    assert!(page.body.contains("rewritten"), "{}", page.body);
}
