//! Key types: the algorithm selector, 16-byte card/master keys and session keys.
//!
//! They exist to keep key bytes out of logs and memory dumps: `Debug` never prints the
//! bytes, and the buffers are zeroized when dropped. Access to the raw bytes is explicit
//! (`expose`) so that every use of key material is easy to find in review.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroize;

use crate::error::CryptoError;

/// The block cipher family a card (or key) uses.
///
/// ETC and transit cards are either "3DES cards" (2-key triple DES card keys, single-DES
/// session keys) or "SM4 cards" (SM4 everywhere).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// 2-key triple DES (EDE, K1 = K3) for 16-byte keys; single DES for 8-byte session keys.
    Tdes,
    /// SM4 (GB/T 32907), 16-byte keys and blocks.
    Sm4,
}

impl Algorithm {
    /// Block size in bytes: 8 for DES/3DES, 16 for SM4.
    pub const fn block_size(self) -> usize {
        match self {
            Algorithm::Tdes => 8,
            Algorithm::Sm4 => 16,
        }
    }

    /// Lowercase name, identical to the serde representation.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Tdes => "tdes",
            Algorithm::Sm4 => "sm4",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = CryptoError;

    /// Accepts `tdes`, `3des` and `sm4`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("tdes") || t.eq_ignore_ascii_case("3des") {
            Ok(Algorithm::Tdes)
        } else if t.eq_ignore_ascii_case("sm4") {
            Ok(Algorithm::Sm4)
        } else {
            Err(CryptoError::UnknownAlgorithm { name: s.to_owned() })
        }
    }
}

/// A 16-byte key: a 2-key 3DES key (left half K1, right half K2) or an SM4 key.
///
/// `Debug` prints `Key16(..)`; the bytes are zeroized on drop. Equality is constant-time.
#[derive(Clone)]
pub struct Key16(pub [u8; 16]);

impl Key16 {
    /// Parses 32 hex digits (either case). Surrounding whitespace is ignored; nothing else
    /// is accepted. Errors never contain the key text.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let t = s.trim();
        let offset = s.chars().count() - s.trim_start().chars().count();
        if let Some(pos) = t.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(CryptoError::BadHex {
                position: offset + pos,
            });
        }
        if t.len() != 32 {
            return Err(CryptoError::BadLength {
                expected: "32 hex digits (16 bytes)",
                got: t.len(),
            });
        }
        let mut out = [0u8; 16];
        for (dst, pair) in out.iter_mut().zip(t.as_bytes().chunks_exact(2)) {
            *dst = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
        }
        Ok(Key16(out))
    }

    /// Builds a key from a byte slice that must be exactly 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| CryptoError::BadLength {
            expected: "16 bytes",
            got: bytes.len(),
        })?;
        Ok(Key16(arr))
    }

    /// The raw key bytes. Every call site is a place where key material leaves this type.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }

    /// Left half (K1 of a 2-key 3DES key).
    pub(crate) fn left(&self) -> &[u8; 8] {
        // A 16-byte array always has an 8-byte first chunk; the fallback is unreachable and
        // only exists so that no panic path is compiled in.
        self.0.first_chunk::<8>().unwrap_or(&[0u8; 8])
    }

    /// Right half (K2 of a 2-key 3DES key).
    pub(crate) fn right(&self) -> &[u8; 8] {
        self.0.last_chunk::<8>().unwrap_or(&[0u8; 8])
    }
}

/// Value of an ASCII hex digit already validated by the caller.
fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

impl fmt::Debug for Key16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key16(..)")
    }
}

impl PartialEq for Key16 {
    fn eq(&self, other: &Self) -> bool {
        crate::ct::mac_eq(&self.0, &other.0)
    }
}

impl Eq for Key16 {}

impl FromStr for Key16 {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key16::from_hex(s)
    }
}

impl Drop for Key16 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A transaction (process) key derived for one purse operation, or the TAC key.
///
/// 3DES cards use 8-byte single-DES session keys; SM4 cards use 16-byte SM4 keys.
/// `Debug` is redacted and the bytes are zeroized on drop.
#[derive(Clone)]
pub enum SessionKey {
    /// Single-DES key (3DES cards).
    Des([u8; 8]),
    /// SM4 key (SM4 cards).
    Sm4([u8; 16]),
}

impl SessionKey {
    /// The algorithm family this key belongs to.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SessionKey::Des(_) => Algorithm::Tdes,
            SessionKey::Sm4(_) => Algorithm::Sm4,
        }
    }

    /// The raw key bytes (8 for DES, 16 for SM4).
    pub fn expose(&self) -> &[u8] {
        match self {
            SessionKey::Des(k) => k,
            SessionKey::Sm4(k) => k,
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionKey::Des(_) => f.write_str("SessionKey::Des(..)"),
            SessionKey::Sm4(_) => f.write_str("SessionKey::Sm4(..)"),
        }
    }
}

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm() == other.algorithm() && crate::ct::mac_eq(self.expose(), other.expose())
    }
}

impl Eq for SessionKey {}

impl Drop for SessionKey {
    fn drop(&mut self) {
        match self {
            SessionKey::Des(k) => k.zeroize(),
            SessionKey::Sm4(k) => k.zeroize(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = Key16([0xAB; 16]);
        assert_eq!(format!("{k:?}"), "Key16(..)");
        let s = SessionKey::Des([0xCD; 8]);
        assert!(!format!("{s:?}").contains("CD") && !format!("{s:?}").contains("205"));
        let s = SessionKey::Sm4([0xCD; 16]);
        assert_eq!(format!("{s:?}"), "SessionKey::Sm4(..)");
    }

    #[test]
    fn from_hex_accepts_and_rejects() {
        let k = Key16::from_hex(" 00112233445566778899aabbccddeeFF\n").unwrap();
        assert_eq!(k.expose()[15], 0xFF);
        assert_eq!(
            Key16::from_hex("0011"),
            Err(CryptoError::BadLength {
                expected: "32 hex digits (16 bytes)",
                got: 4
            })
        );
        assert_eq!(
            Key16::from_hex("00112233445566778899AABBCCDDEEFG"),
            Err(CryptoError::BadHex { position: 31 })
        );
        // Non-ASCII must not cause a byte/char boundary panic.
        assert!(Key16::from_hex("é0112233445566778899AABBCCDDEEF").is_err());
        assert!(Key16::from_hex("").is_err());
    }

    #[test]
    fn error_does_not_echo_key() {
        let e = Key16::from_hex("1122334455667788990011223344556Z").unwrap_err();
        assert!(!e.to_string().contains("11223344"));
    }

    #[test]
    fn algorithm_serde_and_parse() {
        assert_eq!(serde_json::to_string(&Algorithm::Tdes).unwrap(), "\"tdes\"");
        assert_eq!(serde_json::to_string(&Algorithm::Sm4).unwrap(), "\"sm4\"");
        let a: Algorithm = serde_json::from_str("\"sm4\"").unwrap();
        assert_eq!(a, Algorithm::Sm4);
        assert_eq!("3DES".parse::<Algorithm>(), Ok(Algorithm::Tdes));
        assert!("aes".parse::<Algorithm>().is_err());
    }
}
