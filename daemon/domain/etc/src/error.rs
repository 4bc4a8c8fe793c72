//! Why the issuer host refused or failed, in words a teller can act on.
//!
//! Tellers read these messages on the counter screen, so every refusal is zh-CN, names what is
//! wrong (the plate, the colour, the record's current 圈存 status) and, where there is one, what
//! to do next. Storage failures keep the store's own message: an administrator reads those.

use cardd_api::money::Fen;
use cardd_api::ErrorCode;
use cardd_journal::{IntentBlock, JournalError, LoadError, StoreError};
use cardd_purse::PurseError;

use crate::model::{
    RecordAction, RecordStatus, CARD_NUMBER_DIGITS, CARD_RECORDS_MAX, OBU_CONTRACT_SERIAL_DIGITS,
    PAGE_SIZE_MAX, RECHARGE_FEN_MAX, RECORD_SEQ_PER_DAY_MAX,
};

/// A failure of the issuer host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The plate number is not a plate.
    #[error("车牌号“{plate}”不正确：{reason}")]
    InvalidPlate {
        /// What was entered.
        plate: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The colour code is not one of the standard plate colours.
    #[error(
        "车牌颜色代码 {0} 不是标准车牌颜色（0 蓝色、1 黄色、2 黑色、3 白色、4 渐变绿色、\
         5 黄绿双拼色、6 蓝白渐变色、11 绿色、12 红色）"
    )]
    InvalidPlateColour(u16),
    /// The card number is not an ETC user card number.
    #[error("用户卡卡号“{0}”不正确：应为 {CARD_NUMBER_DIGITS} 位数字")]
    InvalidCardNumber(String),
    /// The OBU contract serial is malformed.
    #[error("OBU 合同序列号“{0}”不正确：应为 {OBU_CONTRACT_SERIAL_DIGITS} 位数字或十六进制字符")]
    InvalidObuSerial(String),
    /// The vehicle class is not one of the toll classes.
    #[error("车型代码 {0} 不正确：客车为 1 至 4，货车为 11 至 16，专项作业车为 21 至 26")]
    InvalidVehicleClass(u8),
    /// A vehicle lists the same card twice, or too many cards.
    #[error("车辆的用户卡列表不正确：{0}")]
    InvalidCardList(String),
    /// A free-text field (owner, operator, channel, reason, transaction id) is unusable.
    #[error("{field}不正确：{reason}")]
    InvalidField {
        /// The field's zh-CN name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A recharge of zero or less.
    #[error("充值金额必须大于 0 元")]
    AmountNotPositive {
        /// The amount given, in fen.
        amount_fen: i64,
    },
    /// A recharge above [`RECHARGE_FEN_MAX`].
    #[error(
        "充值金额 {} 元超过单笔上限 {} 元，请分笔充值",
        yuan(*.amount_fen),
        yuan(RECHARGE_FEN_MAX)
    )]
    AmountTooLarge {
        /// The amount given, in fen.
        amount_fen: i64,
    },
    /// A card balance outside what a card can hold.
    #[error("卡内余额 {} 元不正确：应在 0 元到卡片上限之间", yuan(*.balance_fen))]
    InvalidBalance {
        /// The balance given, in fen.
        balance_fen: i64,
    },
    /// The balances reported for a finished load do not add up.
    #[error(
        "圈存后的金额 {} 元不等于圈存前的金额 {} 元加充值金额 {} 元；请核对卡内余额，并将该记录标记为待核对",
        yuan(*.after_fen),
        yuan(*.before_fen),
        yuan(*.amount_fen)
    )]
    BalanceMismatch {
        /// The record.
        record_id: String,
        /// 充值前的金额, as reported.
        before_fen: i64,
        /// 充值金额 of the record.
        amount_fen: i64,
        /// 充值后的金额, as reported.
        after_fen: i64,
    },
    /// No vehicle account with this plate and colour.
    #[error("未找到车辆 {plate}（{colour}），请核对车牌号和车牌颜色")]
    VehicleNotFound {
        /// The normalised plate.
        plate: String,
        /// The colour's zh-CN name.
        colour: &'static str,
    },
    /// The vehicle has no card to credit.
    #[error("车辆 {plate}（{colour}）没有绑定用户卡，不能充值")]
    NoCard {
        /// The normalised plate.
        plate: String,
        /// The colour's zh-CN name.
        colour: &'static str,
    },
    /// The card is already issued to another vehicle.
    #[error("用户卡 {card_number} 已绑定车辆 {plate}（{colour}），不能再绑定到其他车辆")]
    CardBoundElsewhere {
        /// The card.
        card_number: String,
        /// The vehicle holding it.
        plate: String,
        /// That vehicle's colour, zh-CN.
        colour: String,
    },
    /// No recharge record with this id.
    #[error("未找到充值记录 {0}")]
    RecordNotFound(String),
    /// The record's status does not allow the requested change.
    #[error("{}", refusal(*.current, *.action))]
    BadTransition {
        /// The record.
        record_id: String,
        /// Its status now.
        current: RecordStatus,
        /// What was asked.
        action: RecordAction,
    },
    /// Another record of the same card is being loaded or awaits reconciliation.
    #[error("用户卡 {card_number} 还有{status}的充值记录 {other_record_id}，请先处理该记录再圈存")]
    CardBusy {
        /// The card.
        card_number: String,
        /// The record that blocks it.
        other_record_id: String,
        /// That record's status, zh-CN.
        status: &'static str,
    },
    /// The record has had as many load attempts as one record may have.
    #[error(
        "充值记录 {record_id} 已圈存 {attempts} 次仍未完成，已达到上限，不能再次圈存；请主管核对卡片余额后处理该记录"
    )]
    LoadAttemptsExhausted {
        /// The record.
        record_id: String,
        /// Its load attempts so far ([`crate::model::RECORD_LOAD_ATTEMPTS_MAX`]).
        attempts: usize,
    },
    /// The load transaction id already belongs to another record.
    #[error("圈存交易号 {txn_id} 已用于充值记录 {other_record_id}，请使用新的交易号")]
    TxnIdInUse {
        /// The transaction id.
        txn_id: String,
        /// The record it belongs to.
        other_record_id: String,
    },
    /// A change meant for one load of the record, while the record is with another load (or
    /// none): nothing was changed.
    #[error("充值记录 {record_id} 当前不在圈存交易 {txn_id} 中（可能已由其他圈存办理），未作修改；请重新查询该记录")]
    NotThisLoad {
        /// The record.
        record_id: String,
        /// The load the change was meant for.
        txn_id: String,
    },
    /// The query's time range is reversed.
    #[error("充值开始时间 {from} 晚于结束时间 {to}，请重新选择时间")]
    TimeRangeReversed {
        /// The start, China time (`YYYY-MM-DD HH:MM:SS`).
        from: String,
        /// The end, China time.
        to: String,
    },
    /// Pages count from 1.
    #[error("页码应从 1 开始")]
    PageOutOfRange,
    /// The page size is zero or above [`PAGE_SIZE_MAX`].
    #[error("每页条数应为 1 到 {PAGE_SIZE_MAX} 条，收到 {0}")]
    PageSizeOutOfRange(u32),
    /// A card has more matching records than one answer may hold.
    #[error("用户卡 {card_number} 的充值记录超过 {CARD_RECORDS_MAX} 条，请按车牌号和时间分页查询")]
    TooManyRecords {
        /// The card.
        card_number: String,
    },
    /// A day's record numbers are used up.
    #[error("{date} 的充值记录编号已用完（每天最多 {RECORD_SEQ_PER_DAY_MAX} 笔），请联系管理员")]
    SequenceExhausted {
        /// The day, `YYYYMMDD`.
        date: String,
    },
    /// A value could not be encoded for storage (a time outside years 0–9999, a value larger
    /// than [`crate::model::STORED_VALUE_BYTES_MAX`]); nothing was stored.
    #[error("无法保存充值数据 {key}：{reason}")]
    Encode {
        /// The sled key.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// A stored value failed its checksum or does not decode: fail closed.
    #[error("充值数据 {key} 已损坏（{reason}）；请停止办理充值和圈存，并联系管理员恢复数据目录")]
    Corrupt {
        /// The sled key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A database server (the central issuer host's PostgreSQL) failed or could not be reached;
    /// a change whose answer was lost may or may not have been made.
    #[error("充值数据库出错：{0}；请重新查询该记录后再决定下一步，如仍失败请联系管理员")]
    Database(String),
    /// The database's schema is newer than this program knows: an older binary must not write
    /// to it.
    #[error(
        "充值数据库的结构版本为 {found}，而本程序只支持到版本 {supported}：请先升级 cardd，再连接该数据库"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i32,
        /// The newest version this program knows.
        supported: i32,
    },
    /// The central issuer host (fleet mode) could not be reached or did not answer in time; a
    /// change whose answer was lost may or may not have been made there.
    #[error("无法连接发卡方后台（{0}），暂不能办理；请稍后再试")]
    Unreachable(String),
    /// The central issuer host refused or failed: its code and the message it gave.
    #[error("{message}")]
    Remote {
        /// The host's API code.
        code: ErrorCode,
        /// Whether the request itself was wrong (a refusal) rather than the host failing.
        refusal: bool,
        /// What the host said, as a teller reads it.
        message: String,
    },
}

impl HostError {
    /// Whether the request itself was wrong (bad input or a refused state change) rather than the
    /// store failing; the daemon maps the former to an invalid-parameter or conflict code.
    pub fn is_refusal(&self) -> bool {
        if let HostError::Remote { refusal, .. } = self {
            return *refusal;
        }
        !matches!(
            self,
            HostError::Corrupt { .. }
                | HostError::Store(_)
                | HostError::Database(_)
                | HostError::SchemaTooNew { .. }
                | HostError::SequenceExhausted { .. }
                | HostError::Encode { .. }
                | HostError::Unreachable(_)
        )
    }

    /// The API code of this failure.
    pub fn code(&self) -> ErrorCode {
        use HostError as H;
        match self {
            H::VehicleNotFound { .. } | H::RecordNotFound(_) => ErrorCode::HostNotFound,
            H::BadTransition { .. }
            | H::CardBusy { .. }
            | H::TxnIdInUse { .. }
            | H::NotThisLoad { .. }
            | H::LoadAttemptsExhausted { .. } => ErrorCode::RecordStateConflict,
            H::NoCard { .. } | H::CardBoundElsewhere { .. } => ErrorCode::CardNotEligible,
            H::Corrupt { .. } | H::SchemaTooNew { .. } => ErrorCode::FailedClosed,
            H::Unreachable(_) => ErrorCode::IssuerHostUnreachable,
            H::Remote { code, .. } => *code,
            H::Store(_) | H::Database(_) | H::Encode { .. } | H::SequenceExhausted { .. } => {
                ErrorCode::Internal
            }
            _ => ErrorCode::InvalidParams,
        }
    }
}

/// Why the ETC service refused or failed, as the teller reads it (Display) with its API code
/// ([`EtcError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum EtcError {
    /// The records store refused or failed.
    #[error(transparent)]
    Record(#[from] HostError),
    /// The journal failed.
    #[error("{}", journal_message(.0))]
    Journal(#[from] JournalError),
    /// A load to the card is unsettled, or the card contradicts a lost-card verdict.
    #[error(transparent)]
    Blocked(IntentBlock),
    /// Refused (or failed) for a reason told in `message`; `detail` is what a client may show
    /// besides (the evidence, whether a reason is required, the technical error).
    #[error("{message}")]
    Refused {
        /// The API code.
        code: ErrorCode,
        /// What the teller reads (zh-CN).
        message: String,
        /// Structured detail (`data.detail` on the wire).
        detail: Option<serde_json::Value>,
    },
}

fn journal_message(e: &JournalError) -> String {
    match e {
        JournalError::Corrupt { .. } => format!("圈存日志损坏：{e}"),
        other => other.to_string(),
    }
}

impl EtcError {
    /// A refusal with `code` and the teller's `message`.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> EtcError {
        EtcError::Refused {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The same error with structured detail (refusals only; others are returned unchanged).
    pub fn with_detail(self, detail: serde_json::Value) -> EtcError {
        match self {
            EtcError::Refused { code, message, .. } => EtcError::Refused {
                code,
                message,
                detail: Some(detail),
            },
            other => other,
        }
    }

    /// Invalid input.
    pub fn invalid_params(message: impl Into<String>) -> EtcError {
        EtcError::refused(ErrorCode::InvalidParams, message)
    }

    /// The API code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            EtcError::Record(e) => e.code(),
            EtcError::Journal(JournalError::Corrupt { .. }) => ErrorCode::FailedClosed,
            EtcError::Journal(_) => ErrorCode::Internal,
            EtcError::Blocked(b) => b.code(),
            EtcError::Refused { code, .. } => *code,
        }
    }

    /// Structured detail, when there is some.
    pub fn detail(&self) -> Option<&serde_json::Value> {
        match self {
            EtcError::Refused { detail, .. } => detail.as_ref(),
            _ => None,
        }
    }
}

/// A card or reader failure, told as the daemon tells every one of them.
impl From<PurseError> for EtcError {
    fn from(e: PurseError) -> Self {
        use cardd_journal::teller::{purse_error_zh, reader_error_code, reader_error_zh};
        let technical = serde_json::json!({ "technical": match &e {
            PurseError::Reader(r) => r.to_string(),
            other => other.to_string(),
        } });
        let (code, message) = match &e {
            PurseError::Reader(r) => (reader_error_code(r), reader_error_zh(r)),
            other => (ErrorCode::CardError, purse_error_zh(other)),
        };
        EtcError::refused(code, message).with_detail(technical)
    }
}

/// What a teller reads when a journaled load fails, with the matching code.
pub fn load_error(e: &LoadError) -> EtcError {
    let refused = |code, message: &str| EtcError::refused(code, message);
    match e {
        LoadError::WrongCard { expected, found } => refused(
            ErrorCode::CardNotEligible,
            &format!("卡号不符：读卡器上是 {found}，应为 {expected}；请插入正确的卡"),
        ),
        LoadError::OutcomeUnknown { .. } => refused(
            ErrorCode::LoadOutcomeUnknown,
            "写卡过程中卡片被拔出或无响应，圈存结果未知：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
        ),
        LoadError::AfterCredit { .. } => refused(
            ErrorCode::LoadOutcomeUnknown,
            "卡片已响应圈存，但结果未能记录，圈存结果未知：请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值",
        ),
        LoadError::Unresolved { txn_id, .. } => refused(
            ErrorCode::CardEvidenceRequired,
            &format!("该卡有一笔未确认的圈存（{txn_id}），需主管核对后处理；在此之前不能再次圈存"),
        ),
        LoadError::VerdictContradicted { card, txn_id, .. } => {
            EtcError::Blocked(IntentBlock::Contradicted {
                card_number: card.clone(),
                txn_id: txn_id.clone(),
            })
        }
        LoadError::TacInvalid { txn_id } => refused(
            ErrorCode::CardEvidenceRequired,
            &format!("卡片返回的交易验证码（TAC）校验失败，圈存交易 {txn_id} 已标记为待核对；请主管核对卡片余额"),
        ),
        LoadError::Card(PurseError::Status { command, sw })
            if *command == "INITIALIZE FOR LOAD" && sw.0 == 0x6985 =>
        {
            refused(
                ErrorCode::CardNotEligible,
                "圈存后卡内余额将超过卡片的余额上限，卡片拒绝圈存；请先消费或减少圈存金额，充值记录保持未圈存",
            )
        }
        LoadError::Card(PurseError::WrongPin { tries_left }) => refused(
            ErrorCode::CardError,
            &format!("卡片 PIN 校验失败（剩余 {tries_left} 次），未圈存；此 PIN 不会再自动提交给该卡，请联系发行方核对 PIN"),
        ),
        LoadError::Card(PurseError::PinRefusedBefore) => refused(
            ErrorCode::CardError,
            &format!("未圈存：{}", cardd_journal::teller::PIN_REFUSED_BEFORE_ZH),
        ),
        LoadError::Card(PurseError::Reader(r)) => {
            use cardd_journal::teller::{reader_error_code, reader_error_zh};
            refused(reader_error_code(r), &reader_error_zh(r))
                .with_detail(serde_json::json!({ "technical": r.to_string() }))
        }
        LoadError::Unfunded(e) => refused(
            ErrorCode::RecordStateConflict,
            &cardd_journal::teller::unfunded_load_zh(e),
        ),
        LoadError::Card(p) => refused(
            ErrorCode::CardError,
            &format!("圈存失败：{}", cardd_journal::teller::purse_error_zh(p)),
        )
        .with_detail(serde_json::json!({ "technical": p.to_string() })),
        LoadError::Mac1(_) => refused(
            ErrorCode::CardError,
            "卡片校验失败（MAC1），未圈存：该卡不是本系统发行的卡片或密钥不符，请联系管理员",
        )
        .with_detail(serde_json::json!({ "technical": e.to_string() })),
        LoadError::UnknownCard(_) => refused(
            ErrorCode::UnsupportedCard,
            "读卡器上不是 ETC 用户卡或城市一卡通，未圈存：请换用正确的卡片",
        ),
        LoadError::LoadedSinceBackup(claim) => refused(
            ErrorCode::RecordStateConflict,
            &format!(
                "卡片交易记录显示该笔充值已于 {} 圈存到卡内（联机交易序号 {}，在系统恢复所用的备份之后），不再圈存",
                claim.card_time, claim.atc
            ),
        ),
        LoadError::RestoredUnproven { .. } => refused(
            ErrorCode::CardEvidenceRequired,
            "系统已从备份恢复，该卡的交易记录不足以证明该笔充值在备份之后未曾圈存，未圈存：请主管核对卡片与后台记录后处理",
        )
        .with_detail(serde_json::json!({ "technical": e.to_string() })),
        LoadError::Journal(j) => {
            refused(ErrorCode::Internal, "圈存日志写入失败，未圈存：请联系管理员检查 cardd 数据目录")
                .with_detail(serde_json::json!({ "technical": j.to_string() }))
        }
    }
}

/// `12.30` from 1230 fen.
fn yuan(fen: i64) -> String {
    Fen(fen).to_yuan_string()
}

/// The refusal a teller reads when `action` is not allowed in status `current`.
fn refusal(current: RecordStatus, action: RecordAction) -> String {
    let label = current.label();
    match (action, current) {
        (RecordAction::BeginLoad, RecordStatus::Loaded) => {
            format!("该充值记录状态为{label}，不能再次圈存")
        }
        (RecordAction::BeginLoad, RecordStatus::Loading) => {
            format!("该充值记录状态为{label}，不能再次圈存，请等待本次圈存结束")
        }
        (RecordAction::BeginLoad, RecordStatus::NeedsReconciliation) => {
            format!("该充值记录状态为{label}，不能圈存，请先核对卡内余额")
        }
        (RecordAction::MarkNotLoaded, RecordStatus::Loading) => {
            format!("该充值记录状态为{label}，不能改为未圈存，请等待本次圈存结束")
        }
        _ => format!("该充值记录状态为{label}，不能{}", action.refused_verb()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_loads_are_told_with_their_code_and_unknown_is_never_failed() {
        let e = load_error(&LoadError::Unfunded(cardd_purse::SamError::LoadNotFunded {
            reason: "充值记录 R1 不存在".into(),
        }));
        assert_eq!(e.code(), ErrorCode::RecordStateConflict);
        assert!(e.to_string().contains("卡片未被写入"), "{e}");
        let e = load_error(&LoadError::OutcomeUnknown {
            txn_id: "t1".into(),
            source: cardd_reader::ReaderError::CardRemoved {
                reader: "sim:etc".into(),
            },
        });
        assert_eq!(e.code(), ErrorCode::LoadOutcomeUnknown);
        assert!(e.to_string().contains("切勿重复充值"), "{e}");
        assert!(!e.to_string().contains("失败"), "{e}");
        let e = EtcError::from(PurseError::Reader(cardd_reader::ReaderError::NoCard {
            reader: "sim:etc".into(),
        }));
        assert_eq!(e.code(), ErrorCode::NoCard);
        assert!(!e.to_string().contains("sim:etc"), "{e}");
        assert!(e.detail().unwrap()["technical"]
            .as_str()
            .unwrap()
            .contains("sim:etc"));
        let e = EtcError::from(HostError::RecordNotFound("R9".into()));
        assert_eq!(e.code(), ErrorCode::HostNotFound);
        assert_eq!(e.to_string(), "未找到充值记录 R9");
    }

    #[test]
    fn refusals_name_the_current_status() {
        let err = HostError::BadTransition {
            record_id: "R1".into(),
            current: RecordStatus::Loaded,
            action: RecordAction::BeginLoad,
        };
        assert_eq!(err.to_string(), "该充值记录状态为已圈存，不能再次圈存");
        let err = HostError::BadTransition {
            record_id: "R1".into(),
            current: RecordStatus::NotLoaded,
            action: RecordAction::FinishLoad,
        };
        assert_eq!(err.to_string(), "该充值记录状态为未圈存，不能完成圈存");
        assert!(err.is_refusal());
    }

    #[test]
    fn money_in_messages_is_yuan() {
        let err = HostError::AmountTooLarge {
            amount_fen: 5_000_001,
        };
        assert_eq!(
            err.to_string(),
            "充值金额 50000.01 元超过单笔上限 50000.00 元，请分笔充值"
        );
    }
}
