//! Money on the wire: decimal yuan strings outside, integer fen inside.
//!
//! **Architecture invariant:** amounts cross the API only as decimal strings (`"12.30"`) and are
//! turned into integer fen here, once; a JSON number, a negative amount, more than two decimal
//! places, an exponent or anything that overflows is refused with a message saying so.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Largest amount cardd accepts anywhere: 10 million yuan, far above any card or quota, far
/// below `i64` overflow.
pub const AMOUNT_FEN_MAX: i64 = 1_000_000_000;

/// An amount of money in fen (0.01 yuan).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(pub i64);

/// Why a string is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("金额格式不正确：{0:?} 不是金额（请输入如 100 或 100.50 的数字）")]
    NotANumber(String),
    #[error("金额不能为负数")]
    Negative,
    #[error("金额不能为零")]
    Zero,
    #[error("金额最多保留两位小数（分）")]
    TooPrecise,
    /// Above [`AMOUNT_FEN_MAX`] (the message names the maximum).
    #[error("金额过大：单笔金额不能超过 10000000.00 元")]
    TooLarge,
}

impl Fen {
    /// Parses a decimal yuan string: digits, an optional point and at most two decimals.
    /// Zero is allowed here; use [`Fen::parse_positive_yuan`] where zero is meaningless.
    pub fn parse_yuan(text: &str) -> Result<Fen, MoneyError> {
        let t = text.trim();
        let well_formed = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
            && t.chars().filter(|c| *c == '.').count() <= 1
            && !t.ends_with('.')
            && !t.starts_with('.')
            && !t.starts_with('+');
        if !well_formed {
            return Err(MoneyError::NotANumber(text.to_owned()));
        }
        let value = Decimal::from_str(t).map_err(|_| MoneyError::NotANumber(text.to_owned()))?;
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative);
        }
        if value.normalize().scale() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        let fen = (value * Decimal::ONE_HUNDRED).trunc();
        let fen: i64 = fen.try_into().map_err(|_| MoneyError::TooLarge)?;
        if fen > AMOUNT_FEN_MAX {
            return Err(MoneyError::TooLarge);
        }
        Ok(Fen(fen.abs()))
    }

    /// Parses a yuan string that must be greater than zero.
    pub fn parse_positive_yuan(text: &str) -> Result<Fen, MoneyError> {
        match Fen::parse_yuan(text)? {
            Fen(0) => Err(MoneyError::Zero),
            fen => Ok(fen),
        }
    }

    /// The amount as a yuan string with two decimals (`"12.30"`).
    pub fn to_yuan_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }

    /// The amount as short yuan text for sentences: `"10"` for whole yuan, `"12.30"` otherwise.
    pub fn to_yuan_short(self) -> String {
        if self.0 % 100 == 0 {
            (self.0 / 100).to_string()
        } else {
            self.to_yuan_string()
        }
    }
}

impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yuan_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_names_the_maximum() {
        let max = Fen(AMOUNT_FEN_MAX).to_yuan_string();
        assert!(MoneyError::TooLarge.to_string().contains(&max), "{max}");
        assert_eq!(
            Fen::parse_yuan("10000000.01"),
            Err(MoneyError::TooLarge),
            "one fen above the maximum"
        );
    }

    #[test]
    fn accepts_plain_decimals() {
        assert_eq!(Fen::parse_yuan("100"), Ok(Fen(10_000)));
        assert_eq!(Fen::parse_yuan("100.5"), Ok(Fen(10_050)));
        assert_eq!(Fen::parse_yuan("0.01"), Ok(Fen(1)));
        assert_eq!(Fen::parse_yuan("0"), Ok(Fen(0)));
        assert_eq!(Fen::parse_yuan("-0"), Ok(Fen(0)));
        assert_eq!(Fen::parse_yuan("1.10"), Ok(Fen(110)));
        assert_eq!(Fen(110).to_yuan_string(), "1.10");
        assert_eq!(Fen(-5).to_yuan_string(), "-0.05");
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "", "abc", "1e3", "NaN", "1.", ".5", "+1", "1,000", "１０", "0x10", "1.2.3", "--1",
        ] {
            assert!(
                matches!(Fen::parse_yuan(bad), Err(MoneyError::NotANumber(_))),
                "{bad}"
            );
        }
        assert_eq!(Fen::parse_yuan("-10"), Err(MoneyError::Negative));
        assert_eq!(Fen::parse_yuan("10.001"), Err(MoneyError::TooPrecise));
        assert_eq!(Fen::parse_yuan("10000000.01"), Err(MoneyError::TooLarge));
        assert_eq!(
            Fen::parse_yuan("99999999999999999999999999"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Fen::parse_positive_yuan("0.00"), Err(MoneyError::Zero));
    }
}
