//! The driver's own errors, and the one place where PC/SC status codes become
//! [`ReaderError`]s.
//!
//! Why one place: the layers above act on the kind of failure (a missing card asks for a card, a
//! card pulled mid-command means "outcome unknown, read the card", a vanished reader or service
//! is `ReaderGone`), so every pcsc-lite code has to land in the right kind, and the mapping is
//! easiest to review as a single table. What has no generic kind travels as
//! [`ReaderError::Driver`] with a [`PcscError`] source that callers can downcast.

use cardd_reader::ReaderError;

/// Failures of the PC/SC driver that have no generic [`ReaderError`] kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcscError {
    /// A PC/SC call failed.
    #[error("{operation} failed: {source} ({code:#010X})", code = *.source as u32)]
    Call {
        operation: &'static str,
        #[source]
        source: pcsc::Error,
    },
    /// The pcsc library panicked inside a call (it does so in debug builds for status codes it
    /// does not know). The session is re-established on the next call.
    #[error("{operation}: the pcsc library panicked; the session will be re-established")]
    Panicked { operation: &'static str },
    /// Too many PC/SC calls are blocked in pcsc-lite (each holds a thread until pcscd answers).
    #[error("{count} PC/SC calls are still blocked in pcscd (at most {max}); is pcscd hung?")]
    TooManyStuck { count: usize, max: usize },
    /// A worker thread could not be started.
    #[error("cannot start a PC/SC worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A reader name cannot be passed to PC/SC.
    #[error("reader name {0:?} contains a NUL byte")]
    BadReaderName(String),
    /// The card answered with fewer than the two status bytes.
    #[error("the card's response has {len} bytes, fewer than the two status bytes")]
    ShortResponse { len: usize },
}

impl PcscError {
    pub(crate) fn call(operation: &'static str, source: pcsc::Error) -> Self {
        PcscError::Call { operation, source }
    }
}

/// Whether `e` means the PC/SC context itself is dead (pcscd stopped or restarted): the
/// context must be established again before anything else can work.
pub(crate) fn context_lost(e: pcsc::Error) -> bool {
    matches!(
        e,
        pcsc::Error::NoService
            | pcsc::Error::ServiceStopped
            | pcsc::Error::InvalidHandle
            | pcsc::Error::Shutdown
    )
}

/// Whether `e` means the card this handle was talking to is no longer the card in the reader
/// (pulled, reset or powered down by someone else): the handle must be dropped.
pub(crate) fn card_lost(e: pcsc::Error) -> bool {
    matches!(
        e,
        pcsc::Error::RemovedCard
            | pcsc::Error::ResetCard
            | pcsc::Error::UnpoweredCard
            | pcsc::Error::NoSmartcard
    )
}

/// Maps a PC/SC status code from `operation` on `reader` onto the generic error kinds.
///
/// `RemovedCard`, `ResetCard` and `UnpoweredCard` on a live handle all mean the card's session
/// is gone and what happened to the last command is not known: `CardRemoved`. A connect that
/// finds no card is `NoCard`. A reader or service that vanished is `ReaderGone`.
pub(crate) fn map(reader: &str, operation: &'static str, e: pcsc::Error) -> ReaderError {
    let reader = reader.to_owned();
    match e {
        pcsc::Error::NoSmartcard => ReaderError::NoCard { reader },
        pcsc::Error::RemovedCard | pcsc::Error::ResetCard | pcsc::Error::UnpoweredCard => {
            ReaderError::CardRemoved { reader }
        }
        pcsc::Error::ReaderUnavailable
        | pcsc::Error::UnknownReader
        | pcsc::Error::NoReadersAvailable
        | pcsc::Error::NoService
        | pcsc::Error::ServiceStopped
        | pcsc::Error::InvalidHandle
        | pcsc::Error::Shutdown => ReaderError::ReaderGone { reader },
        pcsc::Error::SharingViolation => ReaderError::Busy {
            reader,
            holder: "another PC/SC application".into(),
        },
        pcsc::Error::ProtoMismatch => ReaderError::Protocol {
            reader,
            detail: "the card speaks none of the configured protocols (option `protocols`)".into(),
        },
        pcsc::Error::UnresponsiveCard => ReaderError::Protocol {
            reader,
            detail: "the card does not answer reset (inserted the wrong way round?)".into(),
        },
        other => ReaderError::driver(reader, PcscError::call(operation, other)),
    }
}

/// A driver error that is not a PC/SC status code.
pub(crate) fn driver(reader: &str, e: PcscError) -> ReaderError {
    ReaderError::driver(reader, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_and_reader_codes_map_to_their_kinds() {
        let kind = |e| map("pcsc:r", "SCardTransmit", e);
        assert!(matches!(
            kind(pcsc::Error::NoSmartcard),
            ReaderError::NoCard { .. }
        ));
        for lost in [
            pcsc::Error::RemovedCard,
            pcsc::Error::ResetCard,
            pcsc::Error::UnpoweredCard,
        ] {
            let e = kind(lost);
            assert!(
                matches!(e, ReaderError::CardRemoved { .. }) && e.outcome_unknown(),
                "{lost:?}"
            );
        }
        for gone in [
            pcsc::Error::ReaderUnavailable,
            pcsc::Error::UnknownReader,
            pcsc::Error::NoService,
            pcsc::Error::ServiceStopped,
        ] {
            assert!(
                matches!(kind(gone), ReaderError::ReaderGone { .. }),
                "{gone:?}"
            );
        }
        assert!(matches!(
            kind(pcsc::Error::SharingViolation),
            ReaderError::Busy { .. }
        ));
        let other = kind(pcsc::Error::CommError);
        let source = match &other {
            ReaderError::Driver { source, .. } => source.downcast_ref::<PcscError>(),
            _ => None,
        };
        assert!(
            matches!(
                source,
                Some(PcscError::Call {
                    source: pcsc::Error::CommError,
                    ..
                })
            ),
            "{other:?}"
        );
        assert!(other.to_string().contains("SCardTransmit"), "{other}");
    }

    #[test]
    fn lost_contexts_and_cards_are_recognised() {
        assert!(context_lost(pcsc::Error::NoService));
        assert!(context_lost(pcsc::Error::ServiceStopped));
        assert!(!context_lost(pcsc::Error::RemovedCard));
        assert!(card_lost(pcsc::Error::ResetCard));
        assert!(!card_lost(pcsc::Error::Timeout));
    }
}
