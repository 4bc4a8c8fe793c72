//! Bounded PC/SC calls on a thread of their own, for the factory and the hotplug watch.
//!
//! Reader sessions do not use this: they run their calls on the caller's thread, bounded by the
//! shared watchdog ([`crate::watchdog`]), which also explains why pcsc-lite needs bounding at
//! all. The factory's listing and the hotplug watch are not on any APDU's path, and the hotplug
//! watch sits in long `SCardGetStatusChange` waits, so each keeps one worker thread that owns
//! its context: the caller waits on a channel with a deadline. When the deadline passes the
//! caller *abandons* the worker: it asks pcscd to cancel (`SCardCancel`, which ends a blocked
//! `SCardGetStatusChange`), drops its end of the channel and carries on with a fresh worker and
//! context on the next call. The abandoned thread finishes whenever pcscd lets go. An idle
//! worker waits on its channel: no periodic wake-ups.
//!
//! Abandoned workers count against the bound on threads blocked in pcsc-lite
//! ([`stuck_workers`], at most [`STUCK_WORKERS_MAX`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::error::PcscError;
pub(crate) use crate::stuck::CallError;
use crate::stuck::{self, finish, mark_abandoned};
pub use crate::stuck::{stuck_workers, ESTABLISH_TIMEOUT_MS, STUCK_WORKERS_MAX};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A thread owning a PC/SC context and a state `S` built on it.
pub(crate) struct Worker<S> {
    jobs: mpsc::SyncSender<Job<S>>,
    context: pcsc::Context,
    abandoned: Arc<AtomicBool>,
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl<S: 'static> Worker<S> {
    /// Starts a worker: establishes a context on the new thread (bounded by
    /// [`ESTABLISH_TIMEOUT_MS`]) and builds the state from it.
    pub(crate) fn spawn(
        name: &str,
        make: impl FnOnce(pcsc::Context) -> S + Send + 'static,
    ) -> Result<Worker<S>, CallError> {
        let stuck = stuck_workers();
        if stuck >= STUCK_WORKERS_MAX {
            return Err(CallError::Failed(PcscError::TooManyStuck {
                count: stuck,
                max: STUCK_WORKERS_MAX,
            }));
        }
        let (jobs, queue) = mpsc::sync_channel::<Job<S>>(1);
        let (ready_tx, ready) = mpsc::sync_channel::<Result<pcsc::Context, pcsc::Error>>(1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        std::thread::Builder::new()
            .name(format!("pcsc-{name}"))
            .spawn(move || {
                // Through the watchdog's establish, so sessions can tell their sockets apart.
                let context = match crate::watchdog::establish_here() {
                    Ok(link) => link.context,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        finish(&flag);
                        return;
                    }
                };
                if ready_tx.send(Ok(context.clone())).is_err() {
                    finish(&flag);
                    return;
                }
                let mut state = make(context);
                while let Ok(job) = queue.recv() {
                    // A panic inside pcsc (debug builds panic on unknown status codes) drops the
                    // job's reply sender, which the caller sees; the state may be inconsistent,
                    // so the worker stops and the session builds a fresh one.
                    if catch_unwind(AssertUnwindSafe(|| job(&mut state))).is_err() {
                        break;
                    }
                }
                drop(state);
                finish(&flag);
            })
            .map_err(|e| CallError::Failed(PcscError::Thread(e)))?;
        match ready.recv_timeout(Duration::from_millis(ESTABLISH_TIMEOUT_MS)) {
            Ok(Ok(context)) => Ok(Worker {
                jobs,
                context,
                abandoned,
            }),
            Ok(Err(e)) => Err(CallError::Establish(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                mark_abandoned(&abandoned);
                Err(CallError::Stuck)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(CallError::Failed(PcscError::Panicked {
                    operation: "SCardEstablishContext",
                }))
            }
        }
    }

    /// Runs `f` on the worker and waits at most `timeout` for its result.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        operation: &'static str,
        timeout: Duration,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, CallError> {
        let (reply, result) = mpsc::sync_channel::<R>(1);
        let job: Job<S> = Box::new(move |state| {
            let _ = reply.send(f(state));
        });
        if self.jobs.send(job).is_err() {
            return Err(CallError::Failed(PcscError::Panicked { operation }));
        }
        match result.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CallError::Stuck),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(CallError::Failed(PcscError::Panicked { operation }))
            }
        }
    }

    /// The worker's context (a clone: SCardCancel on it ends the call in progress).
    pub(crate) fn context(&self) -> pcsc::Context {
        self.context.clone()
    }

    /// Gives up on a worker whose call overran: asks pcscd to cancel what can be cancelled and
    /// lets the thread end on its own when pcscd answers.
    pub(crate) fn abandon(self) {
        mark_abandoned(&self.abandoned);
        stuck::cancel_detached(self.context.clone());
    }
}
