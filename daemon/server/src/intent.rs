//! Exactly-once per customer intent, as the server asks it: the journal decides
//! ([`cardd_journal::intent`]), this names the record or order of either domain.
//!
//! The journal is exactly-once per transaction id. A customer's intent (an ETC recharge record,
//! a group order, a batch item) may be tried under several transaction ids, by a teller who
//! retries with a new idempotency key. So before any new credit, the card itself is checked:
//! while any load to it is open in the journal (its outcome unknown, or waiting for a person),
//! every new recharge or 圈存 to that card, for every record and every group, is refused with
//! a message naming the pending order or record and what to do.

use cardd_group::GroupHost;
use cardd_journal::intent::card_blocked;
use cardd_journal::{IntentBlock, IntentOwners, Journal};
use cardd_store::IssuerHost;

use crate::errors::{journal_error, ApiError};

/// The owners of both domains' loads, as [`cardd_journal::intent::card_blocked`] asks for them.
#[derive(Debug)]
struct Owners<'a> {
    host: Option<&'a dyn IssuerHost>,
    group: Option<&'a dyn GroupHost>,
}

impl Owners<'_> {
    fn find(&self, txn_id: &str) -> Option<String> {
        if let Some(host) = self.host {
            if let Ok(Some(record)) = host.record_for_txn(txn_id) {
                return Some(format!("充值记录 {}", record.record_id));
            }
        }
        self.group
            .and_then(|group| cardd_group::owners::owner_of(group, txn_id))
    }
}

/// The ETC recharge records behind journal transactions, as the journal's check names them
/// ("充值记录 {record_id}"), for the domain services that take the owners of every domain.
#[derive(Debug)]
pub struct EtcOwners(pub std::sync::Arc<dyn IssuerHost>);

impl IntentOwners for EtcOwners {
    fn owner_of(&self, txn_id: &str) -> Option<String> {
        Owners {
            host: Some(self.0.as_ref()),
            group: None,
        }
        .find(txn_id)
    }
}

/// The refusal of a card that contradicts the two-person verdict on one of its loads.
pub fn contradicted(card_number: &str, txn_id: &str) -> ApiError {
    blocked(IntentBlock::Contradicted {
        card_number: card_number.to_owned(),
        txn_id: txn_id.to_owned(),
    })
}

fn blocked(b: IntentBlock) -> ApiError {
    ApiError::new(b.code(), b.to_string())
}

/// Refuses a new credit to `card_number` while a load to it is unsettled, or while the card
/// contradicts a lost-card verdict on one of its loads.
pub fn refuse_if_card_blocked(
    journal: &Journal,
    host: Option<&dyn IssuerHost>,
    group: Option<&dyn GroupHost>,
    card_number: &str,
) -> Result<(), ApiError> {
    let owners = Owners { host, group };
    let owners = OwnersRef(&owners);
    match card_blocked(journal, &owners, card_number).map_err(journal_error)? {
        None => Ok(()),
        Some(b) => Err(blocked(b)),
    }
}

/// [`Owners`] borrowed for the journal's check.
struct OwnersRef<'a, 'b>(&'a Owners<'b>);

impl std::fmt::Debug for OwnersRef<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owners")
    }
}

// The journal's trait asks for `Send + Sync`; the borrowed stores are.
impl IntentOwners for OwnersRef<'_, '_> {
    fn owner_of(&self, txn_id: &str) -> Option<String> {
        self.0.find(txn_id)
    }
}
