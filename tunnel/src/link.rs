//! One connection between a client and the broker, whichever transport carries it: QUIC, or
//! TLS over TCP ([`crate::tcp`]) where UDP cannot pass.
//!
//! Everything above this module (the control stream, forwards, the cut) speaks to a [`Link`]
//! and its stream halves, so every guarantee is written once for both transports. The
//! transports differ in two places only, both said where they matter: a QUIC stream's two
//! directions can be stopped apart, a TCP link's stream is reset as a whole; and only the QUIC
//! side has a handshake quinn drives (the TCP side's TLS handshake is done before a link
//! exists).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::VarInt;
use tokio::io::AsyncWriteExt;

use crate::tcp::{LinkError, StreamReset, TcpLink, TcpRecv, TcpSend};

/// Which transport carries a link, as the record and the technician name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// QUIC over UDP, the default.
    Quic,
    /// TLS 1.3 over TCP, HTTP/2 streams.
    Tcp,
}

impl Transport {
    /// `quic` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }
}

/// Why a link is over, whichever transport it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// Closed by the application, with its code and sentence.
    Closed {
        /// The code ([`crate::close_code`]).
        code: u32,
        /// The sentence that came with it (may be empty).
        reason: String,
        /// Whether the other side closed it.
        by_peer: bool,
    },
    /// The peer stopped answering.
    TimedOut,
    /// Anything else: a reset, a protocol or TLS error, the peer gone without a word.
    Failed(String),
}

impl LinkEnd {
    fn from_quic(error: &quinn::ConnectionError) -> LinkEnd {
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => LinkEnd::Closed {
                code: u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
                by_peer: true,
            },
            quinn::ConnectionError::LocallyClosed => LinkEnd::Closed {
                code: 0,
                reason: String::new(),
                by_peer: false,
            },
            quinn::ConnectionError::TimedOut => LinkEnd::TimedOut,
            other => LinkEnd::Failed(other.to_string()),
        }
    }

    fn from_tcp(error: LinkError) -> LinkEnd {
        match error {
            LinkError::Closed {
                code,
                reason,
                by_peer,
            } => LinkEnd::Closed {
                code,
                reason,
                by_peer,
            },
            LinkError::TimedOut(_) => LinkEnd::TimedOut,
            LinkError::Failed(why) => LinkEnd::Failed(why),
            LinkError::Tls(error) => LinkEnd::Failed(format!("TLS: {error}")),
        }
    }
}

impl std::fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkEnd::Closed {
                code,
                reason,
                by_peer,
            } => {
                let who = if *by_peer { "the peer" } else { "this side" };
                write!(f, "{who} closed the connection (code {code})")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            LinkEnd::TimedOut => write!(f, "the connection timed out"),
            LinkEnd::Failed(why) => write!(f, "the connection failed: {why}"),
        }
    }
}

/// Why a stream could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The peer reset the stream (it will send no more), with its code.
    #[error("the stream was reset by the peer (code {0})")]
    Reset(u32),
    /// The peer stopped reading the stream, with its code.
    #[error("the peer stopped reading (code {0})")]
    Stopped(u32),
    /// The link is gone.
    #[error("{0}")]
    Lost(LinkEnd),
    /// Anything else (this side already finished or reset the stream).
    #[error("{0}")]
    Other(String),
}

impl From<quinn::ReadError> for StreamError {
    fn from(error: quinn::ReadError) -> StreamError {
        match error {
            quinn::ReadError::Reset(code) => {
                StreamError::Reset(u32::try_from(code.into_inner()).unwrap_or(u32::MAX))
            }
            quinn::ReadError::ConnectionLost(lost) => StreamError::Lost(LinkEnd::from_quic(&lost)),
            other => StreamError::Other(other.to_string()),
        }
    }
}

impl From<quinn::WriteError> for StreamError {
    fn from(error: quinn::WriteError) -> StreamError {
        match error {
            quinn::WriteError::Stopped(code) => {
                StreamError::Stopped(u32::try_from(code.into_inner()).unwrap_or(u32::MAX))
            }
            quinn::WriteError::ConnectionLost(lost) => StreamError::Lost(LinkEnd::from_quic(&lost)),
            other => StreamError::Other(other.to_string()),
        }
    }
}

/// A TCP link's stream error: a reset with its code, else the link's own end when it is over.
fn tcp_stream_error(error: &std::io::Error, link: Option<&TcpLink>) -> StreamError {
    if let Some(reset) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StreamReset>())
    {
        return StreamError::Reset(reset.0);
    }
    match link.and_then(TcpLink::close_reason) {
        Some(end) => StreamError::Lost(LinkEnd::from_tcp(end)),
        None => StreamError::Other(error.to_string()),
    }
}

/// One connection, on either transport. Cheap to clone (a handle).
#[derive(Clone)]
pub enum Link {
    /// A QUIC connection.
    Quic(quinn::Connection),
    /// A TLS-over-TCP connection.
    Tcp(Arc<TcpLink>),
}

impl Link {
    /// Which transport this is.
    pub fn transport(&self) -> Transport {
        match self {
            Link::Quic(_) => Transport::Quic,
            Link::Tcp(_) => Transport::Tcp,
        }
    }

    /// Opens a bidirectional stream (the client's side).
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), LinkEnd> {
        match self {
            Link::Quic(connection) => match connection.open_bi().await {
                Ok((send, recv)) => Ok((SendHalf::Quic(send), RecvHalf::Quic(recv))),
                Err(e) => Err(LinkEnd::from_quic(&e)),
            },
            Link::Tcp(link) => match link.open_bi().await {
                Ok((send, recv)) => Ok((
                    SendHalf::Tcp(send, link.clone()),
                    RecvHalf::Tcp(recv, link.clone()),
                )),
                Err(e) => Err(LinkEnd::from_tcp(e)),
            },
        }
    }

    /// The next stream the peer opened (the broker's side).
    pub async fn accept_bi(&self) -> Result<(SendHalf, RecvHalf), LinkEnd> {
        match self {
            Link::Quic(connection) => match connection.accept_bi().await {
                Ok((send, recv)) => Ok((SendHalf::Quic(send), RecvHalf::Quic(recv))),
                Err(e) => Err(LinkEnd::from_quic(&e)),
            },
            Link::Tcp(link) => match link.accept_bi().await {
                Ok((send, recv)) => Ok((
                    SendHalf::Tcp(send, link.clone()),
                    RecvHalf::Tcp(recv, link.clone()),
                )),
                Err(e) => Err(LinkEnd::from_tcp(e)),
            },
        }
    }

    /// Closes the link with `code` and `reason`, which reach the peer; every stream ends.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Link::Quic(connection) => connection.close(VarInt::from_u32(code), reason),
            Link::Tcp(link) => link.close(code, &String::from_utf8_lossy(reason)),
        }
    }

    /// Waits until the link is over; why.
    pub async fn closed(&self) -> LinkEnd {
        match self {
            Link::Quic(connection) => LinkEnd::from_quic(&connection.closed().await),
            Link::Tcp(link) => LinkEnd::from_tcp(link.closed().await),
        }
    }

    /// After [`close`](Link::close): waits until the peer has what was said (QUIC: the
    /// endpoint's close is the caller's to wait for; TCP: the connection is dropped once the
    /// peer has read the close).
    pub async fn closing(&self) {
        if let Link::Tcp(link) = self {
            link.gone().await;
        }
    }

    /// Why the link is over, if it is.
    pub fn close_reason(&self) -> Option<LinkEnd> {
        match self {
            Link::Quic(connection) => connection.close_reason().map(|e| LinkEnd::from_quic(&e)),
            Link::Tcp(link) => link.close_reason().map(LinkEnd::from_tcp),
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Link::Quic(connection) => connection.remote_address(),
            Link::Tcp(link) => link.remote_address(),
        }
    }
}

/// The sending half of a stream.
pub enum SendHalf {
    /// On QUIC.
    Quic(quinn::SendStream),
    /// On a TCP link (the link, to tell a lost link from a reset stream).
    Tcp(TcpSend, Arc<TcpLink>),
}

impl SendHalf {
    /// Writes all of `bytes`, as far as the peer's window allows.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        match self {
            SendHalf::Quic(send) => send.write_all(bytes).await.map_err(StreamError::from),
            SendHalf::Tcp(send, link) => send
                .write_all(bytes)
                .await
                .map_err(|e| tcp_stream_error(&e, Some(link))),
        }
    }

    /// Writes `chunk` without copying it.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), StreamError> {
        match self {
            SendHalf::Quic(send) => send.write_chunk(chunk).await.map_err(StreamError::from),
            SendHalf::Tcp(send, link) => send
                .write_chunk(chunk)
                .await
                .map_err(|e| tcp_stream_error(&e, Some(link))),
        }
    }

    /// Ends the stream in this direction (a FIN); bytes written before still arrive.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        match self {
            SendHalf::Quic(send) => send.finish().map_err(|e| StreamError::Other(e.to_string())),
            SendHalf::Tcp(send, link) => {
                send.finish().map_err(|e| tcp_stream_error(&e, Some(link)))
            }
        }
    }

    /// Abandons the stream with `code`: on QUIC this direction only; on a TCP link the whole
    /// stream (HTTP/2 has no other reset).
    pub fn reset(&mut self, code: u32) {
        match self {
            SendHalf::Quic(send) => {
                let _ = send.reset(VarInt::from_u32(code));
            }
            SendHalf::Tcp(send, _) => send.reset(code),
        }
    }

    /// Waits until the peer stops reading (or resets) the stream; its code, or `None` when
    /// the stream was finished and everything in it acknowledged (QUIC only: a TCP link
    /// reports only a reset).
    pub async fn stopped(&mut self) -> Result<Option<u32>, StreamError> {
        match self {
            SendHalf::Quic(send) => match send.stopped().await {
                Ok(code) => {
                    Ok(code.map(|code| u32::try_from(code.into_inner()).unwrap_or(u32::MAX)))
                }
                Err(quinn::StoppedError::ConnectionLost(lost)) => {
                    Err(StreamError::Lost(LinkEnd::from_quic(&lost)))
                }
                Err(other) => Err(StreamError::Other(other.to_string())),
            },
            SendHalf::Tcp(send, link) => match send.stopped().await {
                Ok(code) => Ok(Some(code)),
                Err(_) => Err(StreamError::Lost(
                    link.close_reason()
                        .map(LinkEnd::from_tcp)
                        .unwrap_or_else(|| LinkEnd::Failed("the stream ended".to_owned())),
                )),
            },
        }
    }
}

/// The receiving half of a stream.
pub enum RecvHalf {
    /// On QUIC.
    Quic(quinn::RecvStream),
    /// On a TCP link.
    Tcp(TcpRecv, Arc<TcpLink>),
}

impl RecvHalf {
    /// Reads into `buf`; `None` when the peer finished the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StreamError> {
        match self {
            RecvHalf::Quic(recv) => recv.read(buf).await.map_err(StreamError::from),
            RecvHalf::Tcp(recv, link) => match tokio::io::AsyncReadExt::read(recv, buf).await {
                Ok(0) if !buf.is_empty() => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(e) => Err(tcp_stream_error(&e, Some(link))),
            },
        }
    }

    /// Reads whole chunks as the transport delivered them (no copy), filling `chunks` from
    /// the start; how many, or `None` when the peer finished the stream.
    pub async fn read_chunks(
        &mut self,
        chunks: &mut [Bytes],
    ) -> Result<Option<usize>, StreamError> {
        match self {
            RecvHalf::Quic(recv) => recv.read_chunks(chunks).await.map_err(StreamError::from),
            RecvHalf::Tcp(recv, link) => match recv.read_chunk().await {
                Ok(Some(chunk)) => match chunks.first_mut() {
                    Some(slot) => {
                        *slot = chunk;
                        Ok(Some(1))
                    }
                    None => Ok(Some(0)),
                },
                Ok(None) => Ok(None),
                Err(e) => Err(tcp_stream_error(&e, Some(link))),
            },
        }
    }

    /// Reads to the peer's FIN, refusing more than `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Some(read) = self.read(&mut chunk).await? {
            if all.len() + read > limit {
                return Err(StreamError::Other(format!(
                    "the stream carried more than {limit} bytes"
                )));
            }
            all.extend_from_slice(&chunk[..read]);
        }
        Ok(all)
    }

    /// Tells the peer to stop sending with `code` (QUIC); on a TCP link the stream is reset
    /// by its sending half instead, so this does nothing there.
    pub fn stop(&mut self, code: u32) {
        if let RecvHalf::Quic(recv) = self {
            let _ = recv.stop(VarInt::from_u32(code));
        }
    }
}

impl tokio::io::AsyncRead for RecvHalf {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RecvHalf::Quic(recv) => std::pin::Pin::new(recv).poll_read(cx, buf),
            RecvHalf::Tcp(recv, _) => std::pin::Pin::new(recv).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for SendHalf {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            SendHalf::Quic(send) => std::pin::Pin::new(send)
                .poll_write(cx, buf)
                .map_err(std::io::Error::from),
            SendHalf::Tcp(send, _) => std::pin::Pin::new(send).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            SendHalf::Quic(send) => std::pin::Pin::new(send).poll_flush(cx),
            SendHalf::Tcp(send, _) => std::pin::Pin::new(send).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            SendHalf::Quic(send) => std::pin::Pin::new(send).poll_shutdown(cx),
            SendHalf::Tcp(send, _) => std::pin::Pin::new(send).poll_shutdown(cx),
        }
    }
}
