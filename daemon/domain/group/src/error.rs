//! Why group recharge refused or failed: [`GroupError`], with its wire code.

use cardd_api::ErrorCode;
use cardd_journal::{IntentBlock, JournalError};

use crate::export::ExportError;
use crate::model::TopUpStatus;
use crate::model::*;
use crate::payment::PaymentError;

/// Why the group host refused or failed. Refusals are zh-CN, in the seed's words.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Bad input (a field, a card number, a transaction id), worded by the store's checks.
    #[error("{0}")]
    Invalid(String),
    /// Storage trouble or data that fails its checks: an administrator reads it.
    #[error("{0}")]
    Storage(String),
    /// No group with this id.
    #[error("未找到集团 {0}")]
    GroupNotFound(String),
    /// The recharge amount is not a multiple of [`RECHARGE_STEP_FEN`].
    #[error("充值金额必须是{}元的整数倍，{} 元不是", yuan_short(RECHARGE_STEP_FEN), yuan(*.amount_fen))]
    AmountNotStep {
        /// The amount, in fen.
        amount_fen: i64,
    },
    /// The recharge amount is below [`RECHARGE_MIN_FEN`].
    #[error("充值金额不能小于{}元", yuan_short(RECHARGE_MIN_FEN))]
    AmountTooSmall {
        /// The amount, in fen.
        amount_fen: i64,
    },
    /// The card would hold more than [`CARD_BALANCE_AFTER_FEN_MAX`].
    #[error(
        "充值后卡内金额不能超过{}元：卡内余额 {} 元，充值 {} 元后为 {} 元",
        yuan_short(CARD_BALANCE_AFTER_FEN_MAX), yuan(*.balance_fen), yuan(*.amount_fen), yuan(.balance_fen.saturating_add(*.amount_fen))
    )]
    CardBalanceOver {
        /// The card's balance, in fen.
        balance_fen: i64,
        /// The amount, in fen.
        amount_fen: i64,
    },
    /// The group's quota does not cover the amount.
    #[error("集团可用额度不足：可用额度 {} 元，充值金额 {} 元", yuan(*.available_fen), yuan(*.amount_fen))]
    QuotaInsufficient {
        /// Available quota, in fen.
        available_fen: i64,
        /// The amount, in fen.
        amount_fen: i64,
    },
    /// A transfer amount that is not a positive whole number of yuan, or too large.
    #[error("转账金额不正确：{0}")]
    TopUpAmount(String),
    /// The quota would exceed [`QUOTA_FEN_MAX`].
    #[error("集团额度将超过上限 {} 元，请联系管理员", yuan(QUOTA_FEN_MAX))]
    QuotaOverflow,
    /// The card has a recharge whose outcome is not settled yet.
    #[error("卡号 {card_number} 有一笔结果未确认的充值订单 {order_id}：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值")]
    CardBusy {
        /// The card.
        card_number: String,
        /// Its reserved order.
        order_id: String,
    },
    /// The load transaction id already belongs to another order.
    #[error("圈存交易号 {0} 已用于其他订单")]
    TxnInUse(String),
    /// No such order, top-up or batch.
    #[error("未找到{what} {id}")]
    NotFound {
        /// 充值订单, 额度充值订单, 批量充值.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The record's status does not allow this change.
    #[error("{what} {id} 当前状态为“{current}”，不能{action}")]
    BadState {
        /// What the record is.
        what: &'static str,
        /// Its id.
        id: String,
        /// Its status, zh-CN.
        current: &'static str,
        /// What was asked, zh-CN.
        action: &'static str,
    },
    /// A batch item does not fit.
    #[error("批量充值：{0}")]
    Batch(String),
    /// A load's balances do not add up.
    #[error("订单 {order_id} 的充值后余额 {} 元不等于充值前余额 {} 元加充值金额 {} 元", yuan(*.after_fen), yuan(*.before_fen), yuan(*.amount_fen))]
    BalanceMismatch {
        /// The order.
        order_id: String,
        /// Reported balance before, fen.
        before_fen: i64,
        /// The order's amount, fen.
        amount_fen: i64,
        /// Reported balance after, fen.
        after_fen: i64,
    },
    /// A query matched too many rows.
    #[error("查询结果超过 {QUERY_ROWS_MAX} 条，请缩短查询时间段")]
    TooManyRows,
    /// The day's ids are used up.
    #[error("{0} 的订单编号已用完，请联系管理员")]
    IdsExhausted(String),
    /// The period is not usable.
    #[error("{0}")]
    Period(String),
    /// A group operator named another group, or a record of another group (the seed's
    /// 用户和密码错误 wording; nothing is changed).
    #[error("用户和密码错误：操作员 {username} 不属于该集团，不能查看或办理该集团的业务")]
    AccessDenied {
        /// The operator.
        username: String,
    },
    /// The recharge operator is not a group operator.
    #[error("用户和密码错误：操作员 {0} 不是集团操作员")]
    NotGroupOperator(String),
    /// A caller who is not a group operator named no group.
    #[error("请指定集团编号 group_id")]
    GroupNotNamed,
    /// The card takes no new credit now (a load to it is unsettled, or it contradicts a
    /// lost-card verdict).
    #[error(transparent)]
    Blocked(#[from] IntentBlock),
    /// The journal failed; a corrupt journal fails closed.
    #[error("{}", journal_message(.0))]
    Journal(#[from] JournalError),
    /// The journal failed its integrity check at start-up: nothing is decided without it.
    #[error("{0}")]
    JournalClosed(&'static str),
    /// The card evidence forbids the auditor's decision.
    #[error("{0}")]
    EvidenceConflict(String),
    /// The same person may not both declare a load not landed and approve its refund.
    #[error("不能退款：订单 {order_id} 的“未到卡”由 {declarer} 判定，退款须由另一位审核人员办理")]
    SamePerson {
        /// The order.
        order_id: String,
        /// Who declared it not landed (and now asks for the refund).
        declarer: String,
    },
    /// The bank refused, did not answer, or the gateway failed.
    #[error(transparent)]
    Payment(#[from] PaymentError),
    /// The export could not be written.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A top-up the bank declined or did not answer in time, as the operator is told; the
    /// top-up is `detail` (its id and status).
    #[error("订单 {}：{message}", .topup.topup_id)]
    TopUpNotPaid {
        /// The top-up as recorded.
        topup: Box<TopUp>,
        /// What the operator reads.
        message: String,
    },
    /// An export larger than a response may carry.
    #[error("导出文件过大（{0} 字节），请缩短查询时间段后分次导出")]
    ExportTooLarge(usize),
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),
    /// The central issuer host (a fleet site's group store) could not be reached or did not
    /// answer in time: nothing was changed that the site knows of.
    #[error("无法连接发卡方后台（{0}），暂不能办理；请稍后再试")]
    Unreachable(String),
    /// The central issuer host refused or failed: its code and the message it gave, which the
    /// operator reads word for word.
    #[error("{message}")]
    Remote {
        /// The host's API code.
        code: ErrorCode,
        /// Whether the request itself was wrong (a refusal) rather than the host failing.
        refusal: bool,
        /// What the host said, as an operator reads it.
        message: String,
    },
}

fn journal_message(e: &JournalError) -> String {
    match e {
        JournalError::Corrupt { .. } => format!("圈存日志损坏：{e}"),
        other => other.to_string(),
    }
}

impl GroupError {
    /// Whether the request was wrong (rather than the store failing).
    pub fn is_refusal(&self) -> bool {
        if let GroupError::Remote { refusal, .. } = self {
            return *refusal;
        }
        !matches!(
            self,
            GroupError::Storage(_)
                | GroupError::IdsExhausted(_)
                | GroupError::Journal(_)
                | GroupError::Internal(_)
                | GroupError::Unreachable(_)
        )
    }

    /// The wire code of this error (the one mapping to JSON-RPC is the daemon's).
    pub fn code(&self) -> ErrorCode {
        use GroupError as G;
        match self {
            G::Invalid(_) => ErrorCode::InvalidParams,
            G::Storage(_) | G::IdsExhausted(_) | G::Internal(_) | G::Export(_) => {
                ErrorCode::Internal
            }
            G::GroupNotFound(_) | G::NotFound { .. } => ErrorCode::GroupRecordNotFound,
            G::AmountNotStep { .. } | G::AmountTooSmall { .. } | G::CardBalanceOver { .. } => {
                ErrorCode::RechargeRefused
            }
            G::QuotaInsufficient { .. } => ErrorCode::QuotaInsufficient,
            G::TopUpAmount(_) | G::Batch(_) | G::Period(_) | G::GroupNotNamed => {
                ErrorCode::InvalidParams
            }
            G::QuotaOverflow
            | G::CardBusy { .. }
            | G::TxnInUse(_)
            | G::BadState { .. }
            | G::BalanceMismatch { .. } => ErrorCode::GroupStateConflict,
            G::TooManyRows | G::ExportTooLarge(_) => ErrorCode::QueryTooLarge,
            G::AccessDenied { .. } | G::NotGroupOperator(_) => ErrorCode::GroupAccessDenied,
            G::Blocked(b) => b.code(),
            G::Journal(JournalError::Corrupt { .. }) | G::JournalClosed(_) => {
                ErrorCode::FailedClosed
            }
            G::Journal(_) => ErrorCode::Internal,
            G::EvidenceConflict(_) => ErrorCode::EvidenceConflict,
            G::SamePerson { .. } => ErrorCode::Forbidden,
            G::Payment(PaymentError::Declined(_)) => ErrorCode::PaymentDeclined,
            G::Payment(PaymentError::NoAnswer(_)) => ErrorCode::PaymentUnknown,
            G::Payment(PaymentError::Gateway(_)) => ErrorCode::Internal,
            G::Unreachable(_) => ErrorCode::IssuerHostUnreachable,
            G::Remote { code, .. } => *code,
            G::TopUpNotPaid { topup, .. } => match topup.status {
                TopUpStatus::Failed => ErrorCode::PaymentDeclined,
                _ => ErrorCode::PaymentUnknown,
            },
        }
    }
}
