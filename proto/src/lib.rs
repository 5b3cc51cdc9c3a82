//! The sekisho wire protocol, sans-IO.
//!
//! This crate turns bytes into [`Message`]s and messages into bytes. It contains no networking
//! code, never awaits and reads no clock: the broker's and the client's drivers own the QUIC
//! streams and feed this crate what they read. Both binaries depend on it; it depends on
//! neither, so the technician's client never links the broker's store or web UI.
//!
//! # Layout
//!
//! - [`codec`]: framing (`tag`, `length`, `body`), [`decode`], [`FrameReader`].
//! - [`message`]: every message the protocol knows and its body layout.
//! - [`code`]: the stable refusal codes carried by [`ErrorMessage`].
//! - [`duration`]: durations as people write them (`1h30m`), the same on both ends.
//!
//! # The protocol
//!
//! ## Transport
//!
//! One QUIC connection per technician session, on a single UDP port of the broker.
//!
//! - ALPN [`ALPN`] (`sekisho/1`); a connection that does not negotiate it is closed.
//! - TLS 1.3 only, mutual: the broker demands a client certificate issued by its own CA and
//!   reads the technician's identity from it; the client pins the broker's CA (it trusts no
//!   other root) and checks that the broker's certificate names [`BROKER_SERVER_NAME`].
//! - No session resumption, no 0-RTT, no connection migration.
//! - Enrollment is the one exception to mutual TLS: a connection that negotiates
//!   [`ENROLL_ALPN`] (`sekisho-enroll/1`) carries no client certificate and may only enroll.
//!   The client checks the broker's CA against the fingerprint the hospital gave it (the
//!   broker sends its CA certificate after its own), and from then on pins that CA.
//!
//! ## Streams
//!
//! - **Control stream**: the first bidirectional stream the client opens. The client sends
//!   [`Hello`] (carrying [`PROTOCOL_VERSION`]); the broker answers [`Welcome`] (the identity
//!   it authenticated) or an [`ErrorMessage`] and closes. The control stream stays open for the
//!   life of the connection; closing it ends the connection and any session on it. After
//!   `Welcome` the client may, in any order:
//!   - ask for access: [`RequestAccess`] → one [`Message::RequestStatus`] (the new request) or
//!     an error;
//!   - list its requests: [`Message::StatusQuery`] → zero or more `RequestStatus`, then
//!     [`StatusDone`];
//!   - follow a request: [`Watch`] → `RequestStatus` now and again at every change, until it
//!     ends;
//!   - open an approved request as this connection's session: [`Open`] (request id and
//!     one-time password) → [`Opened`] (end time, targets) or an error (the client may try
//!     another code). At most one session per connection.
//!
//!   While a session is open the broker pushes [`Warning`] (10 and 2 minutes before the
//!   end), [`Extended`] (the hospital moved the end time) and finally [`Ended`] (why), after
//!   which it closes the connection. The broker enforces the end time itself: a client that
//!   ignores these messages is cut all the same.
//! - **Forward streams**: every TCP connection the technician makes to a local forward becomes
//!   one new bidirectional stream, allowed only while a session is open. Its first frame is
//!   [`Connect`] (a target *name* the session was approved for, never an address). The broker answers exactly one frame, [`Connected`] or [`ErrorMessage`], and
//!   only after `Connected` do raw bytes flow, both ways, until each side finishes its send
//!   half (half-close is carried through to TCP). The client sends nothing after `Connect`
//!   until the answer arrives.
//!
//! - **Enrollment** (on an [`ENROLL_ALPN`] connection, first stream): the client sends
//!   [`EnrollStart`] (the one-time token); the broker answers [`EnrollOffer`] (whom the token
//!   enrolls) or an error. The client makes its key pair and sends [`EnrollCsr`] (a
//!   certificate request for exactly that identity, signed with the new key, which never
//!   leaves the laptop); the broker answers [`Enrolled`] (certificate, CA, TOTP secret as an
//!   `otpauth://` URI) or an error, and the connection closes. The token is spent only when
//!   `Enrolled` is sent.
//!
//! ## Frames
//!
//! ```text
//! +--------+----------------------+---------------------+
//! | tag u8 | body length u32 (BE) | body (length bytes) |
//! +--------+----------------------+---------------------+
//! ```
//!
//! The body length is at most [`MAX_BODY_LEN`]. Inside a body, integers are big-endian and
//! strings are a `u16` byte length followed by that many bytes of UTF-8; a list is a `u16`
//! count followed by that many strings. A body must be
//! consumed exactly: trailing bytes are an error. Unknown tags are an error (the version in
//! `Hello` is how a peer learns what the other understands).
//!
//! | tag  | message           | direction        | body |
//! |------|-------------------|------------------|------|
//! | 0x01 | [`Hello`]         | client → broker  | version u16, client software string |
//! | 0x02 | [`Welcome`]       | broker → client  | version u16, vendor id string, technician id string, broker name string |
//! | 0x10 | [`Connect`]       | client → broker  | target name string |
//! | 0x11 | [`Connected`]     | broker → client  | (empty) |
//! | 0x20 | [`RequestAccess`] | client → broker  | targets list, purpose string, ticket string, duration u32 (seconds) |
//! | 0x21 | `RequestStatus` ([`RequestView`]) | broker → client | id, state u8 (1 requested, 2 approved, 3 active, 4 ended), targets list, purpose, ticket, wanted u32 (s), created u64 (Unix s), answer-by u64 (Unix s), approvers list, approvals needed u8, end u64 (Unix s, 0 = none), ended u64 (Unix s, 0 = not yet), end reason, ended by, note |
//! | 0x22 | [`Watch`]         | client → broker  | request id string |
//! | 0x23 | [`Open`]          | client → broker  | request id string, one-time password string |
//! | 0x24 | [`Opened`]        | broker → client  | request id string, end u64 (Unix s), targets list |
//! | 0x25 | [`Warning`]       | broker → client  | seconds left u32 |
//! | 0x26 | [`Extended`]      | broker → client  | end u64 (Unix s), by string |
//! | 0x27 | [`Ended`]         | broker → client  | reason string, message string |
//! | 0x28 | `StatusQuery`     | client → broker  | (empty) |
//! | 0x29 | [`StatusDone`]    | broker → client  | count u32 |
//! | 0x30 | [`EnrollStart`]   | client → broker  | version u16, token string |
//! | 0x31 | [`EnrollOffer`]   | broker → client  | vendor, technician, display name, hospital (strings) |
//! | 0x32 | [`EnrollCsr`]     | client → broker  | certificate request PEM string |
//! | 0x33 | [`Enrolled`]      | broker → client  | certificate PEM, CA PEM, otpauth URI (strings), not-after u64 (Unix s) |
//! | 0x7f | [`ErrorMessage`]  | either           | code u16, message string |
//!
//! The decoder never panics on any input; it reports a frame that has not fully arrived as
//! [`Decoded::Incomplete`], a value, not an error. A property test feeds it random bytes and
//! every truncation of valid frames, and the `proto_decode` fuzz target (`fuzz/` in the
//! repository) whatever libFuzzer makes of real frames.
//!
//! ## Refusals
//!
//! Every refusal is an [`ErrorMessage`]: a stable [`ErrorCode`] a program can act on and a
//! sentence a person can read, which the client prints as it is. A target the technician may
//! not reach and a target that does not exist get the same code and sentence, so a technician
//! learns nothing about which targets exist.
//!
//! # Glossary
//!
//! - **vendor**: an organisation under contract with the hospital; owns a policy file.
//! - **technician**: a person of a vendor, with a client certificate of their own.
//! - **target**: a named `host:port` inside the hospital that a vendor may be allowed to reach.
//! - **request**: a technician's ask: targets, purpose, ticket, wanted duration.
//! - **approval**: a hospital approver's yes with an end time (or no, with a reason).
//! - **session**: an approved request while it is live, on one QUIC connection; cut by the
//!   broker at its end time.
//! - **forward**: one TCP connection carried inside a session, on one QUIC stream.

pub mod code;
pub mod codec;
pub mod duration;
pub mod message;

pub use code::ErrorCode;
pub use codec::{DecodeError, Decoded, FrameReader, decode};
pub use message::{
    Connect, Connected, Ended, EnrollCsr, EnrollOffer, EnrollStart, Enrolled, ErrorMessage,
    Extended, Hello, Message, Open, Opened, RequestAccess, RequestState, RequestView, StatusDone,
    Warning, Watch, Welcome,
};

/// The ALPN protocol identifier both sides must negotiate.
pub const ALPN: &[u8] = b"sekisho/1";

/// The ALPN of an enrollment connection: no client certificate, enrollment messages only.
pub const ENROLL_ALPN: &[u8] = b"sekisho-enroll/1";

/// The protocol version this crate speaks, sent in [`Hello`] and [`Welcome`].
pub const PROTOCOL_VERSION: u16 = 1;

/// The DNS name every broker certificate carries and every client checks.
///
/// The broker's identity is its CA, which the client pins at enrollment; this fixed name is
/// what the client verifies the server certificate against, so a technician's own client
/// certificate (same CA, no such name, no server-auth usage) can never pose as the broker.
pub const BROKER_SERVER_NAME: &str = "broker.sekisho.invalid";

/// The largest frame body either side accepts, in bytes.
pub const MAX_BODY_LEN: usize = 16 * 1024;
