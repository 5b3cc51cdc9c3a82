use std::time::Duration;
use tokio::io::AsyncReadExt as _;

use proto::RequestAccess;
use sekisho_broker::approval::{Approved, DeskError, Until};
use sekisho_broker::audit::EventKind;
use sekisho_broker::clock::{Clock, to_unix_secs};
use sekisho_broker::session::{RequestId, Stage};
use sekisho_broker::{BindError, Broker, BrokerConfig};
use sekisho_client::SessionEvent;
use sekisho_e2e::{APPROVER, EchoServer, TestBroker, Vendor, write_policies};

const MIN: Duration = Duration::from_secs(60);

/// Asks the brokers to reload (as `policy reload` does) and returns what this one recorded:
/// `policy-loaded` or `policy-reload-refused`.
async fn reload(broker: &TestBroker) -> sekisho_broker::audit::StoredEvent {
    let asked = broker.request_reload().await;
    broker
        .event_after(
            &[EventKind::PolicyLoaded, EventKind::PolicyReloadRefused],
            asked,
        )
        .await
}
/// A bound on waits that are not themselves under test.
const PATIENCE: Duration = Duration::from_secs(10);

fn id(text: &str) -> RequestId {
    RequestId::parse(text).unwrap()
}

async fn next_event(session: &mut sekisho_client::Session) -> SessionEvent {
    tokio::time::timeout(PATIENCE, session.next_event())
        .await
        .expect("a session event")
}

fn desk_refusal<T: std::fmt::Debug>(result: Result<T, DeskError>) -> String {
    match result {
        Err(DeskError::Refused(refusal)) => refusal.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_touching_a_holiday_is_refused_and_names_the_day() {
    let echo = EchoServer::start().await;
    // The test clock starts on Monday 2026-11-23, 10:00 in Asia/Tokyo.
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .max_session("24h")
        .holidays(&["2026-11-24"])])
    .await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    // Today is not a holiday: an hour is fine; a session running past midnight is not.
    let message = desk_refusal(
        broker
            .desk()
            .approve(&id(&request), APPROVER, Until::For(15 * 60 * MIN))
            .await,
    );
    assert_eq!(
        message,
        "acme-ehr Co., Ltd.'s agreement allows no sessions on 2026-11-24 (Asia/Tokyo); choose another day."
    );
    broker.approve(&request).await;

    // On the holiday itself nothing can be approved.
    broker.clock().advance(24 * 60 * MIN);
    let request = broker.request(&mut session, &["echo"]).await;
    let message = desk_refusal(
        broker
            .desk()
            .approve(&id(&request), APPROVER, Until::For(30 * MIN))
            .await,
    );
    assert!(message.contains("no sessions on 2026-11-24"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_a_critical_target_needs_the_critical_approvals() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("kanto-net")
        .target("wlan", echo.addr())
        .critical_target("core-switch", echo.addr())
        .approvals(1)
        .critical_approvals(2)])
    .await;
    let mut session = broker.connect("kanto-net", "kato").await.unwrap();

    let plain = broker.request(&mut session, &["wlan"]).await;
    let done = broker
        .desk()
        .approve(&id(&plain), APPROVER, Until::For(30 * MIN))
        .await
        .unwrap();
    assert!(matches!(done, Approved::Complete { .. }), "{done:?}");

    let critical = broker.request(&mut session, &["wlan", "core-switch"]).await;
    let first = broker
        .desk()
        .approve(&id(&critical), APPROVER, Until::For(30 * MIN))
        .await
        .unwrap();
    assert_eq!(first, Approved::Partial { have: 1, need: 2 });
    // The same approver twice does not count as two.
    let again = desk_refusal(
        broker
            .desk()
            .approve(&id(&critical), APPROVER, Until::For(30 * MIN))
            .await,
    );
    assert!(again.contains("needs 2 different approvers"), "{again}");
    // Not open yet: the technician cannot use it.
    let code = broker.next_otp("kanto-net", "kato").await;
    let refused = session.open(&critical, &code).await.unwrap_err();
    assert!(
        refused.to_string().contains("not approved yet"),
        "{refused}"
    );
    let second = broker
        .desk()
        .approve(&id(&critical), "yamada", Until::For(30 * MIN))
        .await
        .unwrap();
    assert!(matches!(second, Approved::Complete { .. }), "{second:?}");
    let code = broker.next_otp("kanto-net", "kato").await;
    session.open(&critical, &code).await.unwrap();
    assert!(session.open_forward("core-switch").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_traffic_for_the_idle_timeout_ends_with_reason_idle() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .idle_timeout("5m")])
    .await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let (mut send, mut recv) = session.open_forward("echo").await.unwrap();
    let mut back = [0u8; 4];

    // Traffic four minutes in moves the idle deadline to nine minutes in.
    let opened = broker.clock().now();
    broker.clock().advance(4 * MIN);
    send.write_all(b"ping").await.unwrap();
    recv.read_exact(&mut back).await.unwrap();
    // Eight minutes in, five since the opening but four since the traffic: still live.
    broker.clock().advance(4 * MIN);
    // Ten minutes in, six since the traffic: ended.
    broker.clock().advance(2 * MIN);
    match next_event(&mut session).await {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "idle");
            assert_eq!(
                message,
                "The session was closed after a period without traffic."
            );
        }
        other => panic!("expected the idle end, got {other:?}"),
    }
    // The record says when the session last carried bytes: the traffic four minutes in
    // (without it, the session would have been idle since it opened).
    let ended = broker.first_event(EventKind::SessionEnded).await;
    assert_eq!(
        ended.event.details,
        [
            ("reason".to_owned(), "idle".to_owned()),
            (
                "last_traffic".to_owned(),
                sekisho_broker::audit::timestamp(opened + 4 * MIN)
            ),
        ]
    );
    let records = broker.desk().requests(&Default::default()).await.unwrap();
    assert_eq!(
        records[0].stage,
        Stage::Ended(sekisho_broker::session::EndReason::Idle)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_nobody_uses_ends_at_the_idle_timeout() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .idle_timeout("5m")])
    .await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    broker.clock().advance(5 * MIN);
    match next_event(&mut session).await {
        SessionEvent::Ended { reason, .. } => assert_eq!(reason, "idle"),
        other => panic!("expected the idle end, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_share_port_keeps_the_broker_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(
        dir.path(),
        &[Vendor::new("acme-ehr").target("files", "127.0.0.1:445".parse().unwrap())],
    );
    let mut config = BrokerConfig::new(dir.path().join("data"), policies.clone());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let error = match Broker::bind(config).await {
        Err(error) => error,
        Ok(_) => panic!("a broker started with an SMB target"),
    };
    assert!(matches!(error, BindError::Policy { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "{}:7: target `files` address \"127.0.0.1:445\" is a file-sharing port (SMB/NFS)",
            policies.join("vendors/acme-ehr.toml").display()
        )),
        "{text}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created on disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otp_lockout_threshold_is_the_hospitals() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    std::fs::write(
        broker.config().policies_dir.join("hospital.toml"),
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n\n[defaults]\notp_lockout_after = 3\n",
    )
    .unwrap();
    let asked = broker.request_reload().await;
    broker.event_after(&[EventKind::PolicyLoaded], asked).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    broker.approve(&request).await;
    let mut messages = Vec::new();
    for _ in 0..3 {
        messages.push(
            session
                .open(&request, "000000")
                .await
                .unwrap_err()
                .to_string(),
        );
    }
    assert!(messages[0].contains("2 attempt(s) left"), "{messages:?}");
    assert!(
        messages[2].contains("locked out after 3 wrong one-time passwords"),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_tightens_max_session_ends_a_live_session_at_the_new_limit() {
    let echo = EchoServer::start().await;
    // No traffic in this test: an idle timeout past the end keeps it out of the way.
    let vendor = Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .idle_timeout("3h");
    let broker = TestBroker::start(std::slice::from_ref(&vendor)).await;
    let started = broker.first_event(EventKind::PolicyLoaded).await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let live = broker.desk().requests(&Default::default()).await.unwrap();
    let opened_at = live[0].opened_at.unwrap();

    broker.clock().advance(10 * MIN);
    broker.rewrite_policies(&[vendor.max_session("30m")]);
    let loaded = reload(&broker).await;
    assert_eq!(loaded.event.kind, EventKind::PolicyLoaded);
    let sha = |event: &sekisho_broker::audit::StoredEvent| {
        event
            .event
            .details
            .iter()
            .find(|(key, _)| key == "sha256")
            .map(|(_, value)| value.clone())
            .unwrap()
    };
    assert_ne!(
        sha(&loaded),
        sha(&started),
        "the new set is recorded with its hash"
    );

    match next_event(&mut session).await {
        SessionEvent::Extended { end_at, by } => {
            assert_eq!(end_at, to_unix_secs(opened_at + 30 * MIN));
            assert_eq!(by, "policy-reload");
        }
        other => panic!("expected the new end time, got {other:?}"),
    }
    broker.clock().advance(20 * MIN);
    loop {
        match next_event(&mut session).await {
            SessionEvent::Warning { .. } => continue,
            SessionEvent::Ended { reason, .. } => {
                assert_eq!(reason, "expired");
                break;
            }
            other => panic!("expected the end, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_is_refused_and_the_policies_in_force_stay() {
    let echo = EchoServer::start().await;
    let vendor = Vendor::new("acme-ehr").target("echo", echo.addr());
    let broker = TestBroker::start(std::slice::from_ref(&vendor)).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;

    // A tighter limit and a typo: nothing of it may apply.
    broker.rewrite_policies(&[vendor.clone().max_session("30m").approvals(9)]);
    let refused = reload(&broker).await;
    assert_eq!(refused.event.kind, EventKind::PolicyReloadRefused);
    let problems = &refused
        .event
        .details
        .iter()
        .find(|(key, _)| key == "problems")
        .unwrap()
        .1;
    assert!(
        problems.contains("acme-ehr.toml:")
            && problems.contains("`approvals` must be from 1 to 5, not 9"),
        "{problems}"
    );

    // The old limit (2h) still holds: a new two-hour request is accepted, and the live
    // session keeps its end time and carries bytes.
    let mut other = broker.connect("acme-ehr", "sato").await.unwrap();
    broker.enroll("acme-ehr", "sato").await;
    let view = other
        .request(RequestAccess {
            targets: vec!["echo".into()],
            purpose: "after a broken reload".into(),
            ticket: String::new(),
            duration_secs: 2 * 3600,
        })
        .await
        .unwrap();
    assert_eq!(view.state, proto::RequestState::Requested);
    let (mut send, mut recv) = session.open_forward("echo").await.unwrap();
    send.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    recv.read_exact(&mut back).await.unwrap();
    let live = broker.desk().requests(&Default::default()).await.unwrap();
    let mine = live.iter().find(|r| r.technician == "tanaka").unwrap();
    assert_eq!(mine.end_at, Some(mine.approvals[0].until));
    assert!(mine.extensions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_hours_end_earlier_ends_a_live_session_when_they_end() {
    let echo = EchoServer::start().await;
    let vendor = Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .idle_timeout("3h");
    let broker = TestBroker::start(std::slice::from_ref(&vendor)).await;
    // The clock starts on a Monday at 10:00 in Tokyo; the session is approved for an hour.
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;

    broker.rewrite_policies(&[vendor.hours("Mon-Fri 08:00-10:30")]);
    let loaded = reload(&broker).await;
    assert_eq!(loaded.event.kind, EventKind::PolicyLoaded);
    match next_event(&mut session).await {
        SessionEvent::Extended { end_at, by } => {
            assert_eq!(end_at, to_unix_secs(sekisho_e2e::clock_start() + 30 * MIN));
            assert_eq!(by, "policy-reload");
        }
        other => panic!("expected the new end time, got {other:?}"),
    }
    let moved = broker.first_event(EventKind::SessionExtended).await;
    let why = moved
        .event
        .details
        .iter()
        .find(|(key, _)| key == "why")
        .map(|(_, value)| value.clone())
        .unwrap();
    assert!(why.contains("hours or holidays"), "{why}");
}

/// Only the connection knows the technician's address, so after a reload each connection
/// checks it against the vendor's new `source_networks`: one no longer allowed ends at once,
/// on the record with why, and the client is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_the_technicians_network_ends_their_live_session() {
    let echo = EchoServer::start().await;
    let vendor = Vendor::new("acme-ehr")
        .target("echo", echo.addr())
        .idle_timeout("3h");
    let broker = TestBroker::start(&[vendor.clone().source_networks(&["127.0.0.0/8"])]).await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    sekisho_e2e::echo_once(&session, "echo").await;

    broker.rewrite_policies(&[vendor.source_networks(&["192.0.2.0/24"])]);
    assert_eq!(reload(&broker).await.event.kind, EventKind::PolicyLoaded);

    match next_event(&mut session).await {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "revoked");
            assert!(
                message.contains("127.0.0.1") && message.contains("no longer"),
                "{message}"
            );
        }
        other => panic!("expected the end of the session, got {other:?}"),
    }
    let ended = broker.first_event(EventKind::SessionEnded).await;
    let detail = |key: &str| ended.event.detail_value(key).unwrap_or_default().to_owned();
    assert_eq!(detail("reason"), "revoked");
    assert!(
        detail("note").contains("127.0.0.1"),
        "{:?}",
        ended.event.details
    );
}
