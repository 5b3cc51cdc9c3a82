//! The technicians' connections this broker holds now.
//!
//! Every authenticated connection registers here, with its identity, its certificate's
//! fingerprint, its [`Cut`] and the session it holds (if any), and leaves when it ends. That
//! gives:
//!
//! - the bound on connections per technician ([`crate::Limits::max_connections_per_technician`]);
//! - the cut by standing: [`check_standing`] reads again, every hub round, whether each
//!   connected certificate still stands (registered, not revoked or expired, technician and
//!   vendor enabled) and cuts every connection whose certificate no longer does, so a
//!   disabled or reset technician, or a technician of a disabled vendor, is disconnected at
//!   once, with or without a session, whichever broker or command disabled them;
//! - which live sessions this broker holds, so the hub never ends one of them as an orphan;
//! - the cut of everything at shutdown.
//!
//! It never decides who may connect (that is [`crate::identity::admit`]); it only holds what
//! was admitted, and lets it go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::cut::{Cut, CutOrder};
use crate::identity::StandingProblem;
use crate::pki::TechnicianIdentity;
use crate::session::{EndReason, RequestId};
use crate::store::{Store, StoreError};

/// The connections of this broker.
pub(crate) struct Connections {
    inner: Mutex<Inner>,
    max_per_technician: usize,
}

#[derive(Default)]
struct Inner {
    next: u64,
    entries: HashMap<u64, Entry>,
}

struct Entry {
    identity: TechnicianIdentity,
    fingerprint: String,
    cut: Arc<Cut>,
    session: Option<RequestId>,
}

/// A connection's place in the registry; it leaves when this is dropped.
pub(crate) struct Registration {
    id: u64,
    connections: Arc<Connections>,
}

impl Connections {
    /// An empty registry allowing `max_per_technician` connections to each technician.
    pub(crate) fn new(max_per_technician: usize) -> Arc<Connections> {
        Arc::new(Connections {
            inner: Mutex::new(Inner::default()),
            max_per_technician,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a connection of `identity`, unless they hold the most they may already
    /// (then `Err` with that number).
    pub(crate) fn register(
        self: &Arc<Connections>,
        identity: &TechnicianIdentity,
        fingerprint: &str,
        cut: Arc<Cut>,
    ) -> Result<Registration, usize> {
        let mut inner = self.inner();
        let held = inner
            .entries
            .values()
            .filter(|entry| &entry.identity == identity)
            .count();
        if held >= self.max_per_technician {
            return Err(held);
        }
        inner.next += 1;
        let id = inner.next;
        inner.entries.insert(
            id,
            Entry {
                identity: identity.clone(),
                fingerprint: fingerprint.to_owned(),
                cut,
                session: None,
            },
        );
        Ok(Registration {
            id,
            connections: self.clone(),
        })
    }

    /// Whether a connection of this broker holds live session `id`.
    pub(crate) fn holds_session(&self, id: &RequestId) -> bool {
        self.inner()
            .entries
            .values()
            .any(|entry| entry.session.as_ref() == Some(id))
    }

    /// Cuts every connection (shutdown).
    pub(crate) fn cut_all(&self, order: &CutOrder) {
        for cut in self.cuts(|_| true) {
            cut.cut(order.clone());
        }
    }

    fn cuts(&self, mut which: impl FnMut(&Entry) -> bool) -> Vec<Arc<Cut>> {
        self.inner()
            .entries
            .values()
            .filter(|entry| which(entry))
            .map(|entry| entry.cut.clone())
            .collect()
    }

    fn fingerprints(&self) -> Vec<String> {
        let mut fingerprints: Vec<String> = self
            .inner()
            .entries
            .values()
            .map(|entry| entry.fingerprint.clone())
            .collect();
        fingerprints.sort();
        fingerprints.dedup();
        fingerprints
    }
}

impl Registration {
    /// Notes the live session this connection holds (or that it holds none any more).
    pub(crate) fn hold_session(&self, session: Option<RequestId>) {
        if let Some(entry) = self.connections.inner().entries.get_mut(&self.id) {
            entry.session = session;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.inner().entries.remove(&self.id);
    }
}

/// Cuts every connection whose certificate no longer stands at `now`: revoked or expired
/// (a reset, an offboarding), gone from the registry, or its technician or vendor disabled.
/// One read of the store for all of them.
pub(crate) async fn check_standing(
    store: &Store,
    connections: &Connections,
    now: SystemTime,
) -> Result<(), StoreError> {
    let fingerprints = connections.fingerprints();
    if fingerprints.is_empty() {
        return Ok(());
    }
    let standings = store.certificate_standings(&fingerprints).await?;
    for fingerprint in fingerprints {
        let problem = match standings.get(&fingerprint) {
            Some(standing) => crate::identity::standing_problem(standing, now),
            None => Some(StandingProblem::Unregistered),
        };
        let Some(problem) = problem else { continue };
        let order = match &problem {
            StandingProblem::VendorDisabled(vendor, reason) => CutOrder::with_note(
                EndReason::TechnicianDisabled,
                if reason.is_empty() {
                    format!("vendor `{vendor}` is disabled")
                } else {
                    format!("vendor `{vendor}` is disabled ({reason})")
                },
            ),
            StandingProblem::TechnicianDisabled(reason) => CutOrder {
                reason: EndReason::TechnicianDisabled,
                by: None,
                note: (!reason.is_empty()).then(|| reason.clone()),
            },
            StandingProblem::Revoked(_)
            | StandingProblem::Expired(_)
            | StandingProblem::Unregistered => CutOrder::new(EndReason::CredentialsRevoked),
        };
        for cut in connections.cuts(|entry| entry.fingerprint == fingerprint) {
            if cut.cut(order.clone()) {
                tracing::warn!(%fingerprint, ?problem, "connection cut: its certificate no longer stands");
            }
        }
    }
    Ok(())
}
