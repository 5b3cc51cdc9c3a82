use std::time::{Duration, UNIX_EPOCH};
use tokio::io::AsyncReadExt as _;

use proto::{ErrorCode, RequestAccess, RequestState};
use sekisho_broker::approval::{Approved, DeskError, Extended, Until};
use sekisho_broker::audit::{Actor, AuditEvent, EventKind};
use sekisho_broker::clock::Clock;
use sekisho_broker::otp;
use sekisho_broker::session::RequestId;
use sekisho_client::{ControlError, Session, SessionEvent};
use sekisho_e2e::{APPROVER, EchoServer, TestBroker, Vendor, echo_once};

const MIN: Duration = Duration::from_secs(60);
/// Revocation, lockdown and end-time changes must reach a live session within this.
const REACH: Duration = Duration::from_secs(1);
/// A bound on waits that are not themselves under test.
const PATIENCE: Duration = Duration::from_secs(10);

async fn broker_with(vendor: Vendor) -> (TestBroker, EchoServer) {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[vendor.target("echo", echo.addr())]).await;
    (broker, echo)
}

fn id(text: &str) -> RequestId {
    RequestId::parse(text).unwrap()
}

fn refused(result: Result<impl std::fmt::Debug, ControlError>) -> proto::ErrorMessage {
    match result {
        Err(ControlError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn desk_refusal<T: std::fmt::Debug>(result: Result<T, DeskError>) -> String {
    match result {
        Err(DeskError::Refused(refusal)) => refusal.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn next_event(session: &mut Session, within: Duration) -> SessionEvent {
    tokio::time::timeout(within, session.next_event())
        .await
        .unwrap_or_else(|_| panic!("no session event within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_with_a_real_totp_carries_bytes_only_after_approval_and_code() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;

    // Nothing flows before approval: no session yet, and opening is refused.
    assert_eq!(
        refused(
            session
                .open(&request, &broker.next_otp("acme-ehr", "tanaka").await)
                .await
        )
        .code,
        ErrorCode::RequestNotOpenable
    );
    let view = session.watch(&request).await.unwrap();
    assert_eq!(view.state, RequestState::Requested);
    assert_eq!((view.approvers.len(), view.approvals_needed), (0, 1));

    broker.approve(&request).await;
    match next_event(&mut session, PATIENCE).await {
        SessionEvent::Status(view) => {
            assert_eq!(view.state, RequestState::Approved);
            assert_eq!(view.approvers, vec![APPROVER.to_owned()]);
        }
        other => panic!("expected the approval, got {other:?}"),
    }

    let secret = broker.enroll("acme-ehr", "tanaka").await;
    broker.clock().advance(Duration::from_secs(30));
    let code = otp::code_at(&secret, broker.clock().now()).unwrap();
    let opened = session.open(&request, &code).await.unwrap();
    assert_eq!(opened.targets, vec!["echo".to_owned()]);
    let one_hour = broker.clock().now() + Duration::from_secs(3600);
    let expected_end = one_hour.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(
        opened.end_at.abs_diff(expected_end) <= 31,
        "end {} vs {expected_end}",
        opened.end_at
    );
    echo_once(&session, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_tells_the_technician_who_and_why_and_never_opens() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    session.watch(&request).await.unwrap();
    broker
        .desk()
        .deny(&id(&request), "yamada", "no maintenance during the audit")
        .await
        .unwrap();
    match next_event(&mut session, PATIENCE).await {
        SessionEvent::Status(view) => {
            assert_eq!(view.state, RequestState::Ended);
            assert_eq!(view.end_reason, "denied");
            assert_eq!(view.ended_by, "yamada");
            assert_eq!(view.note, "no maintenance during the audit");
        }
        other => panic!("expected the denial, got {other:?}"),
    }
    let refusal = refused(
        session
            .open(&request, &broker.next_otp("acme-ehr", "tanaka").await)
            .await,
    );
    assert_eq!(refusal.code, ErrorCode::RequestNotOpenable);
    assert!(refusal.message.contains("denied"), "{}", refusal.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_expires_after_thirty_minutes() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    session.watch(&request).await.unwrap();
    broker.clock().advance(29 * MIN);
    broker.clock().advance(MIN);
    match next_event(&mut session, PATIENCE).await {
        SessionEvent::Status(view) => {
            assert_eq!(
                (view.state, view.end_reason.as_str()),
                (RequestState::Ended, "expired")
            );
        }
        other => panic!("expected the expiry, got {other:?}"),
    }
    let late = broker
        .desk()
        .approve(&id(&request), APPROVER, Until::For(MIN))
        .await;
    assert!(desk_refusal(late).contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_replayed_earlier_and_foreign_codes_are_refused_and_five_failures_lock() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let tanaka = broker.enroll("acme-ehr", "tanaka").await;
    let sato = broker.enroll("acme-ehr", "sato").await;

    // A code works once: a second request opened with the same code is refused.
    let mut first = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let first_request = broker.request(&mut first, &["echo"]).await;
    broker.approve(&first_request).await;
    broker.clock().advance(Duration::from_secs(30));
    let now = broker.clock().now();
    let code = otp::code_at(&tanaka, now).unwrap();
    first.open(&first_request, &code).await.unwrap();

    let mut second = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let second_request = broker.request(&mut second, &["echo"]).await;
    broker.approve(&second_request).await;
    let replayed = refused(second.open(&second_request, &code).await);
    assert_eq!(replayed.code, ErrorCode::OtpRejected);
    assert!(
        replayed.message.contains("already used"),
        "{}",
        replayed.message
    );

    // The code of the step before, still inside the skew window, is refused too.
    let earlier = otp::code_at(&tanaka, now - Duration::from_secs(30)).unwrap();
    assert_eq!(
        refused(second.open(&second_request, &earlier).await).code,
        ErrorCode::OtpRejected
    );
    // Another technician's code never opens tanaka's session.
    let foreign = otp::code_at(&sato, now).unwrap();
    assert_eq!(
        refused(second.open(&second_request, &foreign).await).code,
        ErrorCode::OtpRejected
    );
    // Two more wrong codes make five in a row: locked.
    assert_eq!(
        refused(second.open(&second_request, "000000").await).code,
        ErrorCode::OtpRejected
    );
    let locked = refused(second.open(&second_request, "111111").await);
    assert_eq!(locked.code, ErrorCode::TechnicianLocked);
    assert!(
        locked
            .message
            .contains("ask the hospital's IT to unlock you"),
        "{}",
        locked.message
    );
    // Locked means locked: even the right code is refused now.
    broker.clock().advance(Duration::from_secs(30));
    let right = otp::code_at(&tanaka, broker.clock().now()).unwrap();
    assert_eq!(
        refused(second.open(&second_request, &right).await).code,
        ErrorCode::TechnicianLocked
    );

    broker
        .desk()
        .store()
        .unlock_technician("acme-ehr", "tanaka", "yamada", broker.clock().now())
        .await
        .unwrap();
    broker.clock().advance(Duration::from_secs(30));
    let fresh = otp::code_at(&tanaka, broker.clock().now()).unwrap();
    second.open(&second_request, &fresh).await.unwrap();
    echo_once(&second, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_warns_at_ten_and_two_minutes_and_cuts_the_session_at_its_end() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let (mut send, mut recv) = session.open_forward("echo").await.unwrap();
    send.write_all(b"before").await.unwrap();
    let mut before = [0u8; 6];
    recv.read_exact(&mut before).await.unwrap();

    broker.clock().advance(50 * MIN);
    match next_event(&mut session, PATIENCE).await {
        SessionEvent::Warning { seconds_left } => {
            assert!((570..=600).contains(&seconds_left), "{seconds_left}")
        }
        other => panic!("expected the ten-minute warning, got {other:?}"),
    }
    broker.clock().advance(8 * MIN);
    match next_event(&mut session, PATIENCE).await {
        SessionEvent::Warning { seconds_left } => {
            assert!((90..=120).contains(&seconds_left), "{seconds_left}")
        }
        other => panic!("expected the two-minute warning, got {other:?}"),
    }
    // The client does nothing about it; the broker cuts the session regardless.
    broker.clock().advance(2 * MIN);
    match next_event(&mut session, PATIENCE).await {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "expired");
            assert!(message.contains("end time"), "{message}");
        }
        other => panic!("expected the end, got {other:?}"),
    }
    // The forward stops carrying bytes: the connection is closed under it.
    let carried = async {
        send.write_all(b"after").await?;
        let mut after = [0u8; 5];
        recv.read_exact(&mut after).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        tokio::time::timeout(PATIENCE, carried)
            .await
            .unwrap()
            .is_err()
    );
    assert!(session.open_forward("echo").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_the_live_session_within_a_second() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let live = broker.desk().requests(&Default::default()).await.unwrap();
    broker
        .desk()
        .revoke(&live[0].id, "yamada", "wrong server")
        .await
        .unwrap();
    match next_event(&mut session, REACH).await {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "revoked");
            assert_eq!(
                message,
                "The hospital ended the session by yamada: wrong server."
            );
        }
        other => panic!("expected the revocation, got {other:?}"),
    }
    assert!(session.open_forward("echo").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_cuts_live_sessions_within_a_second_and_refuses_new_ones_until_lifted() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut live = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let mut waiting = broker.connect("acme-ehr", "sato").await.unwrap();
    let approved = broker.request(&mut waiting, &["echo"]).await;
    broker.approve(&approved).await;

    let cut = broker
        .desk()
        .set_lockdown(true, "ransomware suspected", "it-oncall")
        .await
        .unwrap();
    assert_eq!(cut, 1);
    match next_event(&mut live, REACH).await {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "lockdown");
            assert!(message.contains("stopped all remote access"), "{message}");
        }
        other => panic!("expected the lockdown, got {other:?}"),
    }
    // Wait until the broker has seen the lockdown (it already cut the live session), then:
    // no new requests, no new sessions.
    let mut session = broker.connect("acme-ehr", "sato").await.unwrap();
    let ask = RequestAccess {
        targets: vec!["echo".into()],
        purpose: "urgent".into(),
        ticket: String::new(),
        duration_secs: 600,
    };
    let refusal = refused(session.request(ask.clone()).await);
    assert_eq!(refusal.code, ErrorCode::Lockdown);
    assert!(
        refusal.message.contains("stopped all remote access"),
        "{}",
        refusal.message
    );
    let code = broker.next_otp("acme-ehr", "sato").await;
    assert_eq!(
        refused(waiting.open(&approved, &code).await).code,
        ErrorCode::Lockdown
    );

    broker
        .desk()
        .set_lockdown(false, "all clear", "it-oncall")
        .await
        .unwrap();
    let reopened = tokio::time::timeout(PATIENCE, async {
        loop {
            match session.request(ask.clone()).await {
                Ok(view) => return view,
                Err(ControlError::Refused(refusal)) if refusal.code == ErrorCode::Lockdown => {
                    // The broker reads the store every 250 ms; ask again after its next read.
                    tokio::task::yield_now().await;
                    let _ = broker.desk().lockdown().await;
                }
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await
    .expect("requests are accepted again once the lockdown is lifted");
    assert_eq!(reopened.state, RequestState::Requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extending_a_live_session_moves_its_end_without_reconnecting() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let live = broker.desk().requests(&Default::default()).await.unwrap();
    let old_end = live[0].end_at.unwrap();
    let moved = broker
        .desk()
        .extend(&live[0].id, "yamada", Until::For(30 * MIN))
        .await
        .unwrap();
    let Extended::Moved { end_at: new_end } = moved else {
        panic!("one approver is enough for this vendor: {moved:?}");
    };
    assert_eq!(new_end, old_end + 30 * MIN);
    match next_event(&mut session, REACH).await {
        SessionEvent::Extended { end_at, by } => {
            assert_eq!(
                end_at,
                new_end.duration_since(UNIX_EPOCH).unwrap().as_secs()
            );
            assert_eq!(by, "yamada");
        }
        other => panic!("expected the extension, got {other:?}"),
    }
    // The old end passes and the session lives on.
    broker.clock().advance(61 * MIN);
    echo_once(&session, "echo").await;
    // The same person may move the end again; each change is kept.
    broker
        .desk()
        .extend(&live[0].id, "yamada", Until::For(10 * MIN))
        .await
        .unwrap();
    let record = broker.desk().store().request(&live[0].id).await.unwrap();
    assert_eq!(record.extensions.len(), 2);
    assert_eq!(
        record.approvals.len(),
        1,
        "extensions are not approvals of the request"
    );
    // An extension past max_session (2h by default) is refused.
    let too_far = broker
        .desk()
        .extend(&live[0].id, "yamada", Until::For(120 * MIN))
        .await;
    assert!(desk_refusal(too_far).contains("at most 2h"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_clicking_at_once_make_exactly_one_approval() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    for _ in 0..5 {
        let request = id(&broker.request(&mut session, &["echo"]).await);
        let (desk_a, desk_b) = (broker.desk(), broker.desk());
        let (a, b) = (request.clone(), request.clone());
        let first =
            tokio::spawn(async move { desk_a.approve(&a, "suzuki", Until::For(MIN * 30)).await });
        let second =
            tokio::spawn(async move { desk_b.approve(&b, "yamada", Until::For(MIN * 45)).await });
        let results = [first.await.unwrap(), second.await.unwrap()];
        let wins = results
            .iter()
            .filter(|r| matches!(r, Ok(Approved::Complete { .. })))
            .count();
        assert_eq!(wins, 1, "{results:?}");
        let record = broker.desk().store().request(&request).await.unwrap();
        assert_eq!(record.approvals.len(), 1, "one approval recorded, not two");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_racing_the_expiry_either_wins_or_loses_but_never_both() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = id(&broker.request(&mut session, &["echo"]).await);
    // Just before the deadline, so the approval is decided as in time; the hub's expiry may
    // land first once the clock passes it.
    broker.clock().advance(30 * MIN - Duration::from_millis(1));
    let desk = broker.desk();
    let approving = tokio::spawn({
        let request = request.clone();
        async move { desk.approve(&request, APPROVER, Until::For(MIN * 10)).await }
    });
    broker.clock().advance(Duration::from_millis(1));
    let approval = approving.await.unwrap();
    // Let the hub run its expiry pass.
    let record = tokio::time::timeout(PATIENCE, async {
        loop {
            let record = broker.desk().store().request(&request).await.unwrap();
            if record.stage != sekisho_broker::session::Stage::Requested {
                return record;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    match (&approval, record.stage) {
        (Ok(_), sekisho_broker::session::Stage::Approved) => {}
        (
            Err(_),
            sekisho_broker::session::Stage::Ended(sekisho_broker::session::EndReason::Expired),
        ) => {}
        (approval, stage) => panic!("inconsistent: approval {approval:?}, request {stage:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_limits_every_approval() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr").max_session("2h").approvals(2)).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = id(&broker.request(&mut session, &["echo"]).await);
    let desk = broker.desk();
    // Beyond max_session.
    assert!(
        desk_refusal(
            desk.approve(&request, "suzuki", Until::For(MIN * 121))
                .await
        )
        .contains("at most 2h")
    );
    // Nobody approves their own request.
    assert!(
        desk_refusal(desk.approve(&request, "tanaka", Until::For(MIN * 60)).await)
            .contains("cannot answer it")
    );
    // Two approvals from two different people.
    assert_eq!(
        desk.approve(&request, "suzuki", Until::For(MIN * 60))
            .await
            .unwrap(),
        Approved::Partial { have: 1, need: 2 }
    );
    assert!(
        desk_refusal(desk.approve(&request, "suzuki", Until::For(MIN * 60)).await)
            .contains("already approved")
    );
    // A request for more than max_session is refused when asked.
    let too_long = session
        .request(RequestAccess {
            targets: vec!["echo".into()],
            purpose: "long job".into(),
            ticket: String::new(),
            duration_secs: 3 * 3600,
        })
        .await;
    assert_eq!(refused(too_long).code, ErrorCode::PolicyRefused);
    match desk
        .approve(&request, "yamada", Until::For(MIN * 45))
        .await
        .unwrap()
    {
        // The earliest end any approver gave wins.
        Approved::Complete { end_at } => assert_eq!(end_at, broker.clock().now() + MIN * 45),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_outside_the_vendors_hours_is_refused() {
    // The test clock stands at Monday 10:00 in Asia/Tokyo.
    let (broker, _echo) =
        broker_with(Vendor::new("weekend-only").hours("Sat-Sun 00:00-24:00")).await;
    let mut session = broker.connect("weekend-only", "tanaka").await.unwrap();
    let request = id(&broker.request(&mut session, &["echo"]).await);
    let message = desk_refusal(
        broker
            .desk()
            .approve(&request, APPROVER, Until::For(MIN * 30))
            .await,
    );
    assert!(
        message.contains("agreed hours are Sat-Sun 00:00-24:00 (Asia/Tokyo)"),
        "{message}"
    );

    let (broker, _echo) =
        broker_with(Vendor::new("office-hours").hours("Mon-Fri 08:00-11:00")).await;
    let mut session = broker.connect("office-hours", "tanaka").await.unwrap();
    let request = id(&broker.request(&mut session, &["echo"]).await);
    // Until 10:30 is inside; until 11:30 crosses the end of the window.
    let message = desk_refusal(
        broker
            .desk()
            .approve(&request, APPROVER, Until::For(MIN * 90))
            .await,
    );
    assert!(message.contains("11:00"), "{message}");
    assert!(
        broker
            .desk()
            .approve(&request, APPROVER, Until::For(MIN * 30))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_pending_and_approved_requests_and_ends_live_sessions_as_broker_shutdown() {
    // A vendor whose sessions may not outlive their connection (see `resume` for the rest).
    let (mut broker, _echo) = broker_with(Vendor::new("acme-ehr").resume(false)).await;
    let mut asking = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let pending = broker.request(&mut asking, &["echo"]).await;
    let approved = broker.request(&mut asking, &["echo"]).await;
    broker.approve(&approved).await;
    let mut live = broker.open_session("acme-ehr", "sato", &["echo"]).await;
    let live_id = broker
        .desk()
        .requests(&sekisho_broker::store::RequestFilter {
            states: vec!["active"],
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id
        .clone();

    broker.restart().await;

    match next_event(&mut live, PATIENCE).await {
        SessionEvent::Ended { reason, .. } => assert_eq!(reason, "broker-shutdown"),
        other => panic!("expected broker-shutdown, got {other:?}"),
    }
    let store = broker.desk();
    let stage = |text: &str| {
        let store = store.clone();
        let request = id(text);
        async move { store.store().request(&request).await.unwrap().stage }
    };
    use sekisho_broker::session::{EndReason, Stage};
    assert_eq!(stage(&pending).await, Stage::Requested);
    assert_eq!(stage(&approved).await, Stage::Approved);
    assert_eq!(
        stage(live_id.as_str()).await,
        Stage::Ended(EndReason::BrokerShutdown)
    );

    // The approved request still opens on the restarted broker.
    let mut again = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    again.open(&approved, &code).await.unwrap();
    echo_once(&again, "echo").await;
    // And the technician sees the whole story in their status.
    let status = again.status().await.unwrap();
    assert!(
        status
            .iter()
            .any(|view| view.id == pending && view.state == RequestState::Requested)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_a_crashed_broker_left_active_are_ended_as_broker_shutdown_at_its_next_start() {
    // A vendor whose sessions may not outlive their connection; `resume` has the others.
    let (mut broker, _echo) = broker_with(Vendor::new("acme-ehr").resume(false)).await;
    let mut asking = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = id(&broker.request(&mut asking, &["echo"]).await);
    broker.approve(request.as_str()).await;
    // What a crash leaves behind: the row says active on this broker, and no connection
    // task is alive to end it.
    let broker_id = std::fs::read_to_string(broker.config().data_dir.join("broker-id")).unwrap();
    let (desk, now) = (broker.desk(), broker.clock().now());
    broker
        .restart_after(async {
            desk.store()
                .activate(
                    &request,
                    now + MIN * 30,
                    broker_id.trim(),
                    now,
                    &AuditEvent::new(
                        now,
                        Actor::Broker(broker_id.trim().into()),
                        EventKind::SessionOpened,
                    ),
                )
                .await
                .unwrap();
        })
        .await;
    let record = broker.desk().store().request(&request).await.unwrap();
    assert_eq!(
        record.stage,
        sekisho_broker::session::Stage::Ended(sekisho_broker::session::EndReason::BrokerShutdown)
    );
}

/// A vendor that needs two approvers to open a session needs two to make it longer, and
/// however often it is extended it never outlasts `max_session` counted from its opening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_end_needs_as_many_approvers_as_the_opening_and_counts_from_it() {
    let (broker, _echo) = broker_with(Vendor::new("acme-ehr").approvals(2)).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    let desk = broker.desk();
    for approver in ["suzuki", "yamada"] {
        desk.approve(&id(&request), approver, Until::For(60 * MIN))
            .await
            .unwrap();
    }
    let code = broker.next_otp("acme-ehr", "tanaka").await;
    session.open(&request, &code).await.unwrap();
    let opened = desk.store().request(&id(&request)).await.unwrap();
    let (opened_at, first_end) = (opened.opened_at.unwrap(), opened.end_at.unwrap());

    // One approver's ask waits; asking again replaces it; the end does not move.
    for _ in 0..2 {
        let asked = desk
            .extend_with_comment(
                &id(&request),
                "suzuki",
                Until::For(30 * MIN),
                "migration overruns",
            )
            .await
            .unwrap();
        assert_eq!(
            asked,
            Extended::Asked {
                end_at: first_end + 30 * MIN,
                have: 1,
                need: 2
            }
        );
    }
    let waiting = desk.store().request(&id(&request)).await.unwrap();
    assert_eq!(waiting.end_at, Some(first_end));
    assert_eq!(waiting.extension_proposals.len(), 1);
    assert_eq!(waiting.extension_proposals[0].comment, "migration overruns");
    assert_eq!(
        broker
            .events_of(EventKind::SessionExtensionAsked)
            .await
            .len(),
        2
    );

    // A second, different approver: the end moves to the earlier of the two asks.
    let moved = desk
        .extend(&id(&request), "yamada", Until::For(45 * MIN))
        .await
        .unwrap();
    assert_eq!(
        moved,
        Extended::Moved {
            end_at: first_end + 30 * MIN
        }
    );
    match next_event(&mut session, REACH).await {
        SessionEvent::Extended { end_at, .. } => assert_eq!(
            end_at,
            (first_end + 30 * MIN)
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        ),
        other => panic!("expected the extension, got {other:?}"),
    }
    let after = desk.store().request(&id(&request)).await.unwrap();
    assert!(after.extension_proposals.is_empty());
    let extended = broker.events_of(EventKind::SessionExtended).await;
    assert_eq!(
        sekisho_e2e::detail(extended.last().unwrap(), "approvers"),
        "suzuki,yamada"
    );

    // Bringing the end forward is one approver's act, at once, as revoking is.
    let shortened = desk
        .extend(&id(&request), "suzuki", Until::At(first_end))
        .await
        .unwrap();
    assert_eq!(shortened, Extended::Moved { end_at: first_end });

    // max_session (2h) counts from the opening: 50 minutes in, 2h30m after the opening is
    // refused even as a first ask, however the end got where it is.
    broker.clock().advance(50 * MIN);
    let too_long = desk
        .extend(&id(&request), "suzuki", Until::At(opened_at + 150 * MIN))
        .await;
    let message = desk_refusal(too_long);
    assert!(message.contains("at most 2h"), "{message}");
    assert!(message.contains("at the latest"), "{message}");
    // Within it, the ask is taken.
    let within = desk
        .extend(&id(&request), "suzuki", Until::At(opened_at + 110 * MIN))
        .await
        .unwrap();
    assert!(matches!(within, Extended::Asked { .. }), "{within:?}");
}

/// A hospital that asks for a comment with each approval and extension gets one, on the
/// record and in `audit show`; without it the approver is told in one sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_can_require_a_comment_with_every_approval_and_extension() {
    let (mut broker, _echo) = broker_with(Vendor::new("acme-ehr")).await;
    std::fs::write(
        broker.config().policies_dir.join("hospital.toml"),
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n\n[defaults]\nidle_timeout = \"24h\"\nrequire_approval_comment = true\n",
    )
    .unwrap();
    broker.reread_policies().await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    let desk = broker.desk();
    let bare = desk
        .approve_with_comment(&id(&request), "suzuki", Until::For(30 * MIN), "  ")
        .await;
    assert!(desk_refusal(bare).contains("asks for a comment"));
    assert!(
        broker
            .events_of(EventKind::RequestApproved)
            .await
            .is_empty(),
        "a refused approval left an event"
    );
    desk.approve_with_comment(
        &id(&request),
        "suzuki",
        Until::For(30 * MIN),
        "ticket 4711: firmware update agreed with the ward",
    )
    .await
    .unwrap();
    let record = desk.store().request(&id(&request)).await.unwrap();
    assert_eq!(
        record.approvals[0].comment,
        "ticket 4711: firmware update agreed with the ward"
    );
    let approved = broker.first_event(EventKind::RequestApproved).await;
    assert_eq!(
        sekisho_e2e::detail(&approved, "comment"),
        "ticket 4711: firmware update agreed with the ward"
    );

    let code = broker.next_otp("acme-ehr", "tanaka").await;
    session.open(&request, &code).await.unwrap();
    let bare = desk
        .extend(&id(&request), "suzuki", Until::For(10 * MIN))
        .await;
    assert!(desk_refusal(bare).contains("asks for a comment"));
    desk.extend_with_comment(
        &id(&request),
        "suzuki",
        Until::For(10 * MIN),
        "ward asked for ten more minutes",
    )
    .await
    .unwrap();
    let story = sekisho_broker::cli::audit_show(&desk, &request)
        .await
        .unwrap();
    assert!(
        story.contains("firmware update agreed with the ward"),
        "{story}"
    );
    assert!(story.contains("ward asked for ten more minutes"), "{story}");
}
