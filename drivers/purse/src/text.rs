//! Display of the GBK text card files carry (plates, issuer provinces).
//!
//! Cards store plates and issuer names in GBK; the codec is [`cardd_crypto::gbk`], the one the
//! simulated card uses too. This module turns card fields into text for display: every GBK
//! character shows as itself, and only bytes that are not GBK at all show as `?`. The raw
//! bytes stay available wherever text is decoded.

use cardd_crypto::gbk;

/// The two-character province names issuers put in 0015 bytes 0..4 (the first two characters
/// of the longer names).
const PROVINCES: &[&str] = &[
    "北京", "天津", "河北", "山西", "内蒙", "辽宁", "吉林", "黑龙", "上海", "江苏", "浙江", "安徽",
    "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "广西", "海南", "重庆", "四川", "贵州",
    "云南", "西藏", "陕西", "甘肃", "青海", "宁夏", "新疆",
];

/// Decodes GBK plate bytes for display: every GBK character as itself, `?` for a control byte
/// or bytes that are not GBK. Decoding stops at the first `00`; `FF` padding and trailing
/// spaces are dropped.
pub fn plate_text(bytes: &[u8]) -> String {
    let bytes: Vec<u8> = bytes
        .iter()
        .take_while(|&&b| b != 0)
        .filter(|&&b| b != 0xFF)
        .copied()
        .collect();
    gbk::decode_lossy(&bytes)
        .chars()
        .map(|c| {
            if c == char::REPLACEMENT_CHARACTER || c.is_control() {
                '?'
            } else {
                c
            }
        })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// The province name for the 4 GBK bytes of an issuer identifier, when known.
pub fn province_name(bytes: &[u8; 4]) -> Option<&'static str> {
    let text = gbk::decode(bytes)?;
    PROVINCES.iter().find(|name| **name == text).copied()
}

/// ASCII text of a fixed-width field: stops at the first `00`, trims spaces and `FF`
/// padding, shows non-printable bytes as `?`.
pub fn ascii_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end]
        .iter()
        .filter(|&&b| b != 0xFF)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_decode_best_effort() {
        assert_eq!(
            plate_text(&hex::decode("C9C2414F4B31313200000000").unwrap()),
            "陕AOK112"
        );
        assert_eq!(
            plate_text(&hex::decode("BEA94131323334B5D8000000").unwrap()),
            "京A1234地"
        );
        assert_eq!(
            plate_text(&hex::decode("B8DB5A31323334B0C4").unwrap()),
            "港Z1234澳"
        );
        assert_eq!(plate_text(&hex::decode("C9C2FFFF41C9").unwrap()), "陕A?");
        assert_eq!(
            plate_text(&hex::decode("D4C1423132333435D1A7").unwrap()),
            "粤B12345学"
        );
        assert_eq!(plate_text(&[0xC9]), "?");
        assert_eq!(plate_text(&[0x01, 0x41]), "?A");
        assert_eq!(plate_text(&[0; 12]), "");
    }

    #[test]
    fn provinces_and_ascii() {
        assert_eq!(province_name(&[0xC9, 0xC2, 0xCE, 0xF7]), Some("陕西"));
        assert_eq!(province_name(&[0x45, 0x54, 0x43, 0x01]), None);
        assert_eq!(province_name(&[0xBA, 0xDA, 0xC1, 0xFA]), Some("黑龙"));
        assert_eq!(province_name(&[0xB5, 0xD8, 0xC7, 0xF2]), None); // 地球
        assert_eq!(ascii_text(b"110101199001011234\0\0"), "110101199001011234");
        assert_eq!(ascii_text(b"AB\x07 \xFF\xFF"), "AB?");
    }
}
