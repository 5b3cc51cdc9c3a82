//! Refusals on the record, at a rate no peer controls.
//!
//! Anyone who can reach the broker's port can make it refuse something: a handshake with a
//! foreign certificate or another protocol, a forward to a target outside the session, a
//! request over the rate. Each refusal belongs on the record, but a peer must not be able to
//! grow the record as fast as it can send. So refusals are recorded per key: the event's kind,
//! whom it concerns (the technician, or the peer's address when nobody is authenticated) and
//! its code. The first refusal of a key in each window ([`WINDOW`]) is recorded in full, at
//! once; the others in that window are counted, and when the window closes one more event of
//! the same kind records how many there were (`repeated`), when the first and the last came,
//! and (for forwards) which targets were named. Keys are bounded per window ([`MAX_KEYS`]);
//! beyond that, refusals of a kind share one key (`subject` = `*`), so all peers together add
//! at most `2 × (MAX_KEYS + kinds)` events per window whatever they send.
//!
//! A store that cannot take an event costs a log line: refusals never hold anything up and
//! never change what was refused.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::Clock;
use crate::store::Store;

/// How long refusals of one key are counted before their count is recorded.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys counted at once; further subjects share one key per kind.
pub const MAX_KEYS: usize = 1024;
/// Distinct target names kept per key for the record.
const MAX_TARGETS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: EventKind,
    subject: String,
    code: String,
}

/// What a window holds for one key after its first refusal was recorded.
struct Counted {
    /// The first refusal, as recorded: the summary repeats what it concerned.
    first: AuditEvent,
    repeated: u64,
    last_at: SystemTime,
    targets: BTreeSet<String>,
}

struct Window {
    opened: Instant,
    keys: HashMap<Key, Counted>,
}

/// The broker's record of refusals, shared by every connection.
pub struct RefusalLog {
    window: Mutex<Window>,
    clock: Arc<dyn Clock>,
    broker_id: String,
}

impl RefusalLog {
    /// An empty log reading the time from `clock`.
    pub fn new(clock: Arc<dyn Clock>, broker_id: &str) -> Arc<RefusalLog> {
        Arc::new(RefusalLog {
            window: Mutex::new(Window {
                opened: clock.instant(),
                keys: HashMap::new(),
            }),
            clock,
            broker_id: broker_id.to_owned(),
        })
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `event` if it is the first of its key in this window; counts it otherwise.
    pub async fn record(&self, store: &Store, event: AuditEvent) {
        let first = {
            let mut window = self.window();
            let mut key = key_of(&event);
            if !window.keys.contains_key(&key) && window.keys.len() >= MAX_KEYS {
                key.subject = "*".to_owned();
                key.code = "*".to_owned();
            }
            match window.keys.get_mut(&key) {
                Some(counted) => {
                    counted.repeated += 1;
                    counted.last_at = event.at;
                    if let Some(target) = &event.target
                        && counted.targets.len() < MAX_TARGETS
                    {
                        counted.targets.insert(target.clone());
                    }
                    false
                }
                None => {
                    window.keys.insert(
                        key,
                        Counted {
                            first: event.clone(),
                            repeated: 0,
                            last_at: event.at,
                            targets: BTreeSet::new(),
                        },
                    );
                    true
                }
            }
        };
        if first && let Err(e) = store.record(&event).await {
            tracing::error!(kind = event.kind.as_str(), error = %e, "cannot record a refusal");
        }
    }

    /// Closes the window if it is [`WINDOW`] old (or `force`): records one summary per key
    /// that was refused again after its first, and starts a new window.
    pub async fn flush(&self, store: &Store, force: bool) {
        let closed = {
            let mut window = self.window();
            let now = self.clock.instant();
            if !force && now.saturating_duration_since(window.opened) < WINDOW {
                return;
            }
            window.opened = now;
            std::mem::take(&mut window.keys)
        };
        let now = self.clock.now();
        for (key, counted) in closed {
            if counted.repeated == 0 {
                continue;
            }
            let first = counted.first;
            let mut summary = AuditEvent::new(now, Actor::Broker(self.broker_id.clone()), key.kind)
                .detail("repeated", counted.repeated)
                .detail("first_at", crate::audit::timestamp(first.at))
                .detail("last_at", crate::audit::timestamp(counted.last_at))
                .detail("subject", &key.subject)
                .detail("code", &key.code);
            if key.subject != "*" {
                summary.vendor = first.vendor;
                summary.technician = first.technician;
                summary.request = first.request;
                if let Some(peer) = first.details.iter().find(|(k, _)| k == "peer") {
                    summary = summary.detail("peer", &peer.1);
                }
            }
            if !counted.targets.is_empty() {
                let targets: Vec<String> = counted.targets.into_iter().collect();
                summary = summary.detail("targets", targets.join(","));
            }
            if let Err(e) = store.record(&summary).await {
                tracing::error!(kind = key.kind.as_str(), error = %e, "cannot record repeated refusals");
            }
        }
    }
}

/// Whom a refusal concerns: the technician when known, else the peer's address (without the
/// port, which a peer changes at will).
fn key_of(event: &AuditEvent) -> Key {
    let subject = match (&event.vendor, &event.technician) {
        (Some(vendor), Some(technician)) => format!("{vendor}/{technician}"),
        _ => event
            .detail_value("peer")
            .map(|peer| {
                peer.parse::<std::net::SocketAddr>()
                    .map(|address| address.ip().to_string())
                    .unwrap_or_else(|_| peer.to_owned())
            })
            .unwrap_or_default(),
    };
    let code = event
        .detail_value("code")
        .or_else(|| event.detail_value("stage"))
        .unwrap_or_default()
        .to_owned();
    Key {
        kind: event.kind,
        subject,
        code,
    }
}

/// Records each window's counts as it closes, until `shutdown`; then records what is left.
pub async fn run(log: Arc<RefusalLog>, store: Store, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => log.flush(&store, false).await,
            () = shutdown.cancelled() => break,
        }
    }
    log.flush(&store, true).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(peer: &str, code: &str) -> AuditEvent {
        AuditEvent::new(
            SystemTime::UNIX_EPOCH,
            Actor::Broker("b".into()),
            EventKind::ConnectionRefused,
        )
        .detail("peer", peer)
        .detail("code", code)
    }

    #[test]
    fn a_peer_is_keyed_by_its_address_not_its_port() {
        assert_eq!(
            key_of(&refused("192.0.2.7:4000", "x")),
            key_of(&refused("192.0.2.7:4001", "x"))
        );
        assert_ne!(
            key_of(&refused("192.0.2.7:4000", "x")),
            key_of(&refused("192.0.2.8:4000", "x"))
        );
        assert_ne!(
            key_of(&refused("192.0.2.7:4000", "x")),
            key_of(&refused("192.0.2.7:4000", "y"))
        );
    }

    #[test]
    fn a_technician_is_keyed_by_name_wherever_they_connect_from() {
        let event = refused("192.0.2.7:4000", "x").technician("acme", "tanaka");
        let elsewhere = refused("198.51.100.1:4000", "x").technician("acme", "tanaka");
        assert_eq!(key_of(&event), key_of(&elsewhere));
        assert_eq!(key_of(&event).subject, "acme/tanaka");
    }
}
