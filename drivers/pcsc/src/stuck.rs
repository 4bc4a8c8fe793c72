//! The bound on PC/SC threads that may be blocked in pcsc-lite, shared by the session watchdog
//! (module `watchdog`) and the factory's workers (module `worker`).
//!
//! Why a bound: a thread blocked in pcsc-lite ends only when pcscd answers. Abandoned workers,
//! the short-lived threads that establish contexts and send `SCardCancel`, and session calls
//! whose connection to pcscd was shut down but that have not returned yet are counted; past
//! [`STUCK_WORKERS_MAX`] no new such thread starts, so a hung pcscd cannot make cardd spawn
//! threads without end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::PcscError;

/// Most PC/SC threads and calls blocked in pcsc-lite past their deadline at once, process-wide.
pub const STUCK_WORKERS_MAX: usize = 16;
/// Bound on establishing a PC/SC context (a round trip to pcscd).
pub const ESTABLISH_TIMEOUT_MS: u64 = 3_000;

static STUCK_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// The number of PC/SC threads and calls still blocked in pcsc-lite after their deadline.
pub fn stuck_workers() -> usize {
    STUCK_WORKERS.load(Ordering::Relaxed)
}

/// `SCardCancel` on a thread of its own, counted like a stuck worker until it returns: it opens
/// its own connection to pcscd, and if pcscd is hung, so is it, while its caller must not be.
/// Past [`STUCK_WORKERS_MAX`] nothing is sent.
pub(crate) fn cancel_detached(context: pcsc::Context) {
    if stuck_workers() >= STUCK_WORKERS_MAX {
        return;
    }
    let pending = Pending::new();
    let flag = pending.clone();
    let spawned = std::thread::Builder::new()
        .name("pcsc-cancel".into())
        .spawn(move || {
            let _ = context.cancel();
            flag.finish();
        });
    if spawned.is_ok() {
        // Counted until it returns (usually at once).
        pending.abandon();
    }
}

/// A session call whose connection the watchdog shut down has not returned yet.
pub(crate) fn stuck_call_forced() {
    STUCK_WORKERS.fetch_add(1, Ordering::Relaxed);
}

/// That call returned.
pub(crate) fn stuck_call_returned() {
    STUCK_WORKERS.fetch_sub(1, Ordering::Relaxed);
}

/// A short-lived thread that may block in pcsc-lite: counted as stuck from
/// [`Pending::abandon`] until the thread calls [`Pending::finish`], whichever comes first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending(Arc<AtomicBool>);

impl Pending {
    pub(crate) fn new() -> Pending {
        Pending::default()
    }

    /// Its caller stops waiting for it.
    pub(crate) fn abandon(&self) {
        mark_abandoned(&self.0);
    }

    /// Called by the thread as it ends.
    pub(crate) fn finish(&self) {
        finish(&self.0);
    }
}

/// Why a call did not produce a result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The deadline passed.
    Stuck,
    /// A thread could not be started or died (a panic in the pcsc library).
    Failed(PcscError),
    /// Establishing the context failed (pcscd not running...).
    Establish(pcsc::Error),
}

pub(crate) fn mark_abandoned(flag: &AtomicBool) {
    if !flag.swap(true, Ordering::SeqCst) {
        STUCK_WORKERS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called by the thread as it ends: an abandoned worker is no longer stuck.
pub(crate) fn finish(flag: &AtomicBool) {
    // Setting the flag here too means a later `mark_abandoned` will not count this thread.
    if flag.swap(true, Ordering::SeqCst) {
        STUCK_WORKERS.fetch_sub(1, Ordering::Relaxed);
    }
}
