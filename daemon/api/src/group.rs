//! The `group.*` and `groups.*` methods (集团充值): their params, their results and a
//! [`Method`](crate::Method) type per method.
//!
//! **Who sees what.** A group operator acts only on their own group: naming another group, or
//! an order, top-up or batch of another group, is refused with the seed's 用户和密码错误 wording
//! (`GroupAccessDenied`) and changes nothing. Auditors decide top-ups and refunds; auditors,
//! supervisors and administrators read any group by naming it.
//!
//! Amounts are decimal yuan strings (`"20.00"`), with the fen beside them where flows need
//! them; never floats.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::SessionView;
use crate::method;
use crate::vocab::LedgerKind;
use crate::vocab::{GroupRules, OrderStatus, Preset, TopUpStatus, Verdict};
use crate::NoParams;

/// One row of the recharge query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRow {
    /// 订单编号.
    pub order_id: String,
    /// 卡号.
    pub card_number: String,
    /// 充值前余额, yuan (empty until known).
    pub balance_before: String,
    /// 充值金额, yuan.
    pub amount: String,
    /// 现余额, yuan (empty until known).
    pub balance_after: String,
    /// 充值前集团额度, yuan.
    pub quota_before: String,
    /// 充值后集团额度, yuan.
    pub quota_after: String,
    /// `reserved`, `succeeded`, `failed`, `refunded`.
    pub status: OrderStatus,
    /// 状态, zh-CN.
    pub status_label: String,
    /// 操作员 (user name).
    pub operator: String,
    /// 操作员 as people read it (display name; the user name until [`NamedRow::name_people`]).
    pub operator_name: String,
    /// 充值时间, RFC 3339 +08:00.
    pub created_at: String,
    /// 备注: why it failed, if it did.
    pub remark: String,
}

/// One row of the top-up query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopUpRow {
    /// 订单编号.
    pub topup_id: String,
    /// 转账金额, yuan.
    pub amount: String,
    /// 银行返回流水号 (empty until paid).
    pub bank_serial: String,
    /// 备注.
    pub remark: String,
    /// `pending`, `unknown`, `failed`, `paid`, `approved`, `rejected`.
    pub status: TopUpStatus,
    /// 状态, zh-CN.
    pub status_label: String,
    /// 操作员 (user name).
    pub operator: String,
    /// 操作员 as people read it (display name).
    pub operator_name: String,
    /// 审核员 (user name; empty until audited).
    pub auditor: String,
    /// 审核员 as people read it (display name; empty until audited).
    pub auditor_name: String,
    /// 转账时间, RFC 3339 +08:00.
    pub created_at: String,
}

/// One entry of the quota ledger, with its amounts in exact decimal yuan (and fen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerRow {
    /// 1, 2, 3, … per group.
    pub seq: u64,
    /// When, RFC 3339 +08:00.
    pub at: String,
    /// `top_up`, `reserve`, `refund`.
    pub kind: LedgerKind,
    /// 额度充值, 充值扣减, 退款.
    pub kind_label: String,
    /// The change, yuan (`"-20.00"` for a reservation).
    pub amount: String,
    /// The same in fen.
    pub amount_fen: i64,
    /// The available quota after it, yuan.
    pub balance_after: String,
    /// The order or top-up it belongs to.
    pub reference: String,
    /// Who caused it.
    pub operator: String,
}

/// 充值查询's statistics: 充值成功笔数和金额, 充值失败笔数和金额 (failed, refunded or not), and
/// those still in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderStats {
    /// 成功笔数.
    pub success_count: u64,
    /// 成功金额, yuan.
    pub success_amount: String,
    /// 失败笔数 (待退款 and 已退款).
    pub failure_count: u64,
    /// 失败金额, yuan.
    pub failure_amount: String,
    /// Of the failures, 已退款 count.
    pub refunded_count: u64,
    /// Of the failures, 已退款 amount, yuan.
    pub refunded_amount: String,
    /// 充值中 count.
    pub in_progress_count: u64,
    /// 充值中 amount, yuan.
    pub in_progress_amount: String,
    /// 结果待确认 count: the card may hold the money; counted apart from successes and failures.
    pub pending_count: u64,
    /// 结果待确认 amount, yuan.
    pub pending_amount: String,
}

/// 额度充值查询's statistics: 转账成功笔数和金额, 审核笔数和金额 (approved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopUpStats {
    /// 转账成功笔数 (the bank paid, whatever the audit).
    pub transfer_success_count: u64,
    /// 转账成功金额, yuan.
    pub transfer_success_amount: String,
    /// 审核笔数 (approved: the quota grew).
    pub audited_count: u64,
    /// 审核金额, yuan.
    pub audited_amount: String,
}

/// What the recharge page shows at the top.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

/// The card evidence an auditor sees for an order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

/// A group, optionally named (group operators may name only their own).
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupScope {
    pub group_id: Option<String>,
}

/// What `group.info` returns: the top of the recharge page.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    pub fn query(&self) -> QueryParams {
        QueryParams {
            group_id: self.group_id.clone(),
            preset: self.preset,
            start_date: self.start_date.clone(),
            end_date: self.end_date.clone(),
        }
    }
}

/// The period a query covered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PeriodView {
    /// `YYYY-MM-DD`.
    pub start_date: String,
    /// `YYYY-MM-DD`.
    pub end_date: String,
    /// 最近7天 …, or 自定义.
    pub label: String,
}

/// A query page: 充值查询 ([`OrdersResult`]) or 额度充值查询 ([`TopUpsResult`]).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditPending {
    /// Transfers the bank paid, to approve or reject (oldest first).
    pub topups: Vec<PendingTopUp>,
    /// Failed recharges with their card evidence (oldest first).
    pub orders: Vec<Evidence>,
}

/// A paid transfer awaiting audit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

/// A group as an administrator enters it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// 集团编号.
    pub group_id: String,
    /// 集团名称.
    pub name: String,
    /// 终端编号.
    pub terminal_no: String,
}

/// `group.login`: the seed's 集团充值登录 (the group's site, then user name and password).
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
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

/// What `group.login` returns.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GroupLoginResult {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub operator: SessionView,
    /// The session ends after this many seconds without a request (then log in again).
    pub idle_timeout_s: u64,
    pub group: GroupView,
}

method!(
    /// `group.info`: the recharge page's header.
    Info, "group.info", GroupScope => GroupInfo
);
method!(
    /// `group.rules`: the group recharge rules.
    Rules, "group.rules", NoParams => GroupRules
);
method!(
    /// `group.orders` (充值查询).
    Orders, "group.orders", QueryParams => OrdersResult
);
method!(
    /// `group.orders.export`.
    OrdersExport, "group.orders.export", ExportParams => ExportResult
);
method!(
    /// `group.topup` (额度充值).
    TopUp, "group.topup", TopUpParams => TopUpResult
);
method!(
    /// `group.topup_status`.
    TopUpStatusOf, "group.topup_status", TopUpIdParams => TopUpResult
);
method!(
    /// `group.topups` (额度充值查询).
    TopUps, "group.topups", QueryParams => TopUpsResult
);
method!(
    /// `group.topups.export`.
    TopUpsExport, "group.topups.export", ExportParams => ExportResult
);
method!(
    /// `group.ledger`: the quota ledger, oldest first.
    Ledger, "group.ledger", LedgerParams => Vec<LedgerRow>
);
method!(
    /// `group.batch.create`.
    BatchCreate, "group.batch.create", BatchCreateParams => BatchReport
);
method!(
    /// `group.batch.get`.
    BatchGet, "group.batch.get", BatchIdParams => BatchReport
);
method!(
    /// `group.audit.pending`.
    AuditPendingList, "group.audit.pending", NoParams => AuditPending
);
method!(
    /// `group.audit.topup`.
    AuditTopUp, "group.audit.topup", AuditTopUpParams => TopUpResult
);
method!(
    /// `group.audit.evidence`.
    AuditEvidence, "group.audit.evidence", EvidenceParams => Evidence
);
method!(
    /// `group.audit.refund`.
    AuditRefund, "group.audit.refund", OrderDecisionParams => OrderRow
);
method!(
    /// `group.audit.resolve`.
    AuditResolve, "group.audit.resolve", OrderDecisionParams => OrderRow
);
method!(
    /// `groups.list`.
    GroupsList, "groups.list", NoParams => Vec<GroupView>
);
method!(
    /// `groups.upsert`.
    GroupsUpsert, "groups.upsert", GroupInput => GroupView
);
method!(
    /// 集团充值登录: log into a group's site.
    Login, "group.login", GroupLoginParams => GroupLoginResult
);
