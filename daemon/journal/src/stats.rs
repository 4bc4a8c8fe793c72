//! Journal statistics for support (`cardd support-bundle`): how many load transactions are in
//! each state, how many are open and since when the oldest open one waits for its card.
//!
//! Read-only: one pass over the records, each verified like every other read; a record that
//! fails its checksum is reported as the error, never skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::{decode, Journal, JournalError};

/// What [`Journal::stats`] counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStats {
    /// Every load transaction.
    pub transactions: u64,
    /// Transactions by state name (`intent`, `committed`, `not_applied`,
    /// `needs_reconciliation`).
    pub by_state: BTreeMap<String, u64>,
    /// Open transactions (an intent, or one needing reconciliation): each blocks its card.
    pub open: u64,
    /// When the oldest open transaction was created (RFC 3339 UTC), if any is open.
    pub oldest_open_at: Option<String>,
}

impl Journal {
    /// Counts the transactions by state, verifying each record on the way.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        let mut stats = JournalStats::default();
        for item in self.tree.scan_prefix(b"txn/") {
            let (key, value) = item?;
            let txn = decode(&key, &value)?;
            stats.transactions += 1;
            *stats
                .by_state
                .entry(txn.state.name().to_owned())
                .or_default() += 1;
            if txn.state.is_open() {
                stats.open += 1;
                // RFC 3339 UTC times of one format order as text.
                let older = match &stats.oldest_open_at {
                    Some(oldest) => txn.created_at < *oldest,
                    None => true,
                };
                if older {
                    stats.oldest_open_at = Some(txn.created_at.clone());
                }
            }
        }
        debug_assert_eq!(stats.by_state.values().sum::<u64>(), stats.transactions);
        Ok(stats)
    }
}
