//! The admin command line's commands, as functions the `sekisho-broker` binary calls.
//!
//! Each command takes what it acts on (a [`Desk`](crate::approval::Desk), a configuration)
//! and the time, read once by the caller, and returns the text to print or a [`CliError`]
//! whose `Display` is one sentence for the person at the terminal. The binary only parses
//! arguments, opens the hospital and prints.
//!
//! Everything shown comes from the database, and much of it was typed by a vendor's
//! technician (purpose, ticket): [`clean`] strips control characters from it, so a request
//! cannot move the cursor or recolour an approver's terminal.
//!
//! # Layout
//!
//! - `when`: `--for 1h30m` and `--until 14:30` as approvers type them.
//! - `table`: plain-text tables and the cleaning of untrusted text.
//! - `requests`: `request list|approve|deny` and `session list|revoke|extend`.
//! - `admin`: `lockdown on|off|status`.
//! - `identity`: `vendor add|list|disable|enable`, `technician add|list|disable|enable|
//!   unlock|reset`.
//! - `audit`: `audit head|verify|list|show|export|review|unreviewed`.
//! - `staff`: `staff list|invite|disable|enable` (the web UI's accounts, from the host).
//! - `policy`: `policy check|render|reload`.
//! - `operator`: who acts: `--as NAME` with that person's one-time code, or `--host-admin`.

mod admin;
pub(crate) mod audit;
mod identity;
mod operator;
mod policy;
mod requests;
mod staff;
mod status;
mod table;
mod when;

use std::path::PathBuf;
use std::time::SystemTime;

pub use admin::{lockdown_off, lockdown_on, lockdown_status};
pub use audit::{
    AuditError, ChainIntact, CheckpointSources, EventQuery, ExportFormat, ExportRequest, Exported,
    audit_export, audit_head, audit_list, audit_review, audit_show, audit_unreviewed, audit_verify,
    audit_verify_file, check_chain, parse_within,
};
pub use identity::{
    EnrollmentHints, TechnicianToAdd, technician_add, technician_list, technician_reset,
    technician_set_enabled, technician_unlock, vendor_add, vendor_list, vendor_set_enabled,
};
pub use operator::{authenticate, host_admin};
pub use policy::{policy_check, policy_reload, policy_render};
pub use requests::{
    request_approve, request_deny, request_list, session_extend, session_list, session_revoke,
};
pub use staff::{staff_invite, staff_list, staff_set_disabled};
pub use status::{
    BEHIND_LIMIT, BrokerClock, CLOCK_WINDOW, ClockProblem, JUMP_RECENT, JumpSeen, LeaseNow,
    SenderProblem, SenderStatus, Status, StatusReport, SyncSeen, broker_clocks,
    checkpoint_key_line, span, status, status_in, status_report,
};
pub use table::clean;
pub use when::{end_time, parse_duration, parse_end_time};

use crate::approval::DeskError;
use crate::clock::{Clock, Sleep};
use crate::store::{StoreError, StoreLocation};
use crate::{BindError, BrokerConfig};

/// Why a command did not do what was asked; `Display` is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// What was typed cannot be used; the person can correct it.
    #[error("{0}")]
    Input(String),
    /// The policy files have problems (the caller prints each as `file:line: reason`).
    #[error("{} problem(s) in {}; fix them and run the command again.", .errors.0.len(), .dir.display())]
    Policy {
        /// The policies directory.
        dir: PathBuf,
        /// Every problem.
        errors: crate::policy::PolicyErrors,
    },
    /// The desk refused, or could not act.
    #[error(transparent)]
    Desk(#[from] DeskError),
    /// The database could not be read or written; nothing was changed.
    #[error("Nothing was changed: {0}. Check the broker's database and try again.")]
    Store(StoreError),
    /// A command that only reads could not read the database.
    #[error("The broker's database cannot be read: {0}. Check it and try again.")]
    Unreadable(StoreError),
    /// No such technician.
    #[error(
        "There is no technician {vendor}/{technician}; list them with `sekisho-broker technician list`."
    )]
    NoSuchTechnician {
        /// The vendor typed.
        vendor: String,
        /// The technician typed.
        technician: String,
    },
    /// The SQLite database the command would act on does not exist.
    #[error(
        "There is no sekisho database at {}; check --data-dir or --database (`sekisho-broker serve` creates it on its first start).",
        .0.display()
    )]
    NoDatabase(PathBuf),
    /// The policies, time zone, database or sealing key could not be opened.
    #[error(transparent)]
    Open(#[from] BindError),
    /// The certificate authority could not issue or write.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// A TOTP secret could not be turned into an `otpauth://` URI.
    #[error(transparent)]
    Otp(#[from] crate::otp::OtpError),
}

/// Refuses to act on a SQLite database that does not exist yet: an admin command pointed at
/// the wrong `--data-dir` would otherwise create an empty one and report that nothing is
/// pending. (A PostgreSQL database is always taken as given.)
pub fn expect_existing_database(config: &BrokerConfig) -> Result<(), CliError> {
    match config.store_location() {
        StoreLocation::Sqlite(path) if !path.exists() => Err(CliError::NoDatabase(path)),
        _ => Ok(()),
    }
}

/// A reason the person must give (`--reason`), trimmed and checked.
pub fn required_reason(reason: &str, what: &str) -> Result<String, CliError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CliError::Input(format!(
            "Give a reason with --reason; it is {what}."
        )));
    }
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(CliError::Input(
            "A reason is one line of at most 500 characters.".to_owned(),
        ));
    }
    Ok(reason.to_owned())
}

/// A clock that stands at the moment a command started: one command reads the time once,
/// so everything it records and prints agrees.
#[derive(Debug, Clone, Copy)]
pub struct CommandClock(pub SystemTime);

impl Clock for CommandClock {
    fn now(&self) -> SystemTime {
        self.0
    }

    fn instant(&self) -> std::time::Instant {
        std::time::Instant::now()
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Sleep {
        // A command never waits on its own clock; if asked, wait on the real one.
        crate::clock::SystemClock.sleep_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_required_and_one_line() {
        assert_eq!(
            required_reason("  wrong target ", "told").unwrap(),
            "wrong target"
        );
        assert!(required_reason(" ", "told").is_err());
        assert!(required_reason("a\nb", "told").is_err());
    }
}
