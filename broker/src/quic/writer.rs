//! The control stream's sending side, in a task of its own.
//!
//! A client decides how much the broker may send it: flow control (QUIC's, or HTTP/2's on
//! the TCP transport) gives the broker
//! credit only as the client reads. A client that stops reading would block any task that
//! writes to it, so the connection's driver never writes: it queues messages here and goes
//! on (enforcing, serving forwards). This task writes them, each within [`WRITE_TIMEOUT`].
//! A client that leaves a message unwritten for that long, or lets [`QUEUE`] messages pile up,
//! has stopped reading: the connection is cut.

use std::sync::Arc;
use std::time::Duration;

use proto::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tunnel::frames::write_message;
use tunnel::link::SendHalf;

use super::cut::{Cut, CutOrder};
use crate::session::EndReason;

/// Messages waiting to be written before the client counts as not reading.
pub(super) const QUEUE: usize = 64;
/// How long one message may wait for the client's flow-control credit.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the driver says when it gives up on a client that does not read.
const NOT_READING: &str = "the client stopped reading the broker's messages";

/// The queue to the control stream's writer.
pub(super) struct ControlWriter {
    queue: Option<mpsc::Sender<Message>>,
    task: JoinHandle<()>,
    cut: Arc<Cut>,
}

/// Why a message was not queued.
#[derive(Debug)]
pub(super) enum Unsent {
    /// The client is not reading: the connection was cut for it.
    NotReading,
    /// The stream failed (the client reset it, or the connection is gone).
    Gone,
}

impl ControlWriter {
    /// Starts the writer on `send`; a client that stops reading is cut through `cut`.
    pub(super) fn spawn(send: SendHalf, cut: Arc<Cut>) -> ControlWriter {
        let (queue, messages) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_all(send, messages, cut.clone()));
        ControlWriter {
            queue: Some(queue),
            task,
            cut,
        }
    }

    /// Queues `message`; never waits.
    pub(super) fn send(&self, message: Message) -> Result<(), Unsent> {
        let Some(queue) = &self.queue else {
            return Err(Unsent::Gone);
        };
        match queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut
                    .cut(CutOrder::with_note(EndReason::Closed, NOT_READING));
                Err(Unsent::NotReading)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Unsent::Gone),
        }
    }

    /// Writes what is queued, finishes the stream and waits until the client has it all,
    /// for at most `within`; gives up on the rest after that.
    pub(super) async fn finish(mut self, within: Duration) {
        self.queue = None;
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

async fn write_all(mut send: SendHalf, mut messages: mpsc::Receiver<Message>, cut: Arc<Cut>) {
    while let Some(message) = messages.recv().await {
        match tokio::time::timeout(WRITE_TIMEOUT, write_message(&mut send, &message)).await {
            Ok(Ok(())) => {}
            // The client reset the stream or the connection is gone: the driver sees it on
            // the connection.
            Ok(Err(_)) => return,
            Err(_) => {
                cut.cut(CutOrder::with_note(EndReason::Closed, NOT_READING));
                return;
            }
        }
    }
    // The driver is done: the client gets everything, then the end of the stream; closing
    // the connection drops unsent data, so wait (the driver bounds this) until it has it.
    let _ = send.finish();
    let _ = send.stopped().await;
}
