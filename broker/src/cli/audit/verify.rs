//! `audit head` and `audit verify`, over the database or an export file.

#[allow(
    unused_imports,
    reason = "the parent's imports, shared by every part of the audit commands"
)]
use super::*;
use crate::audit::checkpoint::{self, Checkpoint, Found, Report, Source, TrustedKeys};
use crate::audit::{ChainBreak, ExportLine};

/// Where `audit verify` looks for signed checkpoints besides the database, and whose keys it
/// trusts.
#[derive(Debug, Clone, Default)]
pub struct CheckpointSources {
    /// The data directory: its checkpoint file, its own key and the fingerprints listed in its
    /// `trusted-checkpoint-keys`.
    pub data_dir: Option<PathBuf>,
    /// `--checkpoints FILE`: a checkpoint file, a JSON-lines stream or a syslog capture.
    pub files: Vec<PathBuf>,
    /// `--trust-key sha256:…`: fingerprints of other keys to trust.
    pub trust: Vec<String>,
}

impl CheckpointSources {
    fn trusted(&self) -> Result<TrustedKeys, AuditError> {
        TrustedKeys::of(self.data_dir.as_deref(), &self.trust)
            .map_err(|sentence| AuditError::Cli(CliError::Input(format!("{sentence}."))))
    }

    /// The checkpoints in the files given and the data directory's checkpoint file (a missing
    /// checkpoint file is no error: the broker may not have made one yet).
    fn read(&self) -> Result<Vec<Found>, AuditError> {
        let mut found = Vec::new();
        for path in &self.files {
            found.extend(
                checkpoint::read_file(path).map_err(|source| AuditError::Read {
                    path: path.clone(),
                    source,
                })?,
            );
        }
        if let Some(dir) = &self.data_dir {
            let path = dir.join(checkpoint::CHECKPOINT_FILE);
            match checkpoint::read_file(&path) {
                Ok(more) => found.extend(more),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(AuditError::Read { path, source }),
            }
        }
        Ok(found)
    }
}

/// The lines `audit verify` adds about checkpoints when nothing is wrong.
fn checkpoint_lines(report: &Report) -> String {
    let mut out = match &report.newest {
        Some(found) => format!(
            "\nSigned checkpoint: the chain matches the newest of {} trusted checkpoints, at event {} (broker {} at {}, key {}, {}).",
            report.checked,
            found.checkpoint.seq,
            found.checkpoint.broker,
            audit::timestamp(found.checkpoint.time()),
            found.checkpoint.fingerprint(),
            found.source
        ),
        None => "\nNo signed checkpoint from a trusted key was found: the chain holds together, but nothing outside it proves it was not rewritten, cut off or rolled back (give --checkpoints FILE, or run verify where the broker's data directory is).".to_owned(),
    };
    if report.untrusted > 0 {
        out.push_str(&format!(
            "\n{} checkpoints signed by keys not trusted here were not used (add their fingerprints to {} if they are this hospital's brokers).",
            report.untrusted,
            checkpoint::TRUST_FILE
        ));
    }
    out
}

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

/// The database's chain, found whole: how many events, the head, and where the head written
/// down earlier stands, if one was given. The CLI prints it with its `Display`; the web UI
/// words the same fields in the page's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainIntact {
    /// How many events the chain holds.
    pub count: i64,
    /// The last event's hash.
    pub head: String,
    /// The number of the event whose hash was given with `--expect-head` (0: the empty log's).
    pub written_down_at: Option<i64>,
}

impl std::fmt::Display for ChainIntact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Intact: {} events, head {}", self.count, self.head)?;
        match self.written_down_at {
            None => Ok(()),
            Some(seq) if seq == self.count => {
                f.write_str("\nThe head you wrote down is the current head.")
            }
            Some(seq) => {
                let after = self.count - seq;
                let events = if after == 1 { "event" } else { "events" };
                write!(
                    f,
                    "\nThe head you wrote down is event {seq}; {after} {events} came after it."
                )
            }
        }
    }
}

/// `audit verify [--expect-head HASH] [--checkpoints FILE]…`: walks the whole chain in the
/// database (see [`check_chain`]), then checks it against every signed checkpoint found in the
/// database, the data directory's checkpoint file and the files given, and says so.
pub async fn audit_verify(
    desk: &Desk,
    expect_head: Option<&str>,
    sources: &CheckpointSources,
) -> Result<String, AuditError> {
    let trusted = sources.trusted()?;
    let intact = check_chain(desk, expect_head).await?;
    let store = desk.store();
    // The database's first: a checkpoint found there too is named there, so one beyond the
    // chain's end tells of a cut rather than of an older copy.
    let mut found: Vec<Found> = store
        .audit_checkpoints(0, i64::MAX)
        .await
        .map_err(unreadable)?
        .into_iter()
        .map(|checkpoint| Found {
            source: Source::Database,
            checkpoint,
        })
        .collect();
    found.extend(sources.read()?);
    let events: Vec<StoredEvent> = store
        .all_audit_events()
        .await
        .map_err(unreadable)?
        .into_iter()
        .take_while(|e| e.seq <= intact.count)
        .collect();
    let report = checkpoint::check(&events, found, &trusted);
    if !report.findings.is_empty() {
        return Err(AuditError::Checkpoints(
            report
                .findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ));
    }
    Ok(format!("{intact}{}", checkpoint_lines(&report)))
}

/// Walks the whole chain in the database.
///
/// Besides the chain itself, the log's head record must name an event of the chain (so a
/// tail cut without resetting the head is found), and `expect_head`, when given, must be the
/// hash of some event: the head written down earlier, now or before later events.
pub async fn check_chain(
    desk: &Desk,
    expect_head: Option<&str>,
) -> Result<ChainIntact, AuditError> {
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
            problem: ChainBreak::CutOff {
                recorded: head_seq,
                count,
            },
        });
    }
    if stored_head_hash.as_deref() != Some(head_hash_stored.as_str()) {
        return Err(AuditError::Broken {
            seq: head_seq,
            problem: ChainBreak::HeadReplaced,
        });
    }
    if let Some(expected) = expected
        && expected_at.is_none()
    {
        return Err(AuditError::HeadNotFound { count, expected });
    }
    Ok(ChainIntact {
        count,
        head,
        written_down_at: expected_at,
    })
}

/// `audit verify --file EXPORT.jsonl [--expect-head HASH]`: checks a JSON Lines export on
/// its own, without the database.
///
/// Every event's hash must match its contents, and consecutive event numbers must chain.
/// Gaps between numbers are allowed only when the export's first line says it was filtered;
/// an unfiltered export must start at event 1.
pub fn audit_verify_file(
    path: &Path,
    expect_head: Option<&str>,
    sources: &CheckpointSources,
) -> Result<String, AuditError> {
    let expected = expect_head.map(head_hash).transpose()?;
    let trusted = sources.trusted()?;
    let mut found = sources.read()?;
    let mut chain: Vec<StoredEvent> = Vec::new();
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
        if line.starts_with("{\"checkpoint\":") {
            let checkpoint = Checkpoint::from_line(line)
                .ok_or_else(|| broken(number, "it is not a signed checkpoint".to_owned()))?;
            found.push(Found {
                source: Source::File(path.to_owned()),
                checkpoint,
            });
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
        previous = Some((seq, stored.hash.clone()));
        chain.push(stored);
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
    let report = if filtered {
        // Only the checkpoints of events the export holds can be checked.
        let held: std::collections::BTreeMap<i64, &str> =
            chain.iter().map(|e| (e.seq, e.hash.as_str())).collect();
        let mut report = Report::default();
        for item in found {
            if !item.checkpoint.signature_verifies() {
                report
                    .findings
                    .push(checkpoint::Finding::BadSignature(item));
            } else if !trusted.trusts(&item.checkpoint.fingerprint()) {
                report.untrusted += 1;
            } else if let Some(hash) = held.get(&item.checkpoint.seq) {
                if *hash == item.checkpoint.head {
                    report.checked += 1;
                    if report
                        .newest
                        .as_ref()
                        .is_none_or(|n| n.checkpoint.seq < item.checkpoint.seq)
                    {
                        report.newest = Some(item);
                    }
                } else {
                    report.findings.push(checkpoint::Finding::Rewritten {
                        from: first,
                        now_at: None,
                        found: item,
                    });
                }
            }
        }
        report
    } else {
        checkpoint::check(&chain, found, &trusted)
    };
    if !report.findings.is_empty() {
        return Err(AuditError::Checkpoints(
            report
                .findings
                .iter()
                .map(|finding| format!("The export {}: {finding}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        ));
    }
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
    out.push_str(&checkpoint_lines(&report));
    Ok(out)
}
