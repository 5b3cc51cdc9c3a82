use std::time::Duration;

use proto::ErrorCode;
use sekisho_broker::audit::{Actor, EventKind};
use sekisho_broker::clock::Clock;
use sekisho_broker::session::{EndReason, RequestId, RequestRecord, Stage};
use sekisho_client::{ControlError, Session, SessionEvent};
use sekisho_e2e::{EchoServer, TestBroker, Vendor, detail, echo_once};

/// A bound on waits that are not themselves under test.
const PATIENCE: Duration = Duration::from_secs(10);

async fn broker_with(vendor: Vendor) -> (TestBroker, EchoServer) {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[vendor.target("echo", echo.addr())]).await;
    (broker, echo)
}

/// `technician`'s session, open on `echo`, and its request id.
async fn live(broker: &TestBroker, technician: &str) -> (Session, RequestId) {
    let mut session = broker.connect("acme-ehr", technician).await.unwrap();
    let id = broker.request(&mut session, &["echo"]).await;
    broker.approve(&id).await;
    let code = broker.next_otp("acme-ehr", technician).await;
    session.open(&id, &code).await.unwrap();
    (session, RequestId::parse(&id).unwrap())
}

async fn record(broker: &TestBroker, id: &RequestId) -> RequestRecord {
    broker.desk().store().request(id).await.unwrap()
}

/// Waits until the record of `id` satisfies `done` (the broker notices a lost connection, and
/// its hub ends a session, a moment after the test causes it).
async fn record_until(
    broker: &TestBroker,
    id: &RequestId,
    done: impl Fn(&RequestRecord) -> bool,
) -> RequestRecord {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let now = record(broker, id).await;
            if done(&now) {
                return now;
            }
            // sync-ok: the broker's own timing is under test; polled, bounded.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} did not reach the expected state within {PATIENCE:?}"))
}

/// The client goes away without closing the session: what a client that dies mid-work
/// leaves when its QUIC stack still gets a word out (quinn closes a dropped connection with
/// code 0 and no reason; a killed process sends nothing, and the broker's idle timeout
/// notices instead, as the command-line tests show). Said explicitly here, so the broker
/// hears it at once.
async fn lose(broker: &TestBroker, session: Session, id: &RequestId) -> RequestRecord {
    session.link().close(0, b"");
    drop(session);
    record_until(broker, id, |record| record.detached_at.is_some()).await
}

fn refused<T: std::fmt::Debug>(result: Result<T, ControlError>) -> proto::ErrorMessage {
    match result {
        Err(ControlError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn events_about(broker: &TestBroker, kind: EventKind, id: &RequestId) -> Vec<String> {
    broker
        .events_of(kind)
        .await
        .into_iter()
        .filter(|stored| stored.event.request.as_deref() == Some(id.as_str()))
        .map(|stored| format!("{:?}", stored.event.details))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_leaves_the_session_approved_and_a_new_code_takes_it_up_again() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let (session, id) = live(&broker, "tanaka").await;
    echo_once(&session, "echo").await;

    let lost = lose(&broker, session, &id).await;
    assert_eq!(lost.stage, Stage::Active);
    assert_eq!(lost.broker_id, None);
    assert_eq!(lost.attachment, 1);
    // On the record as a lost connection by the broker, never as the technician closing it.
    let event = broker.first_event(EventKind::ConnectionLost).await;
    assert_eq!(event.event.actor, Actor::Broker(broker.broker_id()));
    assert_eq!(event.event.request.as_deref(), Some(id.as_str()));
    assert_eq!(detail(&event, "cause"), "connection-lost");
    assert!(
        events_about(&broker, EventKind::SessionEnded, &id)
            .await
            .is_empty()
    );

    let mut again = broker.connect("acme-ehr", "tanaka").await.unwrap();
    // Asking without a code says one is needed, and counts no failure.
    let needed = refused(again.open(id.as_str(), "").await);
    assert_eq!(needed.code, ErrorCode::OtpRequired, "{}", needed.message);
    assert!(broker.events_of(EventKind::OtpFailed).await.is_empty());
    // A wrong code is a wrong code, as at the opening.
    let wrong = refused(again.open(id.as_str(), "000000").await);
    assert_eq!(wrong.code, ErrorCode::OtpRejected, "{}", wrong.message);
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    let opened = again.open(id.as_str(), &code).await.unwrap();
    assert_eq!(opened.request_id, id.as_str());
    echo_once(&again, "echo").await;

    let taken = record(&broker, &id).await;
    assert_eq!(
        (taken.stage, taken.attachment, taken.detached_at),
        (Stage::Active, 2, None)
    );
    assert_eq!(taken.broker_id, Some(broker.broker_id()));
    let resumed = broker.first_event(EventKind::SessionResumed).await;
    assert_eq!(detail(&resumed, "with_code"), "true");
    let transport = match sekisho_e2e::test_transport() {
        sekisho_client::transport::TransportChoice::Tcp => "tcp",
        _ => "quic",
    };
    assert_eq!(detail(&resumed, "transport"), transport);
    assert_eq!(detail(&resumed, "attachment"), "2");
    assert!(detail(&resumed, "source").starts_with("127.0.0.1:"));

    // Closing it is still the technician's end.
    again.close().await;
    let ended = record_until(&broker, &id, |record| {
        matches!(record.stage, Stage::Ended(_))
    })
    .await;
    assert_eq!(ended.stage, Stage::Ended(EndReason::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_time_a_revocation_and_a_lockdown_end_a_session_between_connections() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let (first, revoked) = live(&broker, "tanaka").await;
    let (second, expiring) = live(&broker, "sato").await;
    let (third, locked) = live(&broker, "ito").await;
    lose(&broker, first, &revoked).await;
    lose(&broker, second, &expiring).await;
    lose(&broker, third, &locked).await;

    broker
        .desk()
        .revoke(&revoked, "suzuki", "work moved to tomorrow")
        .await
        .unwrap();
    let mut tanaka = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    let refusal = refused(tanaka.open(revoked.as_str(), &code).await);
    assert_eq!(refusal.code, ErrorCode::RequestNotOpenable);
    assert!(
        refusal.message.contains("is over (revoked)"),
        "{}",
        refusal.message
    );

    // Nobody holds the session at its end time: the broker ends it there all the same.
    let end_at = record(&broker, &expiring).await.end_at.unwrap();
    let now = broker.clock().now();
    broker
        .clock()
        .advance(end_at.duration_since(now).unwrap() + Duration::from_secs(1));
    let expired = record_until(&broker, &expiring, |record| {
        matches!(record.stage, Stage::Ended(_))
    })
    .await;
    assert_eq!(expired.stage, Stage::Ended(EndReason::Expired));

    broker
        .desk()
        .set_lockdown(true, "ransomware suspected", "admin")
        .await
        .unwrap();
    assert_eq!(
        record(&broker, &locked).await.stage,
        Stage::Ended(EndReason::Lockdown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_that_does_not_allow_resuming_loses_the_session_with_its_connection() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr").resume(false)).await;
    let (session, id) = live(&broker, "tanaka").await;
    session.link().close(0, b"");
    drop(session);
    let ended = record_until(&broker, &id, |record| {
        matches!(record.stage, Stage::Ended(_))
    })
    .await;
    // The broker's observation, not the technician's act.
    assert_eq!(ended.stage, Stage::Ended(EndReason::ConnectionLost));
    let event = broker.first_event(EventKind::SessionEnded).await;
    assert_eq!(event.event.actor, Actor::Broker(broker.broker_id()));
    assert_eq!(detail(&event, "reason"), "connection-lost");

    let mut again = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    let refusal = refused(again.open(id.as_str(), &code).await);
    assert!(
        refusal.message.contains("is over (connection-lost)"),
        "{}",
        refusal.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_policys_window_a_session_is_taken_up_without_a_code_and_after_it_with_one() {
    let vendor = Vendor::new("acme-ehr").resume_without_code_within("2m");
    let (broker, _echo) = broker_with(vendor).await;
    let (session, id) = live(&broker, "tanaka").await;
    lose(&broker, session, &id).await;

    let mut again = broker.connect("acme-ehr", "tanaka").await.unwrap();
    again.open(id.as_str(), "").await.unwrap();
    echo_once(&again, "echo").await;
    let resumed = broker.first_event(EventKind::SessionResumed).await;
    assert_eq!(detail(&resumed, "with_code"), "false");

    lose(&broker, again, &id).await;
    broker.clock().advance(Duration::from_secs(3 * 60));
    let mut later = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let needed = refused(later.open(id.as_str(), "").await);
    assert_eq!(needed.code, ErrorCode::OtpRequired);
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    later.open(id.as_str(), &code).await.unwrap();
    echo_once(&later, "echo").await;
}

/// The broker may not have noticed yet that the old connection is gone (or a second client
/// of the technician's asks): the new connection takes the session, and the old one is told
/// and cut without the session ending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_takes_the_session_from_one_the_broker_still_holds() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let (mut old, id) = live(&broker, "tanaka").await;
    let mut new = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    new.open(id.as_str(), &code).await.unwrap();

    match tokio::time::timeout(PATIENCE, old.next_event())
        .await
        .unwrap()
    {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "connection-lost");
            assert!(
                message.contains("taken up on another connection"),
                "{message}"
            );
        }
        other => panic!("expected the old connection to be told, got {other:?}"),
    }
    echo_once(&new, "echo").await;
    let now = record(&broker, &id).await;
    assert_eq!((now.stage, now.attachment), (Stage::Active, 2));
    // The old connection's end is no loss of the session: nothing of it on the record.
    assert!(
        events_about(&broker, EventKind::ConnectionLost, &id)
            .await
            .is_empty()
    );
    assert!(
        events_about(&broker, EventKind::SessionEnded, &id)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_live_sessions_for_their_technicians_to_take_up_again() {
    let (mut broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let (mut session, id) = live(&broker, "tanaka").await;

    broker.restart().await;

    match tokio::time::timeout(PATIENCE, session.next_event())
        .await
        .unwrap()
    {
        SessionEvent::Lost(end) => assert!(!end.by_technician, "{}", end.reason),
        other => panic!("expected the connection lost, got {other:?}"),
    }
    let kept = record(&broker, &id).await;
    assert_eq!(
        (kept.stage, kept.broker_id.as_deref()),
        (Stage::Active, None)
    );
    let event = broker.first_event(EventKind::ConnectionLost).await;
    assert_eq!(detail(&event, "cause"), "broker-shutdown");

    let mut again = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    again.open(id.as_str(), &code).await.unwrap();
    echo_once(&again, "echo").await;
}

/// A hospital with two brokers on one database: when the broker holding a session stops, the
/// client passes over its address to the other broker's and takes the session up there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_the_hospitals_other_broker_when_its_own_stops() {
    let echo = EchoServer::start().await;
    let vendors = [Vendor::new("acme-ehr").target("echo", echo.addr())];
    let first = TestBroker::start(&vendors).await;
    let second = first.start_beside(&vendors, |_| {}).await;
    let mut config = first.client_config("acme-ehr", "tanaka").await;
    config.further_brokers = vec![second.addr().to_string()];

    let mut session = Session::connect(&config).await.unwrap();
    let id = first.request(&mut session, &["echo"]).await;
    first.approve(&id).await;
    let code = first.next_otp("acme-ehr", "tanaka").await;
    session.open(&id, &code).await.unwrap();
    echo_once(&session, "echo").await;
    let id = RequestId::parse(&id).unwrap();

    first.halt().await;
    match tokio::time::timeout(PATIENCE, session.next_event())
        .await
        .unwrap()
    {
        SessionEvent::Lost(end) => assert!(!end.by_technician, "{}", end.reason),
        other => panic!("expected the connection lost, got {other:?}"),
    }

    // The first address no longer answers; the second broker takes the session up.
    let mut again = Session::connect(&config).await.unwrap();
    // The second broker's clock is its own: a code for a step after the one spent.
    second.clock().advance(Duration::from_secs(60));
    let secret = first.enroll("acme-ehr", "tanaka").await;
    let code = sekisho_broker::otp::code_at(&secret, second.clock().now()).unwrap();
    again.open(id.as_str(), &code).await.unwrap();
    echo_once(&again, "echo").await;
    let taken = record(&second, &id).await;
    assert_eq!(
        (taken.stage, taken.attachment, taken.broker_id),
        (Stage::Active, 2, Some(second.broker_id()))
    );
}
