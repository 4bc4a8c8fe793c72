//! `cardd-script`: the sandboxed Lua engine that runs cardd's business flows.
//!
//! A flow (圈存 "load money onto a card", a balance query, a group recharge) is a Lua file that
//! orchestrates calls into Rust APIs; money arithmetic, card cryptography and journal writes stay
//! in Rust. This crate makes that safe to do with scripts written by integrators:
//!
//! - [`sandbox`]: a fresh Lua 5.4 state per run with only safe libraries, text chunks only
//!   from Lua (the host loads a checked flow's own bytecode in binary mode),
//!   deterministic randomness, and budgets a script cannot catch or escape (instructions,
//!   memory, call depth, wall time, a watchdog for time spent in C), plus bounds on the C
//!   functions hooks cannot see into.
//! - [`module`]: how Rust APIs are exposed (one [`LuaModule`] per API), the per-run
//!   [`RunContext`], and argument helpers that keep money exact ([`fen_arg`]).
//! - [`flow`]: flow files, their metadata and parameter schema, parameter validation with
//!   zh-CN messages, and a reloading [`FlowRegistry`].
//! - [`runner`]: [`run_flow`], one run from validated parameters to a bounded JSON result.
//! - [`pool`]: each flow version's few states built ahead of its runs, each used by one run.
//! - [`threads`]: the few long-lived threads runs execute on; a shared watchdog timer thread
//!   gives up on runs stuck past their deadline.
//! - [`log`]: the `log` module, the built-in example of an API module.
//!
//! **Architecture invariant:** no Lua state serves more than one run or outlives it, and nothing
//! a flow does reaches Rust except through a registered module whose functions check
//! [`RunContext::enter`].
//! **Architecture invariant:** amounts cross from Lua to Rust only as integer fen or decimal yuan
//! strings; floats are refused, never rounded.
#![forbid(unsafe_code)]

pub mod convert;
pub mod error;
pub mod flow;
mod limits;
pub mod log;
pub mod module;
pub mod pool;
pub mod runner;
pub mod sandbox;
pub mod threads;
mod watchdog;

pub use convert::{json_to_lua, lua_to_json, ConvertError, JsonLimits};
pub use error::ScriptError;
pub use flow::{
    FlowDefinition, FlowError, FlowProblem, FlowRegistry, ParamError, ParamKind, ParamProblem,
    ParamSpec, ParamValue, ReloadReport, ValidatedParams,
};
pub use log::{LogLevel, LogModule, LogRecord};
pub use module::{
    fen_arg, fen_arg_named, install_module, json_arg, json_value, positive_fen_arg, str_arg,
    ApiCall, ApiError, ArgError, CancelHandle, LuaModule, RunContext,
};
pub use runner::{run_chunk, run_flow};
pub use sandbox::{Limits, Sandbox, SandboxRefusal, StopReason, Stopped};
pub use threads::{FlowThreads, FlowThreadsError};

/// mlua, re-exported so API modules use the same version.
pub use mlua;
