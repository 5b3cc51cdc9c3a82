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

/// The facts `status` reports, for the CLI's text and the web UI's page alike.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Requests waiting for approval.
    pub waiting: usize,
    /// Approved, not yet opened.
    pub approved: usize,
    /// Live sessions.
    pub live: usize,
    /// How many audit events, and the head's hash.
    pub audit_events: i64,
    /// The last event's hash.
    pub audit_head: String,
    /// Every webhook relay and syslog collector a broker has sent to.
    pub senders: Vec<SenderStatus>,
}

/// One destination's sender.
#[derive(Debug, Clone)]
pub struct SenderStatus {
    /// The lease as stored.
    pub lease: SenderLease,
    /// How it stands now, by the database's clock.
    pub lease_now: LeaseNow,
    /// Audit events recorded after the last one it handled.
    pub behind: i64,
}

/// How a lease stands now, by the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseNow {
    /// Held, for this many milliseconds still unless renewed.
    Held(i64),
    /// Let go at its broker's clean shutdown: nobody sends, on purpose.
    LetGo,
    /// Ran out this many milliseconds ago without being renewed or taken over.
    RanOut(i64),
}

/// What is wrong with a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderProblem {
    /// Its lease ran out and no broker took over.
    Stopped,
    /// Its holder is more than [`BEHIND_LIMIT`] events behind.
    Behind,
}

impl SenderStatus {
    /// What is wrong, if anything.
    pub fn problem(&self) -> Option<SenderProblem> {
        match self.lease_now {
            LeaseNow::LetGo => None,
            LeaseNow::RanOut(_) => Some(SenderProblem::Stopped),
            LeaseNow::Held(_) => (self.behind > BEHIND_LIMIT).then_some(SenderProblem::Behind),
        }
    }

    /// The lease as a few words: held and for how long still, or since when nobody holds it.
    pub fn lease_words(&self) -> String {
        match self.lease_now {
            LeaseNow::Held(left) => format!("held, {} left", span(left)),
            LeaseNow::LetGo => "let go at its broker's shutdown; nobody sends".to_owned(),
            LeaseNow::RanOut(ago) => format!("ran out {} ago", span(ago)),
        }
    }

    /// The problem in a sentence that says what to do.
    pub fn problem_sentence(&self) -> Option<String> {
        let lease = &self.lease;
        let what = format!("{} to {}", clean(&lease.feature), clean(&lease.destination));
        let behind = self.behind;
        Some(match self.problem()? {
            SenderProblem::Stopped => format!(
                "no broker is sending the {what}, and {behind} events wait: start a broker configured to send it (a broker that stops cleanly lets its lease go, and then this is no longer reported)."
            ),
            SenderProblem::Behind => format!(
                "broker {} is {behind} events behind sending the {what}: check that the destination answers (the broker's log says why it does not).",
                clean(&lease.holder)
            ),
        })
    }
}

/// Reads what `status` reports.
pub async fn status_report(desk: &Desk, now: SystemTime) -> Result<StatusReport, CliError> {
    let store = desk.store();
    let open = store
        .live_requests(now)
        .await
        .map_err(CliError::Unreadable)?;
    let count = |wanted: Stage| open.iter().filter(|r| r.stage == wanted).count();
    let (audit_events, audit_head) = store.audit_head().await.map_err(CliError::Unreadable)?;
    let leases = store.sender_leases().await.map_err(CliError::Unreadable)?;
    let now_ms = store
        .database_now_ms()
        .await
        .map_err(CliError::Unreadable)?;
    let senders = leases
        .into_iter()
        .map(|lease| SenderStatus {
            lease_now: lease_now(&lease, now_ms),
            behind: audit_events - lease.after_seq,
            lease,
        })
        .collect();
    Ok(StatusReport {
        waiting: count(Stage::Requested),
        approved: count(Stage::Approved),
        live: count(Stage::Active),
        audit_events,
        audit_head,
        senders,
    })
}

/// `status`.
pub async fn status(desk: &Desk, now: SystemTime) -> Result<Status, CliError> {
    let mut text = lockdown_status(desk).await?;
    let report = status_report(desk, now).await?;
    text.push_str(&format!(
        "\nRequests waiting for approval: {}; approved, not yet opened: {}; live sessions: {}.",
        report.waiting, report.approved, report.live
    ));
    text.push_str(&format!(
        "\nAudit log: {} events; head {}.",
        report.audit_events, report.audit_head
    ));
    if report.senders.is_empty() {
        text.push_str(
            "\nSenders: none (no broker has been configured with the approvers' webhook or an audit syslog).",
        );
    } else {
        let mut table = Table::new(&["SENDS", "TO", "BROKER", "LEASE", "BEHIND"]);
        for sender in &report.senders {
            table.row(vec![
                clean(&sender.lease.feature),
                clean(&sender.lease.destination),
                clean(&sender.lease.holder),
                sender.lease_words(),
                format!("{} events", sender.behind),
            ]);
        }
        text.push_str("\nSenders (one broker at a time sends to each destination):\n");
        text.push_str(&table.render());
    }
    let problems: Vec<String> = report
        .senders
        .iter()
        .filter_map(SenderStatus::problem_sentence)
        .collect();
    if problems.is_empty() {
        text.push_str("\nNo problems.");
    }
    for problem in &problems {
        text.push_str("\nPROBLEM: ");
        text.push_str(problem);
    }
    Ok(Status { text, problems })
}

/// How `lease` stands at `now_ms` on the database's clock.
fn lease_now(lease: &SenderLease, now_ms: i64) -> LeaseNow {
    if lease.expires_at == 0 {
        LeaseNow::LetGo
    } else if lease.expires_at > now_ms {
        LeaseNow::Held(lease.expires_at - now_ms)
    } else {
        LeaseNow::RanOut(now_ms - lease.expires_at)
    }
}

/// A duration of milliseconds, in the largest whole unit that fits.
pub fn span(ms: i64) -> String {
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

    fn sender(expires_at: i64, now_ms: i64, behind: i64) -> SenderStatus {
        let lease = SenderLease {
            feature: "audit-syslog".into(),
            destination: "tls://siem.hospital.local:6514".into(),
            holder: "b-1".into(),
            term: 3,
            expires_at,
            after_seq: 10,
        };
        SenderStatus {
            lease_now: lease_now(&lease, now_ms),
            behind,
            lease,
        }
    }

    #[test]
    fn a_held_lease_is_fine_until_its_sender_falls_too_far_behind() {
        let caught_up = sender(25_000, 10_000, BEHIND_LIMIT);
        assert_eq!(caught_up.lease_words(), "held, 15 s left");
        assert_eq!(caught_up.problem_sentence(), None);
        let far = sender(25_000, 10_000, BEHIND_LIMIT + 1)
            .problem_sentence()
            .unwrap();
        assert!(far.starts_with("broker b-1 is 1001 events behind"), "{far}");
    }

    #[test]
    fn a_lease_run_out_is_a_problem_and_one_let_go_is_not() {
        let let_go = sender(0, 10_000, 5);
        assert_eq!(
            let_go.lease_words(),
            "let go at its broker's shutdown; nobody sends"
        );
        assert_eq!(let_go.problem(), None);
        let ran_out = sender(10_000, 10_000 + 3 * 60_000, 5);
        assert_eq!(ran_out.lease_words(), "ran out 3 min ago");
        let nobody = ran_out.problem_sentence().unwrap();
        assert!(
            nobody.starts_with(
                "no broker is sending the audit-syslog to tls://siem.hospital.local:6514, and 5 events wait"
            ),
            "{nobody}"
        );
        // Expiring exactly now is over: a lease counts until, not through, its expiry.
        assert_eq!(
            sender(10_000, 10_000, 0).problem(),
            Some(SenderProblem::Stopped)
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
