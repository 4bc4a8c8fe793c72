//! Reader errors that say what happened and what to do next.
//!
//! Every driver maps its own failures onto [`ReaderError`] so that the layers above can react
//! the same way whatever the hardware: a missing card asks for a card, a card removed in the
//! middle of a command means "outcome unknown, re-present the card", a timeout is bounded and
//! reported, and a vanished reader is distinguishable from a vanished card. Driver-specific
//! detail travels as a boxed source error ([`ReaderError::Driver`]) that callers can downcast.

use crate::apdu::ApduError;

/// A driver's own error type, boxed so the trait stays object-safe. Callers that know the
/// driver can recover it with `source.downcast_ref::<TheirError>()`.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong between cardd and a card.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// The reader is there but holds no card.
    #[error("no card in reader {reader}: insert a card and try again")]
    NoCard { reader: String },

    /// The card left the field or slot while a command was in flight. Whether the command took
    /// effect on the card is unknown: money flows must re-read the card before deciding.
    #[error("the card was removed from reader {reader} during a command; whether the command took effect is unknown: put the card back so its state can be checked")]
    CardRemoved { reader: String },

    /// The card or reader did not answer within the per-reader APDU timeout. As with a removal,
    /// the command may or may not have taken effect.
    #[error("the card in reader {reader} did not answer within {timeout_ms} ms; check that the card is seated and retry")]
    Timeout { reader: String, timeout_ms: u64 },

    /// The reader itself disappeared (unplugged, driver process died, daemon of the reader stopped).
    #[error("reader {reader} is gone (unplugged, or its driver stopped); reconnect it and reopen")]
    ReaderGone { reader: String },

    /// The bytes exchanged broke the transport protocol (bad framing, impossible length,
    /// a chaining loop that did not end).
    #[error("protocol error with reader {reader}: {detail}")]
    Protocol { reader: String, detail: String },

    /// No reader matches the selector.
    #[error("no reader matches {selector}; list readers to see what is attached")]
    NotFound { selector: String },

    /// Another client holds the reader.
    #[error(
        "reader {reader} is in use by {holder}; wait for it to finish or ask an administrator"
    )]
    Busy { reader: String, holder: String },

    /// The reader lacks a capability (a PSAM slot, an OBU channel, events...).
    #[error("reader {reader} does not support {what}")]
    Unsupported { reader: String, what: &'static str },

    /// A command could not be encoded.
    #[error("invalid APDU for reader {reader}: {source}")]
    Apdu {
        reader: String,
        #[source]
        source: ApduError,
    },

    /// A driver's configuration is wrong.
    #[error("driver {driver}: {detail}")]
    Config { driver: String, detail: String },

    /// The reader's driver program (an out-of-process plugin) ended unexpectedly, or was
    /// killed because it stopped answering, while this session used it. The reader itself may
    /// be fine: the program is restarted automatically and the reader comes back as a new one.
    /// A command in flight may or may not have reached the card.
    #[error("the driver program {program} of reader {reader} ended unexpectedly; it is being restarted: retry in a few seconds, and if this repeats send the log to the program's vendor")]
    DriverCrashed { reader: String, program: String },

    /// The reader's driver program answered with something that is not a valid message. A
    /// command in flight may or may not have reached the card.
    #[error("the driver program {program} of reader {reader} sent a malformed reply ({detail}); retry, and if this repeats send the log to the program's vendor")]
    DriverMalformed {
        reader: String,
        program: String,
        detail: String,
    },

    /// A driver-specific failure not covered above.
    #[error("reader {reader}: {source}")]
    Driver {
        reader: String,
        #[source]
        source: DriverError,
    },
}

impl ReaderError {
    /// True when a command may have reached the card without its answer reaching us: the
    /// card's state must be read before the command's effect is assumed either way.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ReaderError::CardRemoved { .. }
                | ReaderError::Timeout { .. }
                | ReaderError::DriverCrashed { .. }
                | ReaderError::DriverMalformed { .. }
        )
    }

    /// True when the card (not the reader) is missing or went away.
    pub fn is_card_absent(&self) -> bool {
        matches!(
            self,
            ReaderError::NoCard { .. } | ReaderError::CardRemoved { .. }
        )
    }

    /// The reader the error concerns, when there is one.
    pub fn reader(&self) -> Option<&str> {
        match self {
            ReaderError::NoCard { reader }
            | ReaderError::CardRemoved { reader }
            | ReaderError::Timeout { reader, .. }
            | ReaderError::ReaderGone { reader }
            | ReaderError::Protocol { reader, .. }
            | ReaderError::Busy { reader, .. }
            | ReaderError::Unsupported { reader, .. }
            | ReaderError::Apdu { reader, .. }
            | ReaderError::DriverCrashed { reader, .. }
            | ReaderError::DriverMalformed { reader, .. }
            | ReaderError::Driver { reader, .. } => Some(reader),
            ReaderError::NotFound { .. } | ReaderError::Config { .. } => None,
        }
    }

    /// Wraps a driver-specific error.
    pub fn driver(reader: impl Into<String>, source: impl Into<DriverError>) -> Self {
        ReaderError::Driver {
            reader: reader.into(),
            source: source.into(),
        }
    }
}
