//! What support may see of a daemon: its status for `cardd support-bundle` (health, readers,
//! metrics, journal and audit statistics, open loads), and the masking that keeps card numbers
//! out of everything that leaves the machine.
//!
//! The status is built the same way from a running daemon (the control socket's `status`
//! request, [`status_of`]) and from a stopped one's data directory (the bundle opens the store
//! itself and calls the same pieces), so both bundles read alike. Nothing here holds a key, a
//! password hash, a session token or a full card number: open loads carry the card's last four
//! digits only ([`mask_card_number`]), and every text of a bundle goes through
//! [`redact_text`].

use cardd_api::money::Fen;
use cardd_api::readers::{CapabilitiesView, ReaderStatus};
use cardd_journal::{Journal, JournalStats, LoadTxn};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::AuditLog;
use crate::daemon::Daemon;

/// Most open loads a status lists (the statistics count them all).
pub const OPEN_LOADS_LISTED_MAX: usize = 1000;

/// Shortest run of digits [`redact_text`] takes for a card number (card numbers have 16 to 20).
pub const CARD_NUMBER_DIGITS_MIN: usize = 12;

/// Digits a masked card number keeps visible.
const CARD_NUMBER_DIGITS_SHOWN: usize = 4;

/// A card number with everything but its last four characters replaced by `*`
/// (`61011801000000000001` → `****************0001`); a short one is masked entirely.
pub fn mask_card_number(card_number: &str) -> String {
    let chars: Vec<char> = card_number.chars().collect();
    let hidden = if chars.len() > CARD_NUMBER_DIGITS_SHOWN {
        chars.len() - CARD_NUMBER_DIGITS_SHOWN
    } else {
        chars.len()
    };
    let mut out = "*".repeat(hidden);
    out.extend(&chars[hidden..]);
    out
}

/// `text` with every run of [`CARD_NUMBER_DIGITS_MIN`] or more ASCII digits masked to its last
/// four ([`mask_card_number`]): card numbers in logs, metrics or messages never leave whole.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= CARD_NUMBER_DIGITS_MIN {
            out.push_str(&mask_card_number(digits));
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    debug_assert_eq!(out.len(), text.len());
    out
}

/// A daemon's status as the support bundle shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The running daemon's process id; `None` when read from a stopped daemon's data.
    pub pid: Option<u32>,
    /// What `/health` answers, or `{"status":"stopped"}`.
    pub health: Value,
    /// The live readers; `None` when the daemon is stopped.
    pub readers: Option<Vec<ReaderView>>,
    /// The OpenMetrics text of `GET /metrics`; `None` when the daemon is stopped.
    pub metrics: Option<String>,
    pub journal: JournalSummary,
    pub audit: AuditSummary,
    /// The open loads (at most [`OPEN_LOADS_LISTED_MAX`]), card numbers masked.
    pub open_loads: Vec<OpenLoadView>,
}

/// A live reader: what `readers.list` shows, without the lease id (it lets its holder act on
/// the reader).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderView {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub capabilities: CapabilitiesView,
    pub card_present: bool,
    /// Hex ATR of the card, when known.
    pub atr: Option<String>,
    /// Who holds the reader, for what, and for how long still.
    pub lease: Option<Value>,
}

impl ReaderView {
    fn of(status: ReaderStatus) -> ReaderView {
        ReaderView {
            lease: status.lease.map(|l| {
                serde_json::json!({
                    "holder": l.holder,
                    "purpose": l.purpose,
                    "expires_in_ms": l.expires_in_ms,
                })
            }),
            id: status.id,
            name: status.name,
            driver: status.driver,
            capabilities: status.capabilities,
            card_present: status.card_present,
            atr: status.atr,
        }
    }
}

/// The journal's statistics, or why they could not be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalSummary {
    /// `None` when the journal could not be read (see `error`).
    pub stats: Option<JournalStats>,
    pub error: Option<String>,
}

/// The audit log's statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditSummary {
    /// Records in the chain (when it verified).
    pub records: Option<u64>,
    /// Sealed segment files.
    pub segments: Option<usize>,
    /// Whether the whole chain verified just now.
    pub chain_verified: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// When the last record was appended (RFC 3339 UTC).
    pub last_record_at: Option<String>,
}

/// An open load, card number masked to its last four digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLoadView {
    pub txn_id: String,
    /// `intent` or `needs_reconciliation`.
    pub state: String,
    /// Decimal yuan (`"20.00"`).
    pub amount: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub reader_id: String,
    /// `etc_record`, `group_order`, `test_mode`, or `unknown` for records older than funding.
    pub funding: String,
    /// `****************0001`
    pub card_number: String,
}

impl OpenLoadView {
    /// The view of `txn`.
    pub fn of(txn: &LoadTxn) -> OpenLoadView {
        let funding = match &txn.funding {
            Some(cardd_purse::Funding::EtcRecord { .. }) => "etc_record",
            Some(cardd_purse::Funding::GroupOrder { .. }) => "group_order",
            Some(cardd_purse::Funding::TestMode) => "test_mode",
            None => "unknown",
        };
        OpenLoadView {
            txn_id: txn.txn_id.clone(),
            state: txn.state.name().to_owned(),
            amount: Fen(i64::from(txn.amount_fen())).to_yuan_string(),
            created_at: txn.created_at.clone(),
            reader_id: txn.reader_id.clone(),
            funding: funding.to_owned(),
            card_number: mask_card_number(&txn.card_number),
        }
    }
}

/// The journal's statistics and open loads; `journal` is `None` when it failed to open, with
/// `failure` saying why.
pub fn journal_status(
    journal: Option<&Journal>,
    failure: Option<&str>,
) -> (JournalSummary, Vec<OpenLoadView>) {
    let Some(journal) = journal else {
        let error = failure.unwrap_or("the journal is not open").to_owned();
        return (
            JournalSummary {
                stats: None,
                error: Some(error),
            },
            Vec::new(),
        );
    };
    let summary = match journal.stats() {
        Ok(stats) => JournalSummary {
            stats: Some(stats),
            error: None,
        },
        Err(e) => JournalSummary {
            stats: None,
            error: Some(e.to_string()),
        },
    };
    let open = match journal.list_open() {
        Ok(open) => open
            .iter()
            .take(OPEN_LOADS_LISTED_MAX)
            .map(OpenLoadView::of)
            .collect(),
        Err(_) => Vec::new(),
    };
    (summary, open)
}

/// The audit log's statistics, verifying the whole chain.
pub fn audit_status(audit: &AuditLog) -> AuditSummary {
    let segments = audit.seals().ok().map(|s| s.len());
    match audit.verify_chain() {
        Ok(records) => {
            let last = match records.checked_sub(1) {
                Some(before_last) => audit.list(Some(before_last), 1).ok(),
                None => None,
            };
            AuditSummary {
                records: Some(records),
                segments,
                chain_verified: true,
                error: None,
                last_record_at: last.and_then(|l| l.into_iter().next()).map(|r| r.at),
            }
        }
        Err(e) => AuditSummary {
            records: None,
            segments,
            chain_verified: false,
            error: Some(e.to_string()),
            last_record_at: None,
        },
    }
}

/// The status of a running daemon (blocking: it reads the whole journal and audit chain).
pub fn status_of(daemon: &Daemon) -> Status {
    let (journal, open_loads) = journal_status(
        daemon.journal.as_deref(),
        Some("the journal failed verification at start-up: the daemon is failed closed"),
    );
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: Some(std::process::id()),
        health: daemon.health(),
        readers: Some(
            daemon
                .readers
                .list()
                .into_iter()
                .map(ReaderView::of)
                .collect(),
        ),
        metrics: Some(daemon.metrics.render()),
        journal,
        audit: audit_status(&daemon.audit),
        open_loads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_keep_their_last_four_digits_only() {
        assert_eq!(
            mask_card_number("61011801000000000001"),
            "****************0001"
        );
        assert_eq!(mask_card_number("1234"), "****");
        assert_eq!(mask_card_number(""), "");
        assert_eq!(
            redact_text("card=61011801000000000001, txn 20261207 at 12:00; 123456789012 ok"),
            "card=****************0001, txn 20261207 at 12:00; ********9012 ok"
        );
        assert_eq!(
            redact_text("卡号6101180100000000000 1"),
            "卡号***************0000 1"
        );
        assert_eq!(redact_text("12345678901"), "12345678901", "11 digits stay");
    }
}
