//! What the benchmark's child processes run: the broker, the technician's client, and the
//! target. Each is this same binary started with a hidden subcommand, so the CPU and memory of
//! each role are those of a process of its own, measured from outside.
//!
//! The broker and client roles run the libraries exactly as `sekisho-broker serve` and
//! `sekisho connect` do (a multi-threaded tokio runtime, [`Broker::bind`] then run; a
//! [`Session`], then [`serve_local_forward`] per forward). They talk to the benchmark through
//! stdout lines (`LISTENING addr`, `FORWARD target port`, `OPEN`) and stop when stdin closes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sekisho_broker::{Broker, BrokerConfig};
use sekisho_client::forward::serve_local_forward;
use sekisho_client::{ClientConfig, Session};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A token cancelled when stdin reaches its end (the benchmark closed it, or died).
fn until_stdin_closes() -> CancellationToken {
    let closed = CancellationToken::new();
    let signal = closed.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        signal.cancel();
    });
    closed
}

/// `sekisho-bench broker`: a broker on `listen` until stdin closes.
pub(crate) async fn broker(
    data_dir: PathBuf,
    policies: PathBuf,
    listen: SocketAddr,
    max_packet: tunnel::udp::PacketSize,
    congestion: tunnel::udp::Congestion,
    web: bool,
) -> anyhow::Result<()> {
    let mut config = BrokerConfig::new(data_dir, policies);
    config.listen = listen;
    // TLS over TCP on the QUIC port's number, for the path over TCP.
    config.listen_tcp = Some(SocketAddr::new(listen.ip(), 0));
    config.max_packet = max_packet;
    config.congestion = congestion;
    if web {
        // Plain HTTP on loopback: the figure is about connections and logins, not TLS.
        let mut web = sekisho_broker::web::WebConfig::new(SocketAddr::new(listen.ip(), 0));
        web.tls = sekisho_broker::web::WebTls::PlainHttpOnLoopback;
        config.web = Some(web);
    }
    let broker = Broker::bind(config).await?;
    if let Some(web) = broker.web_addr() {
        println!("WEB {web}");
    }
    println!("LISTENING {}", broker.local_addr());
    broker.run(until_stdin_closes()).await;
    Ok(())
}

/// `sekisho-bench client`: reads a one-time password from stdin, opens `request` and forwards
/// a local port (on 127.0.0.1, chosen by the system) to each target until stdin closes. The
/// listeners are bound first, as `sekisho connect` does, and announced at once, so a
/// program may connect while the session is still being opened.
pub(crate) async fn client(
    config: ClientConfig,
    request: String,
    targets: Vec<String>,
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for target in targets {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("FORWARD {target} {}", listener.local_addr()?.port());
        listeners.push((listener, target));
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let code = stdin
        .next_line()
        .await?
        .context("no one-time password on stdin")?;
    let mut session = Session::connect(&config).await?;
    session.open(&request, code.trim()).await?;
    println!("OPEN");
    let shutdown = CancellationToken::new();
    let forwarder = session.forwarder();
    let mut serving = tokio::task::JoinSet::new();
    for (listener, target) in listeners {
        serving.spawn(serve_local_forward(
            forwarder.clone(),
            listener,
            target,
            Arc::new(|_| {}),
            shutdown.clone(),
        ));
    }
    // Stop on stdin's end, or when the session ends on the broker's side.
    tokio::select! {
        _ = async { while let Ok(Some(_)) = stdin.next_line().await {} } => {}
        end = forwarder.ended() => bail!("the session ended: {}", end.reason),
    }
    shutdown.cancel();
    while serving.join_next().await.is_some() {}
    session.close().await;
    Ok(())
}

/// `sekisho-bench target`: a sink, an echo server and a source on `ip`, until stdin closes.
///
/// The sink reads until the peer's end of data and answers with the byte count (8 bytes, big
/// endian), so the sender knows when every byte arrived. The echo server sends back what it
/// reads. The source reads how long to send (milliseconds, 4 bytes, big endian), sends for
/// that long as fast as the path takes it, and ends its side.
pub(crate) async fn target(ip: std::net::IpAddr) -> anyhow::Result<()> {
    let sink = TcpListener::bind((ip, 0)).await?;
    let echo = TcpListener::bind((ip, 0)).await?;
    let source = TcpListener::bind((ip, 0)).await?;
    println!("SINK {}", sink.local_addr()?.port());
    println!("ECHO {}", echo.local_addr()?.port());
    println!("SOURCE {}", source.local_addr()?.port());
    let stop = until_stdin_closes();
    tokio::spawn(accept(sink, |tcp| async move {
        let _ = serve_sink(tcp).await;
    }));
    tokio::spawn(accept(echo, |tcp| async move {
        let _ = serve_echo(tcp).await;
    }));
    tokio::spawn(accept(source, |tcp| async move {
        let _ = serve_source(tcp).await;
    }));
    stop.cancelled().await;
    Ok(())
}

async fn accept<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp));
    }
}

async fn serve_sink(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let read = tcp.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    tcp.write_all(&total.to_be_bytes()).await?;
    tcp.shutdown().await
}

async fn serve_source(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut millis = [0u8; 4];
    tcp.read_exact(&mut millis).await?;
    let stop_at =
        tokio::time::Instant::now() + Duration::from_millis(u32::from_be_bytes(millis).into());
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    // A write may wait a long time on a slow path; the deadline cuts it short.
    while let Ok(written) = tokio::time::timeout_at(stop_at, tcp.write(&data)).await {
        written?;
    }
    tcp.shutdown().await
}

async fn serve_echo(mut tcp: TcpStream) -> std::io::Result<()> {
    let (mut read, mut write) = tcp.split();
    tokio::io::copy(&mut read, &mut write).await?;
    write.shutdown().await
}
