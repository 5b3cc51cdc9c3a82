//! Policies that change while the broker runs: the set in force, swapped whole on reload.
//!
//! [`LivePolicies`] is what the connections, the desk and the reload watcher share: readers
//! take the set in force ([`LivePolicies::current`]) for one decision, so a decision never
//! sees half of one set and half of another. [`Reloader::reload`] reads the directory again, runs the
//! same check as at start, and either swaps the set in (recorded as `policy-loaded` with the
//! new hash) and pulls in the end of each live session of this broker that the new set no
//! longer allows, or leaves the old set in force (recorded as `policy-reload-refused`, with
//! every problem).
//!
//! A reload is asked for by SIGHUP (the binary), by `sekisho-broker policy reload` (which
//! records `policy-reload-requested` in the shared database; every broker on that database
//! follows the audit log and reloads its own directory: [`follow_requests`]), or directly
//! by [`crate::Broker::reloader`].
//!
//! This module never changes the time zone of a running broker (a set with another
//! `timezone` is refused: restart to change it) and never loosens a live session: a session
//! keeps the end time it was approved with unless the new set is stricter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::Clock;
use crate::policy::{PolicyErrors, PolicySet};
use crate::session::{EndReason, HospitalZone, RequestId, Stage};
use crate::store::{AuditFilter, Store, StoreError};

/// The policy set in force, shared and swappable.
#[derive(Clone)]
pub struct LivePolicies {
    current: Arc<watch::Sender<Arc<PolicySet>>>,
}

impl LivePolicies {
    /// Starts with `policies` in force.
    pub fn new(policies: Arc<PolicySet>) -> LivePolicies {
        LivePolicies {
            current: Arc::new(watch::Sender::new(policies)),
        }
    }

    /// The set in force now; hold it for one decision, then let it go.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.borrow().clone()
    }

    /// Puts `policies` in force.
    pub fn replace(&self, policies: Arc<PolicySet>) {
        self.current.send_replace(policies);
    }

    /// Sees each new set put in force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicySet>> {
        self.current.subscribe()
    }
}

impl From<Arc<PolicySet>> for LivePolicies {
    fn from(policies: Arc<PolicySet>) -> LivePolicies {
        LivePolicies::new(policies)
    }
}

/// Why a reload did not put a new set in force. The old set stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files have problems; every one is listed.
    #[error("the policies were not applied; the ones in force stay:\n{0}")]
    Invalid(PolicyErrors),
    /// The hospital's time zone changed, which needs a restart.
    #[error(
        "the policies were not applied: the time zone changed from {from} to {to}; restart the broker to change it"
    )]
    TimeZoneChanged {
        /// In force.
        from: String,
        /// In the new files.
        to: String,
    },
    /// The database could not record the reload, so it was not applied.
    #[error("the policies were not applied: the database cannot be written ({0})")]
    Store(StoreError),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// SHA-256 of the files now in force.
    pub sha256: String,
    /// Live sessions whose end time was pulled in, or that were ended, by the new set.
    pub sessions_tightened: usize,
}

/// Everything a reload needs from the running broker.
#[derive(Clone)]
pub struct Reloader {
    pub(crate) dir: PathBuf,
    pub(crate) live: LivePolicies,
    pub(crate) store: Store,
    pub(crate) zone: HospitalZone,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) broker_id: String,
}

/// The actor reloads and the session changes they cause are recorded under.
pub(crate) const RELOAD_ACTOR: &str = "policy-reload";

/// Ends live session `id` because the reloaded policies no longer allow it (`why`), on the
/// record as revoked by [`RELOAD_ACTOR`] on behalf of broker `broker_id`. `Stale` if it was
/// no longer active.
pub(crate) async fn end_disallowed_session(
    store: &Store,
    broker_id: &str,
    id: &RequestId,
    (vendor, technician): (&str, &str),
    why: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    let event = AuditEvent::new(
        now,
        Actor::Broker(broker_id.to_owned()),
        EventKind::SessionEnded,
    )
    .request(id)
    .technician(vendor, technician)
    .detail("reason", EndReason::Revoked.as_str())
    .detail("note", why);
    store
        .end_request(
            id,
            &[Stage::Active],
            EndReason::Revoked,
            Some(RELOAD_ACTOR),
            Some(why),
            &event,
        )
        .await
}

impl Reloader {
    /// Reads the policy directory again and, if it passes the check, puts it in force and
    /// applies it to this broker's live sessions. `trigger` says why (`sighup`, `request
    /// by NAME`), for the record.
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        let now = self.clock.now();
        let actor = Actor::Broker(self.broker_id.clone());
        let checked = PolicySet::load(&self.dir)
            .map_err(ReloadError::Invalid)
            .and_then(|policies| {
                let to = &policies.hospital().timezone;
                if to == self.zone.name() {
                    Ok(policies)
                } else {
                    Err(ReloadError::TimeZoneChanged {
                        from: self.zone.name().to_owned(),
                        to: to.clone(),
                    })
                }
            });
        let policies = match checked {
            Ok(policies) => policies,
            Err(error) => {
                tracing::error!(%error, trigger, "policy reload refused");
                let event = AuditEvent::new(now, actor, EventKind::PolicyReloadRefused)
                    .detail("trigger", trigger)
                    .detail("problems", error.to_string());
                self.store
                    .record(&event)
                    .await
                    .map_err(ReloadError::Store)?;
                return Err(error);
            }
        };
        let sha256 = crate::policy_digest(&policies);
        let event = AuditEvent::new(now, actor, EventKind::PolicyLoaded)
            .detail("sha256", &sha256)
            .detail("files", policies.files().len())
            .detail("vendors", policies.vendors().count())
            .detail(
                "combined_roles",
                crate::policy::staff_rules_record(&policies.hospital().staff),
            )
            .detail("trigger", trigger);
        self.store
            .record(&event)
            .await
            .map_err(ReloadError::Store)?;
        let policies = Arc::new(policies);
        self.live.replace(policies.clone());
        tracing::info!(%sha256, trigger, "policies reloaded");
        let sessions_tightened = self.tighten_live_sessions(&policies, now).await;
        Ok(Reloaded {
            sha256,
            sessions_tightened,
        })
    }

    /// Pulls in the end of each live session of this broker that `policies` allows less
    /// time (a shorter `max_session`, measured from when it opened; hours or holidays that
    /// now exclude part of what is left), and ends those whose vendor or targets are gone.
    /// The session's driver learns of each change through the hub, as of any other change.
    async fn tighten_live_sessions(&self, policies: &PolicySet, now: SystemTime) -> usize {
        let live = match self.store.live_requests(now).await {
            Ok(live) => live,
            Err(e) => {
                tracing::error!(error = %e, "cannot read live sessions to apply reloaded policies");
                return 0;
            }
        };
        let mut tightened = 0;
        for record in live {
            if record.stage != Stage::Active
                || record.broker_id.as_deref() != Some(self.broker_id.as_str())
            {
                continue;
            }
            let vendor = policies.vendor(&record.vendor);
            let gone = match vendor {
                None => Some(format!("vendor `{}` has no policy any more", record.vendor)),
                Some(vendor) => record
                    .targets
                    .iter()
                    .find(|target| vendor.target(target).is_none())
                    .map(|target| format!("target `{target}` is no longer in the policy")),
            };
            let result = if let Some(why) = gone {
                end_disallowed_session(
                    &self.store,
                    &self.broker_id,
                    &record.id,
                    (&record.vendor, &record.technician),
                    &why,
                    now,
                )
                .await
            } else {
                let (Some(vendor), Some(opened_at), Some(end_at)) =
                    (vendor, record.opened_at, record.end_at)
                else {
                    continue;
                };
                let mut cap = opened_at + vendor.access.max_session;
                let mut why = format!(
                    "max_session is now {}",
                    proto::duration::format_duration(vendor.access.max_session)
                );
                // Hours or holidays that now exclude part of what is left end it there.
                if let Some(outside) = crate::session::first_disallowed(
                    &vendor.access,
                    &self.zone,
                    now,
                    end_at.min(cap),
                ) {
                    cap = outside;
                    why = format!(
                        "the vendor's hours or holidays no longer allow it from {}",
                        self.zone.format(outside)
                    );
                }
                if end_at <= cap {
                    continue;
                }
                // A limit already passed ends the session now (the driver cuts at once).
                let new_end = cap.max(now);
                let event = AuditEvent::new(
                    now,
                    Actor::Broker(self.broker_id.clone()),
                    EventKind::SessionExtended,
                )
                .request(&record.id)
                .technician(&record.vendor, &record.technician)
                .detail("from", crate::audit::timestamp(end_at))
                .detail("to", crate::audit::timestamp(new_end))
                .detail("why", &why);
                self.store
                    .set_session_end(
                        &record.id,
                        &crate::session::Extension {
                            by: RELOAD_ACTOR.to_owned(),
                            at: now,
                            end_at: new_end,
                            comment: String::new(),
                        },
                        0,
                        now,
                        &event,
                    )
                    .await
            };
            match result {
                Ok(()) => tightened += 1,
                // Ended or changed meanwhile: the other change stands.
                Err(StoreError::Stale) => {}
                Err(e) => {
                    tracing::error!(request = %record.id, error = %e, "cannot apply reloaded policies to a live session")
                }
            }
        }
        tightened
    }
}

/// How often a broker looks for `policy-reload-requested` in the audit log.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// Reloads each time someone records `policy-reload-requested` (the admin CLI, on any host
/// sharing the database) after `after_seq`, until `shutdown`.
pub async fn follow_requests(reloader: Reloader, mut after_seq: i64, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(FOLLOW_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let filter = AuditFilter {
            kinds: vec![EventKind::PolicyReloadRequested],
            after_seq,
            ..Default::default()
        };
        let requests = match reloader.store.audit_events(&filter).await {
            Ok(requests) => requests,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for policy reload requests");
                continue;
            }
        };
        // Several requests since the last look need one reload.
        let Some(last) = requests.last() else {
            continue;
        };
        after_seq = last.seq;
        let trigger = format!("request by {}", last.event.actor);
        // The outcome is on the record either way.
        let _ = reloader.reload(&trigger).await;
    }
}

/// Records that `by` asks every broker on this database to reload its policies.
pub async fn request_reload(store: &Store, by: &str, now: SystemTime) -> Result<i64, StoreError> {
    store
        .record(&AuditEvent::new(
            now,
            Actor::Staff(by.to_owned()),
            EventKind::PolicyReloadRequested,
        ))
        .await
}
