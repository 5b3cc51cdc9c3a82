//! One audit event as one syslog message: RFC 5424, framed by octet counting (RFC 6587
//! §3.4.1). Pure: no I/O, the time is the event's own.
//!
//! ```text
//! 123 <85>1 2026-11-21T06:00:00.123Z broker-host sekisho 1f2e3d4c5b6a7980 session-opened - {"seq":42,…}
//! ```
//!
//! - PRI: facility `authpriv` (10; access and authorization, which is what this log is) and a
//!   severity by the event's kind ([`severity`]).
//! - TIMESTAMP: the event's time in UTC, to the millisecond (the export line holds the same
//!   time as `at_ms`).
//! - HOSTNAME: the host the broker runs on; APP-NAME `sekisho`; PROCID: the id of the broker
//!   that sent it (`DATA_DIR/broker-id`); MSGID: the event's kind (`session-opened`).
//! - No STRUCTURED-DATA (`-`): the MSG is the event's export line ([`ExportLine`]), the
//!   same JSON the file stream and `audit export` write, with `seq` and the chain hashes, so a
//!   SIEM can check what it received against `audit verify`. It is sent without a BOM (RFC 5424
//!   allows either; several collectors keep a BOM as part of the text).

use std::time::SystemTime;

use crate::audit::checkpoint::Checkpoint;
use crate::audit::{EventKind, ExportLine, StoredEvent};
use crate::clock::to_unix_ms;

/// The APP-NAME of every message.
pub const APP_NAME: &str = "sekisho";
/// `authpriv`: security and authorization messages.
pub const FACILITY_AUTHPRIV: u8 = 10;

/// RFC 5424 severities this stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something was refused or failed, or an alert may not have gone out: worth a look.
    Warning = 4,
    /// A normal but significant change of who may do what: approvals, sessions, accounts,
    /// lockdown, policies.
    Notice = 5,
    /// Routine detail: requests made, forwards opened and closed, warnings to the technician.
    Info = 6,
}

/// The severity of an event of `kind`.
///
/// Every kind is listed (no `_` arm), so a new kind does not compile until someone decides
/// how loud it is.
pub fn severity(kind: EventKind) -> Severity {
    use EventKind as K;
    match kind {
        K::RequestRefused
        | K::SessionOpenRefused
        | K::ForwardRefused
        | K::ConnectionRefused
        | K::EnrollmentRefused
        | K::PolicyReloadRefused
        | K::StaffRefused
        | K::OtpFailed
        | K::StaffLoginFailed
        | K::StaffConfirmFailed
        | K::TechnicianLocked
        | K::StaffLocked
        | K::KeysRefused
        | K::AuditStreamFailed
        | K::AuditSyslogFailed
        | K::WebhookFailed
        | K::WebhookSkipped
        | K::ConnectionLost
        | K::ClockJumped => Severity::Warning,
        K::RequestApproved
        | K::RequestDenied
        | K::RequestExpired
        | K::SessionOpened
        | K::SessionResumed
        | K::SessionExtended
        | K::SessionExtensionAsked
        | K::SessionEnded
        | K::TechnicianUnlocked
        | K::TechnicianSecretSet
        | K::CertificateIssued
        | K::LockdownOn
        | K::LockdownOff
        | K::LockdownLiftPending
        | K::PolicyLoaded
        | K::BrokerStarted
        | K::BrokerStopped
        | K::AuditExported
        | K::AuditStreamRecovered
        | K::AuditSyslogRecovered
        | K::SenderTookOver
        | K::ClockSync
        | K::VendorAdded
        | K::VendorDisabled
        | K::VendorEnabled
        | K::TechnicianAdded
        | K::TechnicianDisabled
        | K::TechnicianEnabled
        | K::TechnicianReset
        | K::TechnicianEnrolled
        | K::PolicyReloadRequested
        | K::StaffInvited
        | K::StaffEnrolled
        | K::StaffLogin
        | K::StaffDisabled
        | K::StaffEnabled => Severity::Notice,
        K::RequestMade
        | K::SessionWarned
        | K::ForwardOpened
        | K::ForwardClosed
        | K::ReviewMarked
        | K::StaffLogout => Severity::Info,
    }
}

/// The PRI value: facility × 8 + severity.
pub fn priority(kind: EventKind) -> u8 {
    FACILITY_AUTHPRIV * 8 + severity(kind) as u8
}

/// RFC 5424's TIMESTAMP for `at`: UTC, milliseconds, `Z` (`2026-11-21T06:00:00.123Z`).
pub fn timestamp(at: SystemTime) -> String {
    let ms = to_unix_ms(at);
    match jiff::Timestamp::from_second(ms.div_euclid(1000)) {
        Ok(second) => format!(
            "{}.{:03}Z",
            second.strftime("%Y-%m-%dT%H:%M:%S"),
            ms.rem_euclid(1000)
        ),
        // Outside jiff's years -9999..=9999: RFC 5424's NILVALUE rather than a wrong time.
        Err(_) => "-".to_owned(),
    }
}

/// A header field as RFC 5424 allows it: printable US-ASCII without spaces, at most `max`
/// characters, or the NILVALUE `-` when nothing is left.
pub fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// Who sends: the HOSTNAME and PROCID fields, cleaned once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    hostname: String,
    procid: String,
}

impl Origin {
    /// `hostname` (at most 255 characters) and the broker's id as PROCID (at most 128).
    pub fn new(hostname: &str, broker_id: &str) -> Origin {
        Origin {
            hostname: header_field(hostname, 255),
            procid: header_field(broker_id, 128),
        }
    }

    /// The message for `stored`, unframed.
    pub fn message(&self, stored: &StoredEvent) -> String {
        let kind = stored.event.kind;
        format!(
            "<{}>1 {} {} {APP_NAME} {} {} - {}",
            priority(kind),
            timestamp(stored.event.at),
            self.hostname,
            self.procid,
            header_field(kind.as_str(), 32),
            ExportLine::of(stored).to_json()
        )
    }
}

impl Origin {
    /// The message for a signed checkpoint of the chain, unframed: notice, MSGID
    /// `audit-checkpoint`, the time it was signed, its line as the text.
    pub fn checkpoint_message(&self, checkpoint: &Checkpoint) -> String {
        format!(
            "<{}>1 {} {} {APP_NAME} {} {CHECKPOINT_MSGID} - {}",
            FACILITY_AUTHPRIV * 8 + Severity::Notice as u8,
            timestamp(checkpoint.time()),
            self.hostname,
            self.procid,
            checkpoint.to_line()
        )
    }
}

/// The MSGID of a checkpoint's message.
pub const CHECKPOINT_MSGID: &str = "audit-checkpoint";

/// Appends `message` to `out` framed by octet counting: its length in bytes, a space, the
/// message (RFC 6587 §3.4.1), so a message may hold any byte, a line break included.
pub fn frame(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEvent, GENESIS_HASH, chain_hash};
    use std::time::{Duration, UNIX_EPOCH};

    fn stored(kind: EventKind, at: SystemTime) -> StoredEvent {
        let event = AuditEvent::new(at, Actor::Staff("suzuki".into()), kind)
            .request("r-1")
            .detail("reason", "患者データ\nline two");
        StoredEvent {
            seq: 7,
            prev_hash: GENESIS_HASH.into(),
            hash: chain_hash(7, GENESIS_HASH, &event),
            event,
        }
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        let mut out = Vec::new();
        frame("héllo", &mut out);
        frame("", &mut out);
        frame("a b\nc", &mut out);
        assert_eq!(out, "6 héllo0 5 a b\nc".as_bytes());
    }

    #[test]
    fn refusals_and_failures_are_warnings_approvals_notices_forwards_info() {
        for kind in [
            EventKind::RequestRefused,
            EventKind::OtpFailed,
            EventKind::TechnicianLocked,
            EventKind::StaffLocked,
            EventKind::AuditStreamFailed,
            EventKind::AuditSyslogFailed,
            EventKind::KeysRefused,
            EventKind::WebhookFailed,
            EventKind::WebhookSkipped,
            EventKind::ConnectionRefused,
            EventKind::ClockJumped,
        ] {
            assert_eq!(severity(kind), Severity::Warning, "{kind:?}");
        }
        for kind in [
            EventKind::RequestApproved,
            EventKind::SessionOpened,
            EventKind::LockdownOn,
            EventKind::AuditSyslogRecovered,
            EventKind::SenderTookOver,
        ] {
            assert_eq!(severity(kind), Severity::Notice, "{kind:?}");
        }
        assert_eq!(severity(EventKind::ForwardOpened), Severity::Info);
        // authpriv.warning, authpriv.notice, authpriv.info
        assert_eq!(priority(EventKind::OtpFailed), 84);
        assert_eq!(priority(EventKind::SessionOpened), 85);
        assert_eq!(priority(EventKind::ForwardClosed), 86);
        // Every kind's word fits MSGID (printable ASCII, at most 32) unchanged.
        for kind in EventKind::ALL {
            assert_eq!(header_field(kind.as_str(), 32), kind.as_str());
        }
    }

    #[test]
    fn the_timestamp_is_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_395_600_123);
        assert_eq!(timestamp(at), "2026-11-23T01:00:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn a_message_is_rfc_5424_with_the_export_line_as_its_text() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_395_600_007);
        let event = stored(EventKind::SessionOpened, at);
        let origin = Origin::new("broker 01.hospital.local", "1f2e3d4c5b6a7980");
        let message = origin.message(&event);
        let json = ExportLine::of(&event).to_json();
        assert_eq!(
            message,
            format!(
                "<85>1 2026-11-23T01:00:00.007Z broker01.hospital.local sekisho 1f2e3d4c5b6a7980 session-opened - {json}"
            )
        );
        assert!(!message.contains('\n'), "JSON escapes the line break");
        assert_eq!(
            Origin::new("", "").message(&event).split(' ').nth(2),
            Some("-")
        );
    }
}
