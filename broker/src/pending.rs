//! Session ends the store could not take, kept beside the database until it can.
//!
//! When the broker cuts a session because (or while) the store cannot be written, the end
//! must still reach the record as what it was (`store-unavailable`, at the moment it
//! happened), not as whatever explains it later (`broker-shutdown` at the next start). The
//! connection retries while the broker runs; this file (`DATA_DIR/pending-ends.jsonl`, one
//! JSON line per end with the request, the reason, the time and the event's actor and
//! details) keeps the end across a restart: the next start records it, as it was, before
//! anything else. A line whose session has ended otherwise meanwhile is dropped.
//!
//! Writing the file is best effort: a full disk may refuse it too (then the next start
//! records `broker-shutdown`, and says so in the log). It never holds a secret.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::{from_unix_ms, to_unix_ms};
use crate::session::{EndReason, RequestId, Stage};
use crate::store::{Store, StoreError};

/// The file's name in the data directory.
pub const FILE: &str = "pending-ends.jsonl";

/// One end waiting to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingEnd {
    request: String,
    reason: String,
    at_ms: i64,
    actor: String,
    vendor: Option<String>,
    technician: Option<String>,
    details: Vec<(String, String)>,
}

/// The ends this broker could not record yet.
pub struct PendingEnds {
    path: PathBuf,
    file: Mutex<()>,
}

impl PendingEnds {
    /// The pending ends of the broker whose data directory is `data_dir`.
    pub fn in_dir(data_dir: &Path) -> PendingEnds {
        PendingEnds {
            path: data_dir.join(FILE),
            file: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `event` (the `session-ended` of request `id`, for `reason`) until it is recorded.
    pub fn remember(&self, id: &RequestId, reason: EndReason, event: &AuditEvent) {
        let line = PendingEnd {
            request: id.to_string(),
            reason: reason.as_str().to_owned(),
            at_ms: to_unix_ms(event.at),
            actor: event.actor.encode(),
            vendor: event.vendor.clone(),
            technician: event.technician.clone(),
            details: event.details.clone(),
        };
        let _guard = self.lock();
        let written = serde_json::to_string(&line)
            .map_err(std::io::Error::other)
            .and_then(|text| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&self.path)?;
                writeln!(file, "{text}")?;
                file.sync_all()
            });
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), request = %id, error = %e, "cannot keep a session's end for later either; if the broker restarts before the store is back, it will be recorded as broker-shutdown");
        }
    }

    /// Forgets the end of request `id` (recorded meanwhile).
    pub fn forget(&self, id: &RequestId) {
        let _guard = self.lock();
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<PendingEnd>(line)
                    .map(|end| end.request != id.as_str())
                    .unwrap_or(false)
            })
            .collect();
        let _ = rewrite(&self.path, &kept);
    }

    /// Records every kept end (each as it was, at its own time); returns how many were
    /// recorded. Ends already recorded, or of sessions that ended otherwise, are dropped.
    pub async fn apply(&self, store: &Store) -> Result<usize, StoreError> {
        let text = {
            let _guard = self.lock();
            match std::fs::read_to_string(&self.path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot read {}: {e}",
                        self.path.display()
                    )));
                }
            }
        };
        let mut recorded = 0;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let Ok(end) = serde_json::from_str::<PendingEnd>(line) else {
                tracing::warn!(path = %self.path.display(), "a line of the pending session ends is not readable; skipped");
                continue;
            };
            let (Some(id), Some(reason), Some(actor)) = (
                RequestId::parse(&end.request),
                EndReason::parse(&end.reason),
                Actor::decode(&end.actor),
            ) else {
                continue;
            };
            let mut event =
                AuditEvent::new(from_unix_ms(end.at_ms), actor, EventKind::SessionEnded)
                    .request(&id);
            event.vendor = end.vendor;
            event.technician = end.technician;
            event.details = end.details;
            match store
                .end_request(&id, &[Stage::Active], reason, None, None, &event)
                .await
            {
                Ok(()) => recorded += 1,
                Err(StoreError::Stale | StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let _guard = self.lock();
        let _ = std::fs::remove_file(&self.path);
        Ok(recorded)
    }
}

fn rewrite(path: &Path, lines: &[&str]) -> std::io::Result<()> {
    if lines.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let temporary = path.with_extension("jsonl.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    for line in lines {
        writeln!(file, "{line}")?;
    }
    file.sync_all()?;
    std::fs::rename(temporary, path)
}
