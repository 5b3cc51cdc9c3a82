//! One event as one line of JSON: the format of `audit export --format jsonl` and of the
//! live stream for a SIEM. Each line carries the chain fields, so a copy can be verified on its
//! own, away from the database (`audit verify --file`).

use serde::{Deserialize, Serialize};

use super::{Actor, AuditEvent, EventKind, StoredEvent, timestamp};
use crate::clock::{from_unix_ms, to_unix_ms};

/// One line of a JSON Lines export: an event with its chain fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLine {
    seq: i64,
    at: String,
    at_ms: i64,
    actor: String,
    kind: String,
    session: Option<String>,
    vendor: Option<String>,
    technician: Option<String>,
    target: Option<String>,
    details: Vec<(String, String)>,
    prev_hash: String,
    hash: String,
}

impl ExportLine {
    /// The line for a stored event.
    pub fn of(stored: &StoredEvent) -> ExportLine {
        let event = &stored.event;
        ExportLine {
            seq: stored.seq,
            at: timestamp(event.at),
            at_ms: to_unix_ms(event.at),
            actor: event.actor.encode(),
            kind: event.kind.as_str().to_owned(),
            session: event.request.clone(),
            vendor: event.vendor.clone(),
            technician: event.technician.clone(),
            target: event.target.clone(),
            details: event.details.clone(),
            prev_hash: stored.prev_hash.clone(),
            hash: stored.hash.clone(),
        }
    }

    /// The event's number.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// The line as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and lists cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The stored event this line stands for; what in it cannot be an event, otherwise.
    pub fn to_stored(&self) -> Result<StoredEvent, String> {
        let at = from_unix_ms(self.at_ms);
        if timestamp(at) != self.at {
            return Err(format!(
                "event {}'s time {} is not its at_ms {}: the time was edited",
                self.seq,
                self.at.escape_debug(),
                self.at_ms
            ));
        }
        let actor = Actor::decode(&self.actor)
            .ok_or_else(|| format!("event {} has an unknown actor", self.seq))?;
        let kind = EventKind::parse(&self.kind)
            .ok_or_else(|| format!("event {} has an unknown kind", self.seq))?;
        Ok(StoredEvent {
            seq: self.seq,
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
            event: AuditEvent {
                at,
                actor,
                kind,
                request: self.session.clone(),
                vendor: self.vendor.clone(),
                technician: self.technician.clone(),
                target: self.target.clone(),
                details: self.details.clone(),
            },
        })
    }
}
