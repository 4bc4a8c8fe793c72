//! The one GBK codec of the workspace, for the Chinese text card files carry.
//!
//! Card files store plates, issuer province names, holder names and vehicle descriptions in
//! GBK, in fixed-width `00`-padded fields. The host (reading and writing card files) and the
//! simulated card (building its files) must encode them identically, and a plate character
//! must never be lost because a hand-written table missed it, so both sides use this module,
//! which is a thin layer over `encoding_rs` (the WHATWG GBK encoder and decoder).
//!
//! * [`encode`] / [`encode_padded`]: text to GBK; a character outside GBK is an error, never
//!   a guess or a substitute.
//! * [`decode`]: strict, `None` for bytes that are not GBK.
//! * [`decode_lossy`]: for display, malformed bytes become U+FFFD.
//!
//! Decoding stops at the first `00` byte: fields are `00`-padded and text never contains NUL.

use encoding_rs::GBK;

/// Why text cannot be stored in a GBK field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GbkError {
    /// The text has a character GBK cannot represent.
    #[error("character {0:?} has no GBK code")]
    Unmappable(char),
    /// The text is longer than the field once encoded.
    #[error("{bytes} GBK bytes do not fit a field of {max} bytes")]
    TooLong {
        /// Encoded length.
        bytes: usize,
        /// Field width.
        max: usize,
    },
}

/// Encodes `text` as GBK (ASCII as is, two bytes a Chinese character).
pub fn encode(text: &str) -> Result<Vec<u8>, GbkError> {
    let (bytes, _, unmappable) = GBK.encode(text);
    if unmappable {
        // encoding_rs writes a numeric character reference for what it cannot map; find the
        // character itself for the error.
        let c = text
            .chars()
            .find(|c| {
                let mut buf = [0u8; 4];
                GBK.encode(c.encode_utf8(&mut buf)).2
            })
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        return Err(GbkError::Unmappable(c));
    }
    Ok(bytes.into_owned())
}

/// Encodes `text` as GBK into a field of `N` bytes, `00`-padded.
pub fn encode_padded<const N: usize>(text: &str) -> Result<[u8; N], GbkError> {
    let bytes = encode(text)?;
    let mut out = [0u8; N];
    out.get_mut(..bytes.len())
        .ok_or(GbkError::TooLong {
            bytes: bytes.len(),
            max: N,
        })?
        .copy_from_slice(&bytes);
    Ok(out)
}

/// The bytes of a `00`-padded field up to its first `00`.
fn unpadded(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Decodes GBK bytes up to the first `00`; `None` if they are not well-formed GBK.
pub fn decode(bytes: &[u8]) -> Option<String> {
    GBK.decode_without_bom_handling_and_without_replacement(unpadded(bytes))
        .map(|text| text.into_owned())
}

/// Decodes GBK bytes up to the first `00`, malformed sequences as U+FFFD, trailing spaces
/// trimmed: for showing a field whatever the card holds.
pub fn decode_lossy(bytes: &[u8]) -> String {
    let (text, _) = GBK.decode_without_bom_handling(unpadded(bytes));
    text.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes() {
        // Codes as every GBK table has them (checked against Python's `gbk` codec).
        assert_eq!(encode("陕西").unwrap(), [0xC9, 0xC2, 0xCE, 0xF7]);
        assert_eq!(encode("北京").unwrap(), [0xB1, 0xB1, 0xBE, 0xA9]);
        assert_eq!(encode("张三").unwrap(), [0xD5, 0xC5, 0xC8, 0xFD]);
        assert_eq!(encode("粤B12345学").unwrap(), b"\xD4\xC1B12345\xD1\xA7");
        assert_eq!(
            encode_padded::<12>("陕A12345").unwrap(),
            *b"\xC9\xC2A12345\0\0\0\0"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(encode("京A😀"), Err(GbkError::Unmappable('😀')));
        assert_eq!(
            encode_padded::<12>("陕A1234567890"),
            Err(GbkError::TooLong { bytes: 13, max: 12 })
        );
        assert_eq!(
            encode_padded::<4>("陕西").unwrap(),
            [0xC9, 0xC2, 0xCE, 0xF7]
        );
    }

    #[test]
    fn decoding_stops_at_padding_and_reports_malformed_bytes() {
        assert_eq!(
            decode(b"\xC9\xC2A12345\0\0\xFF\xFF").as_deref(),
            Some("陕A12345")
        );
        assert_eq!(decode(&[0xC9]), None);
        assert_eq!(decode(&[0xFF, 0xFF]), None);
        assert_eq!(decode(&[0; 12]).as_deref(), Some(""));
        assert_eq!(decode_lossy(&[0xC9, 0xC2, 0xC9]), "陕\u{FFFD}");
        assert_eq!(decode_lossy(b"AB  \0C"), "AB");
    }
}
