//! What open pages follow without reloading: the pending requests, the live sessions and
//! the lockdown state, read from the store (so changes made by the CLI or another broker
//! show too) and published on a watch channel that `/events` turns into server-sent events.
//! (The webhook, which tells approvers who are not looking at a page, follows the audit log
//! instead: [`crate::webhook`].)
//!
//! A stream lives no longer than the browser session it was opened in: it ends at logout,
//! when the session passes its idle limit or its absolute lifetime, when the account is
//! disabled, and when its roles change. It looks at the session again whenever this server
//! ends or changes one (at once), when the session's deadline comes on the broker's clock,
//! and every [`RECHECK_INTERVAL`] (for changes made by the CLI or another broker). Looking
//! does not count as use: an open page alone does not keep a session alive. One session may
//! have [`MAX_STREAMS_PER_SESSION`] streams open (one per open page); a further one is
//! refused (429) and the ones open go on, so a page opened last shows without live updates
//! rather than cutting off one the person is watching.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::auth::Ctx;
use super::{AppState, MAX_STREAMS_PER_SESSION};
use crate::staff::{Roles, token_hash};
use crate::store::{RequestFilter, Store};

/// How often the store is read.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often a stream looks at its session again when nothing told it to.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Live-update streams open per browser session (keyed by the session id's hash).
#[derive(Debug, Default)]
pub(crate) struct StreamCounts(Mutex<HashMap<String, usize>>);

impl StreamCounts {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open stream's place in [`StreamCounts`], given back when the stream is dropped.
struct StreamSlot {
    state: Arc<AppState>,
    key: String,
}

impl StreamSlot {
    fn take(state: &Arc<AppState>, key: String) -> Option<StreamSlot> {
        let mut counts = state.streams.counts();
        let open = counts.entry(key.clone()).or_insert(0);
        if *open >= MAX_STREAMS_PER_SESSION {
            return None;
        }
        *open += 1;
        drop(counts);
        Some(StreamSlot {
            state: state.clone(),
            key,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.state.streams.counts();
        if let Some(open) = counts.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What a stream carries between events.
struct Follow {
    state: Arc<AppState>,
    cookie: String,
    roles: Roles,
    live: watch::Receiver<Live>,
    sessions: watch::Receiver<u64>,
    first: bool,
    _slot: StreamSlot,
}

impl Follow {
    /// Whether the session is still what the stream was opened in: not over, same roles.
    async fn still_valid(&self) -> bool {
        match self.state.staff.peek_session(&self.cookie).await {
            Ok(Some(member)) => member.roles == self.roles,
            Ok(None) => false,
            Err(e) => {
                // The store cannot say: end the stream (the page reconnects and is asked to
                // log in if it must).
                tracing::warn!(error = %e, "web UI: cannot check a live-update stream's session");
                false
            }
        }
    }

    /// When to look at the session next on the broker's clock: just after its deadline.
    async fn deadline(&self) -> std::time::Instant {
        let clock = self.state.staff.clock();
        let wall_now = clock.now();
        let wait = match self.state.staff.session_deadline(&self.cookie).await {
            Ok(Some(end)) => end
                .duration_since(wall_now)
                .unwrap_or_default()
                .saturating_add(Duration::from_millis(1)),
            Ok(None) | Err(_) => Duration::ZERO,
        };
        let now = clock.instant();
        now.checked_add(wait).unwrap_or(now)
    }

    fn event(&mut self) -> Event {
        let live = self.live.borrow_and_update().clone();
        let data = serde_json::json!({ "pending": live.pending, "lockdown": live.lockdown });
        Event::default().event("live").data(data.to_string())
    }

    /// The next event, or `None` once the stream must end.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        if self.first {
            self.first = false;
            let event = self.event();
            return Some((Ok(event), self));
        }
        loop {
            let deadline = self.deadline().await;
            let clock = self.state.staff.clock().clone();
            tokio::select! {
                changed = self.live.changed() => {
                    if changed.is_err() || !self.still_valid().await {
                        return None;
                    }
                    let event = self.event();
                    return Some((Ok(event), self));
                }
                changed = self.sessions.changed() => {
                    if changed.is_err() || !self.still_valid().await {
                        return None;
                    }
                }
                () = clock.sleep_until(deadline) => {
                    if !self.still_valid().await {
                        return None;
                    }
                }
                () = tokio::time::sleep(RECHECK_INTERVAL) => {
                    if !self.still_valid().await {
                        return None;
                    }
                }
            }
        }
    }
}

/// `/events` for the logged-in `ctx`: the live state now and at every change, until the
/// session ends; 429 when the session has its streams open already.
pub(crate) fn stream(state: &Arc<AppState>, ctx: Ctx) -> Response {
    let Some(slot) = StreamSlot::take(state, token_hash(&ctx.cookie)) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "This login already follows live updates on {MAX_STREAMS_PER_SESSION} pages; close one of them and reload this page."
            ),
        )
            .into_response();
    };
    let follow = Follow {
        state: state.clone(),
        cookie: ctx.cookie,
        roles: ctx.member.roles,
        live: state.live.clone(),
        sessions: state.sessions_changed.subscribe(),
        first: true,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(follow, Follow::next);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

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
