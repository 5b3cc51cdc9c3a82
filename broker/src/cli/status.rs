//! `status`: the hospital's broker at a glance, for the admin on call and for a monitoring
//! check: lockdown, what waits for approval and what is live, the audit log's head, and who
//! sends the approvers' webhook and the audit syslog, how far behind.
//!
//! It only reads. Its exit code is the monitoring check's answer: a destination whose
//! sender's lease ran out (its broker crashed, hangs or lost the database, and no other took
//! over), or a sender more than [`BEHIND_LIMIT`] events behind, is a problem; the output says
//! which and what to do. A lease let go at a clean shutdown is not: stopping a broker, or
//! removing its setting, is done on purpose.

use std::time::SystemTime;

use super::CliError;
use super::admin::lockdown_status;
use super::table::{Table, clean};
use crate::approval::Desk;
use crate::session::Stage;
use crate::store::SenderLease;

/// A sender further behind than this many audit events is reported as a problem: at the
/// rate a busy hospital records events, that is minutes of not keeping up.
pub const BEHIND_LIMIT: i64 = 1_000;

/// What `status` found: the text to print, and the problems in it (none: all is well).
#[derive(Debug)]
pub struct Status {
    /// The whole report.
    pub text: String,
    /// One sentence per problem, each also in `text`.
    pub problems: Vec<String>,
}

/// `status`.
pub async fn status(desk: &Desk, now: SystemTime) -> Result<Status, CliError> {
    let store = desk.store();
    let mut text = lockdown_status(desk).await?;
    let open = store
        .live_requests(now)
        .await
        .map_err(CliError::Unreadable)?;
    let count = |wanted: Stage| open.iter().filter(|r| r.stage == wanted).count();
    text.push_str(&format!(
        "\nRequests waiting for approval: {}; approved, not yet opened: {}; live sessions: {}.",
        count(Stage::Requested),
        count(Stage::Approved),
        count(Stage::Active)
    ));
    let (events, head) = store.audit_head().await.map_err(CliError::Unreadable)?;
    text.push_str(&format!("\nAudit log: {events} events; head {head}."));

    let leases = store.sender_leases().await.map_err(CliError::Unreadable)?;
    let mut problems = Vec::new();
    if leases.is_empty() {
        text.push_str(
            "\nSenders: none (no broker has been configured with the approvers' webhook or an audit syslog).",
        );
    } else {
        let now_ms = store
            .database_now_ms()
            .await
            .map_err(CliError::Unreadable)?;
        let mut table = Table::new(&["SENDS", "TO", "BROKER", "LEASE", "BEHIND"]);
        for lease in &leases {
            let behind = events - lease.after_seq;
            table.row(vec![
                clean(&lease.feature),
                clean(&lease.destination),
                clean(&lease.holder),
                lease_state(lease, now_ms),
                format!("{behind} events"),
            ]);
            if let Some(problem) = problem(lease, now_ms, behind) {
                problems.push(problem);
            }
        }
        text.push_str("\nSenders (one broker at a time sends to each destination):\n");
        text.push_str(&table.render());
    }
    if problems.is_empty() {
        text.push_str("\nNo problems.");
    } else {
        for problem in &problems {
            text.push_str("\nPROBLEM: ");
            text.push_str(problem);
        }
    }
    Ok(Status { text, problems })
}

/// The lease as a few words: held and for how long still, or since when nobody holds it.
fn lease_state(lease: &SenderLease, now_ms: i64) -> String {
    if lease.expires_at == 0 {
        "let go at its broker's shutdown; nobody sends".to_owned()
    } else if lease.expires_at > now_ms {
        format!("held, {} left", span(lease.expires_at - now_ms))
    } else {
        format!("ran out {} ago", span(now_ms - lease.expires_at))
    }
}

/// What is wrong with a sender, in a sentence that says what to do.
fn problem(lease: &SenderLease, now_ms: i64, behind: i64) -> Option<String> {
    let what = format!("{} to {}", clean(&lease.feature), clean(&lease.destination));
    // Let go at a clean shutdown: the broker was stopped or its setting removed on purpose.
    if lease.expires_at == 0 {
        return None;
    }
    if lease.expires_at <= now_ms {
        return Some(format!(
            "no broker is sending the {what}, and {behind} events wait: start a broker configured to send it (a broker that stops cleanly lets its lease go, and then this is no longer reported)."
        ));
    }
    (behind > BEHIND_LIMIT).then(|| {
        format!(
            "broker {} is {behind} events behind sending the {what}: check that the destination answers (the broker's log says why it does not).",
            clean(&lease.holder)
        )
    })
}

/// A duration of milliseconds, in the largest whole unit that fits.
fn span(ms: i64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires_at: i64) -> SenderLease {
        SenderLease {
            feature: "audit-syslog".into(),
            destination: "tls://siem.hospital.local:6514".into(),
            holder: "b-1".into(),
            term: 3,
            expires_at,
            after_seq: 10,
        }
    }

    #[test]
    fn a_held_lease_is_fine_until_its_sender_falls_too_far_behind() {
        assert_eq!(lease_state(&lease(25_000), 10_000), "held, 15 s left");
        assert_eq!(problem(&lease(25_000), 10_000, BEHIND_LIMIT), None);
        let far = problem(&lease(25_000), 10_000, BEHIND_LIMIT + 1).unwrap();
        assert!(far.starts_with("broker b-1 is 1001 events behind"), "{far}");
    }

    #[test]
    fn a_lease_run_out_is_a_problem_and_one_let_go_is_not() {
        assert_eq!(
            lease_state(&lease(0), 10_000),
            "let go at its broker's shutdown; nobody sends"
        );
        assert_eq!(
            lease_state(&lease(10_000), 10_000 + 3 * 60_000),
            "ran out 3 min ago"
        );
        // Let go on purpose (a stop, a setting removed) is no problem; run out is.
        assert_eq!(problem(&lease(0), 10_000, 5), None);
        let nobody = problem(&lease(10_000), 10_000, 5).unwrap();
        assert!(
            nobody.starts_with(
                "no broker is sending the audit-syslog to tls://siem.hospital.local:6514, and 5 events wait"
            ),
            "{nobody}"
        );
    }

    #[test]
    fn spans_read_in_the_largest_whole_unit() {
        assert_eq!(span(119_999), "119 s");
        assert_eq!(span(120_000), "2 min");
        assert_eq!(span(7_200_000), "2 h");
        assert_eq!(span(3 * 86_400_000), "3 days");
    }
}
