//! One connection to the broker: connect, say `Hello`, get `Welcome`; then ask for access,
//! list requests, follow one, open it as a session with a one-time password, and follow the
//! session until it ends. Forwards go through a [`Forwarder`], which any number of tasks can
//! share while the owner of the [`Session`] reads the control stream.

use std::net::SocketAddr;
use std::time::Duration;

use proto::{Connect, Hello, Message, Open, Opened, RequestAccess, RequestView, Watch, Welcome};
use quinn::{ConnectionError, TransportErrorCode};
use tokio::sync::watch;
use tunnel::close_code;
use tunnel::frames::{MessageReader, ReadFrameError, write_message};
use tunnel::link::{Link, LinkEnd, RecvHalf, SendHalf, StreamError, Transport};

use crate::config::ClientConfig;
use crate::error::{ConnectError, ControlError, ForwardError};
use crate::transport::dial;

/// TLS alerts a broker sends when it does not accept the client certificate.
const CERTIFICATE_ALERTS: [(u8, &str); 8] = [
    (42, "bad certificate"),
    (43, "unsupported certificate"),
    (44, "certificate revoked"),
    (45, "certificate expired"),
    (46, "certificate unknown"),
    (48, "unknown certificate authority"),
    (51, "certificate signature not valid"),
    (116, "certificate required"),
];

/// An open connection the broker has welcomed.
pub struct Session {
    /// The QUIC endpoint under a QUIC link (none under TCP).
    endpoint: Option<quinn::Endpoint>,
    connection: Link,
    control_send: SendHalf,
    control_recv: RecvHalf,
    control_reader: MessageReader,
    welcome: Welcome,
}

/// Opens forwards on a session; cheap to clone and share between tasks.
///
/// It follows a [`SessionLink`]: while the link has no connection (the client is
/// reconnecting), a forward waits for the next one.
#[derive(Clone)]
pub struct Forwarder {
    link: watch::Receiver<Option<Link>>,
}

/// The connection a session's forwards go over now. A client that takes its session up again
/// on a new connection after a lost one moves the link there, and every [`Forwarder`] of the
/// link follows; meanwhile new forwards wait.
pub struct SessionLink {
    connection: watch::Sender<Option<Link>>,
}

impl SessionLink {
    /// A link to `session`'s connection.
    pub fn new(session: &Session) -> SessionLink {
        SessionLink {
            connection: watch::Sender::new(Some(session.connection.clone())),
        }
    }

    /// Forwards opened from now on go over `session`'s connection.
    pub fn attach(&self, session: &Session) {
        self.connection
            .send_replace(Some(session.connection.clone()));
    }

    /// The connection is gone: new forwards wait until [`attach`](SessionLink::attach).
    pub fn detach(&self) {
        self.connection.send_replace(None);
    }

    /// A forwarder that follows this link.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder {
            link: self.connection.subscribe(),
        }
    }
}

/// How a connection ended, in a sentence for the technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Whether the technician ended it (as opposed to the broker or the network).
    pub by_technician: bool,
    /// One sentence saying why.
    pub reason: String,
}

/// What the broker pushes on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A watched request changed.
    Status(RequestView),
    /// The session ends in `seconds_left`.
    Warning {
        /// Seconds until the broker cuts the session.
        seconds_left: u32,
    },
    /// The hospital moved the end time.
    Extended {
        /// The new end, Unix seconds.
        end_at: u64,
        /// Who moved it.
        by: String,
    },
    /// The session is over (the broker closes the connection next).
    Ended {
        /// A stable word: `expired`, `revoked`, `lockdown`, …
        reason: String,
        /// The sentence to show.
        message: String,
    },
    /// The connection is gone without an `Ended` (network, broker crash).
    Lost(SessionEnd),
}

impl Session {
    /// Connects to the broker, authenticates, and waits for `Welcome`. The hospital's
    /// addresses are tried in order: one that cannot be reached passes to the next.
    pub async fn connect(config: &ClientConfig) -> Result<Session, ConnectError> {
        let mut unreachable = Vec::new();
        for broker in config.addresses() {
            match Session::connect_to(config, broker).await {
                Err(e) if e.is_unreachable() => unreachable.push(e),
                other => return other,
            }
        }
        Err(ConnectError::none_reachable(unreachable))
    }

    /// Connects to the broker at `broker`: the transport (see [`crate::transport`]), then
    /// `Hello` and `Welcome` on the control stream, all within the connect timeout.
    async fn connect_to(config: &ClientConfig, broker: &str) -> Result<Session, ConnectError> {
        let broker_address = resolve(broker).await?;
        let attempt = async {
            let dialed = dial(&config.dial()?, broker, broker_address).await?;
            let greeted = greet(&dialed.link, broker).await?;
            Ok::<_, ConnectError>((dialed, greeted))
        };
        let (dialed, (control_send, control_recv, control_reader, welcome)) =
            match tokio::time::timeout(config.connect_timeout, attempt).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(ConnectError::Unreachable {
                        broker: broker.to_owned(),
                        reason: format!("no answer within {} s", config.connect_timeout.as_secs()),
                    });
                }
            };
        Ok(Session {
            endpoint: dialed.endpoint,
            connection: dialed.link,
            control_send,
            control_recv,
            control_reader,
            welcome,
        })
    }

    /// What the broker said about us: vendor, technician, hospital.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// A handle for opening forwards from other tasks, on this connection only.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder {
            link: watch::Sender::new(Some(self.connection.clone())).subscribe(),
        }
    }

    /// The connection, on whichever transport.
    pub fn link(&self) -> &Link {
        &self.connection
    }

    /// The QUIC connection, when the session is on QUIC (for statistics).
    pub fn quic(&self) -> Option<&quinn::Connection> {
        match &self.connection {
            Link::Quic(connection) => Some(connection),
            Link::Tcp(_) => None,
        }
    }

    /// Which transport carries the session.
    pub fn transport(&self) -> Transport {
        self.connection.transport()
    }

    async fn send(&mut self, message: &Message) -> Result<(), ControlError> {
        write_message(&mut self.control_send, message)
            .await
            .map_err(|e| match e {
                StreamError::Lost(end) => ControlError::SessionEnded(describe_end(&end).reason),
                other => ControlError::Protocol(other.to_string()),
            })
    }

    async fn receive(&mut self) -> Result<Message, ControlError> {
        match self.control_reader.next(&mut self.control_recv).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) | Err(ReadFrameError::Read(_)) | Err(ReadFrameError::EndedInsideFrame) => {
                let end = describe_end(&self.connection.closed().await);
                Err(ControlError::SessionEnded(end.reason))
            }
            Err(ReadFrameError::Invalid(e)) => Err(ControlError::Protocol(e.to_string())),
        }
    }

    /// Asks the hospital for access; returns the new request.
    pub async fn request(&mut self, ask: RequestAccess) -> Result<RequestView, ControlError> {
        self.send(&Message::RequestAccess(ask)).await?;
        match self.receive().await? {
            Message::RequestStatus(view) => Ok(view),
            Message::Error(refusal) => Err(ControlError::Refused(refusal)),
            other => Err(ControlError::Protocol(format!(
                "got {} for a request",
                other.name()
            ))),
        }
    }

    /// The technician's recent requests, newest first.
    pub async fn status(&mut self) -> Result<Vec<RequestView>, ControlError> {
        self.send(&Message::StatusQuery).await?;
        let mut views = Vec::new();
        loop {
            match self.receive().await? {
                Message::RequestStatus(view) => views.push(view),
                Message::StatusDone(_) => return Ok(views),
                Message::Error(refusal) => return Err(ControlError::Refused(refusal)),
                other => {
                    return Err(ControlError::Protocol(format!(
                        "got {} in a status listing",
                        other.name()
                    )));
                }
            }
        }
    }

    /// Starts following request `id`; returns its state now. Later changes arrive as
    /// [`SessionEvent::Status`] from [`next_event`](Session::next_event).
    pub async fn watch(&mut self, id: &str) -> Result<RequestView, ControlError> {
        self.send(&Message::Watch(Watch {
            request_id: id.to_owned(),
        }))
        .await?;
        match self.receive().await? {
            Message::RequestStatus(view) => Ok(view),
            Message::Error(refusal) => Err(ControlError::Refused(refusal)),
            other => Err(ControlError::Protocol(format!(
                "got {} for a watch",
                other.name()
            ))),
        }
    }

    /// Opens approved request `id` as this connection's session, with one-time password
    /// `otp`. A refused code can be retried on the same connection.
    pub async fn open(&mut self, id: &str, otp: &str) -> Result<Opened, ControlError> {
        self.send(&Message::Open(Open {
            request_id: id.to_owned(),
            otp: otp.to_owned(),
        }))
        .await?;
        loop {
            match self.receive().await? {
                Message::Opened(opened) => return Ok(opened),
                Message::Error(refusal) => return Err(ControlError::Refused(refusal)),
                // A status push for a watched request may cross the answer; it is stale now.
                Message::RequestStatus(_) => continue,
                other => {
                    return Err(ControlError::Protocol(format!(
                        "got {} for Open",
                        other.name()
                    )));
                }
            }
        }
    }

    /// The next thing the broker pushes: a watched request's change, a warning, an
    /// extension, the end. Cancel-safe.
    pub async fn next_event(&mut self) -> SessionEvent {
        match self.receive().await {
            Ok(Message::RequestStatus(view)) => SessionEvent::Status(view),
            Ok(Message::Warning(warning)) => SessionEvent::Warning {
                seconds_left: warning.seconds_left,
            },
            Ok(Message::Extended(extended)) => SessionEvent::Extended {
                end_at: extended.end_at,
                by: extended.by,
            },
            Ok(Message::Ended(ended)) => SessionEvent::Ended {
                reason: ended.reason,
                message: ended.message,
            },
            Ok(other) => SessionEvent::Lost(SessionEnd {
                by_technician: false,
                reason: format!(
                    "The broker sent something unexpected ({}); tell the hospital's IT.",
                    other.name()
                ),
            }),
            Err(ControlError::SessionEnded(reason)) => SessionEvent::Lost(SessionEnd {
                by_technician: false,
                reason,
            }),
            Err(other) => SessionEvent::Lost(SessionEnd {
                by_technician: false,
                reason: other.to_string(),
            }),
        }
    }

    /// Opens a forward to `target` (see [`Forwarder::open_forward`]).
    pub async fn open_forward(&self, target: &str) -> Result<(SendHalf, RecvHalf), ForwardError> {
        self.forwarder().open_forward(target).await
    }

    /// Ends the connection (and any session on it): tells the broker, and waits briefly for
    /// it to hear.
    pub async fn close(mut self) {
        let _ = self.control_send.finish();
        self.connection
            .close(close_code::SESSION_CLOSED, b"closed by the technician");
        let said = async {
            match &self.endpoint {
                Some(endpoint) => endpoint.wait_idle().await,
                // The close goes out on the link's own stream; the link drops the connection
                // once the broker has it (or a moment later).
                None => self.connection.closing().await,
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), said).await;
    }
}

impl Forwarder {
    /// Opens a forward to `target` and waits for the broker's answer. On `Ok`, bytes written
    /// to the send stream reach the target and its answers arrive on the receive stream.
    pub async fn open_forward(&self, target: &str) -> Result<(SendHalf, RecvHalf), ForwardError> {
        let ended = |e: &LinkEnd| ForwardError::SessionEnded(describe_end(e).reason);
        let connection = self.connection().await?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| ended(&e))?;
        let connect = Message::Connect(Connect {
            target: target.to_owned(),
        });
        write_message(&mut send, &connect)
            .await
            .map_err(|e| match e {
                StreamError::Lost(end) => ended(&end),
                other => ForwardError::Protocol(other.to_string()),
            })?;
        match MessageReader::new().expect(&mut recv).await {
            Ok(Message::Connected(_)) => Ok((send, recv)),
            Ok(Message::Error(refusal)) => Err(ForwardError::Refused(refusal)),
            Ok(other) => Err(ForwardError::Protocol(format!("got {}", other.name()))),
            Err(ReadFrameError::Read(StreamError::Lost(end))) => Err(ended(&end)),
            Err(e) => Err(ForwardError::Protocol(e.to_string())),
        }
    }

    /// Waits until the connection forwards go over now ends, for whatever reason.
    pub async fn ended(&self) -> SessionEnd {
        match self.connection().await {
            Ok(connection) => describe_end(&connection.closed().await),
            Err(_) => SessionEnd {
                by_technician: true,
                reason: "The session is over.".to_owned(),
            },
        }
    }

    /// The connection forwards go over, waiting while the link has none.
    async fn connection(&self) -> Result<Link, ForwardError> {
        let mut link = self.link.clone();
        let current = link
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ForwardError::SessionEnded("the session is over".to_owned()))?;
        current
            .clone()
            .ok_or_else(|| ForwardError::SessionEnded("the session is over".to_owned()))
    }
}

/// Says `Hello` on a new control stream and waits for `Welcome` (or the broker's refusal).
async fn greet(
    link: &Link,
    broker: &str,
) -> Result<(SendHalf, RecvHalf, MessageReader, Welcome), ConnectError> {
    let lost = |end: LinkEnd| gone_while_greeting(link, broker, end);
    let (mut send, mut recv) = link.open_bi().await.map_err(lost)?;
    let hello = Message::Hello(Hello {
        version: proto::PROTOCOL_VERSION,
        client_software: concat!("sekisho/", env!("CARGO_PKG_VERSION")).to_owned(),
    });
    write_message(&mut send, &hello)
        .await
        .map_err(|e| match e {
            StreamError::Lost(end) => lost(end),
            other => ConnectError::Connection(other.to_string()),
        })?;
    let mut reader = MessageReader::new();
    match reader.expect(&mut recv).await {
        Ok(Message::Welcome(welcome)) => Ok((send, recv, reader, welcome)),
        Ok(Message::Error(refusal)) => Err(ConnectError::Refused(refusal)),
        Ok(other) => Err(ConnectError::Connection(format!(
            "the broker answered Hello with {}",
            other.name()
        ))),
        Err(ReadFrameError::Read(StreamError::Lost(end))) => Err(lost(end)),
        Err(e) => Err(ConnectError::Connection(e.to_string())),
    }
}

/// The connection ended before `Welcome`: on QUIC, quinn's own error says most (a refused
/// certificate arrives as a TLS alert after the client's side of the handshake); on either,
/// the broker's close sentence is its refusal.
pub(crate) fn gone_while_greeting(link: &Link, broker: &str, end: LinkEnd) -> ConnectError {
    if let Link::Quic(connection) = link
        && let Some(error) = connection.close_reason()
    {
        return classify(broker, error);
    }
    match end {
        LinkEnd::Closed {
            reason,
            by_peer: true,
            ..
        } if !reason.is_empty() => ConnectError::Refused(proto::ErrorMessage::new(
            proto::ErrorCode::Unknown(0),
            reason,
        )),
        LinkEnd::TimedOut => ConnectError::Unreachable {
            broker: broker.to_owned(),
            reason: "timed out".into(),
        },
        other => ConnectError::Connection(other.to_string()),
    }
}

/// A client endpoint on an ephemeral UDP port of the broker address's family.
pub(crate) fn client_endpoint(
    broker: &str,
    broker_address: SocketAddr,
    config: quinn::ClientConfig,
    packets: tunnel::udp::PacketSize,
) -> Result<quinn::Endpoint, ConnectError> {
    let bind: SocketAddr = if broker_address.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint =
        tunnel::udp::endpoint(bind, None, packets).map_err(|e| ConnectError::Unreachable {
            broker: broker.to_owned(),
            reason: format!("cannot open a UDP socket: {e}"),
        })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// How often the UDP probe sends while a handshake is under way.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Resolves only when the network refuses UDP to `broker` with an ICMP error (port
/// unreachable, host or network unreachable, administratively prohibited), which a connected
/// UDP socket hears as an error. It sends one-byte datagrams, which a QUIC endpoint ignores
/// (too short to be a packet); a broker that answers nothing, or a path that drops silently,
/// keeps it waiting for ever (the caller's timeout decides then).
pub(crate) async fn udp_refused(broker: SocketAddr) -> std::io::Error {
    let bind: SocketAddr = if broker.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = match tokio::net::UdpSocket::bind(bind).await {
        Ok(socket) => socket,
        // No probe possible: leave the verdict to the handshake.
        Err(_) => return std::future::pending().await,
    };
    if socket.connect(broker).await.is_err() {
        return std::future::pending().await;
    }
    let mut answer = [0u8; 64];
    loop {
        let heard = match socket.send(&[0]).await {
            Err(e) => Some(e),
            Ok(_) => match tokio::time::timeout(PROBE_EVERY, socket.recv(&mut answer)).await {
                Ok(Err(e)) => Some(e),
                // Silence, or an answer (nothing a broker sends to this): keep probing.
                Err(_) | Ok(Ok(_)) => None,
            },
        };
        if let Some(error) = heard.filter(is_refusal) {
            return error;
        }
    }
}

/// Whether a socket error is the network refusing the datagram (an ICMP error).
fn is_refusal(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::PermissionDenied
    )
}

pub(crate) async fn resolve(broker: &str) -> Result<SocketAddr, ConnectError> {
    let bad = |reason: String| ConnectError::BadAddress {
        broker: broker.to_owned(),
        reason,
    };
    let mut addresses = tokio::net::lookup_host(broker)
        .await
        .map_err(|e| bad(e.to_string()))?;
    addresses
        .next()
        .ok_or_else(|| bad("the name has no address".into()))
}

/// Turns a connection failure during connect into the sentence the technician needs.
pub(crate) fn classify(broker: &str, error: ConnectionError) -> ConnectError {
    match &error {
        // We refused the broker's certificate.
        ConnectionError::TransportError(transport) if is_crypto(transport.code) => {
            ConnectError::BrokerNotTrusted {
                broker: broker.to_owned(),
                reason: transport.reason.clone(),
            }
        }
        // The broker refused ours.
        ConnectionError::ConnectionClosed(close) if is_crypto(close.error_code) => {
            alert_refusal((u64::from(close.error_code) & 0xff) as u8)
        }
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            ConnectError::Refused(proto::ErrorMessage::new(
                proto::ErrorCode::Unknown(0),
                if reason.is_empty() {
                    "The broker closed the connection without saying why; tell the hospital's IT."
                        .to_owned()
                } else {
                    reason
                },
            ))
        }
        ConnectionError::TimedOut => ConnectError::Unreachable {
            broker: broker.to_owned(),
            reason: "timed out".into(),
        },
        _ => ConnectError::Connection(error.to_string()),
    }
}

/// The broker's TLS alert `alert` as the sentence the technician needs (either transport).
pub(crate) fn alert_refusal(alert: u8) -> ConnectError {
    match CERTIFICATE_ALERTS.iter().find(|(code, _)| *code == alert) {
        Some((_, name)) => ConnectError::CertificateRejected {
            reason: (*name).to_owned(),
        },
        None if alert == 120 => ConnectError::Connection(
            "the broker does not speak this client's protocol; install the client version the hospital gives you".into(),
        ),
        None => ConnectError::Connection(format!("TLS alert {alert}")),
    }
}

fn is_crypto(code: TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

fn describe_end(end: &LinkEnd) -> SessionEnd {
    let (by_technician, reason) = match end {
        LinkEnd::Closed { by_peer: false, .. } => (true, "You closed the session.".to_owned()),
        LinkEnd::Closed { code, .. } if *code == close_code::BROKER_SHUTDOWN => (
            false,
            "The broker shut down; connect again when it is back (a session the hospital approved stays approved until its end time).".to_owned(),
        ),
        LinkEnd::Closed { reason, .. } if !reason.is_empty() => {
            (false, reason.trim_end_matches('.').to_owned() + ".")
        }
        LinkEnd::Closed { code, .. } => (
            false,
            format!("The broker closed the connection (code {code}); connect again, and tell the hospital's IT if it keeps happening."),
        ),
        LinkEnd::TimedOut => (
            false,
            "Contact with the broker was lost (no answer in time); check your network and connect again (a session the hospital approved stays approved until its end time).".to_owned(),
        ),
        LinkEnd::Failed(why) => (false, format!("The session ended: {why}.")),
    };
    SessionEnd {
        by_technician,
        reason,
    }
}
