//! When the flow files are read again: on demand, when someone looks at the flows (listing
//! them, starting one), at most once per [`FLOWS_CHECK_INTERVAL_MS`]. No timer and no watcher
//! thread: an idle daemon does not look at its flows directory at all, and a flow file edited
//! on disk is in effect from the next `flows.list` or `flows.start` after the edit (a run
//! already going keeps the version it started with).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::flows::FlowEngine;

/// Shortest time between two reads of the flows directory, in milliseconds: a client listing
/// the flows in a loop reads the files at most this often.
pub const FLOWS_CHECK_INTERVAL_MS: u64 = 1_000;

/// Lets one check of the flow files through per [`FLOWS_CHECK_INTERVAL_MS`].
#[derive(Debug, Default)]
pub struct ReloadGate {
    last: Mutex<Option<Instant>>,
}

impl ReloadGate {
    pub fn new() -> ReloadGate {
        ReloadGate::default()
    }

    /// Whether the files are to be checked at `now` (the first ask, or the interval has passed
    /// since the last check); a `true` counts as the check.
    pub fn take(&self, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let due = match *last {
            None => true,
            Some(at) => {
                now.saturating_duration_since(at) >= Duration::from_millis(FLOWS_CHECK_INTERVAL_MS)
            }
        };
        if due {
            *last = Some(now);
        }
        due
    }

    /// Reads changed files of `flows` again, unless that was done less than
    /// [`FLOWS_CHECK_INTERVAL_MS`] ago; called before the flows are listed or one is started.
    pub fn reload_if_due(&self, flows: &FlowEngine) {
        if self.take(Instant::now()) {
            flows.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_checked_when_asked_and_at_most_once_per_interval() {
        let gate = ReloadGate::new();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert!(gate.take(t0), "the first ask checks");
        assert!(!gate.take(ms(1)));
        assert!(!gate.take(ms(FLOWS_CHECK_INTERVAL_MS - 1)));
        assert!(gate.take(ms(FLOWS_CHECK_INTERVAL_MS)), "an interval later");
        assert!(!gate.take(ms(FLOWS_CHECK_INTERVAL_MS + 10)));
        assert!(
            gate.take(ms(60 * FLOWS_CHECK_INTERVAL_MS)),
            "long idle, then asked"
        );
    }
}
