//! `audit list` and `audit export`, and the line format of a JSON Lines export.

#[allow(
    unused_imports,
    reason = "the parent's imports, shared by every part of the audit commands"
)]
use super::*;
use crate::audit::ExportLine;

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
        ExportFormat::JsonLines => {
            // The signed checkpoints of exported events go with them.
            let last = events.last().map_or(0, |event| event.seq);
            let checkpoints = desk
                .store()
                .audit_checkpoints(0, last)
                .await
                .map_err(AuditError::Store)?;
            jsonl(&events, &checkpoints, &selection, now, staff)?
        }
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
            crate::pki::files::write_private(path, text.as_bytes()).map_err(CliError::from)?;
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
fn jsonl(
    events: &[StoredEvent],
    checkpoints: &[crate::audit::checkpoint::Checkpoint],
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
        for checkpoint in checkpoints.iter().filter(|c| c.seq == stored.seq) {
            out.push_str(&checkpoint.to_line());
            out.push('\n');
        }
    }
    Ok(out)
}

/// The characters that make a spreadsheet read a cell as a formula (or, for tab and CR, that
/// some spreadsheets strip before they do): OWASP's list for CSV injection.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One CSV field: prefixed with `'` when it starts like a formula (a hostile vendor writes,
/// for instance, the `target` of its own `forward-refused` rows, and an auditor opens the
/// export in a spreadsheet), then quoted as RFC 4180 asks when it holds a comma, a quote or a
/// line break. The `'` is what spreadsheets take as "text, not a formula", and it stays
/// visible, so nothing is hidden from the reader.
pub(super) fn csv_field(text: &str) -> String {
    let text = if text.starts_with(FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
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
