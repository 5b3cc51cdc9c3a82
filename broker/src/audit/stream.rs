//! The live stream of audit events for a SIEM: every event, as it is recorded, appended as
//! one JSON line ([`ExportLine`]) to a file that a log shipper (rsyslog's imfile, fluent-bit,
//! a SIEM agent) follows. (To send the same lines straight to a syslog collector, see
//! [`super::syslog`].)
//!
//! The stream follows the database, not the code paths that write events (`audit::follow`),
//! so it carries every event from every broker sharing the database, in chain order, and a
//! line in the file can be checked against the chain. It never blocks the broker: it runs on
//! its own, and when the file cannot be written (disk full, removed directory) it records an
//! `audit-stream-failed` event once, keeps the events it could not write, and writes them
//! when the file is writable again (recording `audit-stream-recovered`). After a restart it
//! resumes after the last line already in the file.
//!
//! Signed checkpoints of the chain ([`super::checkpoint`]) come in the same file, each as a line
//! of its own (`{"checkpoint":{…}}`) after the event it commits to, so a copy of the file proves
//! the database's log against them (`audit verify --checkpoints FILE`).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::follow::{self, Follow, Sink};
use super::{EventKind, ExportLine, StoredEvent};
use crate::clock::Clock;
use crate::store::Store;

pub use super::follow::POLL_INTERVAL;

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
    let follow = Follow {
        store,
        clock,
        broker_id,
    };
    follow::run(FileSink { path }, follow, shutdown).await;
}

/// The file, opened for each batch (so a file moved away by log rotation is made anew).
struct FileSink {
    path: PathBuf,
}

impl Sink for FileSink {
    const NAME: &'static str = "audit stream";
    const FAILED: EventKind = EventKind::AuditStreamFailed;
    const RECOVERED: EventKind = EventKind::AuditStreamRecovered;

    fn place(&self) -> (&'static str, String) {
        ("path", self.path.display().to_string())
    }

    async fn resume_after(&mut self) -> Result<i64, String> {
        last_seq_in(&self.path).map_err(|e| e.to_string())
    }

    async fn write(&mut self, events: &[StoredEvent]) -> Result<(), String> {
        let mut lines = String::new();
        for event in events {
            lines.push_str(&ExportLine::of(event).to_json());
            lines.push('\n');
        }
        self.append(&lines).await
    }

    async fn write_checkpoints(&mut self, checkpoints: &[Checkpoint]) -> Result<(), String> {
        let mut lines = String::new();
        for checkpoint in checkpoints {
            lines.push_str(&checkpoint.to_line());
            lines.push('\n');
        }
        self.append(&lines).await
    }
}

impl FileSink {
    async fn append(&self, lines: &str) -> Result<(), String> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .await
            .map_err(|e| e.to_string())?;
        file.write_all(lines.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        file.flush().await.map_err(|e| e.to_string())
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
