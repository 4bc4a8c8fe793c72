//! The ETC domain's owners of loads, as the journal's exactly-once-per-intent check asks for
//! them ([`cardd_journal::intent::card_blocked`]).

use std::sync::Arc;

use cardd_journal::IntentOwners;

use crate::IssuerHost;

/// Names the recharge record whose load used a journal transaction (`充值记录 <id>`).
#[derive(Debug, Clone)]
pub struct RecordOwners(pub Arc<dyn IssuerHost>);

impl IntentOwners for RecordOwners {
    fn owner_of(&self, txn_id: &str) -> Option<String> {
        match self.0.record_for_txn(txn_id) {
            Ok(Some(record)) => Some(format!("充值记录 {}", record.record_id)),
            _ => None,
        }
    }
}
