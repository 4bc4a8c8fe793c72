//! Group recharge (集团充值) in the daemon: the group services, the recharge itself (quota
//! reserved durably before the card is credited, settled after), reconciliation of orders with
//! the journal, the auditor's card evidence, and the `group.*` JSON-RPC methods.
//!
//! **Who sees what.** A group operator acts only on their own group: naming another group, or
//! an order, top-up or batch of another group, is refused with the seed's 用户和密码错误 wording
//! ([`ErrorCode::GroupAccessDenied`]) and changes nothing. Auditors decide top-ups and refunds;
//! auditors, supervisors and administrators read any group by naming it.
//!
//! **Orders and the journal.** A recharge reserves the quota (order `reserved`, durable), runs
//! the journaled load under the order's transaction id, then settles (`succeeded`) or fails the
//! order (`failed`: refund pending). If the daemon stops in between, [`reconcile`] settles the
//! order from the journal once the load's outcome is known (committed → succeeded, proven not
//! applied or never sent → failed); it runs at start-up, after every load the daemon resolves
//! from a card, and before every group query. Refunds are decided by an auditor from the
//! evidence ([`evidence`]): a load the card proves landed is never refunded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cardd_api::{ErrorCode, Fen, Role};
use cardd_journal::{IntentOutcome, TxnState};
use cardd_store::group_export::{
    self, LedgerRow, NamedRow, OrderRow, OrderStats, TopUpRow, TopUpStats,
};
use cardd_store::group_model::{
    yuan, BatchItemInput, BatchRef, Group, GroupInput, OrderStatus, PaymentOutcome, Period, Preset,
    RechargeOrder, ReserveRequest, TopUp, TopUpStatus,
};
use cardd_store::{
    EmbeddedGroupHost, GroupHost, PaymentError, PaymentGateway, PaymentRequest, SandboxBank,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Session;
use crate::errors::ApiError;
use crate::rpc::{Access, AuditDetail, Caller, Methods, NoParams, SessionView};
use crate::server::Daemon;
/// Did an order's load land: the same verdict as a recharge record's.
pub use cardd_api::etc::Verdict;

/// Longest wait for the bank's answer to a transfer; past it the top-up is 支付结果未知 and the
/// bank is asked again later (`group.topup_status`).
pub const PAYMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The group services of the daemon.
pub struct GroupServices {
    /// Groups, quota ledger, orders, top-ups, batches.
    pub host: Arc<dyn GroupHost>,
    /// The bank quota top-ups go through.
    pub bank: Arc<dyn PaymentGateway>,
    /// Orders reserved by a recharge running in this process and not yet settled or failed:
    /// [`reconcile`] leaves them to their run. Held while reserving, so that a reconciliation
    /// never sees a fresh reservation without its run.
    inflight: cardd_journal::inflight::InFlight,
    /// Top-ups whose payment call is running.
    paying: Mutex<HashSet<String>>,
    /// Orders settled from the card after 结果待确认 whose result a new recharge of the card
    /// has already reported (see `settle_card_first`).
    told: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for GroupServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupServices")
            .field("host", &self.host)
            .field("bank", &self.bank.name())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the group host (seeding the demo groups with `--demo`) and the sandbox bank. Returns
/// the services, or why they could not open (the daemon then fails closed).
pub fn open(
    config: &crate::config::Config,
    store: &cardd_journal::Store,
) -> (Option<GroupServices>, Option<String>) {
    let host = match EmbeddedGroupHost::open(store) {
        Ok(host) => host,
        Err(e) => return (None, Some(e.to_string())),
    };
    if config.demo {
        if let Err(e) = host.seed_demo() {
            return (None, Some(e.to_string()));
        }
    }
    let bank = match SandboxBank::open(store, config.group.sandbox_mode) {
        Ok(bank) => bank,
        Err(e) => return (None, Some(e.to_string())),
    };
    let services = GroupServices {
        host: Arc::new(host),
        bank: Arc::new(bank),
        inflight: cardd_journal::inflight::InFlight::default(),
        paying: Mutex::new(HashSet::new()),
        told: Mutex::new(HashSet::new()),
    };
    (Some(services), None)
}

fn services(d: &Daemon) -> Result<&GroupServices, ApiError> {
    d.group.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::FailedClosed,
            "集团充值数据未通过完整性检查，已停止办理；请联系管理员查看日志",
        )
    })
}

/// The refusal a group operator gets for another group's data.
fn denied(session: &Session) -> ApiError {
    ApiError::new(
        ErrorCode::GroupAccessDenied,
        format!(
            "用户和密码错误：操作员 {} 不属于该集团，不能查看或办理该集团的业务",
            session.username
        ),
    )
}

/// The group a call acts on: a group operator's own (naming another is refused); others must
/// name one.
fn scope(c: &Caller, requested: Option<&str>) -> Result<String, ApiError> {
    let s = c.session()?;
    if s.role == Role::GroupOperator {
        let own = s.group_id.clone().ok_or_else(|| denied(s))?;
        match requested {
            Some(r) if r.trim() != own => Err(denied(s)),
            _ => Ok(own),
        }
    } else {
        requested
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ApiError::invalid_params("请指定集团编号 group_id"))
    }
}

/// `record`, if the caller may see it; a group operator gets the same refusal for another
/// group's record and for one that does not exist.
fn owned<T>(
    c: &Caller,
    record: Option<T>,
    group_of: impl Fn(&T) -> &str,
    what: &str,
    id: &str,
) -> Result<T, ApiError> {
    let s = c.session()?;
    match record {
        Some(r) if s.role != Role::GroupOperator || s.group_id.as_deref() == Some(group_of(&r)) => {
            Ok(r)
        }
        _ if s.role == Role::GroupOperator => Err(denied(s)),
        _ => Err(ApiError::new(
            ErrorCode::GroupRecordNotFound,
            format!("未找到{what} {id}"),
        )),
    }
}

fn the_group(svc: &GroupServices, s: Option<&Session>, group_id: &str) -> Result<Group, ApiError> {
    match svc.host.group(group_id)? {
        Some(g) => Ok(g),
        None => match s {
            Some(s) if s.role == Role::GroupOperator => Err(denied(s)),
            _ => Err(ApiError::new(
                ErrorCode::GroupRecordNotFound,
                format!("未找到集团 {group_id}"),
            )),
        },
    }
}

/// What the recharge page shows at the top.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GroupView {
    /// 集团编号.
    pub group_id: String,
    /// 集团名称.
    pub group_name: String,
    /// 终端编号.
    pub terminal_no: String,
    /// 集团可用额度, yuan.
    pub available_quota: String,
    /// The same in fen.
    pub available_quota_fen: i64,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        GroupView {
            group_id: g.group_id.clone(),
            group_name: g.name.clone(),
            terminal_no: g.terminal_no.clone(),
            available_quota: yuan(g.available_fen),
            available_quota_fen: g.available_fen,
        }
    }
}

/// The success page of a recharge (充值成功).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RechargeDone {
    /// 订单编号.
    pub order_id: String,
    /// 卡号.
    pub card_number: String,
    /// 充值前余额, yuan.
    pub balance_before: String,
    /// 充值金额, yuan.
    pub amount: String,
    /// 现余额, yuan.
    pub balance_after: String,
    /// 充值前集团额度, yuan.
    pub quota_before: String,
    /// 充值后集团额度, yuan.
    pub quota_after: String,
}

/// Why a recharge did not end in 充值成功: a refusal or failure (nothing on the card), or an
/// order left 结果待确认 (`pending_order`: the card may hold the money).
#[derive(Debug, Clone)]
pub(crate) struct RechargeStop {
    /// What the operator reads (zh-CN), with what to do.
    pub message: String,
    /// The order whose outcome waits for the card, when the outcome is unknown.
    pub pending_order: Option<String>,
}

impl From<String> for RechargeStop {
    fn from(message: String) -> Self {
        RechargeStop {
            message,
            pending_order: None,
        }
    }
}

impl From<&str> for RechargeStop {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// One card recharge from the group's quota on the run's reader: reads the card, checks the
/// rules, reserves the quota (durable), loads the card through the journal, settles or fails
/// the order. Errors are messages for the operator.
pub(crate) fn recharge(
    daemon: &Arc<Daemon>,
    card: &crate::flows::CardModule,
    expected_card: Option<&str>,
    amount_fen: i64,
    batch: Option<BatchRef>,
) -> Result<RechargeDone, RechargeStop> {
    let svc = services(daemon).map_err(|e| e.message)?;
    let operator = card.operator().to_owned();
    let who = daemon
        .auth
        .get_operator(&operator)
        .map_err(|e| e.to_string())?;
    let group_id = match (who.role, who.group_id) {
        (Role::GroupOperator, Some(g)) => g,
        _ => return Err(format!("用户和密码错误：操作员 {operator} 不是集团操作员").into()),
    };
    let (pin, terminal) = (daemon.config.etc_pin.clone(), daemon.config.terminal_id);
    let summary = card
        .on_reader(move |reader| crate::summary::read(reader, &pin, terminal))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.message)?;
    if summary.kind != Some(crate::summary::CardKind::City) {
        return Err("读卡器上的卡片不是城市一卡通，请放置要充值的城市一卡通卡片".into());
    }
    if let Some(expected) = expected_card {
        if expected != summary.card_number {
            return Err(format!(
                "卡号不符：读卡器上是 {}，应为 {expected}；请放置正确的卡片",
                summary.card_number
            )
            .into());
        }
    }
    settle_card_first(daemon, card, svc, &group_id, &summary.card_number)?;
    let balance_fen = summary.balance_fen.unwrap_or(0);
    let amount = u32::try_from(amount_fen).map_err(|_| "充值金额不正确".to_owned())?;
    let txn_id = card.next_txn_id();
    // Reserved and marked in flight at once: reconciliation never takes it for a leftover.
    let (order, _flight) = svc.inflight.start(
        || {
            svc.host
                .reserve(&ReserveRequest {
                    group_id: group_id.clone(),
                    operator: operator.clone(),
                    card_number: summary.card_number.clone(),
                    card_balance_fen: balance_fen,
                    amount_fen,
                    txn_id: txn_id.clone(),
                    batch,
                })
                .map_err(|e| e.to_string())
        },
        |order| order.order_id.clone(),
    )?;
    let funding = cardd_journal::Funding::GroupOrder {
        order_id: order.order_id.clone(),
    };
    match card.load_as(txn_id, amount, Some(summary.card_number.clone()), funding) {
        Ok(receipt) => {
            let before = i64::from(receipt.balance_before_fen);
            let after = i64::from(receipt.balance_after_fen);
            let settled = svc
                .host
                .settle(&order.order_id, &operator, before, after)
                .map_err(|e| {
                    format!(
                        "卡片已充值成功，但订单 {} 未能记为成功（{e}）；系统会根据圈存记录自动补记，切勿重复充值",
                        order.order_id
                    )
                })?;
            Ok(RechargeDone {
                order_id: settled.order_id,
                card_number: settled.card_number,
                balance_before: yuan(before),
                amount: yuan(settled.amount_fen),
                balance_after: yuan(after),
                quota_before: yuan(settled.quota_before_fen),
                quota_after: yuan(settled.quota_after_fen),
            })
        }
        Err(e) => Err(settle_failed_recharge(
            svc,
            daemon.journal.as_deref(),
            &order,
            &operator,
            &e,
        )),
    }
}

/// Before a new recharge: the card on the reader settles what is pending on it first. An
/// unsettled order of this card that the card now proves credited ends this call (the
/// operator's retry is the same intent: it is not paid twice); one still unknown refuses it.
fn settle_card_first(
    daemon: &Arc<Daemon>,
    card: &crate::flows::CardModule,
    svc: &GroupServices,
    group_id: &str,
    card_number: &str,
) -> Result<(), String> {
    let Some(journal) = daemon.journal.as_ref() else {
        return Err(daemon
            .verified_journal()
            .err()
            .map(|e| e.message)
            .unwrap_or_default());
    };
    let open = journal
        .open_for_card(card_number)
        .map_err(|e| crate::errors::journal_error(e).message)?;
    let mut unsettled = svc
        .host
        .orders_in(OrderStatus::Reserved)
        .map_err(|e| e.to_string())?;
    unsettled.extend(
        svc.host
            .orders_in(OrderStatus::Pending)
            .map_err(|e| e.to_string())?,
    );
    unsettled.retain(|o| o.card_number == card_number);
    if open.is_none() && unsettled.is_empty() {
        return tell_settled_once(svc, group_id, card_number);
    }
    if open.is_some() {
        let d = daemon.clone();
        if let Ok(Some(outcome)) =
            card.on_reader(move |reader| crate::recovery::recover_on(&d, reader))
        {
            tracing::info!(
                ?outcome,
                "pending load settled from the card before a recharge"
            );
        }
    }
    reconcile(daemon).map_err(|e| e.message)?;
    for earlier in &unsettled {
        if let Ok(Some(now)) = svc.host.order(&earlier.order_id) {
            if now.status == OrderStatus::Succeeded {
                svc.told
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(now.order_id.clone());
                return Err(format!(
                    "卡片已确认：订单 {} 已充值成功（{} 元），本次未再充值；请勿重复充值",
                    now.order_id,
                    yuan(now.amount_fen)
                ));
            }
        }
    }
    crate::intent::refuse_if_card_blocked_in(daemon, card_number).map_err(|e| e.message)?;
    tell_settled_once(svc, group_id, card_number)
}

/// An order of this card that was 结果待确认 and has since been settled as 充值成功 from the
/// card: the operator who was told "unknown" may not know yet, and a new recharge is likely
/// the same intent tried again. The first new recharge after such a settlement is refused with
/// the order's result; a later one goes ahead.
fn tell_settled_once(svc: &GroupServices, group_id: &str, card_number: &str) -> Result<(), String> {
    let period = Period::preset(Preset::Last7Days, time::OffsetDateTime::now_utc());
    let orders = svc
        .host
        .orders(group_id, &period)
        .map_err(|e| e.to_string())?;
    let mut told = svc.told.lock().unwrap_or_else(|p| p.into_inner());
    for order in orders.iter().filter(|o| {
        o.card_number == card_number
            && o.status == OrderStatus::Succeeded
            && o.history
                .iter()
                .any(|h| h.from.as_deref() == Some(OrderStatus::Pending.code()))
    }) {
        if told.insert(order.order_id.clone()) {
            return Err(format!(
                "卡片已确认：此前结果待确认的订单 {} 已充值成功（{} 元），本次未再充值，请勿重复充值；如确需再次充值，请重新办理",
                order.order_id,
                yuan(order.amount_fen)
            ));
        }
    }
    Ok(())
}

/// What a recharge that did not end in a receipt means for its order, decided by the journal
/// (never by the error's wording): credited → 充值成功; provably not credited → 充值失败（待退款）;
/// anything else → 结果待确认, settled when the card is presented again. Returns the operator's
/// message.
fn settle_failed_recharge(
    svc: &GroupServices,
    journal: Option<&cardd_journal::Journal>,
    order: &RechargeOrder,
    operator: &str,
    e: &dyn std::fmt::Display,
) -> RechargeStop {
    let why = e.to_string();
    let why = why
        .rsplit_once(": ")
        .map_or(why.as_str(), |(_, m)| m)
        .to_owned();
    let outcome = match journal {
        Some(j) => IntentOutcome::of(j, &order.txn_id),
        None => IntentOutcome::Unknown(None),
    };
    tracing::warn!(order = %order.order_id, txn = %order.txn_id, error = %why, ?outcome, "group recharge did not complete");
    match outcome {
        IntentOutcome::Credited(txn) => {
            let before = i64::from(txn.session.init.old_balance);
            match svc
                .host
                .settle(&order.order_id, operator, before, before + order.amount_fen)
            {
                Ok(o) => format!(
                    "卡片已确认充值成功：订单 {} 已记为充值成功（{} 元），请勿重复充值",
                    o.order_id,
                    yuan(o.amount_fen)
                )
                .into(),
                Err(err) => {
                    tracing::error!(order = %order.order_id, error = %err, "could not settle a credited group order; reconciliation will");
                    format!(
                        "卡片已充值成功，但订单 {} 未能记为成功（{err}）；系统会根据圈存记录自动补记，切勿重复充值",
                        order.order_id
                    )
                    .into()
                }
            }
        }
        IntentOutcome::NotCredited(_) => {
            if let Err(fail) = svc.host.fail(&order.order_id, operator, &why) {
                tracing::error!(order = %order.order_id, error = %fail, "could not mark a group order failed; reconciliation will");
            }
            format!(
                "充值失败：{why}。卡片未被写入，订单 {} 已记为充值失败（待退款），扣减的额度经审核后退回（1-3个工作日）",
                order.order_id
            )
            .into()
        }
        IntentOutcome::Unknown(_) => {
            if let Err(err) = svc.host.mark_pending(&order.order_id, operator, &why) {
                tracing::error!(order = %order.order_id, error = %err, "could not mark a group order pending; reconciliation will");
            }
            RechargeStop {
                message: format!(
                    "充值结果待确认：订单 {}（卡号 {}，{} 元）已发送写卡指令，但未收到卡片的确认。请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
                    order.order_id,
                    order.card_number,
                    yuan(order.amount_fen)
                ),
                pending_order: Some(order.order_id.clone()),
            }
        }
    }
}

/// Who declared by hand that `order`'s load did not land (`journal.resolve`, or the two
/// people of a lost-card verdict), if people did.
fn manual_not_landed_by(daemon: &Daemon, order: &RechargeOrder) -> Vec<String> {
    let Some(Ok(Some(txn))) = daemon.journal.as_ref().map(|j| j.get(&order.txn_id)) else {
        return Vec::new();
    };
    match txn.state {
        TxnState::NotApplied {
            resolution: cardd_journal::Resolution::Manual { operator, .. },
        } => vec![operator],
        TxnState::NotApplied {
            resolution:
                cardd_journal::Resolution::LostCard {
                    proposed_by,
                    confirmed_by,
                    ..
                },
        } => vec![proposed_by, confirmed_by],
        _ => Vec::new(),
    }
}

/// Settles reserved orders whose run is gone, from the journal: committed → succeeded;
/// proven not applied, or no load ever recorded → failed (refund pending); still open → left
/// reserved until the card is presented. Returns how many orders changed.
pub fn reconcile(daemon: &Daemon) -> Result<usize, ApiError> {
    let (Ok(svc), Some(journal)) = (services(daemon), daemon.journal.as_ref()) else {
        return Ok(0);
    };
    let mut changed = 0;
    let mut unsettled = svc.host.orders_in(OrderStatus::Reserved)?;
    unsettled.extend(svc.host.orders_in(OrderStatus::Pending)?);
    for order in unsettled {
        // Settled under the in-flight lock, so no recharge of this order can start meanwhile.
        let settled = svc.inflight.unless_in_flight(&order.order_id, || {
            let txn = journal
                .get(&order.txn_id)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok::<_, ApiError>(match txn.as_ref().map(|t| &t.state) {
                Some(TxnState::Committed { .. }) => {
                    let before = txn
                        .as_ref()
                        .map_or(0, |t| i64::from(t.session.init.old_balance));
                    Some(svc.host.settle(
                        &order.order_id,
                        "cardd",
                        before,
                        before + order.amount_fen,
                    ))
                }
                Some(TxnState::NotApplied { .. }) => Some(svc.host.fail(
                    &order.order_id,
                    "cardd",
                    "卡片证明圈存未成功（业务中断后由卡片确认）",
                )),
                None => Some(svc.host.fail(
                    &order.order_id,
                    "cardd",
                    "业务在写卡前中断，卡片未充值",
                )),
                // CREDIT may have reached the card: 结果待确认 until the card is presented.
                Some(_) if order.status == OrderStatus::Reserved => Some(svc.host.mark_pending(
                    &order.order_id,
                    "cardd",
                    "业务中断，写卡结果未知，待卡片确认",
                )),
                Some(_) => None,
            })
        });
        // In flight, or still open in the journal: left for later.
        let Some(result) = settled.transpose()?.flatten() else {
            continue;
        };
        match result {
            Ok(o) => {
                tracing::warn!(order = %o.order_id, status = o.status.code(), "group order settled from the journal");
                changed += 1;
            }
            Err(e) => {
                tracing::error!(order = %order.order_id, error = %e, "group order reconciliation failed")
            }
        }
    }
    Ok(changed)
}

/// Runs [`reconcile`] at start-up and after every load the daemon resolves from a card.
pub fn spawn_reconciler(daemon: &Arc<Daemon>) {
    if daemon.group.is_none() {
        return;
    }
    let weak = Arc::downgrade(daemon);
    let mut rx = daemon.events.subscribe();
    tokio::spawn(async move {
        let run = |weak: &std::sync::Weak<Daemon>| {
            let weak = weak.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(d) = weak.upgrade() {
                    if let Err(e) = reconcile(&d) {
                        tracing::error!(error = %e, "group order reconciliation failed");
                    }
                }
            })
        };
        let _ = run(&weak).await;
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if matches!(event.kind, crate::events::EventKind::LoadResolved { .. }) {
                        let _ = run(&weak).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let _ = run(&weak).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            if weak.strong_count() == 0 {
                return;
            }
        }
    });
}

/// The card evidence an auditor sees for an order.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Evidence {
    /// The order.
    pub order: OrderRow,
    /// Its journal transaction.
    pub txn_id: String,
    /// `none`, `intent`, `committed`, `not_applied`, `needs_reconciliation`.
    pub journal_state: String,
    /// How the journal decided (`card_response`, `recovery`, `manual`), when it did.
    pub decided_by: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// The verdict in words, with what to do (zh-CN).
    pub message: String,
    /// The card's balance before the load, as the card reported it (yuan), when a load started.
    pub card_balance_before: Option<String>,
    /// The card's balance after a landed load (yuan).
    pub card_balance_after: Option<String>,
    /// The card's online counter before the load, when a load started.
    pub online_atc_before: Option<u16>,
    /// What the card itself shows, when the auditor asked with the card on a reader.
    pub card: Option<CardCheck>,
}

/// The order's card read on a reader: does it hold the proof of this order's load?
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CardCheck {
    pub reader_id: String,
    pub card_number: String,
    /// The card's balance now, yuan.
    pub balance: Option<String>,
    /// The card answered GET TRANSACTION PROVE for the load's counter with our MAC2 and a TAC
    /// that verifies: the card was credited with this load.
    pub proof_of_this_load: bool,
    /// What the card shows, in words (zh-CN).
    pub message: String,
}

/// Reads the order's card on `reader_id`: its number must be the order's; GET TRANSACTION
/// PROVE for the load's counter tells whether the card holds this load.
async fn card_check(
    d: &Arc<Daemon>,
    c: &Caller,
    order: &RechargeOrder,
    reader_id: &str,
) -> Result<CardCheck, ApiError> {
    let txn = d
        .journal
        .as_ref()
        .and_then(|j| j.get(&order.txn_id).ok().flatten());
    let (pin, terminal) = (d.config.etc_pin.clone(), d.config.terminal_id);
    let sam = d.sam.clone();
    let session = txn.map(|t| t.session);
    let (summary, proof) = d
        .readers
        .run(reader_id, &c.holder()?, move |reader| {
            let summary = crate::summary::read(reader, &pin, terminal)?;
            let proof = match session.as_ref().and_then(|s| s.atc_after().map(|a| (s, a))) {
                Some((session, atc)) => {
                    let mut purse = cardd_purse::Purse::new(reader);
                    purse.select_etc_adf()?;
                    purse
                        .prove(cardd_purse::TransactionType::EpLoad, atc)?
                        .map(|p| {
                            p.mac == session.mac2 && session.verify_tac(sam.as_ref(), p.tac).is_ok()
                        })
                }
                None => None,
            };
            Ok::<_, ApiError>((summary, proof))
        })
        .await??;
    if summary.card_number != order.card_number {
        return Err(ApiError::invalid_params(format!(
            "读卡器上是卡号 {}，不是该订单的卡号 {}；请放置该订单的卡片",
            summary.card_number, order.card_number
        )));
    }
    let found = proof == Some(true);
    let message = match proof {
        Some(true) => "卡片存有该笔圈存的交易证明：金额已进入卡内".to_owned(),
        Some(false) => "卡片该序号的交易证明不是该笔圈存的".to_owned(),
        None if session.is_none() => "该订单未写卡：卡片上没有该笔圈存".to_owned(),
        None => "卡片没有该笔圈存的交易证明".to_owned(),
    };
    Ok(CardCheck {
        reader_id: reader_id.to_owned(),
        card_number: summary.card_number,
        balance: summary.balance,
        proof_of_this_load: found,
        message,
    })
}

/// The evidence for `order`.
pub fn evidence(daemon: &Daemon, order: &RechargeOrder) -> Result<Evidence, ApiError> {
    let svc = services(daemon)?;
    let journal = daemon
        .journal
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::FailedClosed, "圈存记录未通过完整性检查"))?;
    let txn = journal
        .get(&order.txn_id)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let inflight = svc.inflight.contains(&order.order_id);
    let before = txn.as_ref().map(|t| i64::from(t.session.init.old_balance));
    let (state, decided_by, verdict, message) = match txn.as_ref().map(|t| &t.state) {
        Some(TxnState::Committed { resolution, .. }) => (
            "committed",
            Some(resolution_name(resolution)),
            Verdict::Landed,
            "卡片已圈存成功：该订单的金额已在卡内，不能退款；请改为充值成功".to_owned(),
        ),
        Some(TxnState::NotApplied { resolution }) => (
            "not_applied",
            Some(resolution_name(resolution)),
            Verdict::NotLanded,
            "卡片证明圈存未成功：金额未进入卡内，可以退回额度".to_owned(),
        ),
        Some(TxnState::Intent) => (
            "intent",
            None,
            Verdict::Unknown,
            format!(
                "圈存结果未知：请将卡号 {} 的卡片放到读卡器上，系统会根据卡片确认结果后再审核",
                order.card_number
            ),
        ),
        Some(TxnState::NeedsReconciliation { .. }) => (
            "needs_reconciliation",
            None,
            Verdict::Unknown,
            "卡片无法证明圈存是否成功：请主管或审核员在“待核对圈存”中核对卡片后判定（journal.resolve），之后再审核".to_owned(),
        ),
        None if inflight => (
            "none",
            None,
            Verdict::Unknown,
            "该订单正在充值，请稍后再审核".to_owned(),
        ),
        None => (
            "none",
            None,
            Verdict::NotLanded,
            "该订单在写卡前已中断，卡片未充值，可以退回额度".to_owned(),
        ),
    };
    let mut row = OrderRow::from(order);
    row.name_people(&|u| crate::rpc::operator_name(daemon, u));
    Ok(Evidence {
        order: row,
        txn_id: order.txn_id.clone(),
        journal_state: state.into(),
        decided_by,
        verdict,
        message,
        card_balance_before: before.map(yuan),
        card_balance_after: (verdict == Verdict::Landed)
            .then(|| before.map(|b| yuan(b + order.amount_fen)))
            .flatten(),
        online_atc_before: txn.as_ref().map(|t| t.session.init.online_atc),
        card: None,
    })
}

fn resolution_name(r: &cardd_journal::Resolution) -> String {
    match r {
        cardd_journal::Resolution::CardResponse => "card_response".into(),
        cardd_journal::Resolution::Recovery => "recovery".into(),
        cardd_journal::Resolution::CardLog => "card_log".into(),
        cardd_journal::Resolution::Manual { .. } => "manual".into(),
        cardd_journal::Resolution::LostCard { .. } => "lost_card".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters and results.

/// Implements [`AuditDetail`] for parameter types without secrets, naming `$target`.
macro_rules! group_audit {
    ($($t:ty => $target:expr;)*) => {$(
        impl AuditDetail for $t {
            fn audit_detail(&self) -> Value {
                serde_json::to_value(self).unwrap_or(Value::Null)
            }
            fn audit_target(&self) -> Option<String> {
                #[allow(clippy::redundant_closure_call)]
                ($target)(self)
            }
        }
    )*};
}

/// `group.login`: the seed's 集团充值登录 (the group's site, then user name and password).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupLoginParams {
    /// 集团编号 of the group site the operator logs into.
    pub group_id: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for GroupLoginParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupLoginParams(..)")
    }
}

impl AuditDetail for GroupLoginParams {
    fn audit_detail(&self) -> Value {
        json!({ "group_id": self.group_id.chars().take(64).collect::<String>() })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.chars().take(64).collect())
    }
}

/// What `group.login` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GroupLoginResult {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub operator: SessionView,
    /// The session ends after this many seconds without a request (then log in again).
    pub idle_timeout_s: u64,
    pub group: GroupView,
}

/// A group, optionally named (group operators may name only their own).
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupScope {
    pub group_id: Option<String>,
}

/// What `group.info` returns: the top of the recharge page.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GroupInfo {
    #[serde(flatten)]
    pub group: GroupView,
    /// 集团操作员 (the caller).
    pub operator: String,
    /// The operator's display name.
    pub operator_name: String,
    /// The amounts the page offers (yuan).
    pub amount_presets: Vec<String>,
}

/// A query period: `preset`, or `start_date` and/or `end_date` (`YYYY-MM-DD`, China dates, both
/// inclusive). A start date alone means from that day to today; an end date alone means the
/// longest period allowed (366 days) up to that day; reversed dates are refused; nothing at all
/// means 最近7天.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    pub group_id: Option<String>,
    pub preset: Option<Preset>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
}

/// The file formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
}

/// A query to export.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub group_id: Option<String>,
    pub preset: Option<Preset>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub format: ExportFormat,
}

impl ExportParams {
    /// The query whose rows are exported.
    fn query(&self) -> QueryParams {
        QueryParams {
            group_id: self.group_id.clone(),
            preset: self.preset,
            start_date: self.start_date.clone(),
            end_date: self.end_date.clone(),
        }
    }
}

/// The period a query covered.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PeriodView {
    /// `YYYY-MM-DD`.
    pub start_date: String,
    /// `YYYY-MM-DD`.
    pub end_date: String,
    /// 最近7天 …, or 自定义.
    pub label: String,
}

/// A query page: 充值查询 ([`OrdersResult`]) or 额度充值查询 ([`TopUpsResult`]).
#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryResult<R, S> {
    pub group_id: String,
    pub group_name: String,
    pub period: PeriodView,
    /// Newest first.
    pub rows: Vec<R>,
    pub stats: S,
}

/// `group.orders` (充值查询).
pub type OrdersResult = QueryResult<OrderRow, OrderStats>;

/// `group.topups` (额度充值查询).
pub type TopUpsResult = QueryResult<TopUpRow, TopUpStats>;

/// An exported file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportResult {
    /// A file name to save it under.
    pub filename: String,
    /// `text/csv; charset=utf-8` or the XLSX media type.
    pub content_type: String,
    /// Rows written (the headers not counted): exactly the rows of the same query.
    pub rows: usize,
    /// The file, base64 (standard alphabet, padded).
    pub data_base64: String,
}

/// `group.topup` (额度充值): 转账金额 (a positive whole number of yuan) and 备注.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpParams {
    /// Decimal yuan string, a whole number (`"5000"` or `"5000.00"`).
    pub amount: String,
    #[serde(default)]
    pub remark: String,
}

/// The transfer result page (转账成功).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TopUpResult {
    /// 订单编号.
    pub topup_id: String,
    /// 充值转账金额, yuan.
    pub amount: String,
    /// 银行返回流水号 (once paid).
    pub bank_serial: Option<String>,
    /// 集团名称.
    pub group_name: String,
    pub group_id: String,
    /// 操作员.
    pub operator: String,
    pub status: TopUpStatus,
    pub status_label: String,
    /// What to tell the operator.
    pub message: String,
}

/// A top-up id.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpIdParams {
    pub topup_id: String,
}

/// `group.audit.topup`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditTopUpParams {
    pub topup_id: String,
    /// `true` approves (the quota grows), `false` rejects.
    pub approve: bool,
    pub reason: String,
}

/// `group.audit.evidence`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceParams {
    pub order_id: String,
    /// A reader holding the order's card: the card is read too (its proof of the load).
    pub reader_id: Option<String>,
}

/// `group.audit.refund`, `group.audit.resolve`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderDecisionParams {
    pub order_id: String,
    pub reason: String,
}

/// What waits for an auditor.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditPending {
    /// Transfers the bank paid, to approve or reject (oldest first).
    pub topups: Vec<PendingTopUp>,
    /// Failed recharges with their card evidence (oldest first).
    pub orders: Vec<Evidence>,
}

/// A paid transfer awaiting audit.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingTopUp {
    pub group_id: String,
    #[serde(flatten)]
    pub row: TopUpRow,
}

/// `group.batch.create`: cards and amounts (yuan strings).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateParams {
    pub items: Vec<BatchItemParams>,
}

/// One card of a new batch.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemParams {
    pub card_number: String,
    /// Decimal yuan string.
    pub amount: String,
}

/// A batch id.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIdParams {
    pub batch_id: String,
}

/// A batch with each card's outcome (the per-card report).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BatchReport {
    pub batch_id: String,
    pub group_id: String,
    pub items: Vec<BatchItemReport>,
    /// Cards in the batch.
    pub total: usize,
    /// Cards not tried yet.
    pub pending: usize,
    /// Cards recharged.
    pub succeeded: usize,
    /// Cards whose recharge failed (refund pending or refunded).
    pub failed: usize,
    /// Cards whose recharge is still in progress or unsettled.
    pub in_progress: usize,
}

/// One card's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BatchItemReport {
    /// From 0.
    pub index: usize,
    pub card_number: String,
    /// Yuan.
    pub amount: String,
    /// In fen, for flows.
    pub amount_fen: i64,
    /// `pending` (not tried yet) or the order's status.
    pub status: String,
    pub status_label: String,
    pub order_id: Option<String>,
    /// 现余额 after a successful recharge, yuan.
    pub balance_after: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// `group.ledger`.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerParams {
    pub group_id: Option<String>,
    /// Entries after this sequence number (0 for all).
    #[serde(default)]
    pub after_seq: u64,
    /// At most this many (default and maximum 1000).
    pub limit: Option<usize>,
}

group_audit! {
    GroupScope => |p: &GroupScope| p.group_id.clone();
    QueryParams => |p: &QueryParams| p.group_id.clone();
    ExportParams => |p: &ExportParams| p.group_id.clone();
    TopUpParams => |_: &TopUpParams| None;
    TopUpIdParams => |p: &TopUpIdParams| Some(p.topup_id.clone());
    AuditTopUpParams => |p: &AuditTopUpParams| Some(p.topup_id.clone());
    EvidenceParams => |p: &EvidenceParams| Some(p.order_id.clone());
    OrderDecisionParams => |p: &OrderDecisionParams| Some(p.order_id.clone());
    BatchCreateParams => |_: &BatchCreateParams| None;
    BatchIdParams => |p: &BatchIdParams| Some(p.batch_id.clone());
    LedgerParams => |p: &LedgerParams| p.group_id.clone();
    GroupInput => |p: &GroupInput| Some(p.group_id.clone());
}

// ---------------------------------------------------------------------------------------------
// Helpers of the handlers.

fn period_of(
    preset: Option<Preset>,
    start: Option<&str>,
    end: Option<&str>,
) -> Result<(Period, String), ApiError> {
    let now = time::OffsetDateTime::now_utc();
    match (preset, start, end) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::invalid_params(
            "请选择时间段（preset）或输入起止日期（start_date、end_date），不要同时给出",
        )),
        (Some(p), None, None) => Ok((Period::preset(p, now), p.label().into())),
        (None, Some(s), Some(e)) => Period::dates(s, e)
            .map(|p| (p, "自定义".into()))
            .map_err(ApiError::invalid_params),
        (None, Some(s), None) => Period::since(s, now)
            .map(|p| (p, "自定义".into()))
            .map_err(ApiError::invalid_params),
        (None, None, Some(e)) => Period::until(e)
            .map(|p| (p, "自定义".into()))
            .map_err(ApiError::invalid_params),
        (None, None, None) => Ok((
            Period::preset(Preset::Last7Days, now),
            Preset::Last7Days.label().into(),
        )),
    }
}

fn period_view(period: &Period, label: String) -> PeriodView {
    PeriodView {
        start_date: period.start.to_string(),
        end_date: period.end.to_string(),
        label,
    }
}

/// One query page: the caller's (or the named) group, the period, rows of `T` newest first.
fn query<T, R, S>(
    d: &Daemon,
    c: &Caller,
    q: &QueryParams,
    fetch: impl Fn(&GroupServices, &str, &Period) -> Result<Vec<T>, cardd_store::GroupError>,
    stats: impl Fn(&[T]) -> S,
) -> Result<QueryResult<R, S>, ApiError>
where
    R: for<'a> From<&'a T> + NamedRow,
{
    let svc = services(d)?;
    let group_id = scope(c, q.group_id.as_deref())?;
    let group = the_group(svc, c.session.as_ref(), &group_id)?;
    let (period, label) = period_of(q.preset, q.start_date.as_deref(), q.end_date.as_deref())?;
    reconcile(d)?;
    let records = fetch(svc, &group_id, &period)?;
    Ok(QueryResult {
        group_id,
        group_name: group.name,
        period: period_view(&period, label),
        rows: records
            .iter()
            .map(|r| {
                let mut row = R::from(r);
                row.name_people(&|u| crate::rpc::operator_name(d, u));
                row
            })
            .collect(),
        stats: stats(&records),
    })
}

fn query_orders(d: &Daemon, c: &Caller, q: &QueryParams) -> Result<OrdersResult, ApiError> {
    query(d, c, q, |svc, g, p| svc.host.orders(g, p), OrderStats::of)
}

fn query_topups(d: &Daemon, c: &Caller, q: &QueryParams) -> Result<TopUpsResult, ApiError> {
    query(d, c, q, |svc, g, p| svc.host.topups(g, p), TopUpStats::of)
}

/// The file of exactly the rows of `result`.
fn export<R, S>(
    d: &Daemon,
    title: &str,
    result: &QueryResult<R, S>,
    format: ExportFormat,
    headers: &[&str],
    cells: fn(&R) -> Vec<group_export::Cell>,
) -> Result<ExportResult, ApiError> {
    use base64::Engine;
    let (group_id, period) = (&result.group_id, &result.period);
    let rows: Vec<Vec<group_export::Cell>> = result.rows.iter().map(cells).collect();
    let (bytes, extension, content_type) = match format {
        ExportFormat::Csv => (
            group_export::to_csv(headers, &rows),
            "csv",
            "text/csv; charset=utf-8",
        ),
        ExportFormat::Xlsx => (
            group_export::to_xlsx(title, headers, &rows),
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    };
    let bytes = bytes.map_err(|e| ApiError::internal(e.to_string()))?;
    let data_base64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    // Leave room for the rest of the answer within the response limit.
    let limit = d.config.limits.response_body_bytes_max as usize;
    if data_base64.len() + 4096 > limit {
        return Err(ApiError::new(
            ErrorCode::QueryTooLarge,
            format!(
                "导出文件过大（{} 字节），请缩短查询时间段后分次导出",
                bytes.len()
            ),
        ));
    }
    Ok(ExportResult {
        filename: format!(
            "{title}_{group_id}_{}_{}.{extension}",
            period.start_date, period.end_date
        ),
        content_type: content_type.into(),
        rows: rows.len(),
        data_base64,
    })
}

fn auditor(c: &Caller) -> Result<String, ApiError> {
    Ok(c.session()?.username.clone())
}

fn visible_order(d: &Daemon, c: &Caller, order_id: &str) -> Result<RechargeOrder, ApiError> {
    let order = services(d)?.host.order(order_id).ok().flatten();
    owned(c, order, |o| &o.group_id, "充值订单", order_id)
}

fn visible_topup(d: &Daemon, c: &Caller, topup_id: &str) -> Result<TopUp, ApiError> {
    let topup = services(d)?.host.topup(topup_id).ok().flatten();
    owned(c, topup, |t| &t.group_id, "额度充值订单", topup_id)
}

/// The per-card report of a batch.
pub fn batch_report(svc: &GroupServices, batch_id: &str) -> Result<Option<BatchReport>, ApiError> {
    let Some(batch) = svc.host.batch(batch_id)? else {
        return Ok(None);
    };
    let mut items = Vec::with_capacity(batch.items.len());
    let (mut pending, mut succeeded, mut failed, mut in_progress) = (0, 0, 0, 0);
    for (index, item) in batch.items.iter().enumerate() {
        let order = match &item.order_id {
            Some(id) => svc.host.order(id)?,
            None => None,
        };
        let (status, label) = match &order {
            None => {
                pending += 1;
                ("pending".to_owned(), "待充值".to_owned())
            }
            Some(o) => {
                match o.status {
                    OrderStatus::Succeeded => succeeded += 1,
                    OrderStatus::Failed | OrderStatus::Refunded => failed += 1,
                    // 结果待确认 is neither a success nor a failure: still in progress.
                    OrderStatus::Reserved | OrderStatus::Pending => in_progress += 1,
                }
                (o.status.code().to_owned(), o.status.label().to_owned())
            }
        };
        items.push(BatchItemReport {
            index,
            card_number: item.card_number.clone(),
            amount: yuan(item.amount_fen),
            amount_fen: item.amount_fen,
            status,
            status_label: label,
            order_id: item.order_id.clone(),
            balance_after: order.as_ref().and_then(|o| o.balance_after_fen).map(yuan),
            failure: order.as_ref().and_then(|o| o.failure.clone()),
        });
    }
    Ok(Some(BatchReport {
        batch_id: batch.batch_id,
        group_id: batch.group_id,
        total: items.len(),
        items,
        pending,
        succeeded,
        failed,
        in_progress,
    }))
}

fn topup_result(t: &TopUp, group: &Group, message: String) -> TopUpResult {
    TopUpResult {
        topup_id: t.topup_id.clone(),
        amount: yuan(t.amount_fen),
        bank_serial: t.bank_serial.clone(),
        group_name: group.name.clone(),
        group_id: group.group_id.clone(),
        operator: t.operator.clone(),
        status: t.status,
        status_label: t.status.label().into(),
        message,
    }
}

fn topup_message(t: &TopUp) -> String {
    match t.status {
        TopUpStatus::Paid => {
            "转账成功！一卡通操作员会进行后续审核工作，审核通过后集团额度增加".into()
        }
        TopUpStatus::Approved => "审核通过，集团额度已增加".into(),
        TopUpStatus::Rejected => "审核未通过，集团额度未变".into(),
        TopUpStatus::Failed => format!(
            "转账失败：{}；未扣款，可重新转账",
            t.bank_message.clone().unwrap_or_default()
        ),
        TopUpStatus::Unknown | TopUpStatus::Pending => {
            "支付结果未知：请勿重复转账，稍后用“查询”获取银行结果".into()
        }
    }
}

/// Asks the bank again about a top-up whose answer is not known (and whose payment call is not
/// running in this process).
fn refresh_topup(svc: &GroupServices, topup: TopUp) -> Result<TopUp, ApiError> {
    if !topup.status.awaiting_bank() || lock(&svc.paying).contains(&topup.topup_id) {
        return Ok(topup);
    }
    let outcome = match svc.bank.query(&topup.topup_id) {
        Ok(Some(receipt)) => PaymentOutcome::Paid {
            bank_serial: receipt.bank_serial,
        },
        Ok(None) => PaymentOutcome::Declined {
            message: "银行无此笔转账，未扣款".into(),
        },
        Err(e) => {
            return Err(ApiError::from(e));
        }
    };
    Ok(svc.host.record_payment(&topup.topup_id, &outcome)?)
}

fn parse_yuan(text: &str, what: &str) -> Result<i64, ApiError> {
    Fen::parse_yuan(text)
        .map(|f| f.0)
        .map_err(|e| ApiError::invalid_params(format!("{what}不正确：{e}")))
}

// ---------------------------------------------------------------------------------------------
// The methods.

const GROUP_OPS: Access = Access::Roles(&[Role::GroupOperator]);
const GROUP_READERS: Access = Access::Roles(&[
    Role::GroupOperator,
    Role::Auditor,
    Role::Supervisor,
    Role::Admin,
]);
const AUDITORS: Access = Access::Roles(&[Role::Auditor]);
const AUDIT_READERS: Access = Access::Roles(&[Role::Auditor, Role::Supervisor, Role::Admin]);
const ADMIN: Access = Access::Roles(&[Role::Admin]);

/// Registers the `group.*` and `groups.*` methods.
pub fn add_group_methods(m: &mut Methods) {
    m.add(
        "group.login",
        "集团充值登录: log into a group's site; an operator who is not of that group gets 用户和密码错误.",
        Access::Public,
        true,
        |d, c, p: GroupLoginParams| async move {
            let svc = services(&d)?;
            let session = d
                .auth
                .login(&p.username, &p.password, &c.peer, Instant::now())?;
            let group = svc
                .host
                .group(p.group_id.trim())
                .ok()
                .flatten()
                .filter(|_| {
                    session.role == Role::GroupOperator
                        && session.group_id.as_deref() == Some(p.group_id.trim())
                });
            let Some(group) = group else {
                d.auth.logout(&session.token);
                return Err(crate::auth::AuthError::InvalidCredentials.into());
            };
            Ok(GroupLoginResult {
                token: session.token.clone(),
                operator: SessionView::from(&session),
                idle_timeout_s: d.config.auth.session_idle_timeout_s,
                group: GroupView::from(&group),
            })
        },
    );

    m.add(
        "group.info",
        "The recharge page's header: group name, terminal number, available quota, operator.",
        GROUP_READERS,
        false,
        |d, c, p: GroupScope| async move {
            let svc = services(&d)?;
            let group_id = scope(&c, p.group_id.as_deref())?;
            let group = the_group(svc, c.session.as_ref(), &group_id)?;
            let s = c.session()?;
            Ok(GroupInfo {
                group: GroupView::from(&group),
                operator: s.username.clone(),
                operator_name: s.display_name.clone(),
                amount_presets: cardd_store::group_model::recharge_rules()
                    .presets
                    .into_iter()
                    .map(|p| p.amount)
                    .collect(),
            })
        },
    );

    m.add(
        "group.rules",
        "The group recharge rules (step, minimum, card balance ceiling, in fen and short yuan) and the amounts the recharge page offers.",
        GROUP_READERS,
        false,
        |_, _, _: NoParams| async move { Ok(cardd_store::group_model::recharge_rules()) },
    );

    m.add(
        "group.orders",
        "充值查询: the group's card recharges in a period (preset or dates) with success and failure statistics.",
        GROUP_READERS,
        false,
        |d, c, p: QueryParams| async move { query_orders(&d, &c, &p) },
    );

    m.add(
        "group.orders.export",
        "Export exactly the rows of 充值查询 as CSV or XLSX (zh-CN headers), base64.",
        GROUP_READERS,
        false,
        |d, c, p: ExportParams| async move {
            let result = query_orders(&d, &c, &p.query())?;
            export(
                &d,
                "充值查询",
                &result,
                p.format,
                &group_export::ORDER_HEADERS,
                OrderRow::cells,
            )
        },
    );

    m.add(
        "group.topup",
        "额度充值: transfer a whole number of yuan to the card company through the payment gateway; the quota grows after an auditor approves. A declined transfer is PaymentDeclined, an unanswered one PaymentUnknown (data.detail.topup_id to ask again).",
        GROUP_OPS,
        true,
        |d, c, p: TopUpParams| async move {
            let svc = services(&d)?;
            let s = c.session()?;
            let group_id = scope(&c, None)?;
            let group = the_group(svc, Some(s), &group_id)?;
            let amount_fen = parse_yuan(&p.amount, "转账金额")?;
            let topup = svc.host.create_topup(&group_id, &s.username, amount_fen, &p.remark)?;
            lock(&svc.paying).insert(topup.topup_id.clone());
            let bank = svc.bank.clone();
            let request = PaymentRequest {
                payment_id: topup.topup_id.clone(),
                amount_fen,
                payer: group.name.clone(),
                remark: topup.remark.clone(),
            };
            let paying = tokio::task::spawn_blocking(move || bank.pay(&request));
            let paid = match tokio::time::timeout(PAYMENT_WAIT, paying).await {
                Ok(joined) => joined.unwrap_or_else(|e| Err(PaymentError::Gateway(e.to_string()))),
                Err(_) => Err(PaymentError::NoAnswer(format!("{} 秒内无应答", PAYMENT_WAIT.as_secs()))),
            };
            let outcome = match &paid {
                Ok(receipt) => PaymentOutcome::Paid { bank_serial: receipt.bank_serial.clone() },
                Err(PaymentError::Declined(m)) => PaymentOutcome::Declined { message: m.clone() },
                Err(e) => PaymentOutcome::NoAnswer { message: e.to_string() },
            };
            let recorded = svc.host.record_payment(&topup.topup_id, &outcome);
            lock(&svc.paying).remove(&topup.topup_id);
            let topup = recorded?;
            tracing::info!(topup = %topup.topup_id, group = %group_id, status = topup.status.code(), "quota top-up");
            let detail = json!({ "topup_id": topup.topup_id, "status": topup.status });
            match topup.status {
                TopUpStatus::Failed => Err(ApiError::new(
                    ErrorCode::PaymentDeclined,
                    format!("订单 {}：{}", topup.topup_id, topup_message(&topup)),
                )
                .with_detail(detail)),
                TopUpStatus::Unknown | TopUpStatus::Pending => Err(ApiError::new(
                    ErrorCode::PaymentUnknown,
                    format!("订单 {}：{}", topup.topup_id, topup_message(&topup)),
                )
                .with_detail(detail)),
                _ => Ok(topup_result(&topup, &group, topup_message(&topup))),
            }
        },
    );

    m.add(
        "group.topup_status",
        "A top-up's status; asks the bank again when its answer was lost.",
        GROUP_READERS,
        true,
        |d, c, p: TopUpIdParams| async move {
            let svc = services(&d)?;
            let topup = visible_topup(&d, &c, &p.topup_id)?;
            let group = the_group(svc, c.session.as_ref(), &topup.group_id)?;
            let topup = refresh_topup(svc, topup)?;
            Ok(topup_result(&topup, &group, topup_message(&topup)))
        },
    );

    m.add(
        "group.topups",
        "额度充值查询: the group's transfers in a period with transfer and audit statistics.",
        GROUP_READERS,
        false,
        |d, c, p: QueryParams| async move { query_topups(&d, &c, &p) },
    );

    m.add(
        "group.topups.export",
        "Export exactly the rows of 额度充值查询 as CSV or XLSX (zh-CN headers), base64.",
        GROUP_READERS,
        false,
        |d, c, p: ExportParams| async move {
            let result = query_topups(&d, &c, &p.query())?;
            export(
                &d,
                "额度充值查询",
                &result,
                p.format,
                &group_export::TOPUP_HEADERS,
                TopUpRow::cells,
            )
        },
    );

    m.add(
        "group.ledger",
        "The group's quota ledger (append-only), oldest first.",
        GROUP_READERS,
        false,
        |d, c, p: LedgerParams| async move {
            let svc = services(&d)?;
            let group_id = scope(&c, p.group_id.as_deref())?;
            the_group(svc, c.session.as_ref(), &group_id)?;
            let limit = p.limit.unwrap_or(1000).min(1000);
            let entries = svc.host.ledger(&group_id, p.after_seq, limit)?;
            Ok::<Vec<LedgerRow>, ApiError>(entries.iter().map(LedgerRow::from).collect())
        },
    );

    m.add(
        "group.batch.create",
        "Batch recharge: a queue of cards and amounts, run card by card with the group.batch_recharge flow.",
        GROUP_OPS,
        true,
        |d, c, p: BatchCreateParams| async move {
            let svc = services(&d)?;
            let s = c.session()?;
            let group_id = scope(&c, None)?;
            the_group(svc, Some(s), &group_id)?;
            let mut items = Vec::with_capacity(p.items.len());
            for (i, item) in p.items.iter().enumerate() {
                items.push(BatchItemInput {
                    card_number: item.card_number.clone(),
                    amount_fen: parse_yuan(&item.amount, &format!("第 {} 张卡的充值金额", i + 1))?,
                });
            }
            let batch = svc.host.create_batch(&group_id, &s.username, &items)?;
            batch_report(svc, &batch.batch_id)?
                .ok_or_else(|| ApiError::internal("the new batch is missing"))
        },
    );

    m.add(
        "group.batch.get",
        "A batch with each card's outcome (the per-card report).",
        GROUP_READERS,
        false,
        |d, c, p: BatchIdParams| async move {
            let svc = services(&d)?;
            reconcile(&d)?;
            let report = batch_report(svc, &p.batch_id).ok().flatten();
            owned(&c, report, |r| &r.group_id, "批量充值", &p.batch_id)
        },
    );

    m.add(
        "group.audit.pending",
        "What waits for an auditor: paid transfers to approve, failed recharges with their card evidence.",
        AUDIT_READERS,
        false,
        |d, _, _: NoParams| async move {
            let svc = services(&d)?;
            reconcile(&d)?;
            let topups = svc
                .host
                .topups_in(TopUpStatus::Paid)?
                .iter()
                .map(|t| {
                    let mut row = TopUpRow::from(t);
                    row.name_people(&|u| crate::rpc::operator_name(&d, u));
                    PendingTopUp { group_id: t.group_id.clone(), row }
                })
                .collect();
            let orders = svc
                .host
                .orders_in(OrderStatus::Failed)?
                .iter()
                .map(|o| evidence(&d, o))
                .collect::<Result<_, _>>()?;
            Ok(AuditPending { topups, orders })
        },
    );

    m.add(
        "group.audit.topup",
        "Approve (the quota grows) or reject a paid transfer; each transfer is decided once.",
        AUDITORS,
        true,
        |d, c, p: AuditTopUpParams| async move {
            let svc = services(&d)?;
            let topup = svc
                .host
                .audit_topup(&p.topup_id, &auditor(&c)?, p.approve, &p.reason)?;
            let group = the_group(svc, None, &topup.group_id)?;
            Ok(topup_result(&topup, &group, topup_message(&topup)))
        },
    );

    m.add(
        "group.audit.evidence",
        "The card evidence of an order: did its load land (from the journal, decided from the card)? With reader_id, the card on that reader is read too.",
        AUDIT_READERS,
        false,
        |d, c, p: EvidenceParams| async move {
            reconcile(&d)?;
            let order = visible_order(&d, &c, &p.order_id)?;
            let mut ev = evidence(&d, &order)?;
            if let Some(reader_id) = &p.reader_id {
                ev.card = Some(card_check(&d, &c, &order, reader_id).await?);
            }
            Ok(ev)
        },
    );

    m.add(
        "group.audit.refund",
        "Return a failed order's quota; refused when the card shows the load landed or is unsettled; never twice.",
        AUDITORS,
        true,
        |d, c, p: OrderDecisionParams| async move {
            let svc = services(&d)?;
            reconcile(&d)?;
            let order = visible_order(&d, &c, &p.order_id)?;
            let ev = evidence(&d, &order)?;
            if ev.verdict != Verdict::NotLanded && order.status == OrderStatus::Failed {
                return Err(ApiError::new(ErrorCode::EvidenceConflict, format!("不能退款：{}", ev.message)));
            }
            let approver = auditor(&c)?;
            // Two people: whoever declared the load "not landed" does not also approve its refund.
            for declarer in manual_not_landed_by(&d, &order) {
                if declarer == approver {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!(
                            "不能退款：订单 {} 的“未到卡”由 {declarer} 判定，退款须由另一位审核人员办理",
                            order.order_id
                        ),
                    ));
                }
            }
            let order = svc.host.refund(&p.order_id, &approver, &p.reason)?;
            Ok(OrderRow::from(&order))
        },
    );

    m.add(
        "group.audit.resolve",
        "Resolve a failed order as succeeded when the card shows its load landed.",
        AUDITORS,
        true,
        |d, c, p: OrderDecisionParams| async move {
            let svc = services(&d)?;
            reconcile(&d)?;
            let order = visible_order(&d, &c, &p.order_id)?;
            let ev = evidence(&d, &order)?;
            if ev.verdict != Verdict::Landed && order.status == OrderStatus::Failed {
                return Err(ApiError::new(
                    ErrorCode::EvidenceConflict,
                    format!("不能改为充值成功：{}", ev.message),
                ));
            }
            let balances = d
                .journal
                .as_ref()
                .and_then(|j| j.get(&order.txn_id).ok().flatten())
                .map(|t| {
                    let before = i64::from(t.session.init.old_balance);
                    (before, before + order.amount_fen)
                });
            let order =
                svc.host
                    .resolve_succeeded(&p.order_id, &auditor(&c)?, &p.reason, balances)?;
            Ok(OrderRow::from(&order))
        },
    );

    m.add(
        "groups.list",
        "Every group with its quota.",
        AUDIT_READERS,
        false,
        |d, _, _: NoParams| async move {
            let svc = services(&d)?;
            Ok::<Vec<GroupView>, ApiError>(svc.host.groups()?.iter().map(GroupView::from).collect())
        },
    );

    m.add(
        "groups.upsert",
        "Create a group (no quota) or change its name or terminal number.",
        ADMIN,
        true,
        |d, _, p: GroupInput| async move {
            let svc = services(&d)?;
            Ok(GroupView::from(&svc.host.upsert_group(&p)?))
        },
    );
}
