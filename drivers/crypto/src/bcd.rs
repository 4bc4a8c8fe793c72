//! Packed BCD helpers for dates, times and digit strings.
//!
//! This module exists because card files and MAC inputs carry dates (`YYYYMMDD`, 4 bytes),
//! times (`hhmmss`, 3 bytes) and numbers (card numbers, terminal ids) as packed BCD, and
//! both the host and the simulated card must encode them identically.

/// Packs a value 0..=99 into one BCD byte (higher values are taken modulo 100).
fn byte(v: u8) -> u8 {
    let v = v % 100;
    ((v / 10) << 4) | (v % 10)
}

/// Unpacks one BCD byte, or `None` if a nibble is not a decimal digit.
fn unbyte(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    if hi > 9 || lo > 9 {
        None
    } else {
        Some(hi * 10 + lo)
    }
}

/// Encodes a date as BCD `YYYYMMDD`. Fields are not validated; each is taken modulo its
/// digit capacity (year modulo 10000, month and day modulo 100). Use [`decode_date`] to
/// validate.
pub fn date(year: u16, month: u8, day: u8) -> [u8; 4] {
    let y = year % 10000;
    // y / 100 and y % 100 are both < 100, so the casts are lossless.
    [
        byte((y / 100) as u8),
        byte((y % 100) as u8),
        byte(month),
        byte(day),
    ]
}

/// Encodes a time as BCD `hhmmss`. Fields are not validated (each modulo 100); use
/// [`decode_time`] to validate.
pub fn time(hour: u8, minute: u8, second: u8) -> [u8; 3] {
    [byte(hour), byte(minute), byte(second)]
}

/// Decodes a BCD `YYYYMMDD` date. Returns `None` on a non-decimal nibble, a month outside
/// 1..=12 or a day that does not exist in that month (leap years per the Gregorian rule).
pub fn decode_date(d: &[u8; 4]) -> Option<(u16, u8, u8)> {
    let year = u16::from(unbyte(d[0])?) * 100 + u16::from(unbyte(d[1])?);
    let month = unbyte(d[2])?;
    let day = unbyte(d[3])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((year, month, day))
}

/// Decodes a BCD `hhmmss` time. Returns `None` on a non-decimal nibble or an hour > 23,
/// minute > 59 or second > 59.
pub fn decode_time(t: &[u8; 3]) -> Option<(u8, u8, u8)> {
    let (h, m, s) = (unbyte(t[0])?, unbyte(t[1])?, unbyte(t[2])?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    Some((h, m, s))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Packs an even-length string of decimal digits into BCD (`"2024"` → `[0x20, 0x24]`).
/// Returns `None` for an odd length or any non-digit character. The empty string gives an
/// empty vector.
pub fn encode_digits(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.chunks_exact(2)
            .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0'))
            .collect(),
    )
}

/// Unpacks BCD bytes into a digit string (`[0x20, 0x24]` → `"2024"`), or `None` if any
/// nibble is not a decimal digit.
pub fn decode_digits(b: &[u8]) -> Option<String> {
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        let v = unbyte(x)?;
        s.push(char::from(b'0' + v / 10));
        s.push(char::from(b'0' + v % 10));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(date(2024, 1, 2), [0x20, 0x24, 0x01, 0x02]);
        assert_eq!(time(3, 4, 5), [0x03, 0x04, 0x05]);
        assert_eq!(time(23, 59, 59), [0x23, 0x59, 0x59]);
        assert_eq!(decode_date(&[0x20, 0x24, 0x01, 0x02]), Some((2024, 1, 2)));
        assert_eq!(decode_date(&[0x20, 0x24, 0x02, 0x29]), Some((2024, 2, 29)));
        assert_eq!(decode_date(&[0x20, 0x23, 0x02, 0x29]), None);
        assert_eq!(decode_date(&[0x19, 0x00, 0x02, 0x29]), None);
        assert_eq!(decode_date(&[0x20, 0x00, 0x02, 0x29]), Some((2000, 2, 29)));
        assert_eq!(decode_date(&[0x20, 0x24, 0x13, 0x01]), None);
        assert_eq!(decode_date(&[0x20, 0x24, 0x00, 0x01]), None);
        assert_eq!(decode_date(&[0x20, 0x24, 0x04, 0x31]), None);
        assert_eq!(decode_date(&[0x20, 0x24, 0x01, 0x00]), None);
        assert_eq!(decode_date(&[0x20, 0x2A, 0x01, 0x01]), None);
        assert_eq!(decode_time(&[0x23, 0x59, 0x59]), Some((23, 59, 59)));
        assert_eq!(decode_time(&[0x24, 0x00, 0x00]), None);
        assert_eq!(decode_time(&[0x0A, 0x00, 0x00]), None);
    }

    #[test]
    fn digits() {
        assert_eq!(
            encode_digits("1234567890"),
            Some(vec![0x12, 0x34, 0x56, 0x78, 0x90])
        );
        assert_eq!(encode_digits(""), Some(vec![]));
        assert_eq!(encode_digits("123"), None);
        assert_eq!(encode_digits("12a4"), None);
        assert_eq!(encode_digits("１２"), None);
        assert_eq!(decode_digits(&[0x12, 0x34]), Some("1234".to_owned()));
        assert_eq!(decode_digits(&[0x1F]), None);
    }
}
