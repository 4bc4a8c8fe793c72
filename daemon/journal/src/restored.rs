//! Restored mode: after the data directory was restored from a backup, every card is checked
//! against its own transaction log before a load the backup may not know about reaches it.
//!
//! A backup is older than the data it replaces. Loads made after it are missing from the
//! restored journal, and the recharge records and group orders they paid for are shown unloaded
//! again. Loading one of them once more would credit the card twice. So `cardd restore` puts
//! the restored journal in restored mode ([`Journal::enter_restored_mode`]) and names the
//! **suspects**: every funded item (recharge record, group order) that the restored data shows
//! as not yet loaded, with its card and amount. Items created after the restore are not
//! suspects: they cannot have been loaded before it.
//!
//! Before a suspect's load reaches the card, the load (`load_card`) reads the card's 0018 log
//! and looks for **loads the restored journal does not know**: load records made by this
//! terminal whose online counter is the counter of no transaction in the journal. Those are
//! the loads made after the backup. Then:
//!
//! * one of them has the suspect's amount → it is **claimed** for the suspect (never for a
//!   second one) and the load is refused with [`RestoredCheck::LoadedSinceBackup`]: the domain
//!   marks the item loaded, citing the card's log record, and nothing is credited;
//! * none has, and the log reaches back to before the backup → the suspect is **cleared**
//!   (proven not loaded since) and the load goes on;
//! * none has, and the log does not reach back to the backup (full, its oldest record newer
//!   than the backup) → the load is refused ([`RestoredCheck::Unproven`]) until a supervisor
//!   has compared the card with the back office's records and cleared the suspect.
//!
//! Every card is read once after the restore, at its first load, whatever pays for it: loads
//! by this terminal that the journal does not know and no suspect claims are kept as
//! **orphans** for the auditor (paid by something the backup did not hold, such as a group
//! order made after it). Outside restored mode nothing here runs; in it, each card costs one
//! log read, and each suspect one more.

use cardd_purse::{Funding, LogRecord, TransactionType};
use serde::{Deserialize, Serialize};

use crate::journal::{now, Journal, JournalError};

/// How many records of the card's 0018 log the check reads (ETC cards keep up to 50, transit
/// cards 10).
pub const RESTORED_LOG_RECORDS_MAX: u8 = 50;

/// Every card keeps at least this many log records: a shorter log is the card's whole history.
pub const CARD_LOG_RECORDS_MIN: usize = 10;

/// Most suspects one restore names (a bound on the restore's work; a data directory with
/// more open items than this is refused with a message).
pub const SUSPECTS_MAX: usize = 1_000_000;

const MODE_KEY: &[u8] = b"restored/mode";

fn suspect_prefix(card: &str) -> Vec<u8> {
    format!("restored/suspect/{card}/").into_bytes()
}

fn suspect_key(card: &str, funding: &Funding) -> Vec<u8> {
    let mut key = suspect_prefix(card);
    key.extend_from_slice(funding_key(funding).as_bytes());
    key
}

fn claim_key(card: &str, atc: u16) -> Vec<u8> {
    format!("restored/claim/{card}/{atc:05}").into_bytes()
}

fn orphan_key(card: &str, atc: u16) -> Vec<u8> {
    format!("restored/orphan/{card}/{atc:05}").into_bytes()
}

pub(crate) fn checked_key(card: &str) -> Vec<u8> {
    format!("restored/checked/{card}").into_bytes()
}

fn funding_key(funding: &Funding) -> String {
    match funding {
        Funding::EtcRecord { record_id } => format!("record:{record_id}"),
        Funding::GroupOrder { order_id } => format!("order:{order_id}"),
        Funding::TestMode => "test".into(),
    }
}

/// What a restore recorded about the backup it restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredMode {
    /// When the backup was made (RFC 3339, UTC).
    pub backup_created_at: String,
    /// The same moment as cards are stamped: China date and time, `YYYYMMDDhhmmss`.
    pub backup_card_time: String,
    /// When it was restored (RFC 3339, UTC).
    pub restored_at: String,
    /// Whether the restore replaced a newer data directory (`--force`).
    pub forced: bool,
    /// How many suspects the restore named.
    pub suspects: u64,
}

/// A funded item the restored data shows unloaded, which may have been loaded after the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    pub card_number: String,
    pub funding: Funding,
    pub amount_fen: u32,
}

/// A load found in a card's log that the restored journal did not know, and the item it was
/// matched to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub card_number: String,
    pub funding: Funding,
    /// The load record's online counter (before the load).
    pub atc: u16,
    pub amount_fen: u32,
    /// The card's date and time of the load, `YYYY-MM-DD hh:mm:ss` (China time).
    pub card_time: String,
    pub claimed_at: String,
}

/// A load found in a card's log after a restore that neither the restored journal nor any
/// suspect accounts for: paid by something the backup did not hold. For the auditor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub card_number: String,
    pub atc: u16,
    pub amount_fen: u32,
    /// `YYYY-MM-DD hh:mm:ss` (China time).
    pub card_time: String,
}

/// What the card showed about a suspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoredCheck {
    /// Not restored mode, not a suspect, or proven not loaded since the backup: load.
    Clear,
    /// The card's log holds a load of this amount the restored data did not know: it was loaded
    /// after the backup. Do not load; mark the item loaded.
    LoadedSinceBackup(Claim),
    /// The card's log does not reach back to the backup: nothing can be proven.
    Unproven {
        card_number: String,
        funding: Funding,
        backup_created_at: String,
        oldest_record: String,
    },
}

fn bcd_digits(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// `YYYYMMDDhhmmss` of a log record.
fn record_time(record: &LogRecord) -> String {
    format!(
        "{}{}",
        bcd_digits(&record.date_bcd),
        bcd_digits(&record.time_bcd)
    )
}

fn readable_time(compact: &str) -> String {
    let c: Vec<char> = compact.chars().collect();
    if c.len() != 14 {
        return compact.to_owned();
    }
    let s = |a: usize, b: usize| c[a..b].iter().collect::<String>();
    format!(
        "{}-{}-{} {}:{}:{}",
        s(0, 4),
        s(4, 6),
        s(6, 8),
        s(8, 10),
        s(10, 12),
        s(12, 14)
    )
}

/// `YYYYMMDDhhmmss` of an RFC 3339 time, in China time (as cards are stamped).
pub fn card_time_of(rfc3339: &str) -> Result<String, JournalError> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_err(|e| JournalError::Invalid(format!("time {rfc3339:?}: {e}")))?;
    Ok(crate::clock::china_time_text(t)
        .chars()
        .filter(char::is_ascii_digit)
        .collect())
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(value).map_err(|e| JournalError::Invalid(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl Journal {
    /// Puts this (just restored) journal in restored mode with `suspects`, durably. Called by
    /// `cardd restore` on the restored copy before it replaces the data directory.
    pub fn enter_restored_mode(
        &self,
        backup_created_at: &str,
        forced: bool,
        suspects: &[Suspect],
    ) -> Result<RestoredMode, JournalError> {
        if suspects.len() > SUSPECTS_MAX {
            return Err(JournalError::Invalid(format!(
                "{} unloaded items to check after the restore; at most {SUSPECTS_MAX}",
                suspects.len()
            )));
        }
        let mode = RestoredMode {
            backup_created_at: backup_created_at.to_owned(),
            backup_card_time: card_time_of(backup_created_at)?,
            restored_at: now(),
            forced,
            suspects: suspects.len() as u64,
        };
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // A second restore onto a restored directory starts over.
        for prefix in [&b"restored/"[..]] {
            for item in self.tree.scan_prefix(prefix) {
                let (key, _) = item?;
                self.tree.remove(key)?;
            }
        }
        for s in suspects {
            self.tree
                .insert(suspect_key(&s.card_number, &s.funding), json(s)?)?;
        }
        self.tree.insert(MODE_KEY, json(&mode)?)?;
        self.store.durable_flush()?;
        Ok(mode)
    }

    /// The restored mode, when the data directory was restored from a backup.
    pub fn restored_mode(&self) -> Result<Option<RestoredMode>, JournalError> {
        self.tree
            .get(MODE_KEY)?
            .map(|v| parse(MODE_KEY, &v))
            .transpose()
    }

    /// The values under `prefix`, at most `max`, in key order.
    fn restored_list<T: for<'de> Deserialize<'de>>(
        &self,
        prefix: &[u8],
        max: usize,
    ) -> Result<Vec<T>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix).take(max) {
            let (key, value) = item?;
            out.push(parse(&key, &value)?);
        }
        Ok(out)
    }

    /// The suspects not yet checked, at most `max`.
    pub fn restored_suspects(&self, max: usize) -> Result<Vec<Suspect>, JournalError> {
        self.restored_list(b"restored/suspect/", max)
    }

    /// The loads found on cards after the restore and the items they were matched to.
    pub fn restored_claims(&self, max: usize) -> Result<Vec<Claim>, JournalError> {
        self.restored_list(b"restored/claim/", max)
    }

    /// Loads found on cards after the restore that nothing in the restored data accounts for.
    pub fn restored_orphans(&self, max: usize) -> Result<Vec<Orphan>, JournalError> {
        self.restored_list(b"restored/orphan/", max)
    }

    pub(crate) fn suspect(
        &self,
        card: &str,
        funding: &Funding,
    ) -> Result<Option<Suspect>, JournalError> {
        let key = suspect_key(card, funding);
        self.tree.get(&key)?.map(|v| parse(&key, &v)).transpose()
    }

    /// The claim that settled `funding` on `card`, if a card check made one: a load of it
    /// found on the card after the backup. Asked before every load in restored mode, so that
    /// an item whose claim was recorded but whose record was not yet updated (a crash between
    /// the two) is never loaded.
    pub fn restored_claim_for(
        &self,
        card: &str,
        funding: &Funding,
    ) -> Result<Option<Claim>, JournalError> {
        for item in self
            .tree
            .scan_prefix(format!("restored/claim/{card}/").as_bytes())
        {
            let (key, value) = item?;
            let claim: Claim = parse(&key, &value)?;
            if &claim.funding == funding {
                return Ok(Some(claim));
            }
        }
        Ok(None)
    }

    /// Clears a suspect by a person's decision after comparing the card with the records
    /// (the way out of [`RestoredCheck::Unproven`]). Returns whether it was a suspect.
    pub fn clear_restored_suspect(
        &self,
        card: &str,
        funding: &Funding,
    ) -> Result<bool, JournalError> {
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let removed = self.tree.remove(suspect_key(card, funding))?.is_some();
        self.store.durable_flush()?;
        Ok(removed)
    }
}

impl Journal {
    /// Decides `funding`'s suspect on `card_number` from the card's log `log` (newest first),
    /// durably: claims a load the journal does not know, clears the suspect, or leaves it.
    pub fn check_suspect(
        &self,
        card_number: &str,
        funding: &Funding,
        terminal: [u8; 6],
        log: &[LogRecord],
    ) -> Result<RestoredCheck, JournalError> {
        let Some(mode) = self.restored_mode()? else {
            return Ok(RestoredCheck::Clear);
        };
        // A counter is known when a load the journal holds as landed carried it (one that did
        // not land leaves the counter for the next load to use).
        let known: Vec<u16> = self
            .for_card(card_number)?
            .iter()
            .filter(|t| matches!(t.state, crate::TxnState::Committed { .. }))
            .map(|t| t.session.init.online_atc)
            .collect();
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // The loads by this terminal the journal does not know and no item has claimed yet.
        let mut unclaimed = Vec::new();
        for record in log.iter().filter(|r| {
            r.transaction_type() == Some(TransactionType::EpLoad)
                && r.terminal == terminal
                && !known.contains(&r.atc)
        }) {
            if self.tree.get(claim_key(card_number, record.atc))?.is_none() {
                unclaimed.push(record);
            }
        }
        // Each is kept for the auditor (an item the backup did not have paid for it) unless a
        // suspect claims it below.
        for record in &unclaimed {
            let orphan = Orphan {
                card_number: card_number.to_owned(),
                atc: record.atc,
                amount_fen: record.amount,
                card_time: readable_time(&record_time(record)),
            };
            self.tree
                .insert(orphan_key(card_number, record.atc), json(&orphan)?)?;
        }
        self.tree
            .insert(checked_key(card_number), now().as_bytes())?;
        let Some(suspect) = self.suspect(card_number, funding)? else {
            self.store.durable_flush()?;
            return Ok(RestoredCheck::Clear);
        };
        let claimable = unclaimed
            .into_iter()
            .find(|r| r.amount == suspect.amount_fen);
        if let Some(record) = claimable {
            let claim = Claim {
                card_number: card_number.to_owned(),
                funding: funding.clone(),
                atc: record.atc,
                amount_fen: record.amount,
                card_time: readable_time(&record_time(record)),
                claimed_at: now(),
            };
            self.tree
                .insert(claim_key(card_number, record.atc), json(&claim)?)?;
            self.tree.remove(orphan_key(card_number, record.atc))?;
            self.tree.remove(suspect_key(card_number, funding))?;
            self.store.durable_flush()?;
            tracing::warn!(card = card_number, funding = %funding, atc = record.atc, amount_fen = record.amount, card_time = %claim.card_time, "restored mode: the card's log shows this item was loaded after the backup; it is not loaded again");
            return Ok(RestoredCheck::LoadedSinceBackup(claim));
        }
        let oldest = log.last().map(record_time);
        let reaches_back = log.len() < CARD_LOG_RECORDS_MIN
            || oldest
                .as_deref()
                .is_some_and(|t| t < mode.backup_card_time.as_str());
        if !reaches_back {
            self.store.durable_flush()?;
            return Ok(RestoredCheck::Unproven {
                card_number: card_number.to_owned(),
                funding: funding.clone(),
                backup_created_at: mode.backup_created_at,
                oldest_record: readable_time(&oldest.unwrap_or_default()),
            });
        }
        self.tree.remove(suspect_key(card_number, funding))?;
        self.store.durable_flush()?;
        tracing::info!(card = card_number, funding = %funding, "restored mode: the card's log shows no load of this item since the backup");
        Ok(RestoredCheck::Clear)
    }
}
