//! Cutting a connection: the broker ends a session (or a connection) without the peer's help.
//!
//! A cut has two steps, and no peer can hold up either. At once, every forward of the
//! connection is cancelled: its target-side TCP socket is closed with a reset and its streams
//! are reset, wherever the copying stood. Then the QUIC connection is closed
//! (CONNECTION_CLOSE, with the reason's sentence): by the connection's driver as soon as it
//! has told the client why (`Ended`, best effort), and in any case by a timer [`GRACE`] after
//! the cut, on the connection's own runtime, whatever the driver is waiting for.
//!
//! Who cuts: the session's enforcer (its end time, a change on the record, a store that
//! cannot record, shutdown), the connection registry (a technician or vendor disabled, a
//! certificate revoked), the control stream's writer (a client that stopped reading), and
//! the driver (idle, a reload that no longer allows the technician's address). Only the first
//! order counts; it is the reason the client and the record are given.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tunnel::close_code;
use tunnel::link::Link;

use crate::session::EndReason;

/// How long after a cut the connection is closed at the latest: the time the client gets to
/// receive `Ended` before the close frame (which drops unsent stream data) is sent.
pub(crate) const GRACE: Duration = Duration::from_millis(500);

/// Why a connection is cut, as the client and the record are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CutOrder {
    pub(crate) reason: EndReason,
    /// Who ended it, when a person or another part of the hospital did.
    pub(crate) by: Option<String>,
    /// Their reason, or what the broker observed.
    pub(crate) note: Option<String>,
}

impl CutOrder {
    pub(crate) fn new(reason: EndReason) -> CutOrder {
        CutOrder {
            reason,
            by: None,
            note: None,
        }
    }

    pub(crate) fn with_note(reason: EndReason, note: impl Into<String>) -> CutOrder {
        CutOrder {
            reason,
            by: None,
            note: Some(note.into()),
        }
    }

    /// The sentence the technician sees.
    pub(crate) fn sentence(&self) -> String {
        self.reason
            .sentence(self.by.as_deref(), self.note.as_deref())
    }

    /// The application code of the close frame.
    pub(crate) fn close_code(&self) -> u32 {
        match self.reason {
            EndReason::BrokerShutdown => close_code::BROKER_SHUTDOWN,
            EndReason::Closed => close_code::SESSION_CLOSED,
            _ => close_code::SESSION_ENDED,
        }
    }
}

/// One connection's cut: shared by everyone who may order it.
pub(crate) struct Cut {
    connection: Link,
    forwards: CancellationToken,
    order: watch::Sender<Option<CutOrder>>,
    /// The runtime the connection's tasks run on (a data thread's), where the closing timer
    /// runs whichever thread orders the cut.
    runtime: tokio::runtime::Handle,
}

impl Cut {
    /// A cut for `connection`, made on the runtime that drives it.
    pub(crate) fn new(connection: Link) -> Arc<Cut> {
        Arc::new(Cut {
            connection,
            forwards: CancellationToken::new(),
            order: watch::Sender::new(None),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Cuts now: the forwards at once, the connection within [`GRACE`]. Returns whether this
    /// order was the first (later orders change nothing).
    pub(crate) fn cut(&self, order: CutOrder) -> bool {
        let mut first = false;
        self.order.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(order.clone());
                first = true;
            }
            first
        });
        if !first {
            return false;
        }
        tracing::info!(peer = %self.connection.remote_address(), reason = order.reason.as_str(), "cutting the connection");
        self.forwards.cancel();
        let connection = self.connection.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(GRACE).await;
            connection.close(order.close_code(), order.sentence().as_bytes());
        });
        true
    }

    /// Cancelled at the cut: each forward watches it.
    pub(crate) fn forwards(&self) -> &CancellationToken {
        &self.forwards
    }

    /// The order, once there is one.
    pub(crate) fn order(&self) -> watch::Receiver<Option<CutOrder>> {
        self.order.subscribe()
    }

    /// Closes the connection now with the cut's reason (the driver, once `Ended` went out).
    pub(crate) fn close_now(&self) {
        if let Some(order) = self.order.borrow().as_ref() {
            self.connection
                .close(order.close_code(), order.sentence().as_bytes());
        }
    }
}
