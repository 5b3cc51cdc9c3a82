//! A technician's client that misbehaves, written straight against quinn, and a target that
//! tells when the broker's connection to it ends.
//!
//! The [`HostileClient`] holds a real certificate (it enrolled through the real flow) and
//! opens a real session, then does what our own client never does: it stops reading the
//! control stream, so the broker gets no more flow-control credit there; it ignores `Ended`
//! and keeps sending on its forwards; it opens streams as fast as the broker lets it. The
//! [`SinkTarget`] only reads, so nothing flows from the target back to the client and the
//! only stream the broker can be blocked on is the control stream; it reports every byte it
//! receives and the moment each connection ends, which is where a test checks that a cut
//! is a cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::{Connect, Hello, Message, Open, RequestAccess};
use quinn::{TransportConfig, VarInt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tunnel::frames::{MessageReader, write_message};
use tunnel::link::{RecvHalf, SendHalf};

use crate::TestBroker;

/// How long a test waits for something that is not itself under test.
const PATIENCE: Duration = Duration::from_secs(10);

/// A target that reads and discards, counting bytes, and reports how each connection ended.
pub struct SinkTarget {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    received_changed: watch::Receiver<u64>,
    accepted: watch::Receiver<u64>,
    ends: mpsc::UnboundedReceiver<TargetEnd>,
    task: JoinHandle<()>,
}

/// How and when one connection to a [`SinkTarget`] ended.
#[derive(Debug, Clone)]
pub struct TargetEnd {
    /// When the target's read returned the end (or an error).
    pub at: Instant,
    /// `fin`, or the error the read returned (a reset).
    pub how: String,
}

impl SinkTarget {
    pub async fn start() -> SinkTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let (changed_tx, received_changed) = watch::channel(0u64);
        let changed_tx = Arc::new(changed_tx);
        let (ends_tx, ends) = mpsc::unbounded_channel();
        let (accepted_tx, accepted) = watch::channel(0u64);
        let counter = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                accepted_tx.send_modify(|count| *count += 1);
                let (counter, changed_tx, ends_tx) =
                    (counter.clone(), changed_tx.clone(), ends_tx.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let how = loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) => break "fin".to_owned(),
                            Ok(n) => {
                                let total =
                                    counter.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                                changed_tx.send_replace(total);
                            }
                            Err(e) => break e.to_string(),
                        }
                    };
                    let _ = ends_tx.send(TargetEnd {
                        at: Instant::now(),
                        how,
                    });
                });
            }
        });
        SinkTarget {
            addr,
            received,
            received_changed,
            accepted,
            ends,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes received so far, on every connection.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until more than `bytes` have arrived in all (bounded: panics after 10 s).
    pub async fn wait_received_more_than(&mut self, bytes: u64) {
        tokio::time::timeout(
            PATIENCE,
            self.received_changed.wait_for(|total| *total > bytes),
        )
        .await
        .unwrap_or_else(|_| panic!("the target did not receive more than {bytes} bytes"))
        .unwrap();
    }

    /// Waits until at least `count` connections have been accepted (bounded: 10 s).
    pub async fn wait_connections(&mut self, count: u64) {
        tokio::time::timeout(PATIENCE, self.accepted.wait_for(|n| *n >= count))
            .await
            .unwrap_or_else(|_| panic!("the target did not get {count} connections"))
            .unwrap();
    }

    /// The next connection end, if one comes within `within`.
    pub async fn next_end(&mut self, within: Duration) -> Option<TargetEnd> {
        tokio::time::timeout(within, self.ends.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for SinkTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client that speaks the protocol with a real certificate and then misbehaves.
pub struct HostileClient {
    /// The QUIC connection: a test waits on `closed()` to see the broker close it.
    pub connection: quinn::Connection,
    control_send: SendHalf,
    control_recv: RecvHalf,
    reader: MessageReader,
    _endpoint: quinn::Endpoint,
}

impl HostileClient {
    /// Connects as `vendor`/`technician` (enrolling first) and reads `Welcome`. Every stream's
    /// receive window is `window` bytes: the broker can write no more than that on the control
    /// stream beyond what this client has read.
    pub async fn connect(
        broker: &TestBroker,
        vendor: &str,
        technician: &str,
        window: u32,
    ) -> HostileClient {
        let config = broker.client_config(vendor, technician).await;
        let mut quic = config.quic_config().unwrap();
        let mut transport = TransportConfig::default();
        transport.stream_receive_window(VarInt::from_u32(window));
        transport.keep_alive_interval(Some(Duration::from_secs(1)));
        transport.max_concurrent_bidi_streams(VarInt::from_u32(0));
        transport.max_concurrent_uni_streams(VarInt::from_u32(0));
        quic.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connection = endpoint
            .connect_with(quic, broker.addr(), proto::BROKER_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (control_send, control_recv) = connection.open_bi().await.unwrap();
        let (mut control_send, mut control_recv) =
            (SendHalf::Quic(control_send), RecvHalf::Quic(control_recv));
        write_message(
            &mut control_send,
            &Message::Hello(Hello {
                version: proto::PROTOCOL_VERSION,
                client_software: "hostile/0".into(),
            }),
        )
        .await
        .unwrap();
        let mut reader = MessageReader::new();
        match reader.expect(&mut control_recv).await.unwrap() {
            Message::Welcome(_) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
        HostileClient {
            connection,
            control_send,
            control_recv,
            reader,
            _endpoint: endpoint,
        }
    }

    /// Connects, asks for `targets`, has the request approved, and opens it with a fresh
    /// one-time password: a live session on a misbehaving client.
    pub async fn open_session(
        broker: &TestBroker,
        vendor: &str,
        technician: &str,
        targets: &[&str],
        window: u32,
    ) -> HostileClient {
        let mut client = HostileClient::connect(broker, vendor, technician, window).await;
        client
            .send(&Message::RequestAccess(RequestAccess {
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                purpose: "hostile test".into(),
                ticket: "T-1".into(),
                duration_secs: 3600,
            }))
            .await;
        let id = match client.receive().await {
            Message::RequestStatus(view) => view.id,
            other => panic!("expected the new request, got {other:?}"),
        };
        broker.approve(&id).await;
        let otp = broker.next_otp(vendor, technician).await;
        client
            .send(&Message::Open(Open {
                request_id: id.clone(),
                otp,
            }))
            .await;
        match client.receive().await {
            Message::Opened(_) => {}
            other => panic!("expected Opened, got {other:?}"),
        }
        client
    }

    /// Writes one control message.
    pub async fn send(&mut self, message: &Message) {
        write_message(&mut self.control_send, message)
            .await
            .unwrap();
    }

    /// Reads one control message.
    pub async fn receive(&mut self) -> Message {
        tokio::time::timeout(PATIENCE, self.reader.expect(&mut self.control_recv))
            .await
            .expect("the broker answers")
            .unwrap()
    }

    /// Stops reading the control stream and asks for status until the broker has more to
    /// say than this client's window takes: quinn tells the client (a STREAM_DATA_BLOCKED
    /// frame) when the broker's control stream write is stuck on the credit it was not given.
    /// A few questions fill a small window; asking more would only fill the broker's queue
    /// for the client, and a client that lets that fill is disconnected for not reading.
    pub async fn stop_reading_control(&mut self) {
        const QUESTIONS: usize = 16;
        let blocked_before = self.connection.stats().frame_rx.stream_data_blocked;
        for _ in 0..QUESTIONS {
            write_message(&mut self.control_send, &Message::StatusQuery)
                .await
                .unwrap();
        }
        let blocked = async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            // sync-ok: quinn's frame counters move on its own task; polled here, bounded.
            while self.connection.stats().frame_rx.stream_data_blocked <= blocked_before {
                tick.tick().await;
            }
        };
        tokio::time::timeout(PATIENCE, blocked)
            .await
            .expect("the broker's control stream filled this client's window");
    }

    /// Opens a forward to `target` and keeps writing on it until the stream fails, never
    /// reading it: what a client that ignores `Ended` does. Returns once the broker answered
    /// `Connect`.
    pub async fn pump(&self, target: &str) -> JoinHandle<()> {
        let (send, recv) = self.connection.open_bi().await.unwrap();
        let (mut send, mut recv) = (SendHalf::Quic(send), RecvHalf::Quic(recv));
        write_message(
            &mut send,
            &Message::Connect(Connect {
                target: target.to_owned(),
            }),
        )
        .await
        .unwrap();
        match MessageReader::new().expect(&mut recv).await.unwrap() {
            Message::Connected(_) => {}
            other => panic!("expected Connected, got {other:?}"),
        }
        tokio::spawn(async move {
            let chunk = vec![0x5au8; 16 * 1024];
            while send.write_all(&chunk).await.is_ok() {}
        })
    }

    /// Opens bidirectional streams as fast as the broker grants them, each naming `target`
    /// and then writing without end; runs until the connection fails.
    pub fn flood_streams(&self, target: &str) -> JoinHandle<()> {
        let connection = self.connection.clone();
        let target = target.to_owned();
        tokio::spawn(async move {
            while let Ok((send, _recv)) = connection.open_bi().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let mut send = SendHalf::Quic(send);
                    let connect = Message::Connect(Connect { target });
                    if write_message(&mut send, &connect).await.is_err() {
                        return;
                    }
                    let chunk = vec![0xa5u8; 4 * 1024];
                    while send.write_all(&chunk).await.is_ok() {}
                });
            }
        })
    }

    /// Whether the broker closed the connection within `within`.
    pub async fn closed_within(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.connection.closed())
            .await
            .is_ok()
    }
}
