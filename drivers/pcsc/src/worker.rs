//! Bounded PC/SC calls: a thread that owns a PC/SC context and runs calls with a deadline.
//!
//! Why: pcsc-lite has no timeout on most calls. `SCardTransmit` waits for the card forever (a
//! silent card, or vpcd's card that never answers, holds it indefinitely), `SCardConnect` and
//! `SCardBeginTransaction` wait for other holders with no bound (pcsc-lite issue #254), and
//! every call on a context is serialised behind the one in flight. The driver's contract is
//! that no call blocks past its timeout plus a bounded grace, so each session's PC/SC work runs
//! on a worker thread that owns the session's context and card handle, and the caller waits on
//! a channel with a deadline. When the deadline passes the caller *abandons* the worker: it asks
//! pcscd to cancel (`SCardCancel`, which ends a blocked `SCardGetStatusChange`), drops its end
//! of the channel and carries on with a fresh worker and context on the next call. The
//! abandoned thread finishes whenever pcscd lets go, then drops its card handle (which
//! disconnects with a reset, so a half-done card session is not left open) and its context.
//!
//! Abandoned threads are counted; past [`STUCK_WORKERS_MAX`] no new worker starts, so a hung
//! pcscd cannot make cardd spawn threads without end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::error::PcscError;

/// Most abandoned worker threads (blocked in pcsc-lite) alive at once, process-wide.
pub const STUCK_WORKERS_MAX: usize = 16;
/// Bound on establishing a PC/SC context (a round trip to pcscd).
pub const ESTABLISH_TIMEOUT_MS: u64 = 3_000;

static STUCK_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// The number of abandoned PC/SC worker threads still blocked in pcsc-lite.
pub fn stuck_workers() -> usize {
    STUCK_WORKERS.load(Ordering::Relaxed)
}

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a call did not produce a result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The deadline passed; the worker must be abandoned.
    Stuck,
    /// The worker could not be started or died (a panic in the pcsc library).
    Failed(PcscError),
    /// Establishing the context failed (pcscd not running...).
    Establish(pcsc::Error),
}

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
                let context = match pcsc::Context::establish(pcsc::Scope::User) {
                    Ok(context) => context,
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
        let context = self.context.clone();
        // SCardCancel opens its own connection to pcscd; if pcscd is hung, so is it, so it runs
        // detached (counted like a stuck worker).
        STUCK_WORKERS.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("pcsc-cancel".into())
            .spawn(move || {
                let _ = context.cancel();
                STUCK_WORKERS.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            STUCK_WORKERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn mark_abandoned(flag: &AtomicBool) {
    if !flag.swap(true, Ordering::SeqCst) {
        STUCK_WORKERS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called by the worker thread as it ends: an abandoned worker is no longer stuck.
fn finish(flag: &AtomicBool) {
    // Setting the flag here too means a later `mark_abandoned` will not count this thread.
    if flag.swap(true, Ordering::SeqCst) {
        STUCK_WORKERS.fetch_sub(1, Ordering::Relaxed);
    }
}
