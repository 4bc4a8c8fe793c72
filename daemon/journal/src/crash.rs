//! Named crash points for the kill-at-every-step test matrix.
//!
//! `crash_point("journal.intent.after_flush")` does nothing unless the crate is built with the
//! `crashpoints` feature *and* the environment variable `CARDD_CRASH_AT` names this point
//! (optionally `name:n` for its n-th hit). Then the process sends itself SIGKILL on the spot: no
//! destructor, no flush, no reply, exactly what `kill -9` leaves (if `kill` cannot be run, it
//! aborts instead, which leaves the same). [`CRASH_POINTS`] lists every point so the test
//! matrix can iterate over them.

/// Every crash point, in the order a load passes them.
pub const CRASH_POINTS: &[&str] = &[
    "load.before_intent",
    "journal.intent.before_flush",
    "journal.intent.after_flush",
    "load.before_credit",
    "load.after_credit",
    "journal.outcome.before_flush",
    "journal.outcome.after_flush",
    "recovery.before_outcome",
];

/// Kills the process if `CARDD_CRASH_AT` names `point` (feature `crashpoints` only).
#[inline]
pub fn crash_point(point: &'static str) {
    #[cfg(feature = "crashpoints")]
    hit(point);
    #[cfg(not(feature = "crashpoints"))]
    let _ = point;
}

#[cfg(feature = "crashpoints")]
fn hit(point: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(target) = std::env::var("CARDD_CRASH_AT") else {
        return;
    };
    let (name, nth) = match target.split_once(':') {
        Some((name, n)) => (name.to_owned(), n.parse::<u64>().unwrap_or(1)),
        None => (target.clone(), 1),
    };
    if name == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("cardd: crash point {point} reached: SIGKILL (CARDD_CRASH_AT)");
        // `kill -KILL` from a child: the workspace forbids `unsafe`, so no direct `libc::kill`.
        // The signal is delivered while this thread waits; abort is only the fallback.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(2));
        std::process::abort();
    }
}
