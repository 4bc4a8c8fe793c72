//! Best-effort display of the GBK text card files carry (plates, issuer provinces).
//!
//! Cards store plates and issuer names in GBK. A full GBK decoder is a large table for a
//! few characters that matter here, so this module knows only the province abbreviations and
//! the usual plate suffix characters (plus ASCII) and shows anything else as `?`. It is for
//! display; the raw bytes stay available wherever text is decoded.

/// GBK codes of the characters that appear on Chinese plates besides ASCII letters and digits.
const PLATE_CHARS: &[([u8; 2], char)] = &[
    ([0xBE, 0xA9], '京'),
    ([0xBD, 0xF2], '津'),
    ([0xBC, 0xBD], '冀'),
    ([0xBD, 0xFA], '晋'),
    ([0xC3, 0xC9], '蒙'),
    ([0xC1, 0xC9], '辽'),
    ([0xBC, 0xAA], '吉'),
    ([0xBA, 0xDA], '黑'),
    ([0xBB, 0xA6], '沪'),
    ([0xCB, 0xD5], '苏'),
    ([0xD5, 0xE3], '浙'),
    ([0xCD, 0xEE], '皖'),
    ([0xC3, 0xF6], '闽'),
    ([0xB8, 0xD3], '赣'),
    ([0xC2, 0xB3], '鲁'),
    ([0xD4, 0xA5], '豫'),
    ([0xB6, 0xF5], '鄂'),
    ([0xCF, 0xE6], '湘'),
    ([0xD4, 0xC1], '粤'),
    ([0xB9, 0xF0], '桂'),
    ([0xC7, 0xED], '琼'),
    ([0xD3, 0xE5], '渝'),
    ([0xB4, 0xA8], '川'),
    ([0xB9, 0xF3], '贵'),
    ([0xD4, 0xC6], '云'),
    ([0xB2, 0xD8], '藏'),
    ([0xC9, 0xC2], '陕'),
    ([0xB8, 0xCA], '甘'),
    ([0xC7, 0xE0], '青'),
    ([0xC4, 0xFE], '宁'),
    ([0xD0, 0xC2], '新'),
    ([0xB8, 0xDB], '港'),
    ([0xB0, 0xC4], '澳'),
    ([0xCC, 0xA8], '台'),
    ([0xCA, 0xB9], '使'),
    ([0xC1, 0xEC], '领'),
    ([0xBE, 0xAF], '警'),
    ([0xD1, 0xA7], '学'),
    ([0xB9, 0xD2], '挂'),
    ([0xCA, 0xD4], '试'),
    ([0xB3, 0xAC], '超'),
    ([0xC1, 0xD9], '临'),
    ([0xD3, 0xA6], '应'),
    ([0xBC, 0xB1], '急'),
    ([0xC3, 0xF1], '民'),
    ([0xBA, 0xBD], '航'),
];

/// GBK codes of the two-character province names issuers put in 0015 bytes 0..4.
const PROVINCES: &[([u8; 4], &str)] = &[
    ([0xB1, 0xB1, 0xBE, 0xA9], "北京"),
    ([0xCC, 0xEC, 0xBD, 0xF2], "天津"),
    ([0xBA, 0xD3, 0xB1, 0xB1], "河北"),
    ([0xC9, 0xBD, 0xCE, 0xF7], "山西"),
    ([0xC4, 0xDA, 0xC3, 0xC9], "内蒙"),
    ([0xC1, 0xC9, 0xC4, 0xFE], "辽宁"),
    ([0xBC, 0xAA, 0xC1, 0xD6], "吉林"),
    ([0xBA, 0xDA, 0xC1, 0xFA], "黑龙"),
    ([0xC9, 0xCF, 0xBA, 0xA3], "上海"),
    ([0xBD, 0xAD, 0xCB, 0xD5], "江苏"),
    ([0xD5, 0xE3, 0xBD, 0xAD], "浙江"),
    ([0xB0, 0xB2, 0xBB, 0xD5], "安徽"),
    ([0xB8, 0xA3, 0xBD, 0xA8], "福建"),
    ([0xBD, 0xAD, 0xCE, 0xF7], "江西"),
    ([0xC9, 0xBD, 0xB6, 0xAB], "山东"),
    ([0xBA, 0xD3, 0xC4, 0xCF], "河南"),
    ([0xBA, 0xFE, 0xB1, 0xB1], "湖北"),
    ([0xBA, 0xFE, 0xC4, 0xCF], "湖南"),
    ([0xB9, 0xE3, 0xB6, 0xAB], "广东"),
    ([0xB9, 0xE3, 0xCE, 0xF7], "广西"),
    ([0xBA, 0xA3, 0xC4, 0xCF], "海南"),
    ([0xD6, 0xD8, 0xC7, 0xEC], "重庆"),
    ([0xCB, 0xC4, 0xB4, 0xA8], "四川"),
    ([0xB9, 0xF3, 0xD6, 0xDD], "贵州"),
    ([0xD4, 0xC6, 0xC4, 0xCF], "云南"),
    ([0xCE, 0xF7, 0xB2, 0xD8], "西藏"),
    ([0xC9, 0xC2, 0xCE, 0xF7], "陕西"),
    ([0xB8, 0xCA, 0xCB, 0xE0], "甘肃"),
    ([0xC7, 0xE0, 0xBA, 0xA3], "青海"),
    ([0xC4, 0xFE, 0xCF, 0xC4], "宁夏"),
    ([0xD0, 0xC2, 0xBD, 0xAE], "新疆"),
];

/// Decodes GBK plate bytes for display: ASCII as is, known plate characters, `?` for any
/// other character. Trailing `00` (and `FF`, space) padding is dropped; decoding stops at the
/// first `00`.
pub fn plate_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut text = String::new();
    let mut rest = &bytes[..end];
    while let Some((&first, tail)) = rest.split_first() {
        if first < 0x80 {
            text.push(if first.is_ascii_graphic() || first == b' ' {
                char::from(first)
            } else {
                '?'
            });
            rest = tail;
        } else if first == 0xFF {
            rest = tail;
        } else {
            match tail.split_first() {
                Some((&second, after)) => {
                    let c = PLATE_CHARS
                        .iter()
                        .find(|(code, _)| *code == [first, second])
                        .map_or('?', |(_, c)| *c);
                    text.push(c);
                    rest = after;
                }
                None => {
                    text.push('?');
                    rest = tail;
                }
            }
        }
    }
    text.trim_end().to_owned()
}

/// The province name for the 4 GBK bytes of an issuer identifier, when known.
pub fn province_name(bytes: &[u8; 4]) -> Option<&'static str> {
    PROVINCES
        .iter()
        .find(|(code, _)| code == bytes)
        .map(|(_, name)| *name)
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
            "京A1234?"
        );
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
        assert_eq!(ascii_text(b"110101199001011234\0\0"), "110101199001011234");
        assert_eq!(ascii_text(b"AB\x07 \xFF\xFF"), "AB?");
    }
}
