//! Streams over one TCP connection (under TLS), for networks that pass no UDP: the second
//! transport beside QUIC, with the same stream semantics sekisho relies on.
//!
//! # What it gives
//!
//! A [`TcpLink`] carries any number of bidirectional streams, each with its own flow control
//! (a peer that stops reading one stream holds only that stream's window, never the others),
//! half-close per direction (FIN), a reset with an application code the reader can tell from a
//! FIN, a close of the whole link with a code and a sentence that reach the peer, and
//! keep-alives that find a peer that is gone. As with QUIC in sekisho, only the client opens
//! streams; the broker accepts them.
//!
//! # Why HTTP/2 (`h2`)
//!
//! Three multiplexers were read against those needs (their source, 2026-12):
//!
//! - **yamux** (libp2p): a reset carries no code and reads as a plain end of stream, a
//!   connection close carries neither code nor reason, there are no keep-alives, and each
//!   stream's window starts at 256 KiB and cannot be set. Ruled out.
//! - **QMux** (`qmux`, draft-ietf-quic-qmux): QUIC's stream semantics exactly, but months old,
//!   one main author, on a draft that still changes; reading it showed unread data on a dropped
//!   stream never returning connection credit, and unbounded queues of answers to a peer's pings.
//!   Worth another look when it is stable.
//! - **HTTP/2** (`h2`, under hyper, reqwest and tonic): mature and hardened against hostile
//!   peers (rapid reset, small-frame and window-update floods), tokio-native, windows set per
//!   stream and per connection, resets with any 32-bit code that the reader sees as such.
//!
//! `h2` it is. What HTTP/2 lacks is covered here: a GOAWAY from the API carries no text, so the
//! client's first stream is the link's own, on which either side sends `code` and `reason` when
//! it closes the link ([`TcpLink::close`]); a reset ends both directions of a stream (HTTP/2 has
//! no STOP_SENDING), which is what sekisho does with a forward that fails anyway. Each stream is
//! one POST whose request body carries the client's bytes and whose response body carries the
//! broker's.
//!
//! This module knows nothing of sekisho's messages; it never decides anything.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(test)]
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::{Ping, Reason};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The URI of every stream (HTTP/2 requires one; nothing reads it).
const STREAM_URI: &str = "https://sekisho.invalid/stream";
/// The largest piece one write hands to the connection at once.
const WRITE_CHUNK: usize = 256 * 1024;
/// How long a closing side waits for its close to reach the peer before it drops the
/// connection (the peer closes its side as soon as it reads it).
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// The most a close reason may hold (longer ones are cut at a character boundary).
const MAX_REASON: usize = 1024;

/// The most a link's TCP socket holds that it has not yet sent (`TCP_NOTSENT_LOWAT`).
///
/// Without it the kernel takes as much as its send buffer allows (megabytes), and a forward's
/// 64-byte answer waits behind another forward's bulk data already handed to the kernel: the
/// WAN lab measured ping-pong p50 41 → 143 ms on a 40 ms path while a bulk transfer ran
/// beside it. With it, the rest waits in HTTP/2's per-stream buffers, which interleave the
/// streams fairly, so the small answer goes out in the next frame.
pub const UNSENT_LIMIT: u32 = 64 * 1024;

/// Prepares a link's TCP socket, on either side: no Nagle delay, and at most
/// [`UNSENT_LIMIT`] bytes waiting unsent in the kernel. Neither failing matters for
/// correctness, so failures are ignored.
pub fn prepare_socket(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let _ = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(UNSENT_LIMIT);
}

/// Windows, limits and timers of a link. Both ends should use the same.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Bytes a stream may have in flight towards its reader (the stream's receive window).
    pub stream_window: u32,
    /// Bytes all streams together may have in flight towards one side.
    pub connection_window: u32,
    /// Streams open at once (the broker's limit; the client waits for room).
    pub max_streams: u32,
    /// The largest HTTP/2 DATA frame (256 KiB: fewer frames per byte than HTTP/2's 16 KiB
    /// default, measured to cost less user-space CPU; TLS cuts records of 16 KiB anyway).
    pub max_frame: u32,
    /// How often a keep-alive ping goes out.
    pub keep_alive: Duration,
    /// A link whose ping is not answered within this is gone.
    pub idle_timeout: Duration,
}

impl Default for Tuning {
    /// Windows for a gigabit at 40 ms (a bandwidth-delay product of 5 MB) on one stream, and a
    /// connection window for several such at once; QUIC's keep-alive and idle timeout.
    fn default() -> Tuning {
        Tuning {
            stream_window: 8 * 1024 * 1024,
            connection_window: 64 * 1024 * 1024,
            max_streams: 256,
            max_frame: 256 * 1024,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a link is over.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// One side closed it on purpose, with a code and a sentence.
    #[error("{}closed the link ({code}): {reason}", if *by_peer { "the peer " } else { "we " })]
    Closed {
        /// The application's code.
        code: u32,
        /// The sentence that came with it.
        reason: String,
        /// Whether the other side closed it.
        by_peer: bool,
    },
    /// The peer stopped answering keep-alives.
    #[error("the peer did not answer for {0:?}")]
    TimedOut(Duration),
    /// The connection failed (reset, a protocol error, the peer went away without a word).
    #[error("the connection failed: {0}")]
    Failed(String),
    /// TLS failed under the link: most often the broker refused the client's certificate
    /// (with TLS 1.3 the client learns it only after its side of the handshake is done).
    #[error("TLS failed: {0}")]
    Tls(rustls::Error),
}

/// A stream the peer reset, with its code: the error inside an [`io::Error`] a read or write
/// returns (kind [`io::ErrorKind::ConnectionReset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream was reset with code {0}")]
pub struct StreamReset(pub u32);

/// One TLS-over-TCP connection carrying streams.
pub struct TcpLink {
    peer: SocketAddr,
    /// Opens streams (the client's side only).
    opener: Option<Mutex<h2::client::SendRequest<Bytes>>>,
    /// Streams the client opened (the server's side only).
    accepted: Option<Mutex<mpsc::UnboundedReceiver<(TcpSend, TcpRecv)>>>,
    /// The send half of the link's own stream, where a close is said.
    control: std::sync::Mutex<Option<h2::SendStream<Bytes>>>,
    closed: watch::Sender<Option<LinkError>>,
    /// Cancelled to drop the connection.
    stop: CancellationToken,
    /// Cancelled once the connection is dropped (its task has ended).
    done: CancellationToken,
}

impl TcpLink {
    /// The client's side over `io` (a TLS stream to the broker at `peer`): the HTTP/2
    /// handshake, then the link's own stream.
    pub async fn client<IO>(io: IO, peer: SocketAddr, tuning: &Tuning) -> Result<TcpLink, LinkError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (opener, mut connection) = h2::client::Builder::new()
            .initial_window_size(tuning.stream_window)
            .initial_connection_window_size(tuning.connection_window)
            .max_frame_size(tuning.max_frame)
            .max_send_buffer_size(WRITE_CHUNK)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(failed)?;
        let ping = connection.ping_pong();
        let (closed, stop, done) = start_driver(connection, ping, tuning);
        let mut opener = opener.ready().await.map_err(failed)?;
        let (response, control) = opener.send_request(request(), false).map_err(failed)?;
        // The broker answers the link's own stream at once: waiting for it makes a refused
        // certificate (or anything else that ends the connection at the start) an error here,
        // with the connection's own reason when it has one.
        let own = match response.await {
            Ok(own) => own,
            Err(e) => {
                let mut ended = closed.subscribe();
                let why = tokio::time::timeout(CLOSE_GRACE, ended.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|why| why.clone());
                return Err(why.unwrap_or_else(|| failed(e)));
            }
        };
        let link = TcpLink {
            peer,
            opener: Some(Mutex::new(opener)),
            accepted: None,
            control: std::sync::Mutex::new(Some(control)),
            closed,
            stop,
            done,
        };
        let recv = TcpRecv::open(own.into_body());
        tokio::spawn(hear_close(recv, link.closed.clone(), link.stop.clone()));
        Ok(link)
    }

    /// The broker's side over `io` (a TLS stream from the client at `peer`): the HTTP/2
    /// handshake, then the link's own stream, which the client opens first.
    pub async fn server<IO>(io: IO, peer: SocketAddr, tuning: &Tuning) -> Result<TcpLink, LinkError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut connection = h2::server::Builder::new()
            .initial_window_size(tuning.stream_window)
            .initial_connection_window_size(tuning.connection_window)
            .max_concurrent_streams(tuning.max_streams)
            .max_frame_size(tuning.max_frame)
            .max_send_buffer_size(WRITE_CHUNK)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(failed)?;
        let ping = connection.ping_pong();
        // The link's own stream comes first.
        let (control, own) = next_stream(&mut connection)
            .await
            .map_err(failed)?
            .ok_or_else(|| LinkError::Failed("the client opened no stream".to_owned()))?;
        let (streams, accepted) = mpsc::unbounded_channel();
        // The connection makes progress only while it is asked for streams, so it is asked
        // all the time; the channel holds at most `max_streams`, the limit the client gets.
        let serve = async move {
            while let Some(stream) = next_stream(&mut connection).await? {
                // Nobody accepts any more: the link is being dropped, and its stop follows.
                let _ = streams.send(stream);
            }
            Ok(())
        };
        let (closed, stop, done) = start_driver(serve, ping, tuning);
        let link = TcpLink {
            peer,
            opener: None,
            accepted: Some(Mutex::new(accepted)),
            control: std::sync::Mutex::new(Some(control.stream)),
            closed,
            stop,
            done,
        };
        tokio::spawn(hear_close(own, link.closed.clone(), link.stop.clone()));
        Ok(link)
    }

    /// Opens a stream (the client's side). Waits while the broker's stream limit is reached.
    pub async fn open_bi(&self) -> Result<(TcpSend, TcpRecv), LinkError> {
        let Some(opener) = &self.opener else {
            return Err(LinkError::Failed(
                "only the client opens streams".to_owned(),
            ));
        };
        let mut opener = opener.lock().await;
        let ready = tokio::select! {
            ready = poll_fn(|cx| opener.poll_ready(cx)) => ready,
            gone = self.closed() => return Err(gone),
        };
        ready.map_err(|e| self.error_for(&e))?;
        let (response, send) = opener
            .send_request(request(), false)
            .map_err(|e| self.error_for(&e))?;
        Ok((TcpSend::new(send), TcpRecv::waiting(response)))
    }

    /// The next stream the client opened (the broker's side).
    pub async fn accept_bi(&self) -> Result<(TcpSend, TcpRecv), LinkError> {
        let Some(accepted) = &self.accepted else {
            return Err(LinkError::Failed(
                "only the broker accepts streams".to_owned(),
            ));
        };
        let mut accepted = accepted.lock().await;
        tokio::select! {
            stream = accepted.recv() => match stream {
                Some(stream) => Ok(stream),
                None => Err(self.closed().await),
            },
            gone = self.closed() => Err(gone),
        }
    }

    /// Closes the link: `code` and `reason` go to the peer on the link's own stream, and the
    /// connection is dropped once the peer has read them (at most half a second later).
    /// Every stream ends with it. A second close does nothing.
    pub fn close(&self, code: u32, reason: &str) {
        let ours = LinkError::Closed {
            code,
            reason: reason.to_owned(),
            by_peer: false,
        };
        if !self.closed.send_if_modified(|closed| {
            closed.is_none() && {
                *closed = Some(ours);
                true
            }
        }) {
            return;
        }
        // Taken once (only the first close gets here); a poisoned lock still holds it.
        let control = match self.control.lock() {
            Ok(mut control) => control.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(mut control) = control {
            let _ = control.send_data(close_frame(code, reason), true);
        }
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_GRACE).await;
            stop.cancel();
        });
    }

    /// Waits until the link is over, and says why.
    pub async fn closed(&self) -> LinkError {
        let mut closed = self.closed.subscribe();
        match closed.wait_for(Option::is_some).await {
            Ok(why) => why
                .clone()
                .unwrap_or_else(|| LinkError::Failed("closed".to_owned())),
            Err(_) => LinkError::Failed("the link's driver stopped".to_owned()),
        }
    }

    /// Waits until the connection itself is dropped: after a close this side said, once the
    /// peer has read it and dropped its side (or half a second later).
    pub async fn gone(&self) {
        self.done.cancelled().await;
    }

    /// Why the link is over, if it is.
    pub fn close_reason(&self) -> Option<LinkError> {
        self.closed.borrow().clone()
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.peer
    }

    /// The link's own reason when it is over, else `error` itself.
    fn error_for(&self, error: &h2::Error) -> LinkError {
        self.close_reason()
            .unwrap_or_else(|| LinkError::Failed(error.to_string()))
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        // A close said by this side drops the connection itself, once the peer has read it
        // (or half a second later); anything else goes now.
        let closing = matches!(
            *self.closed.borrow(),
            Some(LinkError::Closed { by_peer: false, .. })
        );
        if !closing {
            self.stop.cancel();
        }
    }
}

/// Starts the task that drives `connection` (see [`drive`]); returns where it says why the
/// link ended, the token that stops it, and the token it cancels once the connection is gone.
fn start_driver(
    connection: impl Future<Output = Result<(), h2::Error>> + Send + 'static,
    ping: Option<h2::PingPong>,
    tuning: &Tuning,
) -> (
    watch::Sender<Option<LinkError>>,
    CancellationToken,
    CancellationToken,
) {
    let closed = watch::Sender::new(None);
    let (stop, done) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(drive(
        connection,
        ping,
        tuning.clone(),
        closed.clone(),
        (stop.clone(), done.clone()),
    ));
    (closed, stop, done)
}

/// Runs the connection (`connection`), its keep-alives, and the stop; publishes why it ended.
async fn drive(
    connection: impl Future<Output = Result<(), h2::Error>>,
    ping: Option<h2::PingPong>,
    tuning: Tuning,
    closed: watch::Sender<Option<LinkError>>,
    (stop, done): (CancellationToken, CancellationToken),
) {
    let keep_alive = async {
        let Some(mut ping) = ping else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(tuning.keep_alive).await;
            match tokio::time::timeout(tuning.idle_timeout, ping.ping(Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return LinkError::Failed(e.to_string()),
                Err(_) => return LinkError::TimedOut(tuning.idle_timeout),
            }
        }
    };
    let why = tokio::select! {
        ended = connection => match ended {
            Ok(()) => LinkError::Failed("the peer ended the connection".to_owned()),
            Err(e) => failed(e),
        },
        gone = keep_alive => gone,
        () = stop.cancelled() => LinkError::Failed("closed".to_owned()),
    };
    // The first reason stands (a close said by either side comes before the connection ends).
    closed.send_if_modified(|closed| {
        closed.is_none() && {
            *closed = Some(why);
            true
        }
    });
    stop.cancel();
    done.cancel();
}

/// Reads the link's own stream: a close the peer says ends the link with its code and reason.
async fn hear_close(
    mut own: TcpRecv,
    closed: watch::Sender<Option<LinkError>>,
    stop: CancellationToken,
) {
    let mut said = BytesMut::new();
    let mut chunk = [0u8; 512];
    let heard = loop {
        let read = tokio::select! {
            read = tokio::io::AsyncReadExt::read(&mut own, &mut chunk) => read,
            () = stop.cancelled() => return,
        };
        match read {
            Ok(0) => break parse_close(&said),
            Ok(n) if said.len() + n <= 4 + MAX_REASON => said.extend_from_slice(&chunk[..n]),
            // Too long, or the stream failed: the connection's own end will say why.
            Ok(_) | Err(_) => return,
        }
    };
    if let Some((code, reason)) = heard {
        closed.send_if_modified(|closed| {
            closed.is_none() && {
                *closed = Some(LinkError::Closed {
                    code,
                    reason,
                    by_peer: true,
                });
                true
            }
        });
        stop.cancel();
    }
}

/// `code` (4 bytes, big-endian) then the reason in UTF-8.
fn close_frame(code: u32, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = BytesMut::with_capacity(4 + end);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&reason.as_bytes()[..end]);
    frame.freeze()
}

fn parse_close(said: &[u8]) -> Option<(u32, String)> {
    let (code, reason) = said.split_first_chunk::<4>()?;
    Some((
        u32::from_be_bytes(*code),
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

/// The next stream the client opened, its answer started so both halves are usable; `None`
/// when the connection ends cleanly. A stream the client reset before its answer started is
/// passed over.
async fn next_stream<IO>(
    connection: &mut h2::server::Connection<IO, Bytes>,
) -> Result<Option<(TcpSend, TcpRecv)>, h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(accepted) = connection.accept().await {
        let (request, mut respond) = accepted?;
        match respond.send_response(http::Response::new(()), false) {
            Ok(send) => {
                return Ok(Some((
                    TcpSend::new(send),
                    TcpRecv::open(request.into_body()),
                )));
            }
            Err(_) => continue,
        }
    }
    Ok(None)
}

fn request() -> http::Request<()> {
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(STREAM_URI);
    request
}

/// A failure of the connection: TLS's own error when TLS failed under it.
fn failed(error: h2::Error) -> LinkError {
    let tls = error
        .get_io()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(tls) => LinkError::Tls(tls.clone()),
        None => LinkError::Failed(error.to_string()),
    }
}

/// The send half of a stream: bytes written reach the peer's [`TcpRecv`] in order, as far as
/// the peer's window allows; shutting it down is a FIN.
pub struct TcpSend {
    stream: h2::SendStream<Bytes>,
    finished: bool,
}

impl TcpSend {
    fn new(stream: h2::SendStream<Bytes>) -> TcpSend {
        TcpSend {
            stream,
            finished: false,
        }
    }

    /// Sends all of `chunk` as it is (no copy), as fast as the peer's windows allow.
    pub async fn write_chunk(&mut self, mut chunk: Bytes) -> io::Result<()> {
        while !chunk.is_empty() {
            if self.finished {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let want = chunk.len().min(WRITE_CHUNK);
            let capacity = poll_fn(|cx| self.poll_room(cx, want)).await?;
            let piece = chunk.split_to(capacity.min(chunk.len()));
            self.stream.send_data(piece, false).map_err(stream_error)?;
        }
        Ok(())
    }

    /// Waits until the peer's windows let at least one byte go; how many may go now.
    /// Capacity is what the windows allow: h2 buffers without bound whatever is sent beyond
    /// it, so never more is sent.
    fn poll_room(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        while self.stream.capacity() == 0 {
            self.stream.reserve_capacity(want);
            match ready!(self.stream.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(stream_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
        Poll::Ready(Ok(self.stream.capacity()))
    }

    /// Ends the stream in this direction (a FIN); bytes written before still arrive. A second
    /// finish does nothing.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.finished = true;
            self.stream
                .send_data(Bytes::new(), true)
                .map_err(stream_error)?;
        }
        Ok(())
    }

    /// Resets the stream (both directions) with `code`; the peer's reads and writes fail with
    /// [`StreamReset`]`(code)`.
    pub fn reset(&mut self, code: u32) {
        self.finished = true;
        self.stream.send_reset(Reason::from(code));
    }

    /// Waits until the peer resets the stream; its code.
    pub async fn stopped(&mut self) -> Result<u32, LinkError> {
        poll_fn(|cx| self.stream.poll_reset(cx))
            .await
            .map(u32::from)
            .map_err(failed)
    }
}

impl AsyncWrite for TcpSend {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.finished {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let want = buf.len().min(WRITE_CHUNK);
        let n = ready!(self.poll_room(cx, want))?.min(want);
        self.stream
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(stream_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes what was sent.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish())
    }
}

/// The receive half of a stream: reads return the peer's bytes in order, then `Ok(0)` at the
/// peer's FIN, or an error carrying [`StreamReset`] if the peer reset it.
pub struct TcpRecv {
    state: RecvState,
    /// Bytes taken from the connection and not yet read.
    pending: Bytes,
}

enum RecvState {
    /// The client's half until the broker's answer starts.
    Waiting(h2::client::ResponseFuture),
    Open(h2::RecvStream),
    Done,
}

impl TcpRecv {
    fn waiting(response: h2::client::ResponseFuture) -> TcpRecv {
        TcpRecv {
            state: RecvState::Waiting(response),
            pending: Bytes::new(),
        }
    }

    fn open(body: h2::RecvStream) -> TcpRecv {
        TcpRecv {
            state: RecvState::Open(body),
            pending: Bytes::new(),
        }
    }
}

impl TcpRecv {
    /// The next piece of the stream as it arrived (no copy); `None` at the peer's FIN.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if !self.pending.is_empty() {
                return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
            }
            match &mut self.state {
                RecvState::Waiting(response) => match ready!(Pin::new(response).poll(cx)) {
                    Ok(response) => self.state = RecvState::Open(response.into_body()),
                    Err(e) => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Err(stream_error(e)));
                    }
                },
                RecvState::Open(body) => match ready!(body.poll_data(cx)) {
                    Some(Ok(data)) => {
                        // Credit goes back as the reader takes bytes, so a reader that stops
                        // holds the peer at this stream's window.
                        let _ = body.flow_control().release_capacity(data.len());
                        self.pending = data;
                    }
                    Some(Err(e)) => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Err(stream_error(e)));
                    }
                    None => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Ok(None));
                    }
                },
                RecvState::Done => return Poll::Ready(Ok(None)),
            }
        }
    }
}

impl AsyncRead for TcpRecv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.poll_chunk(cx))? {
                Some(chunk) => self.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// A stream's failure as an I/O error: a reset carries its code ([`StreamReset`]).
fn stream_error(error: h2::Error) -> io::Error {
    match error.reason() {
        Some(reason) if error.is_reset() => io::Error::new(
            io::ErrorKind::ConnectionReset,
            StreamReset(u32::from(reason)),
        ),
        _ => io::Error::other(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A client and a broker side over real TCP on loopback, through `relay` when given.
    async fn pair(tuning: &Tuning) -> (TcpLink, TcpLink) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_tuning = tuning.clone();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            TcpLink::server(tcp, peer, &server_tuning).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client = TcpLink::client(tcp, addr, tuning).await.unwrap();
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_prepared_socket_keeps_little_unsent_and_no_nagle_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        prepare_socket(&tcp);
        assert!(tcp.nodelay().unwrap());
        assert_eq!(
            socket2::SockRef::from(&tcp).tcp_notsent_lowat().unwrap(),
            UNSENT_LIMIT
        );
    }

    async fn read_all(recv: &mut TcpRecv) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        recv.read_to_end(&mut all).await?;
        Ok(all)
    }

    fn reset_code(error: &io::Error) -> Option<u32> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StreamReset>())
            .map(|reset| reset.0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_carry_bytes_both_ways_and_close_each_direction_on_its_own() {
        let (client, server) = pair(&Tuning::default()).await;
        let (mut send, mut recv) = client.open_bi().await.unwrap();
        let (mut their_send, mut their_recv) = server.accept_bi().await.unwrap();
        // 3 MiB up, then a FIN; the broker's side reads to the end and still answers.
        let up: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let writing = tokio::spawn({
            let up = up.clone();
            async move {
                send.write_all(&up).await.unwrap();
                send.shutdown().await.unwrap();
                send
            }
        });
        assert_eq!(read_all(&mut their_recv).await.unwrap(), up);
        writing.await.unwrap();
        their_send.write_all(b"answer after the FIN").await.unwrap();
        their_send.shutdown().await.unwrap();
        assert_eq!(read_all(&mut recv).await.unwrap(), b"answer after the FIN");
        // Many streams, each its own.
        let mut opened = Vec::new();
        for i in 0..20u8 {
            let (mut send, recv) = client.open_bi().await.unwrap();
            send.write_all(&[i; 1000]).await.unwrap();
            send.shutdown().await.unwrap();
            opened.push(recv);
        }
        for _ in 0..20 {
            let (mut send, mut recv) = server.accept_bi().await.unwrap();
            let got = read_all(&mut recv).await.unwrap();
            assert_eq!(got.len(), 1000);
            send.write_all(&got[..1]).await.unwrap();
            send.shutdown().await.unwrap();
        }
        for (i, mut recv) in opened.into_iter().enumerate() {
            assert_eq!(read_all(&mut recv).await.unwrap(), [i as u8]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_reaches_the_other_side_with_its_code_and_is_not_an_end_of_stream() {
        let (client, server) = pair(&Tuning::default()).await;
        let (mut send, mut recv) = client.open_bi().await.unwrap();
        send.write_all(b"hello").await.unwrap();
        let (mut their_send, mut their_recv) = server.accept_bi().await.unwrap();
        let mut hello = [0u8; 5];
        their_recv.read_exact(&mut hello).await.unwrap();
        their_send.reset(7);
        let error = read_all(&mut recv).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(reset_code(&error), Some(7));
        // The client's side learns it as a writer too.
        assert_eq!(send.stopped().await.unwrap(), 7);

        // And the other way.
        let (mut send, _recv) = client.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let (_their_send, mut their_recv) = server.accept_bi().await.unwrap();
        send.reset(42);
        let error = read_all(&mut their_recv).await.unwrap_err();
        assert_eq!(reset_code(&error), Some(42));
    }

    /// A stream whose reader stops holds only its own window: the others go on at full speed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_nobody_reads_does_not_hold_up_the_others() {
        let tuning = Tuning {
            stream_window: 256 * 1024,
            connection_window: 4 * 1024 * 1024,
            ..Tuning::default()
        };
        let (client, server) = pair(&tuning).await;
        let (mut stuck, _stuck_recv) = client.open_bi().await.unwrap();
        let (_their_stuck_send, _their_stuck_recv) = server.accept_bi().await.unwrap();
        // Writes far past the window: this task stays blocked while the reader reads nothing.
        let blocked = tokio::spawn(async move {
            stuck.write_all(&vec![0u8; 8 * 1024 * 1024]).await.unwrap();
        });
        let (mut send, _recv) = client.open_bi().await.unwrap();
        let (_their_send, mut their_recv) = server.accept_bi().await.unwrap();
        let moving = tokio::spawn(async move {
            send.write_all(&vec![1u8; 16 * 1024 * 1024]).await.unwrap();
            send.shutdown().await.unwrap();
        });
        let got = read_all(&mut their_recv).await.unwrap();
        assert_eq!(got.len(), 16 * 1024 * 1024);
        moving.await.unwrap();
        assert!(
            !blocked.is_finished(),
            "the unread stream's writer finished"
        );
        blocked.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_reaches_the_peer_with_its_code_and_sentence_and_ends_every_stream() {
        let (client, server) = pair(&Tuning::default()).await;
        let (_send, mut recv) = client.open_bi().await.unwrap();
        let (_their_send, _their_recv) = server.accept_bi().await.unwrap();
        server.close(5, "The session reached its end time.");
        assert_eq!(
            client.closed().await,
            LinkError::Closed {
                code: 5,
                reason: "The session reached its end time.".to_owned(),
                by_peer: true
            }
        );
        assert!(read_all(&mut recv).await.is_err());
        assert!(client.open_bi().await.is_err());
        assert_eq!(
            server.closed().await,
            LinkError::Closed {
                code: 5,
                reason: "The session reached its end time.".to_owned(),
                by_peer: false
            }
        );

        // The client's close reaches the broker's side the same way.
        let (client, server) = pair(&Tuning::default()).await;
        client.close(0, "closed by the technician");
        assert_eq!(
            server.closed().await,
            LinkError::Closed {
                code: 0,
                reason: "closed by the technician".to_owned(),
                by_peer: true
            }
        );
        assert!(server.accept_bi().await.is_err());
    }

    /// A TCP relay that can stop carrying bytes both ways (a network that drops everything
    /// while the connection stays open at both ends).
    async fn relay(to: SocketAddr, carrying: Arc<AtomicBool>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(to).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let one = carry(client_read, server_write, carrying.clone());
            let other = carry(server_read, client_write, carrying);
            let _ = tokio::join!(one, other);
        });
        addr
    }

    async fn carry(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        carrying: Arc<AtomicBool>,
    ) {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut chunk).await {
            if n == 0 {
                if carrying.load(Ordering::SeqCst) {
                    return;
                }
                // A network that carries nothing carries no FIN either.
                std::future::pending::<()>().await;
            }
            if carrying.load(Ordering::SeqCst) && to.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_answering_is_found_by_the_keep_alive() {
        let tuning = Tuning {
            keep_alive: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(500),
            ..Tuning::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broker = listener.local_addr().unwrap();
        let carrying = Arc::new(AtomicBool::new(true));
        let through = relay(broker, carrying.clone()).await;
        let server_tuning = tuning.clone();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            TcpLink::server(tcp, peer, &server_tuning).await.unwrap()
        });
        let client = TcpLink::client(TcpStream::connect(through).await.unwrap(), through, &tuning)
            .await
            .unwrap();
        let server = server.await.unwrap();
        let (mut send, _recv) = client.open_bi().await.unwrap();
        send.write_all(b"alive").await.unwrap();
        server.accept_bi().await.unwrap();

        carrying.store(false, Ordering::SeqCst);
        assert_eq!(
            client.closed().await,
            LinkError::TimedOut(tuning.idle_timeout)
        );
        assert_eq!(
            server.closed().await,
            LinkError::TimedOut(tuning.idle_timeout)
        );
    }
}
