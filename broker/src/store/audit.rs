//! Appending audit events (inside the transaction of the change they describe) and reading
//! them back.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::oneshot;

use super::tx::WriteTx;
use super::{Store, StoreError};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::{Actor, AuditEvent, EventKind, StoredEvent, chain_hash};
use crate::clock::{from_unix_ms, to_unix_ms};

const EVENT_COLUMNS: &str =
    "seq, at, actor, kind, request_id, vendor, technician, target, details, prev_hash, hash";

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events at or after this time.
    pub since: Option<std::time::SystemTime>,
    /// Only events before this time.
    pub until: Option<std::time::SystemTime>,
    /// Only this vendor's.
    pub vendor: Option<String>,
    /// Only this technician's (with or without `vendor`).
    pub technician: Option<String>,
    /// Only about this target.
    pub target: Option<String>,
    /// Only about this request or session.
    pub request: Option<String>,
    /// Only these kinds; empty means all.
    pub kinds: Vec<EventKind>,
    /// Events after this number (for paging and following); 0 for the start.
    pub after_seq: i64,
    /// At most this many (0: no limit).
    pub limit: i64,
}

/// Appends `event` to the chain inside `tx`. The head update comes first, so concurrent
/// appenders (connections, brokers) queue on it and each chains to the one before.
pub(super) async fn append(tx: &mut WriteTx, event: &AuditEvent) -> Result<i64, StoreError> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get(0)?;
    let prev_hash: String = head.try_get(1)?;
    let hash = chain_hash(seq, &prev_hash, event);
    let details = serde_json::to_string(&event.details)
        .map_err(|e| StoreError::Corrupt(format!("audit details: {e}")))?;
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor, kind, request_id, vendor, technician, target, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(seq)
    .bind(to_unix_ms(event.at))
    .bind(event.actor.encode())
    .bind(event.kind.as_str())
    .bind(event.request.as_deref())
    .bind(event.vendor.as_deref())
    .bind(event.technician.as_deref())
    .bind(event.target.as_deref())
    .bind(details)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}

/// Events that go with no state change, waiting to be committed together.
///
/// Many forwards open at once, and each must be on the record before the broker answers it.
/// One transaction (one sync to disk) per event would bound a session to a few hundred
/// forwards a second; instead, whoever holds the committer's turn commits every event waiting
/// at that moment in one transaction, while the next ones gather behind it (a group commit).
/// Each caller still returns only once its own event is durable.
#[derive(Default)]
pub(super) struct GroupCommit {
    waiting: std::sync::Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

struct Waiting {
    event: AuditEvent,
    answer: oneshot::Sender<Result<i64, StoreError>>,
}

impl Store {
    /// Records an event that goes with no state change (a forward, a refusal, a warning),
    /// committed together with the events other tasks record at the same moment; returns
    /// once it is durable. When this fails the caller must not go on as if it had been
    /// recorded.
    pub async fn record(&self, event: &AuditEvent) -> Result<i64, StoreError> {
        let (answer, mut answered) = oneshot::channel();
        self.group()
            .waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Waiting {
                event: event.clone(),
                answer,
            });
        let _turn = self.group().turn.lock().await;
        // The previous turn may have committed this event along with its own.
        if let Ok(result) = answered.try_recv() {
            return result;
        }
        let group = std::mem::take(
            &mut *self
                .group()
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        // A task of its own, so a caller that goes away mid-commit leaves no one unanswered.
        let store = self.clone();
        let _ = tokio::spawn(async move { store.commit_group(group).await }).await;
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the audit commit was interrupted".into(),
            ))
        })
    }

    /// Appends `group` in one transaction and answers each waiting caller.
    async fn commit_group(&self, group: Vec<Waiting>) {
        if group.is_empty() {
            return;
        }
        let committed = async {
            let mut tx = self.begin().await?;
            let mut numbers = Vec::with_capacity(group.len());
            for waiting in &group {
                numbers.push(append(&mut tx, &waiting.event).await?);
            }
            tx.commit().await?;
            Ok::<_, StoreError>(numbers)
        }
        .await;
        match committed {
            Ok(numbers) => {
                for (waiting, seq) in group.into_iter().zip(numbers) {
                    let _ = waiting.answer.send(Ok(seq));
                }
            }
            Err(error) => {
                for waiting in group {
                    let _ = waiting.answer.send(Err(error.clone()));
                }
            }
        }
    }

    /// The chain's head: how many events, and the last one's hash.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Events matching `filter`, oldest first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<StoredEvent>, StoreError> {
        // Built from fixed fragments and numbered placeholders; every value is bound.
        let mut clauses = vec!["seq > $1".to_owned()];
        let mut texts: Vec<String> = Vec::new();
        let mut numbers: Vec<i64> = vec![filter.after_seq];
        let mut next = 2;
        let mut slot = || {
            let placeholder = format!("${next}");
            next += 1;
            placeholder
        };
        // Numbers first (after $1), then texts, so the binding order is simple.
        if let Some(since) = filter.since {
            clauses.push(format!("at >= {}", slot()));
            numbers.push(to_unix_ms(since));
        }
        if let Some(until) = filter.until {
            clauses.push(format!("at < {}", slot()));
            numbers.push(to_unix_ms(until));
        }
        for (column, value) in [
            ("vendor", &filter.vendor),
            ("technician", &filter.technician),
            ("target", &filter.target),
            ("request_id", &filter.request),
        ] {
            if let Some(value) = value {
                clauses.push(format!("{column} = {}", slot()));
                texts.push(value.clone());
            }
        }
        if !filter.kinds.is_empty() {
            let slots: Vec<String> = filter.kinds.iter().map(|_| slot()).collect();
            clauses.push(format!("kind IN ({})", slots.join(", ")));
            texts.extend(filter.kinds.iter().map(|kind| kind.as_str().to_owned()));
        }
        let limit = if filter.limit > 0 {
            format!(" LIMIT {}", filter.limit)
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE {} ORDER BY seq{limit}",
            clauses.join(" AND ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
        for number in numbers {
            query = query.bind(number);
        }
        for text in &texts {
            query = query.bind(text.as_str());
        }
        query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    /// Every event, in order, for verification.
    pub async fn all_audit_events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        self.audit_events(&AuditFilter::default()).await
    }
}

fn event_from_row(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    let seq: i64 = row.try_get(0)?;
    let actor: String = row.try_get(2)?;
    let kind: String = row.try_get(3)?;
    let details: String = row.try_get(8)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit event {seq}: {what}"));
    Ok(StoredEvent {
        seq,
        prev_hash: row.try_get(9)?,
        hash: row.try_get(10)?,
        event: AuditEvent {
            at: from_unix_ms(row.try_get(1)?),
            actor: Actor::decode(&actor).ok_or_else(|| corrupt("unknown actor"))?,
            kind: EventKind::parse(&kind).ok_or_else(|| corrupt("unknown kind"))?,
            request: row.try_get(4)?,
            vendor: row.try_get(5)?,
            technician: row.try_get(6)?,
            target: row.try_get(7)?,
            details: serde_json::from_str(&details)
                .map_err(|_| corrupt("details are not a list of pairs"))?,
        },
    })
}

/// An auditor's review of an ended session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// The session's request id.
    pub request: String,
    /// Who reviewed it.
    pub reviewer: String,
    /// When.
    pub at: std::time::SystemTime,
    /// What they wrote.
    pub comment: String,
}

impl Store {
    /// Marks ended session `request` reviewed by `reviewer`, with its audit event, in one
    /// transaction. `NotFound` when there is no such session; `Stale` when it is not over yet
    /// (a live session cannot be reviewed) or this reviewer already reviewed it.
    pub async fn add_review(&self, review: &Review, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO reviews (request_id, reviewer, reviewed_at, comment) SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM requests WHERE id = $1 AND state = 'ended' AND opened_at IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM reviews WHERE request_id = $1 AND reviewer = $2)",
        )
        .bind(&review.request)
        .bind(&review.reviewer)
        .bind(to_unix_ms(review.at))
        .bind(&review.comment)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            let exists =
                sqlx::query("SELECT 1 FROM requests WHERE id = $1 AND opened_at IS NOT NULL")
                    .bind(&review.request)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            tx.rollback().await?;
            return Err(if exists {
                StoreError::Stale
            } else {
                StoreError::NotFound
            });
        }
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The reviews of `request`, oldest first.
    pub async fn reviews(&self, request: &str) -> Result<Vec<Review>, StoreError> {
        sqlx::query("SELECT request_id, reviewer, reviewed_at, comment FROM reviews WHERE request_id = $1 ORDER BY reviewed_at")
            .bind(request)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(Review {
                    request: row.try_get(0)?,
                    reviewer: row.try_get(1)?,
                    at: from_unix_ms(row.try_get(2)?),
                    comment: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Sessions (requests that were opened) that have ended and have no review, oldest end
    /// first, with when each ended.
    pub async fn unreviewed_sessions(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, std::time::SystemTime)>, StoreError> {
        let limit = if limit > 0 { limit } else { 1000 };
        sqlx::query(AssertSqlSafe(format!(
            "SELECT id, ended_at FROM requests r WHERE state = 'ended' AND opened_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.request_id = r.id) ORDER BY ended_at, id LIMIT {limit}"
        )))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, from_unix_ms(row.try_get(1)?))))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
    }
}

impl Store {
    /// Keeps a signed checkpoint (a second one of the same event by the same broker is
    /// dropped).
    pub async fn record_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, broker, head, event, at, public_key, signature) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (seq, broker) DO NOTHING",
        )
        .bind(checkpoint.seq)
        .bind(&checkpoint.broker)
        .bind(&checkpoint.head)
        .bind(&checkpoint.event)
        .bind(checkpoint.at_ms)
        .bind(&checkpoint.key)
        .bind(&checkpoint.signature)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Each broker's newest checkpoint, by broker id.
    pub async fn newest_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut newest: Vec<Checkpoint> = Vec::new();
        for checkpoint in self.audit_checkpoints(0, i64::MAX).await? {
            match newest.iter_mut().find(|c| c.broker == checkpoint.broker) {
                Some(kept) => *kept = checkpoint,
                None => newest.push(checkpoint),
            }
        }
        newest.sort_by(|a, b| a.broker.cmp(&b.broker));
        Ok(newest)
    }

    /// The newest checkpoint of any broker (of the highest event), if there is one.
    pub async fn newest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, broker, head, event, at, public_key, signature FROM audit_checkpoints ORDER BY seq DESC, at DESC LIMIT 1",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(checkpoints_of(&rows)?.pop())
    }

    /// The checkpoints of events after `after_seq` up to `up_to_seq`, by event number (every
    /// one when `up_to_seq` is `i64::MAX`).
    pub async fn audit_checkpoints(
        &self,
        after_seq: i64,
        up_to_seq: i64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, broker, head, event, at, public_key, signature FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq, broker",
        )
        .bind(after_seq)
        .bind(up_to_seq)
        .fetch_all(self.pool())
        .await?;
        checkpoints_of(&rows)
    }
}

/// Checkpoints read as `SELECT seq, broker, head, event, at, public_key, signature`.
fn checkpoints_of(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Checkpoint>, StoreError> {
    rows.iter()
        .map(|row| {
            let at_ms: i64 = row.try_get(4)?;
            Ok(Checkpoint {
                seq: row.try_get(0)?,
                broker: row.try_get(1)?,
                head: row.try_get(2)?,
                event: row.try_get(3)?,
                at: crate::audit::timestamp(from_unix_ms(at_ms)),
                at_ms,
                key: row.try_get(5)?,
                signature: row.try_get(6)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
