//! The payment gateway that quota top-ups (额度充值) go through, and the embedded sandbox bank.
//!
//! The seed's group pays by online banking: the transfer leaves on the bank's pages and comes
//! back with a bank serial number (银行返回流水号). cardd talks to the bank only through
//! [`PaymentGateway`]: `pay` sends a transfer and answers paid (with the serial), declined, or
//! nothing in time; `query` asks again about a transfer whose answer was lost, so a timeout never
//! turns into a guess.
//!
//! The embedded default, `cardd_store::SandboxBank`, pays at once and remembers its payments in
//! the daemon's database (so `query` still knows them after a restart). It can be told to
//! misbehave, for demos and tests, by its [`SandboxMode`] (configuration) or by a word in the
//! remark:
//!
//! | remark contains | the sandbox |
//! |---|---|
//! | `SANDBOX-FAIL` or `沙箱失败` | declines: 余额不足, no money moves |
//! | `SANDBOX-TIMEOUT` or `沙箱超时` | does not answer, and did not pay (a later `query` finds nothing) |
//! | `SANDBOX-LATE` or `沙箱延迟` | does not answer, but paid (a later `query` finds the payment) |

use serde::{Deserialize, Serialize};
/// A transfer to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Our id of the transfer (the top-up's order number); the bank keys its answer by it.
    pub payment_id: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// The payer (the group's name).
    pub payer: String,
    /// The remark the operator typed.
    pub remark: String,
}

/// The bank paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReceipt {
    /// Our id of the transfer.
    pub payment_id: String,
    /// 银行返回流水号.
    pub bank_serial: String,
    /// Amount in fen.
    pub amount_fen: i64,
}

/// Why a transfer has no receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The bank refused; no money moved.
    #[error("银行拒绝转账：{0}")]
    Declined(String),
    /// No answer in time: the bank may or may not have paid; ask it again with `query`.
    #[error("银行未在规定时间内返回结果（{0}），支付结果未知，请稍后查询")]
    NoAnswer(String),
    /// The gateway itself failed (storage, configuration).
    #[error("支付网关故障：{0}")]
    Gateway(String),
}

/// A payment gateway: a bank behind an interface.
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    /// The gateway's name, for records and logs.
    fn name(&self) -> &'static str;
    /// Sends a transfer.
    fn pay(&self, request: &PaymentRequest) -> Result<PaymentReceipt, PaymentError>;
    /// The receipt of an earlier transfer, `None` when the bank has no such payment.
    fn query(&self, payment_id: &str) -> Result<Option<PaymentReceipt>, PaymentError>;
}

/// How the sandbox bank (`cardd_store::SandboxBank`) behaves (besides the words in remarks).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Pays every transfer.
    #[default]
    Approve,
    /// Declines every transfer.
    Decline,
    /// Answers no transfer in time (and does not pay).
    Timeout,
}
