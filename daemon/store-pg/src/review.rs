//! [`PgReview`]: 待核对 at the issuer host, the loads no card settled, decided by two people.
//!
//! A load the host authorised (MAC2 given) is settled by the card: its TAC books it, or the
//! card proves at its next presentation that the money did not land. When the card never comes
//! back (lost, broken, kept by the customer) or its proof failed (a TAC that did not verify),
//! the authorisation stays `authorized` or `reconcile` and a person must decide. The rules:
//!
//! * **Wait first.** An `authorized` load is decidable only [`REVIEW_WAIT_MIN`] minutes after
//!   its authorisation: before that its card may still be on its way back to a reader.
//! * **Two people.** One back-office operator proposes a verdict (landed or not, with a
//!   reason); a *different* one confirms or rejects it. Nobody settles money alone.
//! * **One transaction.** Confirming applies the verdict where the money is: the recharge
//!   record (待核对 → 已圈存 or 未圈存, 圈存中 first flagged 待核对) or the group order (充值成功
//!   with the card's balances, or 充值失败 for the refund audit), which settles the
//!   authorisation too (`booked` or `released`), with the verdict and its audit record.
//! * **The card has the last word.** A confirmed verdict is checked against the card's online
//!   counter at the card's next authorised load (the host sees every load of a fleet's cards):
//!   a load that landed moved the counter on by one, one that did not left it. A verdict the
//!   card contradicts is marked so, its authorisation goes back to `reconcile` and its record
//!   to 待核对, which stops a wrongly released record from being loaded again (a failed order
//!   keeps its status, but no order whose authorisation is open, waiting or booked is ever
//!   refunded), and the item is back on the list for two people. A TAC that arrives later
//!   settles the load as the card proves, whatever the verdict said.
//! * A load the card settled meanwhile (or another person's decision) refuses the verdict.

use std::sync::Arc;

use cardd_api::ErrorCode;
use cardd_etc::change::ChangeRequest;
use cardd_etc::{RecordAction, RecordStatus};
use cardd_group::model::OrderStatus;
use cardd_journal::clock::{china_seconds, Clock};
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::audit::{append_in, HostAuditEntry, HOST_CHAIN};
use crate::db::{body, Database, DbFailure, Mode, TxError, TxResult};
use crate::group::{change_order_in, order_in, Effect, FromStatus};
use crate::host::{change_in, record_in};

/// How long after its authorisation an open load waits for its card before a person may
/// decide it, in minutes.
pub const REVIEW_WAIT_MIN: i64 = 30;
/// Most loads one listing returns.
pub const REVIEW_LIST_MAX: i64 = 500;
/// Longest verdict reason, in characters.
pub const VERDICT_REASON_CHARS_MAX: usize = 200;

/// A proposed, rejected or confirmed verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The person's verdict: the money is on the card.
    pub landed: bool,
    pub reason: String,
    pub proposed_by: String,
    pub proposed_at: OffsetDateTime,
    /// `proposed`, `rejected` or `confirmed`.
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<OffsetDateTime>,
    /// `waiting`, `agreed` or `contradicted`: the card's word on a confirmed verdict.
    pub card_check: String,
    /// What the card showed, when it was checked.
    pub card_evidence: Option<String>,
}

/// A load waiting for a person's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewItem {
    pub txn_id: String,
    pub site_id: String,
    pub card_number: String,
    pub amount_fen: i64,
    /// The card's online counter when the load was authorised.
    pub online_atc: u16,
    /// The card's balance when the load was authorised.
    pub balance_before_fen: i64,
    /// `etc_record` or `group_order`.
    pub funding_kind: String,
    /// The recharge record or group order that pays it.
    pub funding_id: String,
    /// `authorized` (its card has not come back) or `reconcile` (its proof failed, or the card
    /// contradicted a verdict).
    pub state: String,
    pub authorized_at: OffsetDateTime,
    /// Why it waits for a person, when the host knows.
    pub why: Option<String>,
    /// A person may decide it now (false while an open load still waits for its card).
    pub decidable: bool,
    /// When it becomes decidable.
    pub decidable_at: OffsetDateTime,
    /// The latest verdict, if any.
    pub verdict: Option<Verdict>,
}

/// Why a verdict was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("没有交易号为 {0} 的圈存授权：请刷新待核对列表")]
    NotFound(String),
    #[error("交易 {txn_id} 的结果已确认（{state}），无需核定：请刷新待核对列表")]
    Settled { txn_id: String, state: String },
    #[error("交易 {txn_id} 的卡片可能还会回到读卡器：请在 {until} 之后再核定")]
    TooEarly { txn_id: String, until: String },
    #[error("交易 {txn_id} 已有 {by} 的核定申请：请等待另一位审核员确认或驳回")]
    AlreadyProposed { txn_id: String, by: String },
    #[error("交易 {0} 没有待确认的核定申请：请先申请核定")]
    NoProposal(String),
    #[error("交易 {txn_id} 的核定申请由 {person} 提出，须由另一位审核员确认或驳回")]
    SamePerson { txn_id: String, person: String },
    #[error("核定结论与卡片不符：{0}；请按卡片证据重新申请核定")]
    CardDisagrees(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Db(#[from] DbFailure),
}

impl ReviewError {
    /// The API code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReviewError::NotFound(_) => ErrorCode::HostNotFound,
            ReviewError::SamePerson { .. } => ErrorCode::Forbidden,
            ReviewError::Invalid(_) => ErrorCode::InvalidParams,
            ReviewError::CardDisagrees(_) => ErrorCode::EvidenceConflict,
            ReviewError::Db(_) => ErrorCode::Internal,
            ReviewError::Settled { .. }
            | ReviewError::TooEarly { .. }
            | ReviewError::AlreadyProposed { .. }
            | ReviewError::NoProposal(_)
            | ReviewError::Store(_) => ErrorCode::RecordStateConflict,
        }
    }

    /// True when the request was refused (not a failure of the host).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, ReviewError::Db(_))
    }
}

impl From<crate::audit::AuditError> for ReviewError {
    fn from(e: crate::audit::AuditError) -> Self {
        ReviewError::Store(format!("发卡方后台无法记录审计日志：{e}"))
    }
}

impl From<TxError<cardd_etc::HostError>> for TxError<ReviewError> {
    fn from(e: TxError<cardd_etc::HostError>) -> Self {
        match e {
            TxError::Refused(h) => TxError::Refused(ReviewError::Store(h.to_string())),
            TxError::Db(d) => TxError::Db(d),
        }
    }
}

impl From<TxError<cardd_group::GroupError>> for TxError<ReviewError> {
    fn from(e: TxError<cardd_group::GroupError>) -> Self {
        match e {
            TxError::Refused(g) => TxError::Refused(ReviewError::Store(g.to_string())),
            TxError::Db(d) => TxError::Db(d),
        }
    }
}

/// The audit log's actor for a back-office person (`后台:<user>`, as the back office names it).
fn backoffice_actor(username: &str) -> String {
    format!("后台:{username}")
}

/// The online counter a card shows after the load at `atc`, landed or not.
fn counter_after(atc: u16, landed: bool) -> u16 {
    if landed {
        atc.wrapping_add(1)
    } else {
        atc
    }
}

/// What the card's counter says about a verdict: `None` when it agrees, the evidence when not.
fn contradiction(verdict_atc: u16, landed: bool, seen_atc: u16) -> Option<String> {
    if seen_atc == counter_after(verdict_atc, landed) {
        return None;
    }
    let shows = if seen_atc == verdict_atc.wrapping_add(1) {
        "该笔圈存已写入卡内"
    } else if seen_atc == verdict_atc {
        "该笔圈存未写入卡内"
    } else {
        "卡片联机交易序号与记录不连续"
    };
    Some(format!(
        "卡片后来圈存时联机交易序号为 {seen_atc}（该笔圈存授权时为 {verdict_atc}），{shows}"
    ))
}

const ITEM_COLUMNS: &str = "a.txn_id, a.site_id, a.card_number, a.amount_fen, a.online_atc, \
     a.balance_before_fen, a.funding_kind, a.funding_id, a.state, a.authorized_at, a.reason, \
     v.landed, v.reason, v.proposed_by, v.proposed_at, v.state, v.decided_by, v.decided_at, \
     v.card_check, v.card_evidence";

fn item_of(r: &tokio_postgres::Row, wait: time::Duration, now: OffsetDateTime) -> ReviewItem {
    let state: String = r.get(8);
    let authorized_at = china_seconds(r.get(9));
    let decidable_at = if state == "authorized" {
        authorized_at + wait
    } else {
        authorized_at
    };
    let atc: i32 = r.get(4);
    let verdict = r.get::<_, Option<bool>>(11).map(|landed| Verdict {
        landed,
        reason: r.get(12),
        proposed_by: r.get(13),
        proposed_at: china_seconds(r.get(14)),
        state: r.get(15),
        decided_by: r.get(16),
        decided_at: r.get::<_, Option<OffsetDateTime>>(17).map(china_seconds),
        card_check: r.get(18),
        card_evidence: r.get(19),
    });
    ReviewItem {
        txn_id: r.get(0),
        site_id: r.get(1),
        card_number: r.get(2),
        amount_fen: r.get(3),
        online_atc: u16::try_from(atc).unwrap_or(u16::MAX),
        balance_before_fen: r.get(5),
        funding_kind: r.get(6),
        funding_id: r.get(7),
        state,
        authorized_at,
        why: r.get(10),
        decidable: decidable_at <= now,
        decidable_at,
        verdict,
    }
}

/// 待核对 at the host on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgReview {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    wait: time::Duration,
}

impl PgReview {
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgReview {
        PgReview {
            db,
            clock,
            wait: time::Duration::minutes(REVIEW_WAIT_MIN),
        }
    }

    /// The same with another wait before an open load is decidable (tests).
    pub fn with_wait(mut self, wait: std::time::Duration) -> PgReview {
        self.wait = time::Duration::try_from(wait).unwrap_or(time::Duration::ZERO);
        self
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    /// The loads waiting for a verdict, oldest first (at most [`REVIEW_LIST_MAX`]): every open
    /// (`authorized`) and `reconcile` authorisation, with its latest verdict.
    pub fn pending(&self) -> Result<Vec<ReviewItem>, ReviewError> {
        let (now, wait) = (self.now(), self.wait);
        let limit = REVIEW_LIST_MAX;
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取待核对圈存",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {ITEM_COLUMNS} FROM load_authorizations a \
                             LEFT JOIN load_verdicts v ON v.txn_id = a.txn_id \
                             WHERE a.state IN ('authorized', 'reconcile') \
                             ORDER BY a.authorized_at, a.txn_id LIMIT $1"
                        ),
                        &[&limit],
                    )
                    .await?;
                Ok::<_, TxError<ReviewError>>(rows.iter().map(|r| item_of(r, wait, now)).collect())
            }),
        ))
    }

    /// One load, as [`PgReview::pending`] shows it (also once settled).
    pub fn item(&self, txn_id: &str) -> Result<ReviewItem, ReviewError> {
        let (now, wait) = (self.now(), self.wait);
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取待核对圈存",
            body!(|c| async { item_in(c, txn_id, wait, now).await }),
        ))
    }

    /// `by` proposes that the load of `txn_id` landed (or not), for `reason`. Refused when the
    /// load is settled, not yet decidable, or already has a proposal waiting.
    pub fn propose(
        &self,
        txn_id: &str,
        landed: bool,
        reason: &str,
        by: &str,
    ) -> Result<ReviewItem, ReviewError> {
        let reason = verdict_reason(reason)?;
        let (now, wait) = (self.now(), self.wait);
        let (reason, by) = (&reason, by);
        let item = self.db.call(self.db.transaction(
            Mode::Write,
            "申请核定圈存",
            body!(|c| async {
                let item = open_item_in(c, txn_id, wait, now).await?;
                if !item.decidable {
                    return Err(TxError::Refused(ReviewError::TooEarly {
                        txn_id: txn_id.to_owned(),
                        until: item
                            .decidable_at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                    }));
                }
                if let Some(v) = item.verdict.as_ref().filter(|v| v.state == "proposed") {
                    return Err(TxError::Refused(ReviewError::AlreadyProposed {
                        txn_id: txn_id.to_owned(),
                        by: v.proposed_by.clone(),
                    }));
                }
                append_in::<ReviewError>(
                    c,
                    &backoffice_audit(
                        by,
                        "review.propose",
                        txn_id,
                        serde_json::json!({ "landed": landed, "reason": reason }),
                    ),
                    now,
                )
                .await?;
                c.execute(
                    "INSERT INTO load_verdicts (txn_id, card_key, landed, reason, proposed_by, \
                         proposed_at, state) \
                     SELECT $1, card_key, $2, $3, $4, $5, 'proposed' FROM load_authorizations \
                     WHERE txn_id = $1 \
                     ON CONFLICT (txn_id) DO UPDATE SET landed = $2, reason = $3, \
                         proposed_by = $4, proposed_at = $5, state = 'proposed', \
                         decided_by = NULL, decided_at = NULL, card_check = 'waiting', \
                         card_checked_at = NULL, card_evidence = NULL",
                    &[&txn_id, &landed, reason, &by, &now],
                )
                .await?;
                item_in(c, txn_id, wait, now).await
            }),
        ))?;
        tracing::info!(txn = txn_id, landed, by, "load verdict proposed");
        Ok(item)
    }

    /// `by` (not the proposer) confirms the proposed verdict on `txn_id` (`confirm`) or rejects
    /// it. A confirmed verdict settles the record or order and the authorisation in the same
    /// transaction; it is refused when a later load of the same card already contradicts it.
    pub fn decide(&self, txn_id: &str, confirm: bool, by: &str) -> Result<ReviewItem, ReviewError> {
        let (now, wait) = (self.now(), self.wait);
        let item = self.db.call(self.db.transaction(
            Mode::Write,
            "确认核定圈存",
            body!(|c| async {
                let item = open_item_in(c, txn_id, wait, now).await?;
                let Some(verdict) = item.verdict.clone().filter(|v| v.state == "proposed") else {
                    return Err(TxError::Refused(ReviewError::NoProposal(txn_id.to_owned())));
                };
                if verdict.proposed_by == by {
                    return Err(TxError::Refused(ReviewError::SamePerson {
                        txn_id: txn_id.to_owned(),
                        person: by.to_owned(),
                    }));
                }
                append_in::<ReviewError>(
                    c,
                    &backoffice_audit(
                        by,
                        if confirm {
                            "review.confirm"
                        } else {
                            "review.reject"
                        },
                        txn_id,
                        serde_json::json!({
                            "landed": verdict.landed,
                            "reason": verdict.reason,
                            "proposed_by": verdict.proposed_by,
                        }),
                    ),
                    now,
                )
                .await?;
                if !confirm {
                    c.execute(
                        "UPDATE load_verdicts SET state = 'rejected', decided_by = $2, \
                             decided_at = $3 WHERE txn_id = $1",
                        &[&txn_id, &by, &now],
                    )
                    .await?;
                    return item_in(c, txn_id, wait, now).await;
                }
                // The card may have spoken already: a later load of the same card.
                let later = c
                    .query_opt(
                        "SELECT b.online_atc FROM load_authorizations a \
                         JOIN load_authorizations b ON b.card_key = a.card_key \
                              AND b.txn_id <> a.txn_id AND b.authorized_at > a.authorized_at \
                         WHERE a.txn_id = $1 ORDER BY b.authorized_at, b.txn_id LIMIT 1",
                        &[&txn_id],
                    )
                    .await?;
                let (card_check, evidence) = match later {
                    Some(row) => {
                        let seen = u16::try_from(row.get::<_, i32>(0)).unwrap_or(u16::MAX);
                        if let Some(e) = contradiction(item.online_atc, verdict.landed, seen) {
                            return Err(TxError::Refused(ReviewError::CardDisagrees(e)));
                        }
                        (
                            "agreed",
                            Some(format!(
                                "卡片后来圈存时联机交易序号为 {seen}，与核定结论一致"
                            )),
                        )
                    }
                    None => ("waiting", None),
                };
                let checked_at = evidence.as_ref().map(|_| now);
                c.execute(
                    "UPDATE load_verdicts SET state = 'confirmed', decided_by = $2, \
                         decided_at = $3, card_check = $4, card_evidence = $5, \
                         card_checked_at = $6 WHERE txn_id = $1",
                    &[&txn_id, &by, &now, &card_check, &evidence, &checked_at],
                )
                .await?;
                apply_in(c, &item, &verdict, by, now).await?;
                item_in(c, txn_id, wait, now).await
            }),
        ))?;
        tracing::info!(txn = txn_id, confirm, by, "load verdict decided");
        Ok(item)
    }
}

/// The audit record of a back-office person's step, in the `host` chain.
fn backoffice_audit(
    by: &str,
    action: &str,
    txn_id: &str,
    detail: serde_json::Value,
) -> HostAuditEntry {
    HostAuditEntry {
        chain: HOST_CHAIN.into(),
        actor: backoffice_actor(by),
        action: action.into(),
        target: Some(txn_id.into()),
        detail,
        outcome: "started".into(),
    }
}

fn verdict_reason(reason: &str) -> Result<String, ReviewError> {
    let text: String = reason.trim().chars().filter(|c| !c.is_control()).collect();
    if text.is_empty() {
        return Err(ReviewError::Invalid(
            "请填写核定原因（核对了哪些卡片证据或客户凭证）".into(),
        ));
    }
    if text.chars().count() > VERDICT_REASON_CHARS_MAX {
        return Err(ReviewError::Invalid(format!(
            "核定原因最多 {VERDICT_REASON_CHARS_MAX} 个字，请精简后再提交"
        )));
    }
    Ok(text)
}

/// The load of `txn_id`, read in the caller's transaction, settled or not.
async fn item_in(
    c: &Client,
    txn_id: &str,
    wait: time::Duration,
    now: OffsetDateTime,
) -> TxResult<ReviewItem, ReviewError> {
    let Some(row) = c
        .query_opt(
            &format!(
                "SELECT {ITEM_COLUMNS} FROM load_authorizations a \
                 LEFT JOIN load_verdicts v ON v.txn_id = a.txn_id WHERE a.txn_id = $1"
            ),
            &[&txn_id],
        )
        .await?
    else {
        return Err(TxError::Refused(ReviewError::NotFound(txn_id.to_owned())));
    };
    Ok(item_of(&row, wait, now))
}

/// The load of `txn_id`, read in the caller's transaction; refused when the card (or a
/// verdict) settled it already.
async fn open_item_in(
    c: &Client,
    txn_id: &str,
    wait: time::Duration,
    now: OffsetDateTime,
) -> TxResult<ReviewItem, ReviewError> {
    let item = item_in(c, txn_id, wait, now).await?;
    if item.state != "authorized" && item.state != "reconcile" {
        return Err(TxError::Refused(ReviewError::Settled {
            txn_id: txn_id.to_owned(),
            state: match item.state.as_str() {
                "booked" => "已圈存".to_owned(),
                "released" => "未圈存".to_owned(),
                other => other.to_owned(),
            },
        }));
    }
    Ok(item)
}

/// Applies a confirmed verdict to the money: the record or order, and with it the
/// authorisation.
async fn apply_in(
    c: &Client,
    item: &ReviewItem,
    verdict: &Verdict,
    by: &str,
    at: OffsetDateTime,
) -> TxResult<(), ReviewError> {
    // The user name, as the back office's other changes name their operator.
    let op = by.to_owned();
    let why = format!(
        "后台核定（{} 申请，{by} 确认）：{}",
        verdict.proposed_by, verdict.reason
    );
    let invalid = |e: cardd_etc::HostError| TxError::Refused(ReviewError::Store(e.to_string()));
    if item.funding_kind == "group_order" {
        let Some(order) = order_in(c, &item.funding_id).await? else {
            return Err(TxError::Refused(ReviewError::Store(format!(
                "没有充值订单 {}",
                item.funding_id
            ))));
        };
        let from = match order.status {
            OrderStatus::Failed if !verdict.landed => {
                // Already failed: the authorisation follows.
                settle_authorization(c, &item.txn_id, false, &op, &why, at).await?;
                return Ok(());
            }
            OrderStatus::Failed => FromStatus::Exactly(OrderStatus::Failed),
            s if s.is_unsettled() => FromStatus::Unsettled,
            // 充值成功 or 已退款 already: the order stays as it is (a refunded order the card
            // shows landed is for people to recover); the authorisation follows the verdict.
            _ => {
                settle_authorization(c, &item.txn_id, verdict.landed, &op, &why, at).await?;
                return Ok(());
            }
        };
        if verdict.landed {
            let before = item.balance_before_fen;
            change_order_in(
                c,
                &order.order_id,
                from,
                OrderStatus::Succeeded,
                "改为充值成功",
                &op,
                Some(&why),
                &Effect::Balances(Some((before, before + item.amount_fen))),
                at,
            )
            .await?;
        } else {
            change_order_in(
                c,
                &order.order_id,
                from,
                OrderStatus::Failed,
                "标记为充值失败",
                &op,
                Some(&why),
                &Effect::Failure("后台核定：卡片未到账".into()),
                at,
            )
            .await?;
        }
        return Ok(());
    }
    let Some(record) = record_in(c, &item.funding_id, true).await? else {
        return Err(TxError::Refused(ReviewError::Store(format!(
            "没有充值记录 {}",
            item.funding_id
        ))));
    };
    if record
        .load_txn_id
        .as_deref()
        .is_some_and(|t| t != item.txn_id)
    {
        // The record moved on under another load: only the authorisation is settled.
        settle_authorization(c, &item.txn_id, verdict.landed, &op, &why, at).await?;
        return Ok(());
    }
    if record.status != RecordStatus::NeedsReconciliation {
        // 未圈存, 圈存中 or 已圈存 under this load: flagged first, then decided.
        let flag = ChangeRequest::with_reason(RecordAction::FlagReconciliation, &op, &why, false)
            .map_err(invalid)?;
        change_in(c, &record.record_id, &flag, at).await?;
    }
    let resolve = ChangeRequest::with_reason(
        RecordAction::ResolveReconciliation,
        &op,
        &why,
        verdict.landed,
    )
    .map_err(invalid)?;
    change_in(c, &record.record_id, &resolve, at).await?;
    // A record already settled otherwise leaves the authorisation open: settle it.
    settle_authorization(c, &item.txn_id, verdict.landed, &op, &why, at).await?;
    Ok(())
}

/// Settles the authorisation of `txn_id` as the verdict says, if still open.
async fn settle_authorization(
    c: &Client,
    txn_id: &str,
    landed: bool,
    op: &str,
    why: &str,
    at: OffsetDateTime,
) -> TxResult<(), ReviewError> {
    let state = if landed { "booked" } else { "released" };
    c.execute(
        "UPDATE load_authorizations SET state = $2, settled_at = $3, settled_by = $4, \
             reason = $5 WHERE txn_id = $1 AND state IN ('authorized', 'reconcile')",
        &[&txn_id, &state, &at, &op, &why],
    )
    .await?;
    Ok(())
}

/// A confirmed verdict the card contradicted, found at the card's next authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradicted {
    pub txn_id: String,
    pub evidence: String,
}

/// Checks the confirmed verdicts still waiting for the card `card_key` against the online
/// counter `seen_atc` its new load shows, in the caller's transaction: the agreeing ones are
/// marked agreed; the contradicted ones are returned (nothing else written for them: the caller
/// records them with [`record_contradiction_in`] in a transaction of its own).
pub(crate) async fn check_card_in<E>(
    c: &Client,
    card_key: &str,
    seen_atc: u16,
    at: OffsetDateTime,
) -> TxResult<Vec<Contradicted>, E> {
    // Only this card's waiting verdicts are read (none, nearly always): a load reads nothing
    // of other cards' authorisations here, so disjoint loads do not conflict over it.
    let rows = c
        .query(
            "SELECT txn_id, landed FROM load_verdicts \
             WHERE card_key = $1 AND state = 'confirmed' AND card_check = 'waiting'",
            &[&card_key],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut contradicted = Vec::new();
    for r in &rows {
        let txn_id: String = r.get(0);
        let landed: bool = r.get(1);
        let atc = c
            .query_one(
                "SELECT online_atc FROM load_authorizations WHERE txn_id = $1",
                &[&txn_id],
            )
            .await?
            .get::<_, i32>(0);
        let atc = u16::try_from(atc).unwrap_or(u16::MAX);
        match contradiction(atc, landed, seen_atc) {
            None => {
                let evidence = format!("卡片再次圈存时联机交易序号为 {seen_atc}，与核定结论一致");
                c.execute(
                    "UPDATE load_verdicts SET card_check = 'agreed', card_checked_at = $2, \
                         card_evidence = $3 WHERE txn_id = $1",
                    &[&txn_id, &at, &evidence],
                )
                .await?;
            }
            Some(evidence) => contradicted.push(Contradicted { txn_id, evidence }),
        }
    }
    Ok(contradicted)
}

/// Records that the card contradicted the verdict on `c.txn_id`, in the caller's transaction:
/// the verdict is marked contradicted with the card's evidence, the authorisation goes back to
/// `reconcile` (which stops a group order's refund), the record to 待核对, and the host's audit
/// chain says so. The load is back on the 待核对 list for two people.
pub(crate) async fn record_contradiction_in(
    c: &Client,
    found: &Contradicted,
    at: OffsetDateTime,
) -> TxResult<(), ReviewError> {
    let Some(row) = c
        .query_opt(
            "SELECT a.funding_kind, a.funding_id FROM load_verdicts v \
             JOIN load_authorizations a ON a.txn_id = v.txn_id \
             WHERE v.txn_id = $1 AND v.state = 'confirmed' AND v.card_check = 'waiting'",
            &[&found.txn_id],
        )
        .await?
    else {
        return Ok(());
    };
    let (kind, funding_id): (String, String) = (row.get(0), row.get(1));
    let why = format!("后台核定结论与卡片不符：{}", found.evidence);
    append_in::<ReviewError>(
        c,
        &HostAuditEntry {
            chain: HOST_CHAIN.into(),
            actor: "cardd-host".into(),
            action: "review.contradicted".into(),
            target: Some(found.txn_id.clone()),
            detail: serde_json::json!({ "evidence": found.evidence }),
            outcome: "ok".into(),
        },
        at,
    )
    .await?;
    c.execute(
        "UPDATE load_verdicts SET card_check = 'contradicted', card_checked_at = $2, \
             card_evidence = $3 WHERE txn_id = $1",
        &[&found.txn_id, &at, &found.evidence],
    )
    .await?;
    c.execute(
        "UPDATE load_authorizations SET state = 'reconcile', settled_at = $2, \
             settled_by = 'cardd-host', reason = $3 WHERE txn_id = $1",
        &[&found.txn_id, &at, &why],
    )
    .await?;
    if kind == "group_order" {
        // The order keeps its status (one unsettled order per card); its authorisation being
        // back in `reconcile` stops its refund (`refuse_refund_of_open_or_landed_in`).
        return Ok(());
    }
    let record = record_in(c, &funding_id, true).await?;
    if record.is_some_and(|r| r.status != RecordStatus::NeedsReconciliation) {
        let flag =
            ChangeRequest::with_reason(RecordAction::FlagReconciliation, "cardd-host", &why, false)
                .map_err(|e| TxError::Refused(ReviewError::Store(e.to_string())))?;
        change_in(c, &funding_id, &flag, at).await?;
    }
    tracing::warn!(txn = %found.txn_id, evidence = %found.evidence, "a load verdict was contradicted by its card");
    Ok(())
}
