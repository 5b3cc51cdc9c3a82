//! What can go wrong for the technician, each with the one sentence the client prints.

use proto::ErrorMessage;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The certificate, key or CA files are missing or unusable.
    #[error("Your sekisho credentials cannot be used: {0}.")]
    Credentials(String),
    /// The broker address did not resolve or is malformed.
    #[error(
        "Cannot find the broker `{broker}` ({reason}); check the address the hospital gave you (HOST:PORT)."
    )]
    BadAddress {
        /// As typed.
        broker: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer from the broker.
    #[error(
        "The broker at {broker} did not answer ({reason}); check the address, your network, and that the hospital's broker is running."
    )]
    Unreachable {
        /// As typed.
        broker: String,
        /// What went wrong.
        reason: String,
    },
    /// The broker's certificate is not from the pinned CA (or not a broker certificate).
    #[error(
        "The server at {broker} is not the hospital's broker: its certificate is not signed by the broker CA you trust ({reason}). Do not continue; tell the hospital's IT."
    )]
    BrokerNotTrusted {
        /// As typed.
        broker: String,
        /// What rustls said.
        reason: String,
    },
    /// The broker refused the client certificate during the handshake.
    #[error(
        "The broker rejected your client certificate ({reason}); ask the hospital's IT for a valid one."
    )]
    CertificateRejected {
        /// The TLS alert or reason.
        reason: String,
    },
    /// The broker accepted the connection but refused the session, with its reason.
    #[error("{0}")]
    Refused(ErrorMessage),
    /// The broker broke the protocol or the connection failed in a way not covered above.
    #[error(
        "The connection to the broker failed ({0}); try again, and tell the hospital's IT if it keeps happening."
    )]
    Connection(String),
}

/// Why a forward could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The broker refused the target, with its reason (printed as it is).
    #[error("{0}")]
    Refused(ErrorMessage),
    /// The session is gone.
    #[error("The session with the broker has ended ({0}); run `sekisho connect` again.")]
    SessionEnded(String),
    /// The broker answered with something other than `Connected` or an error.
    #[error(
        "The broker answered the forward with something unexpected ({0}); tell the hospital's IT."
    )]
    Protocol(String),
}

/// Why a request, a status query, a watch or an open failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The broker refused, with its reason (printed as it is).
    #[error("{0}")]
    Refused(ErrorMessage),
    /// The connection is gone.
    #[error("{0}")]
    SessionEnded(String),
    /// The broker answered with something the protocol does not allow here.
    #[error("The broker answered with something unexpected ({0}); tell the hospital's IT.")]
    Protocol(String),
}
