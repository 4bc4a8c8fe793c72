//! `reader.*`: raw access to one reader (administrators only).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `reader.transmit`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransmitParams {
    pub reader_id: String,
    /// The command APDU in hex, e.g. `805C000204`.
    pub apdu: String,
}

/// What `reader.transmit` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransmitResult {
    /// Response data in hex (without the status word).
    pub data: String,
    /// Status word, 4 hex digits.
    pub sw: String,
    /// What the status word means.
    pub sw_meaning: String,
}

crate::method!(
    /// Send one raw APDU (administrators only; audited).
    Transmit, "reader.transmit", TransmitParams => TransmitResult
);
