//! What a teller reads about a card or reader failure, in zh-CN, with the matching API code.
//!
//! The journal's loads fail with card and reader errors; every domain that loads (ETC, group
//! recharge) and the daemon's error mapping tell them to people the same way, so the wording
//! lives here, next to the loads, once.

use cardd_api::ErrorCode;
use cardd_reader::ReaderError;

/// The API code of a reader failure.
pub fn reader_error_code(e: &ReaderError) -> ErrorCode {
    match e {
        ReaderError::NoCard { .. } => ErrorCode::NoCard,
        ReaderError::CardRemoved { .. } => ErrorCode::CardRemoved,
        ReaderError::Timeout { .. } => ErrorCode::ReaderTimeout,
        ReaderError::ReaderGone { .. } => ErrorCode::ReaderGone,
        ReaderError::DriverCrashed { .. } => ErrorCode::ReaderDriverCrashed,
        ReaderError::DriverMalformed { .. } => ErrorCode::ReaderDriverMalformed,
        ReaderError::NotFound { .. } => ErrorCode::ReaderNotFound,
        ReaderError::Busy { .. } => ErrorCode::ReaderBusy,
        ReaderError::Unsupported { .. } => ErrorCode::Unsupported,
        ReaderError::Apdu { .. } => ErrorCode::InvalidParams,
        ReaderError::Protocol { .. } | ReaderError::Config { .. } | ReaderError::Driver { .. } => {
            ErrorCode::CardError
        }
        _ => ErrorCode::Internal,
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
        ReaderError::DriverCrashed { program, .. } => format!(
            "读卡器插件 {program} 意外退出，正在重启：请稍候几秒，待读卡器恢复后重试；如反复出现，请将日志发给读卡器厂商"
        ),
        ReaderError::DriverMalformed { program, .. } => format!(
            "读卡器插件 {program} 回复格式错误：请重试；如反复出现，请将日志发给读卡器厂商"
        ),
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
            format!("卡片 PIN 校验失败（剩余 {tries_left} 次）：此 PIN 不会再自动提交给该卡；请联系发卡方核对 PIN，切勿反复尝试")
        }
        P::PinRefusedBefore => PIN_REFUSED_BEFORE_ZH.into(),
        P::PinRecord(_) => {
            "无法读写拒绝 PIN 记录，未向卡片提交 PIN：请联系管理员检查数据目录所在磁盘".into()
        }
        P::Parse { .. } => {
            "卡片返回的数据格式不正确：读卡器上可能不是本业务的卡片，请换用正确的卡片".into()
        }
        P::Sam(_) => "安全模块校验失败：请联系管理员检查密钥配置".into(),
        _ => "卡片操作失败：请重新放置卡片后重试；如仍失败，请联系技术支持".into(),
    }
}

/// What a teller reads when the card refused the configured PIN before, so cardd did not
/// present it again (`cardd_purse::pin`).
pub const PIN_REFUSED_BEFORE_ZH: &str = "该卡曾拒绝配置的 PIN，为免卡片锁定，cardd 不再自动提交此 PIN，卡片未被写入：请管理员与发卡方核对 PIN 配置（cards.etc_pin）";

/// What a teller reads when the issuer host cannot be reached: the load is refused at once and
/// the card is not written.
pub const HOST_UNREACHABLE_ZH: &str = "无法连接发卡方后台，暂不能圈存；请稍后再试";

/// What a teller reads when the security module refused a load for want of a funded record.
pub fn unfunded_load_zh(e: &cardd_purse::SamError) -> String {
    if let cardd_purse::SamError::HostUnreachable { .. } = e {
        return HOST_UNREACHABLE_ZH.to_owned();
    }
    let why = match e {
        cardd_purse::SamError::LoadNotFunded { reason } => reason.clone(),
        _ => "安全模块没有该笔圈存的授权".to_owned(),
    };
    format!("圈存被拒绝：没有为该笔圈存付款的记录（{why}）；卡片未被写入，卡内余额不变。请在【充值记录】中选择已付款的记录圈存")
}
