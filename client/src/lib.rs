//! sekisho: the technician's side of remote maintenance.
//!
//! A [`Session`] is one connection to the hospital's broker (QUIC, or TLS 1.3 over TCP where
//! UDP cannot pass: [`transport`]), authenticated by the technician's client certificate, with
//! the broker's CA pinned: the client trusts no other root and checks that the broker's
//! certificate is a server certificate for [`proto::BROKER_SERVER_NAME`]. Each TCP connection
//! the technician makes to a local forward becomes one stream that names its target; the broker
//! decides, dials, and the bytes flow.
//!
//! Every failure is an error whose `Display` is one sentence that says what happened and what
//! to do next; the command line prints it as it is.
//!
//! # Layout
//!
//! - [`enroll`]: the one-time token, the broker CA checked by its fingerprint, a key pair made
//!   here and a certificate request; the certificate and TOTP secret that come back.
//! - [`files`]: the configuration directory enrollment writes and the other commands read.
//! - [`config`]: the broker address and the PEM files (CA to pin, certificate, key).
//! - [`session`]: connect, the `Hello`/`Welcome` exchange, requests, opening a session with a
//!   one-time password, the session's events, opening forwards.
//! - [`transport`]: QUIC, TLS over TCP, or both raced; the winner remembered per broker.
//! - [`proxy`]: TLS over TCP through the vendor's HTTP proxy (`CONNECT`).
//! - [`forward`]: local listeners (`-L [BIND:]PORT:TARGET`) and their accept loops.
//! - [`error`]: what can fail, and the sentence for each.

pub mod config;
pub mod enroll;
pub mod error;
pub mod files;
pub mod forward;
pub mod proxy;
pub mod session;
pub mod transport;

pub use config::ClientConfig;
pub use error::{ConnectError, ControlError, ForwardError};
pub use forward::{ForwardEvent, LocalForward};
pub use session::{Forwarder, Session, SessionEnd, SessionEvent, SessionLink};
