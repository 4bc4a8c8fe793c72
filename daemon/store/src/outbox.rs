//! [`SledOutbox`]: a fleet site's held load confirmations (`cardd_authority::Outbox`) in the
//! daemon's sled database: each is on disk (a durable flush) before the load is reported, and
//! removed only after the host answered it.

use cardd_authority::{ConfirmRequest, Outbox};
use cardd_journal::Store;

/// The sled tree of held confirmations.
pub const OUTBOX_TREE: &str = "host_outbox";

/// Most confirmations held: beyond this the site stops taking loads' confirmations (the load
/// is then reported unconfirmed and settled from the card), so a long outage cannot fill the
/// disk.
pub const OUTBOX_HELD_MAX: usize = 100_000;

/// Held confirmations in sled, oldest first (keys are a big-endian sequence).
#[derive(Debug, Clone)]
pub struct SledOutbox {
    store: Store,
    tree: sled::Tree,
}

impl SledOutbox {
    pub fn open(store: &Store) -> Result<SledOutbox, cardd_journal::StoreError> {
        Ok(SledOutbox {
            store: store.clone(),
            tree: store.tree(OUTBOX_TREE)?,
        })
    }

    /// How many confirmations wait.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// A watch on the outbox: an awaitable [`sled::Subscriber`] that resolves at the next
    /// change (a confirmation held or delivered). Its queue is bounded and a full one blocks
    /// the outbox's writers, so drop it once it resolved rather than keeping it.
    pub fn watch(&self) -> sled::Subscriber {
        self.tree.watch_prefix(Vec::<u8>::new())
    }
}

impl Outbox for SledOutbox {
    fn hold(&self, request: &ConfirmRequest) -> Result<(), String> {
        if self.tree.len() >= OUTBOX_HELD_MAX {
            return Err(format!(
                "the outbox already holds {OUTBOX_HELD_MAX} confirmations"
            ));
        }
        let value = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let next = match self.tree.last().map_err(|e| e.to_string())? {
            Some((key, _)) => key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| "a malformed outbox key".to_owned())?
                .saturating_add(1),
            None => 1,
        };
        self.tree
            .insert(next.to_be_bytes(), value)
            .map_err(|e| e.to_string())?;
        self.store.durable_flush().map_err(|e| e.to_string())
    }

    fn pending(&self, max: usize) -> Result<Vec<ConfirmRequest>, String> {
        self.tree
            .iter()
            .take(max)
            .map(|item| {
                let (_, value) = item.map_err(|e| e.to_string())?;
                serde_json::from_slice(&value).map_err(|e| format!("a held confirmation: {e}"))
            })
            .collect()
    }

    fn delivered(&self, request: &ConfirmRequest) -> Result<(), String> {
        for item in self.tree.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            if serde_json::from_slice::<ConfirmRequest>(&value)
                .ok()
                .as_ref()
                == Some(request)
            {
                self.tree.remove(key).map_err(|e| e.to_string())?;
            }
        }
        self.store.durable_flush().map_err(|e| e.to_string())
    }
}
