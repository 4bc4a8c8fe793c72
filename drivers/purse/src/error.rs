//! Errors of the card-application layer, each saying what happened and what to do next.
//!
//! Three layers can fail: the bytes a card returned do not have the layout
//! `docs/card-protocol.md` gives ([`ParseError`]), a command cannot be built from the caller's
//! arguments ([`CommandError`]), and a purse operation as a whole fails ([`PurseError`]),
//! which also carries reader failures, refusals by the card (with advice per status word) and
//! security-module failures. A card response never causes a panic: it becomes one of these.

use cardd_reader::{ReaderError, StatusWord};

use crate::codes::KeyScheme;

/// The bytes of a card file or response do not have the documented layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Too few or too many bytes.
    #[error("{what} must be {expected} bytes but the card returned {actual}; the card may be of another kind or its file differs from the documented layout")]
    Length {
        /// The file or response being parsed.
        what: &'static str,
        /// The accepted length(s), e.g. `"43 or 50"`.
        expected: &'static str,
        /// The number of bytes received.
        actual: usize,
    },
    /// A fixed part of the layout (a header or tag) has an unexpected value.
    #[error("{what}: {detail}")]
    Invalid {
        /// The file or response being parsed.
        what: &'static str,
        /// What is wrong with it.
        detail: &'static str,
    },
}

/// A command cannot be built from the arguments given (never caused by a card).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A PIN that is not 1 to 16 decimal digits (BCD: 2 to 12).
    #[error("a PIN must be {expected}; the one given is not (its digits are not shown)")]
    BadPin {
        /// The accepted form.
        expected: &'static str,
    },
    /// A short file identifier outside 1..=30.
    #[error("short file identifier {sfi:#04x} is outside 1..=30")]
    BadSfi {
        /// The SFI given.
        sfi: u8,
    },
    /// An offset that READ BINARY / UPDATE BINARY cannot address.
    #[error("offset {offset} cannot be addressed (at most {max})")]
    BadOffset {
        /// The offset given.
        offset: u16,
        /// The largest offset this form of the command can address.
        max: u16,
    },
    /// Data too long for one short APDU (with its MAC).
    #[error("{len} bytes of data do not fit one command (at most {max})")]
    DataTooLong {
        /// The data length given.
        len: usize,
        /// The most that fits.
        max: usize,
    },
}

/// A purse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PurseError {
    /// The reader or the transport failed. When [`PurseError::outcome_unknown`] is true the
    /// command may have taken effect: read the card before deciding anything about money.
    #[error(transparent)]
    Reader(#[from] ReaderError),
    /// The card refused the command.
    #[error("{command}: the card answered {sw}: {}", status_advice(.command, *.sw))]
    Status {
        /// The command's name, e.g. `"CREDIT FOR LOAD"`.
        command: &'static str,
        /// The status word the card returned.
        sw: StatusWord,
    },
    /// VERIFY PIN failed (`63Cx`).
    #[error("the PIN is wrong; the card allows {tries_left} more tries before it blocks the PIN: ask the holder for the right PIN and do not guess")]
    WrongPin {
        /// Tries left before the PIN blocks.
        tries_left: u8,
    },
    /// The card refused this PIN before, so it was not presented again (see the `pin` module).
    #[error("this card refused this PIN before, so it was not presented again (a card blocks its PIN after a few wrong tries): check the configured PIN (cards.etc_pin) with the card issuer, or ask the holder for the card's PIN")]
    PinRefusedBefore,
    /// The record of refused PINs failed; the PIN was not presented.
    #[error(transparent)]
    PinRecord(#[from] PinRecordError),
    /// The card answered success with data that does not have the documented layout.
    #[error("{command}: {source}")]
    Parse {
        /// The command whose response did not parse.
        command: &'static str,
        /// What is wrong with the data.
        #[source]
        source: ParseError,
    },
    /// A command could not be built from the arguments given.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The security module refused (a MAC or TAC did not verify, keys are missing...).
    #[error(transparent)]
    Sam(#[from] SamError),
}

impl PurseError {
    /// True when a command may have reached the card without its answer reaching us (card
    /// removed, timeout): the card's state must be read before its effect is assumed.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, PurseError::Reader(e) if e.outcome_unknown())
    }

    /// The status word, when the card refused the command.
    pub fn status_word(&self) -> Option<StatusWord> {
        match self {
            PurseError::Status { sw, .. } => Some(*sw),
            PurseError::WrongPin { tries_left } => {
                Some(StatusWord(0x63C0 | u16::from(*tries_left & 0x0F)))
            }
            _ => None,
        }
    }
}

/// What a status word means for `command` and what to do about it.
pub fn status_advice(command: &str, sw: StatusWord) -> &'static str {
    match (command, sw.0) {
        ("CREDIT FOR LOAD", 0x9302) => {
            "the card rejected MAC2, so nothing was loaded and the load session is spent; check that the security module holds this card's load key (scheme, algorithm, one- or two-level diversification), then start again with a new INITIALIZE FOR LOAD"
        }
        ("DEBIT FOR PURCHASE", 0x9302) => {
            "the card rejected MAC1, so nothing was debited; check the purchase key set for this card and start again with a new INITIALIZE FOR PURCHASE"
        }
        (_, 0x9302) => "the card rejected the MAC; nothing was changed on the card: check the key set for this card and start the transaction again",
        (_, 0x9401) => "the card's balance is lower than the amount",
        ("INITIALIZE FOR LOAD", 0x9402) | ("INITIALIZE FOR PURCHASE", 0x9402) => {
            "the card's transaction counter is at its maximum: it can do no more transactions of this kind and must be replaced by its issuer"
        }
        (_, 0x9402) => "counter at maximum or record out of range",
        (_, 0x9403) => "the card has no key with this key index: use 01 for 3DES cards and 41 for SM4 cards (from the card's version byte)",
        (_, 0x9406) => "the card holds no MAC/TAC for that transaction type and counter",
        (_, 0x9303) => "the application is permanently locked: the card must go back to its issuer",
        ("INITIALIZE FOR LOAD", 0x6985) => "the card refused the load: its balance plus the amount would exceed the card's maximum balance, or the purse application is not selected",
        ("CREDIT FOR LOAD", 0x6985) | ("DEBIT FOR PURCHASE", 0x6985) | ("UPDATE CAPP DATA CACHE", 0x6985) => {
            "the card has no open transaction: another command, a reset or a re-select came between INITIALIZE and this one; nothing was changed, start again from INITIALIZE"
        }
        ("UPDATE BINARY", 0x6985) => "the card has no challenge for this secure-messaging command: send GET CHALLENGE immediately before it",
        ("GET BALANCE", 0x6985) => "the purse application is not selected: select the ADF first",
        (_, 0x6985) => "conditions of use not satisfied: the card is not in the state this command needs",
        ("INITIALIZE FOR LOAD", 0x6982) | ("INITIALIZE FOR PURCHASE", 0x6982) => "the PIN must be verified after selecting the application and before this command",
        ("READ BINARY", 0x6982) => "this file cannot be read in plain: read it encrypted (READ ENCRYPTED) or satisfy its access condition first",
        (_, 0x6982) => "security status not satisfied: verify the PIN or use secure messaging first",
        (_, 0x6983) => "the PIN is blocked: the holder must have it unblocked by the issuer",
        (_, 0x6988) => "the card rejected the secure-messaging MAC and wrote nothing: check the maintenance key for this card and use a fresh challenge",
        (_, 0x6A81) => "function not supported, or the application is blocked",
        (_, 0x6A82) => "no such file or application: the card may be of another kind, or the wrong application is selected",
        (_, 0x6A83) => "no such record",
        (_, 0x6B00) => "the offset is outside the file",
        (_, 0x6700) | (_, 0x6A86) | (_, 0x6D00) | (_, 0x6E00) => "the card does not understand this command: it is probably not a card of this kind",
        _ => sw.description(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_say_what_to_do() {
        let e = PurseError::Status {
            command: "CREDIT FOR LOAD",
            sw: StatusWord(0x9302),
        };
        let text = e.to_string();
        assert!(
            text.contains("9302") && text.contains("rejected MAC2"),
            "{text}"
        );
        let e = PurseError::Status {
            command: "INITIALIZE FOR PURCHASE",
            sw: StatusWord(0x9401),
        };
        assert!(e.to_string().contains("balance is lower"), "{e}");
        let e = PurseError::Status {
            command: "GET BALANCE",
            sw: StatusWord(0x6985),
        };
        assert!(e.to_string().contains("select the ADF"), "{e}");
        let e = PurseError::Status {
            command: "READ BINARY",
            sw: StatusWord(0x6F00),
        };
        assert!(e.to_string().contains("unknown card error"), "{e}");
        assert_eq!(
            PurseError::WrongPin { tries_left: 2 }.status_word(),
            Some(StatusWord(0x63C2))
        );
    }

    #[test]
    fn removal_means_outcome_unknown() {
        let e = PurseError::from(ReaderError::CardRemoved { reader: "r".into() });
        assert!(e.outcome_unknown());
        let e = PurseError::from(ReaderError::NoCard { reader: "r".into() });
        assert!(!e.outcome_unknown());
    }
}

/// Why the security module refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamError {
    /// No keys are configured for the card's scheme.
    #[error("the security module has no keys for {scheme} cards: add an `{scheme}` section to its configuration")]
    UnknownScheme { scheme: KeyScheme },
    /// The scheme is configured but not the key this operation needs.
    #[error("the security module has no {key} key for {scheme} cards: add `{key}` to its `{scheme}` configuration")]
    KeyNotConfigured {
        scheme: KeyScheme,
        key: &'static str,
    },
    /// The key asked for does not exist for cards of this scheme (e.g. a purse key for an ESAM).
    #[error("{scheme} cards have no {key} key")]
    KeyNotInScheme {
        scheme: KeyScheme,
        key: &'static str,
    },
    /// A master key in the configuration is malformed. The key itself is never shown.
    #[error("security-module configuration: `{key}` is not a valid 16-byte key: {reason}")]
    BadKey { key: String, reason: String },
    /// The card's MAC1 of INITIALIZE FOR LOAD does not verify.
    #[error("the card's MAC1 does not verify: the card was not issued with the load key this security module derives (check scheme, algorithm and one- or two-level diversification) or it is not genuine; do not continue this load (nothing was loaded)")]
    Mac1Invalid,
    /// The card's MAC2 of DEBIT FOR PURCHASE does not verify.
    #[error("the card's MAC2 does not verify: the card's purchase key differs from the one this security module derives, or the answer was altered; treat the purchase as unconfirmed and check the card's proof")]
    Mac2Invalid,
    /// The card's TAC does not verify.
    #[error("the card's TAC does not verify: the card's TAC key differs from the one this security module derives, or the answer was altered; the transaction's outcome must be checked by hand")]
    TacInvalid,
    /// The load names no funded record the security module can find in a state that allows it.
    #[error("no funded record allows this load ({reason}); nothing was loaded")]
    LoadNotFunded { reason: String },
    /// MAC2 was asked for a load no funded record authorised (or its authorisation was used or
    /// expired).
    #[error("no funded record names this load: the security module computes no MAC2 for card {card} without an authorisation of these load terms; nothing was loaded")]
    LoadNotAuthorized { card: String },
    /// A remote security module (the issuer host) could not be reached or did not answer:
    /// nothing was authorised, so nothing may be loaded.
    #[error("the issuer host could not be reached ({detail}); nothing was loaded: try again when the link is back")]
    HostUnreachable { detail: String },
    /// Encrypted data does not decrypt to what was asked for.
    #[error("the encrypted data from the card does not decrypt to a well-formed answer ({detail}): the encryption key or algorithm is wrong, or the card answered for another challenge")]
    Decrypt { detail: &'static str },
}

/// The record of refused PINs (the `pin` module) could not be read or written; the PIN was not
/// presented.
#[derive(Debug, thiserror::Error)]
#[error("the record of PINs cards refused cannot be read or written ({0}); the PIN was not presented: check the data directory's disk")]
pub struct PinRecordError(pub String);
