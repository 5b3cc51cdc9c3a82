//! Framing: `tag u8`, `length u32` (big-endian), `body`.
//!
//! [`decode`] looks at a buffer and says what is in it: a whole message and how many bytes it
//! used, or that more bytes are needed and how many. [`FrameReader`] keeps the bytes of a
//! frame that is still arriving and tells its driver exactly how many to read next, so a driver
//! can read a forward stream's one answer frame without reading past it into the raw bytes
//! that follow.

use crate::MAX_BODY_LEN;
use crate::message::Message;

/// Bytes of the frame header: tag and body length.
pub const HEADER_LEN: usize = 5;

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a short-lived return value, never stored; boxing would allocate per frame"
)]
pub enum Decoded {
    /// A whole message, and how many bytes of the buffer it took.
    Message(Message, usize),
    /// The frame has not fully arrived; at least `needed` more bytes are required.
    Incomplete {
        /// How many more bytes the frame needs at least.
        needed: usize,
    },
}

/// Why bytes could not be read as a message. Always the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The tag names no message of this protocol version.
    #[error("unknown message tag 0x{0:02x}")]
    UnknownTag(u8),
    /// The header announces a body larger than [`MAX_BODY_LEN`].
    #[error("frame body of {0} bytes exceeds the limit of {MAX_BODY_LEN}")]
    BodyTooLong(u32),
    /// The body ended in the middle of a field.
    #[error("frame body ends inside field {0}")]
    Truncated(&'static str),
    /// A field holds a value the protocol does not define.
    #[error("field {0} holds a value this protocol version does not define")]
    InvalidValue(&'static str),
    /// A string field is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// The body has bytes after its last field.
    #[error("message with tag 0x{tag:02x} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The message's tag.
        tag: u8,
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Reads the message at the start of `buf`, if it has fully arrived.
///
/// Never panics, whatever `buf` holds.
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let tag = header[0];
    let body_len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let body_len_usize =
        usize::try_from(body_len).map_err(|_| DecodeError::BodyTooLong(body_len))?;
    if body_len_usize > MAX_BODY_LEN {
        return Err(DecodeError::BodyTooLong(body_len));
    }
    let frame_len = HEADER_LEN + body_len_usize;
    let Some(frame) = buf.get(..frame_len) else {
        return Ok(Decoded::Incomplete {
            needed: frame_len - buf.len(),
        });
    };
    let message = Message::decode_body(tag, &frame[HEADER_LEN..])?;
    Ok(Decoded::Message(message, frame_len))
}

/// Collects the bytes of frames as they arrive and hands out whole messages.
///
/// A driver asks [`wanted`](FrameReader::wanted) how many bytes to read, reads at most that
/// many, [`push`](FrameReader::push)es them and then calls [`poll_message`](FrameReader::poll_message).
/// Reading only `wanted` bytes never reads past the end of a frame. A driver that reads more
/// (on a stream made only of frames) may push any amount; the reader keeps what it has not
/// used yet.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn poll_message(&mut self) -> Result<Option<Message>, DecodeError> {
        match decode(&self.buf)? {
            Decoded::Message(message, used) => {
                self.buf.drain(..used);
                Ok(Some(message))
            }
            Decoded::Incomplete { .. } => Ok(None),
        }
    }

    /// How many bytes the frame under way still needs (the header first, then its body).
    ///
    /// Zero when a whole frame is buffered. A header announcing too long a body yields the
    /// header's length; [`poll_message`](FrameReader::poll_message) then reports the error.
    pub fn wanted(&self) -> usize {
        match decode(&self.buf) {
            Ok(Decoded::Incomplete { needed }) => needed,
            Ok(Decoded::Message(..)) | Err(_) => 0,
        }
    }

    /// Bytes held that are not yet part of a returned message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Gives back the bytes held that are not part of any returned message.
    pub fn into_remaining(self) -> Vec<u8> {
        self.buf
    }
}

/// Builds a frame body field by field.
#[derive(Default)]
pub(crate) struct BodyWriter {
    body: Vec<u8>,
}

impl BodyWriter {
    pub(crate) fn put_u8(&mut self, value: u8) {
        self.body.push(value);
    }

    pub(crate) fn put_u16(&mut self, value: u16) {
        self.body.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn put_u32(&mut self, value: u32) {
        self.body.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn put_u64(&mut self, value: u64) {
        self.body.extend_from_slice(&value.to_be_bytes());
    }

    /// Writes a `u16` count and then each string. Lists in this protocol are short (target
    /// names, approvers); the count is capped at what a `u16` can say.
    pub(crate) fn put_strs(&mut self, values: &[String]) {
        let count = values.len().min(usize::from(u16::MAX));
        self.put_u16(u16::try_from(count).unwrap_or(u16::MAX));
        for value in &values[..count] {
            self.put_str(value);
        }
    }

    /// Writes a length-prefixed string, cut at a character boundary to fit both a `u16`
    /// length and the body limit.
    pub(crate) fn put_str(&mut self, value: &str) {
        let room = MAX_BODY_LEN
            .saturating_sub(self.body.len())
            .saturating_sub(2)
            .min(usize::from(u16::MAX));
        let mut end = value.len().min(room);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let value = &value[..end];
        // `end <= u16::MAX` by construction of `room`.
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.put_u16(len);
        self.body.extend_from_slice(value.as_bytes());
    }

    pub(crate) fn finish_frame(self, tag: u8, out: &mut Vec<u8>) {
        // Strings are cut to fit the body limit. The broker bounds what goes into its
        // messages (purpose and note lengths, target counts) so the fixed-size fields after
        // the last string never push a body past it.
        let len = u32::try_from(self.body.len()).unwrap_or(u32::MAX);
        out.reserve(HEADER_LEN + self.body.len());
        out.push(tag);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// Reads a frame body field by field; every read is bounds-checked.
pub(crate) struct BodyReader<'a> {
    rest: &'a [u8],
}

impl<'a> BodyReader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> BodyReader<'a> {
        BodyReader { rest: body }
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < len {
            return Err(DecodeError::Truncated(field));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let bytes = self.take(2, field)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(4, field)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(8, field)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_be_bytes(array))
    }

    /// A `u16` count and that many strings. Each string needs at least its two length
    /// bytes, so a count larger than the body can hold fails as truncated instead of
    /// reserving memory for it.
    pub(crate) fn strings(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let count = usize::from(self.u16(field)?);
        if count * 2 > self.rest.len() {
            return Err(DecodeError::Truncated(field));
        }
        (0..count).map(|_| self.string(field)).collect()
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(field)?;
        let bytes = self.take(usize::from(len), field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8(field))
    }

    pub(crate) fn finish(self, tag: u8) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                tag,
                extra: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::ErrorCode;
    use crate::message::{
        Connect, Connected, Ended, EnrollCsr, EnrollOffer, EnrollStart, Enrolled, ErrorMessage,
        Extended, Hello, Open, Opened, RequestAccess, RequestState, RequestView, StatusDone,
        Warning, Watch, Welcome,
    };
    use proptest::prelude::*;

    fn sample_messages() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                version: 1,
                client_software: "sekisho/0.1.0".into(),
            }),
            Message::Welcome(Welcome {
                version: 1,
                vendor: "acme-ehr".into(),
                technician: "tanaka".into(),
                broker_name: "Demo General Hospital".into(),
            }),
            Message::Connect(Connect {
                target: "ehr-db".into(),
            }),
            Message::Connected(Connected),
            Message::Error(ErrorMessage::new(
                ErrorCode::TargetRefused,
                "病院側の許可がありません / not allowed",
            )),
            Message::RequestAccess(RequestAccess {
                targets: vec!["ehr-db".into(), "ehr-web".into()],
                purpose: "apply patch 5.2.1".into(),
                ticket: "INC-1234".into(),
                duration_secs: 3600,
            }),
            Message::RequestStatus(sample_view()),
            Message::Watch(Watch {
                request_id: "r-7kq3m2xa".into(),
            }),
            Message::Open(Open {
                request_id: "r-7kq3m2xa".into(),
                otp: "123456".into(),
            }),
            Message::Opened(Opened {
                request_id: "r-7kq3m2xa".into(),
                end_at: 1_800_000_000,
                targets: vec!["ehr-db".into()],
            }),
            Message::Warning(Warning { seconds_left: 600 }),
            Message::Extended(Extended {
                end_at: 1_800_003_600,
                by: "suzuki".into(),
            }),
            Message::Ended(Ended {
                reason: "expired".into(),
                message: "The session reached its end time.".into(),
            }),
            Message::StatusQuery,
            Message::StatusDone(StatusDone { count: 3 }),
            Message::EnrollStart(EnrollStart {
                version: 1,
                token: "ABCD-EFGH".into(),
            }),
            Message::EnrollOffer(EnrollOffer {
                vendor: "acme-ehr".into(),
                technician: "tanaka".into(),
                display_name: "田中 花子".into(),
                hospital: "Demo General Hospital".into(),
            }),
            Message::EnrollCsr(EnrollCsr {
                csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            }),
            Message::Enrolled(Enrolled {
                certificate_pem: "-----BEGIN CERTIFICATE-----".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----".into(),
                otpauth_uri: "otpauth://totp/x?secret=AAAA".into(),
                not_after: 1_900_000_000,
            }),
        ]
    }

    fn sample_view() -> RequestView {
        RequestView {
            id: "r-7kq3m2xa".into(),
            state: RequestState::Approved,
            targets: vec!["ehr-db".into()],
            purpose: "apply patch".into(),
            ticket: String::new(),
            wanted_secs: 3600,
            created_at: 1_799_990_000,
            answer_by: 1_799_991_800,
            approvers: vec!["suzuki".into()],
            approvals_needed: 1,
            end_at: 1_800_000_000,
            ended_at: 0,
            end_reason: String::new(),
            ended_by: String::new(),
            note: String::new(),
        }
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z0-9-]{0,40}"]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), arb_string()).prop_map(|(version, client_software)| Message::Hello(
                Hello {
                    version,
                    client_software
                }
            )),
            (any::<u16>(), arb_string(), arb_string(), arb_string()).prop_map(
                |(version, vendor, technician, broker_name)| Message::Welcome(Welcome {
                    version,
                    vendor,
                    technician,
                    broker_name
                })
            ),
            arb_string().prop_map(|target| Message::Connect(Connect { target })),
            Just(Message::Connected(Connected)),
            (any::<u16>(), arb_string()).prop_map(|(code, message)| Message::Error(ErrorMessage {
                code: ErrorCode::from_u16(code),
                message
            })),
        ]
    }

    #[test]
    fn every_message_decodes_to_itself() {
        for message in sample_messages() {
            let frame = message.to_frame();
            assert_eq!(
                decode(&frame),
                Ok(Decoded::Message(message.clone(), frame.len()))
            );
        }
    }

    #[test]
    fn every_truncation_of_a_frame_is_incomplete_with_the_exact_shortfall() {
        for message in sample_messages() {
            let frame = message.to_frame();
            for cut in 0..frame.len() {
                let needed = match decode(&frame[..cut]) {
                    Ok(Decoded::Incomplete { needed }) => needed,
                    other => panic!("{} cut at {cut}: {other:?}", message.name()),
                };
                assert!(needed >= 1 && cut + needed <= frame.len());
                if cut >= HEADER_LEN {
                    assert_eq!(cut + needed, frame.len());
                }
            }
        }
    }

    #[test]
    fn a_request_state_outside_the_protocol_is_refused() {
        let mut frame = Message::RequestStatus(sample_view()).to_frame();
        // The state byte follows the id string (2 + 10 bytes) after the 5-byte header.
        frame[HEADER_LEN + 2 + 10] = 9;
        assert_eq!(
            decode(&frame),
            Err(DecodeError::InvalidValue("RequestStatus.state"))
        );
    }

    #[test]
    fn a_list_count_larger_than_the_body_is_truncated_not_allocated() {
        let frame = [0x20, 0, 0, 0, 2, 0xff, 0xff];
        assert_eq!(
            decode(&frame),
            Err(DecodeError::Truncated("RequestAccess.targets"))
        );
    }

    #[test]
    fn an_unknown_tag_is_an_error() {
        let frame = [0x55, 0, 0, 0, 0];
        assert_eq!(decode(&frame), Err(DecodeError::UnknownTag(0x55)));
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let mut frame = vec![0x10];
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&frame), Err(DecodeError::BodyTooLong(u32::MAX)));
    }

    #[test]
    fn trailing_bytes_in_a_body_are_refused() {
        let frame = [0x11, 0, 0, 0, 1, 0xAA];
        assert_eq!(
            decode(&frame),
            Err(DecodeError::TrailingBytes {
                tag: 0x11,
                extra: 1
            })
        );
    }

    #[test]
    fn a_string_that_is_not_utf8_is_refused() {
        let frame = [0x10, 0, 0, 0, 4, 0, 2, 0xff, 0xfe];
        assert_eq!(
            decode(&frame),
            Err(DecodeError::InvalidUtf8("Connect.target"))
        );
    }

    #[test]
    fn an_overlong_string_is_cut_at_a_character_boundary_to_fit_one_frame() {
        let message = Message::Error(ErrorMessage::new(ErrorCode::Internal, "関".repeat(20_000)));
        let frame = message.to_frame();
        assert!(frame.len() <= HEADER_LEN + MAX_BODY_LEN);
        match decode(&frame) {
            Ok(Decoded::Message(Message::Error(error), used)) => {
                assert_eq!(used, frame.len());
                assert!(error.message.chars().all(|c| c == '関'));
                assert!(!error.message.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_frame_reader_never_asks_for_bytes_past_the_frame() {
        let first = Message::Connected(Connected).to_frame();
        let mut stream = first.clone();
        stream.extend_from_slice(b"raw bytes that follow the answer");
        let mut reader = FrameReader::new();
        let mut offset = 0;
        while reader.wanted() > 0 {
            let take = reader.wanted();
            reader.push(&stream[offset..offset + take]);
            offset += take;
        }
        assert_eq!(offset, first.len());
        assert_eq!(
            reader.poll_message(),
            Ok(Some(Message::Connected(Connected)))
        );
        assert_eq!(reader.buffered(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_random_bodies_behind_a_valid_header(
            tag in prop_oneof![
                Just(0x01u8), Just(0x02), Just(0x10), Just(0x11), Just(0x7f),
                0x20u8..=0x29, any::<u8>()
            ],
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut frame = vec![tag];
            frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
            frame.extend_from_slice(&body);
            match decode(&frame) {
                Ok(Decoded::Message(_, used)) => prop_assert_eq!(used, frame.len()),
                Ok(Decoded::Incomplete { .. }) => prop_assert!(false, "whole frame reported incomplete"),
                Err(_) => {}
            }
        }

        #[test]
        fn any_message_round_trips_and_every_truncation_is_incomplete(message in arb_message()) {
            let frame = message.to_frame();
            let decoded = decode(&frame);
            if let Ok(Decoded::Message(back, used)) = &decoded {
                prop_assert_eq!(*used, frame.len());
                // Strings may be cut to fit; everything else must be exact.
                if frame.len() < HEADER_LEN + MAX_BODY_LEN {
                    prop_assert_eq!(back, &message);
                }
            } else {
                prop_assert!(false, "valid frame did not decode: {:?}", decoded);
            }
            for cut in 0..frame.len() {
                let is_incomplete = matches!(decode(&frame[..cut]), Ok(Decoded::Incomplete { .. }));
                prop_assert!(is_incomplete);
            }
        }

        #[test]
        fn frames_pushed_in_arbitrary_pieces_come_out_whole(
            messages in proptest::collection::vec(arb_message(), 1..6),
            piece in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for message in &messages {
                message.encode(&mut stream);
            }
            let mut reader = FrameReader::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                reader.push(chunk);
                while let Some(message) = reader.poll_message().map_err(|e| TestCaseError::fail(e.to_string()))? {
                    out.push(message);
                }
            }
            prop_assert_eq!(out.len(), messages.len());
            prop_assert_eq!(reader.buffered(), 0);
        }
    }
}
