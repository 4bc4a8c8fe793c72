//! The group orders behind journal transactions, as the journal's exactly-once-per-intent check
//! names them ([`cardd_journal::intent::card_blocked`]).

use std::sync::Arc;

use cardd_journal::IntentOwners;

use crate::host::GroupHost;
use crate::model::OrderStatus;

/// Names the unsettled group order (充值中 or 结果待确认) whose load used a transaction:
/// "集团充值订单 {order_id}".
#[derive(Debug, Clone)]
pub struct GroupOwners(pub Arc<dyn GroupHost>);

impl IntentOwners for GroupOwners {
    fn owner_of(&self, txn_id: &str) -> Option<String> {
        owner_of(self.0.as_ref(), txn_id)
    }
}

/// [`GroupOwners::owner_of`] on a borrowed store.
pub fn owner_of(host: &dyn GroupHost, txn_id: &str) -> Option<String> {
    for status in [OrderStatus::Pending, OrderStatus::Reserved] {
        if let Ok(orders) = host.orders_in(status) {
            if let Some(order) = orders.iter().find(|o| o.txn_id == txn_id) {
                return Some(format!("集团充值订单 {}", order.order_id));
            }
        }
    }
    None
}
