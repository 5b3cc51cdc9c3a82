//! Reading and writing protocol frames on a link's streams (either transport).

use proto::{DecodeError, FrameReader, Message};

use crate::link::{RecvHalf, SendHalf, StreamError};

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The peer sent bytes that are not a valid frame.
    #[error("the peer sent an invalid frame: {0}")]
    Invalid(#[from] DecodeError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    EndedInsideFrame,
    /// The stream or its connection failed.
    #[error(transparent)]
    Read(#[from] StreamError),
}

/// Reads successive frames from one stream, keeping a partial frame between calls.
#[derive(Debug, Default)]
pub struct MessageReader {
    frames: FrameReader,
}

impl MessageReader {
    /// A reader with nothing buffered.
    pub fn new() -> MessageReader {
        MessageReader::default()
    }

    /// The next message, or `None` when the peer finished the stream at a frame boundary.
    ///
    /// Reads only as many bytes as the frame under way still needs, so the bytes after a
    /// frame stay in the stream for whoever reads next. Cancel-safe: bytes already read
    /// stay buffered in `self`.
    pub async fn next(&mut self, recv: &mut RecvHalf) -> Result<Option<Message>, ReadFrameError> {
        let mut scratch = [0u8; 1024];
        loop {
            if let Some(message) = self.frames.poll_message()? {
                return Ok(Some(message));
            }
            let wanted = self.frames.wanted().clamp(1, scratch.len());
            match recv.read(&mut scratch[..wanted]).await? {
                Some(read) => self.frames.push(&scratch[..read]),
                None if self.frames.buffered() == 0 => return Ok(None),
                None => return Err(ReadFrameError::EndedInsideFrame),
            }
        }
    }

    /// The next message; a stream that ends before one arrives is an error.
    pub async fn expect(&mut self, recv: &mut RecvHalf) -> Result<Message, ReadFrameError> {
        self.next(recv)
            .await?
            .ok_or(ReadFrameError::EndedInsideFrame)
    }
}

/// Writes one message as one frame.
pub async fn write_message(send: &mut SendHalf, message: &Message) -> Result<(), StreamError> {
    send.write_all(&message.to_frame()).await
}
