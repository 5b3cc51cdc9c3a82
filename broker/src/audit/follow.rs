//! Following the audit log into a sink for a SIEM: what the file stream ([`super::stream`])
//! and the syslog stream ([`super::syslog`]) share.
//!
//! The follower reads the database, not the code paths that write events, so a sink gets
//! every event from every broker sharing the database, in chain order. It reads in batches
//! from where the sink says it left off ([`Sink::resume_after`]), hands each batch to the
//! sink, and moves on only once the sink says the batch is written. When the sink fails it
//! records the sink's failure event once, keeps the events (the database is the queue) and
//! tries the same batch again at the next tick; when a batch goes through again it records
//! the sink's recovery event, which then travels to the sink like any other.
//!
//! It never blocks the broker: it runs on a task of its own, and nothing waits for it but the
//! shutdown, which lets it try once more to write what is left. A sink that only one broker
//! may write at a time (the syslog's, under its lease: `crate::sender`) says when it may no
//! longer write ([`Sink::is_revoked`]); the follower then stops at once, writing nothing more
//! and recording no failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::{Actor, AuditEvent, EventKind, StoredEvent};
use crate::clock::Clock;
use crate::store::{AuditFilter, Store};

/// How often the database is read for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Events read, and handed to the sink, at once.
const BATCH: i64 = 1000;

/// Where the followed events go.
pub(crate) trait Sink: Send {
    /// What logs call the sink ("audit stream", "audit syslog").
    const NAME: &'static str;
    /// Recorded once when the sink starts failing.
    const FAILED: EventKind;
    /// Recorded when it works again.
    const RECOVERED: EventKind;

    /// The detail naming where the sink writes: `("path", …)`, `("url", …)`.
    fn place(&self) -> (&'static str, String);

    /// The number of the last event the sink already holds from an earlier run (0 for none).
    /// An error starts after the log's current head, and is logged.
    fn resume_after(&mut self) -> impl Future<Output = Result<i64, String>> + Send;

    /// Writes `events` (one batch, in chain order, never empty); `Ok` only once they are
    /// written as far as the sink can tell.
    fn write(&mut self, events: &[StoredEvent]) -> impl Future<Output = Result<(), String>> + Send;

    /// Writes signed checkpoints (never empty), each after the event it commits to has been
    /// written; `Ok` only once they are written as far as the sink can tell.
    fn write_checkpoints(
        &mut self,
        checkpoints: &[Checkpoint],
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Whether the sink may no longer write (another broker writes to it now): the follower
    /// stops without writing or recording anything more. Never, by default.
    fn is_revoked(&self) -> bool {
        false
    }
}

/// What the follower needs besides the sink.
#[derive(Clone)]
pub(crate) struct Follow {
    /// The database whose log is followed, and where failures are recorded.
    pub(crate) store: Store,
    /// The time of failure and recovery events.
    pub(crate) clock: Arc<dyn Clock>,
    /// Failure and recovery events name the broker as their actor.
    pub(crate) broker_id: String,
}

/// Follows the audit log into `sink` until `shutdown` (then writes what is left, once, and
/// stops).
pub(crate) async fn run<S: Sink>(mut sink: S, follow: Follow, shutdown: CancellationToken) {
    let (place_key, place) = sink.place();
    let mut after = match sink.resume_after().await {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(place = %place, error = %e, "cannot tell where the {} left off; starting after the current head", S::NAME);
            follow
                .store
                .audit_head()
                .await
                .map(|(seq, _)| seq)
                .unwrap_or(0)
        }
    };
    // Checkpoints of events up to where the sink resumes were written before, or are older
    // than the ones to come.
    let mut checkpoints_after = after;
    let mut failing = false;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            () = shutdown.cancelled() => true,
        };
        if sink.is_revoked() {
            return;
        }
        let written = match write_new_events(&follow.store, &mut sink, &mut after).await {
            Ok(()) => {
                write_new_checkpoints(&follow.store, &mut sink, &mut checkpoints_after, after).await
            }
            Err(failure) => Err(failure),
        };
        match written {
            Ok(()) => {
                if failing {
                    failing = false;
                    tracing::info!(place = %place, "the {} works again", S::NAME);
                    let event = AuditEvent::new(
                        follow.clock.now(),
                        Actor::Broker(follow.broker_id.clone()),
                        S::RECOVERED,
                    )
                    .detail(place_key, &place);
                    let _ = follow.store.record(&event).await;
                }
            }
            Err(Failure::Revoked) => return,
            Err(Failure::Sink(why)) if !failing => {
                failing = true;
                tracing::error!(place = %place, error = %why, "cannot write the {}; events are kept and written when it works again", S::NAME);
                let event = AuditEvent::new(
                    follow.clock.now(),
                    Actor::Broker(follow.broker_id.clone()),
                    S::FAILED,
                )
                .detail(place_key, &place)
                .detail("error", why);
                if let Err(e) = follow.store.record(&event).await {
                    tracing::error!(error = %e, "cannot record that the {} failed", S::NAME);
                }
            }
            Err(Failure::Sink(_)) => {}
            Err(Failure::Store(why)) => {
                tracing::warn!(error = %why, "cannot read the audit log for the {}", S::NAME);
            }
        }
        if stopping {
            return;
        }
    }
}

enum Failure {
    Sink(String),
    Store(String),
    Revoked,
}

/// Hands the sink the checkpoints of events after `checkpoints_after` up to `events_after` (the
/// last event it has), moving `checkpoints_after` past them. A checkpoint signed after the sink
/// passed its event comes at the next tick; one older than a checkpoint already written is
/// passed over (the newer one covers more).
async fn write_new_checkpoints<S: Sink>(
    store: &Store,
    sink: &mut S,
    checkpoints_after: &mut i64,
    events_after: i64,
) -> Result<(), Failure> {
    let checkpoints = store
        .audit_checkpoints(*checkpoints_after, events_after)
        .await
        .map_err(|e| Failure::Store(e.to_string()))?;
    let Some(last) = checkpoints.last().map(|checkpoint| checkpoint.seq) else {
        return Ok(());
    };
    if let Err(why) = sink.write_checkpoints(&checkpoints).await {
        return Err(if sink.is_revoked() {
            Failure::Revoked
        } else {
            Failure::Sink(why)
        });
    }
    *checkpoints_after = last;
    Ok(())
}

/// Hands the events after `after` to the sink, batch by batch, moving `after` past each batch
/// written.
async fn write_new_events<S: Sink>(
    store: &Store,
    sink: &mut S,
    after: &mut i64,
) -> Result<(), Failure> {
    loop {
        let events = store
            .audit_events(&AuditFilter {
                after_seq: *after,
                limit: BATCH,
                ..Default::default()
            })
            .await
            .map_err(|e| Failure::Store(e.to_string()))?;
        let Some(last) = events.last().map(|event| event.seq) else {
            return Ok(());
        };
        if let Err(why) = sink.write(&events).await {
            return Err(if sink.is_revoked() {
                Failure::Revoked
            } else {
                Failure::Sink(why)
            });
        }
        *after = last;
        if (events.len() as i64) < BATCH {
            return Ok(());
        }
    }
}
