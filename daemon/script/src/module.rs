//! How Rust APIs are exposed to flows: one [`LuaModule`] type per API, one line to add it.
//!
//! Why: flows only orchestrate; every effect (card commands, journal, host calls, UI prompts,
//! logging) is a Rust function, written by whoever owns that API. Following the wezterm pattern
//! (style-and-reliability.md §A5), each API is a type with `name()` and one `register()`, and the
//! runner takes a slice of them. This module also gives API authors what every function needs:
//!
//! - [`RunContext`]: the run id, the shared stop flag (cancellation, limits, watchdog), the
//!   deterministic seed and start time, the deadline for blocking waits, and typed app data.
//! - [`RunContext::enter`]: the first line of every API function with effects. It refuses calls
//!   once the run is stopped or finished (so a run abandoned by the watchdog cannot reach the
//!   card later) and refuses re-entrant calls into the same API from a Lua callback.
//! - Argument helpers that keep money exact: [`fen_arg`] takes only Lua integers (fen) or decimal
//!   yuan strings (parsed by `cardd_api::Fen::parse_yuan`); floats are refused, never rounded.
//!   [`str_arg`] bounds strings; [`json_arg`]/[`json_value`] convert tables with bounded depth
//!   and size and no fractional numbers.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardd_api::money::AMOUNT_FEN_MAX;
use cardd_api::{Fen, MoneyError};
use mlua::{Lua, Table, Value};

use crate::convert::{json_to_lua, lua_to_json, JsonLimits};
use crate::error::ScriptError;
use crate::limits::{Limits, StopFlag, StopReason};

/// An API exposed to flows as one global table (`card`, `host`, `ui`, `log`, …).
pub trait LuaModule {
    /// The global name flows use. Lower-case identifier; must not shadow a sandbox global.
    fn name(&self) -> &'static str;

    /// Builds the module's table for this run and installs it as the global [`Self::name`]
    /// (see [`install_module`]). Called once per run, on the caller's thread, before any flow
    /// code runs. Functions should capture `ctx.clone()` and start with `ctx.enter(...)`.
    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()>;
}

/// Installs `table` as the global `name`; the usual last line of [`LuaModule::register`].
pub fn install_module(lua: &Lua, name: &str, table: Table) -> mlua::Result<()> {
    lua.globals().raw_set(name, table)
}

type AppData = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// Everything one run shares between the runner, its API functions and its caller.
///
/// Create one per run with [`RunContext::new`]; keep a [`CancelHandle`] to stop it.
#[derive(Clone)]
pub struct RunContext {
    run_id: Arc<str>,
    flow: Option<(Arc<str>, Arc<str>)>,
    seed: u64,
    started_at_ms: i64,
    stop: Arc<StopFlag>,
    deadline: Arc<OnceLock<Instant>>,
    data: Arc<AppData>,
    active: Arc<Mutex<Vec<&'static str>>>,
    given_up: Arc<Mutex<Option<crate::watchdog::GiveUp>>>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run_id)
            .field("flow", &self.flow)
            .field("seed", &self.seed)
            .field("started_at_ms", &self.started_at_ms)
            .field("stop", &self.stop.get())
            .finish_non_exhaustive()
    }
}

impl RunContext {
    /// A context for run `run_id`. The seed is derived from the run id (so a replay with the
    /// same id draws the same `math.random` numbers) and the start time is now.
    pub fn new(run_id: impl Into<String>) -> RunContext {
        let run_id: String = run_id.into();
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        RunContext {
            seed: fnv1a64(run_id.as_bytes()),
            run_id: run_id.into(),
            flow: None,
            started_at_ms,
            stop: Arc::new(StopFlag::default()),
            deadline: Arc::new(OnceLock::new()),
            data: Arc::new(HashMap::new()),
            active: Arc::new(Mutex::new(Vec::new())),
            given_up: Arc::new(Mutex::new(None)),
        }
    }

    /// Sets what the watchdog calls when it gives up on the run (stuck in C or in a blocking
    /// API call past the wall deadline plus grace, or past the grace after a cancellation),
    /// with the outcome the run will have: the owner can report the run's end at once. The
    /// run itself returns with that outcome whenever its stuck call does.
    #[must_use]
    pub fn on_given_up(self, f: impl FnOnce(ScriptError) + Send + 'static) -> RunContext {
        *self.given_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
        self
    }

    pub(crate) fn take_given_up(&self) -> Option<crate::watchdog::GiveUp> {
        self.given_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Sets the seed of `math.random` for this run.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> RunContext {
        self.seed = seed;
        self
    }

    /// Sets the run's start time (Unix ms) that flows see as `ctx.started_at_ms`.
    #[must_use]
    pub fn with_started_at_ms(mut self, started_at_ms: i64) -> RunContext {
        self.started_at_ms = started_at_ms;
        self
    }

    /// Attaches app data for API modules (one value per type; a second value of the same type
    /// replaces the first).
    #[must_use]
    pub fn with_data<T: Any + Send + Sync>(mut self, data: T) -> RunContext {
        Arc::make_mut(&mut self.data).insert(TypeId::of::<T>(), Arc::new(data));
        self
    }

    pub(crate) fn with_flow(mut self, name: &str, version: &str) -> RunContext {
        self.flow = Some((name.into(), version.into()));
        self
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The flow's name and version, once the runner has started it.
    pub fn flow(&self) -> Option<(&str, &str)> {
        self.flow.as_ref().map(|(n, v)| (&**n, &**v))
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// App data of type `T`, if attached.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.data.get(&TypeId::of::<T>())?.downcast_ref::<T>()
    }

    /// A handle the caller keeps to cancel the run from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            stop: self.stop.clone(),
        }
    }

    /// Why the run is stopped, if it is (limits, cancellation, watchdog, finished).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.get()
    }

    /// Time left before the run's wall deadline; `None` before the run has started. API
    /// functions that block (waiting for a client's confirmation) bound their wait with it.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .get()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Refuses if the run is stopped or finished. For API functions without effects.
    pub fn check_active(&self, api: &'static str) -> mlua::Result<()> {
        match self.stop.get() {
            Some(reason) => Err(mlua::Error::external(ApiError::RunStopped { api, reason })),
            None => Ok(()),
        }
    }

    /// The first line of an API function with effects: refuses if the run is stopped (limits,
    /// cancellation, watchdog) or finished, and refuses a call into `api` while another call
    /// into `api` is still in progress on this run (a Lua callback calling back into the API).
    /// Hold the returned guard until the function returns.
    pub fn enter(&self, api: &'static str) -> mlua::Result<ApiCall> {
        self.check_active(api)?;
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.contains(&api) {
            return Err(mlua::Error::external(ApiError::Reentrant { api }));
        }
        active.push(api);
        Ok(ApiCall {
            api,
            active: self.active.clone(),
        })
    }

    pub(crate) fn stop_flag(&self) -> Arc<StopFlag> {
        self.stop.clone()
    }

    pub(crate) fn set_deadline(&self, deadline: Instant) {
        // A context runs once; a second run keeps the first deadline (and is refused anyway).
        let _ = self.deadline.set(deadline);
    }
}

/// Cancels a run from another thread: the hook stops Lua code at its next tick, API calls are
/// refused, and the run's outcome is [`crate::ScriptError::Cancelled`]; a run stuck in a call
/// past the watchdog grace is given up on ([`RunContext::on_given_up`]).
#[derive(Debug, Clone)]
pub struct CancelHandle {
    stop: Arc<StopFlag>,
}

impl CancelHandle {
    /// Requests cancellation; returns `false` if the run had already stopped or finished.
    pub fn cancel(&self) -> bool {
        let cancelled = self.stop.try_trip(StopReason::Cancelled).is_ok();
        if cancelled {
            crate::watchdog::poke();
        }
        cancelled
    }
}

/// An API call in progress (see [`RunContext::enter`]); leaving it on drop.
#[derive(Debug)]
pub struct ApiCall {
    api: &'static str,
    active: Arc<Mutex<Vec<&'static str>>>,
}

impl Drop for ApiCall {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = active.iter().rposition(|a| *a == self.api) {
            active.remove(at);
        }
    }
}

/// An API call refused for reasons of the run, not of its arguments.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{api}: refused, the run is stopped ({reason})")]
    RunStopped {
        api: &'static str,
        reason: StopReason,
    },
    #[error("{api}: re-entrant call refused (called from inside one of its own callbacks)")]
    Reentrant { api: &'static str },
}

/// An API argument a flow got wrong. Amount messages reuse the zh-CN wording of `cardd_api`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArgError {
    #[error("{what}: expected {expected}, got {got}")]
    WrongType {
        what: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error(
        "{what}: {value} is a floating-point number; amounts are integer fen (100 = 1.00 元) \
         or decimal yuan strings (\"1.00\")"
    )]
    FloatAmount { what: String, value: f64 },
    #[error("{what}: 金额不能为负数 ({value} fen)")]
    NegativeAmount { what: String, value: i64 },
    #[error("{what}: 金额不能为零")]
    ZeroAmount { what: String },
    #[error("{what}: 金额过大 ({value} fen; the limit is {max} fen)")]
    AmountTooLarge { what: String, value: i64, max: i64 },
    #[error("{what}: {source}")]
    Money { what: String, source: MoneyError },
    #[error("{what}: string of {len} bytes is over the limit of {max} bytes")]
    TooLong {
        what: String,
        len: usize,
        max: usize,
    },
    #[error("{what}: not valid UTF-8 text")]
    NotUtf8 { what: String },
    #[error("{what}: {reason}")]
    Convert { what: String, reason: String },
}

impl ArgError {
    fn into_lua(self) -> mlua::Error {
        mlua::Error::external(self)
    }
}

/// Longest amount string accepted, in bytes ("10000000.00" is 11).
const AMOUNT_TEXT_BYTES_MAX: usize = 32;

/// An amount argument in fen: a Lua **integer** is fen (`100` = 1.00 元); a **string** is a
/// decimal yuan amount (`"1.00"`) parsed by `cardd_api::Fen::parse_yuan`. Floats (`0.1`, `2^63`,
/// even `100.0`), negative amounts and amounts over `cardd_api::money::AMOUNT_FEN_MAX` are
/// refused. Zero is allowed; see [`positive_fen_arg`].
pub fn fen_arg(value: Value) -> mlua::Result<i64> {
    fen_arg_named("amount", value)
}

/// [`fen_arg`] that also refuses zero.
pub fn positive_fen_arg(value: Value) -> mlua::Result<i64> {
    match fen_arg_named("amount", value)? {
        0 => Err(ArgError::ZeroAmount {
            what: "amount".to_owned(),
        }
        .into_lua()),
        fen => Ok(fen),
    }
}

/// [`fen_arg`] with the argument's name in messages.
pub fn fen_arg_named(what: &str, value: Value) -> mlua::Result<i64> {
    match value {
        Value::Integer(fen) if fen < 0 => Err(ArgError::NegativeAmount {
            what: what.to_owned(),
            value: fen,
        }
        .into_lua()),
        Value::Integer(fen) if fen > AMOUNT_FEN_MAX => Err(ArgError::AmountTooLarge {
            what: what.to_owned(),
            value: fen,
            max: AMOUNT_FEN_MAX,
        }
        .into_lua()),
        Value::Integer(fen) => Ok(fen),
        Value::Number(value) => Err(ArgError::FloatAmount {
            what: what.to_owned(),
            value,
        }
        .into_lua()),
        Value::String(text) => {
            let bytes = text.as_bytes();
            if bytes.len() > AMOUNT_TEXT_BYTES_MAX {
                return Err(ArgError::TooLong {
                    what: what.to_owned(),
                    len: bytes.len(),
                    max: AMOUNT_TEXT_BYTES_MAX,
                }
                .into_lua());
            }
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                ArgError::NotUtf8 {
                    what: what.to_owned(),
                }
                .into_lua()
            })?;
            Fen::parse_yuan(text).map(|Fen(fen)| fen).map_err(|source| {
                ArgError::Money {
                    what: what.to_owned(),
                    source,
                }
                .into_lua()
            })
        }
        other => Err(ArgError::WrongType {
            what: what.to_owned(),
            expected: "an amount (integer fen or decimal yuan string)",
            got: other.type_name(),
        }
        .into_lua()),
    }
}

/// A string argument: a Lua string (numbers are not coerced), valid UTF-8, at most `bytes_max`
/// bytes and at most the run's `string_bytes_max`.
pub fn str_arg(lua: &Lua, what: &str, value: Value, bytes_max: usize) -> mlua::Result<String> {
    let max = bytes_max.min(
        lua.app_data_ref::<Limits>()
            .map_or(usize::MAX, |l| l.string_bytes_max),
    );
    let Value::String(text) = value else {
        return Err(ArgError::WrongType {
            what: what.to_owned(),
            expected: "a string",
            got: value.type_name(),
        }
        .into_lua());
    };
    let bytes = text.as_bytes();
    if bytes.len() > max {
        return Err(ArgError::TooLong {
            what: what.to_owned(),
            len: bytes.len(),
            max,
        }
        .into_lua());
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ArgError::NotUtf8 {
            what: what.to_owned(),
        }
        .into_lua()
    })
}

/// A table (or any value) argument as JSON, bounded by the run's limits (`string_bytes_max`,
/// `result_bytes_max`, depth 32). Non-integer numbers are refused, so money cannot arrive as a
/// float.
pub fn json_arg(lua: &Lua, what: &str, value: &Value) -> mlua::Result<serde_json::Value> {
    let limits = json_limits(lua);
    lua_to_json(lua, value, &limits).map_err(|e| {
        ArgError::Convert {
            what: what.to_owned(),
            reason: e.to_string(),
        }
        .into_lua()
    })
}

/// A JSON value as a Lua value for a flow (objects become tables, arrays sequences, null nil),
/// bounded like [`json_arg`]; non-integer numbers are refused.
pub fn json_value(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    json_to_lua(lua, value, &json_limits(lua))
}

fn json_limits(lua: &Lua) -> JsonLimits {
    match lua.app_data_ref::<Limits>() {
        Some(limits) => JsonLimits::from_limits(&limits),
        None => JsonLimits::from_limits(&Limits::default()),
    }
}

/// FNV-1a, 64 bits: a stable seed from the run id (not for security).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_refuses_reentry_and_stopped_runs() {
        let ctx = RunContext::new("r1");
        let first = ctx.enter("card");
        assert!(first.is_ok());
        assert!(ctx.enter("card").is_err());
        assert!(ctx.enter("log").is_ok());
        drop(first);
        assert!(ctx.enter("card").is_ok());
        assert!(ctx.cancel_handle().cancel());
        assert!(ctx.enter("card").is_err());
        assert!(!ctx.cancel_handle().cancel());
    }

    #[test]
    fn fen_arg_accepts_integers_and_decimal_strings_only() {
        let lua = Lua::new();
        let s = |t: &str| Value::String(lua.create_string(t).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(fen_arg(Value::Integer(100)).ok(), Some(100));
        assert_eq!(fen_arg(s("1.00")).ok(), Some(100));
        assert_eq!(fen_arg(s("0.01")).ok(), Some(1));
        for bad in [
            Value::Integer(-1),
            Value::Number(0.1),
            Value::Number(100.0),
            Value::Number(2f64.powi(63)),
            Value::Integer(i64::MAX),
            Value::Boolean(true),
            s("1e3"),
            s("-5"),
            s("10.001"),
            s("abc"),
        ] {
            assert!(fen_arg(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(positive_fen_arg(Value::Integer(0)).is_err());
    }

    #[test]
    fn data_is_typed() {
        #[derive(Debug, PartialEq)]
        struct Teller(&'static str);
        let ctx = RunContext::new("r").with_data(Teller("张三"));
        assert_eq!(ctx.data::<Teller>(), Some(&Teller("张三")));
        assert_eq!(ctx.data::<u32>(), None);
        assert_eq!(
            RunContext::new("same").seed(),
            RunContext::new("same").seed()
        );
    }
}
