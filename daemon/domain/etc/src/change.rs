//! A recharge record's state change, as every store applies it: the request checked
//! ([`ChangeRequest`]), then [`apply`]: the transition table, the refusals and what each action
//! does to the record, given what the store found around it ([`Surroundings`]).
//!
//! The stores (`cardd_store::EmbeddedHost` on sled, `cardd_store_pg::PgHost` on PostgreSQL) only
//! read what [`apply`] needs inside their transaction and persist what it decided, so the rules
//! of a change exist once.

use time::OffsetDateTime;

use crate::error::HostError;
use crate::model::{
    RechargeRecord, RecordAction, RecordChange, RecordStatus, LOAD_TXN_ID_CHARS_MAX,
    OPERATOR_CHARS_MAX, REASON_CHARS_MAX, RECORD_ID_CHARS_MAX, RECORD_LOAD_ATTEMPTS_MAX,
};
use crate::validate;

/// A state change asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub action: RecordAction,
    pub operator: String,
    pub reason: Option<String>,
    /// [`RecordAction::BeginLoad`]: the journal transaction of the load. Any other action:
    /// when set, the load this change settles; refused ([`HostError::NotThisLoad`]) unless the
    /// record's current load is that one ([`ChangeRequest::for_load`]).
    pub txn_id: Option<String>,
    /// [`RecordAction::FinishLoad`]: the card's balance before and after, fen.
    pub balances: Option<(i64, i64)>,
    /// [`RecordAction::ResolveReconciliation`]: whether the money is on the card.
    pub loaded: bool,
}

impl ChangeRequest {
    /// 未圈存 → 圈存中 under `txn_id`.
    pub fn begin_load(operator: &str, txn_id: &str) -> Result<ChangeRequest, HostError> {
        Ok(ChangeRequest {
            action: RecordAction::BeginLoad,
            operator: operator_name(operator)?,
            reason: None,
            txn_id: Some(validate::txn_id(txn_id, LOAD_TXN_ID_CHARS_MAX)?),
            balances: None,
            loaded: false,
        })
    }

    /// 圈存中 → 已圈存 with the card's balances.
    pub fn finish_load(
        operator: &str,
        balance_before_fen: i64,
        balance_after_fen: i64,
    ) -> Result<ChangeRequest, HostError> {
        Ok(ChangeRequest {
            action: RecordAction::FinishLoad,
            operator: operator_name(operator)?,
            reason: None,
            txn_id: None,
            balances: Some((
                validate::balance(balance_before_fen)?,
                validate::balance(balance_after_fen)?,
            )),
            loaded: true,
        })
    }

    /// This change only if the record's current load is `txn_id` (a settlement that must not
    /// land on another load of the same record, made meanwhile by another site).
    pub fn for_load(mut self, txn_id: &str) -> Result<ChangeRequest, HostError> {
        self.txn_id = Some(validate::txn_id(txn_id, LOAD_TXN_ID_CHARS_MAX)?);
        Ok(self)
    }

    /// A change a person (or the daemon, from the card's evidence) makes with a reason.
    pub fn with_reason(
        action: RecordAction,
        operator: &str,
        reason: &str,
        loaded: bool,
    ) -> Result<ChangeRequest, HostError> {
        Ok(ChangeRequest {
            action,
            operator: operator_name(operator)?,
            reason: Some(validate::text("原因", reason, REASON_CHARS_MAX)?),
            txn_id: None,
            balances: None,
            loaded,
        })
    }
}

/// An operator's name as records keep it.
pub fn operator_name(operator: &str) -> Result<String, HostError> {
    validate::text("操作员", operator, OPERATOR_CHARS_MAX)
}

/// A record id as given, bounded (ids are not otherwise validated: an unknown id is simply not
/// found).
pub fn record_id(record_id: &str) -> Result<&str, HostError> {
    if record_id.is_empty() || record_id.chars().count() > RECORD_ID_CHARS_MAX {
        return Err(HostError::InvalidField {
            field: "充值记录编号",
            reason: format!("应为 1 到 {RECORD_ID_CHARS_MAX} 个字符"),
        });
    }
    Ok(record_id)
}

/// What a store found around a [`RecordAction::BeginLoad`] (nothing for other actions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Surroundings {
    /// The record that owns the request's transaction id, if any.
    pub txn_owner: Option<String>,
    /// Another record of the card that is open (圈存中 or 待核对), with its status.
    pub other_open: Option<(String, RecordStatus)>,
}

/// Whether a store must look around before applying `req` to a record in `current`: only a
/// load that may begin needs its transaction's owner and the card's other open records.
pub fn needs_surroundings(req: &ChangeRequest, current: RecordStatus) -> bool {
    req.action == RecordAction::BeginLoad && req.action.next_status(current, req.loaded).is_some()
}

/// Whether `req` is already the record's state, so that the store changes nothing and
/// answers the record as it is: the same load begun again under its own transaction
/// (圈存中 under `req`'s transaction), or the same load finished again with the same balances
/// (已圈存 with them). A retry after a lost answer, or the host and a site both booking one
/// load, is so answered rather than refused.
pub fn already_done(record: &RechargeRecord, req: &ChangeRequest) -> bool {
    match req.action {
        RecordAction::BeginLoad => {
            record.status == RecordStatus::Loading
                && req.txn_id.is_some()
                && record.load_txn_id == req.txn_id
        }
        RecordAction::FinishLoad => {
            record.status == RecordStatus::Loaded
                && req.balances.is_some()
                && (record.balance_before_fen, record.balance_after_fen)
                    == (req.balances.map(|b| b.0), req.balances.map(|b| b.1))
        }
        _ => false,
    }
}

/// What [`apply`] decided, for the store to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The history entry of the change.
    pub change: RecordChange,
    /// A transaction id the record did not have before (a new load attempt).
    pub new_txn_id: Option<String>,
}

/// Applies `req` to `record` at `at`: refuses what the transition table or the surroundings
/// forbid, otherwise changes the record's fields and status (not its history: the store
/// appends [`Applied::change`] and keeps its bound).
pub fn apply(
    record: &mut RechargeRecord,
    req: &ChangeRequest,
    at: OffsetDateTime,
    around: &Surroundings,
) -> Result<Applied, HostError> {
    let from = record.status;
    if req.action != RecordAction::BeginLoad {
        if let Some(txn_id) = &req.txn_id {
            if record.load_txn_id.as_ref() != Some(txn_id) {
                return Err(HostError::NotThisLoad {
                    record_id: record.record_id.clone(),
                    txn_id: txn_id.clone(),
                });
            }
        }
    }
    let Some(to) = req.action.next_status(from, req.loaded) else {
        return Err(HostError::BadTransition {
            record_id: record.record_id.clone(),
            current: from,
            action: req.action,
        });
    };
    let mut change = RecordChange {
        at,
        operator: req.operator.clone(),
        action: req.action,
        from: Some(from),
        to,
        reason: req.reason.clone(),
        txn_id: record.load_txn_id.clone(),
        balance_before_fen: None,
        balance_after_fen: None,
    };
    let mut new_txn_id = None;
    match req.action {
        RecordAction::BeginLoad => {
            let Some(txn_id) = req.txn_id.clone() else {
                return Err(HostError::InvalidField {
                    field: "圈存交易号",
                    reason: "不能为空".into(),
                });
            };
            if let Some(owner) = &around.txn_owner {
                if owner != &record.record_id {
                    return Err(HostError::TxnIdInUse {
                        txn_id,
                        other_record_id: owner.clone(),
                    });
                }
            }
            if let Some((other, status)) = &around.other_open {
                return Err(HostError::CardBusy {
                    card_number: record.card_number.clone(),
                    other_record_id: other.clone(),
                    status: status.label(),
                });
            }
            if !record.txn_ids.contains(&txn_id) {
                if record.txn_ids.len() >= RECORD_LOAD_ATTEMPTS_MAX {
                    return Err(HostError::LoadAttemptsExhausted {
                        record_id: record.record_id.clone(),
                        attempts: record.txn_ids.len(),
                    });
                }
                record.txn_ids.push(txn_id.clone());
                new_txn_id = Some(txn_id.clone());
            }
            record.load_txn_id = Some(txn_id.clone());
            change.txn_id = Some(txn_id);
        }
        RecordAction::FinishLoad => {
            let Some((before, after)) = req.balances else {
                return Err(HostError::InvalidField {
                    field: "圈存前后的金额",
                    reason: "不能为空".into(),
                });
            };
            if before.checked_add(record.amount_fen) != Some(after) {
                return Err(HostError::BalanceMismatch {
                    record_id: record.record_id.clone(),
                    before_fen: before,
                    amount_fen: record.amount_fen,
                    after_fen: after,
                });
            }
            record.balance_before_fen = Some(before);
            record.balance_after_fen = Some(after);
            record.loaded_at = Some(at);
            change.balance_before_fen = Some(before);
            change.balance_after_fen = Some(after);
        }
        RecordAction::ResolveReconciliation if to == RecordStatus::Loaded => {
            record.loaded_at.get_or_insert(at);
        }
        RecordAction::AbortLoad
        | RecordAction::MarkNotLoaded
        | RecordAction::ResolveReconciliation => {
            // Back to 未圈存: the next load is a new attempt with its own transaction and
            // balances; the old ones stay in the history.
            change.balance_before_fen = record.balance_before_fen.take();
            change.balance_after_fen = record.balance_after_fen.take();
            record.load_txn_id = None;
            record.loaded_at = None;
        }
        RecordAction::FlagReconciliation | RecordAction::Recharge => {}
    }
    record.status = to;
    Ok(Applied { change, new_txn_id })
}
