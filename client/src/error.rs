//! What can go wrong for the technician, each with the one sentence the client prints.

use proto::ErrorMessage;

/// Why a session could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
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
        "The broker at {broker} did not answer ({reason}). sekisho reaches it over QUIC, which needs outgoing UDP to port {port}: check the address, that your network's firewall lets UDP to that port out, and that the hospital's broker is running.",
        port = port_of(broker)
    )]
    Unreachable {
        /// As typed.
        broker: String,
        /// What went wrong.
        reason: String,
    },
    /// The network refused UDP to the broker at once (an ICMP error: nothing listens on that
    /// port, or a firewall rejects it).
    #[error(
        "UDP to the broker at {broker} was refused ({reason}): nothing answers on UDP port {port} there, or a firewall rejects it. sekisho reaches the broker over QUIC, which needs outgoing UDP to that port; check the address with the hospital, and ask your IT to let UDP to it out.",
        port = port_of(broker)
    )]
    UdpRefused {
        /// As typed.
        broker: String,
        /// What the kernel reported.
        reason: String,
    },
    /// TCP to the broker failed (refused, unreachable, or no answer).
    #[error(
        "The broker at {broker} could not be reached over TCP ({reason}); check the address, that your network lets TCP to port {port} out, and that the hospital's broker offers TLS over TCP.",
        port = port_of(broker)
    )]
    TcpUnreachable {
        /// As typed.
        broker: String,
        /// What went wrong.
        reason: String,
    },
    /// Neither transport reached the broker.
    #[error(
        "The broker at {broker} could not be reached over QUIC or over TLS on TCP. Your network must let one of them out to the broker: UDP to port {port} (QUIC, preferred) or TCP to port {port}; ask your IT to allow it. (QUIC: {quic} TCP: {tcp})",
        port = port_of(broker)
    )]
    NoTransport {
        /// As typed.
        broker: String,
        /// What QUIC's attempt said.
        quic: String,
        /// What TCP's attempt said.
        tcp: String,
    },
    /// The HTTP proxy did not open a tunnel to the broker.
    #[error("The proxy {proxy} did not open a tunnel to the broker at {broker}: {reason}.")]
    Proxy {
        /// The proxy (no password).
        proxy: String,
        /// As typed.
        broker: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP proxy inspects TLS: it showed its own certificate, not the broker's.
    #[error(
        "The proxy {proxy} inspects TLS: it showed its own certificate instead of the broker's ({reason}). sekisho trusts only the hospital's CA; ask your IT to let {broker} through the proxy without TLS inspection."
    )]
    ProxyInspects {
        /// The proxy (no password).
        proxy: String,
        /// As typed.
        broker: String,
        /// What TLS said.
        reason: String,
    },
    /// Several addresses were given and none could be reached; each one's sentence.
    #[error("None of the hospital's brokers could be reached: {}", .0.join(" "))]
    NoneReachable(Vec<String>),
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

impl ConnectError {
    /// Whether this broker could not be reached at all (another address may do better), as
    /// opposed to a broker that answered and refused, or credentials that cannot work.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::UdpRefused { .. }
                | ConnectError::TcpUnreachable { .. }
                | ConnectError::Proxy { .. }
                | ConnectError::NoTransport { .. }
                | ConnectError::BadAddress { .. }
                | ConnectError::Connection(_)
        )
    }

    /// What to say when every address failed to answer: that address's own sentence when
    /// there was one, else each in turn.
    pub fn none_reachable(mut failures: Vec<ConnectError>) -> ConnectError {
        match failures.len() {
            1 => failures.remove(0),
            _ => ConnectError::NoneReachable(failures.iter().map(ToString::to_string).collect()),
        }
    }
}

/// The port of a `HOST:PORT` as typed, or the whole text when it has none.
fn port_of(broker: &str) -> &str {
    broker.rsplit_once(':').map_or(broker, |(_, port)| port)
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
