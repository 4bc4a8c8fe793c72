//! The card's deterministic random-number generator.
//!
//! Real cards draw the purse random and GET CHALLENGE values from a hardware source; the
//! simulator draws them from SplitMix64 whose state is part of the card's saved state, so a
//! test run (and a card saved to JSON and restored elsewhere) is exactly reproducible.
//! Known-answer tests can queue the next bytes with [`SimRng::queue`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Most queued bytes kept (older queued bytes are dropped past this).
pub const QUEUED_BYTES_MAX: usize = 64;

/// SplitMix64 plus an optional queue of forced bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRng {
    state: u64,
    #[serde(default)]
    queued: VecDeque<u8>,
}

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng {
            state: seed,
            queued: VecDeque::new(),
        }
    }

    /// A seed derived from identifying bytes (FNV-1a), so cards with different numbers draw
    /// different sequences without the issuer choosing seeds.
    pub fn seed_from(identity: &[u8]) -> u64 {
        identity.iter().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3)
        })
    }

    /// Forces the next bytes drawn (for known-answer tests).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.queued.extend(bytes.iter().copied());
        while self.queued.len() > QUEUED_BYTES_MAX {
            self.queued.pop_front();
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_byte(&mut self) -> u8 {
        match self.queued.pop_front() {
            Some(b) => b,
            None => self.next_u64().to_be_bytes()[0],
        }
    }

    /// `N` random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in out.iter_mut() {
            *b = self.next_byte();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_queue_comes_first() {
        let (mut a, mut b) = (SimRng::new(7), SimRng::new(7));
        assert_eq!(a.bytes::<8>(), b.bytes::<8>());
        a.queue(&[1, 2, 3, 4]);
        assert_eq!(a.bytes::<4>(), [1, 2, 3, 4]);
        assert_ne!(SimRng::seed_from(b"a"), SimRng::seed_from(b"b"));
        a.queue(&[0; 100]);
        assert_eq!(a.queued.len(), QUEUED_BYTES_MAX);
    }
}
