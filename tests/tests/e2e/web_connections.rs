use std::net::SocketAddr;
use std::time::Duration;

use sekisho_broker::staff::Role;
use sekisho_broker::web::{WebConfig, WebLimits, WebTls};
use sekisho_e2e::preauth::attacker_source;
use sekisho_e2e::web::{StaffAccount, WebClient};
use sekisho_e2e::{TestBroker, Vendor};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A bound on waits that are not themselves under test.
const PATIENCE: Duration = Duration::from_secs(10);

/// A web broker over plain HTTP with small connection bounds.
async fn web_broker(limits: WebLimits) -> TestBroker {
    TestBroker::start_with(&[Vendor::new("acme-ehr")], |config| {
        let mut web = WebConfig::new("127.0.0.1:0".parse().unwrap());
        web.tls = WebTls::PlainHttpOnLoopback;
        web.limits = limits;
        config.web = Some(web);
    })
    .await
}

/// A TCP connection to `to` from the `n`th attacker address that says nothing.
async fn silent_connection(n: u32, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(attacker_source(n), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closed `tcp` within `within` (its read returns the end or an error).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_does_not_keep_an_approver_out() {
    let limits = WebLimits {
        max_connections: 16,
        max_per_source: 4,
        ..WebLimits::default()
    };
    let broker = web_broker(limits).await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let web = broker.web_addr();
    // Every place taken by strangers who say nothing, four from each of four addresses.
    let mut strangers = Vec::new();
    for n in 0..16 {
        strangers.push(silent_connection(n / 4, web).await);
    }
    // The approver still gets in and works (each of the client's connections takes the
    // place of the oldest silent one).
    let mut client = WebClient::new(web);
    client.login(&broker, &approver).await;
    let page = client.get("/requests").await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The oldest stranger made room.
    assert!(closed_within(&mut strangers[0], PATIENCE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_connections_and_no_more() {
    let limits = WebLimits {
        max_per_source: 4,
        ..WebLimits::default()
    };
    let broker = web_broker(limits).await;
    let web = broker.web_addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(silent_connection(7, web).await);
    }
    let mut fifth = silent_connection(7, web).await;
    assert!(
        closed_within(&mut fifth, PATIENCE).await,
        "a fifth was kept"
    );
    // The four within the share are still open (nothing arrives, nothing is closed).
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), held[0].read(&mut byte))
            .await
            .is_err(),
        "a connection within the share was closed"
    );
    // Another address is not affected.
    let mut other = WebClient::new(web);
    assert_eq!(other.get("/login").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_idle_connection_is_closed_at_the_request_head_deadline() {
    let limits = WebLimits {
        request_head: Duration::from_millis(500),
        ..WebLimits::default()
    };
    let broker = web_broker(limits).await;
    let web = broker.web_addr();
    let mut silent = silent_connection(3, web).await;
    assert!(closed_within(&mut silent, PATIENCE).await);
    // Kept alive after an answer, then idle: closed too.
    let mut kept = silent_connection(4, web).await;
    tokio::io::AsyncWriteExt::write_all(
        &mut kept,
        b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(PATIENCE, kept.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    // Drain the rest of the answer, then wait for the close.
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match kept.read(&mut answer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle kept-alive connection stayed open");
}

/// Strangers who reconnect the moment they are closed: each new connection would take the
/// place of the oldest silent one, so without a grace a browser's connection is pushed out
/// before its request has been read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_who_reconnect_as_fast_as_they_are_closed_do_not_push_an_approver_out() {
    let limits = WebLimits {
        max_connections: 16,
        max_per_source: 4,
        ..WebLimits::default()
    };
    let broker = web_broker(limits).await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let web = broker.web_addr();
    let mut client = WebClient::new(web);
    client.login(&broker, &approver).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let (placed, mut places) = tokio::sync::mpsc::channel(64);
    let mut strangers = tokio::task::JoinSet::new();
    for n in 0..64 {
        let (stop, placed) = (stop.clone(), placed.clone());
        strangers.spawn(async move {
            let mut placed = Some(placed);
            while !stop.is_cancelled() {
                let mut tcp = silent_connection(n / 4, web).await;
                let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\n").await;
                if let Some(placed) = placed.take() {
                    let _ = placed.send(()).await;
                }
                let mut byte = [0u8; 1];
                tokio::select! {
                    _ = tcp.read(&mut byte) => {}
                    () = stop.cancelled() => {}
                }
            }
        });
    }
    drop(placed);
    for _ in 0..64 {
        tokio::time::timeout(PATIENCE, places.recv())
            .await
            .expect("every stranger connected")
            .expect("a stranger could not connect");
    }
    // Each page over a new connection, as a browser opening the page again would.
    for _ in 0..10 {
        let mut page_client = WebClient::new(web);
        page_client.cookies = client.cookies.clone();
        let page = page_client.get("/requests").await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    stop.cancel();
    while strangers.join_next().await.is_some() {}
}
