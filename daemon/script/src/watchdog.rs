//! The watchdog: one shared timer thread for every run in the process.
//!
//! A run executes on the thread that calls [`crate::Sandbox::run`] (one of the daemon's
//! long-lived flow threads), not on a thread of its own. Lua code is stopped by the count hook at the
//! deadline; what the hook cannot stop is time spent in C or in a blocking API call. For those
//! the watchdog keeps the old promise of a dedicated flow thread: at the wall deadline plus the
//! grace (or the grace after a cancellation) it gives up on the run: it records the stop
//! (`Watchdog`, or `Cancelled` when the run was cancelled and the deadline has not passed) in
//! the run's flag, so every later API call of the run is refused and its outcome is that stop
//! whatever it returns, and it calls the run's give-up callback
//! ([`crate::RunContext::on_given_up`]) so the run's owner can report the end at once while the
//! stuck call finishes on its own.
//!
//! The thread sleeps on a condition variable until the earliest give-up time of the runs it
//! watches, and without a timeout when it watches none: an idle process gets no wake-ups from
//! it. It is started on first use.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{LimitFigures, ScriptError};
use crate::limits::{StopFlag, StopReason};

/// What the run's owner is told when the watchdog gives up on it.
pub(crate) type GiveUp = Box<dyn FnOnce(ScriptError) + Send>;

struct Entry {
    stop: Arc<StopFlag>,
    hard_deadline: Instant,
    grace: Duration,
    cancelled_at: Option<Instant>,
    figures: LimitFigures,
    give_up: Option<GiveUp>,
}

impl Entry {
    fn give_up_at(&self) -> Instant {
        match self.cancelled_at {
            Some(at) => self.hard_deadline.min(at + self.grace),
            None => self.hard_deadline,
        }
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    started: bool,
}

struct Watchdog {
    state: Mutex<State>,
    wake: Condvar,
    /// Notified when the last watched run ends.
    quiet: Condvar,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| Watchdog {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        quiet: Condvar::new(),
    })
}

fn lock(w: &Watchdog) -> MutexGuard<'_, State> {
    w.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A run under watch; dropping it (the run returned) ends the watch.
pub(crate) struct Watch {
    id: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let w = watchdog();
        let mut state = lock(w);
        state.entries.remove(&self.id);
        let quiet = state.entries.is_empty();
        drop(state);
        // No notify of the timer thread: a removed entry only makes its next wake-up
        // unnecessary, and it finds nothing to do then.
        if quiet {
            w.quiet.notify_all();
        }
    }
}

/// Waits until no run is watched (none in progress), at most `max`. For work that should
/// happen between runs rather than beside them (building the next runs' states).
pub(crate) fn wait_for_no_runs(max: Duration) {
    let w = watchdog();
    let state = lock(w);
    let _ = w
        .quiet
        .wait_timeout_while(state, max, |s| !s.entries.is_empty())
        .unwrap_or_else(|p| p.into_inner());
}

/// Watches a run from now until the returned [`Watch`] is dropped.
pub(crate) fn watch(
    stop: Arc<StopFlag>,
    deadline: Instant,
    grace: Duration,
    figures: LimitFigures,
    give_up: Option<GiveUp>,
) -> Result<Watch, ScriptError> {
    let w = watchdog();
    let mut state = lock(w);
    if !state.started {
        std::thread::Builder::new()
            .name("cardd-watchdog".to_owned())
            .spawn(|| watch_loop(watchdog()))
            .map_err(|e| ScriptError::Internal {
                reason: format!("cannot start the flow watchdog: {e}"),
            })?;
        state.started = true;
    }
    let id = state.next_id;
    state.next_id += 1;
    state.entries.insert(
        id,
        Entry {
            stop,
            hard_deadline: deadline + grace,
            grace,
            cancelled_at: None,
            figures,
            give_up,
        },
    );
    drop(state);
    w.wake.notify_one();
    Ok(Watch { id })
}

/// Tells the watchdog a run was cancelled, so it gives up on it after the grace.
pub(crate) fn poke() {
    watchdog().wake.notify_one();
}

fn watch_loop(w: &'static Watchdog) {
    let mut state = lock(w);
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, entry) in state.entries.iter_mut() {
            if entry.cancelled_at.is_none() && entry.stop.get() == Some(StopReason::Cancelled) {
                entry.cancelled_at = Some(now);
            }
            let at = entry.give_up_at();
            if now >= at {
                due.push(*id);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let given_up: Vec<Entry> = due
            .into_iter()
            .filter_map(|id| state.entries.remove(&id))
            .collect();
        if !given_up.is_empty() {
            if state.entries.is_empty() {
                w.quiet.notify_all();
            }
            drop(state);
            for entry in given_up {
                give_up(entry, now);
            }
            state = lock(w);
            continue;
        }
        state = match next {
            None => w.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                w.wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
}

fn give_up(entry: Entry, now: Instant) {
    let reason = if entry.cancelled_at.is_some() && now < entry.hard_deadline {
        StopReason::Cancelled
    } else {
        StopReason::Watchdog
    };
    // A run that tripped its own limit but never came back is still given up on.
    let error = match entry.stop.trip(reason) {
        StopReason::Cancelled => ScriptError::Cancelled,
        StopReason::Finished => return,
        _ => entry.figures.stop_error(StopReason::Watchdog),
    };
    if let Some(give_up) = entry.give_up {
        give_up(error);
    }
}
