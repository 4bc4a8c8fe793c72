//! Load transactions, durable and checksummed.
//!
//! A [`LoadTxn`] is written as an **intent** (state [`TxnState::Intent`]) after the card's
//! INITIALIZE FOR LOAD answered and the host computed MAC2, and made durable before CREDIT is
//! sent. It then moves, exactly once, to [`TxnState::Committed`] (the card credited it),
//! [`TxnState::NotApplied`] (the card proves it did not) or
//! [`TxnState::NeedsReconciliation`] (nothing could be proven; a person must decide), and that
//! outcome is durable before anyone is told.
//!
//! **Invariants**, asserted on every write and verified on every read:
//! * each stored record is `sha256(json) ‖ json` and a mismatch is [`JournalError::Corrupt`]
//!   (the daemon then fails closed rather than guess);
//! * a card has at most one open transaction (`Intent` or `NeedsReconciliation`), indexed by
//!   card number; a new intent for a card with an open one is refused;
//! * states only move forward: `Intent → Committed | NotApplied | NeedsReconciliation`, and
//!   `NeedsReconciliation → Committed | NotApplied` by a person with a reason.

use std::sync::Mutex;

use cardd_purse::{Funding, LoadSession};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crash::crash_point;
use crate::store::{Store, StoreError};

/// The sled tree of transactions (`txn/<id>`) and the open-per-card index (`open/<card>`).
pub const JOURNAL_TREE: &str = "journal";
/// Longest transaction id, in characters.
pub const TXN_ID_CHARS_MAX: usize = 128;
/// Most state changes kept in one record's history.
pub const HISTORY_ENTRIES_MAX: usize = 16;
/// Largest stored record, in bytes.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

const CHECKSUM_BYTES: usize = 32;

/// How an outcome was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Resolution {
    /// The card answered CREDIT FOR LOAD with a TAC that verified.
    CardResponse,
    /// Decided later from the card's counters and transaction proof.
    Recovery,
    /// Decided later from the card's own transaction log (0018): a load record with this
    /// load's counter, and whether its amount, terminal, date and time are this load's.
    CardLog,
    /// Decided by a person, with a reason (for reconciliation).
    Manual { operator: String, reason: String },
    /// Decided by two people for a card that cannot be presented (lost, broken, PIN-blocked),
    /// after the waiting period: a supervisor proposed, an auditor confirmed. The card goes on
    /// the watch list (see the `lost` module).
    LostCard {
        proposed_by: String,
        confirmed_by: String,
        reason: String,
    },
}

/// Where a load transaction stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TxnState {
    /// Durable before CREDIT; the card may or may not have been credited.
    Intent,
    /// The card was credited with this load.
    Committed { tac: String, resolution: Resolution },
    /// The card was not credited with this load.
    NotApplied { resolution: Resolution },
    /// Nothing could be proven: a person must compare the card with the records.
    NeedsReconciliation { reason: String },
}

impl TxnState {
    /// Open transactions block new loads on their card.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            TxnState::Intent | TxnState::NeedsReconciliation { .. }
        )
    }

    /// The state's name as records and statistics show it (`intent`, `committed`, …).
    pub fn name(&self) -> &'static str {
        match self {
            TxnState::Intent => "intent",
            TxnState::Committed { .. } => "committed",
            TxnState::NotApplied { .. } => "not_applied",
            TxnState::NeedsReconciliation { .. } => "needs_reconciliation",
        }
    }
}

/// A state change, for the record's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub at: String,
    pub state: String,
}

/// One load transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTxn {
    /// Unique id of this attempt (the flow engine derives it from the client's idempotency key).
    pub txn_id: String,
    /// The card's displayed number.
    pub card_number: String,
    pub reader_id: String,
    /// Everything the load needs and recovery needs to decide: the plan (card, amount,
    /// terminal, date, time), the card's INITIALIZE answer and our MAC2. No key.
    pub session: LoadSession,
    pub state: TxnState,
    pub created_at: String,
    pub history: Vec<StateChange>,
    /// What paid for the load (the ETC record, the group order or the test mode); `None` in
    /// records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding: Option<Funding>,
}

impl LoadTxn {
    /// A new intent.
    pub fn intent(
        txn_id: &str,
        card_number: &str,
        reader_id: &str,
        session: LoadSession,
    ) -> LoadTxn {
        let at = now();
        LoadTxn {
            txn_id: txn_id.to_owned(),
            card_number: card_number.to_owned(),
            reader_id: reader_id.to_owned(),
            session,
            state: TxnState::Intent,
            created_at: at.clone(),
            history: vec![StateChange {
                at,
                state: "intent".into(),
            }],
            funding: None,
        }
    }

    /// The amount in fen.
    pub fn amount_fen(&self) -> u32 {
        self.session.plan.terms.amount
    }
}

/// Why the journal refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The card already has an open load; it must be resolved first.
    #[error("card {card} has an unresolved load ({txn_id}); present the card so cardd can check whether it landed before any new load")]
    UnresolvedIntent { card: String, txn_id: String },
    /// A transaction with this id exists.
    #[error("load transaction {0} already exists")]
    Exists(String),
    /// No transaction with this id.
    #[error("no load transaction {0}")]
    NotFound(String),
    /// The requested state change is not allowed.
    #[error("load transaction {txn_id} cannot go from {from} to {to}")]
    BadTransition {
        txn_id: String,
        from: &'static str,
        to: &'static str,
    },
    /// A stored record failed its checksum or could not be read: fail closed.
    #[error("journal record {key} is corrupt ({reason}); cardd refuses money operations until an administrator restores the data directory")]
    Corrupt { key: String, reason: String },
    /// The record is invalid (id too long, record too large).
    #[error("invalid journal record: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for JournalError {
    fn from(e: sled::Error) -> Self {
        JournalError::Store(StoreError::from(e))
    }
}

/// The journal.
pub struct Journal {
    pub(crate) store: Store,
    pub(crate) tree: sled::Tree,
    pub(crate) writes: Mutex<()>,
    pub(crate) pins: crate::pins::PinRefusalRecord,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

pub(crate) fn txn_key(txn_id: &str) -> Vec<u8> {
    format!("txn/{txn_id}").into_bytes()
}

pub(crate) fn open_key(card: &str) -> Vec<u8> {
    format!("open/{card}").into_bytes()
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

pub(crate) fn encode(txn: &LoadTxn) -> Result<Vec<u8>, JournalError> {
    let json = serde_json::to_vec(txn).map_err(|e| JournalError::Invalid(e.to_string()))?;
    if json.len() > RECORD_BYTES_MAX {
        return Err(JournalError::Invalid(format!(
            "record of {} bytes exceeds {RECORD_BYTES_MAX}",
            json.len()
        )));
    }
    let mut out = Sha256::digest(&json).to_vec();
    out.extend_from_slice(&json);
    Ok(out)
}

pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<LoadTxn, JournalError> {
    let corrupt = |reason: &str| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    };
    if bytes.len() <= CHECKSUM_BYTES {
        return Err(corrupt("too short"));
    }
    let (sum, json) = bytes.split_at(CHECKSUM_BYTES);
    if Sha256::digest(json).as_slice() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let txn: LoadTxn = serde_json::from_slice(json).map_err(|e| corrupt(&e.to_string()))?;
    if txn_key(&txn.txn_id) != key {
        return Err(corrupt("stored under another id"));
    }
    Ok(txn)
}

impl Journal {
    /// Opens the journal and verifies every record (checksums and the open-per-card index).
    pub fn open(store: &Store) -> Result<Journal, JournalError> {
        let tree = store.tree(JOURNAL_TREE)?;
        let journal = Journal {
            store: store.clone(),
            tree,
            writes: Mutex::new(()),
            pins: crate::pins::PinRefusalRecord::open(store)?,
        };
        journal.verify()?;
        Ok(journal)
    }

    /// The durable record of PINs cards refused: every VERIFY PIN the daemon sends goes
    /// through it (`cardd_purse::Purse::verify_pin`).
    pub fn pin_refusals(&self) -> &crate::pins::PinRefusalRecord {
        &self.pins
    }

    /// Checks every record; returns how many transactions there are.
    pub fn verify(&self) -> Result<u64, JournalError> {
        let mut count = 0;
        for item in self.tree.scan_prefix(b"txn/") {
            let (key, value) = item?;
            let txn = decode(&key, &value)?;
            let indexed = self.tree.get(open_key(&txn.card_number))?;
            let indexed_here = indexed.as_deref() == Some(txn.txn_id.as_bytes());
            if txn.state.is_open() != indexed_here {
                return Err(JournalError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "open-per-card index disagrees with the record".into(),
                });
            }
            count += 1;
        }
        Ok(count)
    }

    /// A transaction by id.
    pub fn get(&self, txn_id: &str) -> Result<Option<LoadTxn>, JournalError> {
        let key = txn_key(txn_id);
        self.tree.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// The open transaction of a card, if any.
    pub fn open_for_card(&self, card_number: &str) -> Result<Option<LoadTxn>, JournalError> {
        match self.tree.get(open_key(card_number))? {
            Some(id) => {
                let id = String::from_utf8_lossy(&id).into_owned();
                let txn = self.get(&id)?.ok_or_else(|| JournalError::Corrupt {
                    key: format!("open/{card_number}"),
                    reason: format!("points to missing transaction {id}"),
                })?;
                Ok(Some(txn))
            }
            None => Ok(None),
        }
    }

    /// Every open transaction (for start-up recovery and the reconciliation list).
    pub fn list_open(&self) -> Result<Vec<LoadTxn>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"open/") {
            let (_, id) = item?;
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(txn) = self.get(&id)? {
                out.push(txn);
            }
        }
        Ok(out)
    }

    /// Takes in a load another site began (`intent::adopt_foreign`) as an open intent of this
    /// journal, so that the card settles it here. Returns `false`, changing nothing, when the
    /// transaction is known here already (this site's own, or adopted before) or the card has
    /// another open load here (settled first; the next presentation adopts this one).
    pub fn adopt(&self, txn: &LoadTxn) -> Result<bool, JournalError> {
        if self.get(&txn.txn_id)?.is_some() || self.open_for_card(&txn.card_number)?.is_some() {
            return Ok(false);
        }
        match self.record_intent(txn) {
            Ok(()) => Ok(true),
            Err(JournalError::Exists(_) | JournalError::UnresolvedIntent { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records an intent, durably, before CREDIT is sent. Refused when the card has an open
    /// transaction, or the id exists and its earlier attempt is not proven not applied.
    pub fn record_intent(&self, txn: &LoadTxn) -> Result<(), JournalError> {
        if txn.txn_id.is_empty() || txn.txn_id.chars().count() > TXN_ID_CHARS_MAX {
            return Err(JournalError::Invalid(format!(
                "transaction id must be 1 to {TXN_ID_CHARS_MAX} characters"
            )));
        }
        assert!(
            txn.state == TxnState::Intent,
            "record_intent takes an intent"
        );
        let guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = self.open_for_card(&txn.card_number)? {
            return Err(JournalError::UnresolvedIntent {
                card: txn.card_number.clone(),
                txn_id: open.txn_id,
            });
        }
        // An id may be attempted again only when its earlier attempt is proven not applied
        // (the card showed the money is not there); the history keeps every attempt.
        let mut txn = txn.clone();
        if let Some(earlier) = self.get(&txn.txn_id)? {
            if !matches!(earlier.state, TxnState::NotApplied { .. }) {
                return Err(JournalError::Exists(txn.txn_id.clone()));
            }
            let mut history = earlier.history;
            history.push(StateChange {
                at: now(),
                state: "retry".into(),
            });
            history.extend(txn.history);
            while history.len() > HISTORY_ENTRIES_MAX {
                history.remove(1);
            }
            txn.history = history;
        }
        let txn = &txn;
        let value = encode(txn)?;
        let mut batch = sled::Batch::default();
        batch.insert(txn_key(&txn.txn_id), value);
        batch.insert(open_key(&txn.card_number), txn.txn_id.as_bytes());
        self.tree.apply_batch(batch)?;
        // The checks above and the write are one step for other writers; the flush is not:
        // concurrent flows share flush rounds (group commit) instead of queueing behind this one.
        drop(guard);
        crash_point("journal.intent.before_flush");
        self.store.durable_flush()?;
        crash_point("journal.intent.after_flush");
        // Paired check: what was made durable reads back as written.
        debug_assert_eq!(self.get(&txn.txn_id).ok().flatten().as_ref(), Some(txn));
        Ok(())
    }

    /// Moves a transaction to `state`, durably, and returns the updated record.
    pub fn resolve(&self, txn_id: &str, state: TxnState) -> Result<LoadTxn, JournalError> {
        let guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut txn = self
            .get(txn_id)?
            .ok_or_else(|| JournalError::NotFound(txn_id.to_owned()))?;
        let allowed = match (&txn.state, &state) {
            (TxnState::Intent, s) => *s != TxnState::Intent,
            // A load waiting for a person is settled by the card itself when it can prove
            // the outcome later (its proof or its log), or by a person.
            (
                TxnState::NeedsReconciliation { .. },
                TxnState::Committed {
                    resolution: Resolution::Recovery | Resolution::CardLog,
                    ..
                },
            )
            | (
                TxnState::NeedsReconciliation { .. },
                TxnState::NotApplied {
                    resolution: Resolution::Recovery | Resolution::CardLog,
                },
            ) => true,
            (
                TxnState::NeedsReconciliation { .. },
                TxnState::Committed {
                    resolution: Resolution::Manual { .. },
                    ..
                },
            )
            | (
                TxnState::NeedsReconciliation { .. },
                TxnState::NotApplied {
                    resolution: Resolution::Manual { .. },
                },
            ) => true,
            _ => false,
        };
        if !allowed {
            return Err(JournalError::BadTransition {
                txn_id: txn_id.to_owned(),
                from: txn.state.name(),
                to: state.name(),
            });
        }
        let previous = encode(&txn)?;
        txn.history.push(StateChange {
            at: now(),
            state: state.name().into(),
        });
        if txn.history.len() > HISTORY_ENTRIES_MAX {
            txn.history.remove(1);
        }
        txn.state = state;
        let written = encode(&txn)?;
        let mut batch = sled::Batch::default();
        batch.insert(txn_key(txn_id), written.clone());
        if !txn.state.is_open() {
            batch.remove(open_key(&txn.card_number));
        }
        self.tree.apply_batch(batch)?;
        drop(guard);
        crash_point("journal.outcome.before_flush");
        if let Err(e) = self.store.durable_flush() {
            // The outcome is not known to be durable: put the open record back, so the card
            // stays blocked until its outcome is settled again from the card or by a person.
            let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            let current = self.tree.get(txn_key(txn_id)).ok().flatten();
            let indexed = self.tree.get(open_key(&txn.card_number)).ok().flatten();
            let card_free = indexed.is_none() || indexed.as_deref() == Some(txn_id.as_bytes());
            if current.as_deref() != Some(written.as_slice()) || !card_free {
                return Err(e.into());
            }
            let mut undo = sled::Batch::default();
            undo.insert(txn_key(txn_id), previous);
            undo.insert(open_key(&txn.card_number), txn_id.as_bytes());
            if let Err(undo_err) = self.tree.apply_batch(undo) {
                tracing::error!(txn = txn_id, error = %undo_err, "could not reopen a load whose outcome failed to flush");
            }
            return Err(e.into());
        }
        crash_point("journal.outcome.after_flush");
        Ok(txn)
    }

    /// Every transaction of a card, oldest first (for evidence and reconciliation).
    pub fn for_card(&self, card_number: &str) -> Result<Vec<LoadTxn>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"txn/") {
            let (key, value) = item?;
            let txn = decode(&key, &value)?;
            if txn.card_number == card_number {
                out.push(txn);
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(out)
    }

    /// The transactions whose id starts with `prefix` (e.g. a flow run's `<run_id>#`), in id
    /// order, at most `max` of them. Read-only.
    pub fn with_id_prefix(&self, prefix: &str, max: usize) -> Result<Vec<LoadTxn>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(txn_key(prefix)).take(max) {
            let (key, value) = item?;
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Test support: overwrites a stored record's bytes (to prove corruption is detected).
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, txn_id: &str) -> Result<(), JournalError> {
        let key = txn_key(txn_id);
        if let Some(mut v) = self.tree.get(&key)?.map(|v| v.to_vec()) {
            if let Some(last) = v.last_mut() {
                *last ^= 0x01;
            }
            self.tree.insert(key, v)?;
        }
        Ok(())
    }
}

/// What is known about one load intent's money, from the journal: the three outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentOutcome {
    /// The card was credited with this load.
    Credited(LoadTxn),
    /// The card was not credited with this load: no intent was ever recorded (nothing was sent
    /// to the card), or the card proved the load did not land, or a person decided so.
    NotCredited(Option<LoadTxn>),
    /// The card may or may not hold the money: the intent is open (or the journal could not
    /// be read). Never shown or stored as failed; the card is blocked until it is settled.
    Unknown(Option<LoadTxn>),
}

impl IntentOutcome {
    /// Classifies `txn_id` by its journal state. A journal that cannot be read says nothing:
    /// the outcome is unknown.
    pub fn of(journal: &Journal, txn_id: &str) -> IntentOutcome {
        match journal.get(txn_id) {
            Ok(None) => IntentOutcome::NotCredited(None),
            Ok(Some(txn)) => match txn.state {
                TxnState::Committed { .. } => IntentOutcome::Credited(txn),
                TxnState::NotApplied { .. } => IntentOutcome::NotCredited(Some(txn)),
                TxnState::Intent | TxnState::NeedsReconciliation { .. } => {
                    IntentOutcome::Unknown(Some(txn))
                }
            },
            Err(_) => IntentOutcome::Unknown(None),
        }
    }
}
