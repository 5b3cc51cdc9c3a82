//! `audit review` and `audit unreviewed`.

#[allow(
    unused_imports,
    reason = "the parent's imports, shared by every part of the audit commands"
)]
use super::*;

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
pub(super) fn age(duration: Duration) -> String {
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
