//! The one place where daemon errors become JSON-RPC errors.
//!
//! Every method returns `Result<_, ApiError>`. An [`ApiError`] carries a code from the table in
//! `cardd_api::codes` and a message saying what went wrong; the JSON-RPC `data` member repeats the
//! code's name and what to do next, so a client can show both. Other modules never build
//! JSON-RPC error objects themselves.

use cardd_api::{ErrorCode, MoneyError};
use cardd_reader::ReaderError;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;

use crate::auth::AuthError;

/// An error as a client sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds machine-readable detail (kept under `data.detail`).
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidParams, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl From<ApiError> for ErrorObjectOwned {
    fn from(e: ApiError) -> Self {
        let mut data = json!({ "error": e.code.name(), "action": e.code.action() });
        if let Some(detail) = e.detail {
            data["detail"] = detail;
        }
        ErrorObjectOwned::owned(e.code.code(), e.message, Some(data))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> Self {
        ApiError::new(ErrorCode::InvalidParams, e.to_string())
    }
}

impl From<ReaderError> for ApiError {
    fn from(e: ReaderError) -> Self {
        ApiError::from(&e)
    }
}

/// What a teller reads about a reader failure: what happened and what to do, in zh-CN. Reader
/// ids and the driver's English text stay out of it (they are kept under `data.detail.technical`).
pub fn reader_error_zh(e: &ReaderError) -> String {
    match e {
        ReaderError::NoCard { .. } => "读卡器上没有卡片：请将卡片放在读卡器上后重试".into(),
        ReaderError::CardRemoved { .. } => {
            "操作过程中卡片被移开，操作是否生效未知：请将同一张卡片放回读卡器，系统会先核对卡片"
                .into()
        }
        ReaderError::Timeout { .. } => "卡片没有应答：请检查卡片是否放好后重试".into(),
        ReaderError::ReaderGone { .. } => "读卡器已断开：请重新连接读卡器，连接后会自动识别".into(),
        ReaderError::NotFound { .. } => "未找到该读卡器：请检查读卡器连接后刷新页面".into(),
        ReaderError::Busy { holder, .. } => {
            format!("读卡器正被 {holder} 使用：请等待其完成后再试")
        }
        ReaderError::Unsupported { .. } => "该读卡器不支持此业务：请换用其他读卡器".into(),
        ReaderError::Apdu { .. } => "发送给卡片的指令无效：请联系技术支持".into(),
        _ => "读卡器通信出错：请重新放置卡片后重试；如仍失败，请检查读卡器连接".into(),
    }
}

/// What a teller reads when the card refused a command or answered unexpectedly, in zh-CN.
pub fn purse_error_zh(e: &cardd_purse::PurseError) -> String {
    use cardd_purse::PurseError as P;
    match e {
        P::Reader(r) => reader_error_zh(r),
        P::Status { sw, .. } => {
            let code = format!("{:04X}", sw.0);
            match sw.0 {
                0x6A82 | 0x6A83 => format!(
                    "卡片上没有本业务需要的应用或文件（卡片返回 {code}）：读卡器上可能不是本业务的卡片，请换用正确的卡片"
                ),
                0x6A81 | 0x6283 | 0x9303 => format!(
                    "卡片应用已锁定（卡片返回 {code}）：该卡不能办理本业务，请联系发卡方处理"
                ),
                0x6983 | 0x6984 => format!(
                    "卡片的密码或密钥已锁定（卡片返回 {code}）：请联系发卡方处理"
                ),
                0x9401 => format!("卡内余额不足（卡片返回 {code}）"),
                0x9302 | 0x6988 => format!(
                    "卡片校验交易密钥失败，卡片未被写入（卡片返回 {code}）：请联系管理员检查密钥配置"
                ),
                _ => format!(
                    "卡片拒绝了本次操作（卡片返回 {code}）：请确认卡片已放好并且是本业务的卡片后重试；如仍失败，请联系技术支持"
                ),
            }
        }
        P::WrongPin { tries_left } => {
            format!("卡片 PIN 校验失败（剩余 {tries_left} 次）：请联系发卡方核对 PIN，切勿反复尝试")
        }
        P::Parse { .. } => {
            "卡片返回的数据格式不正确：读卡器上可能不是本业务的卡片，请换用正确的卡片".into()
        }
        P::Sam(_) => "安全模块校验失败：请联系管理员检查密钥配置".into(),
        _ => "卡片操作失败：请重新放置卡片后重试；如仍失败，请联系技术支持".into(),
    }
}

impl From<&ReaderError> for ApiError {
    fn from(e: &ReaderError) -> Self {
        let code = match e {
            ReaderError::NoCard { .. } => ErrorCode::NoCard,
            ReaderError::CardRemoved { .. } => ErrorCode::CardRemoved,
            ReaderError::Timeout { .. } => ErrorCode::ReaderTimeout,
            ReaderError::ReaderGone { .. } => ErrorCode::ReaderGone,
            ReaderError::NotFound { .. } => ErrorCode::ReaderNotFound,
            ReaderError::Busy { .. } => ErrorCode::ReaderBusy,
            ReaderError::Unsupported { .. } => ErrorCode::Unsupported,
            ReaderError::Apdu { .. } => ErrorCode::InvalidParams,
            ReaderError::Protocol { .. }
            | ReaderError::Config { .. }
            | ReaderError::Driver { .. } => ErrorCode::CardError,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, reader_error_zh(e)).with_detail(json!({ "technical": e.to_string() }))
    }
}

impl From<cardd_purse::PurseError> for ApiError {
    fn from(e: cardd_purse::PurseError) -> Self {
        match e {
            cardd_purse::PurseError::Reader(reader) => reader.into(),
            other => ApiError::new(ErrorCode::CardError, purse_error_zh(&other))
                .with_detail(json!({ "technical": other.to_string() })),
        }
    }
}

impl From<cardd_obu::IssueError> for ApiError {
    fn from(e: cardd_obu::IssueError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<cardd_store::HostError> for ApiError {
    fn from(e: cardd_store::HostError) -> Self {
        use cardd_store::HostError as H;
        let code = match &e {
            H::VehicleNotFound { .. } | H::RecordNotFound(_) => ErrorCode::HostNotFound,
            H::BadTransition { .. }
            | H::CardBusy { .. }
            | H::TxnIdInUse { .. }
            | H::LoadAttemptsExhausted { .. } => ErrorCode::RecordStateConflict,
            H::NoCard { .. } | H::CardBoundElsewhere { .. } => ErrorCode::CardNotEligible,
            H::Corrupt { .. } => ErrorCode::FailedClosed,
            H::Store(_) | H::Encode { .. } | H::SequenceExhausted { .. } => ErrorCode::Internal,
            _ => ErrorCode::InvalidParams,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<cardd_group::GroupError> for ApiError {
    fn from(e: cardd_group::GroupError) -> Self {
        let detail = match &e {
            // A declined or unanswered transfer: its id, to ask again.
            cardd_group::GroupError::TopUpNotPaid { topup, .. } => {
                Some(json!({ "topup_id": topup.topup_id, "status": topup.status }))
            }
            _ => None,
        };
        let error = ApiError::new(e.code(), e.to_string());
        match detail {
            Some(detail) => error.with_detail(detail),
            None => error,
        }
    }
}

/// A load the security module refused for want of a funded record (see
/// [`crate::funded_sam`]): refused before CREDIT, nothing was written to the card or the journal.
pub fn unfunded_load(e: &cardd_purse::SamError) -> ApiError {
    let why = match e {
        cardd_purse::SamError::LoadNotFunded { reason } => reason.clone(),
        _ => "安全模块没有该笔圈存的授权".to_owned(),
    };
    ApiError::new(
        ErrorCode::RecordStateConflict,
        format!("圈存被拒绝：没有为该笔圈存付款的记录（{why}）；卡片未被写入，卡内余额不变。请在【充值记录】中选择已付款的记录圈存"),
    )
}

/// A subscription method called over HTTP (it needs a WebSocket to send its notifications).
pub fn websocket_required(method: &str) -> ApiError {
    ApiError::new(
        ErrorCode::WebSocketRequired,
        format!("{method} 只能通过 WebSocket 调用（ws://…/?token=令牌）；HTTP 客户端请改用 events.poll 或 flows.events 轮询"),
    )
}

/// Parameters nested deeper than `depth_max` levels of arrays and objects.
pub fn nested_too_deep(depth_max: usize) -> ApiError {
    ApiError::invalid_params(format!("参数嵌套超过 {depth_max} 层，请检查请求内容"))
}

/// A journal failure: corruption fails closed, the rest is internal.
pub fn journal_error(e: cardd_journal::JournalError) -> ApiError {
    match e {
        cardd_journal::JournalError::Corrupt { .. } => {
            ApiError::new(ErrorCode::FailedClosed, format!("圈存日志损坏：{e}"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_errors_keep_their_meaning() {
        let e: ApiError = ReaderError::CardRemoved {
            reader: "sim:etc".into(),
        }
        .into();
        assert_eq!(e.code, ErrorCode::CardRemoved);
        assert!(e.message.contains("放回读卡器"), "{}", e.message);
        assert!(!e.message.contains("sim:etc"), "{}", e.message);
        let obj: ErrorObjectOwned = e.into();
        assert_eq!(obj.code(), ErrorCode::CardRemoved.code());
        let data: serde_json::Value = serde_json::from_str(obj.data().unwrap().get()).unwrap();
        assert_eq!(data["error"], "CardRemoved");
        assert!(data["action"]
            .as_str()
            .unwrap()
            .contains("Put the card back"));
    }

    #[test]
    fn unfunded_loads_say_nothing_was_written() {
        let e = unfunded_load(&cardd_purse::SamError::LoadNotFunded {
            reason: "充值记录 R1 不存在".into(),
        });
        assert_eq!(e.code, ErrorCode::RecordStateConflict);
        assert!(e.message.contains("充值记录 R1 不存在"), "{}", e.message);
        assert!(e.message.contains("卡片未被写入"), "{}", e.message);
        let e = unfunded_load(&cardd_purse::SamError::LoadNotAuthorized { card: "01".into() });
        assert!(e.message.contains("没有该笔圈存的授权"), "{}", e.message);
    }

    #[test]
    fn card_refusals_are_told_in_chinese_with_what_to_do() {
        let e: ApiError = cardd_purse::PurseError::Status {
            command: "SELECT",
            sw: cardd_reader::StatusWord(0x6A82),
        }
        .into();
        assert_eq!(e.code, ErrorCode::CardError);
        assert!(
            e.message.contains("6A82") && e.message.contains("请换用正确的卡片"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("SELECT"), "{}", e.message);
        assert!(e.detail.unwrap()["technical"]
            .as_str()
            .unwrap()
            .contains("SELECT"));
    }

    #[test]
    fn money_errors_are_invalid_params() {
        let e: ApiError = MoneyError::Negative.into();
        assert_eq!(e.code, ErrorCode::InvalidParams);
    }
}
