//! Deadlines for PC/SC calls made on the caller's own thread: one process-wide watchdog thread.
//!
//! Why: pcsc-lite has no timeout on most calls. `SCardTransmit` waits for the card forever (a
//! silent card, or vpcd's card that never answers, holds it indefinitely), `SCardConnect` and
//! `SCardBeginTransaction` wait for another application's transaction with no bound, and every
//! call on a context is serialised behind the one in flight. The driver's contract is that no
//! call blocks past its timeout plus a bounded grace. A reader session runs its PC/SC calls on
//! the thread that calls it (the daemon's reader worker), so a command costs no thread hop; the
//! bound is kept by this module instead:
//!
//! 1. Before a call, the session registers it here with its deadline ([`arm`]); afterwards it
//!    removes it ([`Guard::disarm`]). Both are a mutex and a map insert or remove; the watchdog
//!    thread is woken only when the new deadline is earlier than the one it sleeps towards, and
//!    then sleeps until that deadline even if the call returns first, so a busy reader wakes it
//!    about once per timeout and an idle process never (it waits on a condition variable with
//!    no tick while no call is in flight).
//! 2. At the deadline the watchdog sends `SCardCancel` on the call's context (on a short-lived
//!    thread: `SCardCancel` may talk to pcscd, which may hang) and gives the call
//!    [`CANCEL_GRACE_MS`] to return.
//! 3. If it has not returned by then, the watchdog shuts down the context's connection to
//!    pcscd (`shutdown(2)` on its socket). The call then fails at once with
//!    `SCARD_F_COMM_ERROR`, which the session reports as `Timeout`; the session drops the
//!    context and handle and the next call establishes fresh ones.
//!
//! What `SCardCancel` does and does not end, measured against pcscd 1.9.9 with vsmartcard's
//! vpcd: it ends a blocked `SCardGetStatusChange` (`SCARD_E_CANCELLED`; the card-event and
//! hotplug waits rely on it). It does *not* end an `SCardTransmit` to a card that never answers,
//! an `SCardConnect` waiting for another handle's transaction, or an `SCardBeginTransaction`
//! waiting for another holder: `SCardCancel` returned success within microseconds (pcsc-lite's
//! client library forwards a cancel to pcscd only while a status-change wait is in flight) and
//! each call was still blocked seconds later. Shutting down the context's socket ended each of
//! the three within 150 µs with `SCARD_F_COMM_ERROR`. Step 3 exists for those calls.
//!
//! Finding the socket safely: pcsc-lite opens one Unix socket to pcscd per context and does not
//! expose it. [`establish`] establishes every context of this driver under one process-wide
//! lock and compares the process's sockets connected to pcscd (`/proc/self/fd`, peer address
//! by `getpeername`) before and after; the one new socket, identified by descriptor *and* inode,
//! is the context's. When that is not unambiguous (another socket to pcscd appeared at the same
//! moment) the context is released and established again. The descriptor stays that socket for
//! as long as the context lives, and a context lives at least as long as a call registered here
//! (the registration holds a clone of it); the watchdog shuts the socket down only while the
//! call is registered, under the same lock the caller needs to deregister, and checks the inode
//! once more first. The descriptor is only shut down, never closed: pcsc-lite closes it when
//! the context is released. Writes on the shut socket fail with `EPIPE`, which Rust programs
//! ignore as a signal.
//!
//! The forced return exists on Linux only (it needs `/proc`); elsewhere an overrunning call is
//! bounded by `SCardCancel` alone.
//!
//! Bound on threads: `SCardCancel` and [`establish`] run on short-lived threads that may block
//! in pcscd; they count as stuck until they return (see [`crate::stuck`]), and past
//! [`crate::stuck::STUCK_WORKERS_MAX`] no new one starts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::PcscError;
use crate::stuck::{self, CallError};

/// How long a call may go on after its deadline, once `SCardCancel` was sent, before the
/// watchdog shuts down its connection to pcscd.
pub const CANCEL_GRACE_MS: u64 = 200;
/// How many times [`establish`] tries to tell its context's socket apart from others appearing
/// at the same moment.
const IDENTIFY_ATTEMPTS_MAX: usize = 3;

/// The connection of a context to pcscd, as seen in `/proc/self/fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Socket {
    fd: i32,
    inode: u64,
}

/// An established PC/SC context and, where it could be identified, its socket to pcscd.
pub(crate) struct Link {
    pub context: pcsc::Context,
    socket: Option<Socket>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Serialises context establishment in this process, so a new socket to pcscd is known to be
/// the new context's.
static ESTABLISH_LOCK: Mutex<()> = Mutex::new(());

/// Establishes a context and identifies its socket (on the calling thread, unbounded; see
/// [`establish`] for the bounded form).
pub(crate) fn establish_here() -> Result<Link, pcsc::Error> {
    let _serial = ESTABLISH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = sockets::to_pcscd();
        let context = pcsc::Context::establish(pcsc::Scope::User)?;
        let (Some(before), Some(after)) = (before, sockets::to_pcscd()) else {
            // No /proc (or not Linux): the context cannot be forced, only cancelled.
            return Ok(Link {
                context,
                socket: None,
            });
        };
        let new: Vec<Socket> = after.difference(&before).copied().collect();
        match new[..] {
            [socket] => {
                return Ok(Link {
                    context,
                    socket: Some(socket),
                })
            }
            _ if attempts < IDENTIFY_ATTEMPTS_MAX => drop(context),
            _ => {
                tracing::warn!(
                    candidates = new.len(),
                    "cannot tell this PC/SC context's connection to pcscd apart; its calls can only be cancelled"
                );
                return Ok(Link {
                    context,
                    socket: None,
                });
            }
        }
    }
}

/// Establishes a context, bounded by `timeout` (a round trip to pcscd, which may hang): it runs
/// on a short-lived thread that is counted as stuck if it overruns.
pub(crate) fn establish(timeout: Duration) -> Result<Link, CallError> {
    let count = stuck::stuck_workers();
    if count >= stuck::STUCK_WORKERS_MAX {
        return Err(CallError::Failed(PcscError::TooManyStuck {
            count,
            max: stuck::STUCK_WORKERS_MAX,
        }));
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let pending = stuck::Pending::new();
    let flag = pending.clone();
    std::thread::Builder::new()
        .name("pcsc-establish".into())
        .spawn(move || {
            let _ = tx.send(establish_here());
            flag.finish();
        })
        .map_err(|e| CallError::Failed(PcscError::Thread(e)))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(link)) => Ok(link),
        Ok(Err(e)) => Err(CallError::Establish(e)),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            pending.abandon();
            Err(CallError::Stuck)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::Failed(PcscError::Panicked {
            operation: "SCardEstablishContext",
        })),
    }
}

static CALLS_CANCELLED: AtomicU64 = AtomicU64::new(0);
static CALLS_FORCED: AtomicU64 = AtomicU64::new(0);

/// Calls that overran their deadline and were sent `SCardCancel`, since the process started.
pub fn calls_cancelled_total() -> u64 {
    CALLS_CANCELLED.load(Ordering::Relaxed)
}

/// Calls that went on past `SCardCancel` and whose connection to pcscd was shut down, since
/// the process started.
pub fn calls_forced_total() -> u64 {
    CALLS_FORCED.load(Ordering::Relaxed)
}

/// A call in flight.
struct Entry {
    context: pcsc::Context,
    socket: Option<Socket>,
    operation: &'static str,
    thread: ThreadId,
    /// When the watchdog acts next on this call; `None` once it has done all it can.
    due: Option<Instant>,
    cancelled: bool,
    forced: bool,
}

#[derive(Default)]
struct State {
    calls: BTreeMap<u64, Entry>,
    next_id: u64,
    /// What the watchdog thread sleeps towards: `None` while it waits with no deadline (or
    /// has not started); a call due earlier must wake it.
    sleeping_until: Option<Instant>,
    /// The earliest deadline that woke the watchdog. It sleeps until then even when that call
    /// has already returned, so the calls after it (due later) need not wake it again: a busy
    /// reader wakes it about once per timeout, not once per call.
    woken_for: Option<Instant>,
    started: bool,
}

struct Watchdog {
    state: Mutex<State>,
    wake: Condvar,
}

static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();

fn watchdog() -> &'static Watchdog {
    WATCHDOG.get_or_init(|| Watchdog {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    })
}

impl Watchdog {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Registers a call of `operation` on `link`'s context, due in `timeout`. Keep the guard for
/// the length of the call.
pub(crate) fn arm(link: &Link, operation: &'static str, timeout: Duration) -> Guard {
    let deadline = Instant::now() + timeout;
    let dog = watchdog();
    let mut state = dog.lock();
    if !state.started {
        state.started = std::thread::Builder::new()
            .name("pcsc-watchdog".into())
            .spawn(|| run(watchdog()))
            .is_ok();
    }
    let id = state.next_id;
    state.next_id += 1;
    state.calls.insert(
        id,
        Entry {
            context: link.context.clone(),
            socket: link.socket,
            operation,
            thread: std::thread::current().id(),
            due: Some(deadline),
            cancelled: false,
            forced: false,
        },
    );
    if state.sleeping_until.is_none_or(|t| deadline < t) {
        state.sleeping_until = Some(deadline);
        state.woken_for = Some(deadline);
        dog.wake.notify_one();
    }
    Guard { id: Some(id) }
}

/// What the watchdog did to a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The deadline passed (`SCardCancel` was sent): the context is in doubt.
    pub overran: bool,
    /// The connection to pcscd was shut down: the context is dead.
    pub forced: bool,
}

/// A registered call; dropping it deregisters it too.
#[derive(Debug)]
pub(crate) struct Guard {
    id: Option<u64>,
}

impl Guard {
    /// Deregisters the call; says what the watchdog did to it.
    pub(crate) fn disarm(mut self) -> Outcome {
        self.take()
    }

    fn take(&mut self) -> Outcome {
        let Some(id) = self.id.take() else {
            return Outcome::default();
        };
        let entry = watchdog().lock().calls.remove(&id);
        match entry {
            Some(e) => {
                if e.forced {
                    stuck::stuck_call_returned();
                }
                Outcome {
                    overran: e.cancelled,
                    forced: e.forced,
                }
            }
            None => Outcome::default(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.take();
    }
}

/// The PC/SC calls in flight now: the operation and the thread it runs on.
pub fn calls_in_flight() -> Vec<(&'static str, ThreadId)> {
    watchdog()
        .lock()
        .calls
        .values()
        .map(|e| (e.operation, e.thread))
        .collect()
}

/// The watchdog thread: acts on calls that are due, then sleeps until the next one is.
fn run(dog: &'static Watchdog) {
    let mut state = dog.lock();
    loop {
        let now = Instant::now();
        for entry in state.calls.values_mut() {
            if entry.due.is_none_or(|due| due > now) {
                continue;
            }
            if !entry.cancelled {
                entry.cancelled = true;
                CALLS_CANCELLED.fetch_add(1, Ordering::Relaxed);
                entry.due = Some(now + Duration::from_millis(CANCEL_GRACE_MS));
                tracing::warn!(
                    operation = entry.operation,
                    "PC/SC call overran its deadline; sending SCardCancel"
                );
                stuck::cancel_detached(entry.context.clone());
            } else {
                entry.due = None;
                if let Some(socket) = entry.socket {
                    tracing::warn!(
                        operation = entry.operation,
                        "PC/SC call ignored SCardCancel; closing its connection to pcscd"
                    );
                    entry.forced = sockets::shut_down(socket);
                    if entry.forced {
                        CALLS_FORCED.fetch_add(1, Ordering::Relaxed);
                        stuck::stuck_call_forced();
                    }
                }
            }
        }
        let mut next = state.calls.values().filter_map(|e| e.due).min();
        match state.woken_for {
            Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
            _ => state.woken_for = None,
        }
        state.sleeping_until = next;
        state = match next {
            None => dog.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                dog.wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
}

#[cfg(target_os = "linux")]
mod sockets {
    use std::collections::BTreeSet;
    use std::os::unix::ffi::OsStrExt;

    use nix::sys::socket::{getpeername, shutdown, Shutdown, UnixAddr};

    use super::Socket;

    /// pcsc-lite's default socket; `PCSCLITE_CSOCK_NAME` overrides it (for client and daemon).
    const PCSCD_SOCKET_DEFAULT: &str = "/run/pcscd/pcscd.comm";

    fn pcscd_path() -> std::path::PathBuf {
        std::env::var_os("PCSCLITE_CSOCK_NAME")
            .map(Into::into)
            .unwrap_or_else(|| PCSCD_SOCKET_DEFAULT.into())
    }

    /// The inode of descriptor `fd` when it is a socket.
    fn inode(fd: i32) -> Option<u64> {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        let text = link.as_os_str().as_bytes();
        let digits = text.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// The process's sockets connected to pcscd; `None` when `/proc/self/fd` cannot be read.
    pub(super) fn to_pcscd() -> Option<BTreeSet<Socket>> {
        let path = pcscd_path();
        let mut found = BTreeSet::new();
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        for entry in entries.flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Some(inode) = inode(fd) else {
                continue;
            };
            let peer = getpeername::<UnixAddr>(fd).ok();
            if peer.as_ref().and_then(|a| a.path()) == Some(path.as_path()) {
                found.insert(Socket { fd, inode });
            }
        }
        Some(found)
    }

    /// Shuts the socket down if the descriptor is still that socket; whether it did.
    pub(super) fn shut_down(socket: Socket) -> bool {
        inode(socket.fd) == Some(socket.inode) && shutdown(socket.fd, Shutdown::Both).is_ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod sockets {
    use std::collections::BTreeSet;

    use super::Socket;

    pub(super) fn to_pcscd() -> Option<BTreeSet<Socket>> {
        None
    }

    pub(super) fn shut_down(_socket: Socket) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_to_pcscd_are_listed_by_peer_address() {
        // Nothing in this test process talks to pcscd, so the list is empty but readable.
        let found = sockets::to_pcscd();
        if cfg!(target_os = "linux") {
            assert_eq!(found, Some(Default::default()));
        }
    }
}
