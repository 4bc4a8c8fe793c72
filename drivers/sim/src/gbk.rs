//! Just enough GBK for plates, province names and holder names on simulated cards.
//!
//! Card files store Chinese text in GBK. The simulator only needs the handful of characters
//! that appear on demo and test cards (the 31 province abbreviations of plates, a few province
//! names for issuer ids, plate suffixes, demo holder names, vehicle descriptions), so a lookup
//! table is enough and the workspace carries no encoding crate. ASCII passes through unchanged.
//! Characters outside the table make [`encode`] return `None` rather than guess.

/// (character, GBK bytes), generated with Python's `gbk` codec.
#[rustfmt::skip]
const TABLE: &[(char, [u8; 2])] = &[
    ('京', [0xBE, 0xA9]), ('津', [0xBD, 0xF2]), ('沪', [0xBB, 0xA6]), ('渝', [0xD3, 0xE5]),
    ('冀', [0xBC, 0xBD]), ('豫', [0xD4, 0xA5]), ('云', [0xD4, 0xC6]), ('辽', [0xC1, 0xC9]),
    ('黑', [0xBA, 0xDA]), ('湘', [0xCF, 0xE6]), ('皖', [0xCD, 0xEE]), ('鲁', [0xC2, 0xB3]),
    ('新', [0xD0, 0xC2]), ('苏', [0xCB, 0xD5]), ('浙', [0xD5, 0xE3]), ('赣', [0xB8, 0xD3]),
    ('鄂', [0xB6, 0xF5]), ('桂', [0xB9, 0xF0]), ('甘', [0xB8, 0xCA]), ('晋', [0xBD, 0xFA]),
    ('蒙', [0xC3, 0xC9]), ('陕', [0xC9, 0xC2]), ('吉', [0xBC, 0xAA]), ('闽', [0xC3, 0xF6]),
    ('贵', [0xB9, 0xF3]), ('粤', [0xD4, 0xC1]), ('青', [0xC7, 0xE0]), ('藏', [0xB2, 0xD8]),
    ('川', [0xB4, 0xA8]), ('宁', [0xC4, 0xFE]), ('琼', [0xC7, 0xED]), ('西', [0xCE, 0xF7]),
    ('肃', [0xCB, 0xE0]), ('夏', [0xCF, 0xC4]), ('北', [0xB1, 0xB1]), ('河', [0xBA, 0xD3]),
    ('南', [0xC4, 0xCF]), ('张', [0xD5, 0xC5]), ('三', [0xC8, 0xFD]), ('李', [0xC0, 0xEE]),
    ('四', [0xCB, 0xC4]), ('小', [0xD0, 0xA1]), ('型', [0xD0, 0xCD]), ('轿', [0xBD, 0xCE]),
    ('车', [0xB3, 0xB5]), ('客', [0xBF, 0xCD]), ('货', [0xBB, 0xF5]), ('学', [0xD1, 0xA7]),
    ('警', [0xBE, 0xAF]), ('挂', [0xB9, 0xD2]), ('使', [0xCA, 0xB9]), ('领', [0xC1, 0xEC]),
];

/// Encodes `text` as GBK; `None` if a character is outside the table.
pub fn encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            let (_, bytes) = TABLE.iter().find(|(t, _)| *t == c)?;
            out.extend_from_slice(bytes);
        }
    }
    Some(out)
}

/// Decodes GBK bytes, stopping at the first `00` (card fields are `00`-padded); `None` if a
/// character is outside the table.
pub fn decode(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let mut rest = bytes.get(..end)?;
    let mut out = String::new();
    while let Some((&first, tail)) = rest.split_first() {
        if first.is_ascii() {
            out.push(char::from(first));
            rest = tail;
            continue;
        }
        let (&second, tail) = tail.split_first()?;
        let (c, _) = TABLE.iter().find(|(_, b)| *b == [first, second])?;
        out.push(*c);
        rest = tail;
    }
    Some(out)
}

/// A plate such as `陕A12345` as GBK, `00`-padded to the 12 bytes card files use; `None` when
/// a character is unknown or the plate is longer than 12 bytes.
pub fn plate(text: &str) -> Option<[u8; 12]> {
    padded(text)
}

/// `text` as GBK, `00`-padded to `N` bytes; `None` when unknown or too long.
pub fn padded<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = encode(text)?;
    let mut out = [0u8; N];
    out.get_mut(..bytes.len())?.copy_from_slice(&bytes);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_and_province_names_round_trip() {
        assert_eq!(hex::encode_upper(encode("陕西").unwrap()), "C9C2CEF7");
        assert_eq!(
            hex::encode_upper(encode("宁夏宁夏").unwrap()),
            "C4FECFC4C4FECFC4"
        );
        let p = plate("陕A12345").unwrap();
        assert_eq!(hex::encode_upper(p), "C9C241313233343500000000");
        assert_eq!(decode(&p).as_deref(), Some("陕A12345"));
        for abbr in ["京", "甘", "宁", "豫", "粤", "琼"] {
            assert_eq!(decode(&encode(abbr).unwrap()).as_deref(), Some(abbr));
        }
        assert_eq!(encode("龘"), None);
        assert_eq!(plate("陕A1234567890"), None);
        assert_eq!(decode(&[0xC9]), None);
        assert_eq!(decode(&[0xFF, 0xFF]), None);
    }
}
