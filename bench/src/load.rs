//! The load generator: bulk transfers to the sink and 64-byte round trips to the echo server,
//! through whichever path's local address it is given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes written per call during a bulk transfer.
const WRITE_LEN: usize = 256 * 1024;
/// How long a path may take to accept a connection before the run fails.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// Sends `total` bytes split over `streams` connections to the sink at `sink`, each waiting
/// for the sink's count, and returns the wall time from the first connect to the last count.
/// Fails if any count differs from what was sent.
pub(crate) async fn bulk(sink: SocketAddr, total: u64, streams: usize) -> anyhow::Result<Duration> {
    let share = total / streams as u64;
    let data: Arc<[u8]> = (0..WRITE_LEN).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let data = data.clone();
        tasks.spawn(async move {
            let mut tcp = connect(sink).await?;
            let mut left = share;
            while left > 0 {
                let len = left.min(WRITE_LEN as u64) as usize;
                tcp.write_all(&data[..len]).await?;
                left -= len as u64;
            }
            tcp.shutdown().await?;
            let mut count = [0u8; 8];
            tcp.read_exact(&mut count)
                .await
                .context("the sink did not confirm the transfer")?;
            let received = u64::from_be_bytes(count);
            if received != share {
                bail!("the sink received {received} bytes of {share}");
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// `count` round trips of 64 bytes on one connection to the echo server at `echo`; the time
/// of each.
pub(crate) async fn round_trips(echo: SocketAddr, count: usize) -> anyhow::Result<Vec<Duration>> {
    // A few untimed trips first, so connection set-up is not counted.
    timed_round_trips(echo, 10, Duration::ZERO, count).await
}

/// One 64-byte round trip on a new connection to `echo`, retrying the connection until the
/// listener is there; returns when the answer arrived.
pub(crate) async fn first_echo(echo: SocketAddr) -> anyhow::Result<Instant> {
    let mut tcp = connect(echo).await?;
    tcp.set_nodelay(true)?;
    let request = [0x5au8; 64];
    let mut answer = [0u8; 64];
    tcp.write_all(&request).await?;
    tcp.read_exact(&mut answer)
        .await
        .context("the forward closed before the first answer")?;
    Ok(Instant::now())
}

/// Connects to `addr`, retrying while nothing listens yet (a listener that is starting).
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_WITHIN;
    loop {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) if Instant::now() < deadline => {
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    bail!("cannot connect to {addr}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => {
                bail!("nothing accepted connections on {addr} within {CONNECT_WITHIN:?}: {e}")
            }
        }
    }
}

/// Sends to the sink at `sink` over `streams` connections for `sending` (then ends each
/// connection and waits for the sink's count); returns the bytes the sink counted and the
/// wall time from the first connect to the last count, which includes draining whatever the
/// path still held when sending stopped.
pub(crate) async fn upload_for(
    sink: SocketAddr,
    sending: Duration,
    streams: usize,
) -> anyhow::Result<(u64, Duration)> {
    let data: Arc<[u8]> = (0..WRITE_LEN).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let stop_at = started + sending;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let data = data.clone();
        tasks.spawn(async move {
            let mut tcp = connect(sink).await?;
            let mut sent = 0u64;
            // A write may wait a long time on a slow path; the deadline cuts it short.
            while let Ok(written) =
                tokio::time::timeout_at(stop_at.into(), tcp.write(&data[..])).await
            {
                sent += written? as u64;
            }
            tcp.shutdown().await?;
            let mut count = [0u8; 8];
            tcp.read_exact(&mut count)
                .await
                .context("the sink did not confirm the transfer")?;
            let received = u64::from_be_bytes(count);
            if received != sent {
                bail!("the sink received {received} bytes of {sent}");
            }
            Ok::<_, anyhow::Error>(received)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok((total, started.elapsed()))
}

/// Asks the source at `source` to send for `sending` and reads until it ends; returns the
/// bytes received and the wall time from connecting to the end of data.
pub(crate) async fn download_for(
    source: SocketAddr,
    sending: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut tcp = connect(source).await?;
    let millis = u32::try_from(sending.as_millis()).unwrap_or(u32::MAX);
    tcp.write_all(&millis.to_be_bytes()).await?;
    let mut buf = vec![0u8; WRITE_LEN];
    let mut received = 0u64;
    loop {
        let read = tcp.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        received += read as u64;
    }
    if received == 0 {
        bail!("the source sent nothing");
    }
    Ok((received, started.elapsed()))
}

/// 64-byte round trips on one connection to the echo server at `echo` for `lasting` and at
/// least `at_least` of them; the time of each.
pub(crate) async fn round_trips_for(
    echo: SocketAddr,
    lasting: Duration,
    at_least: usize,
) -> anyhow::Result<Vec<Duration>> {
    timed_round_trips(echo, 1, lasting, at_least).await
}

/// `untimed` round trips, then timed ones for `lasting` and at least `at_least` of them.
async fn timed_round_trips(
    echo: SocketAddr,
    untimed: usize,
    lasting: Duration,
    at_least: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut tcp = connect(echo).await?;
    tcp.set_nodelay(true)?;
    let request = [0x5au8; 64];
    let mut answer = [0u8; 64];
    for _ in 0..untimed {
        tcp.write_all(&request).await?;
        tcp.read_exact(&mut answer).await?;
    }
    let mut times = Vec::with_capacity(at_least);
    let started = Instant::now();
    while started.elapsed() < lasting || times.len() < at_least {
        let sent = Instant::now();
        tcp.write_all(&request).await?;
        tcp.read_exact(&mut answer).await?;
        times.push(sent.elapsed());
    }
    if answer != request {
        bail!("the echo server answered with other bytes");
    }
    Ok(times)
}
