//! Exactly-once per customer intent, as the server asks it: the journal decides
//! ([`cardd_journal::intent`]), this names the record or order of either domain.
//!
//! The journal is exactly-once per transaction id. A customer's intent (an ETC recharge record,
//! a group order, a batch item) may be tried under several transaction ids, by a teller who
//! retries with a new idempotency key. So before any new credit, the card itself is checked:
//! while any load to it is open in the journal (its outcome unknown, or waiting for a person),
//! every new recharge or 圈存 to that card, for every record and every group, is refused with
//! a message naming the pending order or record and what to do.

use std::sync::Arc;

use cardd_etc::IssuerHost;
use cardd_journal::intent::card_blocked;
use cardd_journal::{IntentBlock, IntentOwners, Journal};
use cardd_store::group::GroupHost;
use cardd_store::group_model::OrderStatus;

use crate::errors::{journal_error, ApiError};
use crate::server::Daemon;

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
        if let Some(group) = self.group {
            for status in [OrderStatus::Pending, OrderStatus::Reserved] {
                if let Ok(orders) = group.orders_in(status) {
                    if let Some(order) = orders.iter().find(|o| o.txn_id == txn_id) {
                        return Some(format!("集团充值订单 {}", order.order_id));
                    }
                }
            }
        }
        None
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

/// The group domain's owners of loads, owned (for the ETC service's check).
#[derive(Debug)]
pub(crate) struct GroupOwners(pub Arc<dyn GroupHost>);

impl IntentOwners for GroupOwners {
    fn owner_of(&self, txn_id: &str) -> Option<String> {
        Owners {
            host: None,
            group: Some(self.0.as_ref()),
        }
        .find(txn_id)
    }
}

/// [`refuse_if_card_blocked`] with the daemon's journal and both domains' stores.
pub(crate) fn refuse_if_card_blocked_in(
    daemon: &Daemon,
    card_number: &str,
) -> Result<(), ApiError> {
    refuse_if_card_blocked(
        daemon.verified_journal()?,
        daemon.host.as_deref(),
        daemon.group.as_ref().map(|g| g.host.as_ref()),
        card_number,
    )
}
