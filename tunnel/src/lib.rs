//! The async data path both ends of a sekisho tunnel share.
//!
//! The broker and the technician's client run the same code on a forward: read one frame
//! from a stream without reading past it, then splice the stream to a TCP connection in
//! both directions with backpressure and half-close, whichever transport carries the stream
//! (QUIC, or TLS over TCP where UDP cannot pass). Keeping it here means the hot path
//! exists once and is tuned once. The protocol itself (messages, framing) lives in `proto`,
//! which does no I/O; this crate is the I/O around it and never decides policy.
//!
//! # Layout
//!
//! - [`frames`]: read and write [`proto::Message`]s on a link's streams.
//! - [`splice`]: copy between a link's bidirectional stream and a TCP connection.
//! - [`udp`]: the UDP socket under each QUIC endpoint, with buffers sized for a tunnel.
//! - [`link`]: one connection on either transport, and its stream halves.
//! - [`tcp`]: streams over one TLS-over-TCP connection, for networks that pass no UDP.
//! - [`crypto_provider`]: the one rustls crypto provider of the workspace.

pub mod frames;
pub mod link;
pub mod splice;
pub mod tcp;
pub mod udp;

use std::sync::Arc;

/// The rustls crypto provider every TLS configuration in sekisho uses (ring).
///
/// Passed explicitly to every builder rather than installed process-wide, so a program that
/// links sekisho never depends on which provider happened to be installed first.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Application error codes used when a stream or connection is cut on purpose.
pub mod close_code {
    /// A forward's TCP side failed or was reset; the stream is reset in turn.
    pub const FORWARD_ABORTED: u32 = 1;
    /// The session ended normally (the technician closed it).
    pub const SESSION_CLOSED: u32 = 0;
    /// The broker refused the connection after the handshake (see the control stream's
    /// error frame, when it could be sent).
    pub const REFUSED: u32 = 2;
    /// The broker is shutting down.
    pub const BROKER_SHUTDOWN: u32 = 3;
    /// The peer broke the protocol.
    pub const PROTOCOL_VIOLATION: u32 = 4;
    /// The session ended on the broker's side (end time, revocation, lockdown); the reason
    /// is the close frame's text and the control stream's `Ended` message.
    pub const SESSION_ENDED: u32 = 5;
}
