//! Exactly-once per customer intent: a card whose load is not settled takes no new credit.
//!
//! The journal is exactly-once per transaction id. A customer's intent (an ETC recharge record,
//! a group order, a batch item) may be tried under several transaction ids, by a teller who
//! retries with a new idempotency key. So before any new credit, the card itself is checked:
//! while any load to it is open in the journal (its outcome unknown, or waiting for a person),
//! every new recharge or 圈存 to that card, for every record and every group, is refused with
//! a message naming the pending order or record and what to do ([`card_blocked`]).
//!
//! The journal does not know whose money a transaction carries: each domain that starts loads
//! names its own ([`IntentOwners`]), and the composition root hands every domain service the
//! owners of all of them.

use std::fmt;

use cardd_api::{ErrorCode, Fen};

use crate::{Journal, JournalError};

/// Names the business record a journal transaction loads for ("充值记录 R…", "集团充值订单 G…").
pub trait IntentOwners: Send + Sync + fmt::Debug {
    /// The record or order whose load used transaction `txn_id`, as an operator reads it; `None`
    /// when it is not one of this domain's.
    fn owner_of(&self, txn_id: &str) -> Option<String>;
}

/// Where a site learns of its cards' loads that other sites began and nobody has settled (a
/// fleet's issuer host): a card pulled mid-load at one site is settled from the card at the
/// next site it is presented at, once that load is an open intent in that site's journal
/// ([`Journal::adopt`]).
pub trait ForeignIntents: Send + Sync + fmt::Debug {
    /// The card's loads begun elsewhere whose outcome is unknown, as intents (the session with
    /// the card's INITIALIZE answer, the terms and the MAC2 it was given; no key).
    fn open_intents(&self, card_number: &str) -> Result<Vec<crate::LoadTxn>, String>;
}

/// Adopts the card's foreign open loads into `journal`; returns how many became open here. A
/// failure to ask is logged and adopts nothing (the card is then settled where it was loaded).
pub fn adopt_foreign(journal: &Journal, foreign: &dyn ForeignIntents, card_number: &str) -> usize {
    let intents = match foreign.open_intents(card_number) {
        Ok(intents) => intents,
        Err(e) => {
            tracing::warn!(card = card_number, error = %e, "could not ask for the card's loads begun at other sites");
            return 0;
        }
    };
    let mut adopted = 0;
    for txn in intents.iter().filter(|t| t.card_number == card_number) {
        match journal.adopt(txn) {
            Ok(true) => {
                tracing::info!(card = card_number, txn = %txn.txn_id, from = %txn.reader_id, "adopted a load begun at another site, to settle it from the card");
                adopted += 1;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(card = card_number, txn = %txn.txn_id, error = %e, "could not adopt a load begun at another site");
            }
        }
    }
    adopted
}

/// Several domains' owners, asked in order.
impl IntentOwners for Vec<std::sync::Arc<dyn IntentOwners>> {
    fn owner_of(&self, txn_id: &str) -> Option<String> {
        self.iter().find_map(|o| o.owner_of(txn_id))
    }
}

/// Why a card takes no new credit now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentBlock {
    /// The card contradicted the two-person lost-card verdict on one of its loads.
    Contradicted { card_number: String, txn_id: String },
    /// A load to the card is not settled.
    Pending {
        card_number: String,
        /// The record or order it belongs to, as an operator reads it.
        owner: String,
        amount_fen: i64,
    },
}

impl IntentBlock {
    /// The wire code of the refusal.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::CardIntentPending
    }
}

impl fmt::Display for IntentBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntentBlock::Contradicted { card_number, txn_id } => write!(
                f,
                "卡号 {card_number} 的卡片与挂失核定结论不符（圈存交易 {txn_id}）：该卡暂停圈存和充值，请联系审核人员核对处理"
            ),
            IntentBlock::Pending {
                card_number,
                owner,
                amount_fen,
            } => write!(
                f,
                "卡号 {card_number} 有一笔结果待确认的充值（{owner}，{} 元）：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
                Fen(*amount_fen).to_yuan_string()
            ),
        }
    }
}

impl std::error::Error for IntentBlock {}

/// Whether `card_number` must refuse a new credit now: while a load to it is unsettled, or
/// while the card contradicts a lost-card verdict on one of its loads.
pub fn card_blocked(
    journal: &Journal,
    owners: &dyn IntentOwners,
    card_number: &str,
) -> Result<Option<IntentBlock>, JournalError> {
    if let Some(v) = journal.contradicted_for_card(card_number)? {
        return Ok(Some(IntentBlock::Contradicted {
            card_number: v.card_number,
            txn_id: v.txn_id,
        }));
    }
    Ok(journal
        .open_for_card(card_number)?
        .map(|txn| IntentBlock::Pending {
            card_number: card_number.to_owned(),
            owner: owners
                .owner_of(&txn.txn_id)
                .unwrap_or_else(|| format!("圈存交易 {}", txn.txn_id)),
            amount_fen: i64::from(txn.amount_fen()),
        }))
}
