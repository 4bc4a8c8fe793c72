//! Serde helpers writing byte strings as hex in a card's saved JSON.
//!
//! A saved card is read by people debugging a money flow; `"0015": "C9C2CEF7…"` can be compared
//! with an APDU trace at a glance, a JSON array of 43 numbers cannot.

/// `Vec<u8>` as upper-case hex.
pub(crate) mod vec {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// `[u8; N]` as upper-case hex.
pub(crate) mod arr {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let mut out = [0u8; N];
        hex::decode_to_slice(String::deserialize(d)?, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}
