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

use std::sync::{Mutex, PoisonError};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, RFC 3339 in UTC.
    pub at: String,
    /// See [`AuditEntry::operator`].
    pub operator: Option<String>,
    /// See [`AuditEntry::role`].
    pub role: Option<Role>,
    /// See [`AuditEntry::action`].
    pub action: String,
    /// See [`AuditEntry::target`].
    pub target: Option<String>,
    /// See [`AuditEntry::detail`].
    pub detail: Value,
    /// See [`AuditEntry::outcome`].
    pub outcome: String,
    /// The previous record's `hash` ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and this record's canonical JSON without `hash`.
    pub hash: String,
}

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

/// Reads the chain head from the last record, checking that record's hash.
fn read_head(tree: &sled::Tree) -> Result<ChainHead, AuditError> {
    let Some((key, value)) = tree.last()? else {
        return Ok(ChainHead::Intact {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
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
    head: Mutex<ChainHead>,
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
        let tree = store.tree(AUDIT_TREE)?;
        let head = match read_head(&tree) {
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
            head: Mutex::new(head),
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
        Ok(record)
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
        let mut records = Vec::new();
        for item in self
            .tree
            .range(first.to_be_bytes()..)
            .take(limit.min(AUDIT_PAGE_MAX))
        {
            let (key, value) = item?;
            records.push(decode(&key, &value)?);
        }
        Ok(records)
    }

    /// Checks the whole chain from seq 1: contiguous seqs, each `prev_hash` equal to the
    /// previous `hash`, each `hash` recomputed. Returns the number of records.
    pub fn verify_chain(&self) -> Result<u64, AuditError> {
        let mut count = 0u64;
        let mut prev_hash = GENESIS_HASH.to_owned();
        for item in self.tree.iter() {
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
}
