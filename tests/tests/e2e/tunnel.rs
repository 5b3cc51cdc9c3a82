use std::time::{Duration, Instant};

use sekisho_client::{ForwardEvent, Session};
use sekisho_e2e::pattern::Pattern;
use sekisho_e2e::servers::ManualServer;
use sekisho_e2e::{EchoServer, LocalForward, TestBroker, Vendor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel::splice::SpliceEnd;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

async fn echo_session() -> (TestBroker, EchoServer, Session) {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    (broker, echo, session)
}

/// Sends `len` pattern bytes through `addr`, half-closes, and checks every byte that comes back.
async fn echo_through(addr: std::net::SocketAddr, len: usize, seed: u64) -> Duration {
    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 64 * KIB];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            pattern.fill(&mut buf[..n]);
            write.write_all(&buf[..n]).await.unwrap();
            left -= n;
        }
        // Half-close: the answer must still arrive after this.
        write.shutdown().await.unwrap();
    });
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * KIB];
    let mut received = 0usize;
    loop {
        let n = read.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        if let Err(offset) = pattern.check(&buf[..n]) {
            panic!("byte {} differs", received + offset);
        }
        received += n;
    }
    writer.await.unwrap();
    assert_eq!(received, len, "every byte came back, and nothing more");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_comes_back_byte_identical() {
    let (_broker, echo, session) = echo_session().await;
    let forward = LocalForward::start(session.forwarder(), "echo").await;
    echo_through(forward.addr(), MIB, 1).await;
    let _ = echo;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mebibytes_come_back_byte_identical() {
    let (_broker, echo, session) = echo_session().await;
    let forward = LocalForward::start(session.forwarder(), "echo").await;
    let direct = echo_through(echo.addr(), 100 * MIB, 2).await;
    let tunnelled = echo_through(forward.addr(), 100 * MIB, 3).await;
    eprintln!("100 MiB echoed: direct {direct:?}, through the tunnel {tunnelled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_forwards_on_one_session_all_arrive_intact() {
    let (_broker, _echo, session) = echo_session().await;
    let forward = LocalForward::start(session.forwarder(), "echo").await;
    let transfers: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(echo_through(
                forward.addr(),
                256 * KIB + i * 997,
                100 + i as u64,
            ))
        })
        .collect();
    for transfer in transfers {
        transfer.await.unwrap();
    }
    // All fifty ran inside the one QUIC connection.
    if let Some(quic) = session.quic() {
        assert!(quic.stats().frame_rx.stream >= 50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_request_still_gets_its_whole_answer() {
    let mut server = ManualServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("web", server.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["web"]).await;
    let forward = LocalForward::start(session.forwarder(), "web").await;

    let mut client = TcpStream::connect(forward.addr()).await.unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    client.shutdown().await.unwrap();

    // The target sees the request, then end-of-file, and only then answers.
    let mut target = server.accept().await;
    let request = sekisho_e2e::servers::read_to_end(&mut target)
        .await
        .unwrap();
    assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
    target
        .write_all(b"HTTP/1.0 200 OK\r\n\r\nanswer after half-close")
        .await
        .unwrap();
    target.shutdown().await.unwrap();

    let answer = sekisho_e2e::servers::read_to_end(&mut client)
        .await
        .unwrap();
    assert_eq!(answer, b"HTTP/1.0 200 OK\r\n\r\nanswer after half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stops_reading_stalls_the_sender_and_loses_nothing() {
    let mut server = ManualServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("slow", server.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["slow"]).await;
    let forward = LocalForward::start(session.forwarder(), "slow").await;

    let client = TcpStream::connect(forward.addr()).await.unwrap();
    let mut target = server.accept().await;
    let (_client_read, mut client_write) = client.into_split();

    // Write until a write makes no progress for a while: the target reads nothing, so the
    // buffers on the way (TCP windows, QUIC stream credit, one splice buffer per side)
    // fill up and then the sender must wait. `write` is cancel-safe, so `sent` is exact.
    let mut pattern = Pattern::new(7);
    let mut chunk = vec![0u8; 64 * KIB];
    pattern.fill(&mut chunk);
    let (mut offset, mut sent) = (0usize, 0usize);
    while let Ok(written) = tokio::time::timeout(
        Duration::from_millis(500),
        client_write.write(&chunk[offset..]),
    )
    .await
    {
        let written = written.unwrap();
        sent += written;
        offset += written;
        if offset == chunk.len() {
            pattern.fill(&mut chunk);
            offset = 0;
        }
        assert!(sent < 256 * MIB, "the sender was never held back");
    }
    assert!(
        sent < 64 * MIB,
        "{sent} bytes were buffered on the way to a target that reads nothing"
    );

    // Now the target reads: everything sent so far and the rest arrive intact and in order.
    let total = sent + (chunk.len() - offset);
    let finisher = tokio::spawn(async move {
        client_write.write_all(&chunk[offset..]).await.unwrap();
        client_write.shutdown().await.unwrap();
    });
    let mut check = Pattern::new(7);
    let mut buf = vec![0u8; 64 * KIB];
    let mut received = 0usize;
    loop {
        let n = target.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        if let Err(at) = check.check(&buf[..n]) {
            panic!("byte {} differs", received + at);
        }
        received += n;
    }
    finisher.await.unwrap();
    assert_eq!(received, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_reset_reaches_the_local_program_as_a_reset() {
    let mut server = ManualServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("flaky", server.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["flaky"]).await;
    let forward = LocalForward::start(session.forwarder(), "flaky").await;

    let mut client = TcpStream::connect(forward.addr()).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut target = server.accept().await;
    let mut got = [0u8; 5];
    target.read_exact(&mut got).await.unwrap();
    target.set_zero_linger().unwrap();
    drop(target);

    let mut buf = [0u8; 16];
    let error = client
        .read(&mut buf)
        .await
        .expect_err("a reset, not an orderly end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    let end = forward
        .wait_for(|event| match event {
            ForwardEvent::Closed { outcome, .. } => Some(outcome.end.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(end, SpliceEnd::QuicFailed(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_session_cuts_its_forwards_at_the_target() {
    let mut server = ManualServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("db", server.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["db"]).await;
    let (mut send, _recv) = session.open_forward("db").await.unwrap();
    send.write_all(b"x").await.unwrap();
    let mut target = server.accept().await;
    let mut one = [0u8; 1];
    target.read_exact(&mut one).await.unwrap();

    session.close().await;

    let mut rest = Vec::new();
    let outcome = target.read_to_end(&mut rest).await;
    assert!(
        matches!(&outcome, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the target must see the cut as a reset, got {outcome:?}"
    );
}

/// A broker with four data threads, each with its own socket on the port: sessions from many
/// technicians (each client on its own UDP port, so the kernel spreads them over the sockets)
/// all carry their bytes at once, and when the broker stops, every one of them is told and
/// recorded as ended, whichever thread held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_data_threads_all_carry_and_all_end_at_shutdown() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start_with(
        // A stop ends these sessions (they may not outlive their connection).
        &[Vendor::new("acme-ehr")
            .resume(false)
            .target("echo", echo.addr())],
        |config| config.data_threads = 4,
    )
    .await;
    let mut sessions = Vec::new();
    for i in 0..12 {
        sessions.push(
            broker
                .open_session("acme-ehr", &format!("tech-{i}"), &["echo"])
                .await,
        );
    }
    let mut forwards = Vec::new();
    for session in &sessions {
        forwards.push(LocalForward::start(session.forwarder(), "echo").await);
    }
    let transfers: Vec<_> = forwards
        .iter()
        .enumerate()
        .map(|(i, forward)| {
            tokio::spawn(echo_through(forward.addr(), MIB + i * 991, 500 + i as u64))
        })
        .collect();
    for transfer in transfers {
        transfer.await.unwrap();
    }

    broker.halt().await;
    for session in &mut sessions {
        match tokio::time::timeout(Duration::from_secs(10), session.next_event()).await {
            Ok(sekisho_client::SessionEvent::Ended { reason, .. }) => {
                assert_eq!(reason, "broker-shutdown");
            }
            other => panic!("expected the end of the session, got {other:?}"),
        }
    }
    let active = broker
        .desk()
        .requests(&sekisho_broker::store::RequestFilter {
            states: vec!["active"],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        active.is_empty(),
        "sessions still active after the stop: {active:?}"
    );
}

/// Opens a session for `technician` whose client probes for packets of up to `packets`.
async fn session_with_packets(
    broker: &TestBroker,
    technician: &str,
    packets: tunnel::udp::PacketSize,
) -> Session {
    let mut config = broker.client_config("acme-ehr", technician).await;
    config.max_packet = packets;
    let session = Session::connect(&config).await.unwrap();
    broker
        .open_on(session, "acme-ehr", technician, &["echo"])
        .await
}

/// Echoes `len` bytes through a new forward on `session`, failing (not hanging) if they do
/// not all come back within 30 s.
async fn echo_within(session: &Session, len: usize, seed: u64) {
    let forward = LocalForward::start(session.forwarder(), "echo").await;
    tokio::time::timeout(
        Duration::from_secs(30),
        echo_through(forward.addr(), len, seed),
    )
    .await
    .expect("the bytes came back within 30 s");
}

/// The QUIC path MTU once `session` has carried 8 MiB both ways and it rose above `above`,
/// or `patience` passed. Polled: quinn gives no signal when its path MTU changes.
async fn settled_mtu(session: &Session, above: u16, patience: Duration) -> u16 {
    echo_within(session, 8 * MIB, 77).await;
    let deadline = Instant::now() + patience;
    loop {
        let mtu = session.quic().unwrap().stats().path.current_mtu;
        if mtu > above || Instant::now() > deadline {
            return mtu;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // sync-ok: no signal to wait for
    }
}

/// With jumbo-sized packets allowed at both ends, the client finds loopback carries them,
/// sends them (in GSO sends kept under 64 KiB) and every byte still arrives; allowed at only
/// one end, packets stay at Ethernet's size and the bytes arrive just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumbo_packets_are_used_only_when_both_ends_allow_them() {
    use tunnel::udp::PacketSize;
    // QUIC's own packets; TLS over TCP leaves packet sizes to TCP.
    if sekisho_e2e::test_transport() == sekisho_client::transport::TransportChoice::Tcp {
        return;
    }
    let echo = EchoServer::start().await;
    let vendors = [Vendor::new("acme-ehr").target("echo", echo.addr())];

    let jumbo_broker = TestBroker::start_with(&vendors, |config| {
        config.max_packet = PacketSize::JUMBO;
    })
    .await;
    let both = session_with_packets(&jumbo_broker, "tanaka", PacketSize::JUMBO).await;
    let mtu = settled_mtu(&both, PacketSize::ETHERNET.bytes(), Duration::from_secs(10)).await;
    assert!(
        mtu > PacketSize::ETHERNET.bytes() && mtu <= PacketSize::JUMBO.bytes(),
        "both ends allow jumbo packets, yet the path MTU is {mtu}"
    );
    // 8 MiB more in large packets, still byte-identical.
    echo_within(&both, 8 * MIB, 78).await;

    // An endpoint at the defaults accepts up to 1,472 bytes (quinn's default, an IPv4
    // Ethernet frame's payload), so that is as far as a jumbo-minded peer can go with it.
    const DEFAULT_ACCEPTED: u16 = 1472;
    let client_only = session_with_packets(&jumbo_broker, "sato", PacketSize::ETHERNET).await;
    // Probing takes milliseconds on loopback (the first case shows it); 2 s is ample.
    let patience = Duration::from_secs(2);
    let mtu = settled_mtu(&client_only, PacketSize::ETHERNET.bytes(), patience).await;
    assert!(
        mtu <= PacketSize::ETHERNET.bytes(),
        "a client at the defaults probed to {mtu}"
    );

    let ethernet_broker = TestBroker::start(&vendors).await;
    let broker_only = session_with_packets(&ethernet_broker, "tanaka", PacketSize::JUMBO).await;
    let mtu = settled_mtu(&broker_only, DEFAULT_ACCEPTED, patience).await;
    assert!(
        mtu <= DEFAULT_ACCEPTED,
        "a broker at the defaults was sent {mtu}-byte packets"
    );
}
