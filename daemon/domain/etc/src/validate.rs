//! Input checks and normalisation, done once before anything is stored.
//!
//! A plate typed at a counter arrives with spaces, a middle dot (陕A·12345), full-width
//! characters from a Chinese input method or lower-case letters; the same vehicle must be found
//! whichever way it was typed, so plates are normalised before they become keys. Everything
//! else a teller types (names, reasons, channels) is trimmed, bounded and free of control
//! characters, because it ends up in records that are shown and audited later.

use cardd_api::types::{plate_colour_zh, PLATE_COLOURS};

use crate::error::HostError;
use crate::model::{
    vehicle_class_zh, PlateColour, BALANCE_FEN_MAX, CARD_NUMBER_DIGITS, OBU_CONTRACT_SERIAL_DIGITS,
    PLATE_CHARS_MAX, RECHARGE_FEN_MAX,
};
use crate::model::{
    vehicle_user_type_zh, VehicleDetails, ENGINE_NUMBER_CHARS_MAX, VEHICLE_AXLES_MAX,
    VEHICLE_DESCRIPTION_GBK_BYTES_MAX, VEHICLE_DIMENSION_MM_MAX, VEHICLE_LOAD_KG_OR_SEATS_MAX,
    VEHICLE_USER_TYPES, VEHICLE_WHEELS_MAX,
};

/// Province (and municipality, autonomous region) abbreviations that open a civil plate.
pub const PLATE_PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

/// Characters that may end a plate after its letters and digits: trailer, learner, police,
/// Hong Kong, Macao, consulate, test and oversize plates.
pub const PLATE_SUFFIXES: &str = "挂学警港澳领试超";

/// Separators people write inside a plate (陕A·12345) and that are not part of it.
const PLATE_SEPARATORS: &[char] = &['·', '•', '・', '．'];

/// Normalises and checks a plate: trims, drops a middle-dot separator, turns full-width letters
/// and digits into ASCII and ASCII letters into upper case; then requires a province
/// abbreviation, one or more letters or digits and at most one suffix (挂, 学, …), at most
/// [`PLATE_CHARS_MAX`] characters in all.
///
/// Plates that do not start with a province (embassy 使 plates, WJ and military plates) are
/// refused: ETC accounts here are for civil vehicles.
pub fn normalize_plate(input: &str) -> Result<String, HostError> {
    let bad = |reason| HostError::InvalidPlate {
        plate: input.to_owned(),
        reason,
    };
    let mut plate = String::with_capacity(input.len());
    for c in input.trim().chars() {
        if PLATE_SEPARATORS.contains(&c) {
            continue;
        }
        if c.is_whitespace() {
            return Err(bad("车牌号中不能有空格"));
        }
        plate.push(half_width(c).to_ascii_uppercase());
    }
    let count = plate.chars().count();
    if count == 0 {
        return Err(bad("车牌号不能为空"));
    }
    if count > PLATE_CHARS_MAX {
        return Err(bad("车牌号最多 12 个字符"));
    }
    let mut chars = plate.chars();
    match chars.next() {
        Some(first) if PLATE_PROVINCES.contains(first) => {}
        _ => return Err(bad("车牌号应以省份简称开头（如“陕”）")),
    }
    let rest: Vec<char> = chars.collect();
    let body = match rest.split_last() {
        Some((last, body)) if PLATE_SUFFIXES.contains(*last) => body,
        _ => rest.as_slice(),
    };
    if body.is_empty() {
        return Err(bad("省份简称后应有字母或数字"));
    }
    if !body.iter().all(char::is_ascii_alphanumeric) {
        return Err(bad("省份简称后只能是字母和数字（挂、学等字样只能在最后）"));
    }
    Ok(plate)
}

/// A full-width ASCII character (`Ａ`, `１`) as its ASCII form; others unchanged.
fn half_width(c: char) -> char {
    let code = u32::from(c);
    if (0xFF01..=0xFF5E).contains(&code) {
        char::from_u32(code - 0xFEE0).unwrap_or(c)
    } else {
        c
    }
}

/// The plate colour with this code, refused unless it is a standard colour.
pub fn plate_colour(code: u16) -> Result<PlateColour, HostError> {
    if PLATE_COLOURS.iter().any(|(c, _)| *c == code) {
        Ok(PlateColour {
            code,
            label: plate_colour_zh(code).to_owned(),
        })
    } else {
        Err(HostError::InvalidPlateColour(code))
    }
}

/// The zh-CN name of a plate colour code (`其他` when not standard).
pub fn colour_label(code: u16) -> &'static str {
    plate_colour_zh(code)
}

/// A card number, trimmed: exactly [`CARD_NUMBER_DIGITS`] ASCII digits.
pub fn card_number(input: &str) -> Result<String, HostError> {
    let t = input.trim();
    if t.len() == CARD_NUMBER_DIGITS && t.bytes().all(|b| b.is_ascii_digit()) {
        Ok(t.to_owned())
    } else {
        Err(HostError::InvalidCardNumber(input.to_owned()))
    }
}

/// An OBU contract serial, trimmed and upper-cased: [`OBU_CONTRACT_SERIAL_DIGITS`] hex digits.
pub fn obu_contract_serial(input: &str) -> Result<String, HostError> {
    let t = input.trim().to_ascii_uppercase();
    if t.len() == OBU_CONTRACT_SERIAL_DIGITS && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(HostError::InvalidObuSerial(input.to_owned()))
    }
}

/// A toll vehicle class code.
pub fn vehicle_class(code: u8) -> Result<u8, HostError> {
    vehicle_class_zh(code)
        .map(|_| code)
        .ok_or(HostError::InvalidVehicleClass(code))
}

/// Vehicle details for an OBU's vehicle file: a known 车辆用户类型, dimensions from 1 mm to
/// [`VEHICLE_DIMENSION_MM_MAX`] with the wheelbase shorter than the vehicle, 2 to
/// [`VEHICLE_WHEELS_MAX`] wheels on 1 to [`VEHICLE_AXLES_MAX`] axles, a load or seat count that
/// fits three bytes, a description of at most 16 GBK bytes and an engine number of ASCII
/// letters, digits and `-`. Texts are trimmed (engine numbers upper-cased); either may be empty.
pub fn vehicle_details(input: &VehicleDetails) -> Result<VehicleDetails, HostError> {
    let bad = |field, reason: String| HostError::InvalidField { field, reason };
    if vehicle_user_type_zh(input.user_type).is_none() {
        let known: Vec<String> = VEHICLE_USER_TYPES
            .iter()
            .map(|(code, name)| format!("{code} {name}"))
            .collect();
        return Err(bad("车辆用户类型", format!("应为 {}", known.join("、"))));
    }
    for (field, mm) in [
        ("车长", input.length_mm),
        ("车宽", input.width_mm),
        ("车高", input.height_mm),
        ("轴距", input.wheelbase_mm),
    ] {
        if !(1..=VEHICLE_DIMENSION_MM_MAX).contains(&mm) {
            return Err(bad(
                field,
                format!("应在 1 到 {VEHICLE_DIMENSION_MM_MAX} 毫米之间"),
            ));
        }
    }
    if input.wheelbase_mm >= input.length_mm {
        return Err(bad("轴距", "应小于车长".into()));
    }
    if !(2..=VEHICLE_WHEELS_MAX).contains(&input.wheels) {
        return Err(bad(
            "车轮数",
            format!("应在 2 到 {VEHICLE_WHEELS_MAX} 之间"),
        ));
    }
    if !(1..=VEHICLE_AXLES_MAX).contains(&input.axles) || input.axles > input.wheels {
        return Err(bad(
            "车轴数",
            format!("应在 1 到 {VEHICLE_AXLES_MAX} 之间且不多于车轮数"),
        ));
    }
    if input.load_kg_or_seats > VEHICLE_LOAD_KG_OR_SEATS_MAX {
        return Err(bad(
            "核定载质量/座位数",
            format!("最大 {VEHICLE_LOAD_KG_OR_SEATS_MAX}"),
        ));
    }
    let description = input.description.trim();
    if description.chars().any(char::is_control) {
        return Err(bad("车辆描述", "不能含有控制字符".into()));
    }
    let gbk_bytes: usize = description
        .chars()
        .map(|c| if c.is_ascii() { 1 } else { 2 })
        .sum();
    if gbk_bytes > VEHICLE_DESCRIPTION_GBK_BYTES_MAX {
        return Err(bad(
            "车辆描述",
            format!("最多 {VEHICLE_DESCRIPTION_GBK_BYTES_MAX} 字节（8 个汉字）"),
        ));
    }
    let engine_number = input.engine_number.trim().to_ascii_uppercase();
    if engine_number.len() > ENGINE_NUMBER_CHARS_MAX
        || !engine_number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad(
            "发动机号",
            format!("最多 {ENGINE_NUMBER_CHARS_MAX} 个字母、数字或“-”"),
        ));
    }
    Ok(VehicleDetails {
        description: description.to_owned(),
        engine_number,
        ..input.clone()
    })
}

/// A required free-text field: trimmed, 1 to `chars_max` characters, no control characters.
pub fn text(field: &'static str, input: &str, chars_max: usize) -> Result<String, HostError> {
    let t = input.trim();
    let bad = |reason: String| HostError::InvalidField { field, reason };
    if t.is_empty() {
        return Err(bad("不能为空".into()));
    }
    if t.chars().count() > chars_max {
        return Err(bad(format!("最多 {chars_max} 个字符")));
    }
    if t.chars().any(char::is_control) {
        return Err(bad("不能含有控制字符".into()));
    }
    Ok(t.to_owned())
}

/// A load transaction id: 1 to `chars_max` visible ASCII characters, as the journal keys them.
pub fn txn_id(input: &str, chars_max: usize) -> Result<String, HostError> {
    let bad = |reason: String| HostError::InvalidField {
        field: "圈存交易号",
        reason,
    };
    if input.is_empty() {
        return Err(bad("不能为空".into()));
    }
    if input.len() > chars_max {
        return Err(bad(format!("最多 {chars_max} 个字符")));
    }
    if !input.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("只能是字母、数字和符号，不能有空格".into()));
    }
    Ok(input.to_owned())
}

/// A recharge amount: more than zero and at most [`RECHARGE_FEN_MAX`].
pub fn recharge_amount(amount_fen: i64) -> Result<i64, HostError> {
    if amount_fen <= 0 {
        Err(HostError::AmountNotPositive { amount_fen })
    } else if amount_fen > RECHARGE_FEN_MAX {
        Err(HostError::AmountTooLarge { amount_fen })
    } else {
        Ok(amount_fen)
    }
}

/// A card balance: 0 to [`BALANCE_FEN_MAX`].
pub fn balance(balance_fen: i64) -> Result<i64, HostError> {
    if (0..=BALANCE_FEN_MAX).contains(&balance_fen) {
        Ok(balance_fen)
    } else {
        Err(HostError::InvalidBalance { balance_fen })
    }
}

/// A vehicle's records query, checked: the normalised plate and its colour; the page from 1,
/// the page size within [`crate::model::PAGE_SIZE_MAX`], the time range not reversed.
pub fn record_query(
    query: &crate::model::RecordQuery,
) -> Result<(String, crate::model::PlateColour), HostError> {
    let plate = normalize_plate(&query.plate)?;
    let colour = plate_colour(query.colour)?;
    if query.page == 0 {
        return Err(HostError::PageOutOfRange);
    }
    if query.page_size == 0 || query.page_size > crate::model::PAGE_SIZE_MAX {
        return Err(HostError::PageSizeOutOfRange(query.page_size));
    }
    if let (Some(from), Some(to)) = (query.from, query.to) {
        if from > to {
            return Err(HostError::TimeRangeReversed {
                from: cardd_journal::clock::china_time_text(from),
                to: cardd_journal::clock::china_time_text(to),
            });
        }
    }
    Ok((plate, colour))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_are_normalised() {
        for (typed, want) in [
            ("陕A12345", "陕A12345"),
            ("  陕a12345 ", "陕A12345"),
            ("陕A·12345", "陕A12345"),
            ("陕Ａ１２３４５", "陕A12345"),
            ("陕ad12345", "陕AD12345"),
            ("陕A1234挂", "陕A1234挂"),
            ("京B1234学", "京B1234学"),
        ] {
            assert_eq!(normalize_plate(typed).expect(typed), want, "{typed}");
        }
    }

    #[test]
    fn bad_plates_are_refused_with_a_reason() {
        for bad in [
            "",
            "   ",
            "陕",
            "A12345",
            "12345",
            "使014123",
            "陕A 12345",
            "陕A-12345",
            "陕A12挂345",
            "陕A12345678901",
            "陕陕12345",
            "陕A1234\u{0}",
        ] {
            let err = normalize_plate(bad).unwrap_err();
            assert!(
                matches!(err, HostError::InvalidPlate { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("车牌号"), "{err}");
        }
    }

    #[test]
    fn every_standard_colour_and_no_other() {
        for (code, name) in PLATE_COLOURS {
            assert_eq!(plate_colour(*code).expect("standard").label, *name);
        }
        for code in [7, 8, 9, 10, 13, 99, u16::MAX] {
            assert!(matches!(
                plate_colour(code),
                Err(HostError::InvalidPlateColour(c)) if c == code
            ));
        }
    }

    #[test]
    fn card_numbers_obu_serials_and_classes() {
        assert_eq!(
            card_number(" 61011801000000000001 ").expect("ok"),
            "61011801000000000001"
        );
        for bad in [
            "",
            "6101180100000000000",
            "610118010000000000012",
            "6101180100000000000A",
        ] {
            assert!(card_number(bad).is_err(), "{bad}");
        }
        assert_eq!(
            obu_contract_serial("6101180100000001").expect("ok"),
            "6101180100000001"
        );
        assert_eq!(
            obu_contract_serial("0a0b0c0d01020304").expect("ok"),
            "0A0B0C0D01020304"
        );
        assert!(obu_contract_serial("61011801").is_err());
        assert_eq!(vehicle_class(1).expect("ok"), 1);
        assert_eq!(vehicle_class(26).expect("ok"), 26);
        for bad in [0, 5, 10, 17, 20, 27, 255] {
            assert!(vehicle_class(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_fields_are_bounded() {
        assert_eq!(text("操作员", " teller ", 64).expect("ok"), "teller");
        assert!(text("操作员", "  ", 64).is_err());
        assert!(text("操作员", "a\nb", 64).is_err());
        let err = text("原因", &"很".repeat(201), 200).unwrap_err();
        assert_eq!(err.to_string(), "原因不正确：最多 200 个字符");
        assert!(txn_id("T-1", 128).is_ok());
        assert!(txn_id("T 1", 128).is_err());
        assert!(txn_id("", 128).is_err());
        assert!(txn_id(&"x".repeat(129), 128).is_err());
    }

    #[test]
    fn amounts_and_balances() {
        assert_eq!(recharge_amount(1).expect("ok"), 1);
        assert_eq!(
            recharge_amount(RECHARGE_FEN_MAX).expect("ok"),
            RECHARGE_FEN_MAX
        );
        assert!(matches!(
            recharge_amount(0),
            Err(HostError::AmountNotPositive { .. })
        ));
        assert!(matches!(
            recharge_amount(-100),
            Err(HostError::AmountNotPositive { .. })
        ));
        assert!(matches!(
            recharge_amount(RECHARGE_FEN_MAX + 1),
            Err(HostError::AmountTooLarge { .. })
        ));
        assert!(balance(0).is_ok());
        assert!(balance(BALANCE_FEN_MAX).is_ok());
        assert!(balance(-1).is_err());
        assert!(balance(BALANCE_FEN_MAX + 1).is_err());
    }
}
