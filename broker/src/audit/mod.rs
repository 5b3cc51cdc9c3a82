//! The audit log: typed events, each naming its actor, chained by hashes.
//!
//! Every event is written in the same database transaction as the change it describes (see
//! [`crate::store`]); if it cannot be written, the change does not happen. Events are numbered
//! without gaps (`seq`) and each carries the hash of the one before, over a canonical encoding
//! that does not depend on the database ([`AuditEvent::canonical`]), so [`verify`] finds any
//! edited, deleted, inserted or reordered event, and a head hash written down elsewhere proves
//! nothing was cut off the end. Several brokers sharing one PostgreSQL append to one chain:
//! the chain's head is a row every append updates, which serialises appends.
//!
//! This module computes and checks; it never reads or writes the database itself.

pub mod checkpoint;
mod follow;
mod line;
pub mod stream;
pub mod syslog;

pub use line::ExportLine;

use std::fmt;
use std::time::SystemTime;

use ring::digest::{SHA256, digest};

use crate::clock::to_unix_ms;

/// The hash the first event chains to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A vendor's technician (from their client certificate).
    Technician {
        /// The vendor.
        vendor: String,
        /// The technician.
        technician: String,
    },
    /// A member of the hospital's staff (approver, admin, auditor).
    Staff(String),
    /// The broker itself (expiry, end time, shutdown), named by its id.
    Broker(String),
    /// The broker host's operating-system administrator acting without a staff account
    /// (the recovery path of `staff invite|enable|disable` when no admin can log in), named
    /// by the OS account that ran the command. Never a staff name: it did not prove who the
    /// person is beyond holding that OS account.
    Host(String),
}

impl Actor {
    /// `technician:acme-ehr/tanaka`, `staff:suzuki`, `broker:1f2e…`, `host:root`.
    pub fn encode(&self) -> String {
        match self {
            Actor::Technician { vendor, technician } => format!("technician:{vendor}/{technician}"),
            Actor::Staff(name) => format!("staff:{name}"),
            Actor::Broker(id) => format!("broker:{id}"),
            Actor::Host(user) => format!("host:{user}"),
        }
    }

    /// Reads [`encode`](Actor::encode)'s form back.
    pub fn decode(text: &str) -> Option<Actor> {
        let (kind, name) = text.split_once(':')?;
        match kind {
            "technician" => {
                let (vendor, technician) = name.split_once('/')?;
                Some(Actor::Technician {
                    vendor: vendor.to_owned(),
                    technician: technician.to_owned(),
                })
            }
            "staff" => Some(Actor::Staff(name.to_owned())),
            "broker" => Some(Actor::Broker(name.to_owned())),
            "host" => Some(Actor::Host(name.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

macro_rules! event_kinds {
    ($($variant:ident => $word:literal: $doc:literal,)*) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $(#[doc = $doc] $variant,)*
        }

        impl EventKind {
            /// The stable word stored and exported.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $word,)*
                }
            }

            /// The kind for a stored word.
            pub fn parse(word: &str) -> Option<EventKind> {
                match word {
                    $($word => Some(EventKind::$variant),)*
                    _ => None,
                }
            }

            /// Every kind, for listings and help.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];
        }
    };
}

event_kinds! {
    RequestMade => "request-made": "A technician asked for a session.",
    RequestRefused => "request-refused": "A technician's request was refused (policy, lockdown, unknown target).",
    RequestApproved => "request-approved": "An approver said yes (possibly one of several needed).",
    RequestDenied => "request-denied": "An approver said no, with a reason.",
    RequestExpired => "request-expired": "A request expired: unanswered, or approved and never opened.",
    SessionOpened => "session-opened": "A technician opened an approved request with a one-time password.",
    SessionOpenRefused => "session-open-refused": "Opening a session was refused (not approved, policy, lockdown).",
    ConnectionLost => "connection-lost": "A live session's connection was lost (network, client crash, broker restart) without the technician closing it; the session stays approved until its end time and may be resumed.",
    SessionResumed => "session-resumed": "A technician took up a live session again on a new connection, with a new one-time password unless the vendor's policy allows a short window without.",
    SessionWarned => "session-warned": "The technician was warned the session ends soon.",
    SessionExtended => "session-extended": "An approver moved a live session's end time.",
    SessionExtensionAsked => "session-extension-asked": "An approver asked for a later end of a live session; it moves when enough different approvers have asked.",
    SessionEnded => "session-ended": "A session ended, with its reason.",
    ForwardOpened => "forward-opened": "A forward reached its target.",
    ForwardClosed => "forward-closed": "A forward ended, with the bytes each way and its duration.",
    ForwardRefused => "forward-refused": "A forward was refused (target not allowed, unreachable, no session).",
    OtpFailed => "otp-failed": "A wrong or reused one-time password.",
    TechnicianLocked => "technician-locked": "A technician was locked after too many wrong one-time passwords.",
    TechnicianUnlocked => "technician-unlocked": "An admin unlocked a technician.",
    TechnicianSecretSet => "technician-secret-set": "A technician was given a new one-time-password secret (before enrollment existed; kept so older logs still read).",
    CertificateIssued => "certificate-issued": "A client certificate was issued.",
    ConnectionRefused => "connection-refused": "A connection was refused after its handshake (unknown vendor, source network, version).",
    LockdownOn => "lockdown-on": "The hospital stopped all remote access.",
    LockdownOff => "lockdown-off": "The hospital lifted the lockdown.",
    LockdownLiftPending => "lockdown-lift-pending": "An admin lifted the lockdown where hospital.toml asks for two different admins: it stays on until a second admin lifts it too.",
    PolicyLoaded => "policy-loaded": "The broker put a set of policies in force, at start or on reload (their hash).",
    BrokerStarted => "broker-started": "A broker started.",
    BrokerStopped => "broker-stopped": "A broker stopped.",
    ReviewMarked => "review-marked": "An auditor marked an ended session reviewed.",
    AuditExported => "audit-exported": "Someone exported the audit log.",
    AuditStreamFailed => "audit-stream-failed": "The live audit stream for a SIEM could not be written.",
    AuditStreamRecovered => "audit-stream-recovered": "The live audit stream could be written again.",
    VendorAdded => "vendor-added": "An admin took on a vendor (its policy file must exist).",
    VendorDisabled => "vendor-disabled": "An admin disabled a vendor: its technicians are refused and their sessions ended.",
    VendorEnabled => "vendor-enabled": "An admin enabled a vendor again.",
    TechnicianAdded => "technician-added": "An admin added a technician and issued their first enrollment token.",
    TechnicianDisabled => "technician-disabled": "An admin disabled a technician: refused at the handshake, sessions ended.",
    TechnicianEnabled => "technician-enabled": "An admin enabled a technician again.",
    TechnicianReset => "technician-reset": "An admin revoked a technician's certificates and one-time-password secret and issued a new enrollment token.",
    TechnicianEnrolled => "technician-enrolled": "A technician enrolled: a certificate for a key made on their laptop, and a new one-time-password secret.",
    EnrollmentRefused => "enrollment-refused": "An enrollment was refused (unknown, used, expired or void token; a bad certificate request).",
    PolicyReloadRequested => "policy-reload-requested": "Someone asked every broker to reload its policies.",
    PolicyReloadRefused => "policy-reload-refused": "A reload found problems in the policies; the ones in force stay.",
    StaffInvited => "staff-invited": "A one-time link to create or reset a staff account was made.",
    StaffEnrolled => "staff-enrolled": "A staff account became usable: through a one-time link, its person set a password and confirmed a new one-time-password secret with a code from it.",
    StaffConfirmFailed => "staff-confirm-failed": "A code typed to confirm a new one-time-password secret, when setting up a staff account through a one-time link, did not match; nothing changed (after 5 the link stops working).",
    StaffLogin => "staff-login": "A staff member logged in to the web UI.",
    StaffLoginFailed => "staff-login-failed": "A web UI login failed (wrong password or code, disabled or locked account).",
    StaffLocked => "staff-locked": "A staff account was locked after too many failed logins.",
    StaffLogout => "staff-logout": "A staff member logged out.",
    StaffDisabled => "staff-disabled": "An admin disabled a staff account.",
    StaffEnabled => "staff-enabled": "An admin enabled a staff account again.",
    StaffRefused => "staff-refused": "A staff member's web action was refused (role, CSRF token).",
    KeysRefused => "keys-refused": "A broker or admin command was refused: its data directory lacks the hospital's CA or sealing key, or holds other ones.",
    WebhookFailed => "webhook-failed": "A message to the approvers' webhook was not delivered after its attempts: approvers may not have been alerted.",
    AuditSyslogFailed => "audit-syslog-failed": "The audit stream to the hospital's syslog collector could not be delivered (collector down, TLS refused); events are kept and sent when it is back.",
    AuditSyslogRecovered => "audit-syslog-recovered": "The audit stream reached the syslog collector again; the events kept meanwhile follow.",
    SenderTookOver => "sender-took-over": "A broker took over sending to a destination (the approvers' webhook, a syslog collector) from another broker, or after its own lease ran out; it resumes after the last event the previous sender handled.",
    WebhookSkipped => "webhook-skipped": "Events found after an outage, older than the webhook's bound, were not sent to the approvers' webhook: approvers were not alerted of them.",
    ClockJumped => "clock-jumped": "A broker's wall clock was stepped while it ran (expected and observed time, the signed step): records around then carry the stepped time; deadlines were not moved.",
    ClockSync => "clock-sync": "Whether a broker's host clock is synchronised (NTP): the state at start, then each change (state, source, the reason when unknown, what it was).",
}

/// One event, before it is numbered and chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When, from the broker's clock (UTC).
    pub at: SystemTime,
    /// Who.
    pub actor: Actor,
    /// What.
    pub kind: EventKind,
    /// The request (and session) it concerns, if any.
    pub request: Option<String>,
    /// The vendor it concerns, if any.
    pub vendor: Option<String>,
    /// The technician it concerns, if any.
    pub technician: Option<String>,
    /// The target it concerns, if any.
    pub target: Option<String>,
    /// Everything else, as ordered key/value pairs (reason, bytes, address, …).
    pub details: Vec<(String, String)>,
}

impl AuditEvent {
    /// An event of `kind` by `actor` at `at`, about nothing in particular yet.
    pub fn new(at: SystemTime, actor: Actor, kind: EventKind) -> AuditEvent {
        AuditEvent {
            at,
            actor,
            kind,
            request: None,
            vendor: None,
            technician: None,
            target: None,
            details: Vec::new(),
        }
    }

    /// Names the request (and session) the event concerns.
    pub fn request(mut self, id: impl ToString) -> AuditEvent {
        self.request = Some(id.to_string());
        self
    }

    /// Names the vendor the event concerns (a whole vendor, no one technician).
    pub fn for_vendor(mut self, vendor: &str) -> AuditEvent {
        self.vendor = Some(vendor.to_owned());
        self
    }

    /// Names the vendor and technician the event concerns.
    pub fn technician(mut self, vendor: &str, technician: &str) -> AuditEvent {
        self.vendor = Some(vendor.to_owned());
        self.technician = Some(technician.to_owned());
        self
    }

    /// Names the target the event concerns.
    pub fn target(mut self, target: &str) -> AuditEvent {
        self.target = Some(target.to_owned());
        self
    }

    /// Adds a detail.
    pub fn detail(mut self, key: &str, value: impl ToString) -> AuditEvent {
        self.details.push((key.to_owned(), value.to_string()));
        self
    }

    /// The value of detail `key`, if the event has one.
    pub fn detail_value(&self, key: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// The bytes the chain hash covers: every field, each length-prefixed, so no two
    /// different events encode alike, whatever characters they contain.
    pub fn canonical(&self, seq: i64, prev_hash: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(bytes.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(bytes);
            out.push(b'\n');
        };
        field(b"sekisho-audit-1");
        field(seq.to_string().as_bytes());
        field(prev_hash.as_bytes());
        field(to_unix_ms(self.at).to_string().as_bytes());
        field(self.actor.encode().as_bytes());
        field(self.kind.as_str().as_bytes());
        for optional in [&self.request, &self.vendor, &self.technician, &self.target] {
            match optional {
                Some(value) => field(format!("+{value}").as_bytes()),
                None => field(b"-"),
            }
        }
        field(self.details.len().to_string().as_bytes());
        for (key, value) in &self.details {
            field(key.as_bytes());
            field(value.as_bytes());
        }
        out
    }
}

/// A time as it appears in event details and exports: RFC 3339, UTC, to the second.
pub fn timestamp(time: SystemTime) -> String {
    match jiff::Timestamp::try_from(time) {
        Ok(stamp) => stamp
            .round(jiff::Unit::Second)
            .map(|s| s.to_string())
            .unwrap_or_else(|_| stamp.to_string()),
        Err(_) => "?".to_owned(),
    }
}

/// The hash of event number `seq` chained to `prev_hash`: SHA-256, lowercase hex.
pub fn chain_hash(seq: i64, prev_hash: &str, event: &AuditEvent) -> String {
    crate::encoding::hex(digest(&SHA256, &event.canonical(seq, prev_hash)).as_ref())
}

/// An event as stored: numbered and chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its number: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// The hash of the event before (or [`GENESIS_HASH`]).
    pub prev_hash: String,
    /// Its own hash.
    pub hash: String,
    /// The event.
    pub event: AuditEvent,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event is where it should be and unchanged.
    Intact {
        /// How many events.
        count: i64,
        /// The last event's hash (the genesis hash when empty).
        head: String,
    },
    /// The first place the chain breaks.
    Broken {
        /// The event number where it breaks.
        seq: i64,
        /// What is wrong there.
        problem: ChainBreak,
    },
}

/// What is wrong where the chain breaks. Its `Display` is the English sentence the CLI
/// prints; the web UI words each case in the page's language from the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Event `missing` is not stored; the next stored is `next`.
    Missing {
        /// The number expected.
        missing: i64,
        /// The number found instead.
        next: i64,
    },
    /// Event `seq` comes again, or before its turn.
    OutOfOrder {
        /// The number found.
        seq: i64,
    },
    /// The event names another hash as the one before it.
    NotChained,
    /// The event's contents do not give its hash.
    Edited,
    /// The log's head record counts more events than the chain holds.
    CutOff {
        /// How many events the head record says the log holds.
        recorded: i64,
        /// Where the chain ends.
        count: i64,
    },
    /// The event the head record names is not the chain's event of that number.
    HeadReplaced,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Missing { missing, next } => write!(
                f,
                "event {missing} is missing (the next stored is {next}): events were deleted"
            ),
            ChainBreak::OutOfOrder { seq } => write!(
                f,
                "event {seq} appears again or out of order: events were inserted or reordered"
            ),
            ChainBreak::NotChained => f.write_str(
                "it does not chain to the event before it: an event before it was changed, removed or inserted",
            ),
            ChainBreak::Edited => {
                f.write_str("its contents do not match its hash: the event was edited")
            }
            ChainBreak::CutOff { recorded, count } => write!(
                f,
                "the log's head record says it holds {recorded} events, but the chain ends at event {count}: events were cut off the end"
            ),
            ChainBreak::HeadReplaced => f.write_str(
                "it is not the event the log's head record names: events at the end were replaced, or the head record was altered",
            ),
        }
    }
}

/// Walks `events` (in the order stored, by `seq`) and checks the chain.
pub fn verify(events: impl IntoIterator<Item = StoredEvent>) -> Verdict {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    for stored in events {
        if stored.seq != expected_seq {
            let problem = if stored.seq > expected_seq {
                ChainBreak::Missing {
                    missing: expected_seq,
                    next: stored.seq,
                }
            } else {
                ChainBreak::OutOfOrder { seq: stored.seq }
            };
            return Verdict::Broken {
                seq: expected_seq,
                problem,
            };
        }
        if stored.prev_hash != prev_hash {
            return Verdict::Broken {
                seq: stored.seq,
                problem: ChainBreak::NotChained,
            };
        }
        let recomputed = chain_hash(stored.seq, &stored.prev_hash, &stored.event);
        if recomputed != stored.hash {
            return Verdict::Broken {
                seq: stored.seq,
                problem: ChainBreak::Edited,
            };
        }
        prev_hash = stored.hash;
        expected_seq += 1;
    }
    Verdict::Intact {
        count: expected_seq - 1,
        head: prev_hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn chain(count: usize) -> Vec<StoredEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=count)
            .map(|n| {
                let event = AuditEvent::new(
                    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n as u64),
                    Actor::Staff("suzuki".into()),
                    EventKind::RequestApproved,
                )
                .request(format!("r-{n}"))
                .detail("until", "2026-11-21T15:00:00Z");
                let seq = n as i64;
                let hash = chain_hash(seq, &prev, &event);
                let stored = StoredEvent {
                    seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    event,
                };
                prev = hash;
                stored
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies_with_its_head() {
        let events = chain(5);
        let head = events[4].hash.clone();
        assert_eq!(verify(events), Verdict::Intact { count: 5, head });
        assert_eq!(
            verify(Vec::new()),
            Verdict::Intact {
                count: 0,
                head: GENESIS_HASH.into()
            }
        );
    }

    #[test]
    fn an_edit_a_deletion_an_insertion_and_a_reordering_are_each_found_where_they_are() {
        let mut edited = chain(5);
        edited[2].event.details[0].1 = "2026-11-21T23:00:00Z".into();
        assert!(matches!(
            verify(edited),
            Verdict::Broken {
                seq: 3,
                problem: ChainBreak::Edited
            }
        ));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert!(matches!(
            verify(deleted),
            Verdict::Broken {
                seq: 2,
                problem: ChainBreak::Missing {
                    missing: 2,
                    next: 3
                }
            }
        ));

        let mut inserted = chain(5);
        let mut extra = inserted[1].clone();
        extra.event.actor = Actor::Staff("mallory".into());
        inserted.insert(2, extra);
        assert!(matches!(verify(inserted), Verdict::Broken { seq: 3, .. }));

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert!(matches!(verify(reordered), Verdict::Broken { seq: 2, .. }));

        // A deletion at the end is only found against a head written down before.
        let mut cut = chain(5);
        let head = cut[4].hash.clone();
        cut.pop();
        assert!(matches!(verify(cut), Verdict::Intact { count: 4, head: now } if now != head));
    }

    #[test]
    fn no_two_different_events_encode_alike() {
        let base = AuditEvent::new(
            UNIX_EPOCH,
            Actor::Staff("a".into()),
            EventKind::ReviewMarked,
        );
        let one = base.clone().detail("k", "a\n1:b");
        let two = base.clone().detail("k", "a").detail("1:b", "");
        assert_ne!(
            one.canonical(1, GENESIS_HASH),
            two.canonical(1, GENESIS_HASH)
        );
        let none = base.clone();
        let empty = base.request("");
        assert_ne!(
            none.canonical(1, GENESIS_HASH),
            empty.canonical(1, GENESIS_HASH)
        );
    }

    #[test]
    fn actors_and_kinds_round_trip_through_their_stored_words() {
        for actor in [
            Actor::Technician {
                vendor: "acme-ehr".into(),
                technician: "tanaka".into(),
            },
            Actor::Staff("suzuki".into()),
            Actor::Broker("1f2e".into()),
        ] {
            assert_eq!(Actor::decode(&actor.encode()), Some(actor));
        }
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
        }
    }
}
