//! The messages of the protocol and the layout of their bodies.
//!
//! Each message writes its own body field by field ([`Message::encode`]) and reads it back the
//! same way (`Message::decode_body`); nothing here depends on how Rust lays out a type.

use crate::code::ErrorCode;
use crate::codec::{BodyReader, BodyWriter, DecodeError};

/// The first frame on the control stream, from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// The client software and its version, for the broker's log (e.g. `sekisho/0.1.0`).
    pub client_software: String,
}

/// The broker's answer to [`Hello`]: who it authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version the broker will speak on this connection.
    pub version: u16,
    /// The vendor named in the client certificate.
    pub vendor: String,
    /// The technician named in the client certificate.
    pub technician: String,
    /// The hospital's name for this broker, shown to the technician.
    pub broker_name: String,
}

/// The first frame on a forward stream: which target to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The target's name as the vendor's policy names it; never an address.
    pub target: String,
}

/// The broker reached the target; raw bytes follow on this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected;

/// A refusal: a stable code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    /// What a program should act on.
    pub code: ErrorCode,
    /// What a person should read; the client prints it as it is.
    pub message: String,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Connect`].
    Connect(Connect),
    /// See [`Connected`].
    Connected(Connected),
    /// See [`ErrorMessage`].
    Error(ErrorMessage),
}

pub(crate) mod tag {
    pub(crate) const HELLO: u8 = 0x01;
    pub(crate) const WELCOME: u8 = 0x02;
    pub(crate) const CONNECT: u8 = 0x10;
    pub(crate) const CONNECTED: u8 = 0x11;
    pub(crate) const ERROR: u8 = 0x7f;
}

impl Message {
    /// The tag that starts this message's frame.
    pub fn tag(&self) -> u8 {
        match self {
            Message::Hello(_) => tag::HELLO,
            Message::Welcome(_) => tag::WELCOME,
            Message::Connect(_) => tag::CONNECT,
            Message::Connected(_) => tag::CONNECTED,
            Message::Error(_) => tag::ERROR,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Connect(_) => "Connect",
            Message::Connected(_) => "Connected",
            Message::Error(_) => "Error",
        }
    }

    /// Appends this message as one whole frame to `out`.
    ///
    /// Strings longer than a `u16` length can say, or bodies longer than
    /// [`MAX_BODY_LEN`](crate::MAX_BODY_LEN), are cut at a character boundary rather than
    /// producing a frame the peer must reject; only human-readable text can be that long.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = BodyWriter::default();
        match self {
            Message::Hello(hello) => {
                body.put_u16(hello.version);
                body.put_str(&hello.client_software);
            }
            Message::Welcome(welcome) => {
                body.put_u16(welcome.version);
                body.put_str(&welcome.vendor);
                body.put_str(&welcome.technician);
                body.put_str(&welcome.broker_name);
            }
            Message::Connect(connect) => body.put_str(&connect.target),
            Message::Connected(Connected) => {}
            Message::Error(error) => {
                body.put_u16(error.code.to_u16());
                body.put_str(&error.message);
            }
        }
        body.finish_frame(self.tag(), out);
    }

    /// The message as a standalone frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Reads the body of a frame whose tag is `tag`.
    pub(crate) fn decode_body(tag: u8, body: &[u8]) -> Result<Message, DecodeError> {
        let mut reader = BodyReader::new(body);
        let message = match tag {
            tag::HELLO => Message::Hello(Hello {
                version: reader.u16("Hello.version")?,
                client_software: reader.string("Hello.client_software")?,
            }),
            tag::WELCOME => Message::Welcome(Welcome {
                version: reader.u16("Welcome.version")?,
                vendor: reader.string("Welcome.vendor")?,
                technician: reader.string("Welcome.technician")?,
                broker_name: reader.string("Welcome.broker_name")?,
            }),
            tag::CONNECT => Message::Connect(Connect {
                target: reader.string("Connect.target")?,
            }),
            tag::CONNECTED => Message::Connected(Connected),
            tag::ERROR => Message::Error(ErrorMessage {
                code: ErrorCode::from_u16(reader.u16("Error.code")?),
                message: reader.string("Error.message")?,
            }),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        reader.finish(tag)?;
        Ok(message)
    }
}

impl From<ErrorMessage> for Message {
    fn from(error: ErrorMessage) -> Message {
        Message::Error(error)
    }
}

impl ErrorMessage {
    /// A refusal with `code` and the sentence `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorMessage {
        ErrorMessage {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
