//! The live stream of audit events for a SIEM: every event, as it is recorded, appended as
//! one JSON line ([`ExportLine`]) to a file that a log shipper (rsyslog's imfile, fluent-bit,
//! a SIEM agent) follows.
//!
//! The stream follows the database, not the code paths that write events, so it carries
//! every event from every broker sharing the database, in chain order, and a line in the file
//! can be checked against the chain. It never blocks the broker: it runs on its own, and when
//! the file cannot be written (disk full, removed directory) it records an
//! `audit-stream-failed` event once, keeps the events it could not write, and writes them
//! when the file is writable again (recording `audit-stream-recovered`). After a restart it
//! resumes after the last line already in the file.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{Actor, AuditEvent, EventKind, ExportLine};
use crate::clock::Clock;
use crate::store::{AuditFilter, Store};

/// How often the database is read for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Events written per read.
const BATCH: i64 = 1000;
/// How much of the file's end is read to find where to resume.
const TAIL: u64 = 256 * 1024;

/// Follows the audit log into `path` until `shutdown` (then writes what is left and stops).
pub async fn run(
    store: Store,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    broker_id: String,
    shutdown: CancellationToken,
) {
    let mut after = match last_seq_in(&path) {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the audit stream file to resume; starting after the current head");
            store.audit_head().await.map(|(seq, _)| seq).unwrap_or(0)
        }
    };
    let mut failing = false;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            () = shutdown.cancelled() => true,
        };
        match write_new_events(&store, &path, after).await {
            Ok(last) => {
                after = last;
                if failing {
                    failing = false;
                    tracing::info!(path = %path.display(), "the audit stream is writable again");
                    let event = AuditEvent::new(
                        clock.now(),
                        Actor::Broker(broker_id.clone()),
                        EventKind::AuditStreamRecovered,
                    )
                    .detail("path", path.display());
                    let _ = store.record(&event).await;
                }
            }
            Err(Failure::Sink(why)) if !failing => {
                failing = true;
                tracing::error!(path = %path.display(), error = %why, "cannot write the audit stream; events are kept and written when it is writable again");
                let event = AuditEvent::new(
                    clock.now(),
                    Actor::Broker(broker_id.clone()),
                    EventKind::AuditStreamFailed,
                )
                .detail("path", path.display())
                .detail("error", why);
                if let Err(e) = store.record(&event).await {
                    tracing::error!(error = %e, "cannot record that the audit stream failed");
                }
            }
            Err(Failure::Sink(_)) => {}
            Err(Failure::Store(why)) => {
                tracing::warn!(error = %why, "cannot read the audit log for the stream");
            }
        }
        if stopping {
            return;
        }
    }
}

enum Failure {
    Sink(String),
    Store(String),
}

/// Appends the events after `after` to the file; returns the last one written.
async fn write_new_events(store: &Store, path: &Path, mut after: i64) -> Result<i64, Failure> {
    loop {
        let events = store
            .audit_events(&AuditFilter {
                after_seq: after,
                limit: BATCH,
                ..Default::default()
            })
            .await
            .map_err(|e| Failure::Store(e.to_string()))?;
        let Some(last) = events.last().map(|event| event.seq) else {
            return Ok(after);
        };
        let mut lines = String::new();
        for event in &events {
            lines.push_str(&ExportLine::of(event).to_json());
            lines.push('\n');
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(|e| Failure::Sink(e.to_string()))?;
        file.write_all(lines.as_bytes())
            .await
            .map_err(|e| Failure::Sink(e.to_string()))?;
        file.flush()
            .await
            .map_err(|e| Failure::Sink(e.to_string()))?;
        after = last;
        if (events.len() as i64) < BATCH {
            return Ok(after);
        }
    }
}

/// The number of the last event in the file (0 when there is none yet).
fn last_seq_in(path: &Path) -> std::io::Result<i64> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL)))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    Ok(tail
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<ExportLine>(line).ok())
        .map(|line| line.seq())
        .unwrap_or(0))
}
