//! The audit stream sent to a real rsyslogd over TCP and TLS: every event, in order, as the
//! same JSON line `audit export` writes; a collector down or refused is on the record once
//! and catches up; a restart resumes where it left off; of two brokers sharing a database
//! one sends, and the other takes over when it stops.
//!
//! Needs rsyslogd (`.ci/run` installs it and sets `SEKISHO_TEST_RSYSLOGD`); without it each
//! test says it was skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sekisho_broker::audit::syslog::{self, SyslogConfig, message};
use sekisho_broker::audit::{EventKind, ExportLine, StoredEvent};
use sekisho_e2e::syslog::{CollectorTls, Received, Rsyslog, free_port, program};
use sekisho_e2e::webhook::HospitalCa;
use sekisho_e2e::{EchoServer, TestBroker, Vendor, detail};

async fn broker_sending_to(echo: &EchoServer, url: String, ca_file: Option<PathBuf>) -> TestBroker {
    TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.audit_syslog = Some(SyslogConfig { url, ca_file });
        },
    )
    .await
}

async fn all_events(broker: &TestBroker) -> Vec<StoredEvent> {
    broker.desk().store().all_audit_events().await.unwrap()
}

/// Every message received is the event of its `seq`, each once, from 1 on without a gap:
/// its MSG the event's export line byte for byte, its header the event's kind, severity and
/// time, from this broker.
async fn assert_received_exactly_the_log(broker: &TestBroker, received: &[Received]) {
    let events: HashMap<i64, StoredEvent> = all_events(broker)
        .await
        .into_iter()
        .map(|event| (event.seq, event))
        .collect();
    let broker_id = std::fs::read_to_string(broker.dir().join("data").join("broker-id")).unwrap();
    let seqs: Vec<i64> = received.iter().map(Received::seq).collect();
    let expected: Vec<i64> = (1..=received.len() as i64).collect();
    assert_eq!(seqs, expected, "every event once, in order, from the first");
    for message in received {
        let event = &events[&message.seq()];
        let kind = event.event.kind;
        assert_eq!(
            message.msg(),
            ExportLine::of(event).to_json(),
            "seq {}",
            event.seq
        );
        assert_eq!(message.msgid, kind.as_str());
        assert_eq!(message.app_name, "sekisho");
        assert_eq!(message.procid, broker_id.trim());
        assert_eq!(message.facility, "authpriv");
        let severity = match message::severity(kind) {
            message::Severity::Warning => "warning",
            message::Severity::Notice => "notice",
            message::Severity::Info => "info",
        };
        assert_eq!(message.severity, severity, "{}", kind.as_str());
        assert_eq!(message.pri(), format!("<{}>1", message::priority(kind)));
        assert_eq!(message.timestamp(), message::timestamp(event.event.at));
    }
}

fn collector_dir(test_dir: &Path) -> PathBuf {
    test_dir.join("rsyslog")
}

/// An rsyslogd listening over plain TCP on a port of its own.
async fn tcp_collector(rsyslogd: &Path, test_dir: &Path) -> Rsyslog {
    Rsyslog::start(rsyslogd, &collector_dir(test_dir), free_port().await, None).await
}

/// An rsyslogd listening over TLS with a certificate `ca` signed.
async fn tls_collector(rsyslogd: &Path, test_dir: &Path, ca: &HospitalCa) -> Rsyslog {
    let (cert_pem, key_pem) = ca.issue_server_pem(&["127.0.0.1"]);
    let tls = CollectorTls {
        cert_pem,
        key_pem,
        ca_pem: ca.pem().to_owned(),
    };
    Rsyslog::start(
        rsyslogd,
        &collector_dir(test_dir),
        free_port().await,
        Some(&tls),
    )
    .await
}

/// A broker sending to `rsyslog` over TLS, trusting `trusted` (its CA file written into
/// `test_dir`).
async fn broker_sending_over_tls(
    echo: &EchoServer,
    rsyslog: &Rsyslog,
    trusted: &HospitalCa,
    test_dir: &Path,
) -> TestBroker {
    broker_sending_to(
        echo,
        format!("tls://127.0.0.1:{}", rsyslog.port()),
        Some(trusted.write_pem(test_dir)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_events_reach_rsyslog_over_tcp_in_order_as_their_export_lines() {
    let Some(rsyslogd) = program("a_sessions_events_reach_rsyslog_over_tcp") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = tcp_collector(&rsyslogd, dir.path()).await;
    let echo = EchoServer::start().await;
    let broker =
        broker_sending_to(&echo, format!("tcp://127.0.0.1:{}", rsyslog.port()), None).await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let received = rsyslog
        .wait_for("session-opened", |m| m.msgid == "session-opened")
        .await;
    assert_received_exactly_the_log(&broker, &received).await;
    for kind in [
        "broker-started",
        "request-made",
        "request-approved",
        "session-opened",
    ] {
        assert!(received.iter().any(|m| m.msgid == kind), "{kind}");
    }
    let last = received.last().unwrap().seq();
    broker.lease_past("audit-syslog", last).await;
    assert_eq!(
        broker.events_of(EventKind::AuditSyslogFailed).await.len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_collector_is_verified_against_the_hospitals_ca() {
    let Some(rsyslogd) = program("over_tls_the_collector_is_verified") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hospital = HospitalCa::new("Hospital SIEM CA");
    let rsyslog = tls_collector(&rsyslogd, dir.path(), &hospital).await;
    let echo = EchoServer::start().await;
    let broker = broker_sending_over_tls(&echo, &rsyslog, &hospital, dir.path()).await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let received = rsyslog
        .wait_for("session-opened", |m| m.msgid == "session-opened")
        .await;
    assert_received_exactly_the_log(&broker, &received).await;
    assert_eq!(
        broker.events_of(EventKind::AuditSyslogFailed).await.len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_with_a_certificate_from_another_ca_gets_nothing_and_the_failure_is_recorded_once()
 {
    let Some(rsyslogd) = program("a_collector_with_a_certificate_from_another_ca") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hospital = HospitalCa::new("Hospital SIEM CA");
    let impostor = HospitalCa::new("Someone else's CA");
    let rsyslog = tls_collector(&rsyslogd, dir.path(), &impostor).await;
    let echo = EchoServer::start().await;
    let broker = broker_sending_over_tls(&echo, &rsyslog, &hospital, dir.path()).await;
    // The broker works as usual.
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let failed = broker.first_event(EventKind::AuditSyslogFailed).await;
    let details: HashMap<_, _> = failed.event.details.iter().cloned().collect();
    assert_eq!(
        details["url"],
        format!("tls://127.0.0.1:{}", rsyslog.port())
    );
    assert!(details["error"].contains("TLS"), "{details:?}");
    // The broker keeps trying (rsyslog sees the broker refuse its certificate again and
    // again), and records the failure only once.
    rsyslog
        .wait_until("a second refused handshake", || {
            (rsyslog.own_log().matches("fatal alert").count() >= 2).then_some(())
        })
        .await;
    assert_eq!(
        broker.events_of(EventKind::AuditSyslogFailed).await.len(),
        1
    );
    assert_eq!(
        rsyslog.received(),
        Vec::new(),
        "nothing reached the impostor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_at_first_receives_everything_once_it_starts() {
    let Some(rsyslogd) = program("a_collector_that_is_down_at_first") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().await;
    let echo = EchoServer::start().await;
    let broker = broker_sending_to(&echo, format!("tcp://127.0.0.1:{port}"), None).await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let failed = broker.first_event(EventKind::AuditSyslogFailed).await;
    assert!(
        failed
            .event
            .details
            .iter()
            .any(|(k, v)| k == "error" && v.contains("refused")),
        "{:?}",
        failed.event
    );
    let rsyslog = Rsyslog::start(&rsyslogd, &collector_dir(dir.path()), port, None).await;
    let received = rsyslog
        .wait_for("audit-syslog-recovered", |m| {
            m.msgid == "audit-syslog-recovered"
        })
        .await;
    assert_received_exactly_the_log(&broker, &received).await;
    for kind in [
        "session-opened",
        "audit-syslog-failed",
        "audit-syslog-recovered",
    ] {
        assert!(received.iter().any(|m| m.msgid == kind), "{kind}");
    }
    assert_eq!(
        broker.events_of(EventKind::AuditSyslogFailed).await.len(),
        1
    );
    assert_eq!(
        broker
            .events_of(EventKind::AuditSyslogRecovered)
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_nothing_sent_is_sent_again_and_nothing_is_lost() {
    let Some(rsyslogd) = program("after_a_restart_nothing_sent_is_sent_again") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = tcp_collector(&rsyslogd, dir.path()).await;
    let echo = EchoServer::start().await;
    let mut broker =
        broker_sending_to(&echo, format!("tcp://127.0.0.1:{}", rsyslog.port()), None).await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    rsyslog
        .wait_for("session-opened", |m| m.msgid == "session-opened")
        .await;
    broker.restart().await;
    // Something recorded after the restart, and everything before it, arrives once.
    let reload = broker.request_reload().await;
    let received = rsyslog
        .wait_for("the reload request", |m| m.seq() == reload)
        .await;
    assert_received_exactly_the_log(&broker, &received).await;
    for kind in [
        "session-opened",
        "broker-stopped",
        "policy-reload-requested",
    ] {
        assert!(received.iter().any(|m| m.msgid == kind), "{kind}");
    }
    assert_eq!(
        received
            .iter()
            .filter(|m| m.msgid == "broker-started")
            .count(),
        2,
        "both starts, each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restarted_mid_stream_misses_nothing() {
    let Some(rsyslogd) = program("a_collector_restarted_mid_stream") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().await;
    let rsyslog = Rsyslog::start(&rsyslogd, &dir.path().join("first"), port, None).await;
    let echo = EchoServer::start().await;
    let broker = broker_sending_to(&echo, format!("tcp://127.0.0.1:{port}"), None).await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let before = rsyslog
        .wait_for("session-opened", |m| m.msgid == "session-opened")
        .await;
    drop(rsyslog);
    // While it is down and once it is back: everything recorded arrives, the batch sent last
    // on the closed connection possibly twice (at least once), nothing missing.
    let reload = broker.request_reload().await;
    let rsyslog = Rsyslog::start(&rsyslogd, &dir.path().join("second"), port, None).await;
    let after = rsyslog
        .wait_for("the reload request", |m| m.seq() == reload)
        .await;
    let mut seqs: Vec<i64> = before.iter().chain(&after).map(Received::seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    // The reload's own `policy-loaded` may travel in the same batch as the request.
    let last = *seqs.last().unwrap();
    assert!(last >= reload);
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
}

/// A lease of 2 s rather than 20: takeovers within seconds.
const LEASE: Duration = Duration::from_secs(2);

/// Every message received once, numbered from `from` on without a gap, each the export line
/// of its event; returns who sent each (the PROCID).
async fn assert_received_once_in_order_from(
    broker: &TestBroker,
    received: &[Received],
    from: i64,
) -> Vec<String> {
    let events: HashMap<i64, StoredEvent> = all_events(broker)
        .await
        .into_iter()
        .map(|event| (event.seq, event))
        .collect();
    let seqs: Vec<i64> = received.iter().map(Received::seq).collect();
    let expected: Vec<i64> = (from..from + received.len() as i64).collect();
    assert_eq!(seqs, expected, "every event once, in order");
    for message in received {
        assert_eq!(
            message.msg(),
            ExportLine::of(&events[&message.seq()]).to_json()
        );
    }
    received.iter().map(|m| m.procid.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_sharing_a_database_send_each_event_once_and_the_second_takes_over() {
    let Some(rsyslogd) = program("two_brokers_sharing_a_database_send_each_event_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = tcp_collector(&rsyslogd, dir.path()).await;
    let echo = EchoServer::start().await;
    let vendors = [Vendor::new("acme-ehr").target("echo", echo.addr())];
    let url = format!("tcp://127.0.0.1:{}", rsyslog.port());
    let sending = |config: &mut sekisho_broker::BrokerConfig| {
        config.audit_syslog = Some(SyslogConfig {
            url: url.clone(),
            ca_file: None,
        });
        config.sender_lease = LEASE;
    };
    let first = TestBroker::start_with(&vendors, sending).await;
    assert_eq!(
        first.lease_of("audit-syslog").await.holder,
        first.broker_id()
    );
    let second = first.start_beside(&vendors, sending).await;
    let (_a, _b) = tokio::join!(
        first.open_session("acme-ehr", "tanaka", &["echo"]),
        second.open_session("acme-ehr", "sato", &["echo"]),
    );
    rsyslog
        .wait_until("both sessions", || {
            let opened = rsyslog
                .received()
                .iter()
                .filter(|m| m.msgid == "session-opened")
                .count();
            (opened == 2).then_some(())
        })
        .await;
    // The sender stops; the other broker takes over where it stopped, on the record.
    first.halt().await;
    let took = second.first_event(EventKind::SenderTookOver).await;
    assert_eq!(detail(&took, "feature"), "audit-syslog");
    assert_eq!(detail(&took, "destination"), url);
    assert_eq!(detail(&took, "previous"), first.broker_id());
    assert_eq!(detail(&took, "previous_lease"), "released");
    let reload = second.request_reload().await;
    let received = rsyslog
        .wait_for("the reload request", |m| m.seq() == reload)
        .await;
    let senders = assert_received_once_in_order_from(&second, &received, 1).await;
    // The first sent until it stopped, the second from then on, never both.
    let handover = senders
        .iter()
        .position(|s| *s == second.broker_id())
        .expect("the second broker sent");
    assert!(senders[..handover].iter().all(|s| *s == first.broker_id()));
    assert!(senders[handover..].iter().all(|s| *s == second.broker_id()));
    for kind in [
        "broker-stopped",
        "sender-took-over",
        "policy-reload-requested",
    ] {
        assert!(
            received[handover..].iter().any(|m| m.msgid == kind),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_cursor_file_is_the_starting_point_once_then_the_database_decides() {
    let Some(rsyslogd) = program("an_old_cursor_file_is_the_starting_point_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = tcp_collector(&rsyslogd, dir.path()).await;
    let echo = EchoServer::start().await;
    let url = format!("tcp://127.0.0.1:{}", rsyslog.port());
    // A data directory from before the cursor moved to the database: the collector had
    // everything up to event 2.
    let mut broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            std::fs::create_dir_all(&config.data_dir).unwrap();
            std::fs::write(
                config.data_dir.join(syslog::CURSOR_FILE),
                format!("2\n{url}\n"),
            )
            .unwrap();
            config.audit_syslog = Some(SyslogConfig {
                url: url.clone(),
                ca_file: None,
            });
        },
    )
    .await;
    let reload = broker.request_reload().await;
    let received = rsyslog
        .wait_for("the reload request", |m| m.seq() == reload)
        .await;
    assert_received_once_in_order_from(&broker, &received, 3).await;
    // The file says less than the database now; the database decides.
    let file = broker.dir().join("data").join(syslog::CURSOR_FILE);
    std::fs::write(&file, format!("1\n{url}\n")).unwrap();
    broker.restart().await;
    let reload = broker.request_reload().await;
    let received = rsyslog
        .wait_for("the second reload request", |m| m.seq() == reload)
        .await;
    assert_received_once_in_order_from(&broker, &received, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_capture_carries_signed_checkpoints_that_reveal_a_cut_tail() {
    use sekisho_broker::audit::checkpoint::{self, Checkpoint};
    use sekisho_broker::cli::{AuditError, CheckpointSources, audit_verify};
    let Some(rsyslogd) = program("the_collectors_capture_carries_signed_checkpoints") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = tcp_collector(&rsyslogd, dir.path()).await;
    let echo = EchoServer::start().await;
    let url = format!("tcp://127.0.0.1:{}", rsyslog.port());
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.audit_syslog = Some(SyslogConfig { url, ca_file: None });
            config.checkpoint_interval = Duration::from_millis(50);
        },
    )
    .await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    let messages = rsyslog
        .wait_until("a checkpoint of the head", || {
            let messages = rsyslog.checkpoints();
            messages
                .iter()
                .any(|m| Checkpoint::from_line(m.msg()).is_some_and(|c| c.seq >= head))
                .then_some(messages)
        })
        .await;
    assert!(
        messages.iter().all(|m| m.pri() == "<85>1"),
        "authpriv.notice"
    );
    broker.halt().await;
    let capture = collector_dir(dir.path()).join("received.log");
    let data_dir = broker.config().data_dir.clone();
    // Only the capture: the checkpoint file moved away, the database's checkpoints deleted.
    std::fs::rename(
        data_dir.join(checkpoint::CHECKPOINT_FILE),
        dir.path().join("moved.jsonl"),
    )
    .unwrap();
    broker.execute_sql("DELETE FROM audit_checkpoints").await;
    let sources = CheckpointSources {
        data_dir: Some(data_dir),
        files: vec![capture.clone()],
        ..CheckpointSources::default()
    };
    let intact = audit_verify(&broker.desk(), None, &sources).await.unwrap();
    assert!(
        intact.contains("Signed checkpoint: the chain matches"),
        "{intact}"
    );
    let keep = head - 2;
    broker
        .execute_sql(&format!("DELETE FROM audit_events WHERE seq > {keep}"))
        .await;
    broker
        .execute_sql(&format!(
            "UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_events WHERE seq = {keep}) WHERE id = 1"
        ))
        .await;
    let verdict = audit_verify(&broker.desk(), None, &sources).await;
    let Err(AuditError::Checkpoints(sentence)) = verdict else {
        panic!("the cut went unnoticed: {verdict:?}");
    };
    assert!(
        sentence.contains(&format!("The log ends at event {keep}"))
            && sentence.contains(&capture.display().to_string()),
        "{sentence}"
    );
}
