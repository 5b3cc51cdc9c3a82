//! What open pages follow without reloading: the pending requests, the live sessions and
//! the lockdown state, read from the store (so changes made by the CLI or another broker
//! show too) and published on a watch channel that `/events` turns into server-sent events.
//! (The webhook, which tells approvers who are not looking at a page, follows the audit log
//! instead: [`crate::webhook`].)

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{RequestFilter, Store};

/// How often the store is read.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What pages show live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Live {
    /// Pending, approved and live requests, with the state each is in.
    pub(crate) requests: BTreeSet<(String, String)>,
    /// Whether remote access is stopped.
    pub(crate) lockdown: bool,
    /// Requests waiting for an answer.
    pub(crate) pending: usize,
}

/// Reads the store and publishes [`Live`].
pub(crate) struct Watcher {
    store: Store,
    sender: watch::Sender<Live>,
}

impl Watcher {
    pub(crate) fn new(store: Store) -> (Watcher, watch::Receiver<Live>) {
        let (sender, receiver) = watch::channel(Live::default());
        (Watcher { store, sender }, receiver)
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let filter = RequestFilter {
                states: vec!["requested", "approved", "active"],
                limit: 500,
                ..RequestFilter::default()
            };
            let (records, lockdown) = match (
                self.store.requests(&filter).await,
                self.store.lockdown().await,
            ) {
                (Ok(records), Ok(lockdown)) => (records, lockdown.active),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "web UI: cannot read the store; pages may be stale");
                    continue;
                }
            };
            let live = Live {
                requests: records
                    .iter()
                    .map(|r| (r.id.as_str().to_owned(), r.stage.state_word().to_owned()))
                    .collect(),
                lockdown,
                pending: records
                    .iter()
                    .filter(|r| r.stage.state_word() == "requested")
                    .count(),
            };
            self.sender.send_if_modified(|current| {
                if *current == live {
                    false
                } else {
                    *current = live;
                    true
                }
            });
        }
    }
}
