//! The journal's reconciliation methods: the loads nobody could decide, and a person's verdict.
//!
//! An interrupted load is decided from the card (`cardd_journal::recover_card`). When the card
//! cannot prove either outcome (its online counter moved on, its proof is gone), the journal
//! keeps the load as `needs_reconciliation` and the card gets no new load until a person
//! decides. `journal.open` lists what waits; `journal.resolve` records the verdict of a
//! supervisor or auditor, with a reason, and the business records that hang on the load (ETC
//! recharge records, group orders) follow it at once. A load still in `intent` is not a
//! person's call: presenting its card decides it.

use cardd_api::{ErrorCode, Fen, Role};
use cardd_journal::{LoadTxn, Resolution, TxnState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::ApiError;
use crate::etc::{journal, journal_error};
use crate::rpc::{audit_as_json, Access, AuditDetail, Methods, NoParams};
use serde_json::Value;

/// Who sees and decides loads awaiting reconciliation.
const DECIDERS: Access = Access::Roles(&[Role::Supervisor, Role::Auditor, Role::Admin]);
/// Who may record a verdict.
const RESOLVERS: Access = Access::Roles(&[Role::Supervisor, Role::Auditor]);

/// An undecided load as clients see it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OpenLoad {
    pub txn_id: String,
    pub card_number: String,
    pub reader_id: String,
    /// `intent` (decided when the card is presented) or `needs_reconciliation` (a person decides).
    pub state: String,
    /// Why nothing could be proven, for `needs_reconciliation`.
    pub reason: Option<String>,
    /// Amount, yuan.
    pub amount: String,
    /// The card's balance and online counter before the load.
    pub balance_before: String,
    pub online_atc_before: u16,
    pub created_at: String,
}

impl From<&LoadTxn> for OpenLoad {
    fn from(t: &LoadTxn) -> Self {
        let (state, reason) = match &t.state {
            TxnState::NeedsReconciliation { reason } => {
                ("needs_reconciliation", Some(reason.clone()))
            }
            _ => ("intent", None),
        };
        OpenLoad {
            txn_id: t.txn_id.clone(),
            card_number: t.card_number.clone(),
            reader_id: t.reader_id.clone(),
            state: state.into(),
            reason,
            amount: Fen(i64::from(t.amount_fen())).to_yuan_string(),
            balance_before: Fen(i64::from(t.session.init.old_balance)).to_yuan_string(),
            online_atc_before: t.session.init.online_atc,
            created_at: t.created_at.clone(),
        }
    }
}

/// `journal.resolve`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveParams {
    pub txn_id: String,
    /// The person's verdict: the money is on the card (`true`) or not (`false`).
    pub landed: bool,
    /// Why (what was compared: the card's balance, its log, the customer's receipt); required.
    pub reason: String,
}
audit_as_json!(ResolveParams, txn_id);

/// What `journal.resolve` changed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Resolved {
    pub txn_id: String,
    /// `committed` or `not_applied`.
    pub state: String,
    /// ETC recharge records that followed the verdict.
    pub records_settled: usize,
    /// Group orders that followed the verdict.
    pub orders_settled: usize,
}

/// Declares the journal's methods.
pub fn add_methods(m: &mut Methods) {
    m.add(
        "journal.open",
        "Loads not yet decided: `intent` (decided when the card is presented) and `needs_reconciliation` (a person decides with journal.resolve).",
        DECIDERS,
        false,
        |d, _, _: NoParams| async move {
            let journal = journal(&d)?;
            let open = journal.list_open().map_err(journal_error)?;
            Ok::<Vec<OpenLoad>, ApiError>(open.iter().map(OpenLoad::from).collect())
        },
    );
    m.add(
        "journal.resolve",
        "Record a person's verdict on a load awaiting reconciliation (landed or not, with a reason); the ETC records and group orders of that load follow it.",
        RESOLVERS,
        true,
        |d, c, p: ResolveParams| async move {
            let operator = c.session()?.username.clone();
            let reason = p.reason.trim().to_owned();
            if reason.is_empty() {
                return Err(ApiError::invalid_params("核对结论必须填写原因"));
            }
            let journal = journal(&d)?;
            let txn = journal
                .get(&p.txn_id)
                .map_err(journal_error)?
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::HostNotFound, format!("未找到圈存交易 {}", p.txn_id))
                })?;
            match txn.state {
                TxnState::NeedsReconciliation { .. } => {}
                TxnState::Intent => {
                    return Err(ApiError::new(
                        ErrorCode::CardEvidenceRequired,
                        format!(
                            "圈存交易 {} 尚未确认：请将卡号 {} 的卡片放到读卡器上，系统会根据卡片确认结果，不需要人工判断",
                            p.txn_id, txn.card_number
                        ),
                    ))
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::RecordStateConflict,
                        format!("圈存交易 {} 已有结论，不能再修改", p.txn_id),
                    ))
                }
            }
            // With the card on a reader, the card bounds the verdict: one it contradicts is
            // refused.
            if let Some(shown) = card_on_a_reader(&d, &txn, &operator).await {
                let contradicts = matches!(
                    (shown, p.landed),
                    (cardd_purse::LoadOutcome::Landed, false)
                        | (cardd_purse::LoadOutcome::NotLanded, true)
                );
                if contradicts {
                    let what = if p.landed { "已到卡" } else { "未到卡" };
                    let card = match shown {
                        cardd_purse::LoadOutcome::Landed => "该笔圈存已写入卡内",
                        _ => "该笔圈存未写入卡内",
                    };
                    return Err(ApiError::new(
                        ErrorCode::EvidenceConflict,
                        format!(
                            "不能判定为{what}：读卡器上的卡片 {} 显示{card}；请按卡片结果办理",
                            txn.card_number
                        ),
                    ));
                }
            }
            let resolution = Resolution::Manual {
                operator,
                reason,
            };
            let state = if p.landed {
                TxnState::Committed {
                    tac: String::new(),
                    resolution,
                }
            } else {
                TxnState::NotApplied { resolution }
            };
            journal.resolve(&p.txn_id, state).map_err(journal_error)?;
            let records_settled = crate::etc::settle_card(&d, &txn.card_number).len();
            let orders_settled = crate::group_rpc::reconcile(&d)?;
            Ok::<Resolved, ApiError>(Resolved {
                txn_id: p.txn_id,
                state: if p.landed { "committed" } else { "not_applied" }.into(),
                records_settled,
                orders_settled,
            })
        },
    );
}

/// What a card on any reader shows about `txn` (read only), when that card is on one and can
/// be read.
async fn card_on_a_reader(
    d: &std::sync::Arc<crate::server::Daemon>,
    txn: &LoadTxn,
    operator: &str,
) -> Option<cardd_purse::LoadOutcome> {
    let holder = crate::readers::Holder {
        operator: operator.to_owned(),
        session: "journal.resolve".into(),
    };
    for reader in d.readers.list().into_iter().filter(|r| r.card_present) {
        let (job_d, job_txn) = (d.clone(), txn.clone());
        let shown = d
            .readers
            .run(&reader.id, &holder, move |r| {
                let mut purse = cardd_purse::Purse::new(r);
                cardd_journal::card_view_of(
                    &mut purse,
                    job_d.sam.as_ref(),
                    &job_txn,
                    &job_d.config.etc_pin,
                    cardd_crypto::Algorithm::Tdes,
                )
                .ok()
                .flatten()
            })
            .await
            .ok()
            .flatten();
        if shown.is_some() {
            return shown;
        }
    }
    None
}
