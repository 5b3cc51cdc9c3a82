//! `audit head` and `audit verify`, over the database or an export file.

#[allow(
    unused_imports,
    reason = "the parent's imports, shared by every part of the audit commands"
)]
use super::*;
use crate::audit::ExportLine;

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
