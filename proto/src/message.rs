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

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Waiting for the hospital's approvers.
    Requested,
    /// Approved with an end time; the technician may open it.
    Approved,
    /// Open: a live session.
    Active,
    /// Over: denied, expired, closed, revoked … (see [`RequestView::end_reason`]).
    Ended,
}

impl RequestState {
    fn to_u8(self) -> u8 {
        match self {
            RequestState::Requested => 1,
            RequestState::Approved => 2,
            RequestState::Active => 3,
            RequestState::Ended => 4,
        }
    }

    fn from_u8(value: u8) -> Option<RequestState> {
        match value {
            1 => Some(RequestState::Requested),
            2 => Some(RequestState::Approved),
            3 => Some(RequestState::Active),
            4 => Some(RequestState::Ended),
            _ => None,
        }
    }

    /// The word used in listings and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Requested => "requested",
            RequestState::Approved => "approved",
            RequestState::Active => "active",
            RequestState::Ended => "ended",
        }
    }
}

/// A request as the technician may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// The request's id, e.g. `r-7kq3m2xa`.
    pub id: String,
    /// Where it is in its life.
    pub state: RequestState,
    /// The target names asked for.
    pub targets: Vec<String>,
    /// Why, in the technician's words.
    pub purpose: String,
    /// The technician's ticket reference (may be empty).
    pub ticket: String,
    /// How long the technician asked for, in seconds.
    pub wanted_secs: u32,
    /// When it was made, Unix seconds.
    pub created_at: u64,
    /// When it expires if nobody answers, Unix seconds.
    pub answer_by: u64,
    /// The approvers who said yes so far.
    pub approvers: Vec<String>,
    /// How many distinct approvers the policy requires.
    pub approvals_needed: u8,
    /// The end time once approved, Unix seconds; 0 before.
    pub end_at: u64,
    /// When it ended, Unix seconds; 0 while it has not.
    pub ended_at: u64,
    /// Once ended, why: `denied`, `expired`, `closed`, `revoked`, `lockdown`, `idle`,
    /// `technician-disabled`, `broker-shutdown`; empty before.
    pub end_reason: String,
    /// Who decided the end (the approver who denied or revoked), if a person did.
    pub ended_by: String,
    /// The reason a person gave (for a denial or a revocation).
    pub note: String,
}

/// Asks the hospital for a session (control stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAccess {
    /// Target names from the vendor's policy.
    pub targets: Vec<String>,
    /// What the work is.
    pub purpose: String,
    /// A ticket or incident reference, possibly empty.
    pub ticket: String,
    /// How long the work needs, in seconds.
    pub duration_secs: u32,
}

/// Follow one request: the broker answers with its [`RequestView`] now and again whenever
/// it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The request to follow.
    pub request_id: String,
}

/// Opens an approved request as this connection's session, proving the technician with a
/// one-time password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The approved request.
    pub request_id: String,
    /// The six-digit code from the technician's authenticator.
    pub otp: String,
}

/// The session is open; forwards may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The request that became this session.
    pub request_id: String,
    /// When the broker will cut the session, Unix seconds.
    pub end_at: u64,
    /// The targets this session may reach.
    pub targets: Vec<String>,
}

/// The session ends soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warning {
    /// Seconds until the broker cuts the session.
    pub seconds_left: u32,
}

/// The hospital moved the session's end time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extended {
    /// The new end time, Unix seconds.
    pub end_at: u64,
    /// Who changed it.
    pub by: String,
}

/// The session is over; the broker closes the connection after this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// A stable word: `expired`, `revoked`, `lockdown`, `broker-shutdown`, …
    pub reason: String,
    /// A sentence for the technician.
    pub message: String,
}

/// After a status query: how many [`RequestView`]s were sent before this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusDone {
    /// The number of `RequestStatus` frames that answered the query.
    pub count: u32,
}

/// Enrollment, first frame (on a connection that negotiated [`crate::ENROLL_ALPN`], which
/// carries no client certificate): the one-time token the hospital gave the technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollStart {
    /// The protocol version the client speaks.
    pub version: u16,
    /// The enrollment token, as the technician typed it.
    pub token: String,
}

/// Enrollment: the token is good; this is who it enrolls. The client makes its key pair and a
/// certificate request for exactly this identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollOffer {
    /// The vendor the token was made for.
    pub vendor: String,
    /// The technician the token was made for.
    pub technician: String,
    /// The technician's full name, as the hospital typed it.
    pub display_name: String,
    /// The hospital's name.
    pub hospital: String,
}

/// Enrollment: a PKCS#10 certificate request (PEM) for the offered identity. The private key
/// never travels; this request is signed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollCsr {
    /// `-----BEGIN CERTIFICATE REQUEST-----` …
    pub csr_pem: String,
}

/// Enrollment done: the certificate, the CA to pin, and the TOTP secret shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The client certificate, PEM.
    pub certificate_pem: String,
    /// The broker's CA, PEM: the only root the client trusts from now on.
    pub ca_pem: String,
    /// `otpauth://totp/…`: the technician's one-time-password secret, never sent again.
    pub otpauth_uri: String,
    /// When the certificate expires, Unix seconds.
    pub not_after: u64,
}

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
    /// See [`RequestAccess`].
    RequestAccess(RequestAccess),
    /// One request's state; see [`RequestView`].
    RequestStatus(RequestView),
    /// See [`Watch`].
    Watch(Watch),
    /// See [`Open`].
    Open(Open),
    /// See [`Opened`].
    Opened(Opened),
    /// See [`Warning`].
    Warning(Warning),
    /// See [`Extended`].
    Extended(Extended),
    /// See [`Ended`].
    Ended(Ended),
    /// Lists the technician's recent requests: answered by `RequestStatus` frames and then
    /// [`StatusDone`].
    StatusQuery,
    /// See [`StatusDone`].
    StatusDone(StatusDone),
    /// See [`EnrollStart`].
    EnrollStart(EnrollStart),
    /// See [`EnrollOffer`].
    EnrollOffer(EnrollOffer),
    /// See [`EnrollCsr`].
    EnrollCsr(EnrollCsr),
    /// See [`Enrolled`].
    Enrolled(Enrolled),
    /// See [`ErrorMessage`].
    Error(ErrorMessage),
}

pub(crate) mod tag {
    pub(crate) const HELLO: u8 = 0x01;
    pub(crate) const WELCOME: u8 = 0x02;
    pub(crate) const CONNECT: u8 = 0x10;
    pub(crate) const CONNECTED: u8 = 0x11;
    pub(crate) const REQUEST_ACCESS: u8 = 0x20;
    pub(crate) const REQUEST_STATUS: u8 = 0x21;
    pub(crate) const WATCH: u8 = 0x22;
    pub(crate) const OPEN: u8 = 0x23;
    pub(crate) const OPENED: u8 = 0x24;
    pub(crate) const WARNING: u8 = 0x25;
    pub(crate) const EXTENDED: u8 = 0x26;
    pub(crate) const ENDED: u8 = 0x27;
    pub(crate) const STATUS_QUERY: u8 = 0x28;
    pub(crate) const STATUS_DONE: u8 = 0x29;
    pub(crate) const ENROLL_START: u8 = 0x30;
    pub(crate) const ENROLL_OFFER: u8 = 0x31;
    pub(crate) const ENROLL_CSR: u8 = 0x32;
    pub(crate) const ENROLLED: u8 = 0x33;
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
            Message::RequestAccess(_) => tag::REQUEST_ACCESS,
            Message::RequestStatus(_) => tag::REQUEST_STATUS,
            Message::Watch(_) => tag::WATCH,
            Message::Open(_) => tag::OPEN,
            Message::Opened(_) => tag::OPENED,
            Message::Warning(_) => tag::WARNING,
            Message::Extended(_) => tag::EXTENDED,
            Message::Ended(_) => tag::ENDED,
            Message::StatusQuery => tag::STATUS_QUERY,
            Message::StatusDone(_) => tag::STATUS_DONE,
            Message::EnrollStart(_) => tag::ENROLL_START,
            Message::EnrollOffer(_) => tag::ENROLL_OFFER,
            Message::EnrollCsr(_) => tag::ENROLL_CSR,
            Message::Enrolled(_) => tag::ENROLLED,
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
            Message::RequestAccess(_) => "RequestAccess",
            Message::RequestStatus(_) => "RequestStatus",
            Message::Watch(_) => "Watch",
            Message::Open(_) => "Open",
            Message::Opened(_) => "Opened",
            Message::Warning(_) => "Warning",
            Message::Extended(_) => "Extended",
            Message::Ended(_) => "Ended",
            Message::StatusQuery => "StatusQuery",
            Message::StatusDone(_) => "StatusDone",
            Message::EnrollStart(_) => "EnrollStart",
            Message::EnrollOffer(_) => "EnrollOffer",
            Message::EnrollCsr(_) => "EnrollCsr",
            Message::Enrolled(_) => "Enrolled",
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
            Message::Connected(Connected) | Message::StatusQuery => {}
            Message::RequestAccess(request) => {
                body.put_strs(&request.targets);
                body.put_str(&request.purpose);
                body.put_str(&request.ticket);
                body.put_u32(request.duration_secs);
            }
            Message::RequestStatus(view) => {
                body.put_str(&view.id);
                body.put_u8(view.state.to_u8());
                body.put_strs(&view.targets);
                body.put_str(&view.purpose);
                body.put_str(&view.ticket);
                body.put_u32(view.wanted_secs);
                body.put_u64(view.created_at);
                body.put_u64(view.answer_by);
                body.put_strs(&view.approvers);
                body.put_u8(view.approvals_needed);
                body.put_u64(view.end_at);
                body.put_u64(view.ended_at);
                body.put_str(&view.end_reason);
                body.put_str(&view.ended_by);
                body.put_str(&view.note);
            }
            Message::Watch(watch) => body.put_str(&watch.request_id),
            Message::Open(open) => {
                body.put_str(&open.request_id);
                body.put_str(&open.otp);
            }
            Message::Opened(opened) => {
                body.put_str(&opened.request_id);
                body.put_u64(opened.end_at);
                body.put_strs(&opened.targets);
            }
            Message::Warning(warning) => body.put_u32(warning.seconds_left),
            Message::Extended(extended) => {
                body.put_u64(extended.end_at);
                body.put_str(&extended.by);
            }
            Message::Ended(ended) => {
                body.put_str(&ended.reason);
                body.put_str(&ended.message);
            }
            Message::StatusDone(done) => body.put_u32(done.count),
            Message::EnrollStart(start) => {
                body.put_u16(start.version);
                body.put_str(&start.token);
            }
            Message::EnrollOffer(offer) => {
                body.put_str(&offer.vendor);
                body.put_str(&offer.technician);
                body.put_str(&offer.display_name);
                body.put_str(&offer.hospital);
            }
            Message::EnrollCsr(csr) => body.put_str(&csr.csr_pem),
            Message::Enrolled(enrolled) => {
                body.put_str(&enrolled.certificate_pem);
                body.put_str(&enrolled.ca_pem);
                body.put_str(&enrolled.otpauth_uri);
                body.put_u64(enrolled.not_after);
            }
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
            tag::REQUEST_ACCESS => Message::RequestAccess(RequestAccess {
                targets: reader.strings("RequestAccess.targets")?,
                purpose: reader.string("RequestAccess.purpose")?,
                ticket: reader.string("RequestAccess.ticket")?,
                duration_secs: reader.u32("RequestAccess.duration_secs")?,
            }),
            tag::REQUEST_STATUS => Message::RequestStatus(RequestView {
                id: reader.string("RequestStatus.id")?,
                state: RequestState::from_u8(reader.u8("RequestStatus.state")?)
                    .ok_or(DecodeError::InvalidValue("RequestStatus.state"))?,
                targets: reader.strings("RequestStatus.targets")?,
                purpose: reader.string("RequestStatus.purpose")?,
                ticket: reader.string("RequestStatus.ticket")?,
                wanted_secs: reader.u32("RequestStatus.wanted_secs")?,
                created_at: reader.u64("RequestStatus.created_at")?,
                answer_by: reader.u64("RequestStatus.answer_by")?,
                approvers: reader.strings("RequestStatus.approvers")?,
                approvals_needed: reader.u8("RequestStatus.approvals_needed")?,
                end_at: reader.u64("RequestStatus.end_at")?,
                ended_at: reader.u64("RequestStatus.ended_at")?,
                end_reason: reader.string("RequestStatus.end_reason")?,
                ended_by: reader.string("RequestStatus.ended_by")?,
                note: reader.string("RequestStatus.note")?,
            }),
            tag::WATCH => Message::Watch(Watch {
                request_id: reader.string("Watch.request_id")?,
            }),
            tag::OPEN => Message::Open(Open {
                request_id: reader.string("Open.request_id")?,
                otp: reader.string("Open.otp")?,
            }),
            tag::OPENED => Message::Opened(Opened {
                request_id: reader.string("Opened.request_id")?,
                end_at: reader.u64("Opened.end_at")?,
                targets: reader.strings("Opened.targets")?,
            }),
            tag::WARNING => Message::Warning(Warning {
                seconds_left: reader.u32("Warning.seconds_left")?,
            }),
            tag::EXTENDED => Message::Extended(Extended {
                end_at: reader.u64("Extended.end_at")?,
                by: reader.string("Extended.by")?,
            }),
            tag::ENDED => Message::Ended(Ended {
                reason: reader.string("Ended.reason")?,
                message: reader.string("Ended.message")?,
            }),
            tag::STATUS_QUERY => Message::StatusQuery,
            tag::STATUS_DONE => Message::StatusDone(StatusDone {
                count: reader.u32("StatusDone.count")?,
            }),
            tag::ENROLL_START => Message::EnrollStart(EnrollStart {
                version: reader.u16("EnrollStart.version")?,
                token: reader.string("EnrollStart.token")?,
            }),
            tag::ENROLL_OFFER => Message::EnrollOffer(EnrollOffer {
                vendor: reader.string("EnrollOffer.vendor")?,
                technician: reader.string("EnrollOffer.technician")?,
                display_name: reader.string("EnrollOffer.display_name")?,
                hospital: reader.string("EnrollOffer.hospital")?,
            }),
            tag::ENROLL_CSR => Message::EnrollCsr(EnrollCsr {
                csr_pem: reader.string("EnrollCsr.csr_pem")?,
            }),
            tag::ENROLLED => Message::Enrolled(Enrolled {
                certificate_pem: reader.string("Enrolled.certificate_pem")?,
                ca_pem: reader.string("Enrolled.ca_pem")?,
                otpauth_uri: reader.string("Enrolled.otpauth_uri")?,
                not_after: reader.u64("Enrolled.not_after")?,
            }),
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
