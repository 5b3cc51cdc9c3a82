//! The broker's view of the store, kept fresh for the connections that need it.
//!
//! Approvals, denials, revocations, end-time changes and lockdown are written to the store by
//! whoever makes them: the admin CLI, another broker sharing the PostgreSQL database, or this
//! broker. The hub reads the live requests and the lockdown state every
//! [`POLL_INTERVAL`] and publishes each change on a `watch` channel per request, so a waiting
//! technician learns of an approval, and a live session of its revocation, well within a
//! second, whichever process made the change. The hub also expires what nobody answered or
//! opened in time (a conditional update: if an approver got there first, the approval wins),
//! and has the connection registry check that every connected technician's certificate
//! still stands (the registry's standing check in `quic::registry`), so a technician disabled or
//! reset anywhere is disconnected within a round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::Clock;
use crate::quic::registry::{Connections, check_standing};
use crate::session::{self, RequestId, RequestRecord, Stage};
use crate::store::{LockdownState, Store};

/// How often the store is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A live session past its end time by this much is ended by any broker's hub, in case the
/// broker that held it is gone.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// Per-request channels and the lockdown channel.
pub struct Hub {
    requests: Mutex<HashMap<RequestId, watch::Sender<Option<RequestRecord>>>>,
    lockdown: watch::Sender<LockdownState>,
}

impl Hub {
    /// A hub starting from the given lockdown state.
    pub fn new(lockdown: LockdownState) -> Hub {
        Hub {
            requests: Mutex::new(HashMap::new()),
            lockdown: watch::Sender::new(lockdown),
        }
    }

    fn requests(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RequestId, watch::Sender<Option<RequestRecord>>>> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows one request; the receiver sees each new version of it.
    pub fn watch(&self, record: RequestRecord) -> watch::Receiver<Option<RequestRecord>> {
        let mut requests = self.requests();
        let sender = requests
            .entry(record.id.clone())
            .or_insert_with(|| watch::Sender::new(None));
        sender.send_if_modified(|current| replace_if_changed(current, record));
        sender.subscribe()
    }

    /// Publishes a version of a request read from the store or just written.
    pub fn publish(&self, record: RequestRecord) {
        if let Some(sender) = self.requests().get(&record.id) {
            sender.send_if_modified(|current| replace_if_changed(current, record));
        }
    }

    /// The lockdown state, as it changes.
    pub fn lockdown(&self) -> watch::Receiver<LockdownState> {
        self.lockdown.subscribe()
    }

    /// Whether remote access is stopped right now.
    pub fn lockdown_active(&self) -> bool {
        self.lockdown.borrow().active
    }

    fn forget_unwatched(&self) {
        self.requests()
            .retain(|_, sender| sender.receiver_count() > 0);
    }
}

fn replace_if_changed(current: &mut Option<RequestRecord>, record: RequestRecord) -> bool {
    if current.as_ref() == Some(&record) {
        false
    } else {
        *current = Some(record);
        true
    }
}

/// Reads the store every [`POLL_INTERVAL`] until `shutdown`.
pub(crate) async fn run(
    store: Store,
    hub: Arc<Hub>,
    connections: Arc<Connections>,
    clock: Arc<dyn Clock>,
    broker_id: String,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = poll_once(&store, &hub, &connections, clock.as_ref(), &broker_id).await {
            tracing::warn!(error = %e, "cannot read the store; live state may be stale");
        }
    }
}

/// One round: expire what is due, publish every change, refresh lockdown, cut connections
/// whose certificate no longer stands.
pub(crate) async fn poll_once(
    store: &Store,
    hub: &Hub,
    connections: &Connections,
    clock: &dyn Clock,
    broker_id: &str,
) -> Result<(), crate::store::StoreError> {
    let now = clock.now();
    check_standing(store, connections, now).await?;
    let lockdown = store.lockdown().await?;
    hub.lockdown.send_if_modified(|current| {
        if *current == lockdown {
            false
        } else {
            *current = lockdown;
            true
        }
    });
    let records = store
        .live_requests(now.checked_sub(Duration::from_secs(60)).unwrap_or(now))
        .await?;
    for mut record in records {
        if let Some(reason) = session::due_expiry(&record, now) {
            // A live session is ended by the broker that holds it, at its end time (on that
            // broker's monotonic clock); the hub steps in only when that broker seems to be
            // gone, and never for a session one of this broker's connections holds.
            // A session between connections (its connection lost, `broker_id` cleared) is
            // held by nobody, so it is ended at its end time itself.
            let grace = if record.broker_id.is_none() {
                Duration::ZERO
            } else {
                ORPHAN_GRACE
            };
            let orphaned = record.stage == Stage::Active
                && record.end_at.is_some_and(|end| now >= end + grace)
                && !connections.holds_session(&record.id);
            if record.stage != Stage::Active || orphaned {
                let from = [record.stage];
                let kind = if record.stage == Stage::Active {
                    EventKind::SessionEnded
                } else {
                    EventKind::RequestExpired
                };
                let event = AuditEvent::new(now, Actor::Broker(broker_id.to_owned()), kind)
                    .request(&record.id)
                    .technician(&record.vendor, &record.technician)
                    .detail("reason", reason.as_str())
                    .detail("was", record.stage.state_word());
                if store
                    .end_request(&record.id, &from, reason, None, None, &event)
                    .await
                    .is_ok()
                {
                    tracing::info!(request = %record.id, from = record.stage.state_word(), "expired");
                }
                record = store.request(&record.id).await?;
            }
        }
        hub.publish(record);
    }
    hub.forget_unwatched();
    Ok(())
}
