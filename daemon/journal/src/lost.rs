//! The way out for a load whose card will not come back: lost, broken or PIN-blocked.
//!
//! A load whose outcome is unknown blocks its card until the card is presented. When the card
//! cannot be presented, two people settle the load instead, after a waiting period (during
//! which the card may still turn up):
//!
//! 1. a supervisor proposes a verdict (landed or not) with a reason ([`Journal::propose_lost_card`]);
//! 2. an auditor, another person, confirms the same verdict ([`Journal::confirm_lost_card`]):
//!    the load is settled as `committed` or `not_applied` with [`Resolution::LostCard`], and
//!    the card number goes on the **watch list** in the same write.
//!
//! If the card is ever presented again, it is checked against the verdict before anything else
//! (`recover_card`): a card that agrees (or can no longer tell) leaves the watch
//! list; a card that contradicts the verdict stays on it, and takes no new load until an
//! auditor has dealt with the difference and cleared it ([`Journal::clear_watch`]).
//!
//! Everything here is bounded: one verdict per load, reasons of at most
//! [`LOST_REASON_CHARS_MAX`] characters, lists of at most [`LOST_CARDS_LISTED_MAX`].

use serde::{Deserialize, Serialize};

use crate::journal::{
    encode, now, open_key, txn_key, Journal, JournalError, LoadTxn, Resolution, StateChange,
    TxnState, HISTORY_ENTRIES_MAX,
};

/// Longest reason a person may give, in characters.
pub const LOST_REASON_CHARS_MAX: usize = 500;
/// Most lost-card verdicts one listing returns.
pub const LOST_CARDS_LISTED_MAX: usize = 1_000;

/// What the card said when it was presented again after its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum WatchCheck {
    /// The card agrees with the verdict.
    Confirmed { at: String },
    /// The card can no longer show this load (used too often since): the verdict stands.
    Undecided { at: String, detail: String },
    /// The card contradicts the verdict: it takes no new load until an auditor clears it.
    Contradicted {
        at: String,
        /// What the card shows (`landed` or `not_landed`).
        card_shows: String,
        cleared_by: Option<String>,
        cleared_reason: Option<String>,
    },
}

/// A lost-card verdict on one load, from proposal to the card's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostCardVerdict {
    pub txn_id: String,
    pub card_number: String,
    /// The verdict: the money is on the card (`true`) or not.
    pub landed: bool,
    pub reason: String,
    pub proposed_by: String,
    pub proposed_at: String,
    pub confirmed_by: Option<String>,
    pub confirmed_at: Option<String>,
    /// Set when the card was presented after the verdict.
    pub card_check: Option<WatchCheck>,
}

impl LostCardVerdict {
    /// The card is on the watch list: confirmed, and not yet checked by the card (or found
    /// contradicting and not yet cleared).
    pub fn watched(&self) -> bool {
        self.confirmed_by.is_some()
            && match &self.card_check {
                None => true,
                Some(WatchCheck::Contradicted { cleared_by, .. }) => cleared_by.is_none(),
                Some(_) => false,
            }
    }

    /// The card contradicted the verdict and no auditor has cleared it yet.
    pub fn contradicted(&self) -> bool {
        matches!(
            &self.card_check,
            Some(WatchCheck::Contradicted {
                cleared_by: None,
                ..
            })
        )
    }
}

/// Why a lost-card step was refused.
#[derive(Debug, thiserror::Error)]
pub enum LostCardError {
    #[error("load transaction {0} does not exist")]
    NotFound(String),
    /// The load is settled already (by the card or a person).
    #[error("load transaction {0} is settled already")]
    Settled(String),
    /// The waiting period has not passed.
    #[error("load transaction {txn_id} was recorded at {created_at}; a lost-card verdict is possible from {allowed_from}")]
    TooEarly {
        txn_id: String,
        created_at: String,
        allowed_from: String,
    },
    #[error("a reason is required (1 to {LOST_REASON_CHARS_MAX} characters)")]
    Reason,
    /// No proposal to confirm.
    #[error("load transaction {0} has no proposed lost-card verdict")]
    NoProposal(String),
    /// The proposal was confirmed already.
    #[error("the lost-card verdict on {0} is confirmed already")]
    Confirmed(String),
    /// The confirming person proposed it.
    #[error("the lost-card verdict on {txn_id} was proposed by {person}; another person must confirm it")]
    SamePerson { txn_id: String, person: String },
    /// The confirmation names another verdict than the proposal.
    #[error("the confirmation says landed={confirmed}, the proposal landed={proposed}")]
    Disagrees { proposed: bool, confirmed: bool },
    /// Nothing to clear.
    #[error("the card of {0} does not contradict its verdict")]
    NotContradicted(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<sled::Error> for LostCardError {
    fn from(e: sled::Error) -> Self {
        LostCardError::Journal(e.into())
    }
}

fn lost_key(txn_id: &str) -> Vec<u8> {
    format!("lost/{txn_id}").into_bytes()
}

fn watch_key(card: &str, txn_id: &str) -> Vec<u8> {
    format!("watch/{card}/{txn_id}").into_bytes()
}

fn watch_prefix(card: &str) -> Vec<u8> {
    format!("watch/{card}/").into_bytes()
}

fn encode_verdict(v: &LostCardVerdict) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(v).map_err(|e| JournalError::Invalid(e.to_string()))
}

fn decode_verdict(key: &[u8], bytes: &[u8]) -> Result<LostCardVerdict, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn checked_reason(reason: &str) -> Result<String, LostCardError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > LOST_REASON_CHARS_MAX {
        return Err(LostCardError::Reason);
    }
    Ok(reason.to_owned())
}

fn parse_time(at: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// From when a lost-card verdict on `txn` may be proposed: `wait` after it was recorded.
pub fn lost_card_allowed_from(txn: &LoadTxn, wait: std::time::Duration) -> time::OffsetDateTime {
    parse_time(&txn.created_at).unwrap_or(time::OffsetDateTime::UNIX_EPOCH) + wait
}

/// RFC 3339, as the journal writes its times.
pub fn format_time(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

impl Journal {
    /// The lost-card verdict on `txn_id`, if one was proposed.
    pub fn lost_card_verdict(&self, txn_id: &str) -> Result<Option<LostCardVerdict>, JournalError> {
        let key = lost_key(txn_id);
        self.tree
            .get(&key)?
            .map(|v| decode_verdict(&key, &v))
            .transpose()
    }

    /// Every lost-card verdict (proposed, confirmed, checked), at most
    /// [`LOST_CARDS_LISTED_MAX`], in transaction id order.
    pub fn lost_card_verdicts(&self) -> Result<Vec<LostCardVerdict>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"lost/").take(LOST_CARDS_LISTED_MAX) {
            let (key, value) = item?;
            out.push(decode_verdict(&key, &value)?);
        }
        Ok(out)
    }

    /// Whether any card is on the watch list (a cheap check before reading a card for it).
    pub fn anything_watched(&self) -> Result<bool, JournalError> {
        Ok(self
            .tree
            .scan_prefix(b"watch/")
            .next()
            .transpose()?
            .is_some())
    }

    /// The verdicts on `card_number` still on the watch list.
    pub fn watched_for_card(
        &self,
        card_number: &str,
    ) -> Result<Vec<LostCardVerdict>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(watch_prefix(card_number)) {
            let (_, txn_id) = item?;
            let txn_id = String::from_utf8_lossy(&txn_id).into_owned();
            if let Some(v) = self.lost_card_verdict(&txn_id)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// A supervisor proposes a verdict on an unsettled load whose card cannot be presented,
    /// once `wait` has passed since the load was recorded. A new proposal replaces an
    /// unconfirmed one.
    pub fn propose_lost_card(
        &self,
        txn_id: &str,
        landed: bool,
        reason: &str,
        by: &str,
        wait: std::time::Duration,
    ) -> Result<LostCardVerdict, LostCardError> {
        let reason = checked_reason(reason)?;
        let guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self
            .get(txn_id)?
            .ok_or_else(|| LostCardError::NotFound(txn_id.to_owned()))?;
        if !txn.state.is_open() {
            return Err(LostCardError::Settled(txn_id.to_owned()));
        }
        let allowed_from = lost_card_allowed_from(&txn, wait);
        if time::OffsetDateTime::now_utc() < allowed_from {
            return Err(LostCardError::TooEarly {
                txn_id: txn_id.to_owned(),
                created_at: txn.created_at.clone(),
                allowed_from: format_time(allowed_from),
            });
        }
        if let Some(earlier) = self.lost_card_verdict(txn_id)? {
            if earlier.confirmed_by.is_some() {
                return Err(LostCardError::Confirmed(txn_id.to_owned()));
            }
        }
        let verdict = LostCardVerdict {
            txn_id: txn_id.to_owned(),
            card_number: txn.card_number.clone(),
            landed,
            reason,
            proposed_by: by.to_owned(),
            proposed_at: now(),
            confirmed_by: None,
            confirmed_at: None,
            card_check: None,
        };
        self.tree
            .insert(lost_key(txn_id), encode_verdict(&verdict)?)?;
        drop(guard);
        self.store.durable_flush().map_err(JournalError::from)?;
        Ok(verdict)
    }

    /// An auditor, not the proposer, confirms the proposed verdict: the load is settled with
    /// [`Resolution::LostCard`] and the card goes on the watch list, in one durable write.
    pub fn confirm_lost_card(
        &self,
        txn_id: &str,
        landed: bool,
        by: &str,
    ) -> Result<(LoadTxn, LostCardVerdict), LostCardError> {
        let guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut verdict = self
            .lost_card_verdict(txn_id)?
            .ok_or_else(|| LostCardError::NoProposal(txn_id.to_owned()))?;
        if verdict.confirmed_by.is_some() {
            return Err(LostCardError::Confirmed(txn_id.to_owned()));
        }
        if verdict.proposed_by == by {
            return Err(LostCardError::SamePerson {
                txn_id: txn_id.to_owned(),
                person: by.to_owned(),
            });
        }
        if verdict.landed != landed {
            return Err(LostCardError::Disagrees {
                proposed: verdict.landed,
                confirmed: landed,
            });
        }
        let mut txn = self
            .get(txn_id)?
            .ok_or_else(|| LostCardError::NotFound(txn_id.to_owned()))?;
        if !txn.state.is_open() {
            return Err(LostCardError::Settled(txn_id.to_owned()));
        }
        let resolution = Resolution::LostCard {
            proposed_by: verdict.proposed_by.clone(),
            confirmed_by: by.to_owned(),
            reason: verdict.reason.clone(),
        };
        txn.state = if landed {
            TxnState::Committed {
                tac: String::new(),
                resolution,
            }
        } else {
            TxnState::NotApplied { resolution }
        };
        let at = now();
        txn.history.push(StateChange {
            at: at.clone(),
            state: if landed { "committed" } else { "not_applied" }.into(),
        });
        while txn.history.len() > HISTORY_ENTRIES_MAX {
            txn.history.remove(1);
        }
        verdict.confirmed_by = Some(by.to_owned());
        verdict.confirmed_at = Some(at);
        let mut batch = sled::Batch::default();
        batch.insert(txn_key(txn_id), encode(&txn)?);
        batch.remove(open_key(&txn.card_number));
        batch.insert(lost_key(txn_id), encode_verdict(&verdict)?);
        batch.insert(watch_key(&txn.card_number, txn_id), txn_id.as_bytes());
        self.tree.apply_batch(batch)?;
        drop(guard);
        self.store.durable_flush().map_err(JournalError::from)?;
        Ok((txn, verdict))
    }

    /// Records what the card showed about a watched verdict when it was presented again. A
    /// card that agrees or can no longer tell leaves the watch list; one that contradicts
    /// stays on it.
    pub fn record_watch_check(
        &self,
        txn_id: &str,
        check: WatchCheck,
    ) -> Result<LostCardVerdict, LostCardError> {
        let guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut verdict = self
            .lost_card_verdict(txn_id)?
            .ok_or_else(|| LostCardError::NoProposal(txn_id.to_owned()))?;
        let keep_watching = matches!(check, WatchCheck::Contradicted { .. });
        verdict.card_check = Some(check);
        let mut batch = sled::Batch::default();
        batch.insert(lost_key(txn_id), encode_verdict(&verdict)?);
        if !keep_watching {
            batch.remove(watch_key(&verdict.card_number, txn_id));
        }
        self.tree.apply_batch(batch)?;
        drop(guard);
        self.store.durable_flush().map_err(JournalError::from)?;
        Ok(verdict)
    }

    /// An auditor records how a contradiction between a verdict and its card was dealt with;
    /// the card leaves the watch list and may take loads again.
    pub fn clear_watch(
        &self,
        txn_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<LostCardVerdict, LostCardError> {
        let reason = checked_reason(reason)?;
        let guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut verdict = self
            .lost_card_verdict(txn_id)?
            .ok_or_else(|| LostCardError::NoProposal(txn_id.to_owned()))?;
        match &mut verdict.card_check {
            Some(WatchCheck::Contradicted {
                cleared_by,
                cleared_reason,
                ..
            }) if cleared_by.is_none() => {
                *cleared_by = Some(by.to_owned());
                *cleared_reason = Some(reason);
            }
            _ => return Err(LostCardError::NotContradicted(txn_id.to_owned())),
        }
        let mut batch = sled::Batch::default();
        batch.insert(lost_key(txn_id), encode_verdict(&verdict)?);
        batch.remove(watch_key(&verdict.card_number, txn_id));
        self.tree.apply_batch(batch)?;
        drop(guard);
        self.store.durable_flush().map_err(JournalError::from)?;
        Ok(verdict)
    }

    /// A verdict on `card_number` its card contradicted and no auditor has cleared, if any.
    pub fn contradicted_for_card(
        &self,
        card_number: &str,
    ) -> Result<Option<LostCardVerdict>, JournalError> {
        Ok(self
            .watched_for_card(card_number)?
            .into_iter()
            .find(LostCardVerdict::contradicted))
    }
}
