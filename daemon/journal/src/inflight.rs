//! The money operations running right now, by id, so that nothing settles them from under
//! themselves.
//!
//! A recharge record being loaded (`cardd-etc`) or a group order being recharged (`cardd-group`) looks,
//! from the stores alone, exactly like one a stopped daemon left behind: the reconcilers that
//! settle leftovers from the journal must skip it while its run is alive. Each runner holds an
//! [`InFlightGuard`] for the id from before the record can be seen until its outcome is
//! recorded; the guard leaves the set when dropped, however the run ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// Ids of the operations in flight.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    ids: Arc<Mutex<HashSet<String>>>,
}

/// Keeps one id in its [`InFlight`] set until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    ids: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        lock(&self.ids).remove(&self.id);
    }
}

fn lock(ids: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    ids.lock().unwrap_or_else(|p| p.into_inner())
}

impl InFlight {
    /// Marks `id` in flight, or `None` when it already is.
    pub fn claim(&self, id: &str) -> Option<InFlightGuard> {
        lock(&self.ids)
            .insert(id.to_owned())
            .then(|| self.guard(id))
    }

    /// Runs `start` under the set's lock and marks the id it returns in flight before anyone
    /// can look: what `start` makes visible is never mistaken for a leftover.
    pub fn start<T, E>(
        &self,
        start: impl FnOnce() -> Result<T, E>,
        id_of: impl FnOnce(&T) -> String,
    ) -> Result<(T, InFlightGuard), E> {
        let mut ids = lock(&self.ids);
        let made = start()?;
        let id = id_of(&made);
        ids.insert(id.clone());
        drop(ids);
        Ok((made, self.guard(&id)))
    }

    /// Whether `id` is in flight.
    pub fn contains(&self, id: &str) -> bool {
        lock(&self.ids).contains(id)
    }

    /// Runs `settle` under the set's lock unless `id` is in flight (then `None`), so no run of
    /// that id can start while it settles.
    pub fn unless_in_flight<R>(&self, id: &str, settle: impl FnOnce() -> R) -> Option<R> {
        let ids = lock(&self.ids);
        if ids.contains(id) {
            return None;
        }
        let settled = settle();
        drop(ids);
        Some(settled)
    }

    fn guard(&self, id: &str) -> InFlightGuard {
        InFlightGuard {
            ids: self.ids.clone(),
            id: id.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_in_flight_until_its_guard_drops() {
        let set = InFlight::default();
        let guard = set.claim("a").expect("free");
        assert!(set.claim("a").is_none(), "claimed once");
        assert!(set.contains("a"));
        assert_eq!(set.unless_in_flight("a", || 1), None);
        drop(guard);
        assert!(!set.contains("a"));
        assert_eq!(set.unless_in_flight("a", || 1), Some(1));
        let (made, _guard) = set
            .start(|| Ok::<_, ()>("b".to_owned()), Clone::clone)
            .unwrap();
        assert_eq!(made, "b");
        assert!(set.contains("b"));
        assert!(set.start(|| Err::<String, _>("no"), Clone::clone).is_err());
    }
}
