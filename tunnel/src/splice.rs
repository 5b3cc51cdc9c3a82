//! Copying between one QUIC bidirectional stream and one TCP connection.
//!
//! Both directions run at once without copying the bytes in user space: what TCP delivers is
//! handed to quinn as it is, and what QUIC delivers (one chunk per packet) goes to TCP in one
//! vectored write per batch of chunks. Memory per forward stays bounded, and a slow reader
//! slows the writer on the other end (QUIC flow control on one side, TCP's window on the
//! other). An end of data is passed on as an end of data: a TCP FIN
//! finishes the QUIC send stream and a finished QUIC stream shuts down the TCP write half, so
//! a peer that half-closes still gets its answer. A failure is passed on as a failure: a TCP
//! reset resets the QUIC stream, and a reset QUIC stream (or a lost connection) resets the
//! TCP connection, so neither side mistakes a cut transfer for a complete one. A cut from
//! outside ([`splice_until`]: the session ended) stops both directions wherever they stand,
//! resets the streams and resets the TCP connection, whatever either peer is doing.

use std::io::{self, IoSlice};

use crate::link::{RecvHalf, SendHalf, StreamError};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::close_code;

/// Bytes read from TCP at once.
const BUFFER_LEN: usize = 64 * 1024;
/// QUIC chunks (one per packet, ~1.4 KB on an Ethernet path) taken per TCP write: writing
/// each on its own would cost a system call per packet.
const CHUNKS_PER_WRITE: usize = 64;

/// How a forward ended, and what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceOutcome {
    /// Bytes read from the QUIC stream and written to TCP.
    pub quic_to_tcp: u64,
    /// Bytes read from TCP and written to the QUIC stream.
    pub tcp_to_quic: u64,
    /// Whether both directions ended cleanly.
    pub end: SpliceEnd,
}

/// Why a forward ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both sides finished sending.
    Finished,
    /// The TCP side failed (reset, or a write error); the QUIC stream was reset.
    TcpFailed(String),
    /// The QUIC side was reset or its connection lost; the TCP connection was reset.
    QuicFailed(String),
    /// Cut from outside (the session ended): both streams and the TCP connection were reset.
    Cut,
}

/// Told each time a forward reads bytes from either side, before it writes them on, so that
/// whoever watches a session for idleness sees traffic no later than the peer does. Called
/// once per chunk on the data path: implementations must be cheap (an atomic store).
pub trait Activity: Send + Sync {
    /// Bytes were read from one side and are about to be written to the other.
    fn carried(&self);
}

/// Copies both ways between `tcp` and the stream pair until both directions end or one fails.
pub async fn splice(tcp: TcpStream, send: SendHalf, recv: RecvHalf) -> SpliceOutcome {
    splice_observed(tcp, send, recv, None).await
}

/// [`splice`], telling `activity` of every chunk carried either way.
pub async fn splice_observed(
    tcp: TcpStream,
    send: SendHalf,
    recv: RecvHalf,
    activity: Option<&dyn Activity>,
) -> SpliceOutcome {
    splice_until(tcp, send, recv, activity, std::future::pending()).await
}

/// [`splice_observed`] until `cut` resolves, if it does first: then copying stops in both
/// directions wherever it stands (a peer that reads nothing or sends without end holds up
/// nothing), both streams are reset and the TCP connection is closed with a reset. The
/// counts are what was carried until then.
pub async fn splice_until(
    mut tcp: TcpStream,
    mut send: SendHalf,
    mut recv: RecvHalf,
    activity: Option<&dyn Activity>,
    cut: impl std::future::Future<Output = ()>,
) -> SpliceOutcome {
    let mut quic_to_tcp = 0u64;
    let mut tcp_to_quic = 0u64;
    let (mut tcp_read, mut tcp_write) = tcp.split();

    let failure = {
        let down = copy_quic_to_tcp(&mut recv, &mut tcp_write, &mut quic_to_tcp, activity);
        let up = copy_tcp_to_quic(&mut tcp_read, &mut send, &mut tcp_to_quic, activity);
        tokio::pin!(down, up, cut);
        let (mut down_done, mut up_done) = (false, false);
        let mut failure = None;
        while failure.is_none() && !(down_done && up_done) {
            tokio::select! {
                biased;
                () = &mut cut => failure = Some(Failure::Cut),
                result = &mut down, if !down_done => match result {
                    Ok(()) => down_done = true,
                    Err(e) => failure = Some(e),
                },
                result = &mut up, if !up_done => match result {
                    Ok(()) => up_done = true,
                    Err(e) => failure = Some(e),
                },
            }
        }
        failure
    };

    let end = match failure {
        None => SpliceEnd::Finished,
        Some(Failure::Tcp(reason)) => {
            // Either call fails only if that half is already closed, which is what we want.
            send.reset(close_code::FORWARD_ABORTED);
            recv.stop(close_code::FORWARD_ABORTED);
            SpliceEnd::TcpFailed(reason)
        }
        Some(Failure::Quic(reason)) => {
            send.reset(close_code::FORWARD_ABORTED);
            recv.stop(close_code::FORWARD_ABORTED);
            // A zero linger makes the close below send a TCP reset instead of a FIN, so the
            // TCP peer sees that the transfer was cut, not that it was complete.
            let _ = tcp.set_zero_linger();
            SpliceEnd::QuicFailed(reason)
        }
        Some(Failure::Cut) => {
            send.reset(close_code::SESSION_ENDED);
            recv.stop(close_code::SESSION_ENDED);
            let _ = tcp.set_zero_linger();
            SpliceEnd::Cut
        }
    };
    SpliceOutcome {
        quic_to_tcp,
        tcp_to_quic,
        end,
    }
}

enum Failure {
    Tcp(String),
    Quic(String),
    Cut,
}

async fn copy_quic_to_tcp(
    recv: &mut RecvHalf,
    tcp: &mut WriteHalf<'_>,
    copied: &mut u64,
    activity: Option<&dyn Activity>,
) -> Result<(), Failure> {
    let mut chunks: Vec<Bytes> = vec![Bytes::new(); CHUNKS_PER_WRITE];
    loop {
        match recv.read_chunks(&mut chunks).await {
            Ok(Some(count)) => {
                if let Some(activity) = activity {
                    activity.carried();
                }
                let read: usize = chunks[..count].iter().map(Bytes::len).sum();
                write_chunks(tcp, &mut chunks[..count])
                    .await
                    .map_err(|e| Failure::Tcp(e.to_string()))?;
                *copied += read as u64;
            }
            Ok(None) => {
                return match tcp.shutdown().await {
                    Ok(()) => Ok(()),
                    // The TCP peer may already be gone after sending all it had; nothing is lost.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                    Err(e) => Err(Failure::Tcp(e.to_string())),
                };
            }
            Err(e) => return Err(Failure::Quic(e.to_string())),
        }
    }
}

/// Writes every byte of `chunks` to `tcp`, as few system calls as the socket allows (one
/// vectored write per round), without copying them first.
async fn write_chunks(tcp: &mut WriteHalf<'_>, mut chunks: &mut [Bytes]) -> io::Result<()> {
    while let Some(first) = chunks.first() {
        if first.is_empty() {
            chunks = &mut chunks[1..];
            continue;
        }
        let slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
        let mut written = tcp.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while let Some(chunk) = chunks.first_mut() {
            if written < chunk.len() {
                chunk.advance(written);
                break;
            }
            written -= chunk.len();
            chunks = &mut chunks[1..];
        }
    }
    Ok(())
}

async fn copy_tcp_to_quic(
    tcp: &mut ReadHalf<'_>,
    send: &mut SendHalf,
    copied: &mut u64,
    activity: Option<&dyn Activity>,
) -> Result<(), Failure> {
    let mut buf = BytesMut::new();
    loop {
        // Each read gets a buffer of its own that is handed to quinn as it is (no copy into
        // the stream's send buffer); quinn frees it once the peer acknowledged it.
        buf.reserve(BUFFER_LEN);
        let read = tcp
            .read_buf(&mut buf)
            .await
            .map_err(|e| Failure::Tcp(e.to_string()))?;
        if read == 0 {
            // Finishing fails only if the stream was already reset, which the other
            // direction reports.
            let _ = send.finish();
            return Ok(());
        }
        if let Some(activity) = activity {
            activity.carried();
        }
        send.write_chunk(buf.split().freeze())
            .await
            .map_err(|e: StreamError| Failure::Quic(e.to_string()))?;
        *copied += read as u64;
    }
}
