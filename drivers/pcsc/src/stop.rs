//! Stopping a blocking PC/SC wait from another thread.
//!
//! Why: the daemon's card monitor and hotplug watch sit in `SCardGetStatusChange` for as long as
//! nothing happens. Rather than waking every few seconds to ask whether they should stop, they
//! wait long and are stopped with `SCardCancel` on the context the wait runs on. A [`WaitStop`]
//! remembers that context (it is replaced after pcscd restarts or a call overran) and
//! whether a stop was asked, so a wait that starts after the stop returns at once.
//!
//! One race is left, and bounded: a stop that lands after the wait checked the flag but before
//! pcscd began the wait cancels nothing, and that wait lasts until its own timeout.

use std::sync::{Arc, Mutex, MutexGuard};

use cardd_reader::WaitStopper;

#[derive(Default)]
struct State {
    stopped: bool,
    context: Option<pcsc::Context>,
}

/// Shared between a session (or hotplug watch) and its [`WaitStopper`].
#[derive(Clone, Default)]
pub(crate) struct WaitStop(Arc<Mutex<State>>);

impl std::fmt::Debug for WaitStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitStop")
            .field("stopped", &self.lock().stopped)
            .finish()
    }
}

impl WaitStop {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the context the next wait runs on; returns whether a stop was asked already.
    pub(crate) fn arm(&self, context: pcsc::Context) -> bool {
        let mut state = self.lock();
        state.context = Some(context);
        state.stopped
    }

    /// Whether a stop was asked.
    pub(crate) fn stopped(&self) -> bool {
        self.lock().stopped
    }

    /// The handle the daemon keeps: marks the stop, then cancels the wait in progress. SCardCancel
    /// talks to pcscd, which may hang, so it runs on a detached thread and `stop` never blocks.
    pub(crate) fn stopper(&self) -> WaitStopper {
        let shared = self.clone();
        WaitStopper::new(move || {
            let context = {
                let mut state = shared.lock();
                state.stopped = true;
                state.context.clone()
            };
            if let Some(context) = context {
                let _ = std::thread::Builder::new()
                    .name("pcsc-stop".into())
                    .spawn(move || {
                        let _ = context.cancel();
                    });
            }
        })
    }
}
