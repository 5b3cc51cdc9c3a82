//! `proto::decode` and `proto::FrameReader` on arbitrary bytes: what a peer can send on a
//! control or forward stream before and after it authenticates.
//!
//! Checked, beyond "never panics":
//! - a decoded message re-encodes to exactly the bytes it was decoded from, and decodes again
//!   to itself (the codec has one spelling per message);
//! - "need more bytes" is consistent: the shortfall is exact once the header is in, a prefix
//!   of an incomplete frame is incomplete, and bytes after a frame change nothing;
//! - `FrameReader` fed the same bytes in arbitrary pieces, or exactly as much as it asks for,
//!   hands out the same messages and the same error as decoding the whole buffer, and never
//!   asks for bytes past the end of a frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::codec::HEADER_LEN;
use proto::{DecodeError, Decoded, FrameReader, MAX_BODY_LEN, Message, decode};

fuzz_target!(|data: &[u8]| {
    check_decode(data);
    let expected = decode_all(data);
    check_reader_in_pieces(data, &expected);
    check_reader_reading_what_it_wants(data, &expected);
});

/// Every property of one `decode` call on `buf`.
fn check_decode(buf: &[u8]) {
    let mut longer = buf.to_vec();
    longer.extend_from_slice(&[0xA5; 7]);
    match decode(buf) {
        Ok(Decoded::Message(message, used)) => {
            assert!((HEADER_LEN..=buf.len()).contains(&used), "used {used}");
            let frame = &buf[..used];
            assert_eq!(
                message.to_frame(),
                frame,
                "{} does not re-encode to its bytes",
                message.name()
            );
            assert_eq!(decode(frame), Ok(Decoded::Message(message.clone(), used)));
            assert_eq!(decode(&longer), Ok(Decoded::Message(message, used)));
        }
        Ok(Decoded::Incomplete { needed }) => {
            assert!(needed >= 1);
            assert!(buf.len() + needed <= HEADER_LEN + MAX_BODY_LEN);
            if buf.len() < HEADER_LEN {
                assert_eq!(needed, HEADER_LEN - buf.len());
            } else {
                // The shortfall is exact: with `needed` more bytes the frame is whole.
                let mut whole = buf.to_vec();
                whole.resize(buf.len() + needed, 0);
                assert!(!matches!(decode(&whole), Ok(Decoded::Incomplete { .. })));
                let mut short = buf.to_vec();
                short.resize(buf.len() + needed - 1, 0);
                assert_eq!(
                    decode(&short),
                    Ok(Decoded::Incomplete { needed: 1 }),
                    "one byte short of the frame"
                );
            }
            // A prefix of an incomplete frame is incomplete.
            assert!(matches!(
                decode(&buf[..buf.len() / 2]),
                Ok(Decoded::Incomplete { .. })
            ));
        }
        Err(error) => {
            // An error is about this frame: more bytes after it do not change it.
            assert_eq!(decode(&longer), Err(error));
        }
    }
}

/// What the buffer holds, decoded frame after frame: the messages, then the error that
/// stopped decoding, or the bytes of a frame that has not fully arrived.
struct Expected {
    messages: Vec<Message>,
    end: Result<Vec<u8>, DecodeError>,
}

fn decode_all(buf: &[u8]) -> Expected {
    let mut messages = Vec::new();
    let mut rest = buf;
    loop {
        match decode(rest) {
            Ok(Decoded::Message(message, used)) => {
                messages.push(message);
                rest = &rest[used..];
            }
            Ok(Decoded::Incomplete { .. }) => {
                return Expected {
                    messages,
                    end: Ok(rest.to_vec()),
                };
            }
            Err(error) => {
                return Expected {
                    messages,
                    end: Err(error),
                };
            }
        }
    }
}

/// A driver on a stream made only of frames: it pushes whatever it read, in pieces of 1 to
/// 16 bytes whose sizes come from the input itself.
fn check_reader_in_pieces(data: &[u8], expected: &Expected) {
    let mut reader = FrameReader::new();
    let mut messages = Vec::new();
    let mut offset = 0;
    let mut turn = 0;
    while offset < data.len() {
        let piece = usize::from(data[turn % data.len()] % 16) + 1;
        turn += 1;
        let end = (offset + piece).min(data.len());
        reader.push(&data[offset..end]);
        offset = end;
        loop {
            match reader.poll_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(messages, expected.messages);
                    assert_eq!(Err(error), expected.end);
                    return;
                }
            }
        }
    }
    assert_eq!(messages, expected.messages);
    assert_eq!(Ok(reader.into_remaining()), expected.end);
}

/// A driver on a forward stream: it reads exactly what the reader wants, so it never reads
/// past the answer frame into the raw bytes behind it.
fn check_reader_reading_what_it_wants(data: &[u8], expected: &Expected) {
    let mut reader = FrameReader::new();
    let mut messages = Vec::new();
    let mut offset = 0;
    loop {
        let wanted = reader.wanted();
        if wanted == 0 {
            // A whole frame (or a header the decoder refuses) is buffered: polling must say so.
            match reader.poll_message() {
                Ok(Some(message)) => {
                    assert_eq!(reader.buffered(), 0, "read past the end of a frame");
                    messages.push(message);
                    continue;
                }
                Ok(None) => panic!("wanted() is 0 but no frame is whole"),
                Err(error) => {
                    assert_eq!(messages, expected.messages);
                    assert_eq!(Err(error), expected.end);
                    return;
                }
            }
        }
        // Not whole yet: polling hands out nothing and refuses nothing.
        assert_eq!(reader.poll_message(), Ok(None));
        if offset == data.len() {
            break;
        }
        let end = (offset + wanted).min(data.len());
        reader.push(&data[offset..end]);
        offset = end;
    }
    assert_eq!(messages, expected.messages);
    assert_eq!(Ok(reader.into_remaining()), expected.end);
}
