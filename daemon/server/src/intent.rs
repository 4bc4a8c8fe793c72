//! Exactly-once per customer intent: a card whose load is not settled takes no new credit.
//!
//! The journal is exactly-once per transaction id. A customer's intent (an ETC recharge record,
//! a group order, a batch item) may be tried under several transaction ids, by a teller who
//! retries with a new idempotency key. So before any new credit, the card itself is checked:
//! while any load to it is open in the journal (its outcome unknown, or waiting for a person),
//! every new recharge or 圈存 to that card, for every record and every group, is refused with
//! a message naming the pending order or record and what to do.

use cardd_api::{ErrorCode, Fen};
use cardd_store::group::GroupHost;
use cardd_store::group_model::OrderStatus;
use cardd_store::IssuerHost;
use cardd_journal::Journal;

use crate::errors::{journal_error, ApiError};

/// What to tell an operator about a pending load: the business record it belongs to.
fn owner_of(host: Option<&dyn IssuerHost>, group: Option<&dyn GroupHost>, txn_id: &str) -> String {
    if let Some(host) = host {
        if let Ok(Some(record)) = host.record_for_txn(txn_id) {
            return format!("充值记录 {}", record.record_id);
        }
    }
    if let Some(group) = group {
        for status in [OrderStatus::Pending, OrderStatus::Reserved] {
            if let Ok(orders) = group.orders_in(status) {
                if let Some(order) = orders.iter().find(|o| o.txn_id == txn_id) {
                    return format!("集团充值订单 {}", order.order_id);
                }
            }
        }
    }
    format!("圈存交易 {txn_id}")
}

/// The refusal of a card that contradicts the two-person verdict on one of its loads.
pub fn contradicted(card_number: &str, txn_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::CardIntentPending,
        format!(
            "卡号 {card_number} 的卡片与挂失核定结论不符（圈存交易 {txn_id}）：该卡暂停圈存和充值，请联系审核人员核对处理"
        ),
    )
}

/// Refuses a new credit to `card_number` while a load to it is unsettled, or while the card
/// contradicts a lost-card verdict on one of its loads.
pub fn refuse_if_card_blocked(
    journal: &Journal,
    host: Option<&dyn IssuerHost>,
    group: Option<&dyn GroupHost>,
    card_number: &str,
) -> Result<(), ApiError> {
    if let Some(v) = journal
        .contradicted_for_card(card_number)
        .map_err(journal_error)?
    {
        return Err(contradicted(&v.card_number, &v.txn_id));
    }
    let open = journal.open_for_card(card_number).map_err(journal_error)?;
    match open {
        None => Ok(()),
        Some(txn) => Err(ApiError::new(
            ErrorCode::CardIntentPending,
            format!(
                "卡号 {card_number} 有一笔结果待确认的充值（{}，{} 元）：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
                owner_of(host, group, &txn.txn_id),
                Fen(i64::from(txn.amount_fen())).to_yuan_string()
            ),
        )),
    }
}
