//! The single error type of this crate.
//!
//! It exists so that callers (configuration loading, the security module, the simulator) can
//! report a precise, actionable message. Messages never contain key material: a malformed
//! key is described by position and length only, never echoed back.

/// Everything that can go wrong in this crate.
///
/// Only parsing and ECB on misaligned data are fallible; MAC and key-derivation functions
/// take fixed-size inputs and cannot fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A hex string contains a character that is not a hex digit.
    #[error(
        "invalid hex: character at position {position} is not a hex digit; \
         write keys as plain hex digits 0-9/A-F with no spaces, separators or 0x prefix"
    )]
    BadHex {
        /// 0-based character index of the first offending character.
        position: usize,
    },
    /// An input has the wrong length.
    #[error(
        "wrong length: expected {expected}, got {got}; \
         check that the value was copied completely and for the right algorithm"
    )]
    BadLength {
        /// What was expected, with its unit (e.g. "32 hex digits", "a multiple of 8 bytes").
        expected: &'static str,
        /// The length actually received, in the unit named by `expected`.
        got: usize,
    },
    /// An algorithm name that is neither 3DES nor SM4.
    #[error("unknown algorithm {name:?}; use \"tdes\" (2-key 3DES) or \"sm4\"")]
    UnknownAlgorithm {
        /// The name that was given.
        name: String,
    },
}
