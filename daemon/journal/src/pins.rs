//! The durable record of PINs cards refused ([`cardd_purse::PinRefusals`]), in the daemon's
//! store: a card's refusal survives restarts, so no restart can make cardd present a refused
//! PIN to that card again. It holds digests ([`PinMark`]), never PIN digits, and at most
//! [`PIN_REFUSALS_MAX`] of them (the oldest is forgotten first).

use cardd_purse::{PinMark, PinRecordError, PinRefusals};

use crate::store::Store;

/// The store tree of the record.
pub const PIN_REFUSALS_TREE: &str = "pin_refusals";
/// At most this many refusals are kept.
pub const PIN_REFUSALS_MAX: usize = 100_000;

/// The durable record of refused (card, PIN) pairs.
#[derive(Clone)]
pub struct PinRefusalRecord {
    store: Store,
    tree: sled::Tree,
    max: usize,
}

impl std::fmt::Debug for PinRefusalRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinRefusalRecord")
            .field("len", &self.tree.len())
            .finish()
    }
}

fn failed(e: impl std::fmt::Display) -> PinRecordError {
    PinRecordError(e.to_string())
}

impl PinRefusalRecord {
    /// The record in `store`.
    pub fn open(store: &Store) -> Result<Self, crate::StoreError> {
        Self::with_max(store, PIN_REFUSALS_MAX)
    }

    /// The record in `store`, keeping at most `max` refusals (at least 1).
    pub fn with_max(store: &Store, max: usize) -> Result<Self, crate::StoreError> {
        Ok(PinRefusalRecord {
            store: store.clone(),
            tree: store.tree(PIN_REFUSALS_TREE)?,
            max: max.max(1),
        })
    }

    /// How many refusals it holds.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Forgets the oldest refusal (values are the time of the refusal, in nanoseconds).
    fn forget_oldest(&self) -> Result<(), PinRecordError> {
        let mut oldest: Option<(sled::IVec, u128)> = None;
        for item in self.tree.iter() {
            let (key, value) = item.map_err(failed)?;
            let at = <[u8; 16]>::try_from(value.as_ref())
                .map(u128::from_be_bytes)
                .unwrap_or(0);
            if oldest.as_ref().is_none_or(|(_, t)| at < *t) {
                oldest = Some((key, at));
            }
        }
        if let Some((key, _)) = oldest {
            self.tree.remove(key).map_err(failed)?;
        }
        Ok(())
    }
}

impl PinRefusals for PinRefusalRecord {
    fn refused(&self, mark: &PinMark) -> Result<bool, PinRecordError> {
        self.tree.contains_key(mark.as_bytes()).map_err(failed)
    }

    fn record(&self, mark: &PinMark) -> Result<(), PinRecordError> {
        if self.refused(mark)? {
            return Ok(());
        }
        if self.tree.len() >= self.max {
            self.forget_oldest()?;
        }
        let at = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
        self.tree
            .insert(mark.as_bytes(), &at.to_be_bytes())
            .map_err(failed)?;
        self.store.durable_flush().map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardd_purse::Pin;

    #[test]
    fn a_refusal_is_durable_and_the_record_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let pin = Pin::ascii("123456").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let record = PinRefusalRecord::with_max(&store, 2).unwrap();
            for card in ["1", "2", "3"] {
                record.record(&PinMark::of(card, &pin)).unwrap();
            }
            assert_eq!(record.len(), 2);
        }
        let store = Store::open(dir.path()).unwrap();
        let record = PinRefusalRecord::open(&store).unwrap();
        assert!(!record.refused(&PinMark::of("1", &pin)).unwrap());
        assert!(record.refused(&PinMark::of("2", &pin)).unwrap());
        assert!(record.refused(&PinMark::of("3", &pin)).unwrap());
    }
}
