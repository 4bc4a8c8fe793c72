//! The rule every PIN presentation goes through: **a PIN that a card refused once is never
//! presented to that card again automatically.**
//!
//! A card counts wrong PINs and blocks its PIN after a few (often three). A terminal that keeps
//! presenting a wrongly configured PIN would block every customer's card it touches, a few
//! reads at a time. So [`crate::Purse::verify_pin`], the only way to send VERIFY PIN, asks a
//! [`PinRefusals`] record first: a (card, PIN) pair the card refused before is refused here,
//! without a word to the card ([`crate::PurseError::PinRefusedBefore`]), and the operator is
//! told to check the PIN. A refusal (`63Cx`, or `6983` for a PIN already blocked) is recorded
//! before the error is returned. A different PIN (the configuration corrected) is a different
//! pair and is presented once.
//!
//! The record holds [`PinMark`]s, never PIN digits: a keyed-free SHA-256 digest of the card
//! number and the PIN, truncated to 16 bytes. The daemon keeps them durably in its journal
//! (`cardd_journal::PinRefusalRecord`); [`MemoryPinRefusals`] is a bounded in-memory record
//! for tools and tests.

use std::collections::VecDeque;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::commands::Pin;
pub use crate::error::PinRecordError;

/// A (card, PIN) pair, as a digest: what a refusal record stores instead of the PIN.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PinMark([u8; 16]);

impl std::fmt::Debug for PinMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinMark({})", hex::encode_upper(self.0))
    }
}

impl PinMark {
    /// The mark of `pin` presented to the card numbered `card`.
    pub fn of(card: &str, pin: &Pin) -> Self {
        let mut h = Sha256::new();
        h.update(b"cardd pin refusal v1\0");
        h.update(card.as_bytes());
        h.update([0]);
        h.update(pin.bytes());
        let digest = h.finalize();
        let mut mark = [0u8; 16];
        mark.copy_from_slice(&digest[..16]);
        PinMark(mark)
    }

    /// The 16 bytes of the digest, for storage.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Where the (card, PIN) pairs a card refused are remembered.
pub trait PinRefusals: Send + Sync {
    /// True when the card refused this PIN before.
    fn refused(&self, mark: &PinMark) -> Result<bool, PinRecordError>;
    /// Records a refusal; durable (where the record is durable) before it returns.
    fn record(&self, mark: &PinMark) -> Result<(), PinRecordError>;
}

/// Default bound of [`MemoryPinRefusals`].
pub const MEMORY_PIN_REFUSALS_MAX: usize = 4_096;

/// A bounded in-memory record (the oldest refusal is forgotten first), for tools and tests.
#[derive(Debug)]
pub struct MemoryPinRefusals {
    marks: Mutex<VecDeque<PinMark>>,
    max: usize,
}

impl Default for MemoryPinRefusals {
    fn default() -> Self {
        Self::with_max(MEMORY_PIN_REFUSALS_MAX)
    }
}

impl MemoryPinRefusals {
    /// A record holding at most `max` refusals (at least 1).
    pub fn with_max(max: usize) -> Self {
        MemoryPinRefusals {
            marks: Mutex::new(VecDeque::new()),
            max: max.max(1),
        }
    }

    /// How many refusals it holds.
    pub fn len(&self) -> usize {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PinRefusals for MemoryPinRefusals {
    fn refused(&self, mark: &PinMark) -> Result<bool, PinRecordError> {
        Ok(self
            .marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(mark))
    }

    fn record(&self, mark: &PinMark) -> Result<(), PinRecordError> {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if !marks.contains(mark) {
            if marks.len() >= self.max {
                marks.pop_front();
            }
            marks.push_back(*mark);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_differ_by_card_and_pin_and_show_no_digits() {
        let a = Pin::ascii("123456").unwrap();
        let b = Pin::ascii("654321").unwrap();
        assert_ne!(PinMark::of("1", &a), PinMark::of("2", &a));
        assert_ne!(PinMark::of("1", &a), PinMark::of("1", &b));
        assert_eq!(PinMark::of("1", &a), PinMark::of("1", &a));
        assert!(!format!("{:?}", PinMark::of("1", &a)).contains("313233"));
    }

    #[test]
    fn the_memory_record_is_bounded() {
        let r = MemoryPinRefusals::with_max(2);
        let pin = Pin::ascii("123456").unwrap();
        for card in ["1", "2", "3"] {
            r.record(&PinMark::of(card, &pin)).unwrap();
        }
        assert_eq!(r.len(), 2);
        assert!(!r.refused(&PinMark::of("1", &pin)).unwrap());
        assert!(r.refused(&PinMark::of("3", &pin)).unwrap());
    }
}
