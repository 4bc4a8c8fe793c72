//! What can go wrong when cardd runs a Lua flow, as one error type.
//!
//! Why one enum: the daemon must tell "the script is wrong" (compile, runtime, bad return value)
//! apart from "the script was stopped by a limit" (instructions, memory, call depth, wall time,
//! watchdog) and from "someone stopped it" (cancelled) or "the sandbox refused it" (host access,
//! bytecode, oversized strings). The server maps each class to its own JSON-RPC code once; this
//! module only classifies. Messages and tracebacks that come from the script are bounded, so a
//! script cannot make cardd log or return megabytes of text.

use mlua::Error as LuaError;

use crate::limits::{BadReturnError, SandboxRefusal, StopReason, Stopped};

/// Longest error message kept from a script, in bytes.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;
/// Longest traceback kept from a script, in bytes.
pub const TRACEBACK_BYTES_MAX: usize = 4096;

/// Why a flow (or a flow file) did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The Lua source does not compile.
    #[error("{chunk} does not compile (line {}): {message}", line.map_or_else(|| "?".to_owned(), |l| l.to_string()))]
    Compile {
        chunk: String,
        line: Option<u32>,
        message: String,
    },
    /// The script raised an error (its own `error(...)`, a type error, or an API function refusing
    /// its arguments).
    #[error("flow error: {message}")]
    Runtime { message: String, traceback: String },
    /// The instruction budget ran out; the script was stopped and could not catch it.
    #[error("instruction budget exhausted ({instructions_max} instructions)")]
    Instructions { instructions_max: u64 },
    /// The memory limit was reached; the script was stopped and could not catch it.
    #[error("memory limit reached ({memory_bytes_max} bytes)")]
    Memory { memory_bytes_max: usize },
    /// The call stack grew deeper than allowed (runaway recursion).
    #[error("call depth limit exceeded ({call_depth_max} frames)")]
    CallDepth { call_depth_max: u32 },
    /// The wall-clock limit passed while Lua code was running; the script was stopped cleanly.
    #[error("wall-clock limit reached ({wall_ms_max} ms)")]
    WallTime { wall_ms_max: u64 },
    /// The wall-clock limit (plus grace) passed while the run was stuck outside Lua code
    /// (in a C library function or a blocking API call). The run is failed closed: its later API
    /// calls are refused, and its thread is left to finish on its own.
    #[error(
        "watchdog: the flow did not stop within {wall_ms_max} ms (+ grace); run failed closed"
    )]
    Watchdog { wall_ms_max: u64 },
    /// The run was cancelled through its `CancelHandle`.
    #[error("flow cancelled")]
    Cancelled,
    /// The sandbox refused something outright (host access, bytecode, oversized string or
    /// pattern, an unknown module name).
    #[error("refused by the sandbox: {reason}")]
    Refused { reason: String },
    /// The flow returned something that cannot be its result.
    #[error("bad return value: {reason}")]
    BadReturn { reason: String },
    /// The engine itself failed (thread could not start, flow thread panicked).
    #[error("script engine failure: {reason}")]
    Internal { reason: String },
}

impl ScriptError {
    /// True for the classes that mean "a limit stopped the script" rather than "the script is
    /// wrong": instructions, memory, call depth, wall time, watchdog.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            ScriptError::Instructions { .. }
                | ScriptError::Memory { .. }
                | ScriptError::CallDepth { .. }
                | ScriptError::WallTime { .. }
                | ScriptError::Watchdog { .. }
        )
    }
}

/// The numbers needed to word limit errors; copied from [`crate::Limits`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitFigures {
    pub instructions_max: u64,
    pub memory_bytes_max: usize,
    pub call_depth_max: u32,
    pub wall_ms_max: u64,
}

impl From<&crate::limits::Limits> for LimitFigures {
    fn from(l: &crate::limits::Limits) -> Self {
        LimitFigures {
            instructions_max: l.instructions_max,
            memory_bytes_max: l.memory_bytes_max,
            call_depth_max: l.call_depth_max,
            wall_ms_max: l.wall_ms_max,
        }
    }
}

impl LimitFigures {
    pub(crate) fn stop_error(&self, reason: StopReason) -> ScriptError {
        match reason {
            StopReason::Instructions => ScriptError::Instructions {
                instructions_max: self.instructions_max,
            },
            StopReason::WallTime => ScriptError::WallTime {
                wall_ms_max: self.wall_ms_max,
            },
            StopReason::Memory => ScriptError::Memory {
                memory_bytes_max: self.memory_bytes_max,
            },
            StopReason::CallDepth => ScriptError::CallDepth {
                call_depth_max: self.call_depth_max,
            },
            StopReason::Cancelled => ScriptError::Cancelled,
            StopReason::Watchdog => ScriptError::Watchdog {
                wall_ms_max: self.wall_ms_max,
            },
            StopReason::Finished => ScriptError::Internal {
                reason: "the run had already finished".to_owned(),
            },
        }
    }

    /// Turns an mlua error into a [`ScriptError`], looking through callback wrappers for the
    /// sandbox's own error types.
    pub(crate) fn classify(&self, chunk: &str, err: &LuaError) -> ScriptError {
        let mut traceback = String::new();
        let mut current = err;
        loop {
            match current {
                LuaError::CallbackError {
                    cause,
                    traceback: tb,
                } => {
                    if traceback.is_empty() {
                        traceback = tb.clone();
                    }
                    current = cause;
                }
                LuaError::WithContext { cause, .. } | LuaError::BadArgument { cause, .. } => {
                    // BadArgument carries useful wording ("bad argument #1 to 'credit'"); keep it
                    // unless the cause is one of ours.
                    if special(cause).is_none() {
                        return runtime(&current.to_string(), &traceback);
                    }
                    current = cause;
                }
                _ => break,
            }
        }
        if let Some(found) = special(current) {
            return match found {
                Special::Stop(reason) => self.stop_error(reason),
                Special::Refusal(r) => ScriptError::Refused {
                    reason: bounded(&r.to_string(), ERROR_MESSAGE_BYTES_MAX),
                },
                Special::BadReturn(r) => ScriptError::BadReturn {
                    reason: bounded(&r.0, ERROR_MESSAGE_BYTES_MAX),
                },
            };
        }
        match current {
            LuaError::SyntaxError { message, .. } => ScriptError::Compile {
                chunk: chunk.to_owned(),
                line: syntax_line(message),
                message: bounded(message, ERROR_MESSAGE_BYTES_MAX),
            },
            LuaError::MemoryError(_) => ScriptError::Memory {
                memory_bytes_max: self.memory_bytes_max,
            },
            LuaError::RuntimeError(text) => runtime(text, &traceback),
            other => runtime(&other.to_string(), &traceback),
        }
    }
}

enum Special<'a> {
    Stop(StopReason),
    Refusal(&'a SandboxRefusal),
    BadReturn(&'a BadReturnError),
}

fn special(err: &LuaError) -> Option<Special<'_>> {
    if let Some(stopped) = err.downcast_ref::<Stopped>() {
        return Some(Special::Stop(stopped.reason));
    }
    if let Some(refusal) = err.downcast_ref::<SandboxRefusal>() {
        return Some(Special::Refusal(refusal));
    }
    if let Some(bad) = err.downcast_ref::<BadReturnError>() {
        return Some(Special::BadReturn(bad));
    }
    if let LuaError::MemoryError(_) = err {
        return Some(Special::Stop(StopReason::Memory));
    }
    None
}

/// Splits Lua's "message\nstack traceback:\n..." into its two parts, both bounded.
fn runtime(text: &str, traceback: &str) -> ScriptError {
    let (message, tb) = match text.split_once("\nstack traceback:") {
        Some((m, t)) => (m, format!("stack traceback:{t}")),
        None => (text, traceback.to_owned()),
    };
    ScriptError::Runtime {
        message: bounded(message, ERROR_MESSAGE_BYTES_MAX),
        traceback: bounded(&tb, TRACEBACK_BYTES_MAX),
    }
}

/// The line number in a Lua syntax error: `name:LINE: message`.
fn syntax_line(message: &str) -> Option<u32> {
    // The chunk name may itself contain ':' (never in ours, but be lenient): take the first
    // all-digit field.
    message
        .split(':')
        .skip(1)
        .find(|field| !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|field| field.parse().ok())
}

/// Cuts `text` to at most `bytes_max` bytes on a character boundary, marking the cut.
pub(crate) fn bounded(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_owned();
    }
    let mut end = bytes_max.saturating_sub(3);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_lines_are_found() {
        assert_eq!(
            syntax_line("etc_load.lua:12: unexpected symbol near 'x'"),
            Some(12)
        );
        assert_eq!(syntax_line("no line here"), None);
    }

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        let text = "圈存".repeat(1000);
        let cut = bounded(&text, 100);
        assert!(cut.len() <= 100);
        assert!(cut.ends_with("..."));
        assert_eq!(bounded("short", 100), "short");
    }
}
