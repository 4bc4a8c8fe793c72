//! Issuer master keys, and how card keys are stored in a card's saved state.
//!
//! A simulated card holds its own diversified keys, exactly as a real card does after
//! personalisation; the masters only exist at issue time ([`IssuerMasters`], [`ObuMasters`]).
//! `cardd-crypto`'s `Key16` deliberately has no serde support (it is secret material), but a
//! simulated card must survive a JSON round trip, so the card keys are written as hex here. The
//! simulator's keys are test keys: that is acceptable for it and for nothing else.

use cardd_crypto::{Algorithm, Key16};
use serde::{Deserialize, Serialize};

/// The issuer's master keys for ETC user cards and city one-cards.
#[derive(Debug, Clone)]
pub struct IssuerMasters {
    /// The algorithm of the card keys (must agree with the card: ETC `0015` version `0x5x` is SM4).
    pub algorithm: Algorithm,
    /// Master load key (→ DLK).
    pub load: Key16,
    /// Master purchase key (→ DPK).
    pub purchase: Key16,
    /// Master TAC key (→ DTK).
    pub tac: Key16,
    /// Master application maintenance key (→ DAMK, for secure-messaging file updates).
    pub maintenance: Key16,
    /// ETC cards only: two-level diversification (issuer, then card). City cards always use one level.
    pub two_level: bool,
}

/// The issuer's master keys for OBU ESAMs (diversified once by the contract serial).
#[derive(Debug, Clone)]
pub struct ObuMasters {
    /// Must agree with the contract version (`0x5x` is SM4).
    pub algorithm: Algorithm,
    /// System maintenance master key (MF EF01 updates).
    pub system_maintenance: Key16,
    /// Application maintenance master key (DF01 EF01 updates).
    pub app_maintenance: Key16,
    /// Application encryption master key (encrypted reads of DF01 EF01).
    pub app_encryption: Key16,
}

/// A key set of an ETC or city card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardKeys {
    #[serde(with = "alg_serde")]
    pub algorithm: Algorithm,
    #[serde(with = "key_hex")]
    pub dlk: Key16,
    #[serde(with = "key_hex")]
    pub dpk: Key16,
    #[serde(with = "key_hex")]
    pub dtk: Key16,
    #[serde(with = "key_hex")]
    pub damk: Key16,
}

impl CardKeys {
    /// Diversifies a card's keys: `factor` → `Div(master, factor)`, or with `issuer4`
    /// `Div(Div(master, issuer4‖issuer4), factor)`.
    pub(crate) fn derive(
        masters: &IssuerMasters,
        issuer4: Option<&[u8; 4]>,
        factor: &[u8; 8],
    ) -> CardKeys {
        let alg = masters.algorithm;
        let div = |master: &Key16| match issuer4 {
            Some(issuer) => cardd_crypto::diversify_two_level(alg, master, issuer, factor),
            None => cardd_crypto::diversify(alg, master, factor),
        };
        CardKeys {
            algorithm: alg,
            dlk: div(&masters.load),
            dpk: div(&masters.purchase),
            dtk: div(&masters.tac),
            damk: div(&masters.maintenance),
        }
    }
}

/// The key set of an OBU ESAM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EsamKeys {
    #[serde(with = "alg_serde")]
    pub algorithm: Algorithm,
    #[serde(with = "key_hex")]
    pub system_maintenance: Key16,
    #[serde(with = "key_hex")]
    pub app_maintenance: Key16,
    #[serde(with = "key_hex")]
    pub app_encryption: Key16,
}

impl EsamKeys {
    /// Diversifies the ESAM keys once by the contract serial.
    pub(crate) fn derive(masters: &ObuMasters, contract_serial: &[u8; 8]) -> EsamKeys {
        let alg = masters.algorithm;
        EsamKeys {
            algorithm: alg,
            system_maintenance: cardd_crypto::diversify(
                alg,
                &masters.system_maintenance,
                contract_serial,
            ),
            app_maintenance: cardd_crypto::diversify(
                alg,
                &masters.app_maintenance,
                contract_serial,
            ),
            app_encryption: cardd_crypto::diversify(alg, &masters.app_encryption, contract_serial),
        }
    }
}

/// True for SM4.
pub(crate) fn is_sm4(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::Sm4)
}

/// The purse key index of `alg` (`01` 3DES, `41` SM4).
pub(crate) fn key_index(alg: Algorithm) -> u8 {
    if is_sm4(alg) {
        0x41
    } else {
        0x01
    }
}

/// The algorithm id in INITIALIZE responses (`00` 3DES, `04` SM4, our choice).
pub(crate) fn alg_id(alg: Algorithm) -> u8 {
    if is_sm4(alg) {
        0x04
    } else {
        0x00
    }
}

/// The algorithm a version byte selects (`0x5x` SM4, anything else 3DES).
pub(crate) fn algorithm_for_version(version: u8) -> Algorithm {
    if version >> 4 == 5 {
        Algorithm::Sm4
    } else {
        Algorithm::Tdes
    }
}

/// Lower-case name of an algorithm, for messages and JSON.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    if is_sm4(alg) {
        "sm4"
    } else {
        "tdes"
    }
}

/// A 16-byte key from 32 hex digits.
pub fn key_from_hex(text: &str) -> Option<Key16> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(Key16(out))
}

/// Serde for `Key16` as 32 upper-case hex digits.
pub(crate) mod key_hex {
    use cardd_crypto::Key16;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(key: &Key16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(key.expose()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Key16, D::Error> {
        let text = String::deserialize(d)?;
        super::key_from_hex(&text).ok_or_else(|| D::Error::custom("a key must be 32 hex digits"))
    }
}

/// Serde for `Algorithm` as `"tdes"` / `"sm4"` (kept here so the saved format does not depend
/// on another crate's derive).
pub(crate) mod alg_serde {
    use cardd_crypto::Algorithm;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(alg: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::alg_name(*alg))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        match String::deserialize(d)?.as_str() {
            "tdes" => Ok(Algorithm::Tdes),
            "sm4" => Ok(Algorithm::Sm4),
            other => Err(D::Error::custom(format!(
                "unknown algorithm {other:?}; expected \"tdes\" or \"sm4\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_selects_algorithm_and_key_index() {
        assert!(is_sm4(algorithm_for_version(0x50)));
        assert!(!is_sm4(algorithm_for_version(0x4F)));
        assert_eq!(key_index(Algorithm::Sm4), 0x41);
        assert_eq!(key_index(Algorithm::Tdes), 0x01);
        assert_eq!(alg_id(Algorithm::Sm4), 0x04);
        assert!(key_from_hex("00").is_none());
        assert!(key_from_hex("000102030405060708090A0B0C0D0E0F").is_some());
    }
}
