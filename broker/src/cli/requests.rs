//! `request list|approve|deny` and `session list|revoke|extend`.

use std::time::{Duration, SystemTime};

use super::table::{Table, clean, cut};
use super::{CliError, required_reason};
use crate::approval::{Approved, Desk, Extended, Until};
use crate::session::{RequestId, RequestRecord, Stage, human_duration};
use crate::store::RequestFilter;

/// The most rows a list shows.
const LIST_LIMIT: i64 = 100;

fn request_id(text: &str) -> Result<RequestId, CliError> {
    RequestId::parse(text).ok_or_else(|| {
        CliError::Input(format!(
            "`{}` is not a request id; ids look like r-abcdefghjk (see `sekisho-broker request list`).",
            clean(text)
        ))
    })
}

/// A duration to the minute, for people: `1h5m`, `12m`, `<1m`.
fn minutes(duration: Duration) -> String {
    let whole = duration.as_secs() / 60 * 60;
    if whole == 0 {
        "<1m".to_owned()
    } else {
        human_duration(Duration::from_secs(whole))
    }
}

fn since(earlier: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(earlier).unwrap_or_default()
}

/// The approvers of `record`, and the people who later moved its end time.
fn approvers(record: &RequestRecord) -> (Vec<String>, Vec<String>) {
    let approved = record
        .approvals
        .iter()
        .map(|a| clean(&a.approver))
        .collect();
    let mut moved: Vec<String> = Vec::new();
    for extension in &record.extensions {
        let by = clean(&extension.by);
        if !moved.contains(&by) {
            moved.push(by);
        }
    }
    (approved, moved)
}

fn when(record: &RequestRecord, desk: &Desk, now: SystemTime) -> String {
    let zone = desk.zone();
    match record.stage {
        Stage::Requested if now < record.answer_by => format!(
            "waiting {}, {} left to answer",
            minutes(since(record.created_at, now)),
            minutes(since(now, record.answer_by))
        ),
        Stage::Requested => format!(
            "waited {}; too late to answer",
            minutes(since(record.created_at, now))
        ),
        Stage::Approved | Stage::Active => {
            let Some(end) = record.end_at else {
                return "no end time recorded".to_owned();
            };
            let (_, moved) = approvers(record);
            let moved = if moved.is_empty() {
                String::new()
            } else {
                format!(" (moved by {})", moved.join(", "))
            };
            if end <= now {
                format!("ended {}{moved}", zone.format(end))
            } else if record.stage == Stage::Active {
                format!(
                    "until {}{moved}, {} left",
                    zone.format(end),
                    minutes(since(now, end))
                )
            } else {
                format!("until {}{moved}", zone.format(end))
            }
        }
        Stage::Ended(reason) => {
            let mut text = reason.as_str().to_owned();
            if let Some(at) = record.ended_at {
                text.push(' ');
                text.push_str(&zone.format(at));
            }
            if let Some(by) = record.ended_by.as_deref().filter(|by| !by.is_empty()) {
                text.push_str(" by ");
                text.push_str(&clean(by));
            }
            if let Some(note) = record.note.as_deref().filter(|note| !note.is_empty()) {
                text.push_str(": ");
                text.push_str(&cut(note, 60));
            }
            text
        }
    }
}

/// `request list [--all]`: requests waiting for an answer, approved or live (with `all`,
/// also those that ended), newest first, at most 100.
pub async fn request_list(desk: &Desk, all: bool, now: SystemTime) -> Result<String, CliError> {
    let filter = RequestFilter {
        states: if all {
            Vec::new()
        } else {
            vec!["requested", "approved", "active"]
        },
        limit: LIST_LIMIT,
        ..RequestFilter::default()
    };
    let records = desk.requests(&filter).await?;
    if records.is_empty() {
        return Ok(if all {
            "No requests yet.".to_owned()
        } else {
            "No pending requests.".to_owned()
        });
    }
    Ok(render_requests(&records, desk, all, now))
}

fn render_requests(records: &[RequestRecord], desk: &Desk, all: bool, now: SystemTime) -> String {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "TECHNICIAN",
        "TARGETS",
        "PURPOSE",
        "TICKET",
        "WANTS",
        "APPROVALS",
        "WHEN",
    ]);
    for record in records {
        let (approved, _) = approvers(record);
        let mut approvals = format!("{} of {}", approved.len(), record.approvals_needed);
        if !approved.is_empty() {
            approvals.push_str(": ");
            approvals.push_str(&approved.join(", "));
        }
        let ticket = match cut(&record.ticket, 20) {
            ticket if ticket.is_empty() => "-".to_owned(),
            ticket => ticket,
        };
        table.row(vec![
            clean(record.id.as_str()),
            record.stage.state_word().to_owned(),
            clean(&record.requester()),
            cut(&record.targets.join(","), 40),
            cut(&record.purpose, 40),
            ticket,
            human_duration(record.wanted),
            approvals,
            when(record, desk, now),
        ]);
    }
    let heading = if all {
        "Requests, newest first"
    } else {
        "Requests waiting for an answer, approved or live"
    };
    let mut out = format!(
        "{heading} (times in {}):\n{}",
        desk.zone().name(),
        table.render()
    );
    if records.len() >= usize::try_from(LIST_LIMIT).unwrap_or(usize::MAX) {
        out.push_str(&format!("\nOnly the newest {LIST_LIMIT} are shown."));
    }
    out
}

/// `request approve ID (--for D | --until T) [--comment TEXT] --as STAFF`.
pub async fn request_approve(
    desk: &Desk,
    id: &str,
    until: Until,
    comment: &str,
    staff: &str,
) -> Result<String, CliError> {
    let id = request_id(id)?;
    Ok(
        match desk
            .approve_with_comment(&id, staff, until, comment)
            .await?
        {
            Approved::Complete { end_at } => format!(
                "Approved {id} until {} {}.",
                desk.zone().format(end_at),
                desk.zone().name()
            ),
            Approved::Partial { have, need } => {
                let more = need.saturating_sub(have);
                let more = if more == 1 {
                    "one more approver".to_owned()
                } else {
                    format!("{more} more approvers")
                };
                format!("Recorded {staff}'s approval of {id} ({have} of {need}); it needs {more}.")
            }
        },
    )
}

/// `request deny ID --reason TEXT --as STAFF`.
pub async fn request_deny(
    desk: &Desk,
    id: &str,
    reason: &str,
    staff: &str,
) -> Result<String, CliError> {
    let id = request_id(id)?;
    let reason = required_reason(reason, "shown to the technician")?;
    desk.deny(&id, staff, &reason).await?;
    Ok(format!("Denied {id}; the technician is told: {reason}"))
}

/// `session list`: live sessions.
pub async fn session_list(desk: &Desk, now: SystemTime) -> Result<String, CliError> {
    let filter = RequestFilter {
        states: vec!["active"],
        limit: LIST_LIMIT,
        ..RequestFilter::default()
    };
    let records = desk.requests(&filter).await?;
    if records.is_empty() {
        return Ok("No live sessions.".to_owned());
    }
    let zone = desk.zone();
    let mut table = Table::new(&[
        "ID",
        "TECHNICIAN",
        "TARGETS",
        "OPENED",
        "ENDS",
        "LEFT",
        "CONNECTION",
    ]);
    for record in &records {
        let (opened, ends, left) = (
            record.opened_at.map(|at| zone.format(at)),
            record.end_at.map(|at| zone.format(at)),
            record.end_at.map(|at| minutes(since(now, at))),
        );
        // A session whose connection was lost stays live until its end time; say so.
        let connection = match record.detached_at {
            Some(lost) => format!("lost since {}", zone.format(lost)),
            None => "connected".to_owned(),
        };
        table.row(vec![
            clean(record.id.as_str()),
            clean(&record.requester()),
            cut(&record.targets.join(","), 40),
            opened.unwrap_or_else(|| "-".to_owned()),
            ends.unwrap_or_else(|| "-".to_owned()),
            left.unwrap_or_else(|| "-".to_owned()),
            connection,
        ]);
    }
    Ok(format!(
        "Live sessions (times in {}):\n{}",
        zone.name(),
        table.render()
    ))
}

/// `session revoke ID --reason TEXT --as STAFF`.
pub async fn session_revoke(
    desk: &Desk,
    id: &str,
    reason: &str,
    staff: &str,
) -> Result<String, CliError> {
    let id = request_id(id)?;
    let reason = required_reason(reason, "shown to the technician")?;
    desk.revoke(&id, staff, &reason).await?;
    Ok(format!(
        "Revoked {id}; it cannot be used any more, a live session is cut within a second, and the technician is told: {reason}"
    ))
}

/// `session extend ID (--for D | --until T) [--comment TEXT] --as STAFF`: `--for` adds to
/// the current end.
pub async fn session_extend(
    desk: &Desk,
    id: &str,
    until: Until,
    comment: &str,
    staff: &str,
    now: SystemTime,
) -> Result<String, CliError> {
    let id = request_id(id)?;
    Ok(
        match desk.extend_with_comment(&id, staff, until, comment).await? {
            Extended::Moved { end_at } => format!(
                "{id} now ends at {} {} ({} from now).",
                desk.zone().format(end_at),
                desk.zone().name(),
                minutes(since(now, end_at))
            ),
            Extended::Asked { end_at, have, need } => format!(
                "Your ask to end {id} at {} {} is on the record ({have} of {need} approvers); it moves when {} more different approver{} ask{} for a later end.",
                desk.zone().format(end_at),
                desk.zone().name(),
                need.saturating_sub(have),
                if need.saturating_sub(have) == 1 {
                    ""
                } else {
                    "s"
                },
                if need.saturating_sub(have) == 1 {
                    "s"
                } else {
                    ""
                },
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people_are_whole_minutes() {
        assert_eq!(minutes(Duration::from_secs(59)), "<1m");
        assert_eq!(minutes(Duration::from_secs(61)), "1m");
        assert_eq!(minutes(Duration::from_secs(3_900 + 30)), "1h5m");
    }

    #[test]
    fn ids_that_cannot_be_request_ids_are_refused_with_a_sentence() {
        assert!(request_id("r-abcdefghjk").is_ok());
        let error = request_id("").unwrap_err().to_string();
        assert!(error.contains("not a request id"), "{error}");
    }
}
