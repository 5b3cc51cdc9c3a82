//! One message for approvers: which audit events become one, its JSON body and signature.
//!
//! The body is one JSON object (keys sorted):
//!
//! | key | what |
//! |---|---|
//! | `event` | `request-made`, `request-approved`, `request-denied`, `session-revoked` or `staff-locked` |
//! | `delivery` | the audit event's hash: the same for every attempt, and for every broker sharing the database, so a receiver can drop duplicates |
//! | `audit_seq` | the audit event's number (the order events happened in; deliveries may arrive out of order) |
//! | `timestamp` | when this attempt was sent, Unix seconds (also `X-Sekisho-Timestamp`) |
//! | `at` | when it happened (RFC 3339, UTC) |
//! | `by` | who: `technician:VENDOR/ID`, `staff:NAME` or `broker:ID` (as the audit log says) |
//! | `request`, `vendor`, `technician`, `targets`, `purpose`, `ticket`, `wanted_secs`, `created_at` | the request |
//! | `until`, `approvals`, `approvals_needed` | `request-approved`: the end time, and how many of the approvals needed there are now |
//! | `reason` | `request-denied`, `session-revoked`: what the approver wrote |
//! | `was` | `session-revoked`: `active`, or `approved` for a session withdrawn before it opened |
//! | `staff`, `failures`, `until`, `from` | `staff-locked`: the staff account locked after failed web UI logins in a row, how many, until when (RFC 3339, or `reset`: until an admin resets it) and the address of the last attempt; admins should look, as someone may be guessing its password |
//!
//! The signature covers the raw body, and so `delivery` and `timestamp` with it: a receiver
//! that checks it, refuses a `timestamp` more than a few minutes off and remembers the
//! `delivery` ids it has seen cannot be fooled by a forged or replayed message.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::audit::{EventKind, StoredEvent};
use crate::session::RequestRecord;

/// One message, ready to be sent as often as it takes.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    event: &'static str,
    delivery: String,
    request: Option<String>,
    technician: Option<(String, String)>,
    /// Every key but `timestamp`, which each attempt sets.
    fields: Map<String, Value>,
}

impl Message {
    /// The message for `stored`, with the request it names as it is now; `None` for events
    /// approvers are not sent (a session that ended other than by revocation).
    pub(crate) fn of(stored: &StoredEvent, record: Option<&RequestRecord>) -> Option<Message> {
        let event = &stored.event;
        let detail = |key: &str| event.detail_value(key);
        let mut fields = Map::new();
        let word = match event.kind {
            EventKind::RequestMade => "request-made",
            EventKind::RequestApproved => {
                if let Some(until) = detail("until") {
                    fields.insert("until".into(), json!(until));
                }
                // "1 of 2", as the event records it.
                if let Some((have, need)) = detail("approval").and_then(|a| a.split_once(" of "))
                    && let (Ok(have), Ok(need)) = (have.parse::<u32>(), need.parse::<u32>())
                {
                    fields.insert("approvals".into(), json!(have));
                    fields.insert("approvals_needed".into(), json!(need));
                }
                "request-approved"
            }
            EventKind::RequestDenied => {
                fields.insert("reason".into(), json!(detail("reason").unwrap_or("")));
                "request-denied"
            }
            EventKind::SessionEnded if detail("reason") == Some("revoked") => {
                fields.insert("reason".into(), json!(detail("note").unwrap_or("")));
                fields.insert("was".into(), json!(detail("was").unwrap_or("active")));
                "session-revoked"
            }
            EventKind::StaffLocked => {
                for (key, from) in [
                    ("staff", "staff"),
                    ("failures", "consecutive_failures"),
                    ("until", "until"),
                    ("from", "from"),
                ] {
                    if let Some(value) = detail(from) {
                        fields.insert(key.into(), json!(value));
                    }
                }
                "staff-locked"
            }
            _ => return None,
        };
        fields.insert("event".into(), json!(word));
        fields.insert("delivery".into(), json!(stored.hash));
        fields.insert("audit_seq".into(), json!(stored.seq));
        fields.insert("at".into(), json!(crate::audit::timestamp(event.at)));
        fields.insert("by".into(), json!(event.actor.encode()));
        if let Some(request) = &event.request {
            fields.insert("request".into(), json!(request));
        }
        match record {
            Some(record) => {
                fields.insert("vendor".into(), json!(record.vendor));
                fields.insert("technician".into(), json!(record.technician));
                fields.insert("targets".into(), json!(record.targets));
                fields.insert("purpose".into(), json!(record.purpose));
                fields.insert("ticket".into(), json!(record.ticket));
                fields.insert("wanted_secs".into(), json!(record.wanted.as_secs()));
                fields.insert(
                    "created_at".into(),
                    json!(crate::audit::timestamp(record.created_at)),
                );
            }
            None => {
                for (key, value) in [("vendor", &event.vendor), ("technician", &event.technician)] {
                    if let Some(value) = value {
                        fields.insert(key.into(), json!(value));
                    }
                }
            }
        }
        Some(Message {
            event: word,
            delivery: stored.hash.clone(),
            request: event.request.clone(),
            technician: event.vendor.clone().zip(event.technician.clone()),
            fields,
        })
    }

    /// Adds `checkpoint` as `"signed": {"checkpoint": {…}}`, which `audit verify
    /// --checkpoints` finds in a relay's log of the bodies it received.
    pub(crate) fn carry_checkpoint(&mut self, checkpoint: &crate::audit::checkpoint::Checkpoint) {
        self.fields
            .insert("signed".into(), json!({ "checkpoint": checkpoint }));
    }

    /// `request-made`, …: also the `X-Sekisho-Event` header.
    pub(crate) fn event(&self) -> &'static str {
        self.event
    }

    /// The delivery id: also the `X-Sekisho-Delivery` header.
    pub(crate) fn delivery(&self) -> &str {
        &self.delivery
    }

    /// The request the message is about.
    pub(crate) fn request(&self) -> Option<&str> {
        self.request.as_deref()
    }

    /// The vendor and technician the message is about.
    pub(crate) fn technician(&self) -> Option<(&str, &str)> {
        self.technician
            .as_ref()
            .map(|(vendor, technician)| (vendor.as_str(), technician.as_str()))
    }

    /// The body of an attempt sent at `sent_at`.
    pub(crate) fn body(&self, sent_at: SystemTime) -> String {
        let mut fields = self.fields.clone();
        fields.insert(
            "timestamp".into(),
            json!(crate::clock::to_unix_secs(sent_at)),
        );
        Value::Object(fields).to_string()
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `key`: the
/// `X-Sekisho-Signature` header.
pub(crate) fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    format!(
        "sha256={}",
        crate::encoding::hex(ring::hmac::sign(key, body).as_ref())
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::audit::{Actor, AuditEvent};

    fn stored(event: AuditEvent) -> StoredEvent {
        StoredEvent {
            seq: 42,
            prev_hash: crate::audit::GENESIS_HASH.into(),
            hash: "ab".repeat(32),
            event,
        }
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_395_600)
    }

    fn body(message: &Message) -> Value {
        serde_json::from_str(&message.body(at() + Duration::from_secs(7))).unwrap()
    }

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_approval_says_by_whom_until_when_and_how_many_approvals_there_are() {
        let event = AuditEvent::new(
            at(),
            Actor::Staff("suzuki".into()),
            EventKind::RequestApproved,
        )
        .request("r-abc")
        .technician("acme", "tanaka")
        .detail("until", "2026-11-23T03:00:00Z")
        .detail("approval", "1 of 2")
        .detail("pinned", "");
        let message = Message::of(&stored(event), None).unwrap();
        assert_eq!(message.event(), "request-approved");
        assert_eq!(message.technician(), Some(("acme", "tanaka")));
        let json = body(&message);
        assert_eq!(json["event"], "request-approved");
        assert_eq!(json["by"], "staff:suzuki");
        assert_eq!(json["request"], "r-abc");
        assert_eq!(json["vendor"], "acme");
        assert_eq!(json["until"], "2026-11-23T03:00:00Z");
        assert_eq!(json["approvals"], 1);
        assert_eq!(json["approvals_needed"], 2);
        assert_eq!(json["delivery"], "ab".repeat(32));
        assert_eq!(json["audit_seq"], 42);
        assert_eq!(json["timestamp"], 1_795_395_607);
        assert_eq!(json["at"], "2026-11-23T01:00:00Z");
    }

    #[test]
    fn only_a_revocation_among_session_ends_is_sent_with_its_note() {
        let ended = |reason: &str| {
            AuditEvent::new(at(), Actor::Staff("suzuki".into()), EventKind::SessionEnded)
                .request("r-abc")
                .detail("reason", reason)
                .detail("was", "approved")
                .detail("note", "wrong server")
        };
        let message = Message::of(&stored(ended("revoked")), None).unwrap();
        let json = body(&message);
        assert_eq!(json["event"], "session-revoked");
        assert_eq!(json["reason"], "wrong server");
        assert_eq!(json["was"], "approved");
        for other in ["closed", "expired", "lockdown", "idle"] {
            assert!(
                Message::of(&stored(ended(other)), None).is_none(),
                "{other}"
            );
        }
        let forward = AuditEvent::new(at(), Actor::Broker("b".into()), EventKind::ForwardOpened);
        assert!(Message::of(&stored(forward), None).is_none());
    }

    #[test]
    fn a_staff_lock_says_whose_until_when_and_from_where() {
        let locked = AuditEvent::new(at(), Actor::Staff("sato".into()), EventKind::StaffLocked)
            .detail("staff", "sato")
            .detail("consecutive_failures", 5)
            .detail("until", "2026-11-23T01:15:00Z")
            .detail("from", "192.0.2.7");
        let message = Message::of(&stored(locked), None).unwrap();
        assert_eq!(message.event(), "staff-locked");
        let json = body(&message);
        assert_eq!(json["staff"], "sato");
        assert_eq!(json["failures"], "5");
        assert_eq!(json["until"], "2026-11-23T01:15:00Z");
        assert_eq!(json["from"], "192.0.2.7");
        assert_eq!(json["by"], "staff:sato");
    }
}
