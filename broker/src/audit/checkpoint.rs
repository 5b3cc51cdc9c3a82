//! Signed checkpoints of the audit chain: what makes a rewrite, a truncation or a rollback of
//! the database visible to `audit verify`.
//!
//! The chain alone ([`super::verify`]) finds an edit that was not re-chained, but anyone who can
//! write the database can also re-chain what they changed, renumber what is left after a
//! deletion, cut the tail and reset `audit_head`, or put back an older copy of the whole
//! database. So every few seconds while events are appended (never when nothing changed), and
//! once more at shutdown, each broker signs a checkpoint: the number of the chain's last event,
//! its hash, a digest of that event's contents, the time and the broker's id, with an Ed25519
//! key of its own kept outside the database (`DATA_DIR/checkpoint.key`, mode 0600, made at the
//! broker's first start). Before it signs, the broker checks that the events since its last
//! checkpoint chain from it, so it never signs a head it cannot vouch for.
//!
//! A checkpoint goes where the database's writer cannot reach it: an append-only file in the
//! data directory ([`CHECKPOINT_FILE`], one JSON line each), the SIEM streams (the JSON-lines
//! file stream and the syslog stream carry it as a line of its own kind, after the event it
//! commits to), every JSON Lines export (after the event it commits to), and the database
//! itself (table `audit_checkpoints`, where an attacker can delete it but never forge it).
//!
//! `audit verify` ([`check`]) trusts the key in its own data directory and the fingerprints
//! listed in [`TRUST_FILE`] (one `sha256:…` per line: the other brokers sharing the database,
//! each of which has its own key) or given with `--trust-key`. A checkpoint whose signature does
//! not verify is reported; one from a key nobody trusts is counted and otherwise ignored.
//!
//! The webhook sends no message of its own for a checkpoint (it is the approvers' alerting
//! channel, and a message every few seconds would bury theirs); instead every message it sends
//! carries the newest checkpoint as `"signed": {"checkpoint": {…}}`, so a relay that logs the
//! bodies it receives keeps checkpoints where the database's writer cannot reach them.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{AuditEvent, GENESIS_HASH, StoredEvent, chain_hash, timestamp};
use crate::clock::{Clock, from_unix_ms, to_unix_ms};
use crate::encoding::{hex, unhex};
use crate::pki::PkiError;
use crate::store::{AuditFilter, Store};

/// This broker's signing key in the data directory (PKCS#8, mode 0600).
pub const KEY_FILE: &str = "checkpoint.key";
/// Fingerprints of other brokers' checkpoint keys that this data directory trusts, one
/// `sha256:…` per line (`#` starts a comment).
pub const TRUST_FILE: &str = "trusted-checkpoint-keys";
/// The append-only file of this broker's checkpoints in the data directory.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";
/// How often a broker signs a checkpoint while events are appended.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Events read at once when checking the chain before signing.
const BATCH: i64 = 1000;

/// One signed checkpoint: event `seq` of the chain has hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The number of the last event it covers.
    pub seq: i64,
    /// That event's chain hash.
    pub head: String,
    /// SHA-256 of that event's contents without its number and chain fields, so a renumbered
    /// copy of the event is recognised.
    pub event: String,
    /// When it was signed, RFC 3339 (for people; `at_ms` is what is signed).
    pub at: String,
    /// When it was signed, Unix milliseconds.
    pub at_ms: i64,
    /// The id of the broker that signed it.
    pub broker: String,
    /// The public key, `ed25519:` and hex.
    pub key: String,
    /// The Ed25519 signature over the fields above but `at`, hex.
    pub signature: String,
}

/// A checkpoint as one line: `{"checkpoint":{…}}`, never mistaken for an event line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    checkpoint: Checkpoint,
}

/// The bytes a checkpoint's signature covers, each field length-prefixed as the chain's are.
fn signed_bytes(seq: i64, head: &str, event: &str, at_ms: i64, broker: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [
        "sekisho-checkpoint-1",
        &seq.to_string(),
        head,
        event,
        &at_ms.to_string(),
        broker,
        key,
    ] {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    out
}

impl Checkpoint {
    /// Whether its signature verifies with the key it names.
    pub fn signature_verifies(&self) -> bool {
        let Some(public) = self.key.strip_prefix("ed25519:").and_then(unhex) else {
            return false;
        };
        let Some(signature) = unhex(&self.signature) else {
            return false;
        };
        let message = signed_bytes(
            self.seq,
            &self.head,
            &self.event,
            self.at_ms,
            &self.broker,
            &self.key,
        );
        UnparsedPublicKey::new(&ED25519, public)
            .verify(&message, &signature)
            .is_ok()
    }

    /// The fingerprint of the key it names (`sha256:…`), as `status` shows keys.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.key)
    }

    /// When it was signed.
    pub fn time(&self) -> SystemTime {
        from_unix_ms(self.at_ms)
    }

    /// The checkpoint as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        // Serialising strings and numbers cannot fail.
        serde_json::to_string(&Line {
            checkpoint: self.clone(),
        })
        .unwrap_or_default()
    }

    /// The checkpoint in `line`, if it holds one: a line of the checkpoint file, of the
    /// JSON-lines stream or of an export, or a syslog message whose text is one.
    pub fn from_line(line: &str) -> Option<Checkpoint> {
        let start = line.find("{\"checkpoint\":")?;
        let mut values = serde_json::Deserializer::from_str(&line[start..]).into_iter::<Line>();
        values.next()?.ok().map(|line| line.checkpoint)
    }
}

/// Every checkpoint in `text`, in the order written: a checkpoint file, a JSON-lines stream,
/// an export or a syslog capture (other lines are passed over).
pub fn parse_all(text: &str) -> Vec<Checkpoint> {
    text.lines().filter_map(Checkpoint::from_line).collect()
}

/// `sha256:` and the hex SHA-256 of the raw public key in `key` (`ed25519:HEX`).
pub fn fingerprint_of(key: &str) -> String {
    let raw = key
        .strip_prefix("ed25519:")
        .and_then(unhex)
        .unwrap_or_else(|| key.as_bytes().to_vec());
    format!("sha256:{}", hex(digest(&SHA256, &raw).as_ref()))
}

/// SHA-256 of an event's contents without its number and chain fields.
pub fn event_digest(event: &AuditEvent) -> String {
    hex(digest(&SHA256, &event.canonical(0, "")).as_ref())
}

/// A broker's checkpoint signing key.
pub struct CheckpointKey {
    pair: Ed25519KeyPair,
    public: String,
}

impl CheckpointKey {
    /// Loads `DATA_DIR/checkpoint.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<CheckpointKey, PkiError> {
        if let Some(key) = CheckpointKey::load(data_dir)? {
            return Ok(key);
        }
        let path = data_dir.join(KEY_FILE);
        let corrupt = |reason: &str| PkiError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        crate::pki::files::create_private_dir(data_dir)?;
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| corrupt("the system's random number generator failed"))?;
        crate::pki::files::write_private(&path, document.as_ref())?;
        CheckpointKey::from_pkcs8(&path, document.as_ref())
    }

    /// Loads `DATA_DIR/checkpoint.key` if it exists.
    pub fn load(data_dir: &Path) -> Result<Option<CheckpointKey>, PkiError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => CheckpointKey::from_pkcs8(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PkiError::Io { path, source }),
        }
    }

    fn from_pkcs8(path: &Path, bytes: &[u8]) -> Result<CheckpointKey, PkiError> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes).map_err(|_| PkiError::Corrupt {
            path: path.to_owned(),
            reason: "not an Ed25519 key in PKCS#8".into(),
        })?;
        let public = format!("ed25519:{}", hex(pair.public_key().as_ref()));
        Ok(CheckpointKey { pair, public })
    }

    /// The public key, `ed25519:HEX`.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The public key's fingerprint, `sha256:HEX`.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.public)
    }

    /// Signs "event `seq` is `last` (chain hash `head`)", by `broker` at `at`.
    pub fn sign(
        &self,
        seq: i64,
        head: &str,
        last: &AuditEvent,
        at: SystemTime,
        broker: &str,
    ) -> Checkpoint {
        let event = event_digest(last);
        let at_ms = to_unix_ms(at);
        let message = signed_bytes(seq, head, &event, at_ms, broker, &self.public);
        Checkpoint {
            seq,
            head: head.to_owned(),
            event,
            at: timestamp(at),
            at_ms,
            broker: broker.to_owned(),
            key: self.public.clone(),
            signature: hex(self.pair.sign(&message).as_ref()),
        }
    }
}

/// The fingerprint of `DATA_DIR/checkpoint.key`, if the broker has made it; for `status`, the
/// web Status page and the responsibility document.
pub fn fingerprint_in(data_dir: &Path) -> Option<String> {
    CheckpointKey::load(data_dir)
        .ok()
        .flatten()
        .map(|key| key.fingerprint())
}

/// The checkpoint keys a verification trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    fingerprints: BTreeSet<String>,
}

impl TrustedKeys {
    /// The key of `data_dir` (if made), the fingerprints in its [`TRUST_FILE`] (if any), and
    /// `extra` (`--trust-key`). A fingerprint that is not `sha256:` and 64 hex digits is refused
    /// with the sentence to show.
    pub fn of_data_dir(data_dir: &Path, extra: &[String]) -> Result<TrustedKeys, String> {
        TrustedKeys::of(Some(data_dir), extra)
    }

    /// As [`of_data_dir`](TrustedKeys::of_data_dir), without a data directory when `None`
    /// (an export checked on another machine: only `extra`).
    pub fn of(data_dir: Option<&Path>, extra: &[String]) -> Result<TrustedKeys, String> {
        let mut keys = TrustedKeys::default();
        if let Some(data_dir) = data_dir {
            keys.read_data_dir(data_dir)?;
        }
        for given in extra {
            let fingerprint = parse_fingerprint(given).ok_or_else(|| {
                format!(
                    "--trust-key `{}` is not a key fingerprint; give sha256: and 64 hexadecimal digits, as `sekisho-broker status` shows it",
                    given.escape_debug()
                )
            })?;
            keys.fingerprints.insert(fingerprint);
        }
        Ok(keys)
    }

    fn read_data_dir(&mut self, data_dir: &Path) -> Result<(), String> {
        let keys = self;
        if let Some(own) = fingerprint_in(data_dir) {
            keys.fingerprints.insert(own);
        }
        let trust_file = data_dir.join(TRUST_FILE);
        match std::fs::read_to_string(&trust_file) {
            Ok(text) => {
                for (number, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let fingerprint = parse_fingerprint(line).ok_or_else(|| {
                        format!(
                            "{} line {}: `{}` is not a key fingerprint; write one sha256: and 64 hexadecimal digits per line, as `sekisho-broker status` shows it",
                            trust_file.display(),
                            number + 1,
                            line.escape_debug()
                        )
                    })?;
                    keys.fingerprints.insert(fingerprint);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", trust_file.display())),
        }
        Ok(())
    }

    /// Trusts `fingerprint` (tests, and a broker's own key).
    pub fn with(mut self, fingerprint: &str) -> TrustedKeys {
        self.fingerprints.insert(fingerprint.to_owned());
        self
    }

    /// Whether the key of `fingerprint` is trusted.
    pub fn trusts(&self, fingerprint: &str) -> bool {
        self.fingerprints.contains(fingerprint)
    }

    /// Whether no key is trusted at all.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }
}

fn parse_fingerprint(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let digits = text.strip_prefix("sha256:")?;
    (digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

// ---------------------------------------------------------------------------------------
// Making checkpoints.

/// What a broker needs to sign checkpoints of the chain.
pub struct Checkpointer {
    store: Store,
    key: Arc<CheckpointKey>,
    broker_id: String,
    clock: Arc<dyn Clock>,
    file: PathBuf,
    /// The last event vouched for: this broker's newest checkpoint (or the start of the log).
    anchor: tokio::sync::Mutex<(i64, String)>,
}

impl Checkpointer {
    /// A checkpointer for `store`, writing to `DATA_DIR/audit-checkpoints.jsonl`; it goes on
    /// from its own newest checkpoint in that file.
    pub fn new(
        store: Store,
        key: Arc<CheckpointKey>,
        broker_id: String,
        clock: Arc<dyn Clock>,
        data_dir: &Path,
    ) -> Checkpointer {
        let file = data_dir.join(CHECKPOINT_FILE);
        let anchor = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| {
                parse_all(&text)
                    .into_iter()
                    .rev()
                    .find(|c| c.key == key.public_key() && c.signature_verifies())
            })
            .map_or((0, GENESIS_HASH.to_owned()), |c| (c.seq, c.head));
        Checkpointer {
            store,
            key,
            broker_id,
            clock,
            file,
            anchor: tokio::sync::Mutex::new(anchor),
        }
    }

    /// The fingerprint of the key it signs with.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    /// Signs a checkpoint of the chain's head, if it moved since the last one and the events
    /// since then chain from it; writes it to the checkpoint file and the database. `Ok(None)`
    /// when nothing changed; `Err` with what is wrong otherwise (logged by the caller).
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, String> {
        let mut anchor = self.anchor.lock().await;
        let (head_seq, head_hash) = self
            .store
            .audit_head()
            .await
            .map_err(|e| format!("cannot read the audit log's head: {e}"))?;
        if head_seq == anchor.0 {
            return Ok(None);
        }
        if head_seq < anchor.0 {
            return Err(format!(
                "the audit log ends at event {head_seq}, before this broker's last checkpoint at event {}: it was cut off or rolled back; no checkpoint is signed (run `sekisho-broker audit verify`)",
                anchor.0
            ));
        }
        let (mut seq, mut hash) = anchor.clone();
        let mut last: Option<StoredEvent> = None;
        while seq < head_seq {
            let events = self
                .store
                .audit_events(&AuditFilter {
                    after_seq: seq,
                    limit: BATCH,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot read the audit log: {e}"))?;
            if events.is_empty() {
                break;
            }
            for stored in events.into_iter().take_while(|e| e.seq <= head_seq) {
                if stored.seq != seq + 1
                    || stored.prev_hash != hash
                    || chain_hash(stored.seq, &stored.prev_hash, &stored.event) != stored.hash
                {
                    return Err(format!(
                        "event {} does not chain from this broker's last checkpoint at event {}: the log was altered; no checkpoint is signed (run `sekisho-broker audit verify`)",
                        seq + 1,
                        anchor.0
                    ));
                }
                seq = stored.seq;
                hash = stored.hash.clone();
                last = Some(stored);
            }
        }
        let Some(last) = last.filter(|_| seq == head_seq && hash == head_hash) else {
            return Err(format!(
                "the audit log's head record (event {head_seq}) is not the chain's last event: the log was altered; no checkpoint is signed (run `sekisho-broker audit verify`)"
            ));
        };
        let checkpoint = self
            .key
            .sign(seq, &hash, &last.event, self.clock.now(), &self.broker_id);
        let (file, line) = (self.file.clone(), checkpoint.to_line());
        let written = tokio::task::spawn_blocking(move || append_line(&file, &line))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let recorded = self.store.record_checkpoint(&checkpoint).await;
        *anchor = (seq, hash);
        match (written, recorded) {
            (Ok(()), Ok(())) => Ok(Some(checkpoint)),
            (Err(e), _) => Err(format!(
                "cannot append to the checkpoint file {}: {e}",
                self.file.display()
            )),
            (_, Err(e)) => Err(format!("cannot store the checkpoint in the database: {e}")),
        }
    }
}

/// Appends `line` to `path` (created 0600), synced.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

/// Signs a checkpoint every `interval` while events are appended, until `shutdown`. (The one
/// at shutdown is made by the broker after its last event, see `Broker::run`.)
pub async fn run(checkpointer: Arc<Checkpointer>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match checkpointer.checkpoint().await {
            Ok(_) => failing = false,
            Err(why) if !failing => {
                failing = true;
                tracing::error!(error = %why, "no audit checkpoint was signed");
            }
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checking the chain against checkpoints.

/// Where a checkpoint was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The database's `audit_checkpoints` table.
    Database,
    /// A file: the checkpoint file, a stream capture, an export.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Database => f.write_str("in the database"),
            Source::File(path) => write!(f, "in {}", path.display()),
        }
    }
}

/// A checkpoint and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where.
    pub source: Source,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// What a checkpoint says is wrong with the chain. `Display` is one sentence that says where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A checkpoint whose signature does not verify with the key it names.
    BadSignature(Found),
    /// The chain's event at a checkpoint's number has another hash: events from `from` on
    /// were changed and re-chained; `now_at` is where the event the checkpoint committed to
    /// is now, if it is still there.
    Rewritten {
        /// The checkpoint.
        found: Found,
        /// The first event that may have changed (after the last checkpoint that matches).
        from: i64,
        /// The number the committed event has now, if it is still in the log.
        now_at: Option<i64>,
    },
    /// The database's own checkpoint is beyond the chain's end.
    CutOff {
        /// The checkpoint.
        found: Found,
        /// Where the chain ends.
        count: i64,
    },
    /// A checkpoint kept outside the database is beyond the chain's end.
    RolledBack {
        /// The checkpoint.
        found: Found,
        /// Where the chain ends.
        count: i64,
    },
}

fn signed_by(found: &Found) -> String {
    format!(
        "broker {} signed at {} ({})",
        found.checkpoint.broker,
        timestamp(found.checkpoint.time()),
        found.source
    )
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::BadSignature(found) => write!(
                f,
                "The checkpoint at event {} {} (broker {}, key {}) does not verify against its signature: it was forged or altered.",
                found.checkpoint.seq,
                found.source,
                found.checkpoint.broker,
                found.checkpoint.fingerprint()
            ),
            Finding::Rewritten {
                found,
                from,
                now_at,
            } => {
                let seq = found.checkpoint.seq;
                match now_at {
                    Some(now) if *now < seq => write!(
                        f,
                        "Events were deleted between event {from} and event {seq} and the rest renumbered: the event {} as number {seq} is now number {now}.",
                        signed_by(found)
                    ),
                    Some(_) => write!(
                        f,
                        "The audit log was rewritten between event {from} and event {}: event {seq} itself is unchanged, but its hash is not the one {}, so an event before it was changed and the chain re-hashed.",
                        seq - 1,
                        signed_by(found)
                    ),
                    None => write!(
                        f,
                        "The audit log was rewritten between event {from} and event {seq}: event {seq}'s hash is not the one {}.",
                        signed_by(found)
                    ),
                }
            }
            Finding::CutOff { found, count } => write!(
                f,
                "The audit log was cut off after event {count}: {} a checkpoint at event {}, so events {} to {} are missing.",
                signed_by(found),
                found.checkpoint.seq,
                count + 1,
                found.checkpoint.seq
            ),
            Finding::RolledBack { found, count } => write!(
                f,
                "The log ends at event {count}, but {} a checkpoint at event {}: this is an older copy of the log (a database put back from an old copy), or its end was cut off together with its checkpoints.",
                signed_by(found),
                found.checkpoint.seq
            ),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Everything wrong, one sentence each.
    pub findings: Vec<Finding>,
    /// The newest trusted checkpoint the chain matches.
    pub newest: Option<Found>,
    /// Trusted checkpoints checked (duplicates counted once).
    pub checked: usize,
    /// Checkpoints signed by keys nobody trusts, not used.
    pub untrusted: usize,
}

/// Checks `events` (a whole chain from event 1, already found intact by [`super::verify`])
/// against every checkpoint `found` whose key `trusted` holds. A checkpoint found in several
/// places counts once, where it was found first.
pub fn check(events: &[StoredEvent], found: Vec<Found>, trusted: &TrustedKeys) -> Report {
    let mut report = Report::default();
    let count = events.len() as i64;
    let mut seen = BTreeSet::new();
    let mut valid: Vec<Found> = Vec::new();
    for item in found {
        if !seen.insert(item.checkpoint.signature.clone()) {
            continue;
        }
        if !item.checkpoint.signature_verifies() {
            report.findings.push(Finding::BadSignature(item));
        } else if !trusted.trusts(&item.checkpoint.fingerprint()) {
            report.untrusted += 1;
        } else {
            valid.push(item);
        }
    }
    valid.sort_by_key(|item| item.checkpoint.seq);
    report.checked = valid.len();
    let hash_at = |seq: i64| -> Option<&str> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        events.get(index).map(|e| e.hash.as_str())
    };
    let mut last_match = 0;
    let mut mismatched: Vec<&Found> = Vec::new();
    for item in valid.iter().filter(|item| item.checkpoint.seq <= count) {
        let seq = item.checkpoint.seq;
        if hash_at(seq) != Some(item.checkpoint.head.as_str()) {
            mismatched.push(item);
        } else if mismatched.is_empty() {
            last_match = seq;
            report.newest = Some(item.clone());
        }
    }
    let beyond_end: Vec<&Found> = valid
        .iter()
        .filter(|item| item.checkpoint.seq > count)
        .collect();
    if !mismatched.is_empty() || !beyond_end.is_empty() {
        // Where each committed event is now: one found at a lower number tells of a deletion
        // and renumbering (the first mismatched checkpoint may commit to a deleted event, and a
        // deletion near the end leaves only checkpoints beyond the shortened chain).
        let mut positions = std::collections::HashMap::new();
        for stored in events {
            positions
                .entry(event_digest(&stored.event))
                .or_insert(stored.seq);
        }
        let now_at = |item: &Found| positions.get(&item.checkpoint.event).copied();
        let renumbered = mismatched.iter().chain(beyond_end.iter()).find_map(|item| {
            now_at(item)
                // Events up to the last matching checkpoint are proven in place: an event
                // alike found there is another one (same time, same words).
                .filter(|now| *now < item.checkpoint.seq && *now > last_match)
                .map(|now| (*item, now))
        });
        if let Some((found, now)) = renumbered {
            report.findings.push(Finding::Rewritten {
                found: found.clone(),
                from: last_match + 1,
                now_at: Some(now),
            });
            return report;
        }
        if let Some(first) = mismatched.first() {
            report.findings.push(Finding::Rewritten {
                found: (*first).clone(),
                from: last_match + 1,
                now_at: now_at(first),
            });
            // A rewrite explains a chain that is now shorter than later checkpoints.
            return report;
        }
    }
    let beyond = |database: bool| {
        valid
            .iter()
            .filter(|item| item.checkpoint.seq > count)
            .filter(|item| (item.source == Source::Database) == database)
            .max_by_key(|item| item.checkpoint.seq)
            .cloned()
    };
    if let Some(found) = beyond(true) {
        report.findings.push(Finding::CutOff { found, count });
    } else if let Some(found) = beyond(false) {
        report.findings.push(Finding::RolledBack { found, count });
    }
    report
}

/// Checkpoints in the file at `path`, each tagged with it.
pub fn read_file(path: &Path) -> std::io::Result<Vec<Found>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_all(&text)
        .into_iter()
        .map(|checkpoint| Found {
            source: Source::File(path.to_owned()),
            checkpoint,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, EventKind};
    use std::time::UNIX_EPOCH;

    fn chain(count: usize, actor: &str) -> Vec<StoredEvent> {
        rechain(
            (1..=count)
                .map(|n| {
                    AuditEvent::new(
                        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n as u64),
                        Actor::Staff(actor.into()),
                        EventKind::RequestApproved,
                    )
                    .request(format!("r-{n}"))
                })
                .collect(),
        )
    }

    fn rechain(events: Vec<AuditEvent>) -> Vec<StoredEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                let seq = i as i64 + 1;
                let hash = chain_hash(seq, &prev, &event);
                let stored = StoredEvent {
                    seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    event,
                };
                prev = hash;
                stored
            })
            .collect()
    }

    fn new_key() -> CheckpointKey {
        let dir = tempfile::tempdir().unwrap();
        CheckpointKey::load_or_create(dir.path()).unwrap()
    }

    fn sign(key: &CheckpointKey, events: &[StoredEvent], seq: i64) -> Found {
        let stored = &events[seq as usize - 1];
        Found {
            source: Source::File("audit-checkpoints.jsonl".into()),
            checkpoint: key.sign(seq, &stored.hash, &stored.event, UNIX_EPOCH, "b1"),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_through_a_line_and_a_syslog_message_and_verifies() {
        let key = new_key();
        let events = chain(3, "suzuki");
        let checkpoint = sign(&key, &events, 3).checkpoint;
        assert!(checkpoint.signature_verifies());
        assert_eq!(checkpoint.fingerprint(), key.fingerprint());
        let line = checkpoint.to_line();
        assert_eq!(Checkpoint::from_line(&line), Some(checkpoint.clone()));
        let syslog =
            format!("<85>1 2026-11-23T01:00:00.007Z host sekisho b1 audit-checkpoint - {line}");
        assert_eq!(
            parse_all(&format!("junk\n{syslog}\n")),
            vec![checkpoint.clone()]
        );
        let mut forged = checkpoint.clone();
        forged.seq = 2;
        assert!(!forged.signature_verifies());
        let mut other = checkpoint;
        other.head = events[1].hash.clone();
        assert!(!other.signature_verifies());
    }

    #[test]
    fn a_rewrite_a_renumbering_a_cut_and_a_rollback_are_each_found_where_they_are() {
        let key = new_key();
        let trusted = TrustedKeys::default().with(&key.fingerprint());
        let events = chain(6, "suzuki");
        let found = vec![sign(&key, &events, 3), sign(&key, &events, 6)];
        let intact = check(&events, found.clone(), &trusted);
        assert!(intact.findings.is_empty(), "{:?}", intact.findings);
        assert_eq!(intact.newest.as_ref().map(|f| f.checkpoint.seq), Some(6));

        // Event 5 edited and the chain re-hashed.
        let mut edited: Vec<AuditEvent> = events.iter().map(|e| e.event.clone()).collect();
        edited[4].actor = Actor::Staff("mallory".into());
        let report = check(&rechain(edited), found.clone(), &trusted);
        assert_eq!(report.findings.len(), 1);
        let sentence = report.findings[0].to_string();
        assert!(
            sentence.starts_with("The audit log was rewritten between event 4 and event 5"),
            "{sentence}"
        );

        // Event 2 deleted and the rest renumbered.
        let mut deleted: Vec<AuditEvent> = events.iter().map(|e| e.event.clone()).collect();
        deleted.remove(1);
        let report = check(&rechain(deleted), found.clone(), &trusted);
        assert!(
            matches!(
                report.findings[..],
                [Finding::Rewritten {
                    from: 1,
                    now_at: Some(2),
                    ..
                }]
            ),
            "{:?}",
            report.findings
        );
        assert!(
            report.findings[0]
                .to_string()
                .starts_with("Events were deleted between event 1 and event 3")
        );

        // The tail cut: the database's own checkpoint says so; one kept elsewhere says rollback.
        let cut = events[..4].to_vec();
        let mut in_database = found[1].clone();
        in_database.source = Source::Database;
        let report = check(&cut, vec![found[0].clone(), in_database], &trusted);
        assert!(matches!(
            report.findings[..],
            [Finding::CutOff { count: 4, .. }]
        ));
        let report = check(&cut, found.clone(), &trusted);
        assert!(matches!(
            report.findings[..],
            [Finding::RolledBack { count: 4, .. }]
        ));
        assert!(report.findings[0].to_string().contains("ends at event 4"));

        // A forged checkpoint is itself reported; one from an untrusted key is not used.
        let mut forged = found[1].clone();
        forged.checkpoint.head = events[4].hash.clone();
        let report = check(&events, vec![forged], &trusted);
        assert!(matches!(report.findings[..], [Finding::BadSignature(_)]));
        let stranger = new_key();
        let report = check(&cut, vec![sign(&stranger, &events, 6)], &trusted);
        assert!(report.findings.is_empty());
        assert_eq!(report.untrusted, 1);
    }

    #[test]
    fn trusted_fingerprints_are_read_from_the_trust_file_and_refused_when_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let own = CheckpointKey::load_or_create(dir.path()).unwrap();
        let other = format!("sha256:{}", "ab".repeat(32));
        std::fs::write(
            dir.path().join(TRUST_FILE),
            format!("# broker b\n{other}\n\n"),
        )
        .unwrap();
        let keys = TrustedKeys::of_data_dir(dir.path(), &[]).unwrap();
        assert!(keys.trusts(&own.fingerprint()));
        assert!(keys.trusts(&other));
        std::fs::write(dir.path().join(TRUST_FILE), "sha256:12\n").unwrap();
        let error = TrustedKeys::of_data_dir(dir.path(), &[]).unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        assert!(TrustedKeys::of_data_dir(dir.path(), &["x".into()]).is_err());
        // The key file is the owner's only, and loads again as the same key.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = CheckpointKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.public_key(), own.public_key());
    }
}
