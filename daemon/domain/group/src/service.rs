//! [`GroupService`]: group recharge as the daemon offers it: the recharge itself (quota
//! reserved durably before the card is credited, settled after), reconciliation of orders with
//! the journal, the auditor's card evidence and decisions, top-ups through the payment gateway,
//! batches, queries and exports, and who sees which group.
//!
//! **Who sees what.** A group operator acts only on their own group: naming another group, or
//! an order, top-up or batch of another group, is refused with the seed's 用户和密码错误 wording
//! ([`GroupError::AccessDenied`]) and changes nothing. Auditors decide top-ups and refunds;
//! auditors, supervisors and administrators read any group by naming it.
//!
//! **Orders and the journal.** A recharge reserves the quota (order `reserved`, durable), runs
//! the journaled load under the order's transaction id, then settles (`succeeded`) or fails the
//! order (`failed`: refund pending), or leaves it 结果待确认 (`pending`) when nothing proves
//! whether the card was credited. If the daemon stops in between, [`GroupService::reconcile`]
//! settles the order from the journal once the load's outcome is known (committed → succeeded,
//! proven not applied or never sent → failed); the daemon runs it at start-up, after every load
//! it resolves from a card, and before every group query. Refunds are decided by an auditor
//! from the evidence ([`GroupService::evidence`]): a load the card proves landed is never
//! refunded.
//!
//! **In a fleet** ([`GroupService::in_fleet`]) the group store is the central issuer host's,
//! shared by every site: an unsettled order whose load transaction is not in this site's
//! journal is another site's load, and this site neither settles nor fails it (like
//! `cardd_etc`'s `foreign_load`); when its card is presented here, the load is first adopted
//! from the host and the card decides it. (An order this site reserved whose load never reached
//! the journal is therefore left 充值中 for the host's auditors rather than failed here.)
//!
//! The service is given its dependencies ([`GroupService::new`]); the journal is passed to each
//! call that reads it (the daemon owns it, and may have none when it failed its checks).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cardd_api::group::{
    AuditPending, AuditTopUpParams, BatchCreateParams, BatchItemReport, BatchReport, CardCheck,
    Evidence, ExportFormat, ExportResult, GroupInfo, GroupView, LedgerParams, LedgerRow,
    OrderDecisionParams, OrderRow, OrdersResult, PendingTopUp, PeriodView, QueryParams,
    QueryResult, RechargeDone, TopUpParams, TopUpResult, TopUpRow, TopUpsResult,
};
use cardd_api::{Fen, Role};
use cardd_journal::intent::card_blocked;
use cardd_journal::{
    Clock, Funding, InFlight, IntentOutcome, IntentOwners, Journal, LoadReceipt, Resolution,
    TxnState,
};
use cardd_purse::{LoadSession, Purse, PurseError, SecurityModule, TransactionType};
use cardd_reader::Reader;

use crate::error::GroupError;
use crate::export::{self, Cell, ExportRow, NamedRow};
use crate::host::GroupHost;
use crate::model::{
    recharge_rules, yuan, BatchItemInput, BatchRef, Group, GroupInput, OrderStatus, PaymentOutcome,
    Period, Preset, RechargeOrder, ReserveRequest, TopUp, TopUpStatus, Verdict,
};
use crate::payment::{PaymentError, PaymentGateway, PaymentReceipt, PaymentRequest};

/// What a recharge says when the journal failed its integrity check.
const JOURNAL_CLOSED: &str = "圈存日志未通过完整性检查，已停止写卡；请联系管理员";

/// Who calls: the operator's user name, role and (for group operators) group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The operator's group (group operators).
    pub group_id: Option<String>,
}

/// Why a recharge did not end in 充值成功: a refusal or failure (nothing on the card), or an
/// order left 结果待确认 (`pending_order`: the card may hold the money).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RechargeStop {
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

impl std::fmt::Display for RechargeStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The card on the reader as read before a recharge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOnReader {
    /// The displayed card number.
    pub card_number: String,
    /// Whether it is a city one-card (城市一卡通).
    pub city: bool,
    /// Its balance, in fen, when read.
    pub balance_fen: Option<i64>,
}

/// The card a recharge works on: the daemon's run reader, or a simulated card in tests. Each
/// call is one job on the reader; errors are messages for the operator (zh-CN).
pub trait RechargeCard {
    /// Reads the card's number, kind and balance.
    fn read(&mut self) -> Result<CardOnReader, String>;
    /// Settles from the card the open load of it in the journal (recovery), if any.
    fn recover(&mut self);
    /// The transaction id of the next load, taken.
    fn next_txn_id(&mut self) -> String;
    /// The journaled load of `amount_fen` onto `card_number`, paid by `funding`. The error is
    /// the operator's message of the failure (how it ends is decided from the journal, never
    /// from its wording).
    fn load(
        &mut self,
        txn_id: String,
        amount_fen: u32,
        card_number: String,
        funding: Funding,
    ) -> Result<LoadReceipt, String>;
}

/// What one recharge asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RechargeRequest {
    /// The operator's group.
    pub group_id: String,
    /// The group operator.
    pub operator: String,
    /// The card the operator means (the flow's card number, a batch item's), if any.
    pub expected_card: Option<String>,
    /// 充值金额, in fen.
    pub amount_fen: i64,
    /// The batch item this recharge serves, if any.
    pub batch: Option<BatchRef>,
}

/// What a top-up under way needs to be finished ([`GroupService::begin_topup`]).
#[derive(Debug, Clone)]
pub struct TopUpStarted {
    /// The top-up, 待支付.
    pub topup: TopUp,
    /// Its group.
    pub group: Group,
    /// The transfer to send to the bank.
    pub request: PaymentRequest,
}

/// The group services.
pub struct GroupService {
    /// Groups, quota ledger, orders, top-ups, batches.
    pub host: Arc<dyn GroupHost>,
    /// The bank quota top-ups go through.
    pub bank: Arc<dyn PaymentGateway>,
    sam: Arc<dyn SecurityModule>,
    owners: Arc<dyn IntentOwners>,
    clock: Arc<dyn Clock>,
    /// Orders reserved by a recharge running in this process and not yet settled or failed:
    /// [`GroupService::reconcile`] leaves them to their run. Held while reserving, so that a
    /// reconciliation never sees a fresh reservation without its run.
    inflight: InFlight,
    /// Top-ups whose payment call is running.
    paying: Mutex<HashSet<String>>,
    /// Orders settled from the card after 结果待确认 whose result a new recharge of the card
    /// has already reported (see [`GroupService::recharge`]).
    told: Mutex<HashSet<String>>,
    /// In a fleet: the loads other sites began, adopted when their card is presented here.
    /// `None` on a single machine, where every order's load is in this journal.
    fleet: Option<Arc<dyn cardd_journal::ForeignIntents>>,
}

impl std::fmt::Debug for GroupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupService")
            .field("host", &self.host)
            .field("bank", &self.bank.name())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_yuan(text: &str, what: &str) -> Result<i64, GroupError> {
    Fen::parse_yuan(text)
        .map(|f| f.0)
        .map_err(|e| GroupError::Invalid(format!("{what}不正确：{e}")))
}

impl GroupService {
    /// The service on `host` (the group store) and `bank`, checking loads with `sam`, naming
    /// the owners of open loads (of every domain) with `owners`, telling time with `clock`.
    pub fn new(
        host: Arc<dyn GroupHost>,
        bank: Arc<dyn PaymentGateway>,
        sam: Arc<dyn SecurityModule>,
        owners: Arc<dyn IntentOwners>,
        clock: Arc<dyn Clock>,
    ) -> GroupService {
        GroupService {
            host,
            bank,
            sam,
            owners,
            clock,
            inflight: InFlight::default(),
            paying: Mutex::new(HashSet::new()),
            told: Mutex::new(HashSet::new()),
            fleet: None,
        }
    }

    /// The service as a fleet site runs it: the group store is shared with other sites, whose
    /// open loads `foreign` lists. Orders whose load is not in this site's journal are left to
    /// the site that began them (or adopted here when their card is presented).
    pub fn in_fleet(mut self, foreign: Arc<dyn cardd_journal::ForeignIntents>) -> GroupService {
        self.fleet = Some(foreign);
        self
    }

    // -----------------------------------------------------------------------------------------
    // Who sees what.

    /// The group a call acts on: a group operator's own (naming another is refused); others
    /// must name one.
    pub fn scope(&self, who: &Viewer, requested: Option<&str>) -> Result<String, GroupError> {
        if who.role == Role::GroupOperator {
            let own = who.group_id.clone().ok_or_else(|| denied(who))?;
            match requested {
                Some(r) if r.trim() != own => Err(denied(who)),
                _ => Ok(own),
            }
        } else {
            requested
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .ok_or(GroupError::GroupNotNamed)
        }
    }

    /// A group; a group operator gets the access refusal for one that does not exist.
    pub fn the_group(&self, who: Option<&Viewer>, group_id: &str) -> Result<Group, GroupError> {
        match self.host.group(group_id)? {
            Some(g) => Ok(g),
            None => match who {
                Some(w) if w.role == Role::GroupOperator => Err(denied(w)),
                _ => Err(GroupError::GroupNotFound(group_id.to_owned())),
            },
        }
    }

    /// An order the caller may see.
    pub fn visible_order(&self, who: &Viewer, order_id: &str) -> Result<RechargeOrder, GroupError> {
        let order = self.host.order(order_id).ok().flatten();
        owned(who, order, |o| &o.group_id, "充值订单", order_id)
    }

    /// A top-up the caller may see.
    pub fn visible_topup(&self, who: &Viewer, topup_id: &str) -> Result<TopUp, GroupError> {
        let topup = self.host.topup(topup_id).ok().flatten();
        owned(who, topup, |t| &t.group_id, "额度充值订单", topup_id)
    }

    // -----------------------------------------------------------------------------------------
    // The recharge.

    /// One card recharge from the group's quota on `card`: reads the card, settles what is
    /// pending on it first, checks the rules, reserves the quota (durable), loads the card
    /// through the journal, settles or fails the order, or leaves it 结果待确认. Errors are
    /// messages for the operator.
    pub fn recharge(
        &self,
        journal: Option<&Journal>,
        card: &mut dyn RechargeCard,
        req: RechargeRequest,
    ) -> Result<RechargeDone, RechargeStop> {
        let summary = card.read()?;
        if !summary.city {
            return Err("读卡器上的卡片不是城市一卡通，请放置要充值的城市一卡通卡片".into());
        }
        if let Some(expected) = &req.expected_card {
            if expected != &summary.card_number {
                return Err(format!(
                    "卡号不符：读卡器上是 {}，应为 {expected}；请放置正确的卡片",
                    summary.card_number
                )
                .into());
            }
        }
        self.settle_card_first(journal, card, &req.group_id, &summary.card_number)?;
        let balance_fen = summary.balance_fen.unwrap_or(0);
        let amount = u32::try_from(req.amount_fen).map_err(|_| "充值金额不正确".to_owned())?;
        let txn_id = card.next_txn_id();
        // Reserved and marked in flight at once: reconciliation never takes it for a leftover.
        let (order, _flight) = self.inflight.start(
            || {
                self.host
                    .reserve(&ReserveRequest {
                        group_id: req.group_id.clone(),
                        operator: req.operator.clone(),
                        card_number: summary.card_number.clone(),
                        card_balance_fen: balance_fen,
                        amount_fen: req.amount_fen,
                        txn_id: txn_id.clone(),
                        batch: req.batch.clone(),
                    })
                    .map_err(|e| e.to_string())
            },
            |order| order.order_id.clone(),
        )?;
        let funding = Funding::GroupOrder {
            order_id: order.order_id.clone(),
        };
        match card.load(txn_id, amount, summary.card_number.clone(), funding) {
            Ok(receipt) => {
                let before = i64::from(receipt.balance_before_fen);
                let after = i64::from(receipt.balance_after_fen);
                let settled = self
                    .host
                    .settle(&order.order_id, &req.operator, before, after)
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
            Err(e) => Err(self.settle_failed_recharge(journal, &order, &req.operator, &e)),
        }
    }

    /// Before a new recharge: the card on the reader settles what is pending on it first. An
    /// unsettled order of this card that the card now proves credited ends this call (the
    /// operator's retry is the same intent: it is not paid twice); one still unknown refuses it.
    fn settle_card_first(
        &self,
        journal: Option<&Journal>,
        card: &mut dyn RechargeCard,
        group_id: &str,
        card_number: &str,
    ) -> Result<(), String> {
        let Some(journal) = journal else {
            return Err(JOURNAL_CLOSED.into());
        };
        // In a fleet, a load of this card another site began and nobody settled is taken in
        // first, so that the card decides it here.
        if let Some(foreign) = &self.fleet {
            cardd_journal::adopt_foreign(journal, foreign.as_ref(), card_number);
        }
        let open = journal
            .open_for_card(card_number)
            .map_err(|e| GroupError::from(e).to_string())?;
        let mut unsettled = self
            .host
            .orders_in(OrderStatus::Reserved)
            .map_err(|e| e.to_string())?;
        unsettled.extend(
            self.host
                .orders_in(OrderStatus::Pending)
                .map_err(|e| e.to_string())?,
        );
        unsettled.retain(|o| o.card_number == card_number);
        if open.is_none() && unsettled.is_empty() {
            return self.tell_settled_once(group_id, card_number);
        }
        if open.is_some() {
            card.recover();
        }
        self.reconcile(Some(journal)).map_err(|e| e.to_string())?;
        for earlier in &unsettled {
            if let Ok(Some(now)) = self.host.order(&earlier.order_id) {
                if now.status == OrderStatus::Succeeded {
                    lock(&self.told).insert(now.order_id.clone());
                    return Err(format!(
                        "卡片已确认：订单 {} 已充值成功（{} 元），本次未再充值；请勿重复充值",
                        now.order_id,
                        yuan(now.amount_fen)
                    ));
                }
            }
        }
        self.refuse_if_card_blocked(journal, card_number)
            .map_err(|e| e.to_string())?;
        self.tell_settled_once(group_id, card_number)
    }

    /// Refuses a new credit to `card_number` while a load to it (of any domain) is unsettled,
    /// or while the card contradicts a lost-card verdict on one of its loads.
    pub fn refuse_if_card_blocked(
        &self,
        journal: &Journal,
        card_number: &str,
    ) -> Result<(), GroupError> {
        match card_blocked(journal, self.owners.as_ref(), card_number)? {
            None => Ok(()),
            Some(b) => Err(GroupError::Blocked(b)),
        }
    }

    /// An order of this card that was 结果待确认 and has since been settled as 充值成功 from
    /// the card: the operator who was told "unknown" may not know yet, and a new recharge is
    /// likely the same intent tried again. The first new recharge after such a settlement is
    /// refused with the order's result; a later one goes ahead.
    fn tell_settled_once(&self, group_id: &str, card_number: &str) -> Result<(), String> {
        let period = Period::preset(Preset::Last7Days, self.clock.now());
        let orders = self
            .host
            .orders(group_id, &period)
            .map_err(|e| e.to_string())?;
        let mut told = lock(&self.told);
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

    /// What a recharge that did not end in a receipt means for its order, decided by the
    /// journal (never by the error's wording): credited → 充值成功; provably not credited →
    /// 充值失败（待退款）; anything else → 结果待确认, settled when the card is presented again.
    /// Returns the operator's message.
    pub fn settle_failed_recharge(
        &self,
        journal: Option<&Journal>,
        order: &RechargeOrder,
        operator: &str,
        error: &str,
    ) -> RechargeStop {
        let why = error.rsplit_once(": ").map_or(error, |(_, m)| m).to_owned();
        let outcome = match journal {
            Some(j) => IntentOutcome::of(j, &order.txn_id),
            None => IntentOutcome::Unknown(None),
        };
        tracing::warn!(order = %order.order_id, txn = %order.txn_id, error = %why, ?outcome, "group recharge did not complete");
        match outcome {
            IntentOutcome::Credited(txn) => {
                let before = i64::from(txn.session.init.old_balance);
                match self
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
                if let Err(fail) = self.host.fail(&order.order_id, operator, &why) {
                    tracing::error!(order = %order.order_id, error = %fail, "could not mark a group order failed; reconciliation will");
                }
                format!(
                    "充值失败：{why}。卡片未被写入，订单 {} 已记为充值失败（待退款），扣减的额度经审核后退回（1-3个工作日）",
                    order.order_id
                )
                .into()
            }
            IntentOutcome::Unknown(_) => {
                if let Err(err) = self.host.mark_pending(&order.order_id, operator, &why) {
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

    /// Settles unsettled orders whose run is gone, from the journal: committed → succeeded;
    /// proven not applied, or no load ever recorded → failed (refund pending); still open →
    /// 结果待确认 until the card is presented. Returns how many orders changed. Without a
    /// journal nothing is decided.
    pub fn reconcile(&self, journal: Option<&Journal>) -> Result<usize, GroupError> {
        let Some(journal) = journal else {
            return Ok(0);
        };
        let mut changed = 0;
        let mut unsettled = self.host.orders_in(OrderStatus::Reserved)?;
        unsettled.extend(self.host.orders_in(OrderStatus::Pending)?);
        for order in unsettled {
            // Settled under the in-flight lock, so no recharge of this order can start meanwhile.
            let settled = self.inflight.unless_in_flight(&order.order_id, || {
                let txn = journal
                    .get(&order.txn_id)
                    .map_err(|e| GroupError::Internal(e.to_string()))?;
                // In a fleet, an order whose load is not in this journal is another site's.
                if txn.is_none() && self.fleet.is_some() {
                    return Ok(None);
                }
                Ok::<_, GroupError>(match txn.as_ref().map(|t| &t.state) {
                    Some(TxnState::Committed { .. }) => {
                        let before = txn
                            .as_ref()
                            .map_or(0, |t| i64::from(t.session.init.old_balance));
                        Some(self.host.settle(
                            &order.order_id,
                            "cardd",
                            before,
                            before + order.amount_fen,
                        ))
                    }
                    Some(TxnState::NotApplied { .. }) => Some(self.host.fail(
                        &order.order_id,
                        "cardd",
                        "卡片证明圈存未成功（业务中断后由卡片确认）",
                    )),
                    None => Some(self.host.fail(
                        &order.order_id,
                        "cardd",
                        "业务在写卡前中断，卡片未充值",
                    )),
                    // CREDIT may have reached the card: 结果待确认 until the card is presented.
                    Some(_) if order.status == OrderStatus::Reserved => {
                        Some(self.host.mark_pending(
                            &order.order_id,
                            "cardd",
                            "业务中断，写卡结果未知，待卡片确认",
                        ))
                    }
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

    // -----------------------------------------------------------------------------------------
    // Evidence and the auditor's decisions.

    /// The evidence for `order`: did its load land, from the journal (decided from the card).
    /// `name` gives the display name of a user name.
    pub fn evidence(
        &self,
        journal: Option<&Journal>,
        order: &RechargeOrder,
        name: &dyn Fn(&str) -> String,
    ) -> Result<Evidence, GroupError> {
        let journal = journal.ok_or(GroupError::JournalClosed("圈存记录未通过完整性检查"))?;
        let txn = journal
            .get(&order.txn_id)
            .map_err(|e| GroupError::Internal(e.to_string()))?;
        let inflight = self.inflight.contains(&order.order_id);
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
            // In a fleet, a load not in this site's journal may have been made at another site.
            None if self.fleet.is_some() => (
                "none",
                None,
                Verdict::Unknown,
                format!(
                    "本站点没有该订单的圈存记录（可能在其他站点办理）：请将卡号 {} 的卡片放到本站点读卡器上确认结果，或在办理该订单的站点审核",
                    order.card_number
                ),
            ),
            None => (
                "none",
                None,
                Verdict::NotLanded,
                "该订单在写卡前已中断，卡片未充值，可以退回额度".to_owned(),
            ),
        };
        let mut row = OrderRow::from(order);
        row.name_people(name);
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

    /// The load session of `order` in the journal, when a load started.
    pub fn load_session(
        &self,
        journal: Option<&Journal>,
        order: &RechargeOrder,
    ) -> Option<LoadSession> {
        journal
            .and_then(|j| j.get(&order.txn_id).ok().flatten())
            .map(|t| t.session)
    }

    /// Whether the card in `reader` holds the proof of `session`'s load: GET TRANSACTION PROVE
    /// for the load's counter, with our MAC2 and a TAC that verifies. `None` when there is no
    /// load to prove or the card has no proof for that counter.
    pub fn card_proof(
        &self,
        reader: &mut Reader,
        session: Option<&LoadSession>,
    ) -> Result<Option<bool>, PurseError> {
        let Some((session, atc)) = session.and_then(|s| s.atc_after().map(|a| (s, a))) else {
            return Ok(None);
        };
        let mut purse = Purse::new(reader);
        purse.select_etc_adf()?;
        Ok(purse
            .prove(TransactionType::EpLoad, atc)?
            .map(|p| p.mac == session.mac2 && session.verify_tac(self.sam.as_ref(), p.tac).is_ok()))
    }

    /// What the card read on `reader_id` shows about `order`: its number must be the order's;
    /// `proof` is [`GroupService::card_proof`]; `loaded` whether a load was started at all.
    pub fn card_check(
        &self,
        order: &RechargeOrder,
        reader_id: &str,
        card_number: String,
        balance: Option<String>,
        proof: Option<bool>,
        loaded: bool,
    ) -> Result<CardCheck, GroupError> {
        if card_number != order.card_number {
            return Err(GroupError::Invalid(format!(
                "读卡器上是卡号 {}，不是该订单的卡号 {}；请放置该订单的卡片",
                card_number, order.card_number
            )));
        }
        let message = match proof {
            Some(true) => "卡片存有该笔圈存的交易证明：金额已进入卡内".to_owned(),
            Some(false) => "卡片该序号的交易证明不是该笔圈存的".to_owned(),
            None if !loaded => "该订单未写卡：卡片上没有该笔圈存".to_owned(),
            None => "卡片没有该笔圈存的交易证明".to_owned(),
        };
        Ok(CardCheck {
            reader_id: reader_id.to_owned(),
            card_number,
            balance,
            proof_of_this_load: proof == Some(true),
            message,
        })
    }

    /// Who declared by hand that `order`'s load did not land (`journal.resolve`, or the two
    /// people of a lost-card verdict), if people did.
    pub fn manual_not_landed_by(
        &self,
        journal: Option<&Journal>,
        order: &RechargeOrder,
    ) -> Vec<String> {
        let Some(Ok(Some(txn))) = journal.map(|j| j.get(&order.txn_id)) else {
            return Vec::new();
        };
        match txn.state {
            TxnState::NotApplied {
                resolution: Resolution::Manual { operator, .. },
            } => vec![operator],
            TxnState::NotApplied {
                resolution:
                    Resolution::LostCard {
                        proposed_by,
                        confirmed_by,
                        ..
                    },
            } => vec![proposed_by, confirmed_by],
            _ => Vec::new(),
        }
    }

    /// What waits for an auditor: paid transfers, failed recharges with their evidence.
    pub fn audit_pending(
        &self,
        journal: Option<&Journal>,
        name: &dyn Fn(&str) -> String,
    ) -> Result<AuditPending, GroupError> {
        self.reconcile(journal)?;
        let topups = self
            .host
            .topups_in(TopUpStatus::Paid)?
            .iter()
            .map(|t| {
                let mut row = TopUpRow::from(t);
                row.name_people(name);
                PendingTopUp {
                    group_id: t.group_id.clone(),
                    row,
                }
            })
            .collect();
        let orders = self
            .host
            .orders_in(OrderStatus::Failed)?
            .iter()
            .map(|o| self.evidence(journal, o, name))
            .collect::<Result<_, _>>()?;
        Ok(AuditPending { topups, orders })
    }

    /// Returns a failed order's quota: refused when the card shows the load landed or is
    /// unsettled, when the auditor is who declared it not landed, and never twice.
    pub fn refund(
        &self,
        journal: Option<&Journal>,
        auditor: &Viewer,
        p: &OrderDecisionParams,
        name: &dyn Fn(&str) -> String,
    ) -> Result<OrderRow, GroupError> {
        self.reconcile(journal)?;
        let order = self.visible_order(auditor, &p.order_id)?;
        let ev = self.evidence(journal, &order, name)?;
        if ev.verdict != Verdict::NotLanded && order.status == OrderStatus::Failed {
            return Err(GroupError::EvidenceConflict(format!(
                "不能退款：{}",
                ev.message
            )));
        }
        // Two people: whoever declared the load "not landed" does not also approve its refund.
        for declarer in self.manual_not_landed_by(journal, &order) {
            if declarer == auditor.username {
                return Err(GroupError::SamePerson {
                    order_id: order.order_id.clone(),
                    declarer,
                });
            }
        }
        let order = self
            .host
            .refund(&p.order_id, &auditor.username, &p.reason)?;
        Ok(OrderRow::from(&order))
    }

    /// Resolves a failed order as succeeded when the card shows its load landed.
    pub fn resolve(
        &self,
        journal: Option<&Journal>,
        auditor: &Viewer,
        p: &OrderDecisionParams,
        name: &dyn Fn(&str) -> String,
    ) -> Result<OrderRow, GroupError> {
        self.reconcile(journal)?;
        let order = self.visible_order(auditor, &p.order_id)?;
        let ev = self.evidence(journal, &order, name)?;
        if ev.verdict != Verdict::Landed && order.status == OrderStatus::Failed {
            return Err(GroupError::EvidenceConflict(format!(
                "不能改为充值成功：{}",
                ev.message
            )));
        }
        let balances = self.load_session(journal, &order).map(|s| {
            let before = i64::from(s.init.old_balance);
            (before, before + order.amount_fen)
        });
        let order =
            self.host
                .resolve_succeeded(&p.order_id, &auditor.username, &p.reason, balances)?;
        Ok(OrderRow::from(&order))
    }

    // -----------------------------------------------------------------------------------------
    // Top-ups.

    /// Starts a top-up (额度充值) of the caller's group: a new top-up, marked as being paid; the
    /// caller sends [`TopUpStarted::request`] to the bank and hands the answer to
    /// [`GroupService::finish_topup`].
    pub fn begin_topup(&self, who: &Viewer, p: &TopUpParams) -> Result<TopUpStarted, GroupError> {
        let group_id = self.scope(who, None)?;
        let group = self.the_group(Some(who), &group_id)?;
        let amount_fen = parse_yuan(&p.amount, "转账金额")?;
        let topup = self
            .host
            .create_topup(&group_id, &who.username, amount_fen, &p.remark)?;
        lock(&self.paying).insert(topup.topup_id.clone());
        let request = PaymentRequest {
            payment_id: topup.topup_id.clone(),
            amount_fen,
            payer: group.name.clone(),
            remark: topup.remark.clone(),
        };
        Ok(TopUpStarted {
            topup,
            group,
            request,
        })
    }

    /// Records the bank's answer to a top-up started with [`GroupService::begin_topup`]: the
    /// transfer page, or [`GroupError::TopUpNotPaid`] when the bank declined or did not answer.
    pub fn finish_topup(
        &self,
        started: &TopUpStarted,
        paid: Result<PaymentReceipt, PaymentError>,
    ) -> Result<TopUpResult, GroupError> {
        let outcome = match &paid {
            Ok(receipt) => PaymentOutcome::Paid {
                bank_serial: receipt.bank_serial.clone(),
            },
            Err(PaymentError::Declined(m)) => PaymentOutcome::Declined { message: m.clone() },
            Err(e) => PaymentOutcome::NoAnswer {
                message: e.to_string(),
            },
        };
        let recorded = self.host.record_payment(&started.topup.topup_id, &outcome);
        lock(&self.paying).remove(&started.topup.topup_id);
        let topup = recorded?;
        tracing::info!(topup = %topup.topup_id, group = %started.group.group_id, status = topup.status.code(), "quota top-up");
        match topup.status {
            TopUpStatus::Failed | TopUpStatus::Unknown | TopUpStatus::Pending => {
                Err(GroupError::TopUpNotPaid {
                    message: topup_message(&topup),
                    topup: Box::new(topup),
                })
            }
            _ => Ok(topup_result(&topup, &started.group)),
        }
    }

    /// A top-up's status; the bank is asked again when its answer was lost.
    pub fn topup_status(&self, who: &Viewer, topup_id: &str) -> Result<TopUpResult, GroupError> {
        let topup = self.visible_topup(who, topup_id)?;
        let group = self.the_group(Some(who), &topup.group_id)?;
        let topup = self.refresh_topup(topup)?;
        Ok(topup_result(&topup, &group))
    }

    /// Asks the bank again about a top-up whose answer is not known (and whose payment call is
    /// not running in this process).
    pub fn refresh_topup(&self, topup: TopUp) -> Result<TopUp, GroupError> {
        if !topup.status.awaiting_bank() || lock(&self.paying).contains(&topup.topup_id) {
            return Ok(topup);
        }
        let outcome = match self.bank.query(&topup.topup_id)? {
            Some(receipt) => PaymentOutcome::Paid {
                bank_serial: receipt.bank_serial,
            },
            None => PaymentOutcome::Declined {
                message: "银行无此笔转账，未扣款".into(),
            },
        };
        self.host.record_payment(&topup.topup_id, &outcome)
    }

    /// Approves (the quota grows) or rejects a paid transfer, once.
    pub fn audit_topup(
        &self,
        auditor: &Viewer,
        p: &AuditTopUpParams,
    ) -> Result<TopUpResult, GroupError> {
        let topup = self
            .host
            .audit_topup(&p.topup_id, &auditor.username, p.approve, &p.reason)?;
        let group = self.the_group(None, &topup.group_id)?;
        Ok(topup_result(&topup, &group))
    }

    // -----------------------------------------------------------------------------------------
    // Batches.

    /// A new batch of the caller's group, with its per-card report.
    pub fn create_batch(
        &self,
        who: &Viewer,
        p: &BatchCreateParams,
    ) -> Result<BatchReport, GroupError> {
        let group_id = self.scope(who, None)?;
        self.the_group(Some(who), &group_id)?;
        let mut items = Vec::with_capacity(p.items.len());
        for (i, item) in p.items.iter().enumerate() {
            items.push(BatchItemInput {
                card_number: item.card_number.clone(),
                amount_fen: parse_yuan(&item.amount, &format!("第 {} 张卡的充值金额", i + 1))?,
            });
        }
        let batch = self.host.create_batch(&group_id, &who.username, &items)?;
        self.batch_report(&batch.batch_id)?
            .ok_or_else(|| GroupError::Internal("the new batch is missing".into()))
    }

    /// A batch the caller may see, with each card's outcome (orders reconciled first).
    pub fn batch(
        &self,
        journal: Option<&Journal>,
        who: &Viewer,
        batch_id: &str,
    ) -> Result<BatchReport, GroupError> {
        self.reconcile(journal)?;
        let report = self.batch_report(batch_id).ok().flatten();
        owned(who, report, |r| &r.group_id, "批量充值", batch_id)
    }

    /// The per-card report of a batch.
    pub fn batch_report(&self, batch_id: &str) -> Result<Option<BatchReport>, GroupError> {
        let Some(batch) = self.host.batch(batch_id)? else {
            return Ok(None);
        };
        let mut items = Vec::with_capacity(batch.items.len());
        let (mut pending, mut succeeded, mut failed, mut in_progress) = (0, 0, 0, 0);
        for (index, item) in batch.items.iter().enumerate() {
            let order = match &item.order_id {
                Some(id) => self.host.order(id)?,
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

    // -----------------------------------------------------------------------------------------
    // Groups, queries and exports.

    /// The recharge page's header for the caller (`display_name` is theirs).
    pub fn info(
        &self,
        who: &Viewer,
        display_name: &str,
        group_id: Option<&str>,
    ) -> Result<GroupInfo, GroupError> {
        let group_id = self.scope(who, group_id)?;
        let group = self.the_group(Some(who), &group_id)?;
        Ok(GroupInfo {
            group: group_view(&group),
            operator: who.username.clone(),
            operator_name: display_name.to_owned(),
            amount_presets: recharge_rules()
                .presets
                .into_iter()
                .map(|p| p.amount)
                .collect(),
        })
    }

    /// Every group with its quota.
    pub fn groups(&self) -> Result<Vec<GroupView>, GroupError> {
        Ok(self.host.groups()?.iter().map(group_view).collect())
    }

    /// Creates a group or changes its name or terminal number.
    pub fn upsert_group(&self, input: &GroupInput) -> Result<GroupView, GroupError> {
        Ok(group_view(&self.host.upsert_group(input)?))
    }

    /// The group's quota ledger, oldest first (at most 1000 entries).
    pub fn ledger(&self, who: &Viewer, p: &LedgerParams) -> Result<Vec<LedgerRow>, GroupError> {
        let group_id = self.scope(who, p.group_id.as_deref())?;
        self.the_group(Some(who), &group_id)?;
        let limit = p.limit.unwrap_or(1000).min(1000);
        let entries = self.host.ledger(&group_id, p.after_seq, limit)?;
        Ok(entries.iter().map(LedgerRow::from).collect())
    }

    /// The period of a query: `preset`, or dates (see [`QueryParams`]), with its label.
    pub fn period_of(
        &self,
        preset: Option<Preset>,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<(Period, String), GroupError> {
        let now = self.clock.now();
        match (preset, start, end) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(GroupError::Period(
                "请选择时间段（preset）或输入起止日期（start_date、end_date），不要同时给出".into(),
            )),
            (Some(p), None, None) => Ok((Period::preset(p, now), p.label().into())),
            (None, Some(s), Some(e)) => Period::dates(s, e)
                .map(|p| (p, "自定义".into()))
                .map_err(GroupError::Period),
            (None, Some(s), None) => Period::since(s, now)
                .map(|p| (p, "自定义".into()))
                .map_err(GroupError::Period),
            (None, None, Some(e)) => Period::until(e)
                .map(|p| (p, "自定义".into()))
                .map_err(GroupError::Period),
            (None, None, None) => Ok((
                Period::preset(Preset::Last7Days, now),
                Preset::Last7Days.label().into(),
            )),
        }
    }

    /// One query page: the caller's (or the named) group, the period, rows of `T` newest first
    /// (orders reconciled first).
    fn query<T, R, S>(
        &self,
        journal: Option<&Journal>,
        who: &Viewer,
        q: &QueryParams,
        name: &dyn Fn(&str) -> String,
        fetch: impl Fn(&str, &Period) -> Result<Vec<T>, GroupError>,
        stats: impl Fn(&[T]) -> S,
    ) -> Result<QueryResult<R, S>, GroupError>
    where
        R: for<'a> From<&'a T> + NamedRow,
    {
        let group_id = self.scope(who, q.group_id.as_deref())?;
        let group = self.the_group(Some(who), &group_id)?;
        let (period, label) =
            self.period_of(q.preset, q.start_date.as_deref(), q.end_date.as_deref())?;
        self.reconcile(journal)?;
        let records = fetch(&group_id, &period)?;
        Ok(QueryResult {
            group_id,
            group_name: group.name,
            period: PeriodView {
                start_date: period.start.to_string(),
                end_date: period.end.to_string(),
                label,
            },
            rows: records
                .iter()
                .map(|r| {
                    let mut row = R::from(r);
                    row.name_people(name);
                    row
                })
                .collect(),
            stats: stats(&records),
        })
    }

    /// 充值查询.
    pub fn orders(
        &self,
        journal: Option<&Journal>,
        who: &Viewer,
        q: &QueryParams,
        name: &dyn Fn(&str) -> String,
    ) -> Result<OrdersResult, GroupError> {
        self.query(
            journal,
            who,
            q,
            name,
            |g, p| self.host.orders(g, p),
            export::order_stats,
        )
    }

    /// 额度充值查询.
    pub fn topups(
        &self,
        journal: Option<&Journal>,
        who: &Viewer,
        q: &QueryParams,
        name: &dyn Fn(&str) -> String,
    ) -> Result<TopUpsResult, GroupError> {
        self.query(
            journal,
            who,
            q,
            name,
            |g, p| self.host.topups(g, p),
            export::topup_stats,
        )
    }
}

/// The file of exactly the rows of `result`, refused when its base64 would not fit in a
/// response of `response_bytes_max` bytes.
pub fn export_file<R: ExportRow, S>(
    title: &str,
    result: &QueryResult<R, S>,
    format: ExportFormat,
    headers: &[&str],
    response_bytes_max: usize,
) -> Result<ExportResult, GroupError> {
    use base64::Engine;
    let (group_id, period) = (&result.group_id, &result.period);
    let rows: Vec<Vec<Cell>> = result.rows.iter().map(ExportRow::cells).collect();
    let (bytes, extension, content_type) = match format {
        ExportFormat::Csv => (
            export::to_csv(headers, &rows),
            "csv",
            "text/csv; charset=utf-8",
        ),
        ExportFormat::Xlsx => (
            export::to_xlsx(title, headers, &rows),
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    };
    let bytes = bytes.map_err(|e| GroupError::Internal(e.to_string()))?;
    let data_base64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    // Leave room for the rest of the answer within the response limit.
    if data_base64.len() + 4096 > response_bytes_max {
        return Err(GroupError::ExportTooLarge(bytes.len()));
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

/// The refusal a group operator gets for another group's data.
fn denied(who: &Viewer) -> GroupError {
    GroupError::AccessDenied {
        username: who.username.clone(),
    }
}

/// `record`, if the caller may see it; a group operator gets the same refusal for another
/// group's record and for one that does not exist.
fn owned<T>(
    who: &Viewer,
    record: Option<T>,
    group_of: impl Fn(&T) -> &str,
    what: &'static str,
    id: &str,
) -> Result<T, GroupError> {
    match record {
        Some(r)
            if who.role != Role::GroupOperator || who.group_id.as_deref() == Some(group_of(&r)) =>
        {
            Ok(r)
        }
        _ if who.role == Role::GroupOperator => Err(denied(who)),
        _ => Err(GroupError::NotFound {
            what,
            id: id.to_owned(),
        }),
    }
}

/// What the recharge page shows at the top.
pub fn group_view(g: &Group) -> GroupView {
    GroupView {
        group_id: g.group_id.clone(),
        group_name: g.name.clone(),
        terminal_no: g.terminal_no.clone(),
        available_quota: yuan(g.available_fen),
        available_quota_fen: g.available_fen,
    }
}

fn resolution_name(r: &Resolution) -> String {
    match r {
        Resolution::CardResponse => "card_response".into(),
        Resolution::Recovery => "recovery".into(),
        Resolution::CardLog => "card_log".into(),
        Resolution::Manual { .. } => "manual".into(),
        Resolution::LostCard { .. } => "lost_card".into(),
    }
}

fn topup_result(t: &TopUp, group: &Group) -> TopUpResult {
    TopUpResult {
        topup_id: t.topup_id.clone(),
        amount: yuan(t.amount_fen),
        bank_serial: t.bank_serial.clone(),
        group_name: group.name.clone(),
        group_id: group.group_id.clone(),
        operator: t.operator.clone(),
        status: t.status,
        status_label: t.status.label().into(),
        message: topup_message(t),
    }
}

/// What the operator is told about a top-up in its status.
pub fn topup_message(t: &TopUp) -> String {
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
