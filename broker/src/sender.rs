//! One sender per destination: of the brokers sharing a database, one at a time sends the
//! approvers' webhook, or the audit log to a syslog collector, to each destination; the others
//! stand by and take over when it stops.
//!
//! The sender holds a *lease* on the destination, a row in the database (`sender_leases`)
//! with its broker id, a term, an expiry and a cursor (the last audit event it handled). A
//! broker configured to send:
//!
//! - **takes the lease** when nobody holds it, when it ran out, or when it holds it already
//!   (back from a crash); one conditional update ([`Store::acquire_lease`]), so of two
//!   brokers racing exactly one wins. A lease never taken before starts where the feature
//!   says (the webhook at the log's head, the syslog at its old cursor file or the start).
//!   When it takes a lease from another broker, or its own lease that had run out, it records
//!   `sender-took-over` in the same transaction;
//! - **renews it** every quarter of its time ([`DEFAULT_LEASE`], 20 s) while sending, and
//!   moves the cursor, only ever forward, with a write that names its term: a broker that
//!   lost the lease changes nothing (`Holding::advance`);
//! - **stops sending before anyone else can start**: it counts its lease from the moment it
//!   *asked* for the renewal (the database's expiry comes later than that), and an eighth
//!   shorter (in case the database's clock is stepped forward); when that time passes
//!   without a renewal, or a renewal finds the lease gone, its work is told at once
//!   (`Holding::lost`): nothing more is sent, and attempts under way are cut off;
//! - **stands by** otherwise, trying again every quarter of the lease's time, and lets the
//!   lease go at shutdown so that another broker takes over within that quarter rather than
//!   after the whole lease.
//!
//! Expiries are counted on the database's clock and on this host's monotonic clock, never on
//! the broker's [`Clock`] (which tests move by hours): a lease is about processes that
//! stopped, not about the hospital's time.
//!
//! Delivery is at least once: a sender that stops between sending and moving the cursor
//! leaves a little for the next one to send again, in order.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::Clock;
use crate::store::{Acquired, LeaseState, PreviousLease, Store, StoreError};

/// How long a lease lasts without renewal: a broker that stops without letting its lease go
/// (a crash, a power cut, a lost network) is replaced within this and a quarter of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(20);

/// What is sent, and where: the lease's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// `webhook`, `audit-syslog`.
    pub(crate) feature: &'static str,
    /// The stored key: a syslog collector's `tls://host:port`; the webhook's origin and a hash
    /// of its path.
    pub(crate) key: String,
    /// What logs and the audit log name: never a URL's path (it may carry a token).
    pub(crate) shown: String,
}

/// What every lease of this broker shares.
#[derive(Clone)]
pub(crate) struct Leases {
    /// Where the leases are.
    pub(crate) store: Store,
    /// The holder's name.
    pub(crate) broker_id: String,
    /// The time of `sender-took-over`.
    pub(crate) clock: Arc<dyn Clock>,
    /// How long a lease lasts without renewal.
    pub(crate) ttl: Duration,
}

impl Leases {
    /// How often a lease is renewed, and a lease held by another broker asked for again.
    fn interval(&self) -> Duration {
        self.ttl / 4
    }

    /// How long after asking for a lease (or its renewal) this broker may send on it: less
    /// than the lease, which the database counts from a moment later, by an eighth, in case
    /// the database's clock is stepped forward meanwhile.
    fn valid_for(&self) -> Duration {
        self.ttl - self.ttl / 8
    }

    /// Tries once to take the lease of `destination`; `None` when another broker holds it.
    async fn acquire(
        &self,
        destination: &Destination,
        first_after_seq: i64,
    ) -> Result<Option<Holding>, StoreError> {
        let asked_at = Instant::now();
        let at = self.clock.now();
        let me = self.broker_id.clone();
        let acquired = self
            .store
            .acquire_lease(
                destination.feature,
                &destination.key,
                &self.broker_id,
                self.ttl,
                first_after_seq,
                |previous, after_seq| takeover_event(previous, &me, destination, after_seq, at),
            )
            .await?;
        match acquired {
            Acquired::Taken {
                term,
                after_seq,
                previous,
            } => {
                let from = previous.map_or_else(|| "nobody".to_owned(), |p| p.holder);
                tracing::info!(feature = destination.feature, destination = %destination.shown, after_seq, %from, "this broker sends now");
                Ok(Some(Holding(Arc::new(Inner {
                    leases: self.clone(),
                    destination: destination.clone(),
                    term,
                    after_seq,
                    deadline: Mutex::new(asked_at + self.valid_for()),
                    lost: CancellationToken::new(),
                }))))
            }
            Acquired::HeldBy { holder, remaining } => {
                tracing::debug!(feature = destination.feature, destination = %destination.shown, %holder, ?remaining, "another broker sends; standing by");
                Ok(None)
            }
        }
    }
}

/// `sender-took-over`, when sending moves to this broker from another one, or resumes after
/// this broker's own lease ran out (sending lapsed meanwhile). Taking back a lease this broker
/// let go at shutdown, or held until a moment ago, is no takeover.
fn takeover_event(
    previous: &PreviousLease,
    me: &str,
    destination: &Destination,
    after_seq: i64,
    at: std::time::SystemTime,
) -> Option<AuditEvent> {
    let how = match previous.state {
        LeaseState::Released if previous.holder != me => "released",
        LeaseState::Expired => "expired",
        LeaseState::Running if previous.holder != me => "expired",
        LeaseState::Released | LeaseState::Running => return None,
    };
    Some(
        AuditEvent::new(at, Actor::Broker(me.to_owned()), EventKind::SenderTookOver)
            .detail("feature", destination.feature)
            .detail("destination", &destination.shown)
            .detail("previous", &previous.holder)
            .detail("previous_lease", how)
            .detail("after_seq", after_seq),
    )
}

/// A lease this broker holds: its licence to send to the destination and to move the cursor.
/// Cloned into the tasks that send.
#[derive(Clone)]
pub(crate) struct Holding(Arc<Inner>);

struct Inner {
    leases: Leases,
    destination: Destination,
    term: i64,
    after_seq: i64,
    /// Until when this broker may send: the last renewal's time of asking plus seven eighths
    /// of the lease's time (before the database's expiry, which counts from a moment later).
    deadline: Mutex<Instant>,
    /// Cancelled once the lease is (or may be) someone else's.
    lost: CancellationToken,
}

/// The lease is no longer this broker's: stop sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost;

impl Holding {
    /// The last event the previous holders handled: start after it.
    pub(crate) fn after_seq(&self) -> i64 {
        self.0.after_seq
    }

    /// Whether this broker may still send.
    pub(crate) fn is_held(&self) -> bool {
        !self.0.lost.is_cancelled() && Instant::now() < self.deadline()
    }

    /// Resolves once the lease is (or may be) another broker's.
    pub(crate) async fn lost(&self) {
        self.0.lost.cancelled().await;
    }

    /// A token cancelled when the lease is lost, for tasks of their own.
    pub(crate) fn lost_token(&self) -> CancellationToken {
        self.0.lost.clone()
    }

    /// Moves the cursor to `after_seq` (never back) and renews the lease. `Err(Lost)` when the
    /// lease is no longer this broker's (nothing was written); a store that cannot be written
    /// is logged, and the next move catches up.
    pub(crate) async fn advance(&self, after_seq: i64) -> Result<(), Lost> {
        self.renew(Some(after_seq)).await
    }

    fn deadline(&self) -> Instant {
        *self
            .0
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn renew(&self, after_seq: Option<i64>) -> Result<(), Lost> {
        if !self.is_held() {
            self.0.lost.cancel();
            return Err(Lost);
        }
        let inner = &self.0;
        let asked_at = Instant::now();
        let renewed = inner
            .leases
            .store
            .renew_lease(
                inner.destination.feature,
                &inner.destination.key,
                &inner.leases.broker_id,
                inner.term,
                inner.leases.ttl,
                after_seq,
            )
            .await;
        match renewed {
            Ok(true) => {
                let mut deadline = inner
                    .deadline
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *deadline = (*deadline).max(asked_at + inner.leases.valid_for());
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(feature = inner.destination.feature, destination = %inner.destination.shown, "this broker's lease was taken over or ran out; it stops sending");
                inner.lost.cancel();
                Err(Lost)
            }
            Err(e) => {
                tracing::warn!(feature = inner.destination.feature, destination = %inner.destination.shown, error = %e, "cannot renew the lease; sending stops when it runs out");
                Ok(())
            }
        }
    }

    /// Renews the lease until `done`, and cancels [`lost`](Holding::lost) when it is lost or
    /// its time passes without a renewal (a renewal that hangs is not waited for past it).
    async fn keep(&self, done: &CancellationToken) {
        let mut next = Instant::now() + self.0.leases.interval();
        loop {
            let deadline = self.deadline();
            tokio::select! {
                () = done.cancelled() => return,
                () = self.0.lost.cancelled() => return,
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.deadline() {
                        self.run_out();
                        return;
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    next = Instant::now() + self.0.leases.interval();
                    match tokio::time::timeout_at(deadline, self.renew(None)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(Lost)) => return,
                        Err(_) => {
                            self.run_out();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn run_out(&self) {
        tracing::warn!(feature = self.0.destination.feature, destination = %self.0.destination.shown, "this broker's lease ran out before it could be renewed; it stops sending");
        self.0.lost.cancel();
    }

    /// Lets the lease go, so another broker takes over at once.
    async fn release(&self) {
        let inner = &self.0;
        if let Err(e) = inner
            .leases
            .store
            .release_lease(
                inner.destination.feature,
                &inner.destination.key,
                &inner.leases.broker_id,
                inner.term,
            )
            .await
        {
            tracing::warn!(feature = inner.destination.feature, destination = %inner.destination.shown, error = %e, "cannot let the lease go; another broker takes over when it runs out");
        }
    }
}

/// Sends to `destination` whenever this broker holds its lease, until `shutdown`: stands by
/// while another broker holds it, runs `work` while this one does, and lets the lease go at
/// the end. `work` gets the holding and `shutdown`, and must return soon after either
/// [`Holding::lost`] (sending nothing more) or `shutdown` (after finishing politely: it still
/// holds the lease then, renewed meanwhile). `first_after_seq` is where a lease never taken
/// before starts.
pub(crate) async fn serve<W, F>(
    leases: Leases,
    destination: Destination,
    first_after_seq: i64,
    shutdown: CancellationToken,
    mut work: W,
) where
    W: FnMut(Holding, CancellationToken) -> F,
    F: Future<Output = ()>,
{
    let mut standing_by = false;
    loop {
        let holding = match leases.acquire(&destination, first_after_seq).await {
            Ok(Some(holding)) => Some(holding),
            Ok(None) => {
                if !standing_by {
                    standing_by = true;
                    tracing::info!(feature = destination.feature, destination = %destination.shown, "another broker sends; this one stands by");
                }
                None
            }
            Err(e) => {
                tracing::warn!(feature = destination.feature, destination = %destination.shown, error = %e, "cannot read the lease; trying again");
                None
            }
        };
        let Some(holding) = holding else {
            tokio::select! {
                () = tokio::time::sleep(leases.interval()) => continue,
                () = shutdown.cancelled() => return,
            }
        };
        standing_by = false;
        let done = CancellationToken::new();
        tokio::join!(holding.keep(&done), async {
            work(holding.clone(), shutdown.clone()).await;
            done.cancel();
        });
        if shutdown.is_cancelled() {
            if holding.is_held() {
                holding.release().await;
            }
            return;
        }
        // Lost: stand by, and ask again after a while (the new holder has it for now).
        holding.0.lost.cancel();
        tokio::select! {
            () = tokio::time::sleep(leases.interval()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination() -> Destination {
        Destination {
            feature: "audit-syslog",
            key: "tls://siem:6514".into(),
            shown: "tls://siem:6514".into(),
        }
    }

    fn previous(holder: &str, state: LeaseState) -> PreviousLease {
        PreviousLease {
            holder: holder.into(),
            state,
        }
    }

    #[test]
    fn a_takeover_is_recorded_when_sending_moves_or_lapsed_and_not_when_a_broker_takes_back_its_own()
     {
        let at = std::time::SystemTime::UNIX_EPOCH;
        let event = |p: PreviousLease| takeover_event(&p, "b", &destination(), 42, at);
        let from_a = event(previous("a", LeaseState::Expired)).unwrap();
        assert_eq!(from_a.kind, EventKind::SenderTookOver);
        assert_eq!(from_a.actor, Actor::Broker("b".into()));
        assert_eq!(from_a.detail_value("previous"), Some("a"));
        assert_eq!(from_a.detail_value("previous_lease"), Some("expired"));
        assert_eq!(from_a.detail_value("destination"), Some("tls://siem:6514"));
        assert_eq!(from_a.detail_value("after_seq"), Some("42"));
        let released = event(previous("a", LeaseState::Released)).unwrap();
        assert_eq!(released.detail_value("previous_lease"), Some("released"));
        let own_lapsed = event(previous("b", LeaseState::Expired)).unwrap();
        assert_eq!(own_lapsed.detail_value("previous"), Some("b"));
        assert_eq!(event(previous("b", LeaseState::Released)), None);
        assert_eq!(event(previous("b", LeaseState::Running)), None);
    }

    async fn leases_of(store: &Store, broker: &str, ttl: Duration) -> Leases {
        Leases {
            store: store.clone(),
            broker_id: broker.into(),
            clock: Arc::new(crate::clock::ManualClock::new(
                std::time::SystemTime::UNIX_EPOCH,
            )),
            ttl,
        }
    }

    #[tokio::test]
    async fn a_broker_whose_lease_runs_out_stops_before_another_takes_it_and_writes_nothing_after()
    {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::store::StoreLocation::Sqlite(dir.path().join("sekisho.db"));
        let store = Store::open(&location).await.unwrap();
        let ttl = Duration::from_millis(300);
        let a = leases_of(&store, "a", ttl).await;
        let b = leases_of(&store, "b", ttl).await;
        let held = a.acquire(&destination(), 7).await.unwrap().unwrap();
        assert_eq!(
            held.after_seq(),
            7,
            "a lease never taken starts where it is told"
        );
        assert!(b.acquire(&destination(), 0).await.unwrap().is_none());
        held.advance(10).await.unwrap();
        assert!(held.is_held());
        // `a` now stands still (as a paused process would): no renewal. `b` asks until the
        // lease is free; by then `a` knows it may no longer send.
        let taken = loop {
            if let Some(taken) = b.acquire(&destination(), 0).await.unwrap() {
                break taken;
            }
            // sync-ok: asking again, as a standing-by broker does; bounded by the lease.
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!held.is_held(), "a stopped before b could start");
        assert_eq!(taken.after_seq(), 10, "b resumes where a stopped");
        assert_eq!(held.advance(99).await, Err(Lost), "a writes nothing more");
        taken.advance(12).await.unwrap();
        let leases = store.sender_leases().await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].holder, "b");
        assert_eq!(leases[0].after_seq, 12);
        taken.advance(11).await.unwrap();
        assert_eq!(
            store.sender_leases().await.unwrap()[0].after_seq,
            12,
            "the cursor never moves back"
        );
        let took = store
            .audit_events(&crate::store::AuditFilter {
                kinds: vec![EventKind::SenderTookOver],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(took.len(), 1);
        assert_eq!(took[0].event.detail_value("previous"), Some("a"));
        assert_eq!(
            took[0].event.detail_value("previous_lease"),
            Some("expired")
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_holder_whose_lease_another_broker_took_meanwhile_moves_no_cursor_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::store::StoreLocation::Sqlite(dir.path().join("sekisho.db"));
        let store = Store::open(&location).await.unwrap();
        let ttl = Duration::from_secs(30);
        let a = leases_of(&store, "a", ttl).await;
        let b = leases_of(&store, "b", ttl).await;
        let held = a.acquire(&destination(), 0).await.unwrap().unwrap();
        held.advance(5).await.unwrap();
        // The database's clock jumped forward (or someone ended the lease by hand): the lease
        // ran out there while `a` still counts it as running, and `b` took it.
        sqlx::query("UPDATE sender_leases SET expires_at = 1")
            .execute(store.pool())
            .await
            .unwrap();
        let taken = b.acquire(&destination(), 0).await.unwrap().unwrap();
        assert!(held.is_held(), "a cannot know yet");
        assert_eq!(
            held.advance(9).await,
            Err(Lost),
            "the database fences a off"
        );
        assert!(!held.is_held(), "and a stops");
        let lease = &store.sender_leases().await.unwrap()[0];
        assert_eq!((lease.holder.as_str(), lease.after_seq), ("b", 5));
        taken.advance(6).await.unwrap();
        store.close().await;
    }
}
