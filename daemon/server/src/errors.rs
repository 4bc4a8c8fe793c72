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

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
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

pub use cardd_journal::teller::{purse_error_zh, reader_error_zh};

impl From<&ReaderError> for ApiError {
    fn from(e: &ReaderError) -> Self {
        let code = cardd_journal::teller::reader_error_code(e);
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

impl From<cardd_etc::HostError> for ApiError {
    fn from(e: cardd_etc::HostError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<cardd_etc::EtcError> for ApiError {
    fn from(e: cardd_etc::EtcError) -> Self {
        let detail = e.detail().cloned();
        let err = ApiError::new(e.code(), e.to_string());
        match detail {
            Some(detail) => err.with_detail(detail),
            None => err,
        }
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
    ApiError::new(
        ErrorCode::RecordStateConflict,
        cardd_journal::teller::unfunded_load_zh(e),
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
    fn a_plugin_crash_or_garbled_reply_is_not_told_as_an_unplugged_reader() {
        let crashed: ApiError = ReaderError::DriverCrashed {
            reader: "plugin:acme:r1".into(),
            program: "acme".into(),
        }
        .into();
        assert_eq!(crashed.code, ErrorCode::ReaderDriverCrashed);
        assert!(
            crashed
                .message
                .starts_with("读卡器插件 acme 意外退出，正在重启"),
            "{}",
            crashed.message
        );
        assert!(!crashed.message.contains("重新连接"), "{}", crashed.message);
        let garbled: ApiError = ReaderError::DriverMalformed {
            reader: "plugin:acme:r1".into(),
            program: "acme".into(),
            detail: "not a protocol message".into(),
        }
        .into();
        assert_eq!(garbled.code, ErrorCode::ReaderDriverMalformed);
        assert!(
            garbled.message.starts_with("读卡器插件 acme 回复格式错误"),
            "{}",
            garbled.message
        );
        // The English detail stays for support, out of the teller's sentence.
        assert!(!garbled.message.contains("not a protocol message"));
        let gone: ApiError = ReaderError::ReaderGone {
            reader: "plugin:acme:r1".into(),
        }
        .into();
        assert_eq!(gone.code, ErrorCode::ReaderGone);
        assert!(gone.message.contains("重新连接读卡器"), "{}", gone.message);
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
