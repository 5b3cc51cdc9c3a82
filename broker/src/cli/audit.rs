//! `audit head|verify|list|show|export|review|unreviewed`: the auditor's commands.
//!
//! Reading changes nothing. `export` and `review` append an event of their own; an export is
//! recorded after its events are read, so it never holds its own record. Times are shown in
//! the hospital's zone, except in exports, which carry RFC 3339 UTC and the millisecond count
//! the chain hash covers, so that an export can be checked on its own, away from the database
//! (`audit verify --file`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde::{Deserialize, Serialize};

use super::table::{Table, clean, cut};
use super::{CliError, parse_duration};
use crate::approval::Desk;
use crate::audit::{
    self, Actor, AuditEvent, EventKind, GENESIS_HASH, StoredEvent, Verdict, chain_hash,
};
use crate::clock::{from_unix_ms, to_unix_ms};
use crate::session::{HospitalZone, RequestId, RequestRecord, Stage, human_duration};
use crate::store::{AuditFilter, Review, StoreError};

/// The most rows `audit list` shows unless `--limit` says otherwise.
const LIST_DEFAULT_LIMIT: usize = 200;

/// The most sessions `audit unreviewed` lists.
const UNREVIEWED_LIMIT: i64 = 1000;

/// Longest review comment accepted, in characters.
const MAX_COMMENT_CHARS: usize = 2000;

/// Why an audit command failed; `Display` is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// What was typed cannot be used, or the hospital could not be opened.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// The chain does not hold together at `seq`.
    #[error("The audit log is broken at event {seq}: {problem}.")]
    Broken {
        /// The first event number where it breaks.
        seq: i64,
        /// What is wrong there.
        problem: String,
    },
    /// A stored event cannot be read back (an unknown kind or actor, details that are not
    /// pairs): the log was altered, or written by a newer broker.
    #[error("The audit log is broken: {0} (it was altered, or written by a newer sekisho-broker).")]
    Unreadable(String),
    /// The chain holds together, but no event has the head hash written down earlier.
    #[error(
        "The audit log's {count} events chain together, but nothing matches the head you wrote down ({expected}): events were cut off the end or the log was replaced."
    )]
    HeadNotFound {
        /// How many events the chain holds.
        count: i64,
        /// The hash given with `--expect-head`.
        expected: String,
    },
    /// An export file does not hold together.
    #[error("The export {} is broken at line {line}: {problem}.", path.display())]
    Export {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong there.
        problem: String,
    },
    /// An export holds together, but no event in it has the head hash written down.
    #[error(
        "Nothing in the export {} matches the head you wrote down ({expected}): it was cut off at the end, made from a different log, or filtered.",
        path.display()
    )]
    ExportHeadNotFound {
        /// The file.
        path: PathBuf,
        /// The hash given with `--expect-head`.
        expected: String,
    },
    /// A file could not be read.
    #[error("Cannot read {}: {source}.", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The database could not be read.
    #[error("The audit log cannot be read: {0}. Check the broker's database and try again.")]
    Store(StoreError),
    /// The export could not be recorded in the audit log, so it was not handed out.
    #[error(
        "Nothing was exported: the export could not be recorded in the audit log ({0}). Check the broker's database and try again."
    )]
    NotRecorded(StoreError),
}

// ---------------------------------------------------------------------------------------
// What was typed.

/// The filters `audit list` and `audit export` take, as typed.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// `--since TIME`: events at or after.
    pub since: Option<String>,
    /// `--until TIME`: events before (a date alone: to the end of that day).
    pub until: Option<String>,
    /// `--vendor V`.
    pub vendor: Option<String>,
    /// `--technician T` or `--technician VENDOR/T`.
    pub technician: Option<String>,
    /// `--target NAME`.
    pub target: Option<String>,
    /// `--session ID`.
    pub session: Option<String>,
    /// `--kind KIND`, any number of them.
    pub kinds: Vec<String>,
    /// `--limit N`: the newest N matching events.
    pub limit: Option<u64>,
}

/// An [`EventQuery`] checked and resolved.
struct Selection {
    filter: AuditFilter,
    limit: Option<usize>,
    /// The filters given, as `(name, value)` in a fixed order, for headers and records.
    given: Vec<(&'static str, String)>,
}

impl EventQuery {
    fn resolve(&self, zone: &HospitalZone) -> Result<Selection, CliError> {
        let mut filter = AuditFilter::default();
        let mut given = Vec::new();
        if let Some(text) = &self.since {
            let since = parse_moment(text, zone, Edge::Start)?;
            filter.since = Some(since);
            given.push(("since", audit::timestamp(since)));
        }
        if let Some(text) = &self.until {
            let until = parse_moment(text, zone, Edge::End)?;
            filter.until = Some(until);
            given.push(("until", audit::timestamp(until)));
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(CliError::Input(
                "--since must come before --until; nothing can match.".to_owned(),
            ));
        }
        let mut vendor = non_empty(&self.vendor, "--vendor")?;
        let mut technician = non_empty(&self.technician, "--technician")?;
        // `--technician acme-ehr/tanaka` names the vendor too.
        let split = technician.as_deref().and_then(|text| {
            text.split_once('/')
                .map(|(v, t)| (v.to_owned(), t.to_owned()))
        });
        if let Some((their_vendor, name)) = split {
            if let Some(given) = vendor.as_deref().filter(|given| *given != their_vendor) {
                return Err(CliError::Input(format!(
                    "--technician {}/{} names another vendor than --vendor {}; give one of them.",
                    clean(&their_vendor),
                    clean(&name),
                    clean(given)
                )));
            }
            vendor = Some(their_vendor);
            technician = Some(name);
        }
        let target = non_empty(&self.target, "--target")?;
        let session = non_empty(&self.session, "--session")?;
        for (name, value) in [
            ("vendor", &vendor),
            ("technician", &technician),
            ("target", &target),
            ("session", &session),
        ] {
            if let Some(value) = value {
                given.push((name, value.clone()));
            }
        }
        filter.vendor = vendor;
        filter.technician = technician;
        filter.target = target;
        filter.request = session;
        for word in self.kinds.iter().map(|kind| kind.trim()) {
            let kind = EventKind::parse(word).ok_or_else(|| {
                let valid: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                CliError::Input(format!(
                    "`{}` is not an event kind; use one of: {}.",
                    clean(word),
                    valid.join(", ")
                ))
            })?;
            if !filter.kinds.contains(&kind) {
                filter.kinds.push(kind);
            }
        }
        if !filter.kinds.is_empty() {
            let words: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
            given.push(("kind", words.join(",")));
        }
        let limit = match self.limit {
            Some(0) => {
                return Err(CliError::Input("--limit must be at least 1.".to_owned()));
            }
            Some(n) => {
                given.push(("limit", n.to_string()));
                Some(usize::try_from(n).unwrap_or(usize::MAX))
            }
            None => None,
        };
        Ok(Selection {
            filter,
            limit,
            given,
        })
    }
}

fn non_empty(value: &Option<String>, flag: &str) -> Result<Option<String>, CliError> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => Err(CliError::Input(format!(
            "{flag} is empty; give a value or leave it out."
        ))),
        Some(text) => Ok(Some(text.to_owned())),
    }
}

/// Which end of a day a date alone stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// Its first moment (`--since 2026-11-01`).
    Start,
    /// The first moment after it (`--until 2026-11-30` takes in the whole 30th).
    End,
}

/// A time typed for `--since`/`--until`: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` (both in the
/// hospital's zone), or RFC 3339 with an offset.
fn parse_moment(text: &str, zone: &HospitalZone, edge: Edge) -> Result<SystemTime, CliError> {
    let text = text.trim();
    let not_a_time = || {
        CliError::Input(format!(
            "`{}` is not a time; write YYYY-MM-DD, \"YYYY-MM-DD HH:MM\" (both in {}) or an RFC 3339 time such as 2026-11-21T14:30:00+09:00.",
            clean(text),
            zone.name()
        ))
    };
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(SystemTime::from(timestamp));
    }
    let civil = if text.contains(':') {
        text.parse::<DateTime>().map_err(|_| not_a_time())?
    } else {
        let date = text.parse::<Date>().map_err(|_| not_a_time())?;
        let date = match edge {
            Edge::Start => date,
            Edge::End => date.tomorrow().map_err(|_| not_a_time())?,
        };
        date.to_datetime(jiff::civil::Time::midnight())
    };
    let zoned = civil
        .to_zoned(zone.zone().clone())
        .map_err(|_| not_a_time())?;
    Ok(SystemTime::from(zoned.timestamp()))
}

/// A review limit: `3d`, `1d12h`, `72h`, `90m`.
pub fn parse_within(text: &str) -> Result<Duration, CliError> {
    let text = text.trim();
    let not_a_duration = || {
        CliError::Input(format!(
            "`{}` is not a duration; write it like 3d, 1d12h, 72h or 90m.",
            clean(text)
        ))
    };
    let (days, rest) = match text.split_once('d') {
        Some((digits, rest))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let days: u64 = digits.parse().map_err(|_| not_a_duration())?;
            (days, rest)
        }
        Some(_) => return Err(not_a_duration()),
        None => (0, text),
    };
    let rest = if rest.is_empty() && days > 0 {
        Duration::ZERO
    } else {
        parse_duration(rest).ok_or_else(not_a_duration)?
    };
    let total = days
        .checked_mul(24 * 3600)
        .and_then(|secs| secs.checked_add(rest.as_secs()))
        .ok_or_else(not_a_duration)?;
    if total == 0 {
        return Err(CliError::Input(
            "--within must be longer than zero, e.g. 3d.".to_owned(),
        ));
    }
    Ok(Duration::from_secs(total))
}

/// A head hash as typed: 64 hexadecimal characters.
fn head_hash(text: &str) -> Result<String, CliError> {
    let hash = text.trim().to_ascii_lowercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(CliError::Input(format!(
            "`{}` is not a head hash; it is 64 hexadecimal characters, as `sekisho-broker audit head` prints it.",
            cut(text, 80)
        )))
    }
}

fn session_id(text: &str) -> Result<RequestId, CliError> {
    RequestId::parse(text).ok_or_else(|| {
        CliError::Input(format!(
            "`{}` is not a session id; ids look like r-abcdefghjk (see `sekisho-broker audit unreviewed` or `sekisho-broker request list --all`).",
            clean(text)
        ))
    })
}

// ---------------------------------------------------------------------------------------
// head, verify.

/// `audit head`: `1234 events; head 9f86…` (the full hash), to write down or send elsewhere.
pub async fn audit_head(desk: &Desk) -> Result<String, AuditError> {
    let (count, head) = desk.store().audit_head().await.map_err(AuditError::Store)?;
    Ok(format!("{count} events; head {head}"))
}

fn unreadable(error: StoreError) -> AuditError {
    match error {
        StoreError::Corrupt(what) => AuditError::Unreadable(what),
        other => AuditError::Store(other),
    }
}

/// `audit verify [--expect-head HASH]`: walks the whole chain in the database.
///
/// Besides the chain itself, the log's head record must name an event of the chain (so a
/// tail cut without resetting the head is found), and `expect_head`, when given, must be the
/// hash of some event: the head written down earlier, now or before later events.
pub async fn audit_verify(desk: &Desk, expect_head: Option<&str>) -> Result<String, AuditError> {
    let expected = expect_head.map(head_hash).transpose()?;
    let store = desk.store();
    // The head first: a broker appending meanwhile only adds events after it.
    let (head_seq, head_hash_stored) = store.audit_head().await.map_err(unreadable)?;
    let events = store.all_audit_events().await.map_err(unreadable)?;
    let hash_of = |seq: i64| -> Option<String> {
        if seq == 0 {
            return Some(GENESIS_HASH.to_owned());
        }
        let index = usize::try_from(seq - 1).ok()?;
        events
            .get(index)
            .filter(|stored| stored.seq == seq)
            .map(|stored| stored.hash.clone())
    };
    let stored_head_hash = hash_of(head_seq);
    let expected_at = expected.as_ref().and_then(|expected| {
        if expected == GENESIS_HASH {
            return Some(0);
        }
        events
            .iter()
            .find(|stored| &stored.hash == expected)
            .map(|stored| stored.seq)
    });
    let (count, head) = match audit::verify(events) {
        Verdict::Broken { seq, problem } => return Err(AuditError::Broken { seq, problem }),
        Verdict::Intact { count, head } => (count, head),
    };
    if head_seq > count {
        return Err(AuditError::Broken {
            seq: count + 1,
            problem: format!(
                "the log's head record says it holds {head_seq} events, but the chain ends at event {count}: events were cut off the end"
            ),
        });
    }
    if stored_head_hash.as_deref() != Some(head_hash_stored.as_str()) {
        return Err(AuditError::Broken {
            seq: head_seq,
            problem: "it is not the event the log's head record names: events at the end were replaced, or the head record was altered".to_owned(),
        });
    }
    let mut out = format!("Intact: {count} events, head {head}");
    if let Some(expected) = expected {
        match expected_at {
            Some(seq) if seq == count => {
                out.push_str("\nThe head you wrote down is the current head.");
            }
            Some(seq) => {
                let after = count - seq;
                let events = if after == 1 { "event" } else { "events" };
                out.push_str(&format!(
                    "\nThe head you wrote down is event {seq}; {after} {events} came after it."
                ));
            }
            None => return Err(AuditError::HeadNotFound { count, expected }),
        }
    }
    Ok(out)
}

/// One line of a JSON Lines export: an event with its chain fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportLine {
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
    fn of(stored: &StoredEvent) -> ExportLine {
        let event = &stored.event;
        ExportLine {
            seq: stored.seq,
            at: audit::timestamp(event.at),
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

    /// The stored event this line stands for; what in it cannot be an event, otherwise.
    fn to_stored(&self) -> Result<StoredEvent, String> {
        let at = from_unix_ms(self.at_ms);
        if audit::timestamp(at) != self.at {
            return Err(format!(
                "event {}'s time {} is not its at_ms {}: the time was edited",
                self.seq,
                clean(&self.at),
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

/// The first line of a filtered export.
#[derive(Debug, Serialize)]
struct ExportHeader<'a> {
    export: ExportHeaderBody<'a>,
}

#[derive(Debug, Serialize)]
struct ExportHeaderBody<'a> {
    filtered: bool,
    #[serde(flatten)]
    filters: serde_json::Map<String, serde_json::Value>,
    exported_at: String,
    by: &'a str,
}

/// `audit verify --file EXPORT.jsonl [--expect-head HASH]`: checks a JSON Lines export on
/// its own, without the database.
///
/// Every event's hash must match its contents, and consecutive event numbers must chain.
/// Gaps between numbers are allowed only when the export's first line says it was filtered;
/// an unfiltered export must start at event 1.
pub fn audit_verify_file(path: &Path, expect_head: Option<&str>) -> Result<String, AuditError> {
    let expected = expect_head.map(head_hash).transpose()?;
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    let broken = |line: usize, problem: String| AuditError::Export {
        path: path.to_owned(),
        line,
        problem,
    };
    let mut filtered = false;
    let mut first: Option<i64> = None;
    let mut previous: Option<(i64, String)> = None;
    let mut count: i64 = 0;
    let mut gaps: i64 = 0;
    let mut expected_at: Option<i64> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|_| {
            if number == 1 && line.starts_with("seq,") {
                broken(
                    number,
                    "this is a CSV export; `audit verify --file` reads JSON Lines (export with --format jsonl)".to_owned(),
                )
            } else {
                broken(number, "it is not a JSON object".to_owned())
            }
        })?;
        if let Some(header) = value.get("export") {
            if count > 0 || number != 1 {
                return Err(broken(
                    number,
                    "an export header may only be the first line: lines were moved or joined"
                        .to_owned(),
                ));
            }
            filtered = header.get("filtered") == Some(&serde_json::Value::Bool(true));
            continue;
        }
        let line: ExportLine = serde_json::from_value(value)
            .map_err(|e| broken(number, format!("it is not an audit event ({e})")))?;
        let stored = line
            .to_stored()
            .map_err(|problem| broken(number, problem))?;
        let seq = stored.seq;
        if chain_hash(seq, &stored.prev_hash, &stored.event) != stored.hash {
            return Err(broken(
                number,
                format!("event {seq}'s contents do not match its hash: the event was edited"),
            ));
        }
        match &previous {
            None => {
                if seq == 1 && stored.prev_hash != GENESIS_HASH {
                    return Err(broken(
                        number,
                        "event 1 does not chain to the start of the log".to_owned(),
                    ));
                }
                if seq != 1 && !filtered {
                    return Err(broken(
                        number,
                        format!(
                            "the export starts at event {seq}, not at event 1, and does not say it was filtered: events were cut off the start"
                        ),
                    ));
                }
                first = Some(seq);
            }
            Some((before, before_hash)) => {
                if seq <= *before {
                    return Err(broken(
                        number,
                        format!(
                            "event {seq} comes after event {before}: events were reordered or repeated"
                        ),
                    ));
                }
                if seq == before + 1 && stored.prev_hash != *before_hash {
                    return Err(broken(
                        number,
                        format!(
                            "event {seq} does not chain to event {before} before it: an event was changed, removed or inserted"
                        ),
                    ));
                }
                if seq > before + 1 {
                    if !filtered {
                        let missing = if seq == before + 2 {
                            format!("event {} is missing", before + 1)
                        } else {
                            format!("events {} to {} are missing", before + 1, seq - 1)
                        };
                        return Err(broken(
                            number,
                            format!(
                                "{missing}, and the export does not say it was filtered: events were deleted"
                            ),
                        ));
                    }
                    gaps += 1;
                }
            }
        }
        if expected.as_ref() == Some(&stored.hash) {
            expected_at = Some(seq);
        }
        count += 1;
        previous = Some((seq, stored.hash));
    }
    let Some(((last, last_hash), first)) = previous.zip(first) else {
        return match expected {
            Some(expected) => Err(AuditError::ExportHeadNotFound {
                path: path.to_owned(),
                expected,
            }),
            None => Ok(format!(
                "The export {} holds no events; there is nothing to check.",
                path.display()
            )),
        };
    };
    let mut out = if filtered {
        let between = match gaps {
            0 => "no events are left out between them".to_owned(),
            1 => "the filter left events out in 1 place".to_owned(),
            n => format!("the filter left events out in {n} places"),
        };
        format!(
            "Intact filtered export: {count} events from event {first} to event {last}, each matching its hash; consecutive events chain, and {between}. Last hash {last_hash}"
        )
    } else {
        format!("Intact export: {count} events, head {last_hash}")
    };
    if let Some(expected) = expected {
        match expected_at {
            Some(seq) if seq == last => {
                out.push_str("\nThe head you wrote down is the export's last event.");
            }
            Some(seq) => out.push_str(&format!(
                "\nThe head you wrote down is event {seq}; the export goes on to event {last}."
            )),
            None => {
                return Err(AuditError::ExportHeadNotFound {
                    path: path.to_owned(),
                    expected,
                });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// list, export.

/// `2026-11-21 14:30:05`, in the hospital's zone.
fn local_time(zone: &HospitalZone, time: SystemTime) -> String {
    match Timestamp::try_from(time) {
        Ok(timestamp) => timestamp
            .to_zoned(zone.zone().clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// An RFC 3339 time from an event's details, in the hospital's zone; other text as it is.
fn local_stamp(zone: &HospitalZone, text: &str) -> String {
    match text.parse::<Timestamp>() {
        Ok(timestamp) => zone.format(SystemTime::from(timestamp)),
        Err(_) => clean(text),
    }
}

fn who(event: &AuditEvent) -> String {
    match (&event.vendor, &event.technician) {
        (Some(vendor), Some(technician)) => clean(&format!("{vendor}/{technician}")),
        (Some(vendor), None) => clean(vendor),
        (None, Some(technician)) => clean(technician),
        (None, None) => "-".to_owned(),
    }
}

fn or_dash(value: &Option<String>) -> String {
    value
        .as_deref()
        .map(clean)
        .unwrap_or_else(|| "-".to_owned())
}

/// Events matching `selection`, oldest first; with a limit, the newest that many. Also how
/// many matched in all.
async fn select(
    desk: &Desk,
    selection: &Selection,
) -> Result<(Vec<StoredEvent>, usize), AuditError> {
    let mut events = desk
        .store()
        .audit_events(&selection.filter)
        .await
        .map_err(AuditError::Store)?;
    let matched = events.len();
    if let Some(limit) = selection.limit
        && matched > limit
    {
        events.drain(..matched - limit);
    }
    Ok((events, matched))
}

/// `audit list [filters]`: a table of events, oldest first; the newest 200 (or `--limit`).
pub async fn audit_list(desk: &Desk, query: &EventQuery) -> Result<String, AuditError> {
    let zone = desk.zone();
    let mut selection = query.resolve(zone)?;
    let defaulted = selection.limit.is_none();
    selection.limit = selection.limit.or(Some(LIST_DEFAULT_LIMIT));
    let (events, matched) = select(desk, &selection).await?;
    if events.is_empty() {
        return Ok(if selection.given.is_empty() {
            "The audit log is empty.".to_owned()
        } else {
            "No audit events match.".to_owned()
        });
    }
    let mut table = Table::new(&[
        "SEQ", "TIME", "ACTOR", "KIND", "SESSION", "WHO", "TARGET", "DETAILS",
    ]);
    for stored in &events {
        let event = &stored.event;
        let details: Vec<String> = event
            .details
            .iter()
            .map(|(key, value)| format!("{}={}", clean(key), cut(value, 80)))
            .collect();
        table.row(vec![
            stored.seq.to_string(),
            local_time(zone, event.at),
            clean(&event.actor.encode()),
            event.kind.as_str().to_owned(),
            or_dash(&event.request),
            who(event),
            or_dash(&event.target),
            details.join("  "),
        ]);
    }
    let mut out = format!(
        "Audit events, oldest first (times in {}):\n{}",
        zone.name(),
        table.render()
    );
    if matched > events.len() {
        let hint = if defaulted {
            "narrow with --since, --until or other filters, or raise --limit"
        } else {
            "raise --limit to see more"
        };
        out.push_str(&format!(
            "\nOnly the newest {} of {matched} matching events are shown; {hint}.",
            events.len()
        ));
    }
    Ok(out)
}

/// The formats `audit export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, each with its chain fields; `audit verify --file` reads it.
    JsonLines,
    /// RFC 4180 CSV with a header row, for spreadsheets and reports.
    Csv,
}

impl ExportFormat {
    fn word(self) -> &'static str {
        match self {
            ExportFormat::JsonLines => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }
}

/// What `audit export` is asked for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The format.
    pub format: ExportFormat,
    /// The filters.
    pub query: EventQuery,
    /// The file to write; standard output when `None`.
    pub out: Option<PathBuf>,
}

/// What `audit export` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    /// The export was written to the file; a sentence saying so.
    ToFile(String),
    /// The export itself, to print as it is (it ends with its own line break).
    ToStdout(String),
}

/// `audit export --format jsonl|csv [filters] [--out FILE] --as STAFF`.
///
/// The events are read first; the export is then recorded as an `audit-exported` event (so it
/// does not hold its own record), and is handed out only once that record is written: a file
/// whose record fails is removed again.
pub async fn audit_export(
    desk: &Desk,
    request: &ExportRequest,
    staff: &str,
) -> Result<Exported, AuditError> {
    let selection = request.query.resolve(desk.zone())?;
    let (events, _) = select(desk, &selection).await?;
    let now = desk.now();
    let text = match request.format {
        ExportFormat::JsonLines => jsonl(&events, &selection, now, staff)?,
        ExportFormat::Csv => csv(&events),
    };
    let filters = if selection.given.is_empty() {
        "none".to_owned()
    } else {
        selection
            .given
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let destination = match &request.out {
        Some(path) => path.display().to_string(),
        None => "stdout".to_owned(),
    };
    let event = AuditEvent::new(
        now,
        Actor::Staff(staff.to_owned()),
        EventKind::AuditExported,
    )
    .detail("format", request.format.word())
    .detail("filters", filters)
    .detail("count", events.len())
    .detail("to", destination);
    let events_word = if events.len() == 1 { "event" } else { "events" };
    match &request.out {
        None => {
            desk.store()
                .record(&event)
                .await
                .map_err(AuditError::NotRecorded)?;
            Ok(Exported::ToStdout(text))
        }
        Some(path) => {
            write_private(path, text.as_bytes())?;
            match desk.store().record(&event).await {
                Ok(seq) => Ok(Exported::ToFile(format!(
                    "Exported {} {events_word} as {} to {}; the export is recorded as event {seq}.",
                    events.len(),
                    match request.format {
                        ExportFormat::JsonLines => "JSON Lines",
                        ExportFormat::Csv => "CSV",
                    },
                    path.display()
                ))),
                Err(error) => {
                    // Best effort: the error below is what matters to the person.
                    let _ = std::fs::remove_file(path);
                    Err(AuditError::NotRecorded(error))
                }
            }
        }
    }
}

/// Writes `bytes` to `path` (created readable by its owner only, or truncated), synced.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let failed = |source| CliError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}

fn jsonl(
    events: &[StoredEvent],
    selection: &Selection,
    now: SystemTime,
    staff: &str,
) -> Result<String, AuditError> {
    let encode_failed =
        |e: serde_json::Error| AuditError::Store(StoreError::Corrupt(format!("export: {e}")));
    let mut out = String::new();
    if !selection.given.is_empty() {
        let filters = selection
            .given
            .iter()
            .map(|(name, value)| {
                let value = match (*name, selection.limit) {
                    ("limit", Some(limit)) => serde_json::Value::from(limit),
                    ("kind", _) => serde_json::Value::from(
                        selection
                            .filter
                            .kinds
                            .iter()
                            .map(|kind| kind.as_str())
                            .collect::<Vec<_>>(),
                    ),
                    _ => serde_json::Value::from(value.as_str()),
                };
                ((*name).to_owned(), value)
            })
            .collect();
        let header = ExportHeader {
            export: ExportHeaderBody {
                filtered: true,
                filters,
                exported_at: audit::timestamp(now),
                by: staff,
            },
        };
        out.push_str(&serde_json::to_string(&header).map_err(encode_failed)?);
        out.push('\n');
    }
    for stored in events {
        out.push_str(&serde_json::to_string(&ExportLine::of(stored)).map_err(encode_failed)?);
        out.push('\n');
    }
    Ok(out)
}

/// One CSV field, quoted as RFC 4180 asks when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

const CSV_HEADER: [&str; 12] = [
    "seq",
    "at",
    "at_ms",
    "actor",
    "kind",
    "session",
    "vendor",
    "technician",
    "target",
    "details",
    "prev_hash",
    "hash",
];

fn csv(events: &[StoredEvent]) -> String {
    // RFC 4180: records end with CRLF.
    let mut out = CSV_HEADER.join(",");
    out.push_str("\r\n");
    for stored in events {
        let event = &stored.event;
        let details: Vec<String> = event
            .details
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let fields = [
            stored.seq.to_string(),
            audit::timestamp(event.at),
            to_unix_ms(event.at).to_string(),
            event.actor.encode(),
            event.kind.as_str().to_owned(),
            event.request.clone().unwrap_or_default(),
            event.vendor.clone().unwrap_or_default(),
            event.technician.clone().unwrap_or_default(),
            event.target.clone().unwrap_or_default(),
            details.join("; "),
            stored.prev_hash.clone(),
            stored.hash.clone(),
        ];
        let fields: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------
// show.

fn detail<'a>(event: &'a AuditEvent, key: &str) -> Option<&'a str> {
    event
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What `event` says happened, in words, with its key details.
fn describe(event: &AuditEvent, zone: &HospitalZone) -> String {
    let text = |key: &str| detail(event, key).map(clean).unwrap_or_default();
    let time = |key: &str| {
        detail(event, key)
            .map(|value| local_stamp(zone, value))
            .unwrap_or_else(|| "?".to_owned())
    };
    let target = or_dash(&event.target);
    let with_reason = |what: String| match detail(event, "reason").filter(|r| !r.is_empty()) {
        Some(reason) => format!("{what}: {}", clean(reason)),
        None => what,
    };
    match event.kind {
        EventKind::RequestMade => {
            let ticket = match text("ticket") {
                ticket if ticket.is_empty() => String::new(),
                ticket => format!(" (ticket {ticket})"),
            };
            format!(
                "asked for {} for {}: {}{ticket}",
                text("targets"),
                text("wanted"),
                text("purpose")
            )
        }
        EventKind::RequestRefused => {
            with_reason(format!("was refused a request for {}", text("targets")))
        }
        EventKind::RequestApproved => {
            format!(
                "approved until {}, approval {}",
                time("until"),
                text("approval")
            )
        }
        EventKind::RequestDenied => with_reason("denied the request".to_owned()),
        EventKind::RequestExpired => format!("the request expired unused (it was {})", text("was")),
        EventKind::SessionOpened => format!("opened the session until {}", time("end_at")),
        EventKind::SessionOpenRefused => with_reason("was refused opening the session".to_owned()),
        EventKind::SessionWarned => {
            let left = detail(event, "seconds_left")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| human_duration(Duration::from_secs(s)))
                .unwrap_or_else(|| "?".to_owned());
            format!("warned that the session ends in {left}")
        }
        EventKind::SessionExtended => {
            format!("moved the end from {} to {}", time("from"), time("to"))
        }
        EventKind::SessionEnded => {
            let mut out = format!("ended the session ({}", text("reason"));
            if let Some(was) = detail(event, "was").filter(|was| *was != "active") {
                out.push_str(&format!(", it was {}", clean(was)));
            }
            out.push(')');
            if let Some(note) = detail(event, "note").filter(|note| !note.is_empty()) {
                out.push_str(&format!(": {}", clean(note)));
            }
            out
        }
        EventKind::ForwardOpened => {
            format!("opened a forward to {target} at {}", text("address"))
        }
        EventKind::ForwardClosed => {
            let took = detail(event, "duration_ms")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| human_duration(Duration::from_secs(ms / 1000)))
                .unwrap_or_else(|| "?".to_owned());
            format!(
                "closed the forward to {target}: {} bytes to it, {} bytes from it, after {took} ({})",
                text("bytes_to_target"),
                text("bytes_from_target"),
                text("end")
            )
        }
        EventKind::ForwardRefused => with_reason(format!("was refused a forward to {target}")),
        EventKind::OtpFailed => format!("typed a wrong one-time password ({})", text("why")),
        EventKind::TechnicianLocked => format!(
            "was locked after {} wrong one-time passwords",
            text("consecutive_failures")
        ),
        EventKind::ReviewMarked => format!("marked the session reviewed: {}", text("comment")),
        other => {
            let details: Vec<String> = event
                .details
                .iter()
                .map(|(key, value)| format!("{}={}", clean(key), clean(value)))
                .collect();
            if details.is_empty() {
                other.as_str().to_owned()
            } else {
                format!("{} {}", other.as_str(), details.join("  "))
            }
        }
    }
}

/// Bytes and forwards, from a session's forward events.
#[derive(Debug, Default, PartialEq, Eq)]
struct Traffic {
    opened: u64,
    closed: u64,
    refused: u64,
    to_targets: u64,
    from_targets: u64,
}

impl Traffic {
    fn of(events: &[StoredEvent]) -> Traffic {
        let mut traffic = Traffic::default();
        let number = |event: &AuditEvent, key: &str| {
            detail(event, key)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        for stored in events {
            let event = &stored.event;
            match event.kind {
                EventKind::ForwardOpened => traffic.opened += 1,
                EventKind::ForwardRefused => traffic.refused += 1,
                EventKind::ForwardClosed => {
                    traffic.closed += 1;
                    traffic.to_targets = traffic
                        .to_targets
                        .saturating_add(number(event, "bytes_to_target"));
                    traffic.from_targets = traffic
                        .from_targets
                        .saturating_add(number(event, "bytes_from_target"));
                }
                _ => {}
            }
        }
        traffic
    }
}

fn summary(
    record: &RequestRecord,
    events: &[StoredEvent],
    reviews: &[Review],
    zone: &HospitalZone,
) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let ticket = match clean(&record.ticket) {
        ticket if ticket.is_empty() => String::new(),
        ticket => format!(" (ticket {ticket})"),
    };
    lines.push((
        "asked by",
        format!(
            "{}, {}: {}{ticket}",
            clean(&record.requester()),
            zone.format(record.created_at),
            clean(&record.purpose)
        ),
    ));
    let approvers: Vec<String> = record
        .approvals
        .iter()
        .map(|approval| {
            format!(
                "{} at {}",
                clean(&approval.approver),
                zone.format(approval.approved_at)
            )
        })
        .collect();
    lines.push((
        "approved by",
        if approvers.is_empty() {
            "nobody".to_owned()
        } else {
            approvers.join(", ")
        },
    ));
    for extension in &record.extensions {
        lines.push((
            "end moved",
            format!(
                "to {} by {} at {}",
                zone.format(extension.end_at),
                clean(&extension.by),
                zone.format(extension.at)
            ),
        ));
    }
    lines.push((
        "opened",
        record
            .opened_at
            .map(|at| zone.format(at))
            .unwrap_or_else(|| "never".to_owned()),
    ));
    let ended = match record.stage {
        Stage::Ended(reason) => {
            let mut text = match record.ended_at {
                Some(at) => format!("{}, {}", zone.format(at), reason.as_str()),
                None => reason.as_str().to_owned(),
            };
            if let Some(by) = record.ended_by.as_deref().filter(|by| !by.is_empty()) {
                text.push_str(&format!(" by {}", clean(by)));
            }
            if let Some(note) = record.note.as_deref().filter(|note| !note.is_empty()) {
                text.push_str(&format!(": {}", clean(note)));
            }
            text
        }
        stage => match record.end_at {
            Some(end) => format!(
                "not yet ({}, ends {})",
                stage.state_word(),
                zone.format(end)
            ),
            None => format!("not yet ({})", stage.state_word()),
        },
    };
    lines.push(("ended", ended));
    lines.push(("targets", clean(&record.targets.join(", "))));
    let traffic = Traffic::of(events);
    let mut forwards = format!("{} opened, {} closed", traffic.opened, traffic.closed);
    if traffic.refused > 0 {
        forwards.push_str(&format!(", {} refused", traffic.refused));
    }
    lines.push(("forwards", forwards));
    lines.push((
        "bytes",
        format!(
            "{} to the targets, {} from the targets",
            traffic.to_targets, traffic.from_targets
        ),
    ));
    if reviews.is_empty() {
        lines.push(("reviewed", "not yet".to_owned()));
    }
    for review in reviews {
        lines.push((
            "reviewed",
            format!(
                "by {}, {}: {}",
                clean(&review.reviewer),
                zone.format(review.at),
                clean(&review.comment)
            ),
        ));
    }
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    lines
        .iter()
        .map(|(label, value)| format!("  {:<width$} {value}", format!("{label}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `audit show SESSION_ID`: one session's story, event by event, then a summary.
pub async fn audit_show(desk: &Desk, id: &str) -> Result<String, AuditError> {
    let id = session_id(id)?;
    let store = desk.store();
    let record = match store.request(&id).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => {
            return Err(CliError::Input(format!(
                "There is no session {id}; find ids with `sekisho-broker audit list` or `sekisho-broker request list --all`."
            ))
            .into());
        }
        Err(other) => return Err(AuditError::Store(other)),
    };
    let filter = AuditFilter {
        request: Some(id.as_str().to_owned()),
        ..AuditFilter::default()
    };
    let events = store
        .audit_events(&filter)
        .await
        .map_err(AuditError::Store)?;
    let reviews = store
        .reviews(id.as_str())
        .await
        .map_err(AuditError::Store)?;
    let zone = desk.zone();
    let mut table = Table::new(&["TIME", "ACTOR", "WHAT"]);
    for stored in &events {
        table.row(vec![
            local_time(zone, stored.event.at),
            clean(&stored.event.actor.encode()),
            describe(&stored.event, zone),
        ]);
    }
    Ok(format!(
        "Session {id} of {}, to {} (times in {}):\n{}\n\nSummary:\n{}",
        clean(&record.requester()),
        clean(&record.targets.join(", ")),
        zone.name(),
        table.render(),
        summary(&record, &events, &reviews, zone)
    ))
}

// ---------------------------------------------------------------------------------------
// review, unreviewed.

/// `audit review SESSION_ID --comment TEXT --as STAFF`: marks an ended session reviewed.
pub async fn audit_review(
    desk: &Desk,
    id: &str,
    comment: &str,
    staff: &str,
) -> Result<String, AuditError> {
    let id = session_id(id)?;
    let comment = comment.trim();
    if comment.is_empty() {
        return Err(CliError::Input(
            "Say what you checked with --comment; it is kept with the review.".to_owned(),
        )
        .into());
    }
    if comment.chars().count() > MAX_COMMENT_CHARS || comment.chars().any(char::is_control) {
        return Err(CliError::Input(format!(
            "A comment is one line of at most {MAX_COMMENT_CHARS} characters."
        ))
        .into());
    }
    let store = desk.store();
    let record = match store.request(&id).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => {
            return Err(CliError::Input(format!(
                "There is no session {id}; list the ones waiting for review with `sekisho-broker audit unreviewed`."
            ))
            .into());
        }
        Err(other) => return Err(AuditError::Store(other)),
    };
    let now = desk.now();
    let review = Review {
        request: id.as_str().to_owned(),
        reviewer: staff.to_owned(),
        at: now,
        comment: comment.to_owned(),
    };
    let event = AuditEvent::new(now, Actor::Staff(staff.to_owned()), EventKind::ReviewMarked)
        .request(&id)
        .technician(&record.vendor, &record.technician)
        .detail("comment", comment);
    match store.add_review(&review, &event).await {
        Ok(()) => Ok(format!("Marked {id} reviewed by {staff}.")),
        Err(StoreError::Stale) => {
            let reviews = store
                .reviews(id.as_str())
                .await
                .map_err(AuditError::Store)?;
            match reviews.iter().find(|review| review.reviewer == staff) {
                Some(earlier) => Err(CliError::Input(format!(
                    "You ({staff}) already reviewed {id} on {} {}.",
                    desk.zone().format(earlier.at),
                    desk.zone().name()
                ))
                .into()),
                None => Err(not_reviewable(&record)),
            }
        }
        Err(StoreError::NotFound) => Err(not_reviewable(&record)),
        Err(other) => Err(CliError::Store(other).into()),
    }
}

fn not_reviewable(record: &RequestRecord) -> AuditError {
    let id = &record.id;
    CliError::Input(match record.stage {
        Stage::Ended(reason) if record.opened_at.is_none() => format!(
            "{id} ended without being opened ({}), so there is no session to review.",
            reason.as_str()
        ),
        _ => format!("{id} is still live (or was never opened); review it after it ends."),
    })
    .into()
}

/// `5d3h`, `3h12m`, `12m`, `<1m`.
fn age(duration: Duration) -> String {
    let minutes = duration.as_secs() / 60;
    let (days, hours, minutes) = (minutes / (24 * 60), (minutes / 60) % 24, minutes % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "<1m".to_owned(),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// `audit unreviewed [--within DURATION]`: ended sessions without a review, oldest first;
/// those ended longer than `within` ago are overdue.
pub async fn audit_unreviewed(desk: &Desk, within: Duration) -> Result<String, AuditError> {
    let store = desk.store();
    let sessions = store
        .unreviewed_sessions(UNREVIEWED_LIMIT)
        .await
        .map_err(AuditError::Store)?;
    if sessions.is_empty() {
        return Ok("Every ended session has been reviewed.".to_owned());
    }
    let zone = desk.zone();
    let now = desk.now();
    let mut table = Table::new(&["ID", "TECHNICIAN", "ENDED", "AGO", "REVIEW"]);
    let mut overdue = 0;
    for (id, ended) in &sessions {
        let technician = match RequestId::parse(id) {
            Some(request) => match store.request(&request).await {
                Ok(record) => clean(&record.requester()),
                Err(StoreError::NotFound) => "?".to_owned(),
                Err(other) => return Err(AuditError::Store(other)),
            },
            None => "?".to_owned(),
        };
        let since = now.duration_since(*ended).unwrap_or_default();
        let review = if since > within {
            overdue += 1;
            "OVERDUE".to_owned()
        } else {
            format!("due in {}", age(within - since))
        };
        table.row(vec![
            clean(id),
            technician,
            zone.format(*ended),
            format!("{} ago", age(since)),
            review,
        ]);
    }
    let mut out = format!(
        "Ended sessions not yet reviewed, oldest first (times in {}; overdue {} after the end):\n{}",
        zone.name(),
        age(within),
        table.render()
    );
    let count = sessions.len();
    if overdue > 0 {
        out.push_str(&format!(
            "\n{overdue} of {count} overdue; review each with `sekisho-broker audit review ID --comment TEXT`."
        ));
    }
    if i64::try_from(count).unwrap_or(i64::MAX) >= UNREVIEWED_LIMIT {
        out.push_str(&format!("\nOnly the oldest {UNREVIEWED_LIMIT} are shown."));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokyo() -> HospitalZone {
        HospitalZone::resolve("Asia/Tokyo").unwrap()
    }

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<Timestamp>().unwrap())
    }

    #[test]
    fn review_limits_take_days_hours_and_minutes() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(parse_within("3d").unwrap(), hours(72));
        assert_eq!(parse_within("72h").unwrap(), hours(72));
        assert_eq!(parse_within("1d12h").unwrap(), hours(36));
        assert_eq!(parse_within("90m").unwrap(), Duration::from_secs(90 * 60));
        for refused in [
            "", "d", "3", "0d", "3d3d", "d3", "1.5d", "-1d", "3 d", "1h1d",
        ] {
            assert!(parse_within(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn since_and_until_read_dates_and_times_in_the_hospital_zone() {
        let zone = tokyo();
        assert_eq!(
            parse_moment("2026-11-21", &zone, Edge::Start).unwrap(),
            at("2026-11-20T15:00:00Z")
        );
        assert_eq!(
            parse_moment("2026-11-21", &zone, Edge::End).unwrap(),
            at("2026-11-21T15:00:00Z"),
            "a date alone as --until takes in the whole day"
        );
        assert_eq!(
            parse_moment("2026-11-21 14:30", &zone, Edge::End).unwrap(),
            at("2026-11-21T05:30:00Z")
        );
        assert_eq!(
            parse_moment("2026-11-21T14:30:00+09:00", &zone, Edge::Start).unwrap(),
            at("2026-11-21T05:30:00Z")
        );
        for refused in ["yesterday", "14:30", "2026-13-01", ""] {
            let error = parse_moment(refused, &zone, Edge::Start).unwrap_err();
            assert!(
                error.to_string().contains("YYYY-MM-DD"),
                "{refused}: {error}"
            );
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_with_every_valid_kind() {
        let query = EventQuery {
            kinds: vec!["session-open".into()],
            ..EventQuery::default()
        };
        let Err(error) = query.resolve(&tokyo()) else {
            panic!("an unknown kind must be refused");
        };
        let error = error.to_string();
        for kind in EventKind::ALL {
            assert!(error.contains(kind.as_str()), "{kind:?} in {error}");
        }
    }

    #[test]
    fn a_technician_with_their_vendor_fills_in_the_vendor() {
        let query = EventQuery {
            technician: Some("acme-ehr/tanaka".into()),
            ..EventQuery::default()
        };
        let Ok(selection) = query.resolve(&tokyo()) else {
            panic!("resolves");
        };
        assert_eq!(selection.filter.vendor.as_deref(), Some("acme-ehr"));
        assert_eq!(selection.filter.technician.as_deref(), Some("tanaka"));
        let conflicting = EventQuery {
            vendor: Some("other".into()),
            ..query
        };
        assert!(conflicting.resolve(&tokyo()).is_err());
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_asks() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn ages_are_days_and_hours_or_hours_and_minutes() {
        assert_eq!(age(Duration::from_secs(30)), "<1m");
        assert_eq!(age(Duration::from_secs(12 * 60)), "12m");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 12 * 60)), "3h12m");
        assert_eq!(age(Duration::from_secs(5 * 86400 + 3 * 3600 + 59)), "5d3h");
    }

    #[test]
    fn head_hashes_are_64_hex_characters() {
        assert_eq!(head_hash(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(head_hash("9f86").is_err());
        assert!(head_hash(&"g".repeat(64)).is_err());
    }
}
