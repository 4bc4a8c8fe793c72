//! The append-only, hash-chained audit log of who did what.
//!
//! Money, operator and reader actions must be traceable to an operator after the fact, and
//! an edit to the log must be detectable. Each [`AuditRecord`] lives in the sled tree
//! `"audit"` under its sequence number (1-based, big-endian `u64`, so key order is append
//! order) and carries the hash of the record before it:
//!
//! `hash = hex(SHA-256(prev_hash ‖ canonical_json(record without "hash")))`
//!
//! where `prev_hash` is the 64 ASCII hex digits of the previous record's hash
//! ([`GENESIS_HASH`] for seq 1) and the canonical JSON has object keys sorted by their UTF-8
//! bytes, no whitespace, and serde_json's string and number formatting. Anyone holding an
//! export can re-check the chain with [`AuditLog::verify_chain`]'s rules.
//!
//! Appends are serialised by a mutex so the chain stays linear, and each is durable
//! ([`Store::durable_flush`]) before [`AuditLog::append`] returns. The chain detects edits,
//! reordering and deletions inside the log; it cannot detect the newest records being cut off
//! together (export the last hash elsewhere for that).
//!
//! Size policy ([`AuditLog::open_with`]): when the live tree holds twice
//! `segment_records` records, the oldest `segment_records` are *sealed*: written to a segment
//! file `audit-<first seq>-<last seq>.jsonl` (one record per line, as stored) in
//! [`SEGMENTS_DIR`] beside the database, made durable, then described by a [`SegmentSeal`] in
//! the tree `"audit_segments"` (first and last seq, the hash the first links to, the last hash,
//! the file's SHA-256), and only then removed from the live tree. The chain runs on through
//! the segments unchanged, so [`AuditLog::verify_chain`] checks every segment file against its
//! seal and its records, then the live records, as one chain: a missing or edited segment fails
//! verification. [`AuditLog::list`] reads sealed records from their files.
//!
//! Repeated failed logins, and state-changing calls refused for want of a session, are not one
//! record each: [`RefusalDigest`] turns them into one record per source, action and interval
//! (the first at once, then a count).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cardd_api::{ErrorCode, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// The sled tree holding the log.
pub const AUDIT_TREE: &str = "audit";

/// Most records [`AuditLog::list`] returns per call; larger `limit`s are capped to it.
pub const AUDIT_PAGE_MAX: usize = 500;

/// Largest stored record, in bytes of JSON. An entry whose `detail` is larger is refused, so
/// a careless caller cannot bloat the log.
pub const AUDIT_RECORD_BYTES_MAX: usize = 64 * 1024;

/// Deepest nesting of arrays and objects accepted in an entry's `detail`.
pub const AUDIT_DETAIL_DEPTH_MAX: usize = 32;

/// The `prev_hash` of the first record: 64 zero digits.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Bytes in a record key (a big-endian `u64` seq).
const SEQ_KEY_BYTES: usize = 8;

/// The sled tree of segment seals (key: the segment's first seq, big-endian).
pub const AUDIT_SEGMENTS_TREE: &str = "audit_segments";

/// The directory, beside the database files, holding sealed segment files.
pub const SEGMENTS_DIR: &str = "audit-segments";

/// The description of a sealed segment, kept in the database after its records left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSeal {
    /// The seq of the segment's first record.
    pub first_seq: u64,
    /// The seq of its last record.
    pub last_seq: u64,
    /// The `prev_hash` of its first record (the hash of the record before it).
    pub first_prev_hash: String,
    /// The `hash` of its last record (what the next record links to).
    pub last_hash: String,
    /// The file's name in [`SEGMENTS_DIR`].
    pub file: String,
    /// Hex SHA-256 of the file's bytes.
    pub file_sha256: String,
    /// When it was sealed, RFC 3339 UTC.
    pub sealed_at: String,
}

/// What happened, as the caller describes it; [`AuditLog::append`] adds seq, time and hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// The operator's user name, if the action was done in a session.
    pub operator: Option<String>,
    /// The operator's role at the time.
    pub role: Option<Role>,
    /// What was done, e.g. the JSON-RPC method (`auth.login`, `card.load`).
    pub action: String,
    /// What it was done to: a user name, a reader id, a card number.
    pub target: Option<String>,
    /// Parameters and results worth keeping (never passwords or keys).
    pub detail: Value,
    /// How it ended, e.g. `ok` or an error code name.
    pub outcome: String,
}

/// One record of the log: an [`AuditEntry`] plus its place in the chain.
pub use cardd_api::audit::AuditRecord;

/// A failure of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A stored record is unreadable or does not fit the chain: the log was edited or damaged.
    #[error(
        "audit record {seq} failed verification: {reason}; stop money operations and have an \
         administrator compare the data directory with its backup"
    )]
    Corrupt {
        /// The first bad record's seq.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The entry cannot be recorded (too large, too deeply nested).
    #[error("audit entry refused: {0}; record less detail")]
    InvalidEntry(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for AuditError {
    fn from(error: sled::Error) -> AuditError {
        AuditError::Store(StoreError::from(error))
    }
}

impl AuditError {
    /// The API error code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuditError::Corrupt { .. } => ErrorCode::FailedClosed,
            AuditError::InvalidEntry(_) | AuditError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// The end of the chain: what the next append links to, or why that is unknown.
#[derive(Debug)]
enum ChainHead {
    /// The last record's seq and hash (0 and [`GENESIS_HASH`] when the log is empty).
    Intact { seq: u64, hash: String },
    /// The last record is unreadable or does not match its hash; appends are refused.
    Broken { seq: u64, reason: String },
}

impl ChainHead {
    /// The seq and `prev_hash` of the next record.
    fn next(&self) -> Result<(u64, String), AuditError> {
        match self {
            ChainHead::Broken { seq, reason } => Err(AuditError::Corrupt {
                seq: *seq,
                reason: reason.clone(),
            }),
            ChainHead::Intact { seq, hash } => match seq.checked_add(1) {
                Some(next) => Ok((next, hash.clone())),
                None => Err(AuditError::Corrupt {
                    seq: *seq,
                    reason: "the sequence number is exhausted".into(),
                }),
            },
        }
    }
}

/// Reads the chain head from the last record, checking that record's hash (or from the last
/// seal when every record is sealed).
fn read_head(tree: &sled::Tree, segments: &sled::Tree) -> Result<ChainHead, AuditError> {
    let Some((key, value)) = tree.last()? else {
        return Ok(match last_seal(segments)? {
            Some(seal) => ChainHead::Intact {
                seq: seal.last_seq,
                hash: seal.last_hash,
            },
            None => ChainHead::Intact {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
            },
        });
    };
    let record = decode(&key, &value)?;
    check_hash(&record)?;
    Ok(ChainHead::Intact {
        seq: record.seq,
        hash: record.hash,
    })
}

/// The audit log. Open it once per [`Store`] and share it behind an `Arc`: the chain head
/// lives in memory, and a second instance's appends would be refused as conflicts.
pub struct AuditLog {
    store: Store,
    tree: sled::Tree,
    segments: sled::Tree,
    segments_dir: PathBuf,
    /// Records per sealed segment; `u64::MAX`: never rotate.
    segment_records: u64,
    head: Mutex<ChainHead>,
    /// Held while sealing a segment and while verifying or listing across segments, so neither
    /// sees records half-moved.
    rotation: Mutex<()>,
}

impl std::fmt::Debug for AuditLog {
    /// Shows the chain head only; sled's `Debug` would dump the whole tree.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("AuditLog")
            .field("head", &*head)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log in `store` and checks its last record.
    ///
    /// A damaged last record does not stop the log from opening, so the daemon can start and
    /// fail closed: [`AuditLog::append`] then refuses with [`AuditError::Corrupt`] and
    /// [`AuditLog::verify_chain`] names the first bad record.
    pub fn open(store: &Store) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(store, u64::MAX)
    }

    /// Opens the log with a size policy: segments of `segment_records` records are sealed out
    /// of the database once it holds twice that many (see the module documentation). Finishes
    /// a sealing that a crash interrupted.
    pub fn open_with(store: &Store, segment_records: u64) -> Result<AuditLog, AuditError> {
        let tree = store.tree(AUDIT_TREE)?;
        let segments = store.tree(AUDIT_SEGMENTS_TREE)?;
        if let Some(seal) = last_seal(&segments)? {
            // A crash between writing the seal and removing its records leaves them behind.
            let leftover: Vec<_> = tree
                .range(..=seal.last_seq.to_be_bytes())
                .keys()
                .collect::<Result<_, _>>()?;
            if !leftover.is_empty() {
                for key in leftover {
                    tree.remove(key)?;
                }
                store.durable_flush()?;
            }
        }
        let head = match read_head(&tree, &segments) {
            Ok(head) => head,
            Err(AuditError::Corrupt { seq, reason }) => {
                tracing::error!(seq, %reason, "the audit log's last record is damaged; appends are refused");
                ChainHead::Broken { seq, reason }
            }
            Err(e) => return Err(e),
        };
        Ok(AuditLog {
            store: store.clone(),
            tree,
            segments,
            segments_dir: store.dir().join(SEGMENTS_DIR),
            segment_records: segment_records.max(1),
            head: Mutex::new(head),
            rotation: Mutex::new(()),
        })
    }

    /// Appends `entry`, durably, and returns the stored record.
    ///
    /// If the durable flush fails the record is in the log but may not survive a power
    /// failure; the error says so and the chain stays consistent either way.
    pub fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        check_depth(&entry.detail, 0)?;
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let (seq, prev_hash) = head.next()?;
        let record = seal(seq, utc_now_rfc3339(), entry, prev_hash)?;
        let bytes =
            serde_json::to_vec(&record).map_err(|e| AuditError::InvalidEntry(e.to_string()))?;
        if bytes.len() > AUDIT_RECORD_BYTES_MAX {
            return Err(AuditError::InvalidEntry(format!(
                "the record is {} bytes, more than {AUDIT_RECORD_BYTES_MAX}",
                bytes.len()
            )));
        }
        let swapped = self
            .tree
            .compare_and_swap(seq.to_be_bytes(), None::<&[u8]>, Some(bytes))?;
        if swapped.is_err() {
            return Err(AuditError::Corrupt {
                seq,
                reason: "a record with this seq already exists".into(),
            });
        }
        *head = ChainHead::Intact {
            seq,
            hash: record.hash.clone(),
        };
        // The chain's next link is settled; concurrent appends share flush rounds (group commit)
        // instead of queueing behind this one's.
        drop(head);
        self.store.durable_flush()?;
        self.rotate_if_due(seq);
        Ok(record)
    }

    /// Seals the oldest segment when the live tree holds twice `segment_records` records. A
    /// failure is logged and leaves the log as it was (the records stay live).
    fn rotate_if_due(&self, last_seq: u64) {
        if self.segment_records == u64::MAX {
            return;
        }
        // Another append is sealing, or a verification is reading: the next append checks again.
        let Ok(_rotation) = self.rotation.try_lock() else {
            return;
        };
        let Ok(Some((first_key, _))) = self.tree.first() else {
            return;
        };
        let Ok(first) = <[u8; SEQ_KEY_BYTES]>::try_from(first_key.as_ref()).map(u64::from_be_bytes)
        else {
            return;
        };
        if last_seq.saturating_sub(first).saturating_add(1) < self.segment_records.saturating_mul(2)
        {
            return;
        }
        if let Err(e) = self.seal_locked(first) {
            tracing::error!(error = %e, first, "could not seal an audit segment; the records stay in the database");
        }
    }

    /// Seals the segment starting at `first`, taking the rotation lock.
    #[cfg(test)]
    fn seal_segment(&self, first: u64) -> Result<SegmentSeal, AuditError> {
        let _rotation = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        self.seal_locked(first)
    }

    /// Seals the `segment_records` records from `first` into a segment file; the caller holds
    /// the rotation lock.
    fn seal_locked(&self, first: u64) -> Result<SegmentSeal, AuditError> {
        let last = first.saturating_add(self.segment_records - 1);
        let prev_hash = match last_seal(&self.segments)? {
            Some(seal) => seal.last_hash,
            None => GENESIS_HASH.to_owned(),
        };
        let mut text = Vec::new();
        let mut expected_prev = prev_hash.clone();
        let mut expected_seq = first;
        for item in self.tree.range(first.to_be_bytes()..=last.to_be_bytes()) {
            let (key, value) = item?;
            let record = decode(&key, &value)?;
            if record.seq != expected_seq || record.prev_hash != expected_prev {
                return Err(AuditError::Corrupt {
                    seq: expected_seq,
                    reason: "the records to seal do not form a chain".into(),
                });
            }
            check_hash(&record)?;
            expected_prev = record.hash;
            expected_seq += 1;
            text.extend_from_slice(&value);
            text.push(b'\n');
        }
        if expected_seq != last + 1 {
            return Err(AuditError::Corrupt {
                seq: expected_seq,
                reason: "a record to seal is missing".into(),
            });
        }
        let file = format!("audit-{first:020}-{last:020}.jsonl");
        write_durably(&self.segments_dir, &file, &text)
            .map_err(|e| AuditError::Store(StoreError::from(sled::Error::Io(e))))?;
        let seal = SegmentSeal {
            first_seq: first,
            last_seq: last,
            first_prev_hash: prev_hash,
            last_hash: expected_prev,
            file,
            file_sha256: hex::encode(Sha256::digest(&text)),
            sealed_at: utc_now_rfc3339(),
        };
        let bytes =
            serde_json::to_vec(&seal).map_err(|e| AuditError::InvalidEntry(e.to_string()))?;
        self.segments.insert(first.to_be_bytes(), bytes)?;
        self.store.durable_flush()?;
        for seq in first..=last {
            self.tree.remove(seq.to_be_bytes())?;
        }
        self.store.durable_flush()?;
        tracing::info!(first, last, file = %seal.file, "audit segment sealed");
        Ok(seal)
    }

    /// The seals of the sealed segments, oldest first.
    pub fn seals(&self) -> Result<Vec<SegmentSeal>, AuditError> {
        self.segments
            .iter()
            .values()
            .map(|value| decode_seal(&value?))
            .collect()
    }

    /// Reads and checks a sealed segment's records: the file's hash, then the chain inside it.
    fn read_segment(&self, seal: &SegmentSeal) -> Result<Vec<AuditRecord>, AuditError> {
        let corrupt = |reason: String| AuditError::Corrupt {
            seq: seal.first_seq,
            reason,
        };
        let path = self.segments_dir.join(&seal.file);
        let bytes = std::fs::read(&path).map_err(|e| {
            corrupt(format!(
                "the sealed segment file {} cannot be read ({e}); restore it from the backup",
                path.display()
            ))
        })?;
        if hex::encode(Sha256::digest(&bytes)) != seal.file_sha256 {
            return Err(corrupt(format!(
                "the sealed segment file {} does not match its seal",
                path.display()
            )));
        }
        let mut records = Vec::new();
        let mut prev_hash = seal.first_prev_hash.clone();
        let mut seq = seal.first_seq;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let record = decode(&seq.to_be_bytes(), line)?;
            if record.prev_hash != prev_hash {
                return Err(AuditError::Corrupt {
                    seq,
                    reason: "prev_hash does not match the previous record's hash".into(),
                });
            }
            check_hash(&record)?;
            prev_hash = record.hash.clone();
            seq += 1;
            records.push(record);
        }
        if seq != seal.last_seq + 1 || prev_hash != seal.last_hash {
            return Err(corrupt(format!(
                "the sealed segment file {} does not end where its seal says",
                path.display()
            )));
        }
        Ok(records)
    }

    /// Returns up to `limit` (at most [`AUDIT_PAGE_MAX`]) records with `seq > after_seq`,
    /// oldest first; pass the last seq seen as `after_seq` to get the next page.
    pub fn list(
        &self,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let Some(first) = after_seq.unwrap_or(0).checked_add(1) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(AUDIT_PAGE_MAX);
        let _rotation = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let mut records = Vec::new();
        for seal in self.seals()? {
            if records.len() >= limit {
                return Ok(records);
            }
            if seal.last_seq < first {
                continue;
            }
            let wanted = limit - records.len();
            records.extend(
                self.read_segment(&seal)?
                    .into_iter()
                    .filter(|r| r.seq >= first)
                    .take(wanted),
            );
        }
        let first = records.last().map_or(first, |r| r.seq + 1);
        for item in self
            .tree
            .range(first.to_be_bytes()..)
            .take(limit - records.len())
        {
            let (key, value) = item?;
            records.push(decode(&key, &value)?);
        }
        Ok(records)
    }

    /// Checks the whole chain from seq 1: contiguous seqs, each `prev_hash` equal to the
    /// previous `hash`, each `hash` recomputed. Returns the number of records.
    pub fn verify_chain(&self) -> Result<u64, AuditError> {
        let _rotation = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let mut count = 0u64;
        let mut prev_hash = GENESIS_HASH.to_owned();
        for seal in self.seals()? {
            let expected = count.saturating_add(1);
            if seal.first_seq != expected || seal.first_prev_hash != prev_hash {
                return Err(AuditError::Corrupt {
                    seq: expected,
                    reason: format!(
                        "the sealed segment {} does not continue the chain",
                        seal.file
                    ),
                });
            }
            self.read_segment(&seal)?;
            count = seal.last_seq;
            prev_hash = seal.last_hash;
        }
        for item in self.tree.range(count.saturating_add(1).to_be_bytes()..) {
            let (key, value) = item?;
            let expected = count.saturating_add(1);
            let record = decode(&key, &value).map_err(|e| match e {
                AuditError::Corrupt { reason, .. } => AuditError::Corrupt {
                    seq: expected,
                    reason,
                },
                other => other,
            })?;
            if record.seq != expected {
                let reason = format!("expected seq {expected} but found {}", record.seq);
                return Err(AuditError::Corrupt {
                    seq: expected,
                    reason,
                });
            }
            if record.prev_hash != prev_hash {
                let reason = "prev_hash does not match the previous record's hash".to_owned();
                return Err(AuditError::Corrupt {
                    seq: expected,
                    reason,
                });
            }
            check_hash(&record)?;
            prev_hash = record.hash;
            count = expected;
        }
        Ok(count)
    }
}

/// The newest seal, if any segment was sealed.
fn last_seal(segments: &sled::Tree) -> Result<Option<SegmentSeal>, AuditError> {
    segments
        .last()?
        .map(|(_, value)| decode_seal(&value))
        .transpose()
}

fn decode_seal(value: &[u8]) -> Result<SegmentSeal, AuditError> {
    serde_json::from_slice(value).map_err(|e| AuditError::Corrupt {
        seq: 0,
        reason: format!("a segment seal is not valid JSON: {e}"),
    })
}

/// Writes `dir/name` so that it survives a power failure: a temporary file, synced, renamed,
/// then the directory synced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!("{name}.partial"));
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Most (source, action) pairs whose refusals are being counted at once; a new one beyond that
/// writes every pending count out first.
pub const REFUSAL_KEYS_MAX: usize = 256;

/// Most distinct targets (user names, for logins) a summary names.
pub const REFUSAL_TARGETS_MAX: usize = 16;

/// Refusals of one source and action in the current interval.
#[derive(Debug)]
struct PendingRefusals {
    since: Instant,
    since_at: String,
    refusals: u64,
    targets: BTreeSet<String>,
    outcomes: BTreeMap<String, u64>,
}

/// Turns repeated refusals nobody is logged in for (failed logins, state-changing calls without
/// a session) into one audit record per source, action and interval: the first is recorded at
/// once; the following ones are counted, and the count is recorded when the interval has
/// passed (by the next refusal or by [`RefusalDigest::due`], which the daemon calls when
/// [`RefusalDigest::next_due`] comes) or at shutdown ([`RefusalDigest::drain`]). So a loop of
/// failed logins, even on a fresh connection each time, writes a bounded number of records.
///
/// Nothing ticks while nothing is pending: the daemon's timer is armed only for the end of a
/// pending interval, and [`RefusalDigest::armed`] wakes it when an interval starts.
#[derive(Debug)]
pub struct RefusalDigest {
    interval: Duration,
    pending: Mutex<HashMap<(String, String), PendingRefusals>>,
    armed: Arc<tokio::sync::Notify>,
}

impl RefusalDigest {
    /// A digest writing at most one summary per source and action per `interval`.
    pub fn new(interval: Duration) -> RefusalDigest {
        RefusalDigest {
            interval,
            pending: Mutex::new(HashMap::new()),
            armed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified when a source and action start an interval (so its end has to be waited
    /// for) and when the digest is dropped; a notification sent while nobody waits is kept
    /// for the next wait.
    pub fn armed(&self) -> Arc<tokio::sync::Notify> {
        self.armed.clone()
    }

    /// When the first pending interval ends (the next time [`RefusalDigest::due`] has
    /// something to do); `None` when nothing is pending, so there is nothing to wait for.
    pub fn next_due(&self) -> Option<Instant> {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.values().map(|p| p.since + self.interval).min()
    }

    /// Counts one refusal of `action` (on `target`, if known) from `source`, ending in
    /// `outcome` (an error code name); returns the records to write now.
    pub fn refused(
        &self,
        source: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        now: Instant,
    ) -> Vec<AuditEntry> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let target: Option<String> = target.map(|t| t.chars().take(64).collect());
        let key = (source.to_owned(), action.to_owned());
        let Some(entry) = pending.get_mut(&key) else {
            if pending.len() >= REFUSAL_KEYS_MAX {
                out.extend(
                    pending
                        .drain()
                        .filter_map(|(k, p)| summary(&k, p, self.interval)),
                );
            }
            pending.insert(key, fresh(now));
            // This interval's end is a deadline now.
            self.armed.notify_one();
            out.push(AuditEntry {
                operator: None,
                role: None,
                action: action.to_owned(),
                target,
                detail: serde_json::json!({ "source": source, "refusals": 1 }),
                outcome: outcome.to_owned(),
            });
            return out;
        };
        entry.refusals += 1;
        if let Some(target) = target {
            if entry.targets.len() < REFUSAL_TARGETS_MAX {
                entry.targets.insert(target);
            }
        }
        *entry.outcomes.entry(outcome.to_owned()).or_default() += 1;
        if now.saturating_duration_since(entry.since) >= self.interval {
            let ended = std::mem::replace(entry, fresh(now));
            out.extend(summary(&key, ended, self.interval));
        }
        out
    }

    /// Summaries of the intervals that have ended; forgets keys quiet for a whole interval.
    pub fn due(&self, now: Instant) -> Vec<AuditEntry> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let ended: Vec<(String, String)> = pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.since) >= self.interval)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|key| {
                let p = pending.remove(&key)?;
                summary(&key, p, self.interval)
            })
            .collect()
    }

    /// Every pending count, for shutdown.
    pub fn drain(&self) -> Vec<AuditEntry> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .drain()
            .filter_map(|(k, p)| summary(&k, p, self.interval))
            .collect()
    }
}

impl Drop for RefusalDigest {
    fn drop(&mut self) {
        // Whoever waits for the next interval learns that there is none.
        self.armed.notify_one();
    }
}

fn fresh(now: Instant) -> PendingRefusals {
    PendingRefusals {
        since: now,
        since_at: utc_now_rfc3339(),
        refusals: 0,
        targets: BTreeSet::new(),
        outcomes: BTreeMap::new(),
    }
}

/// The record counting `p`'s refusals of `(source, action)`; `None` when there were none.
fn summary(
    (source, action): &(String, String),
    p: PendingRefusals,
    interval: Duration,
) -> Option<AuditEntry> {
    (p.refusals > 0).then(|| AuditEntry {
        operator: None,
        role: None,
        action: action.clone(),
        target: None,
        detail: serde_json::json!({
            "source": source,
            "refusals": p.refusals,
            "since": p.since_at,
            "interval_s": interval.as_secs(),
            "targets": p.targets,
            "outcomes": p.outcomes,
        }),
        outcome: "refused".into(),
    })
}

/// Builds the record for `entry` at `seq` and computes its hash.
fn seal(
    seq: u64,
    at: String,
    entry: AuditEntry,
    prev_hash: String,
) -> Result<AuditRecord, AuditError> {
    let AuditEntry {
        operator,
        role,
        action,
        target,
        detail,
        outcome,
    } = entry;
    let mut record = AuditRecord {
        seq,
        at,
        operator,
        role,
        action,
        target,
        detail,
        outcome,
        prev_hash,
        hash: String::new(),
    };
    record.hash = compute_hash(&record)?;
    Ok(record)
}

/// Parses a stored record and checks that its key is its seq.
fn decode(key: &[u8], value: &[u8]) -> Result<AuditRecord, AuditError> {
    let key_seq = <[u8; SEQ_KEY_BYTES]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| AuditError::Corrupt {
            seq: 0,
            reason: format!("a key is {} bytes, not {SEQ_KEY_BYTES}", key.len()),
        })?;
    let record: AuditRecord = serde_json::from_slice(value).map_err(|e| AuditError::Corrupt {
        seq: key_seq,
        reason: format!("the record is not valid audit JSON: {e}"),
    })?;
    if record.seq != key_seq {
        let reason = format!("stored under seq {key_seq} but says seq {}", record.seq);
        return Err(AuditError::Corrupt {
            seq: key_seq,
            reason,
        });
    }
    Ok(record)
}

/// Fails unless `record.hash` is the hash of the rest of the record.
fn check_hash(record: &AuditRecord) -> Result<(), AuditError> {
    if compute_hash(record)? == record.hash {
        Ok(())
    } else {
        Err(AuditError::Corrupt {
            seq: record.seq,
            reason: "the hash does not match the record's content".into(),
        })
    }
}

/// Hex SHA-256 over `prev_hash` and the canonical JSON of the record without `hash`.
fn compute_hash(record: &AuditRecord) -> Result<String, AuditError> {
    let mut value =
        serde_json::to_value(record).map_err(|e| AuditError::InvalidEntry(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.remove("hash");
    }
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical)?;
    let mut hasher = Sha256::new();
    hasher.update(record.prev_hash.as_bytes());
    hasher.update(canonical.as_bytes());
    Ok(hex::encode(hasher.finalize()))
}

/// Fails if `value` nests deeper than [`AUDIT_DETAIL_DEPTH_MAX`].
fn check_depth(value: &Value, depth: usize) -> Result<(), AuditError> {
    if depth > AUDIT_DETAIL_DEPTH_MAX {
        return Err(AuditError::InvalidEntry(format!(
            "detail nests deeper than {AUDIT_DETAIL_DEPTH_MAX} levels"
        )));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| check_depth(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check_depth(v, depth + 1)),
        _ => Ok(()),
    }
}

/// Writes `value` as JSON with object keys sorted and no whitespace.
fn write_canonical(value: &Value, out: &mut String) -> Result<(), AuditError> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&to_json(key)?);
                out.push(':');
                write_canonical(item, out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&to_json(scalar)?),
    }
    Ok(())
}

/// Compact JSON text of a key or a scalar.
fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, AuditError> {
    serde_json::to_string(value).map_err(|e| AuditError::InvalidEntry(e.to_string()))
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2024-05-01T08:30:00.123Z`.
///
/// Formatted from the date's fields, so it cannot fail the way `time`'s formatter can for
/// years beyond 9999.
pub fn utc_now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(action: &str, detail: Value) -> AuditEntry {
        AuditEntry {
            operator: Some("teller01".into()),
            role: Some(Role::Teller),
            action: action.into(),
            target: Some("card 8888".into()),
            detail,
            outcome: "ok".into(),
        }
    }

    fn log_with(records: u64) -> (Store, AuditLog) {
        let store = Store::temporary().expect("store");
        let log = AuditLog::open(&store).expect("open");
        for i in 0..records {
            log.append(entry(
                "card.load",
                json!({"amount": format!("{i}.00"), "z": 1, "a": [1, 2]}),
            ))
            .expect("append");
        }
        (store, log)
    }

    #[test]
    fn append_then_list_pages_oldest_first() {
        let (_store, log) = log_with(5);
        let all = log.list(None, 100).expect("list");
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(all[0].prev_hash, GENESIS_HASH);
        assert_eq!(all[1].prev_hash, all[0].hash);
        assert_eq!(
            all[2].detail,
            json!({"amount": "2.00", "z": 1, "a": [1, 2]})
        );
        let page = log.list(Some(2), 2).expect("page");
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(log.list(Some(5), 10).expect("end").is_empty());
        assert!(log.list(Some(u64::MAX), 10).expect("overflow").is_empty());
        assert!(time::OffsetDateTime::parse(
            &all[0].at,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }

    #[test]
    fn list_caps_the_page_size() {
        let (_store, log) = log_with(0);
        let records: Vec<AuditRecord> = (0..AUDIT_PAGE_MAX + 3)
            .map(|_| {
                log.append(entry("reader.list", Value::Null))
                    .expect("append")
            })
            .collect();
        assert_eq!(records.len(), AUDIT_PAGE_MAX + 3);
        assert_eq!(
            log.list(None, usize::MAX).expect("list").len(),
            AUDIT_PAGE_MAX
        );
    }

    #[test]
    fn the_chain_verifies() {
        let (_store, log) = log_with(0);
        assert_eq!(log.verify_chain().expect("empty"), 0);
        let (_store, log) = log_with(7);
        assert_eq!(log.verify_chain().expect("verify"), 7);
    }

    #[test]
    fn tampering_is_detected_at_the_first_bad_seq() {
        let (_store, log) = log_with(5);
        let mut record = log.list(Some(2), 1).expect("list").remove(0);
        record.outcome = "error".into();
        let bytes = serde_json::to_vec(&record).expect("json");
        log.tree.insert(3u64.to_be_bytes(), bytes).expect("tamper");
        match log.verify_chain() {
            Err(AuditError::Corrupt { seq: 3, .. }) => {}
            other => panic!("expected corruption at seq 3, got {other:?}"),
        }
    }

    #[test]
    fn deletion_garbage_and_rehashing_are_detected() {
        let (_store, log) = log_with(4);
        log.tree.remove(2u64.to_be_bytes()).expect("delete");
        assert!(matches!(
            log.verify_chain(),
            Err(AuditError::Corrupt { seq: 2, .. })
        ));

        let (_store, log) = log_with(4);
        log.tree
            .insert(4u64.to_be_bytes(), b"not json".as_slice())
            .expect("garbage");
        assert!(matches!(
            log.verify_chain(),
            Err(AuditError::Corrupt { seq: 4, .. })
        ));

        // Re-sealing an edited record fixes its own hash but breaks the next link.
        let (_store, log) = log_with(4);
        let old = log.list(Some(1), 1).expect("list").remove(0);
        let mut forged = entry("card.load", json!({"amount": "9999.00"}));
        forged.outcome = old.outcome.clone();
        let resealed = seal(2, old.at.clone(), forged, old.prev_hash.clone()).expect("seal");
        log.tree
            .insert(
                2u64.to_be_bytes(),
                serde_json::to_vec(&resealed).expect("json"),
            )
            .expect("forge");
        assert!(matches!(
            log.verify_chain(),
            Err(AuditError::Corrupt { seq: 3, .. })
        ));
    }

    #[test]
    fn the_log_survives_reopen_and_continues_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last_hash = {
            let store = Store::open(dir.path()).expect("open");
            let log = AuditLog::open(&store).expect("log");
            log.append(entry("auth.login", json!({}))).expect("append");
            log.append(entry("card.load", json!({"amount": "50.00"})))
                .expect("append")
                .hash
        };
        let store = Store::open(dir.path()).expect("reopen");
        let log = AuditLog::open(&store).expect("log");
        let third = log.append(entry("auth.logout", json!({}))).expect("append");
        assert_eq!((third.seq, third.prev_hash), (3, last_hash));
        assert_eq!(log.verify_chain().expect("verify"), 3);
    }

    #[test]
    fn a_damaged_last_record_opens_but_refuses_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let log = AuditLog::open(&store).expect("log");
            log.append(entry("auth.login", json!({}))).expect("append");
            let mut last = log.append(entry("card.load", json!({}))).expect("append");
            last.outcome = "edited".into();
            let bytes = serde_json::to_vec(&last).expect("json");
            log.tree.insert(2u64.to_be_bytes(), bytes).expect("tamper");
            store.durable_flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let log = AuditLog::open(&store).expect("opens so the daemon can fail closed");
        let err = log.append(entry("auth.logout", json!({}))).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { seq: 2, .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::FailedClosed);
        assert!(matches!(
            log.verify_chain(),
            Err(AuditError::Corrupt { seq: 2, .. })
        ));
        assert_eq!(log.list(None, 10).expect("still readable").len(), 2);
    }

    #[test]
    fn oversized_or_too_deep_entries_are_refused_without_a_gap() {
        let (_store, log) = log_with(1);
        let big = entry("x", json!("a".repeat(AUDIT_RECORD_BYTES_MAX)));
        assert!(matches!(log.append(big), Err(AuditError::InvalidEntry(_))));
        let mut deep = json!(1);
        for _ in 0..=AUDIT_DETAIL_DEPTH_MAX {
            deep = json!([deep]);
        }
        assert!(matches!(
            log.append(entry("x", deep)),
            Err(AuditError::InvalidEntry(_))
        ));
        assert_eq!(log.append(entry("y", Value::Null)).expect("append").seq, 2);
        assert_eq!(log.verify_chain().expect("verify"), 2);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        write_canonical(
            &json!({"b": {"d": 1, "c": [true, null]}, "a": "é\""}),
            &mut out,
        )
        .expect("canonical");
        assert_eq!(out, r#"{"a":"é\"","b":{"c":[true,null],"d":1}}"#);
    }

    #[test]
    fn sealed_segments_keep_the_chain_verifiable_and_listable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let log = AuditLog::open_with(&store, 4).expect("log");
        for i in 0..19u64 {
            log.append(entry("card.load", json!({ "i": i })))
                .expect("append");
        }
        // 8 live records trigger sealing the oldest 4: after 19 appends, 3 segments are sealed.
        let seals = log.seals().expect("seals");
        assert_eq!(
            seals
                .iter()
                .map(|s| (s.first_seq, s.last_seq))
                .collect::<Vec<_>>(),
            [(1, 4), (5, 8), (9, 12)]
        );
        assert_eq!(seals[0].first_prev_hash, GENESIS_HASH);
        assert_eq!(seals[1].first_prev_hash, seals[0].last_hash);
        assert_eq!(
            log.tree.len(),
            7,
            "the database keeps only the live records"
        );
        assert_eq!(log.verify_chain().expect("verify"), 19);
        let all: Vec<u64> = log
            .list(None, 100)
            .expect("list")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(all, (1..=19).collect::<Vec<_>>());
        let page: Vec<u64> = log
            .list(Some(3), 3)
            .expect("list")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(page, [4, 5, 6]);
        drop(log);
        // Reopened, the chain goes on from the live head.
        let log = AuditLog::open_with(&store, 4).expect("reopen");
        let next = log.append(entry("auth.logout", json!({}))).expect("append");
        assert_eq!(next.seq, 20);
        assert_eq!(log.verify_chain().expect("verify"), 20);
        // An edited or missing segment file fails verification.
        let path = dir.path().join(SEGMENTS_DIR).join(&seals[1].file);
        let original = std::fs::read(&path).expect("read");
        let mut edited = original.clone();
        let at = edited.iter().position(|b| *b == b'1').expect("a digit");
        edited[at] = b'7';
        std::fs::write(&path, &edited).expect("write");
        assert!(matches!(
            log.verify_chain(),
            Err(AuditError::Corrupt { seq: 5, .. })
        ));
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            log.verify_chain(),
            Err(AuditError::Corrupt { seq: 5, .. })
        ));
        std::fs::write(&path, &original).expect("restore");
        assert_eq!(log.verify_chain().expect("verify"), 20);
    }

    #[test]
    fn an_interrupted_sealing_is_finished_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let log = AuditLog::open(&store).expect("log");
        for i in 0..6u64 {
            log.append(entry("card.load", json!({ "i": i })))
                .expect("append");
        }
        // Seal by hand as the policy would, then put the sealed records back as if the crash
        // came before their removal.
        let kept: Vec<_> = log.tree.iter().collect::<Result<_, _>>().expect("records");
        let sealing = AuditLog::open_with(&store, 3).expect("log");
        sealing.seal_segment(1).expect("seal");
        for (key, value) in &kept[..3] {
            log.tree.insert(key, value.clone()).expect("insert");
        }
        drop((log, sealing));
        let log = AuditLog::open_with(&store, 3).expect("reopen");
        assert_eq!(log.tree.len(), 3, "the leftovers were removed");
        assert_eq!(log.verify_chain().expect("verify"), 6);
        assert_eq!(log.append(entry("x", json!({}))).expect("append").seq, 7);
    }

    #[test]
    fn refusals_become_one_record_per_source_action_and_interval() {
        let digest = RefusalDigest::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let login = |source: &str, user: &str, outcome: &str, when: Instant| {
            digest.refused(source, "auth.login", Some(user), outcome, when)
        };
        let first = login("loopback program", "admin", "InvalidCredentials", t0);
        assert_eq!(first.len(), 1, "the first refusal is recorded at once");
        assert_eq!(first[0].target.as_deref(), Some("admin"));
        let mut written = 0;
        for i in 0..1000u64 {
            let user = format!("u{}", i % 40);
            written += login("loopback program", &user, "InvalidCredentials", at(i / 20)).len();
        }
        assert_eq!(written, 0, "the rest of the interval is only counted");
        assert_eq!(
            login(
                "loopback browser http://x",
                "teller",
                "TooManyAttempts",
                at(10)
            )
            .len(),
            1,
            "another source has its own record"
        );
        assert_eq!(
            digest
                .refused(
                    "loopback program",
                    "card.load",
                    None,
                    "Unauthenticated",
                    at(10)
                )
                .len(),
            1,
            "another action has its own record"
        );
        let ended = login("loopback program", "admin", "TooManyAttempts", at(60));
        assert_eq!(ended.len(), 1);
        let detail = &ended[0].detail;
        assert_eq!(detail["refusals"], 1001);
        assert_eq!(detail["outcomes"]["InvalidCredentials"], 1000);
        assert_eq!(detail["outcomes"]["TooManyAttempts"], 1);
        assert_eq!(
            detail["targets"].as_array().map(Vec::len),
            Some(REFUSAL_TARGETS_MAX)
        );
        assert_eq!(
            (ended[0].action.as_str(), ended[0].outcome.as_str()),
            ("auth.login", "refused")
        );
        // A pending count is written when its interval ends, and at shutdown.
        login(
            "loopback browser http://x",
            "teller",
            "InvalidCredentials",
            at(11),
        );
        digest.refused(
            "loopback program",
            "card.load",
            None,
            "Unauthenticated",
            at(12),
        );
        assert!(digest.due(at(30)).is_empty());
        assert_eq!(digest.due(at(75)).len(), 2);
        login("loopback program", "admin", "InvalidCredentials", at(61));
        assert_eq!(digest.drain().len(), 1);
        assert!(digest.drain().is_empty());
    }

    /// With nothing pending there is no deadline (an idle daemon arms no timer); the first
    /// refusal of an interval arms one for the interval's end, and once every interval has
    /// ended and been written, or been quiet for a whole interval, there is none again.
    #[tokio::test]
    async fn the_digest_has_a_deadline_only_while_refusals_are_pending() {
        let digest = RefusalDigest::new(Duration::from_secs(60));
        let armed = digest.armed();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            digest.next_due(),
            None,
            "nothing pending, nothing to wait for"
        );
        assert!(
            tokio::time::timeout(Duration::ZERO, armed.notified())
                .await
                .is_err(),
            "nothing armed the timer"
        );
        digest.refused("p", "auth.login", Some("admin"), "InvalidCredentials", t0);
        assert_eq!(digest.next_due(), Some(at(60)));
        assert!(
            tokio::time::timeout(Duration::ZERO, armed.notified())
                .await
                .is_ok(),
            "the first refusal of an interval wakes the waiter"
        );
        digest.refused(
            "p",
            "auth.login",
            Some("admin"),
            "InvalidCredentials",
            at(5),
        );
        digest.refused("q", "card.load", None, "Unauthenticated", at(10));
        assert_eq!(digest.next_due(), Some(at(60)), "the earliest end");
        assert_eq!(digest.due(at(60)).len(), 1, "p's count is written");
        assert_eq!(digest.next_due(), Some(at(70)), "q's interval is left");
        assert!(
            digest.due(at(70)).is_empty(),
            "q had only its first refusal"
        );
        assert_eq!(digest.next_due(), None, "idle again: no deadline");
        // An interval ended by a refusal starts the next one, which ends quietly.
        digest.refused("p", "auth.login", None, "InvalidCredentials", at(100));
        digest.refused("p", "auth.login", None, "InvalidCredentials", at(120));
        assert_eq!(
            digest
                .refused("p", "auth.login", None, "InvalidCredentials", at(160))
                .len(),
            1
        );
        assert_eq!(digest.next_due(), Some(at(220)));
        assert!(digest.due(at(220)).is_empty());
        assert_eq!(digest.next_due(), None);
        // (The wake-ups of q's and p's new intervals, kept as one.)
        let _ = tokio::time::timeout(Duration::ZERO, armed.notified()).await;
        drop(digest);
        assert!(
            tokio::time::timeout(Duration::ZERO, armed.notified())
                .await
                .is_ok(),
            "dropping the digest wakes the waiter"
        );
    }
}
