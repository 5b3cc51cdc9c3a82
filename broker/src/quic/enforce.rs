//! A live session's end, enforced by the broker alone.
//!
//! One task per live session, beside (not inside) the connection's driver, waits for the
//! first of: the end time, on the monotonic clock from the moment it was fixed (a later
//! setting of the wall clock moves nothing); the session ending on the record (a revocation,
//! a lockdown, a disabling, a reload, made by anyone on any broker sharing the store, as the
//! hub publishes it); a forward that could not put its events on the record; the broker
//! shutting down. Then it cuts the connection ([`Cut`]). It never awaits the peer or the
//! store, so nothing a client does, and no slow database, holds up the cut.
//!
//! A moved end time (an extension, or an approver pulling it in) arrives the same way and
//! fixes a new deadline. A record showing the session taken up on a later connection (a
//! resumption, here or on another broker) cuts this one without ending the session. Recording the end and telling the client why is the driver's part.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cut::{Cut, CutOrder};
use crate::clock::Clock;
use crate::session::{EndReason, RequestRecord, Stage};

/// What the enforcer of one session watches.
pub(super) struct Watched {
    /// The session's record as the hub publishes it.
    pub(super) record: watch::Receiver<Option<RequestRecord>>,
    /// The end time fixed when the session opened.
    pub(super) end_at: SystemTime,
    /// Which of the session's connections this is: a record carrying a later one means the
    /// session was taken up on another connection (here or on another broker).
    pub(super) attachment: u64,
    /// Cancelled when a forward's event could not be recorded.
    pub(super) store_failed: CancellationToken,
    /// Cancelled when the broker stops.
    pub(super) shutdown: CancellationToken,
}

/// Cuts `cut` at the session's end, whichever comes first; returns early if someone else
/// cut it.
pub(super) async fn enforce(cut: Arc<Cut>, clock: Arc<dyn Clock>, watched: Watched) {
    let Watched {
        mut record,
        mut end_at,
        attachment,
        store_failed,
        shutdown,
    } = watched;
    let mut deadline = clock.deadline_for(end_at);
    let mut already_cut = cut.order();
    let mut record_alive = true;
    loop {
        let order = tokio::select! {
            biased;
            _ = already_cut.changed() => return,
            () = shutdown.cancelled() => CutOrder::new(EndReason::BrokerShutdown),
            () = store_failed.cancelled() => CutOrder::new(EndReason::StoreUnavailable),
            changed = record.changed(), if record_alive => {
                if changed.is_err() {
                    // The hub let go of the channel (it never does while the session is
                    // watched); the end time still holds.
                    record_alive = false;
                    continue;
                }
                let current = record.borrow_and_update().clone();
                match current {
                    Some(RequestRecord { stage: Stage::Ended(reason), ended_by, note, .. }) => {
                        CutOrder { reason, by: ended_by, note }
                    }
                    // Later attachments only: a record read before this connection took the
                    // session up may still be published once after it.
                    Some(RequestRecord { stage: Stage::Active, attachment: later, .. })
                        if later > attachment =>
                    {
                        CutOrder::with_note(EndReason::ConnectionLost, "taken up on another connection")
                    }
                    Some(RequestRecord { stage: Stage::Active, end_at: Some(moved), .. })
                        if moved != end_at =>
                    {
                        end_at = moved;
                        deadline = clock.deadline_for(end_at);
                        continue;
                    }
                    _ => continue,
                }
            }
            () = clock.sleep_until(deadline) => CutOrder::new(EndReason::Expired),
        };
        cut.cut(order);
        return;
    }
}
