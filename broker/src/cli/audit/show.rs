//! `audit show`: one session's story, from request to end, and its summary.

#[allow(
    unused_imports,
    reason = "the parent's imports, shared by every part of the audit commands"
)]
use super::*;

/// What `event` says happened, in words, with its key details.
fn describe(event: &AuditEvent, zone: &HospitalZone) -> String {
    let text = |key: &str| event.detail_value(key).map(clean).unwrap_or_default();
    let time = |key: &str| {
        event
            .detail_value(key)
            .map(|value| local_stamp(zone, value))
            .unwrap_or_else(|| "?".to_owned())
    };
    let target = or_dash(&event.target);
    let with_reason = |what: String| match event.detail_value("reason").filter(|r| !r.is_empty()) {
        Some(reason) => format!("{what}: {}", clean(reason)),
        None => what,
    };
    let with_comment = |what: String| match event.detail_value("comment").filter(|c| !c.is_empty())
    {
        Some(comment) => format!("{what} (\"{}\")", clean(comment)),
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
        EventKind::RequestApproved => with_comment(format!(
            "approved until {}, approval {}",
            time("until"),
            text("approval")
        )),
        EventKind::RequestDenied => with_reason("denied the request".to_owned()),
        EventKind::RequestExpired => format!("the request expired unused (it was {})", text("was")),
        EventKind::SessionOpened => {
            let mut out = format!("opened the session until {}", time("end_at"));
            // Events before the source and certificate were recorded have neither.
            if let Some(source) = event.detail_value("source") {
                out.push_str(&format!(", from {}", clean(source)));
            }
            if let Some(certificate) = event.detail_value("certificate") {
                out.push_str(&format!(", certificate {}", clean(certificate)));
            }
            out
        }
        EventKind::SessionOpenRefused => with_reason("was refused opening the session".to_owned()),
        EventKind::ConnectionLost => {
            let mut out = format!(
                "lost the session's connection ({}); the session stays approved until {}",
                text("cause"),
                time("end_at")
            );
            if let Some(source) = event.detail_value("source") {
                out.push_str(&format!(", it came from {}", clean(source)));
            }
            out
        }
        EventKind::SessionResumed => {
            let code = if text("with_code") == "true" {
                "with a new one-time password"
            } else {
                "without a new code, within the policy's window"
            };
            format!(
                "took the session up again from {} over {} {code}",
                text("source"),
                text("transport")
            )
        }
        EventKind::SessionWarned => {
            let left = event
                .detail_value("seconds_left")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| human_duration(Duration::from_secs(s)))
                .unwrap_or_else(|| "?".to_owned());
            format!("warned that the session ends in {left}")
        }
        EventKind::SessionExtended => {
            let mut out = format!("moved the end from {} to {}", time("from"), time("to"));
            if let Some(approvers) = event.detail_value("approvers").filter(|a| a.contains(',')) {
                out.push_str(&format!(", agreed by {}", clean(approvers)));
            }
            with_comment(out)
        }
        EventKind::SessionExtensionAsked => with_comment(format!(
            "asked to move the end from {} to {}, approval {}",
            time("from"),
            time("to"),
            text("approval")
        )),
        EventKind::SessionEnded => {
            let mut out = format!("ended the session ({}", text("reason"));
            if let Some(was) = event.detail_value("was").filter(|was| *was != "active") {
                out.push_str(&format!(", it was {}", clean(was)));
            }
            out.push(')');
            if let Some(note) = event.detail_value("note").filter(|note| !note.is_empty()) {
                out.push_str(&format!(": {}", clean(note)));
            }
            out
        }
        EventKind::ForwardOpened => match event.detail_value("local") {
            Some(local) => format!(
                "opened a forward to {target} at {}, from the broker's {}",
                text("address"),
                clean(local)
            ),
            None => format!("opened a forward to {target} at {}", text("address")),
        },
        EventKind::ForwardClosed => {
            let took = event
                .detail_value("duration_ms")
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
            event
                .detail_value(key)
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
