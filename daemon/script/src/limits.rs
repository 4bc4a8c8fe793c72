//! Every bound of one run, and how a run is stopped: the sandbox enforces them, the error
//! type words them, the module context carries the stop flag. Below all three.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Every bound of one run. Units are in the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Lua heap of the whole state (every table, string, closure and coroutine), in bytes.
    /// Default 8 MiB.
    pub memory_bytes_max: usize,
    /// VM instructions for the whole run, counted in steps of [`HOOK_INTERVAL_INSTRUCTIONS`].
    /// Default 50 M (well under a second of pure Lua; a flow mostly waits in API calls).
    pub instructions_max: u64,
    /// Wall-clock time of the whole run including blocking API calls, in ms. Default 30 s.
    /// Lua code is stopped by the hook within microseconds of the deadline.
    pub wall_ms_max: u64,
    /// How long after the deadline the caller waits for a thread stuck outside Lua before
    /// returning [`ScriptError::Watchdog`], in ms. Default 50 ms.
    pub watchdog_grace_ms: u64,
    /// Longest string `string.rep` may build and any string may have when it crosses into Rust
    /// (API arguments, results), in bytes. Default 1 MiB.
    pub string_bytes_max: usize,
    /// Longest subject `string.find`/`match`/`gmatch`/`gsub` accept, in bytes. Default 64 KiB.
    pub pattern_subject_bytes_max: usize,
    /// Longest pattern those functions accept, in bytes. Default 256.
    pub pattern_bytes_max: usize,
    /// Largest worst-case backtracking estimate (matcher steps) allowed for one pattern call,
    /// see [`pattern_steps_estimate`]. Default 50 M (well under a second in the worst case).
    pub pattern_steps_max: u64,
    /// Most items one C library call may loop over: the count of `string.rep`, the range of
    /// `table.move`. Default 1 M.
    pub c_loop_items_max: u64,
    /// Deepest call stack (Lua and C frames of one coroutine), in frames, checked at every hook
    /// tick (so it may be overshot by up to one tick's worth of calls). Default 200.
    pub call_depth_max: u32,
    /// Largest result a flow may return, as JSON, in bytes. Default 64 KiB.
    pub result_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes_max: 8 * 1024 * 1024,
            instructions_max: 50_000_000,
            wall_ms_max: 30_000,
            watchdog_grace_ms: 50,
            string_bytes_max: 1024 * 1024,
            pattern_subject_bytes_max: 64 * 1024,
            pattern_bytes_max: 256,
            pattern_steps_max: 50_000_000,
            c_loop_items_max: 1_000_000,
            call_depth_max: 200,
            result_bytes_max: 64 * 1024,
        }
    }
}

impl Limits {
    /// The small budget used to evaluate a flow file for its metadata: 2 MiB, 1 M instructions,
    /// 1 s.
    pub fn for_definition() -> Limits {
        Limits {
            memory_bytes_max: 2 * 1024 * 1024,
            instructions_max: 1_000_000,
            wall_ms_max: 1000,
            ..Limits::default()
        }
    }
}

/// Stack size of a flow thread, in bytes. Lua limits C recursion to 200 levels
/// (`LUAI_MAXCCALLS`); each level through mlua callbacks costs a few KiB of Rust stack.
pub const FLOW_THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Why a run was stopped. The first reason recorded wins and stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    Instructions = 1,
    WallTime = 2,
    Memory = 3,
    CallDepth = 4,
    Cancelled = 5,
    Watchdog = 6,
    /// The run returned; nothing may execute for it any more (finalizers, late API calls).
    Finished = 7,
}

impl StopReason {
    fn from_u8(value: u8) -> Option<StopReason> {
        Some(match value {
            1 => StopReason::Instructions,
            2 => StopReason::WallTime,
            3 => StopReason::Memory,
            4 => StopReason::CallDepth,
            5 => StopReason::Cancelled,
            6 => StopReason::Watchdog,
            7 => StopReason::Finished,
            _ => return None,
        })
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Instructions => "instruction budget exhausted",
            StopReason::WallTime => "wall-clock limit reached",
            StopReason::Memory => "memory limit reached",
            StopReason::CallDepth => "call depth limit exceeded",
            StopReason::Cancelled => "run cancelled",
            StopReason::Watchdog => "watchdog fired; run failed closed",
            StopReason::Finished => "run already finished",
        })
    }
}

/// The shared, sticky stop flag of one run.
#[derive(Debug, Default)]
pub(crate) struct StopFlag(AtomicU8);

impl StopFlag {
    pub(crate) fn get(&self) -> Option<StopReason> {
        StopReason::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Records `reason` unless a reason is already recorded; returns the recorded one.
    pub(crate) fn trip(&self, reason: StopReason) -> StopReason {
        match self.try_trip(reason) {
            Ok(()) => reason,
            Err(existing) => existing,
        }
    }

    /// Records `reason` if no reason is recorded yet; otherwise returns the recorded one.
    pub(crate) fn try_trip(&self, reason: StopReason) -> Result<(), StopReason> {
        match self
            .0
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(existing) => Err(StopReason::from_u8(existing).unwrap_or(reason)),
        }
    }

    pub(crate) fn error(&self, reason: StopReason) -> mlua::Error {
        mlua::Error::external(Stopped {
            reason: self.trip(reason),
        })
    }
}

/// The error raised inside Lua when a run is stopped; scripts cannot catch it for good.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Stopped {
    pub reason: StopReason,
}

/// The sandbox refused an operation outright.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {why}")]
pub struct SandboxRefusal {
    pub what: String,
    pub why: String,
}

impl SandboxRefusal {
    pub(crate) fn new(what: impl Into<String>, why: impl Into<String>) -> SandboxRefusal {
        SandboxRefusal {
            what: what.into(),
            why: why.into(),
        }
    }

    pub(crate) fn into_lua(self) -> mlua::Error {
        mlua::Error::external(self)
    }
}

/// A value a flow returned that cannot be its result (raised by the conversion code).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadReturnError(pub String);
