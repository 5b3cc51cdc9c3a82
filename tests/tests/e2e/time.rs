//! The broker's time: a step of the wall clock is recorded with both readings and a live
//! session keeps its real end across it; the host's time sync state is recorded at start and
//! on each change; `status` and the web Status page show both and report the problems.

use std::sync::Arc;
use std::time::Duration;

use sekisho_broker::audit::{Actor, EventKind, StoredEvent, timestamp};
use sekisho_broker::clock::Clock;
use sekisho_broker::staff::Role;
use sekisho_broker::timewatch::{SyncState, SystemTimeSync};
use sekisho_client::{Session, SessionEvent};
use sekisho_e2e::web::{StaffAccount, WebClient, start_web_broker};
use sekisho_e2e::{EchoServer, TestBroker, Vendor, clock_start, detail, echo_once};

const HOUR: Duration = Duration::from_secs(3600);
const MIN: Duration = Duration::from_secs(60);
/// A cut reaches a live session within this (DESIGN §5); nothing arriving within it means
/// nothing was cut.
const REACH: Duration = Duration::from_secs(1);
/// A bound on waits that are not themselves under test.
const PATIENCE: Duration = Duration::from_secs(10);

async fn broker_with_echo() -> (TestBroker, EchoServer) {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    (broker, echo)
}

/// The session's end, skipping the warnings before it.
async fn end_of(session: &mut Session) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match session.next_event().await {
                SessionEvent::Ended { reason, .. } => return reason,
                SessionEvent::Warning { .. } => continue,
                other => panic!("expected the session's end, got {other:?}"),
            }
        }
    })
    .await
    .expect("the session ends")
}

/// The first `clock-jumped` after event `after`.
async fn jump_after(broker: &TestBroker, after: i64) -> StoredEvent {
    broker.event_after(&[EventKind::ClockJumped], after).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stepping_the_wall_clock_back_and_forward_is_recorded_and_time_passing_is_not() {
    let (broker, _echo) = broker_with_echo().await;
    let me = Actor::Broker(broker.broker_id());
    let (head, _) = broker.desk().store().audit_head().await.unwrap();

    // Time passes (both clocks), then an administrator sets the clock back an hour.
    broker.clock().advance(2 * HOUR);
    broker.clock().step_wall(HOUR, false);
    let back = jump_after(&broker, head).await;
    assert_eq!(back.event.actor, me);
    assert_eq!(
        detail(&back, "expected"),
        timestamp(clock_start() + 2 * HOUR)
    );
    assert_eq!(detail(&back, "observed"), timestamp(clock_start() + HOUR));
    assert_eq!(detail(&back, "step_ms"), "-3600000");
    assert_eq!(
        back.event.at,
        clock_start() + HOUR,
        "the event carries the clock it found"
    );

    // More time passes, then the clock is set forward an hour.
    broker.clock().advance(3 * HOUR);
    broker.clock().step_wall(HOUR, true);
    let ahead = jump_after(&broker, back.seq).await;
    assert_eq!(
        detail(&ahead, "expected"),
        timestamp(clock_start() + 4 * HOUR)
    );
    assert_eq!(
        detail(&ahead, "observed"),
        timestamp(clock_start() + 5 * HOUR)
    );
    assert_eq!(detail(&ahead, "step_ms"), "3600000");

    // Had time passing counted, there would be a third event, or a step of four hours.
    let jumps = broker.events_of(EventKind::ClockJumped).await;
    assert_eq!(jumps.len(), 2, "{jumps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_still_ends_on_time_when_the_wall_clock_is_set_back_an_hour() {
    let (broker, _echo) = broker_with_echo().await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    // Approved for an hour; opening it took 30 seconds of the clock.
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    echo_once(&session, "echo").await;

    broker.clock().step_wall(HOUR, false);
    jump_after(&broker, head).await;
    // The wall clock now says there are two hours left; the session has its real one.
    broker.clock().advance(HOUR - Duration::from_secs(30));
    assert_eq!(end_of(&mut session).await, "expired");
    let ended = broker.first_event(EventKind::SessionEnded).await;
    assert_eq!(detail(&ended, "reason"), "expired");
    assert_eq!(
        ended.event.at,
        broker.clock().now(),
        "recorded at the wall clock's time, an hour before the end time it was approved for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_does_not_end_at_once_when_the_wall_clock_is_set_forward_an_hour() {
    let (broker, _echo) = broker_with_echo().await;
    let (head, _) = broker.desk().store().audit_head().await.unwrap();
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;

    broker.clock().step_wall(HOUR, true);
    jump_after(&broker, head).await;
    // The wall clock is past the end time; a minute passing wakes every sleeper, and the
    // session is not cut.
    broker.clock().advance(MIN);
    echo_once(&session, "echo").await;
    let nothing = tokio::time::timeout(REACH, session.next_event()).await;
    assert!(nothing.is_err(), "the session was told {nothing:?}");
    assert!(broker.events_of(EventKind::SessionEnded).await.is_empty());

    // It ends when its hour is up.
    broker.clock().advance(HOUR - MIN - Duration::from_secs(30));
    assert_eq!(end_of(&mut session).await, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_state_at_start_and_each_change_are_recorded_and_status_reports_them() {
    let (broker, _echo) = broker_with_echo().await;
    let id = broker.broker_id();
    let me = Actor::Broker(id.clone());
    let at_start = broker.first_event(EventKind::ClockSync).await;
    assert_eq!(at_start.event.actor, me);
    assert_eq!(detail(&at_start, "state"), "synchronised");
    assert_eq!(detail(&at_start, "source"), "test");
    assert_eq!(at_start.event.detail_value("was"), None);

    let status = sekisho_broker::cli::status(&broker.desk(), broker.clock().now())
        .await
        .unwrap();
    assert!(status.problems.is_empty(), "{}", status.text);
    let row = clock_row(&status.text, &id);
    assert!(
        row.starts_with(&format!(
            "{id} running synchronised (test) since 2026-11-23 10:00 (Mon) none"
        )),
        "{}",
        status.text
    );

    // The time service loses its sources.
    broker.time_sync().set(SyncState::Unsynchronised);
    let lost = broker
        .event_after(&[EventKind::ClockSync], at_start.seq)
        .await;
    assert_eq!(detail(&lost, "state"), "unsynchronised");
    assert_eq!(detail(&lost, "was"), "synchronised");
    let status = sekisho_broker::cli::status(&broker.desk(), broker.clock().now())
        .await
        .unwrap();
    assert_eq!(status.problems.len(), 1, "{}", status.text);
    assert!(
        status.problems[0].starts_with(&format!(
            "broker {id}'s clock is not synchronised (test says so, since 2026-11-23 10:00 (Mon) Asia/Tokyo): the times it records may drift"
        )),
        "{}",
        status.text
    );
    assert!(
        clock_row(&status.text, &id).contains("NOT synchronised (test)"),
        "{}",
        status.text
    );
    assert!(
        status.text.contains("\nPROBLEM: broker "),
        "{}",
        status.text
    );

    // Nothing can tell: shown with why, not a problem.
    broker.time_sync().set(SyncState::Unknown);
    let unknown = broker.event_after(&[EventKind::ClockSync], lost.seq).await;
    assert_eq!(detail(&unknown, "state"), "unknown");
    assert_eq!(detail(&unknown, "reason"), "set by the test");
    assert_eq!(detail(&unknown, "was"), "unsynchronised");
    let status = sekisho_broker::cli::status(&broker.desk(), broker.clock().now())
        .await
        .unwrap();
    assert!(status.problems.is_empty(), "{}", status.text);
    assert!(
        status.text.contains(&format!(
            "Broker {id}: whether its clock is synchronised is unknown: set by the test. This is not counted as a problem"
        )),
        "{}",
        status.text
    );

    // A step of the wall clock is a problem for a day.
    broker.clock().step_wall(HOUR, false);
    jump_after(&broker, unknown.seq).await;
    let status = sekisho_broker::cli::status(&broker.desk(), broker.clock().now())
        .await
        .unwrap();
    assert_eq!(status.problems.len(), 1, "{}", status.text);
    assert!(
        status.problems[0].starts_with(&format!(
            "broker {id}'s wall clock was set back by 60 min at 2026-11-23 09:00 (Mon) Asia/Tokyo (0 s ago; expected 2026-11-23T01:00:00Z, read 2026-11-23T00:00:00Z): check the host's time service; events recorded around then carry the wall clock's time"
        )),
        "{}",
        status.text
    );
    assert!(
        clock_row(&status.text, &id).ends_with("back 60 min at 2026-11-23 09:00 (Mon)"),
        "{}",
        status.text
    );
    broker.clock().advance(25 * HOUR);
    let later = sekisho_broker::cli::status(&broker.desk(), broker.clock().now())
        .await
        .unwrap();
    assert!(later.problems.is_empty(), "{}", later.text);

    // A broker that stopped is shown so and raises nothing, whatever its clock was.
    broker.time_sync().set(SyncState::Unsynchronised);
    broker
        .event_after(&[EventKind::ClockSync], unknown.seq)
        .await;
    broker.clock().step_wall(HOUR, true);
    let last_jump = broker.events_of(EventKind::ClockJumped).await[0].seq;
    jump_after(&broker, last_jump).await;
    broker.halt().await;
    let stopped = sekisho_broker::cli::status(&broker.desk(), broker.clock().now())
        .await
        .unwrap();
    assert!(stopped.problems.is_empty(), "{}", stopped.text);
    assert!(
        clock_row(&stopped.text, &id).starts_with(&format!("{id} stopped NOT synchronised")),
        "{}",
        stopped.text
    );
}

/// The row of `broker` in `status`'s clock table, its columns one space apart.
fn clock_row(text: &str, broker: &str) -> String {
    let clocks = text
        .split_once("\nClocks (")
        .unwrap_or_else(|| panic!("no clock table: {text}"))
        .1;
    clocks
        .lines()
        .find(|line| line.starts_with(broker))
        .unwrap_or_else(|| panic!("no row for {broker}: {text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn the_status_page_shows_each_brokers_clock_and_its_problems_in_the_pages_language() {
    let broker = start_web_broker(&[Vendor::new("acme")], false).await;
    let id = broker.broker_id();
    let admin = StaffAccount::create(&broker, "sato", &[Role::Admin]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &admin).await;
    let page = client.get("/status").await;
    assert!(
        page.body.contains(r#"id="status-verdict""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<table id="clocks">"#),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("synchronised (test) since 2026-11-23 10:00 (Mon)"),
        "{}",
        page.body
    );

    let first = broker.first_event(EventKind::ClockSync).await;
    broker.time_sync().set(SyncState::Unsynchronised);
    let lost = broker.event_after(&[EventKind::ClockSync], first.seq).await;
    broker.clock().step_wall(HOUR, false);
    let jump = jump_after(&broker, first.seq).await;
    // Logging in moved the clock (a fresh code each time): read the times from the events.
    let zone = broker.desk().zone().clone();
    let (since, stepped) = (zone.format(lost.event.at), zone.format(jump.event.at));
    let page = client.get("/status").await;
    assert!(
        !page.body.contains(r#"id="status-verdict""#),
        "{}",
        page.body
    );
    for part in [
        format!("clock is not synchronised (test says so, since {since} Asia/Tokyo)"),
        format!("wall clock was set back by 60 min at {stepped} Asia/Tokyo"),
        format!("NOT synchronised (test) since {since}"),
        format!("back 60 min at {stepped}"),
    ] {
        assert!(page.body.contains(&part), "{part}: {}", page.body);
    }

    client.get("/lang/ja").await;
    let page = client.get("/status").await;
    for part in [
        format!(
            "問題：ブローカー {id} の時計が同期していません（test による、{since} Asia/Tokyo から）。"
        ),
        format!("問題：ブローカー {id} の時計が {stepped} Asia/Tokyo に 60 min 戻されました"),
        format!("同期していません（test）{since} から"),
        format!("{stepped} に 60 min 戻された"),
    ] {
        assert!(page.body.contains(&part), "{part}: {}", page.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_own_probe_answers_and_an_unknown_state_says_why() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.time_sync = Arc::new(SystemTimeSync::default());
        },
    )
    .await;
    let recorded = broker.first_event(EventKind::ClockSync).await;
    let state = detail(&recorded, "state");
    let source = detail(&recorded, "source");
    match state {
        "synchronised" | "unsynchronised" => {
            assert!(["timedatectl", "chronyc"].contains(&source), "{recorded:?}");
        }
        "unknown" => {
            assert_eq!(source, "none");
            assert!(
                detail(&recorded, "reason")
                    .starts_with("neither timedatectl nor chronyc could tell (timedatectl: "),
                "{recorded:?}"
            );
        }
        other => panic!("state {other}"),
    }
    eprintln!("this host's time sync: {:?}", recorded.event.details);
}
