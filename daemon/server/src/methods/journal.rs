//! The journal's reconciliation methods: the loads nobody could decide, and a person's verdict.
//!
//! An interrupted load is decided from the card (`cardd_journal::recover_card`). When the card
//! cannot prove either outcome (its online counter moved on, its proof is gone), the journal
//! keeps the load as `needs_reconciliation` and the card gets no new load until a person
//! decides. `journal.open` lists what waits; `journal.resolve` records the verdict of a
//! supervisor or auditor, with a reason, and the business records that hang on the load (ETC
//! recharge records, group orders) follow it at once. A load still in `intent` is not a
//! person's call: presenting its card decides it.
//!
//! A card that will not come back (lost, broken, PIN-blocked) has its own way out
//! (`cardd_journal::lost`): after `[cards] lost_card_wait_hours`, a supervisor proposes a verdict
//! (`journal.propose_lost_card`) and an auditor, another person, confirms it
//! (`journal.confirm_lost_card`); the card goes on a watch list and is checked against the
//! verdict before anything else if it is ever presented again. A card that contradicts the
//! verdict takes no load until an auditor clears it (`journal.clear_watch`).

use cardd_api::{ErrorCode, Fen, Role};
use cardd_journal::{LoadTxn, LostCardError, LostCardVerdict, Resolution, TxnState, WatchCheck};

use crate::daemon::Daemon;
use crate::errors::journal_error;
use crate::errors::ApiError;
use crate::rpc::{audit_as_json, Access, AuditDetail, Methods, NoParams};

/// Who sees and decides loads awaiting reconciliation.
const DECIDERS: Access = Access::Roles(&[Role::Supervisor, Role::Auditor, Role::Admin]);
/// Who may record a verdict.
const RESOLVERS: Access = Access::Roles(&[Role::Supervisor, Role::Auditor]);
/// Who proposes a lost-card verdict.
const PROPOSERS: Access = Access::Roles(&[Role::Supervisor]);
/// Who confirms a lost-card verdict and clears a contradicted one.
const CONFIRMERS: Access = Access::Roles(&[Role::Auditor]);

pub use cardd_api::journal::{
    ClearWatchParams, ConfirmLostCardParams, LostCardRow, OpenLoad, ProposeLostCardParams,
    ResolveParams, Resolved, Restored, RestoredClearParams, RestoredFound, RestoredItem,
};
audit_as_json!(ResolveParams, txn_id);
audit_as_json!(ProposeLostCardParams, txn_id);
audit_as_json!(ConfirmLostCardParams, txn_id);
audit_as_json!(ClearWatchParams, txn_id);
audit_as_json!(RestoredClearParams, card_number);

/// Items per list of `journal.restored`.
const RESTORED_LIST_MAX: usize = 500;

fn funding_ids(funding: &cardd_journal::Funding) -> (Option<String>, Option<String>) {
    match funding {
        cardd_journal::Funding::EtcRecord { record_id } => (Some(record_id.clone()), None),
        cardd_journal::Funding::GroupOrder { order_id } => (None, Some(order_id.clone())),
        cardd_journal::Funding::TestMode => (None, None),
    }
}

fn yuan(fen: u32) -> String {
    Fen(i64::from(fen)).to_yuan_string()
}

/// Leaves out of `waiting` the records settled as 已圈存 since the restore by other means (an
/// open load of the backup settled from its card): nothing waits for them any more.
fn without_loaded(d: &Daemon, mut view: Restored) -> Restored {
    if let Some(etc) = d.etc.as_deref() {
        view.waiting.retain(|w| {
            let Some(id) = &w.record_id else { return true };
            !matches!(
                etc.records().record(id),
                Ok(Some(r)) if r.status == cardd_etc::model::RecordStatus::Loaded
            )
        });
    }
    view
}

/// Restored mode as `journal.restored` shows it.
fn restored_view(journal: &cardd_journal::Journal) -> Result<Restored, ApiError> {
    let mode = journal.restored_mode().map_err(journal_error)?;
    let waiting = journal
        .restored_suspects(RESTORED_LIST_MAX)
        .map_err(journal_error)?
        .into_iter()
        .map(|s| {
            let (record_id, order_id) = funding_ids(&s.funding);
            RestoredItem {
                card_number: s.card_number,
                record_id,
                order_id,
                amount: yuan(s.amount_fen),
            }
        })
        .collect();
    let loaded_since_backup = journal
        .restored_claims(RESTORED_LIST_MAX)
        .map_err(journal_error)?
        .into_iter()
        .map(|c| {
            let (record_id, order_id) = funding_ids(&c.funding);
            RestoredFound {
                card_number: c.card_number,
                record_id,
                order_id,
                amount: yuan(c.amount_fen),
                online_atc: c.atc,
                card_time: c.card_time,
            }
        })
        .collect();
    let unaccounted = journal
        .restored_orphans(RESTORED_LIST_MAX)
        .map_err(journal_error)?
        .into_iter()
        .map(|o| RestoredFound {
            card_number: o.card_number,
            record_id: None,
            order_id: None,
            amount: yuan(o.amount_fen),
            online_atc: o.atc,
            card_time: o.card_time,
        })
        .collect();
    Ok(Restored {
        restored: mode.is_some(),
        backup_created_at: mode.as_ref().map(|m| m.backup_created_at.clone()),
        restored_at: mode.as_ref().map(|m| m.restored_at.clone()),
        forced: mode.as_ref().is_some_and(|m| m.forced),
        waiting,
        loaded_since_backup,
        unaccounted,
        list_max: RESTORED_LIST_MAX as u32,
    })
}

/// A lost-card row with the operators named by their display names.
trait Named {
    fn named(d: &Daemon, v: &LostCardVerdict) -> Self;
}

impl Named for LostCardRow {
    fn named(d: &Daemon, v: &LostCardVerdict) -> LostCardRow {
        let mut row = lost_card_row(v);
        row.proposed_by_name = crate::methods::auth::operator_name(d, &row.proposed_by);
        row.confirmed_by_name = row
            .confirmed_by
            .as_deref()
            .map(|u| crate::methods::auth::operator_name(d, u));
        row
    }
}

/// A lost-card verdict as clients see it.
fn lost_card_row(v: &LostCardVerdict) -> LostCardRow {
    let (status, label, card_shows, cleared_by, cleared_reason) = match &v.card_check {
        _ if v.confirmed_by.is_none() => ("proposed", "申请中", None, None, None),
        None => ("watching", "已核定，监控中", None, None, None),
        Some(WatchCheck::Confirmed { .. }) => ("card_confirmed", "卡片已证实", None, None, None),
        Some(WatchCheck::Undecided { .. }) => {
            ("card_undecided", "卡片无法证明，结论维持", None, None, None)
        }
        Some(WatchCheck::Contradicted {
            card_shows,
            cleared_by: None,
            ..
        }) => (
            "card_contradicted",
            "卡片与结论不符",
            Some(card_shows.clone()),
            None,
            None,
        ),
        Some(WatchCheck::Contradicted {
            card_shows,
            cleared_by,
            cleared_reason,
            ..
        }) => (
            "cleared",
            "已处理",
            Some(card_shows.clone()),
            cleared_by.clone(),
            cleared_reason.clone(),
        ),
    };
    LostCardRow {
        txn_id: v.txn_id.clone(),
        card_number: v.card_number.clone(),
        landed: v.landed,
        reason: v.reason.clone(),
        proposed_by: v.proposed_by.clone(),
        proposed_by_name: v.proposed_by.clone(),
        proposed_at: v.proposed_at.clone(),
        confirmed_by: v.confirmed_by.clone(),
        confirmed_by_name: v.confirmed_by.clone(),
        confirmed_at: v.confirmed_at.clone(),
        status: status.into(),
        status_label: label.into(),
        card_shows,
        cleared_by,
        cleared_reason,
    }
}

/// An undecided load as clients see it.
fn open_load(t: &LoadTxn) -> OpenLoad {
    let (state, reason) = match &t.state {
        TxnState::NeedsReconciliation { reason } => ("needs_reconciliation", Some(reason.clone())),
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
        lost_card_allowed_from: String::new(),
        lost_card_proposal: None,
    }
}

fn yes_no(landed: bool) -> &'static str {
    if landed {
        "已到卡"
    } else {
        "未到卡"
    }
}

/// What an operator reads when a lost-card step is refused.
fn lost_error(e: LostCardError) -> ApiError {
    match e {
        LostCardError::NotFound(id) => {
            ApiError::new(ErrorCode::HostNotFound, format!("未找到圈存交易 {id}"))
        }
        LostCardError::Settled(id) => ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("圈存交易 {id} 已有结论，不能再修改"),
        ),
        LostCardError::TooEarly {
            txn_id,
            created_at,
            allowed_from,
        } => ApiError::new(
            ErrorCode::CardEvidenceRequired,
            format!(
                "圈存交易 {txn_id} 记录于 {created_at}，须先等待卡片；{allowed_from} 之后才能按卡片遗失、损坏或锁定办理。卡片仍在时，请将卡片放到读卡器上，系统将根据卡片确认结果"
            ),
        ),
        LostCardError::Reason => ApiError::invalid_params(format!(
            "必须填写原因（1 至 {} 个字）",
            cardd_journal::LOST_REASON_CHARS_MAX
        )),
        LostCardError::NoProposal(id) => ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("圈存交易 {id} 没有待确认的挂失核定申请"),
        ),
        LostCardError::Confirmed(id) => ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("圈存交易 {id} 的挂失核定已确认，不能再修改"),
        ),
        LostCardError::SamePerson { txn_id, person } => ApiError::new(
            ErrorCode::Forbidden,
            format!("圈存交易 {txn_id} 的挂失核定由 {person} 申请，须由另一位审核人员确认"),
        ),
        LostCardError::Disagrees { proposed, .. } => ApiError::new(
            ErrorCode::EvidenceConflict,
            format!(
                "确认的结论与申请不一致：申请的结论是{}；如不同意，请不要确认，由主管重新申请",
                yes_no(proposed)
            ),
        ),
        LostCardError::NotContradicted(id) => ApiError::new(
            ErrorCode::RecordStateConflict,
            format!("圈存交易 {id} 的卡片没有与挂失核定结论不符，无需处理"),
        ),
        LostCardError::Journal(j) => journal_error(j),
    }
}

/// Declares the journal's methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::journal::Open, _, _>(
        "Loads not yet decided: `intent` (decided when the card is presented) and `needs_reconciliation` (a person decides with journal.resolve).",
        DECIDERS,
        false,
        |d, _, _: NoParams| async move {
            let journal = d.verified_journal()?;
            let open = journal.list_open().map_err(journal_error)?;
            let mut rows = Vec::with_capacity(open.len());
            for t in &open {
                let mut row = open_load(t);
                row.lost_card_allowed_from = cardd_journal::lost::format_time(
                    cardd_journal::lost::lost_card_allowed_from(t, d.config.lost_card_wait),
                );
                row.lost_card_proposal = journal
                    .lost_card_verdict(&t.txn_id)
                    .map_err(journal_error)?
                    .filter(|v| v.confirmed_by.is_none())
                    .as_ref()
                    .map(|v| LostCardRow::named(&d, v));
                rows.push(row);
            }
            Ok::<Vec<OpenLoad>, ApiError>(rows)
        },
    );
    m.method::<cardd_api::journal::LostCards, _, _>(
        "Lost-card verdicts: proposed, confirmed and watched, and what each card showed when it came back.",
        DECIDERS,
        false,
        |d, _, _: NoParams| async move {
            let journal = d.verified_journal()?;
            let verdicts = journal.lost_card_verdicts().map_err(journal_error)?;
            Ok::<Vec<LostCardRow>, ApiError>(verdicts.iter().map(|v| LostCardRow::named(&d, v)).collect())
        },
    );
    m.method::<cardd_api::journal::ProposeLostCard, _, _>(
        "A supervisor proposes a verdict (landed or not, with a reason) on an unsettled load whose card is lost, broken or PIN-blocked, after the waiting period; an auditor confirms it.",
        PROPOSERS,
        true,
        |d, c, p: ProposeLostCardParams| async move {
            let operator = c.session()?.username.clone();
            let journal = d.verified_journal()?;
            let txn = journal
                .get(&p.txn_id)
                .map_err(journal_error)?
                .ok_or_else(|| lost_error(LostCardError::NotFound(p.txn_id.clone())))?;
            // A card that can be read decides for itself.
            if txn.state.is_open() {
                if let Some(shown) = card_on_a_reader(&d, &txn, &operator, c.method).await {
                    if shown != cardd_purse::LoadOutcome::Unknown {
                        return Err(ApiError::new(
                            ErrorCode::EvidenceConflict,
                            format!(
                                "卡号 {} 的卡片在读卡器上，系统可以根据卡片确认结果，不能按卡片遗失办理：请将卡片取下后重新放到读卡器上",
                                txn.card_number
                            ),
                        ));
                    }
                }
            }
            let verdict = journal
                .propose_lost_card(&p.txn_id, p.landed, &p.reason, &operator, d.config.lost_card_wait)
                .map_err(lost_error)?;
            Ok::<LostCardRow, ApiError>(LostCardRow::named(&d, &verdict))
        },
    );
    m.method::<cardd_api::journal::ConfirmLostCard, _, _>(
        "An auditor (not the proposer) confirms a proposed lost-card verdict: the load is settled, its ETC records and group orders follow, and the card goes on the watch list.",
        CONFIRMERS,
        true,
        |d, c, p: ConfirmLostCardParams| async move {
            let operator = c.session()?.username.clone();
            let journal = d.verified_journal()?;
            let (txn, verdict) = journal
                .confirm_lost_card(&p.txn_id, p.landed, &operator)
                .map_err(lost_error)?;
            let records_settled = d
                .etc
                .as_ref()
                .map_or(0, |etc| etc.settle_card(&txn.card_number).len());
            let orders_settled = match d.group.as_ref() {
                Some(group) => group.reconcile(d.journal.as_deref())?,
                None => 0,
            };
            tracing::warn!(txn = %txn.txn_id, card = %txn.card_number, landed = verdict.landed, proposed_by = %verdict.proposed_by, confirmed_by = %operator, "a load was settled without its card (lost-card verdict); the card is on the watch list");
            Ok::<Resolved, ApiError>(Resolved {
                txn_id: p.txn_id,
                state: if verdict.landed { "committed" } else { "not_applied" }.into(),
                records_settled,
                orders_settled,
            })
        },
    );
    m.method::<cardd_api::journal::ClearWatch, _, _>(
        "An auditor records how a card that contradicted its lost-card verdict was dealt with; the card may take loads again.",
        CONFIRMERS,
        true,
        |d, c, p: ClearWatchParams| async move {
            let operator = c.session()?.username.clone();
            let journal = d.verified_journal()?;
            let verdict = journal
                .clear_watch(&p.txn_id, &p.reason, &operator)
                .map_err(lost_error)?;
            Ok::<LostCardRow, ApiError>(LostCardRow::named(&d, &verdict))
        },
    );
    m.method::<cardd_api::journal::RestoredStatus, _, _>(
        "Restored mode (the data was restored from a backup): recharge records waiting for their card's check, loads found on cards that were made after the backup (their records were set to 已圈存 without loading again), and loads nothing in the restored data accounts for.",
        DECIDERS,
        false,
        |d, _, _: NoParams| async move {
            let view = restored_view(d.verified_journal()?)?;
            Ok::<Restored, ApiError>(without_loaded(&d, view))
        },
    );
    m.method::<cardd_api::journal::RestoredClear, _, _>(
        "A supervisor clears a recharge record whose card's log could not prove it was not loaded after the restored backup, after comparing the card with the back office's records, with a reason; the record may then be loaded.",
        PROPOSERS,
        true,
        |d, c, p: RestoredClearParams| async move {
            let operator = c.session()?.username.clone();
            let reason = p.reason.trim().to_owned();
            if reason.is_empty() || reason.chars().count() > cardd_journal::LOST_REASON_CHARS_MAX {
                return Err(ApiError::invalid_params(format!(
                    "核对结论必须填写原因（不超过 {} 个字）",
                    cardd_journal::LOST_REASON_CHARS_MAX
                )));
            }
            let journal = d.verified_journal()?;
            let funding = cardd_journal::Funding::EtcRecord { record_id: p.record_id.clone() };
            if !journal
                .clear_restored_suspect(&p.card_number, &funding)
                .map_err(journal_error)?
            {
                return Err(ApiError::new(
                    ErrorCode::HostNotFound,
                    format!(
                        "卡号 {} 的充值记录 {} 不在待核对卡片的列表中（可能已核对）：请刷新后再看",
                        p.card_number, p.record_id
                    ),
                ));
            }
            tracing::warn!(card = %p.card_number, record = %p.record_id, operator = %operator, reason = %reason, "restored mode: a supervisor cleared a record the card could not prove; it may be loaded");
            Ok::<Restored, ApiError>(without_loaded(&d, restored_view(journal)?))
        },
    );
    m.method::<cardd_api::journal::Resolve, _, _>(
        "Record a person's verdict on a load awaiting reconciliation (landed or not, with a reason); the ETC records and group orders of that load follow it.",
        RESOLVERS,
        true,
        |d, c, p: ResolveParams| async move {
            let operator = c.session()?.username.clone();
            let reason = p.reason.trim().to_owned();
            if reason.is_empty() {
                return Err(ApiError::invalid_params("核对结论必须填写原因"));
            }
            let journal = d.verified_journal()?;
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
            if let Some(shown) = card_on_a_reader(&d, &txn, &operator, c.method).await {
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
            let records_settled = d
                .etc
                .as_ref()
                .map_or(0, |etc| etc.settle_card(&txn.card_number).len());
            let orders_settled = match d.group.as_ref() {
                Some(group) => group.reconcile(d.journal.as_deref())?,
                None => 0,
            };
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
    d: &std::sync::Arc<crate::daemon::Daemon>,
    txn: &LoadTxn,
    operator: &str,
    method: &'static str,
) -> Option<cardd_purse::LoadOutcome> {
    let holder = crate::readers::Holder {
        operator: operator.to_owned(),
        session: "journal.resolve".into(),
    };
    for reader in d.readers.list().into_iter().filter(|r| r.card_present) {
        let (job_d, job_txn) = (d.clone(), txn.clone());
        let shown = d
            .readers
            .run(&reader.id, &holder, method, move |r| {
                let mut purse = cardd_purse::Purse::new(r);
                cardd_journal::card_view_of(
                    &mut purse,
                    job_d.sam.as_ref(),
                    &job_txn,
                    job_d.verified_journal().ok()?.pin_refusals(),
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
