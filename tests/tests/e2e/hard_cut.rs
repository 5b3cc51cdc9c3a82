use std::time::{Duration, Instant};

use sekisho_broker::audit::EventKind;
use sekisho_broker::clock::Clock;
use sekisho_broker::identity;
use sekisho_broker::pki::TechnicianIdentity;
use sekisho_broker::session::RequestId;
use sekisho_broker::store::RequestFilter;
use sekisho_e2e::hostile::{HostileClient, SinkTarget};
use sekisho_e2e::{APPROVER, TestBroker, Vendor};

/// Every end reaches the wire within this, whatever the client does (DESIGN.md §5).
const CUT: Duration = Duration::from_secs(1);
/// A window small enough that a few status answers fill it.
const SMALL_WINDOW: u32 = 1024;

/// The kinds of end the broker must enforce on its own.
#[derive(Debug, Clone, Copy)]
enum End {
    Deadline,
    Revoke,
    Lockdown,
    TechnicianDisabled,
    VendorDisabled,
    Reset,
    ReloadDropsTheTarget,
    StoreUnavailable,
    BrokerShutdown,
}

struct Setup {
    broker: TestBroker,
    target: SinkTarget,
    client: HostileClient,
    request: RequestId,
}

/// A live session on a client that has stopped reading its control stream (the broker's
/// writes there are stuck on credit that never comes) while a forward carries bytes.
async fn stuck_session() -> Setup {
    let target = SinkTarget::start().await;
    // Sessions here may not outlive their connection, so a stop ends them on the record too
    // (`resume` has the sessions that may).
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .resume(false)
        .target("sink", target.addr())])
    .await;
    let mut client =
        HostileClient::open_session(&broker, "acme-ehr", "tanaka", &["sink"], SMALL_WINDOW).await;
    let request = live_request(&broker).await;
    let _pump = client.pump("sink").await;
    let mut target = target;
    target.wait_received_more_than(0).await;
    client.stop_reading_control().await;
    // Still carrying: the stuck control stream did not stop the forward.
    let so_far = target.received();
    target.wait_received_more_than(so_far).await;
    Setup {
        broker,
        target,
        client,
        request,
    }
}

async fn live_request(broker: &TestBroker) -> RequestId {
    let live = live_sessions(broker).await;
    assert_eq!(live.len(), 1, "one live session");
    live[0].clone()
}

async fn live_sessions(broker: &TestBroker) -> Vec<RequestId> {
    broker
        .desk()
        .requests(&RequestFilter {
            states: vec!["active"],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.id)
        .collect()
}

fn tanaka() -> TechnicianIdentity {
    TechnicianIdentity::new("acme-ehr", "tanaka").unwrap()
}

/// Ends the session the way `end` says; returns the moment the end was asked for.
async fn trigger(setup: &Setup, end: End) -> Instant {
    let broker = &setup.broker;
    let store = broker.desk().store().clone();
    let now = broker.clock().now();
    let started = Instant::now();
    match end {
        End::Deadline => broker.clock().advance(Duration::from_secs(3600)),
        End::Revoke => broker
            .desk()
            .revoke(&setup.request, APPROVER, "hostile test")
            .await
            .unwrap(),
        End::Lockdown => {
            assert_eq!(
                broker
                    .desk()
                    .set_lockdown(true, "hostile test", APPROVER)
                    .await
                    .unwrap(),
                1
            );
        }
        End::TechnicianDisabled => {
            identity::set_technician_enabled(&store, &tanaka(), false, "left", "yamada", now)
                .await
                .unwrap();
        }
        End::VendorDisabled => {
            identity::set_vendor_enabled(&store, "acme-ehr", false, "contract", "yamada", now)
                .await
                .unwrap();
        }
        End::Reset => {
            identity::reset_technician(
                &store,
                &tanaka(),
                identity::DEFAULT_TOKEN_VALIDITY,
                "yamada",
                now,
            )
            .await
            .unwrap();
        }
        End::ReloadDropsTheTarget => {
            broker.rewrite_policies(&[
                Vendor::new("acme-ehr").target("other", "127.0.0.1:9".parse().unwrap())
            ]);
            broker.request_reload().await;
        }
        End::StoreUnavailable => {
            broker.break_audit_writes().await;
            // The next forward cannot be put on the record: the session must not go on.
            let started = Instant::now();
            let client = &setup.client;
            let (send, _recv) = client.connection.open_bi().await.unwrap();
            let mut send = tunnel::link::SendHalf::Quic(send);
            let connect = proto::Message::Connect(proto::Connect {
                target: "sink".into(),
            });
            tunnel::frames::write_message(&mut send, &connect)
                .await
                .unwrap();
            return started;
        }
        End::BrokerShutdown => broker.halt().await,
    }
    started
}

/// The reason the record gives for the end.
fn reason_of(end: End) -> &'static str {
    match end {
        End::Deadline => "expired",
        End::Revoke | End::ReloadDropsTheTarget => "revoked",
        End::Lockdown => "lockdown",
        End::TechnicianDisabled | End::VendorDisabled => "technician-disabled",
        End::Reset => "credentials-revoked",
        End::StoreUnavailable => "store-unavailable",
        End::BrokerShutdown => "broker-shutdown",
    }
}

/// The session's forward reaches its target's socket no more, and the QUIC connection is
/// closed, within [`CUT`] of `end`, although the client reads nothing on its control stream
/// and keeps sending; then the record says what the wire did.
async fn the_cut_is_hard(end: End) {
    let mut setup = stuck_session().await;
    let asked = trigger(&setup, end).await;
    let target_end = setup
        .target
        .next_end(CUT + Duration::from_millis(500))
        .await
        .unwrap_or_else(|| panic!("{end:?}: the target's connection is still open"));
    let took = target_end.at.saturating_duration_since(asked);
    assert!(
        took <= CUT,
        "{end:?}: the target's connection ended {took:?} after the end ({})",
        target_end.how
    );
    assert!(
        setup.client.closed_within(CUT).await,
        "{end:?}: the broker did not close the QUIC connection"
    );
    if matches!(end, End::StoreUnavailable) {
        setup.broker.heal_audit_writes().await;
    }
    // (After a shutdown, the record is read from the database the stopped broker left.)
    // The record follows the wire: at once, or (a store that could not write) as soon as it
    // can write again.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !live_sessions(&setup.broker).await.is_empty() {
            // sync-ok: the end is recorded by the broker's retry, polled here, bounded.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{end:?}: the session is still live on the record"));
    let record = setup
        .broker
        .desk()
        .store()
        .request(&setup.request)
        .await
        .unwrap();
    assert_eq!(
        record.stage.state_word(),
        "ended",
        "{end:?}: the request is not ended"
    );
    let ended = setup.broker.events_of(EventKind::SessionEnded).await;
    assert!(
        ended
            .iter()
            .any(|event| event.event.detail_value("reason") == Some(reason_of(end))),
        "{end:?}: no session-ended ({}) on the record: {ended:?}",
        reason_of(end)
    );
}

/// One test per kind of end, each named as what it proves.
macro_rules! the_cut_is_hard_for {
    ($($test:ident => $end:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            the_cut_is_hard(End::$end).await;
        }
    )*};
}

the_cut_is_hard_for! {
    the_end_time_cuts_a_client_that_stopped_reading => Deadline,
    a_revocation_cuts_a_client_that_stopped_reading => Revoke,
    a_lockdown_cuts_a_client_that_stopped_reading => Lockdown,
    disabling_the_technician_cuts_a_client_that_stopped_reading => TechnicianDisabled,
    disabling_the_vendor_cuts_a_client_that_stopped_reading => VendorDisabled,
    a_reset_cuts_a_client_that_stopped_reading => Reset,
    a_reload_that_drops_the_target_cuts_a_client_that_stopped_reading => ReloadDropsTheTarget,
    a_store_that_cannot_record_cuts_a_client_that_stopped_reading => StoreUnavailable,
    a_broker_shutdown_cuts_a_client_that_stopped_reading => BrokerShutdown,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_ended_and_keeps_sending_is_cut() {
    // A client that reads its control stream (so `Ended` arrives) but goes on writing on
    // its forward as if nothing happened.
    let mut target = SinkTarget::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("sink", target.addr())]).await;
    let client =
        HostileClient::open_session(&broker, "acme-ehr", "tanaka", &["sink"], 1 << 20).await;
    let request = live_request(&broker).await;
    let _pump = client.pump("sink").await;
    target.wait_received_more_than(0).await;
    let asked = Instant::now();
    broker
        .desk()
        .revoke(&request, APPROVER, "hostile test")
        .await
        .unwrap();
    let end = target
        .next_end(CUT + Duration::from_millis(500))
        .await
        .expect("the target's connection ended");
    assert!(end.at.saturating_duration_since(asked) <= CUT);
    assert!(client.closed_within(CUT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_streams_is_still_cut_on_time() {
    let mut target = SinkTarget::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("sink", target.addr())]).await;
    let mut client =
        HostileClient::open_session(&broker, "acme-ehr", "tanaka", &["sink"], SMALL_WINDOW).await;
    let request = live_request(&broker).await;
    let _pump = client.pump("sink").await;
    target.wait_received_more_than(0).await;
    let _flood = client.flood_streams("sink");
    client.stop_reading_control().await;
    // The flood reached the target too: many forwards are open.
    target.wait_connections(8).await;
    let asked = Instant::now();
    broker
        .desk()
        .revoke(&request, APPROVER, "hostile test")
        .await
        .unwrap();
    assert!(client.closed_within(CUT).await, "the connection was closed");
    // Every forward the flood opened ended at the target, none later than the cut.
    let mut ended = 0;
    while let Some(end) = target.next_end(Duration::from_millis(200)).await {
        ended += 1;
        let took = end.at.saturating_duration_since(asked);
        assert!(took <= CUT, "a forward ended {took:?} after the revocation");
    }
    assert!(
        ended >= 2,
        "the pump and the flood's forwards ended ({ended})"
    );
    let received = target.received();
    // Nothing arrives any more (bounded wait, on a signal that must not come).
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            target.wait_received_more_than(received)
        )
        .await
        .is_err(),
        "bytes still arrive after the cut"
    );
}

/// A relay between a TLS-over-TCP client and the broker that can stop passing on what the
/// broker sends (the client keeps sending): a client that reads nothing at all, not even
/// HTTP/2's window updates and pings. `broker_gone` is told when the broker's side of the
/// connection ends.
async fn deaf_relay(
    broker: std::net::SocketAddr,
    deaf: std::sync::Arc<std::sync::atomic::AtomicBool>,
    broker_gone: std::sync::Arc<tokio::sync::Notify>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(broker).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match server_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                // Deaf: what the broker sends goes nowhere.
                Ok(_) if deaf.load(std::sync::atomic::Ordering::SeqCst) => {}
                Ok(n) => {
                    if client_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        broker_gone.notify_one();
    });
    addr
}

/// Over TLS on TCP too, the end time cuts the forward at its target within a second and the
/// connection soon after, from a client that reads nothing the broker sends while it keeps
/// pumping bytes to the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_end_time_cuts_a_client_that_reads_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut target = SinkTarget::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .resume(false)
        .target("sink", target.addr())])
    .await;
    let deaf = Arc::new(AtomicBool::new(false));
    let broker_gone = Arc::new(tokio::sync::Notify::new());
    let through = deaf_relay(broker.addr(), deaf.clone(), broker_gone.clone()).await;
    let mut config = broker.client_config("acme-ehr", "tanaka").await;
    config.broker = through.to_string();
    config.transport = sekisho_client::transport::TransportChoice::Tcp;
    let session = sekisho_client::Session::connect(&config).await.unwrap();
    let session = broker
        .open_on(session, "acme-ehr", "tanaka", &["sink"])
        .await;
    let request = live_request(&broker).await;
    let (mut send, _recv) = session.open_forward("sink").await.unwrap();
    let _pump = tokio::spawn(async move {
        let chunk = vec![0x5au8; 16 * 1024];
        while send.write_all(&chunk).await.is_ok() {}
    });
    target.wait_received_more_than(0).await;
    deaf.store(true, Ordering::SeqCst);
    let so_far = target.received();
    target.wait_received_more_than(so_far).await;

    let end_at = broker
        .desk()
        .store()
        .request(&request)
        .await
        .unwrap()
        .end_at
        .unwrap();
    let now = broker.clock().now();
    let asked = Instant::now();
    broker
        .clock()
        .advance(end_at.duration_since(now).unwrap() + Duration::from_millis(10));
    let target_end = target
        .next_end(CUT + Duration::from_millis(500))
        .await
        .expect("the target's connection is still open");
    assert!(
        target_end.at.saturating_duration_since(asked) <= CUT,
        "the target's connection ended {:?} after the end",
        target_end.at.saturating_duration_since(asked)
    );
    // The broker drops the connection itself (half a second for `Ended`, half a second for
    // its close), the client's silence notwithstanding.
    tokio::time::timeout(CUT * 2, broker_gone.notified())
        .await
        .expect("the broker closed the TCP connection within 2 s");
}
