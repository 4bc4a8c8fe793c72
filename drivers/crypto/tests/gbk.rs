//! Every hanzi of GB 2312 and every character of a plate's province or use prefix round-trips
//! through the GBK codec: plates and names on cards are written and read without loss.

use cardd_crypto::gbk;

/// GB 2312 rows 16–55 hold the 3,755 level-1 hanzi (row 55 ends at cell 89, `D7F9`), rows
/// 56–87 the 3,008 level-2 hanzi. Row `r`, cell `c` is GBK `A0+r`, `A0+c`.
fn gb2312_hanzi() -> impl Iterator<Item = [u8; 2]> {
    (16u8..=87).flat_map(|row| {
        let cells = if row == 55 { 89 } else { 94 };
        (1u8..=cells).map(move |cell| [0xA0 + row, 0xA0 + cell])
    })
}

#[test]
fn every_gb2312_hanzi_round_trips() {
    let mut level1 = 0;
    let mut total = 0;
    for code in gb2312_hanzi() {
        let text = gbk::decode(&code).unwrap_or_else(|| panic!("{code:02X?} does not decode"));
        let mut chars = text.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            panic!("{code:02X?} decodes to {text:?}, not one character");
        };
        assert!(
            ('\u{4E00}'..='\u{9FFF}').contains(&c),
            "{code:02X?} decodes to {c:?}, not a CJK ideograph"
        );
        assert_eq!(gbk::encode(&text).unwrap(), code, "{c} does not round-trip");
        if code <= [0xD7, 0xF9] {
            level1 += 1;
        }
        total += 1;
    }
    assert_eq!(level1, 3755);
    assert_eq!(total, 3755 + 3008);
}

#[test]
fn plate_prefixes_round_trip() {
    let prefixes = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领警学港澳";
    for c in prefixes.chars() {
        let plate = format!("{c}A12345");
        let field: [u8; 12] = gbk::encode_padded(&plate).unwrap();
        assert_eq!(field[2..8], *b"A12345", "{c} is not two bytes");
        assert_eq!(gbk::decode(&field).as_deref(), Some(plate.as_str()));
        assert_eq!(gbk::decode_lossy(&field), plate);
    }
    // Suffixes of special plates too.
    for plate in [
        "粤Z1234港",
        "粤Z1234澳",
        "京A1234警",
        "陕A1234学",
        "甘A1234挂",
        "使123456",
    ] {
        let field: [u8; 12] = gbk::encode_padded(plate).unwrap();
        assert_eq!(gbk::decode(&field).as_deref(), Some(plate));
    }
}
