use std::time::Duration;

use proto::ErrorCode;
use sekisho_broker::audit::{self, Actor, ChainBreak, EventKind, StoredEvent, Verdict};
use sekisho_broker::session::RequestId;
use sekisho_broker::store::AuditFilter;
use sekisho_client::{ControlError, ForwardError};
use sekisho_e2e::{APPROVER, EchoServer, TestBroker, Vendor, detail};

const PATIENCE: Duration = Duration::from_secs(10);

async fn events_of(broker: &TestBroker, request: &str) -> Vec<StoredEvent> {
    broker
        .desk()
        .store()
        .audit_events(&AuditFilter {
            request: Some(request.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Verifies the chain up to the head read first: brokers may append while the test reads, and
/// what comes after the head it read is not this check's business.
async fn assert_chain_intact(store: &sekisho_broker::store::Store) -> i64 {
    let (count, head) = store.audit_head().await.unwrap();
    let events: Vec<StoredEvent> = store
        .all_audit_events()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.seq <= count)
        .collect();
    assert_eq!(audit::verify(events), Verdict::Intact { count, head });
    count
}

/// Waits until `request` has an event of `kind` (events of a forward's end are written as it
/// closes, a moment after the client sees the bytes).
async fn wait_for_event(broker: &TestBroker, request: &str, kind: EventKind) -> StoredEvent {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(event) = events_of(broker, request)
                .await
                .into_iter()
                .find(|e| e.event.kind == kind)
            {
                return event;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {} event for {request}", kind.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_whole_story_is_on_the_record_in_order_with_who_did_each_step() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    broker.approve(&request).await;
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    session.open(&request, &code).await.unwrap();
    {
        let (mut send, mut recv) = session.open_forward("echo").await.unwrap();
        send.write_all(&[7u8; 1000]).await.unwrap();
        send.finish().unwrap();
        let back = recv.read_to_end(4096).await.unwrap();
        assert_eq!(back.len(), 1000);
    }
    let closed = wait_for_event(&broker, &request, EventKind::ForwardClosed).await;
    assert_eq!(detail(&closed, "bytes_to_target"), "1000");
    assert_eq!(detail(&closed, "bytes_from_target"), "1000");
    assert_eq!(detail(&closed, "address"), echo.addr().to_string());
    assert_eq!(closed.event.target.as_deref(), Some("echo"));

    broker
        .desk()
        .revoke(&RequestId::parse(&request).unwrap(), "yamada", "work done")
        .await
        .unwrap();
    let ended = wait_for_event(&broker, &request, EventKind::SessionEnded).await;
    assert_eq!(ended.event.actor, Actor::Staff("yamada".into()));
    assert_eq!(detail(&ended, "reason"), "revoked");
    assert_eq!(detail(&ended, "note"), "work done");

    let story = events_of(&broker, &request).await;
    let kinds: Vec<EventKind> = story.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::RequestMade,
            EventKind::RequestApproved,
            EventKind::SessionOpened,
            EventKind::ForwardOpened,
            EventKind::ForwardClosed,
            EventKind::SessionEnded,
        ]
    );
    let tanaka = Actor::Technician {
        vendor: "acme-ehr".into(),
        technician: "tanaka".into(),
    };
    assert_eq!(story[0].event.actor, tanaka);
    assert_eq!(detail(&story[0], "purpose"), "end-to-end test");
    assert_eq!(story[1].event.actor, Actor::Staff(APPROVER.into()));
    assert_eq!(story[2].event.actor, tanaka);
    assert!(
        story
            .iter()
            .all(|e| e.event.technician.as_deref() == Some("tanaka"))
    );

    // The chain over everything the broker wrote is intact, and its head is the store's head.
    let count = assert_chain_intact(broker.desk().store()).await;
    assert!(
        count >= 8,
        "broker start and policy load come first: {count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_recorded_with_their_code() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .max_session("1h")])
    .await;
    let store = broker.desk().store().clone();

    // A forward to a target outside the session.
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    assert!(matches!(
        session.open_forward("pacs").await,
        Err(ForwardError::Refused(_))
    ));
    let refused = broker.first_event(EventKind::ForwardRefused).await;
    assert_eq!(refused.event.target.as_deref(), Some("pacs"));
    assert_eq!(detail(&refused, "code"), ErrorCode::TargetRefused.as_str());

    // A request longer than the agreement allows.
    let mut asking = broker.connect("acme-ehr", "sato").await.unwrap();
    broker.enroll("acme-ehr", "sato").await;
    let too_long = asking
        .request(proto::RequestAccess {
            targets: vec!["echo".into()],
            purpose: "long".into(),
            ticket: String::new(),
            duration_secs: 7200,
        })
        .await;
    assert!(matches!(too_long, Err(ControlError::Refused(_))));
    let by_kind = |kind| {
        let store = store.clone();
        async move {
            store
                .audit_events(&AuditFilter {
                    kinds: vec![kind],
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let request_refused = by_kind(EventKind::RequestRefused).await;
    assert_eq!(
        detail(&request_refused[0], "code"),
        ErrorCode::PolicyRefused.as_str()
    );

    // A wrong one-time password.
    let request = broker.request(&mut asking, &["echo"]).await;
    broker.approve(&request).await;
    assert!(asking.open(&request, "000000").await.is_err());
    let otp_failed = by_kind(EventKind::OtpFailed).await;
    assert_eq!(
        otp_failed[0].event.request.as_deref(),
        Some(request.as_str())
    );
    assert_eq!(detail(&otp_failed[0], "consecutive_failures"), "1");

    // A certificate no enrollment registered, for a vendor with no agreement.
    assert!(
        broker
            .connect_unregistered("ghost", "tanaka")
            .await
            .is_err()
    );
    let connection_refused = by_kind(EventKind::ConnectionRefused).await;
    assert_eq!(connection_refused[0].event.vendor.as_deref(), Some("ghost"));
    assert_eq!(
        detail(&connection_refused[0], "code"),
        ErrorCode::UnknownIdentity.as_str()
    );

    assert_chain_intact(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_sharing_one_database_append_to_one_chain() {
    let echo = EchoServer::start().await;
    let vendors = [Vendor::new("acme-ehr").target("echo", echo.addr())];
    let first = TestBroker::start(&vendors).await;
    // A second broker of the same hospital: the same database, CA and sealing key, its own id.
    let second = first.start_beside(&vendors, |_| {}).await;

    // Work on both at once.
    let (a, b) = tokio::join!(
        first.open_session("acme-ehr", "tanaka", &["echo"]),
        second.open_session("acme-ehr", "sato", &["echo"]),
    );
    // A revocation made through either desk reaches the session held by the other broker.
    let live = first.desk().requests(&Default::default()).await.unwrap();
    let sato = live.iter().find(|r| r.technician == "sato").unwrap();
    first
        .desk()
        .revoke(&sato.id, "yamada", "moving to one broker")
        .await
        .unwrap();
    let mut b = b;
    match tokio::time::timeout(PATIENCE, b.next_event())
        .await
        .unwrap()
    {
        sekisho_client::SessionEvent::Ended { reason, .. } => assert_eq!(reason, "revoked"),
        other => panic!("expected the revocation on the other broker, got {other:?}"),
    }
    drop(a);

    let store = first.desk().store().clone();
    let events = store.all_audit_events().await.unwrap();
    let brokers: std::collections::HashSet<String> = events
        .iter()
        .filter(|e| e.event.kind == EventKind::BrokerStarted)
        .map(|e| e.event.actor.encode())
        .collect();
    assert_eq!(brokers.len(), 2, "both brokers wrote to the one log");
    assert_chain_intact(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_log_cannot_be_written_nothing_happens_and_the_technician_is_told_why() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let approved = broker.request(&mut session, &["echo"]).await;
    broker.approve(&approved).await;
    let pending = broker.request(&mut session, &["echo"]).await;
    let (count_before, _) = broker.desk().store().audit_head().await.unwrap();

    broker.break_audit_writes().await;
    // The hospital cannot approve either: nothing changes, and the approver is told.
    let approval = broker
        .desk()
        .approve(
            &RequestId::parse(&pending).unwrap(),
            APPROVER,
            sekisho_broker::approval::Until::For(Duration::from_secs(600)),
        )
        .await;
    match approval {
        Err(error @ sekisho_broker::approval::DeskError::Store(_)) => {
            assert!(
                error.to_string().starts_with("Nothing was changed"),
                "{error}"
            );
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
    // No new request: refused with the reason, and no request row left behind.
    let asked = session
        .request(proto::RequestAccess {
            targets: vec!["echo".into()],
            purpose: "while the disk is full".into(),
            ticket: String::new(),
            duration_secs: 600,
        })
        .await;
    match asked {
        Err(ControlError::Refused(refusal)) => {
            assert_eq!(refusal.code, ErrorCode::StoreUnavailable);
            assert!(
                refusal.message.contains("cannot record"),
                "{}",
                refusal.message
            );
        }
        other => panic!("expected the broker to refuse, got {other:?}"),
    }
    let status = session.status().await.unwrap();
    assert_eq!(status.len(), 2, "the refused request left nothing behind");
    assert!(
        status
            .iter()
            .any(|v| v.id == pending && v.state == proto::RequestState::Requested)
    );
    // No session either: the approved request stays approved, unopened.
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    let opened = session.open(&approved, &code).await;
    assert!(
        matches!(&opened, Err(ControlError::Refused(r)) if r.code == ErrorCode::StoreUnavailable),
        "{opened:?}"
    );
    let record = broker
        .desk()
        .store()
        .request(&RequestId::parse(&approved).unwrap())
        .await
        .unwrap();
    assert_eq!(record.stage, sekisho_broker::session::Stage::Approved);

    broker.heal_audit_writes().await;
    let count_after = assert_chain_intact(broker.desk().store()).await;
    assert_eq!(count_after, count_before, "no event was half-written");
    // Once the log can be written again, the same request opens.
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    session.open(&approved, &code).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_whose_forwards_cannot_be_recorded_is_ended() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let live = broker.desk().requests(&Default::default()).await.unwrap()[0]
        .id
        .clone();

    broker.break_audit_writes().await;
    match session.open_forward("echo").await {
        Err(ForwardError::Refused(refusal)) => {
            assert_eq!(refusal.code, ErrorCode::StoreUnavailable)
        }
        other => panic!("no bytes may flow unrecorded, got {:?}", other.map(|_| ())),
    }
    match tokio::time::timeout(PATIENCE, session.next_event())
        .await
        .unwrap()
    {
        sekisho_client::SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "store-unavailable");
            assert!(message.contains("can no longer record"), "{message}");
        }
        other => panic!("expected the session to end, got {other:?}"),
    }

    // Once the store can be written again, the record catches up.
    broker.heal_audit_writes().await;
    let record = tokio::time::timeout(PATIENCE, async {
        loop {
            let record = broker.desk().store().request(&live).await.unwrap();
            if record.stage != sekisho_broker::session::Stage::Active {
                return record;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the end is recorded once the store is back");
    assert_eq!(
        record.stage,
        sekisho_broker::session::Stage::Ended(sekisho_broker::session::EndReason::StoreUnavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_a_deletion_an_insertion_or_a_reordering_in_the_database_is_found_where_it_is() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let store = broker.desk().store().clone();
    let count = assert_chain_intact(&store).await;
    assert!(count >= 5, "{count}");
    let verdict = || {
        let store = store.clone();
        async move { audit::verify(store.all_audit_events().await.unwrap()) }
    };
    let broken_at = |verdict: Verdict| match verdict {
        Verdict::Broken { seq, problem } => (seq, problem),
        intact => panic!("tampering went unnoticed: {intact:?}"),
    };

    // Edit: an approver's name changed after the fact.
    broker
        .execute_sql(
            "UPDATE audit_events SET actor = 'staff:mallory' WHERE kind = 'request-approved'",
        )
        .await;
    let approved_seq = store
        .audit_events(&AuditFilter {
            kinds: vec![EventKind::RequestApproved],
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .seq;
    let (seq, problem) = broken_at(verdict().await);
    assert_eq!(seq, approved_seq);
    assert_eq!(problem, ChainBreak::Edited);
    broker
        .execute_sql(&format!(
            "UPDATE audit_events SET actor = 'staff:{APPROVER}' WHERE seq = {approved_seq}"
        ))
        .await;
    assert_chain_intact(&store).await;

    // Deletion of event 3, then put back as an insertion out of place (a reordering): the
    // copy goes in at the end as a new number.
    broker
        .execute_sql("CREATE TABLE held AS SELECT * FROM audit_events WHERE seq = 3")
        .await;
    broker
        .execute_sql("DELETE FROM audit_events WHERE seq = 3")
        .await;
    let (seq, problem) = broken_at(verdict().await);
    assert_eq!(seq, 3);
    assert_eq!(
        problem,
        ChainBreak::Missing {
            missing: 3,
            next: 4
        }
    );
    broker
        .execute_sql("INSERT INTO audit_events SELECT seq + 1000, at, actor, kind, request_id, vendor, technician, target, details, prev_hash, hash FROM held")
        .await;
    let (seq, _) = broken_at(verdict().await);
    assert_eq!(seq, 3, "still missing where it was taken from");
    broker
        .execute_sql("DELETE FROM audit_events WHERE seq > 1000")
        .await;
    broker
        .execute_sql("INSERT INTO audit_events SELECT * FROM held")
        .await;
    assert_chain_intact(&store).await;

    // Insertion: a forged event squeezed in by renumbering everything after it.
    broker
        .execute_sql("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 4")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1004")
        .await;
    broker
        .execute_sql("INSERT INTO audit_events SELECT 4, at, 'staff:mallory', kind, request_id, vendor, technician, target, details, hash, hash FROM held")
        .await;
    let (seq, _) = broken_at(verdict().await);
    assert_eq!(seq, 4);
    broker
        .execute_sql("DELETE FROM audit_events WHERE seq = 4")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = seq - 1001 WHERE seq >= 1005")
        .await;
    assert_chain_intact(&store).await;

    // Reordering: two events swap numbers.
    broker
        .execute_sql("UPDATE audit_events SET seq = -2 WHERE seq = 2")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = 2 WHERE seq = 3")
        .await;
    broker
        .execute_sql("UPDATE audit_events SET seq = 3 WHERE seq = -2")
        .await;
    let (seq, _) = broken_at(verdict().await);
    assert_eq!(seq, 2);
}

/// Waits until `path` holds a line for which `wanted` is true; returns every line parsed.
async fn wait_for_stream(
    path: &std::path::Path,
    wanted: impl Fn(&StoredEvent) -> bool,
) -> Vec<StoredEvent> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
            // Only whole lines: the broker may be in the middle of writing the last one.
            let events: Vec<StoredEvent> = text
                .split_inclusive('\n')
                .filter(|line| line.ends_with('\n'))
                // Signed checkpoints come as lines of their own (see the checkpoints module).
                .filter(|line| audit::checkpoint::Checkpoint::from_line(line).is_none())
                .map(|line| {
                    serde_json::from_str::<audit::ExportLine>(line)
                        .unwrap()
                        .to_stored()
                        .unwrap()
                })
                .collect();
            if events.iter().any(&wanted) {
                return events;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream at {} never got the line", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_siem_stream_carries_every_event_as_a_json_line_that_verifies_on_its_own() {
    let echo = EchoServer::start().await;
    let stream_dir = tempfile::tempdir().unwrap();
    let path = stream_dir.path().join("audit.jsonl");
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.audit_stream = Some(path.clone());
        },
    )
    .await;
    let _session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let events = wait_for_stream(&path, |e| e.event.kind == EventKind::SessionOpened).await;
    assert_eq!(events[0].seq, 1, "from the first event on");
    let last = events.last().unwrap();
    assert_eq!(
        audit::verify(events.clone()),
        Verdict::Intact {
            count: last.seq,
            head: last.hash.clone()
        }
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the stream is readable by its owner only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_be_written_never_blocks_the_broker_is_reported_and_catches_up() {
    let echo = EchoServer::start().await;
    let stream_dir = tempfile::tempdir().unwrap();
    // The directory does not exist yet: every write fails.
    let path = stream_dir.path().join("not-yet").join("audit.jsonl");
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.audit_stream = Some(path.clone());
        },
    )
    .await;
    // The broker works as usual.
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    assert!(session.open_forward("echo").await.is_ok());
    // The failure is on the record.
    let failed = broker.first_event(EventKind::AuditStreamFailed).await;
    assert!(
        detail(&failed, "error").contains("No such file"),
        "{:?}",
        failed.event
    );

    // Once the file can be written, everything kept arrives, the failure included.
    std::fs::create_dir(stream_dir.path().join("not-yet")).unwrap();
    let events = wait_for_stream(&path, |e| e.event.kind == EventKind::AuditStreamRecovered).await;
    assert_eq!(events[0].seq, 1);
    assert!(
        events
            .iter()
            .any(|e| e.event.kind == EventKind::AuditStreamFailed)
    );
    assert!(
        events
            .iter()
            .any(|e| e.event.kind == EventKind::SessionOpened)
    );
    let last = events.last().unwrap();
    assert!(
        matches!(audit::verify(events.clone()), Verdict::Intact { count, .. } if count == last.seq)
    );
}

/// Forward events are committed in groups (one transaction for every event waiting); each
/// forward must still be on the record, once, before the broker answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_opened_at_once_are_each_on_the_record_before_they_are_answered() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let request = broker
        .first_event(EventKind::SessionOpened)
        .await
        .event
        .request
        .unwrap();
    let store = broker.desk().store().clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (forwarder, store, request, answered) = (
            session.forwarder(),
            store.clone(),
            request.clone(),
            answered.clone(),
        );
        opening.spawn(async move {
            let streams = forwarder.open_forward("echo").await.unwrap();
            let answered_so_far = answered.fetch_add(1, Ordering::SeqCst) + 1;
            let on_record = store
                .audit_events(&AuditFilter {
                    request: Some(request),
                    kinds: vec![EventKind::ForwardOpened],
                    ..Default::default()
                })
                .await
                .unwrap()
                .len();
            assert!(
                on_record >= answered_so_far,
                "{answered_so_far} forwards answered but {on_record} on the record"
            );
            streams
        });
    }
    let mut streams = Vec::new();
    while let Some(opened) = opening.join_next().await {
        streams.push(opened.unwrap());
    }
    let opened = events_of(&broker, &request)
        .await
        .into_iter()
        .filter(|e| e.event.kind == EventKind::ForwardOpened)
        .count();
    assert_eq!(opened, 64, "each forward is recorded once");
    assert_chain_intact(&store).await;
}

/// What an investigator matches against other logs: where the technician connected from and
/// with which certificate, and the broker's own address and port toward the target (what the
/// target's log shows as its peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_names_the_technicians_address_and_certificate_and_the_brokers_side_of_each_forward()
 {
    // A target that tells which address each connection came from.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let (peers, mut peer_seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = target.accept().await {
            let _ = peers.send(peer);
            drop(tcp);
        }
    });
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("db", target_addr)]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["db"]).await;
    let opened = broker.first_event(EventKind::SessionOpened).await;
    let request = opened.event.request.clone().unwrap();

    let source: std::net::SocketAddr = detail(&opened, "source").parse().unwrap();
    assert!(source.ip().is_loopback(), "{source}");
    assert_ne!(source.port(), 0);
    assert_ne!(
        source,
        broker.addr(),
        "the broker's address, not the technician's"
    );
    let standing = broker
        .desk()
        .store()
        .certificate_standing(detail(&opened, "certificate"))
        .await
        .unwrap()
        .expect("the recorded fingerprint is a certificate the broker issued");
    assert_eq!(
        (standing.vendor.as_str(), standing.technician.as_str()),
        ("acme-ehr", "tanaka")
    );

    let _streams = session.open_forward("db").await.unwrap();
    let peer = tokio::time::timeout(PATIENCE, peer_seen.recv())
        .await
        .unwrap()
        .unwrap();
    let forward = wait_for_event(&broker, &request, EventKind::ForwardOpened).await;
    assert_eq!(detail(&forward, "local"), peer.to_string());
    assert_eq!(detail(&forward, "address"), target_addr.to_string());

    // `audit show` tells both.
    let story = sekisho_broker::cli::audit_show(&broker.desk(), &request)
        .await
        .unwrap();
    assert!(story.contains(&format!("from {source}")), "{story}");
    assert!(story.contains(detail(&opened, "certificate")), "{story}");
    assert!(
        story.contains(&format!("from the broker's {peer}")),
        "{story}"
    );
}
