//! `audit head|verify|list|show|export|review|unreviewed`: the auditor's commands.
//!
//! Reading changes nothing. `export` and `review` append an event of their own; an export is
//! recorded after its events are read, so it never holds its own record. Times are shown in
//! the hospital's zone, except in exports, which carry RFC 3339 UTC and the millisecond count
//! the chain hash covers, so that an export can be checked on its own, away from the database
//! (`audit verify --file`).
//!
//! # Layout
//!
//! - this file: errors, the event query (`--since`, `--kind`, …) and helpers shared below;
//! - `verify`: `head`, `verify` (the database, or an export on its own);
//! - `export`: `list` and `export` (JSON Lines, CSV) and the export line format;
//! - `show`: one session's story and summary;
//! - `review`: `review` and `unreviewed`.

mod export;
mod review;
mod show;
mod verify;

pub use export::{ExportFormat, ExportRequest, Exported, audit_export, audit_list};
pub use review::{audit_review, audit_unreviewed};
pub use show::audit_show;
pub use verify::{
    ChainIntact, CheckpointSources, audit_head, audit_verify, audit_verify_file, check_chain,
};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde::Serialize;

use super::table::{Table, clean, cut};
use super::{CliError, parse_duration};
use crate::approval::Desk;
use crate::audit::{
    self, Actor, AuditEvent, EventKind, GENESIS_HASH, StoredEvent, Verdict, chain_hash,
};
use crate::clock::to_unix_ms;
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
        problem: crate::audit::ChainBreak,
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
    /// Signed checkpoints show that the log was rewritten, cut off or rolled back, or a
    /// checkpoint's signature does not verify: one sentence per finding, one per line.
    #[error("{0}")]
    Checkpoints(String),
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
pub(crate) struct Selection {
    pub(crate) filter: AuditFilter,
    pub(crate) limit: Option<usize>,
    /// The filters given, as `(name, value)` in a fixed order, for headers and records.
    given: Vec<(&'static str, String)>,
}

impl EventQuery {
    pub(crate) fn resolve(&self, zone: &HospitalZone) -> Result<Selection, CliError> {
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
    let within = parse_duration(text).ok_or_else(|| {
        CliError::Input(format!(
            "`{}` is not a duration; write it like 3d, 1d12h, 72h or 90m.",
            clean(text)
        ))
    })?;
    if within.is_zero() {
        return Err(CliError::Input(
            "--within must be longer than zero, e.g. 3d.".to_owned(),
        ));
    }
    Ok(within)
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
pub(crate) async fn select(
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
#[cfg(test)]
mod tests {
    use super::export::csv_field;
    use super::review::age;
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
    fn csv_fields_that_start_like_a_formula_are_neutralised() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-1"), "'-1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tcmd"), "'\tcmd");
        assert_eq!(csv_field("\rcmd"), "\"'\rcmd\"");
        // Only at the start: inside a cell they are plain text.
        assert_eq!(csv_field("a=b"), "a=b");
        assert_eq!(csv_field(""), "");
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
