//! `status`: the hospital's broker at a glance, for the admin on call and for a monitoring
//! check: lockdown, what waits for approval and what is live, the audit log's head, who
//! sends the approvers' webhook and the audit syslog, how far behind, and each broker's clock.
//!
//! It only reads. Its exit code is the monitoring check's answer: a destination whose
//! sender's lease ran out (its broker crashed, hangs or lost the database, and no other took
//! over), or a sender more than [`BEHIND_LIMIT`] events behind, is a problem; the output says
//! which and what to do. A lease let go at a clean shutdown is not: stopping a broker, or
//! removing its setting, is done on purpose.
//!
//! Clocks come from the brokers' own events ([`crate::timewatch`]): every broker that
//! recorded `clock-sync` or `clock-jumped` in the last [`CLOCK_WINDOW`] is listed with its
//! latest sync state and its latest step. A running broker whose clock is not synchronised,
//! or whose wall clock was stepped in the last [`JUMP_RECENT`], is a problem; a broker that
//! stopped cleanly (its `broker-stopped` is newer than its `broker-started`) is listed as
//! stopped and raises none. "Unknown" (nothing on the host could tell) is shown with its
//! reason and is not a problem. The window bounds what `status` reads (events are found by
//! time); a broker that has run longer than it without a change of sync state or a step is
//! not listed, and one that crashed shows as running until its events leave it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::CliError;
use super::admin::lockdown_status;
use super::table::{Table, clean};
use crate::approval::Desk;
use crate::audit::{Actor, EventKind, StoredEvent};
use crate::clock::to_unix_ms;
use crate::session::{HospitalZone, Stage};
use crate::store::{AuditFilter, SenderLease};
use crate::timewatch::SyncState;

/// How far back `status` reads the brokers' clock events.
pub const CLOCK_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// A step of a running broker's wall clock more recent than this is a problem.
pub const JUMP_RECENT: Duration = Duration::from_secs(86_400);

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
    /// Each broker's clock, as its events in the last [`CLOCK_WINDOW`] tell.
    pub clocks: Vec<BrokerClock>,
    /// Each broker's newest signed checkpoint of the audit chain whose signature verifies
    /// (which key signs for which broker, and how far).
    pub checkpoints: Vec<crate::audit::checkpoint::Checkpoint>,
}

/// One broker's clock, as its own events tell.
#[derive(Debug, Clone)]
pub struct BrokerClock {
    /// The broker's id.
    pub broker: String,
    /// Its latest `broker-stopped` is newer than its latest `broker-started`.
    pub stopped: bool,
    /// Its latest `clock-sync`, if it recorded one in the window.
    pub sync: Option<SyncSeen>,
    /// Its latest `clock-jumped`, if any in the window.
    pub jump: Option<JumpSeen>,
}

/// A recorded sync state.
#[derive(Debug, Clone)]
pub struct SyncSeen {
    /// The state.
    pub state: SyncState,
    /// What said so (`timedatectl`, `chronyc`, `none`).
    pub source: String,
    /// Why it is unknown, when it is.
    pub reason: Option<String>,
    /// When it was recorded: the state holds since (or since before, at a start).
    pub since: SystemTime,
}

/// A recorded step of the wall clock.
#[derive(Debug, Clone)]
pub struct JumpSeen {
    /// When, by the stepped clock.
    pub at: SystemTime,
    /// How long before the report that was (negative: after, by a clock set ahead).
    pub ago_ms: i64,
    /// The step, signed: positive when set forward.
    pub step_ms: i64,
    /// The wall time the monotonic clock implied (RFC 3339, as recorded).
    pub expected: String,
    /// The wall time read (RFC 3339, as recorded).
    pub observed: String,
}

/// What is wrong with a broker's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockProblem {
    /// It runs and its clock is not synchronised.
    Unsynchronised,
    /// It runs and its wall clock was stepped in the last [`JUMP_RECENT`].
    Stepped,
}

impl BrokerClock {
    /// What is wrong, if anything: nothing for a stopped broker.
    pub fn problems(&self) -> Vec<ClockProblem> {
        let mut problems = Vec::new();
        if self.stopped {
            return problems;
        }
        if self
            .sync
            .as_ref()
            .is_some_and(|sync| sync.state == SyncState::Unsynchronised)
        {
            problems.push(ClockProblem::Unsynchronised);
        }
        if self.jump.as_ref().is_some_and(JumpSeen::recent) {
            problems.push(ClockProblem::Stepped);
        }
        problems
    }

    /// `running` or `stopped`.
    pub fn state_words(&self) -> &'static str {
        if self.stopped { "stopped" } else { "running" }
    }

    /// The sync state in a few words, with its source and since when.
    pub fn sync_words(&self, zone: &HospitalZone) -> String {
        let Some(sync) = &self.sync else {
            return "not recorded".to_owned();
        };
        let since = zone.format(sync.since);
        match sync.state {
            SyncState::Synchronised => {
                format!("synchronised ({}) since {since}", clean(&sync.source))
            }
            SyncState::Unsynchronised => {
                format!("NOT synchronised ({}) since {since}", clean(&sync.source))
            }
            SyncState::Unknown => format!("unknown since {since} (see below)"),
        }
    }

    /// The latest step in a few words.
    pub fn jump_words(&self, zone: &HospitalZone) -> String {
        match &self.jump {
            None => "none".to_owned(),
            Some(jump) => format!(
                "{} {} at {}",
                if jump.step_ms < 0 { "back" } else { "forward" },
                span(jump.step_ms.saturating_abs()),
                zone.format(jump.at)
            ),
        }
    }

    /// Why the sync state is unknown, in a sentence, when it is.
    pub fn unknown_sentence(&self) -> Option<String> {
        let sync = self.sync.as_ref()?;
        (sync.state == SyncState::Unknown).then(|| {
            format!(
                "Broker {}: whether its clock is synchronised is unknown: {}. This is not counted as a problem, but nothing vouches for the times it records; a time service (chrony, systemd-timesyncd) on its host would.",
                clean(&self.broker),
                clean(sync.reason.as_deref().unwrap_or("no reason was recorded"))
            )
        })
    }

    /// Each problem in a sentence that says what to do.
    pub fn problem_sentences(&self, zone: &HospitalZone) -> Vec<String> {
        let broker = clean(&self.broker);
        self.problems()
            .into_iter()
            .filter_map(|problem| match problem {
                ClockProblem::Unsynchronised => {
                    let sync = self.sync.as_ref()?;
                    Some(format!(
                        "broker {broker}'s clock is not synchronised ({} says so, since {} {}): the times it records may drift from the true time; check its time service (chrony, systemd-timesyncd) and that it reaches its NTP servers.",
                        clean(&sync.source),
                        zone.format(sync.since),
                        zone.name()
                    ))
                }
                ClockProblem::Stepped => {
                    let jump = self.jump.as_ref()?;
                    Some(format!(
                        "broker {broker}'s wall clock was set {} by {} at {} {} ({}; expected {}, read {}): check the host's time service; events recorded around then carry the wall clock's time, so order them by their number in the log, not by their time.",
                        if jump.step_ms < 0 { "back" } else { "forward" },
                        span(jump.step_ms.saturating_abs()),
                        zone.format(jump.at),
                        zone.name(),
                        jump.ago_words(),
                        clean(&jump.expected),
                        clean(&jump.observed)
                    ))
                }
            })
            .collect()
    }
}

impl JumpSeen {
    /// Recorded in the last [`JUMP_RECENT`] (or stamped ahead of now).
    pub fn recent(&self) -> bool {
        self.ago_ms < i64::try_from(JUMP_RECENT.as_millis()).unwrap_or(i64::MAX)
    }

    /// `3 min ago`, or `stamped 2 h ahead of now` for a clock set forward since.
    pub fn ago_words(&self) -> String {
        if self.ago_ms >= 0 {
            format!("{} ago", span(self.ago_ms))
        } else {
            format!(
                "stamped {} ahead of now",
                span(self.ago_ms.saturating_abs())
            )
        }
    }
}

/// Each broker's clock from `events` (oldest first): brokers that recorded `clock-sync` or
/// `clock-jumped` among them, by id.
pub fn broker_clocks(events: &[StoredEvent], now: SystemTime) -> Vec<BrokerClock> {
    #[derive(Default)]
    struct Seen {
        started: i64,
        stopped: i64,
        sync: Option<SyncSeen>,
        jump: Option<JumpSeen>,
    }
    let mut brokers: BTreeMap<&str, Seen> = BTreeMap::new();
    for stored in events {
        let event = &stored.event;
        let Actor::Broker(id) = &event.actor else {
            continue;
        };
        let seen = brokers.entry(id.as_str()).or_default();
        match event.kind {
            EventKind::BrokerStarted => seen.started = stored.seq,
            EventKind::BrokerStopped => seen.stopped = stored.seq,
            EventKind::ClockSync => {
                if let Some(state) = event.detail_value("state").and_then(SyncState::parse) {
                    seen.sync = Some(SyncSeen {
                        state,
                        source: event.detail_value("source").unwrap_or("").to_owned(),
                        reason: event.detail_value("reason").map(str::to_owned),
                        since: event.at,
                    });
                }
            }
            EventKind::ClockJumped => {
                if let Some(step_ms) = event
                    .detail_value("step_ms")
                    .and_then(|ms| ms.parse::<i64>().ok())
                {
                    seen.jump = Some(JumpSeen {
                        at: event.at,
                        ago_ms: to_unix_ms(now).saturating_sub(to_unix_ms(event.at)),
                        step_ms,
                        expected: event.detail_value("expected").unwrap_or("").to_owned(),
                        observed: event.detail_value("observed").unwrap_or("").to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    brokers
        .into_iter()
        .filter(|(_, seen)| seen.sync.is_some() || seen.jump.is_some())
        .map(|(id, seen)| BrokerClock {
            broker: id.to_owned(),
            stopped: seen.stopped > seen.started,
            sync: seen.sync,
            jump: seen.jump,
        })
        .collect()
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
    let clock_events = store
        .audit_events(&AuditFilter {
            since: now.checked_sub(CLOCK_WINDOW),
            kinds: vec![
                EventKind::ClockSync,
                EventKind::ClockJumped,
                EventKind::BrokerStarted,
                EventKind::BrokerStopped,
            ],
            ..AuditFilter::default()
        })
        .await
        .map_err(CliError::Unreadable)?;
    let checkpoints = store
        .newest_checkpoints()
        .await
        .map_err(CliError::Unreadable)?
        .into_iter()
        .filter(|checkpoint| checkpoint.signature_verifies())
        .collect();
    Ok(StatusReport {
        checkpoints,
        waiting: count(Stage::Requested),
        approved: count(Stage::Approved),
        live: count(Stage::Active),
        audit_events,
        audit_head,
        senders,
        clocks: broker_clocks(&clock_events, now),
    })
}

/// `status`.
pub async fn status(desk: &Desk, now: SystemTime) -> Result<Status, CliError> {
    status_report_text(desk, now, None).await
}

/// `status` run beside a data directory: also the fingerprint of its checkpoint key.
pub async fn status_in(
    desk: &Desk,
    now: SystemTime,
    data_dir: &std::path::Path,
) -> Result<Status, CliError> {
    status_report_text(desk, now, Some(data_dir)).await
}

async fn status_report_text(
    desk: &Desk,
    now: SystemTime,
    data_dir: Option<&std::path::Path>,
) -> Result<Status, CliError> {
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
    if report.checkpoints.is_empty() {
        text.push_str("\nSigned checkpoints: none yet (a broker signs one every few seconds while events are appended).");
    } else {
        let mut table = Table::new(&["BROKER", "KEY", "NEWEST CHECKPOINT"]);
        for checkpoint in &report.checkpoints {
            table.row(vec![
                clean(&checkpoint.broker),
                checkpoint.fingerprint(),
                format!(
                    "event {}, {}",
                    checkpoint.seq,
                    desk.zone().format(checkpoint.time())
                ),
            ]);
        }
        text.push_str(
            "\nSigned checkpoints of the audit log (each broker's newest in the database):\n",
        );
        text.push_str(&table.render());
    }
    if let Some(data_dir) = data_dir {
        text.push('\n');
        text.push_str(&checkpoint_key_line(data_dir));
    }
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
    let zone = desk.zone();
    if report.clocks.is_empty() {
        text.push_str(
            "\nClocks: no broker recorded its clock's sync state or a step of its clock in the last 7 days.",
        );
    } else {
        let mut table = Table::new(&["BROKER", "STATE", "TIME SYNC", "LAST CLOCK STEP"]);
        for clock in &report.clocks {
            table.row(vec![
                clean(&clock.broker),
                clock.state_words().to_owned(),
                clock.sync_words(zone),
                clock.jump_words(zone),
            ]);
        }
        text.push_str(&format!(
            "\nClocks (brokers that recorded their clock in the last 7 days; times in {}):\n",
            zone.name()
        ));
        text.push_str(&table.render());
        for clock in &report.clocks {
            if let Some(unknown) = clock.unknown_sentence() {
                text.push('\n');
                text.push_str(&unknown);
            }
        }
    }
    let problems: Vec<String> = report
        .senders
        .iter()
        .filter_map(SenderStatus::problem_sentence)
        .chain(
            report
                .clocks
                .iter()
                .flat_map(|clock| clock.problem_sentences(zone)),
        )
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

/// `status`'s line about this data directory's checkpoint key: its fingerprint, to write down
/// and to list in the other brokers' `trusted-checkpoint-keys`.
pub fn checkpoint_key_line(data_dir: &std::path::Path) -> String {
    match crate::audit::checkpoint::fingerprint_in(data_dir) {
        Some(fingerprint) => format!(
            "Checkpoint key of {}: {fingerprint} (write it down; other brokers sharing the database list it in their trusted-checkpoint-keys).",
            data_dir.join(crate::audit::checkpoint::KEY_FILE).display()
        ),
        None => format!(
            "Checkpoint key: none in {} yet (the broker makes it at its first start).",
            data_dir.display()
        ),
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

    fn clock_event(seq: i64, at: SystemTime, broker: &str, kind: EventKind) -> StoredEvent {
        StoredEvent {
            seq,
            prev_hash: String::new(),
            hash: String::new(),
            event: crate::audit::AuditEvent::new(at, Actor::Broker(broker.into()), kind),
        }
    }

    fn with(mut stored: StoredEvent, details: &[(&str, &str)]) -> StoredEvent {
        for (key, value) in details {
            stored.event = stored.event.detail(key, value);
        }
        stored
    }

    fn tokyo() -> HospitalZone {
        HospitalZone::resolve("Asia/Tokyo").unwrap()
    }

    #[test]
    fn each_broker_shows_its_latest_sync_state_and_step_and_a_stopped_one_raises_nothing() {
        let start = std::time::UNIX_EPOCH + Duration::from_secs(1_795_395_600);
        let hour = Duration::from_secs(3600);
        let now = start + 3 * hour;
        let events = vec![
            clock_event(1, start, "b-one", EventKind::BrokerStarted),
            with(
                clock_event(2, start, "b-one", EventKind::ClockSync),
                &[("state", "synchronised"), ("source", "chronyc")],
            ),
            clock_event(3, start, "b-two", EventKind::BrokerStarted),
            with(
                clock_event(4, start, "b-two", EventKind::ClockSync),
                &[
                    ("state", "unknown"),
                    ("source", "none"),
                    ("reason", "neither timedatectl nor chronyc could tell"),
                ],
            ),
            with(
                clock_event(5, start + hour - hour, "b-one", EventKind::ClockJumped),
                &[
                    ("expected", "2026-11-23T02:00:00Z"),
                    ("observed", "2026-11-23T01:00:00Z"),
                    ("step_ms", "-3600000"),
                ],
            ),
            with(
                clock_event(6, start + hour, "b-one", EventKind::ClockSync),
                &[
                    ("state", "unsynchronised"),
                    ("source", "chronyc"),
                    ("was", "synchronised"),
                ],
            ),
            // b-three recorded its state, then stopped: listed, no problem.
            clock_event(7, start, "b-three", EventKind::BrokerStarted),
            with(
                clock_event(8, start, "b-three", EventKind::ClockSync),
                &[("state", "unsynchronised"), ("source", "timedatectl")],
            ),
            clock_event(9, start + hour, "b-three", EventKind::BrokerStopped),
            // A broker with no clock events is not listed.
            clock_event(10, start, "b-old", EventKind::BrokerStarted),
        ];
        let clocks = broker_clocks(&events, now);
        let names: Vec<&str> = clocks.iter().map(|c| c.broker.as_str()).collect();
        assert_eq!(names, ["b-one", "b-three", "b-two"]);
        let zone = tokyo();

        let one = &clocks[0];
        assert_eq!(
            one.problems(),
            [ClockProblem::Unsynchronised, ClockProblem::Stepped]
        );
        assert_eq!(
            one.sync_words(&zone),
            "NOT synchronised (chronyc) since 2026-11-23 11:00 (Mon)"
        );
        assert_eq!(
            one.jump_words(&zone),
            "back 60 min at 2026-11-23 10:00 (Mon)"
        );
        let sentences = one.problem_sentences(&zone);
        assert!(
            sentences[0].starts_with("broker b-one's clock is not synchronised (chronyc says so, since 2026-11-23 11:00 (Mon) Asia/Tokyo)"),
            "{}",
            sentences[0]
        );
        assert!(
            sentences[1].starts_with("broker b-one's wall clock was set back by 60 min at 2026-11-23 10:00 (Mon) Asia/Tokyo (3 h ago; expected 2026-11-23T02:00:00Z, read 2026-11-23T01:00:00Z): check the host's time service; events recorded around then carry the wall clock's time"),
            "{}",
            sentences[1]
        );
        assert_eq!(one.unknown_sentence(), None);

        let three = &clocks[1];
        assert!(three.stopped);
        assert_eq!(three.state_words(), "stopped");
        assert!(three.problems().is_empty());

        let two = &clocks[2];
        assert!(two.problems().is_empty());
        assert_eq!(
            two.sync_words(&zone),
            "unknown since 2026-11-23 10:00 (Mon) (see below)"
        );
        assert_eq!(two.jump_words(&zone), "none");
        assert!(
            two.unknown_sentence()
                .unwrap()
                .starts_with("Broker b-two: whether its clock is synchronised is unknown: neither timedatectl nor chronyc could tell. This is not counted as a problem"),
            "{:?}",
            two.unknown_sentence()
        );
    }

    #[test]
    fn a_step_older_than_a_day_is_shown_but_no_longer_a_problem() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_795_395_600);
        let events = vec![with(
            clock_event(1, at, "b-one", EventKind::ClockJumped),
            &[("step_ms", "5000")],
        )];
        let day = JUMP_RECENT;
        let recent = broker_clocks(&events, at + day - Duration::from_secs(1));
        assert_eq!(recent[0].problems(), [ClockProblem::Stepped]);
        assert_eq!(
            recent[0].jump_words(&tokyo()),
            "forward 5 s at 2026-11-23 10:00 (Mon)"
        );
        let old = broker_clocks(&events, at + day);
        assert!(old[0].problems().is_empty());
        assert_eq!(old[0].sync_words(&tokyo()), "not recorded");
        // Stamped ahead of the reader's clock (set forward, then back): still recent.
        let ahead = broker_clocks(&events, at - Duration::from_secs(7200));
        assert_eq!(ahead[0].problems(), [ClockProblem::Stepped]);
        assert_eq!(
            ahead[0].jump.as_ref().unwrap().ago_words(),
            "stamped 2 h ahead of now"
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
