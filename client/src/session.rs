//! One connection to the broker: connect, say `Hello`, get `Welcome`; then ask for access,
//! list requests, follow one, open it as a session with a one-time password, and follow the
//! session until it ends. Forwards go through a [`Forwarder`], which any number of tasks can
//! share while the owner of the [`Session`] reads the control stream.

use std::net::SocketAddr;

use proto::{Connect, Hello, Message, Open, Opened, RequestAccess, RequestView, Watch, Welcome};
use quinn::{ConnectionError, TransportErrorCode};
use tunnel::close_code;
use tunnel::frames::{MessageReader, ReadFrameError, write_message};

use crate::config::ClientConfig;
use crate::error::{ConnectError, ControlError, ForwardError};

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
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    control_send: quinn::SendStream,
    control_recv: quinn::RecvStream,
    control_reader: MessageReader,
    welcome: Welcome,
}

/// Opens forwards on a session; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Forwarder {
    connection: quinn::Connection,
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
    /// Connects to the broker, authenticates, and waits for `Welcome`.
    pub async fn connect(config: &ClientConfig) -> Result<Session, ConnectError> {
        let broker_address = resolve(&config.broker).await?;
        let endpoint = client_endpoint(
            &config.broker,
            broker_address,
            config.quic_config()?,
            config.max_packet,
        )?;

        let handshake = async {
            let connecting = endpoint
                .connect(broker_address, proto::BROKER_SERVER_NAME)
                .map_err(|e| ConnectError::Connection(e.to_string()))?;
            let connection = connecting.await.map_err(|e| classify(&config.broker, e))?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| classify(&config.broker, e))?;
            let hello = Message::Hello(Hello {
                version: proto::PROTOCOL_VERSION,
                client_software: concat!("sekisho/", env!("CARGO_PKG_VERSION")).to_owned(),
            });
            write_message(&mut send, &hello)
                .await
                .map_err(|e| match e {
                    quinn::WriteError::ConnectionLost(e) => classify(&config.broker, e),
                    other => ConnectError::Connection(other.to_string()),
                })?;
            let mut reader = MessageReader::new();
            match reader.expect(&mut recv).await {
                Ok(Message::Welcome(welcome)) => Ok((connection, send, recv, reader, welcome)),
                Ok(Message::Error(refusal)) => Err(ConnectError::Refused(refusal)),
                Ok(other) => Err(ConnectError::Connection(format!(
                    "the broker answered Hello with {}",
                    other.name()
                ))),
                Err(ReadFrameError::Read(quinn::ReadError::ConnectionLost(e))) => {
                    Err(classify(&config.broker, e))
                }
                Err(e) => Err(ConnectError::Connection(e.to_string())),
            }
        };
        let (connection, control_send, control_recv, control_reader, welcome) =
            match tokio::time::timeout(config.connect_timeout, handshake).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(ConnectError::Unreachable {
                        broker: config.broker.clone(),
                        reason: format!("no answer within {} s", config.connect_timeout.as_secs()),
                    });
                }
            };
        Ok(Session {
            endpoint,
            connection,
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

    /// A handle for opening forwards from other tasks.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder {
            connection: self.connection.clone(),
        }
    }

    /// The underlying connection (for statistics).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    async fn send(&mut self, message: &Message) -> Result<(), ControlError> {
        write_message(&mut self.control_send, message)
            .await
            .map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => {
                    ControlError::SessionEnded(describe_end(&e).reason)
                }
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
    pub async fn open_forward(
        &self,
        target: &str,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ForwardError> {
        self.forwarder().open_forward(target).await
    }

    /// Ends the connection (and any session on it): tells the broker, and waits briefly for
    /// it to hear.
    pub async fn close(mut self) {
        let _ = self.control_send.finish();
        self.connection
            .close(close_code::SESSION_CLOSED, b"closed by the technician");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
    }
}

impl Forwarder {
    /// Opens a forward to `target` and waits for the broker's answer. On `Ok`, bytes written
    /// to the send stream reach the target and its answers arrive on the receive stream.
    pub async fn open_forward(
        &self,
        target: &str,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ForwardError> {
        let ended = |e: ConnectionError| ForwardError::SessionEnded(describe_end(&e).reason);
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(ended)?;
        let connect = Message::Connect(Connect {
            target: target.to_owned(),
        });
        write_message(&mut send, &connect)
            .await
            .map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => ended(e),
                other => ForwardError::Protocol(other.to_string()),
            })?;
        match MessageReader::new().expect(&mut recv).await {
            Ok(Message::Connected(_)) => Ok((send, recv)),
            Ok(Message::Error(refusal)) => Err(ForwardError::Refused(refusal)),
            Ok(other) => Err(ForwardError::Protocol(format!("got {}", other.name()))),
            Err(ReadFrameError::Read(quinn::ReadError::ConnectionLost(e))) => Err(ended(e)),
            Err(e) => Err(ForwardError::Protocol(e.to_string())),
        }
    }

    /// Waits until the connection ends, for whatever reason.
    pub async fn ended(&self) -> SessionEnd {
        describe_end(&self.connection.closed().await)
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
            let alert = (u64::from(close.error_code) & 0xff) as u8;
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

fn is_crypto(code: TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

fn describe_end(error: &ConnectionError) -> SessionEnd {
    let (by_technician, reason) = match error {
        ConnectionError::LocallyClosed => (true, "You closed the session.".to_owned()),
        ConnectionError::ApplicationClosed(close) if close.error_code == close_code::BROKER_SHUTDOWN => (
            false,
            "The broker shut down, so the session has ended; connect again when it is back.".to_owned(),
        ),
        ConnectionError::ApplicationClosed(close) => {
            let said = String::from_utf8_lossy(&close.reason);
            (false, said.trim_end_matches('.').to_owned() + ".")
        }
        ConnectionError::TimedOut => (
            false,
            "Contact with the broker was lost (no answer for 30 s); check your network and connect again.".to_owned(),
        ),
        other => (false, format!("The session ended: {other}.")),
    };
    SessionEnd {
        by_technician,
        reason,
    }
}
