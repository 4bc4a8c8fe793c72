//! A fresh, limited Lua state per run, and how it runs under its limits and the watchdog.
//!
//! Why this exists: `mlua::Lua::new()` is not a sandbox (it loads `io`, `os` and `package`), Lua
//! bytecode escapes the VM, `pcall` catches mlua's limit errors, and instruction hooks do not run
//! inside C functions (`string.rep`, pattern matching, `table.move`). The recipe, checked in
//! mlua 0.11's source and in style-and-reliability.md §B6:
//!
//! - **Libraries.** Only `table`, `string`, `math`, `utf8` and `coroutine` plus an allow-list of
//!   base functions. Reading a removed name (`os`, `io`, `load`, `require`, `debug`, `print`,
//!   `collectgarbage`, `string.dump`, …) raises a [`SandboxRefusal`], so the error says why.
//!   Source is loaded in text mode only; a binary chunk is refused before Lua sees it. The one
//!   binary load is the host's own: a checked flow's bytecode, compiled by this crate from its
//!   source ([`crate::FlowDefinition::load_into`]); Lua code has no way to compile, dump or load bytecode.
//! - **Determinism.** `math.random` is seeded from the run's seed ([`crate::RunContext::seed`])
//!   and `math.randomseed` is removed, so a replayed run draws the same numbers. There is no
//!   clock in the sandbox; the run's start time is `ctx.started_at_ms`.
//! - **Budgets a script cannot escape.** One global count hook fires every
//!   [`HOOK_INTERVAL_INSTRUCTIONS`] instructions in every coroutine (Lua copies the hook into
//!   threads it creates) and checks, in order: a stop already recorded, the instruction budget,
//!   the wall-clock deadline and the call depth. The first stop reason is recorded in a shared
//!   flag and every later tick raises it again (sticky). `pcall`, `xpcall`, `coroutine.resume`,
//!   `coroutine.wrap` and `coroutine.close` are wrapped: if a stop is recorded, or the caught
//!   error is Lua's out-of-memory error, the error is raised again instead of being returned.
//! - **Lua code that runs without hooks is not allowed to exist.** Lua disables hooks while it
//!   runs `__gc` finalizers and while it runs an `xpcall` message handler for an error raised by
//!   a hook. `setmetatable` refuses metatables with `__gc`, and the `xpcall` wrapper skips the
//!   script's handler once a stop is recorded.
//! - **C functions are bounded by their inputs.** `string.rep` refuses results over
//!   `string_bytes_max` (and counts over `c_loop_items_max`); `find`/`match`/`gmatch`/`gsub`
//!   refuse subjects over `pattern_subject_bytes_max`, patterns over `pattern_bytes_max`, and
//!   pattern/subject pairs whose worst-case backtracking estimate exceeds `pattern_steps_max`;
//!   `table.move` refuses ranges over `c_loop_items_max`; the table functions that loop up to
//!   `#t` refuse tables with a `__len` metamethod (which could claim 2^62 elements).
//! - **Watchdog.** [`Sandbox::run`] runs on the calling thread; one shared timer thread
//!   ([`crate::watchdog`]) watches every run. If the wall deadline (+ grace) passes and the run
//!   has not returned (stuck in C or in a blocking API call), the run's stop flag is set so its
//!   later API calls are refused and its outcome is [`ScriptError::Watchdog`], and the run's
//!   owner is told at once through [`RunContext::on_given_up`].
//!
//! Known gaps, by Lua's design:
//!
//! - Lua's count hook counts per coroutine and starts afresh in each new one, so code run in
//!   short-lived coroutines (under [`HOOK_INTERVAL_INSTRUCTIONS`] each) is counted only through
//!   the thread that creates them: the instruction budget is then a lower bound, while the
//!   wall-clock limit, the memory limit and the call depth still hold.
//! - A `__close` handler that raises its own error during unwinding replaces an out-of-memory
//!   error, so that one catch is not detected (the memory limit still holds for every
//!   allocation, and every other stop is sticky).
//! - An API function written in Rust that calls back into Lua and swallows the error would
//!   swallow a stop too; that is why the outcome of a run is decided by the stop flag, not by
//!   what the script returned, and why API functions start with `ctx.enter(...)`.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use mlua::{ChunkMode, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

use crate::error::{LimitFigures, ScriptError};
pub(crate) use crate::limits::{BadReturnError, StopFlag};
pub use crate::limits::{Limits, SandboxRefusal, StopReason, Stopped, FLOW_THREAD_STACK_BYTES};
use crate::module::RunContext;

/// The count hook fires every this many VM instructions. At roughly 100–300 M instructions per
/// second this checks the deadline every few microseconds, far inside the 100 ms allowed.
pub const HOOK_INTERVAL_INSTRUCTIONS: u32 = 1000;

/// Base functions a flow keeps; everything else in `_G` is removed.
pub(crate) const GLOBALS_KEPT: &[&str] = &[
    "assert",
    "error",
    "getmetatable",
    "ipairs",
    "next",
    "pairs",
    "pcall",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "select",
    "setmetatable",
    "tonumber",
    "tostring",
    "type",
    "xpcall",
    "_G",
    "_VERSION",
    "coroutine",
    "math",
    "string",
    "table",
    "utf8",
];

/// Names whose reading is refused with a reason, rather than quietly being `nil`.
pub(crate) const GLOBALS_REFUSED: &[(&str, &str)] = &[
    ("os", "no host access from flows"),
    ("io", "no file access from flows"),
    ("package", "no module loading from flows"),
    ("require", "no module loading from flows"),
    ("debug", "the debug library is not available"),
    ("load", "flows cannot compile code at run time"),
    ("loadstring", "flows cannot compile code at run time"),
    ("dofile", "no file access from flows"),
    ("loadfile", "no file access from flows"),
    (
        "collectgarbage",
        "the garbage collector is not under script control",
    ),
    ("print", "use log.info(...)"),
    ("warn", "use log.warn(...)"),
    ("getfenv", "not available"),
    ("setfenv", "not available"),
    ("module", "no module loading from flows"),
    ("newproxy", "not available"),
    ("ffi", "not available"),
    ("jit", "not available"),
];

/// The Lua side of the sandbox: wrappers that keep stops uncatchable and bound C functions.
/// Runs once per state, before any flow code; captures the originals as upvalues.
const PRELUDE: &str = r#"
local guard, stopped, refuse_gc, check_rep, check_match, check_table, check_move = ...
local error, type, rawget = error, type, rawget
local raw_pcall, raw_xpcall, raw_setmetatable = pcall, xpcall, setmetatable
local co_create, co_resume, co_close = coroutine.create, coroutine.resume, coroutine.close

local function pass(ok, ...)
  guard(ok, (...))
  return ok, ...
end
pcall = function(f, ...) return pass(raw_pcall(f, ...)) end
-- Lua calls the message handler with hooks disabled when the error was raised by a hook, so
-- the handler is skipped once the run is stopped.
xpcall = function(f, handler, ...)
  local function h(e)
    if stopped() then return e end
    return handler(e)
  end
  return pass(raw_xpcall(f, h, ...))
end
-- Lua runs __gc finalizers with hooks disabled (lgc.c GCTM), so no budget could stop one.
-- An object is marked for finalization only if its metatable has __gc when it is set.
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then refuse_gc() end
  return raw_setmetatable(t, mt)
end
coroutine.resume = function(co, ...) return pass(co_resume(co, ...)) end
coroutine.close = function(co) return pass(co_close(co)) end
local function wrap_pass(co, ok, ...)
  guard(ok, (...))
  if not ok then
    local err = (...)
    pass(co_close(co))
    error(err, 0)
  end
  return ...
end
coroutine.wrap = function(f)
  local co = co_create(f)
  return function(...) return wrap_pass(co, co_resume(co, ...)) end
end

local s_rep, s_find, s_match, s_gmatch, s_gsub =
  string.rep, string.find, string.match, string.gmatch, string.gsub
string.rep = function(s, n, sep) check_rep(s, n, sep) return s_rep(s, n, sep) end
string.find = function(s, p, init, plain)
  check_match("string.find", s, p, plain) return s_find(s, p, init, plain)
end
string.match = function(s, p, init) check_match("string.match", s, p) return s_match(s, p, init) end
string.gmatch = function(s, p, init)
  check_match("string.gmatch", s, p) return s_gmatch(s, p, init)
end
string.gsub = function(s, p, repl, n) check_match("string.gsub", s, p) return s_gsub(s, p, repl, n) end

local t_insert, t_remove, t_concat, t_unpack, t_sort, t_move =
  table.insert, table.remove, table.concat, table.unpack, table.sort, table.move
table.insert = function(t, ...) check_table("table.insert", t) return t_insert(t, ...) end
table.remove = function(t, ...) check_table("table.remove", t) return t_remove(t, ...) end
table.concat = function(t, sep, i, j)
  check_table("table.concat", t, i, j) return t_concat(t, sep, i, j)
end
table.unpack = function(t, i, j) check_table("table.unpack", t, i, j) return t_unpack(t, i, j) end
table.sort = function(t, ...) check_table("table.sort", t) return t_sort(t, ...) end
table.move = function(a1, f, e, t, a2) check_move(f, e) return t_move(a1, f, e, t, a2) end
"#;

/// A fresh Lua state with the sandbox applied, not yet running.
pub struct Sandbox {
    lua: Lua,
    limits: Limits,
    ctx: RunContext,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .field("run_id", &self.ctx.run_id())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds a fresh state for one run. The state shares the run's stop flag with `ctx`, and
    /// `ctx` and `limits` are stored as app data for API helpers
    /// ([`crate::module::str_arg`] and friends).
    pub fn new(limits: &Limits, ctx: &RunContext) -> Result<Sandbox, ScriptError> {
        Prebuilt::build(limits)?.bind(ctx)
    }

    /// The state, for registering API modules before [`Sandbox::run`].
    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles text source. A binary chunk (`\x1bLua…`) is refused before Lua sees it, and the
    /// chunk is loaded in text mode regardless. Nothing runs.
    pub fn load(&self, chunk_name: &str, source: &str) -> Result<Function, ScriptError> {
        if source.as_bytes().first() == Some(&0x1b) {
            return Err(ScriptError::Refused {
                reason: format!(
                    "{chunk_name}: binary (precompiled) Lua chunks are not accepted; load source text"
                ),
            });
        }
        self.lua
            .load(source)
            .set_name(format!("={chunk_name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| LimitFigures::from(&self.limits).classify(chunk_name, &e))
    }

    /// Loads bytecode this crate compiled from checked source, in binary mode
    /// ([`crate::FlowDefinition::load_into`]). Lua code can never reach this: `load` and
    /// `string.dump` are refused inside the sandbox, and [`Sandbox::load`] refuses binary text.
    pub(crate) fn load_bytecode(
        &self,
        chunk_name: &str,
        bytecode: &[u8],
    ) -> Result<Function, ScriptError> {
        load_bytecode(&self.lua, &self.limits, chunk_name, bytecode)
    }

    /// Runs `f` on the calling thread under the instruction/wall/depth hook, watched by the
    /// shared watchdog ([`crate::watchdog`]). However `f` ends, a stop recorded for the run
    /// decides the outcome. If the watchdog gives up on the run (stuck in C or in a blocking API
    /// call past the deadline plus grace, or past the grace after a cancellation), the run's
    /// give-up callback ([`RunContext::on_given_up`]) is told at once; this call still returns
    /// only when `f` does, with the watchdog's verdict.
    ///
    /// A run needs a stack of [`FLOW_THREAD_STACK_BYTES`] (Lua's C recursion): called from a
    /// [`crate::FlowThreads`] thread it runs right there; called from any other thread (a test,
    /// a tool) it runs on a scoped thread with that stack, which this call joins.
    pub fn run<T, F>(self, f: F) -> Result<T, ScriptError>
    where
        T: Send,
        F: FnOnce(&Lua) -> mlua::Result<T> + Send,
    {
        if crate::threads::on_flow_thread() {
            return self.run_here(f);
        }
        let name = format!("cardd-flow-{}", self.ctx.run_id());
        thread::scope(|scope| {
            let spawned = thread::Builder::new()
                .name(name)
                .stack_size(FLOW_THREAD_STACK_BYTES)
                .spawn_scoped(scope, move || self.run_here(f));
            match spawned {
                Ok(handle) => handle.join().unwrap_or_else(|panic| {
                    Err(ScriptError::Internal {
                        reason: format!("the flow panicked: {}", panic_text(&*panic)),
                    })
                }),
                Err(e) => Err(ScriptError::Internal {
                    reason: format!("cannot start a flow thread: {e}"),
                }),
            }
        })
    }

    fn run_here<T, F>(self, f: F) -> Result<T, ScriptError>
    where
        F: FnOnce(&Lua) -> mlua::Result<T>,
    {
        let Sandbox { lua, limits, ctx } = self;
        let figures = LimitFigures::from(&limits);
        let stop = ctx.stop_flag();
        if let Some(reason) = stop.get() {
            return Err(figures.stop_error(reason));
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(limits.wall_ms_max);
        ctx.set_deadline(deadline);
        install_hook(&lua, &limits, stop.clone(), deadline).map_err(|e| ScriptError::Internal {
            reason: format!("cannot install the hook: {e}"),
        })?;
        let watch = crate::watchdog::watch(
            stop.clone(),
            deadline,
            Duration::from_millis(limits.watchdog_grace_ms),
            figures,
            ctx.take_given_up(),
        )?;
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&lua)));
        drop(watch);
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(figures.classify("", &e)),
            Err(panic) => Err(ScriptError::Internal {
                reason: format!("the flow panicked: {}", panic_text(&panic)),
            }),
        };
        let result = match stop.get() {
            Some(reason) if reason != StopReason::Finished => Err(figures.stop_error(reason)),
            _ => result,
        };
        stop.trip(StopReason::Finished);
        // Dropping the state runs finalizers; the hook refuses them (Finished).
        drop(lua);
        result
    }
}

/// The run's stop flag, filled in once when a pre-built state is bound to its run. Before that
/// no flow code has run in the state, so there is nothing to stop.
type RunStop = Arc<OnceLock<Arc<StopFlag>>>;

/// A sandboxed state built ahead of its run: libraries trimmed, refusals and the prelude
/// installed, limits stored, memory limit set, and optionally a checked flow's chunk loaded
/// (not run). [`Prebuilt::bind`] gives it to exactly one run: the run's stop flag, its
/// `math.random` seed and its [`RunContext`] are bound then, API modules are registered after
/// that, and the instruction count and wall clock start with [`Sandbox::run`]. Nothing in a
/// pre-built state has run flow code, so it carries nothing from one run into another.
pub(crate) struct Prebuilt {
    lua: Lua,
    limits: Limits,
    stop: RunStop,
    /// `math.randomseed`, taken out of the state's `math` table; called once by `bind`.
    randomseed: Function,
    chunk: Option<Function>,
}

impl Prebuilt {
    /// A state with the sandbox applied and no run bound.
    pub(crate) fn build(limits: &Limits) -> Result<Prebuilt, ScriptError> {
        let internal = |e: mlua::Error| ScriptError::Internal {
            reason: format!("cannot build the sandbox: {e}"),
        };
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
        let lua =
            Lua::new_with(libs, LuaOptions::new().catch_rust_panics(false)).map_err(internal)?;
        let stop = RunStop::default();
        let randomseed = setup(&lua, limits, &stop).map_err(internal)?;
        lua.set_app_data(limits.clone());
        lua.set_memory_limit(limits.memory_bytes_max)
            .map_err(internal)?;
        Ok(Prebuilt {
            lua,
            limits: limits.clone(),
            stop,
            randomseed,
            chunk: None,
        })
    }

    /// A state with a checked flow's compiled chunk loaded in binary mode (nothing run).
    pub(crate) fn build_for(
        chunk_name: &str,
        bytecode: &[u8],
        limits: &Limits,
    ) -> Result<Prebuilt, ScriptError> {
        let mut prebuilt = Prebuilt::build(limits)?;
        prebuilt.chunk = Some(load_bytecode(&prebuilt.lua, limits, chunk_name, bytecode)?);
        Ok(prebuilt)
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Binds the state to its one run: the stop flag the prelude's wrappers read, the seed of
    /// `math.random`, and `ctx` as app data. Returns the sandbox and the pre-loaded chunk, if any.
    pub(crate) fn bind(self, ctx: &RunContext) -> Result<Sandbox, ScriptError> {
        self.bind_with_chunk(ctx).map(|(sandbox, _)| sandbox)
    }

    pub(crate) fn bind_with_chunk(
        self,
        ctx: &RunContext,
    ) -> Result<(Sandbox, Option<Function>), ScriptError> {
        let Prebuilt {
            lua,
            limits,
            stop,
            randomseed,
            chunk,
        } = self;
        let internal = |reason: String| ScriptError::Internal { reason };
        stop.set(ctx.stop_flag())
            .map_err(|_| internal("a Lua state serves one run only".to_owned()))?;
        // Two halves so the whole 64-bit seed is used; `as` keeps the bits on purpose.
        randomseed
            .call::<()>(((ctx.seed() >> 32) as i64, (ctx.seed() & 0xffff_ffff) as i64))
            .map_err(|e| internal(format!("cannot seed math.random: {e}")))?;
        drop(randomseed);
        lua.set_app_data(ctx.clone());
        Ok((
            Sandbox {
                lua,
                limits,
                ctx: ctx.clone(),
            },
            chunk,
        ))
    }
}

/// Loads bytecode this crate compiled from checked source, in binary mode only.
fn load_bytecode(
    lua: &Lua,
    limits: &Limits,
    chunk_name: &str,
    bytecode: &[u8],
) -> Result<Function, ScriptError> {
    lua.load(bytecode)
        .set_name(format!("={chunk_name}"))
        .set_mode(ChunkMode::Binary)
        .into_function()
        .map_err(|e| LimitFigures::from(limits).classify(chunk_name, &e))
}

/// The caller's side: wait for the result, the watchdog deadline, or a cancellation.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic".to_owned()
    }
}

/// The one global hook: sticky stop, instructions, deadline, call depth.
fn install_hook(
    lua: &Lua,
    limits: &Limits,
    stop: Arc<StopFlag>,
    deadline: Instant,
) -> mlua::Result<()> {
    let instructions_max = limits.instructions_max;
    let depth_level = usize::try_from(limits.call_depth_max).unwrap_or(usize::MAX);
    let used = AtomicU64::new(0);
    let triggers = HookTriggers::new().every_nth_instruction(HOOK_INTERVAL_INSTRUCTIONS);
    lua.set_global_hook(triggers, move |lua, _debug| {
        if let Some(reason) = stop.get() {
            return Err(stop.error(reason));
        }
        let total = used.fetch_add(u64::from(HOOK_INTERVAL_INSTRUCTIONS), Ordering::Relaxed)
            + u64::from(HOOK_INTERVAL_INSTRUCTIONS);
        if total > instructions_max {
            return Err(stop.error(StopReason::Instructions));
        }
        if Instant::now() >= deadline {
            return Err(stop.error(StopReason::WallTime));
        }
        // lua_getstack walks at most `depth_level` frames, and stops early on shallow stacks.
        if lua.inspect_stack(depth_level, |_| ()).is_some() {
            return Err(stop.error(StopReason::CallDepth));
        }
        Ok(VmState::Continue)
    })
}

/// Strips the globals, installs refusals and runs the prelude. Returns `math.randomseed`, removed
/// from the state, for [`Prebuilt::bind`] to seed the run's numbers with.
fn setup(lua: &Lua, limits: &Limits, stop: &RunStop) -> mlua::Result<Function> {
    let globals = lua.globals();
    let mut remove = Vec::new();
    for pair in globals.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let keep = match &key {
            Value::String(s) => GLOBALS_KEPT.iter().any(|k| s.as_bytes() == k.as_bytes()),
            _ => false,
        };
        if !keep {
            remove.push(key);
        }
    }
    for key in remove {
        globals.raw_set(key, Value::Nil)?;
    }

    // Deterministic random numbers (seeded when the state is bound to its run), and no way
    // for the flow to reseed.
    let math: Table = globals.raw_get("math")?;
    let randomseed: Function = math.raw_get("randomseed")?;
    math.raw_set("randomseed", Value::Nil)?;

    refuse_names(lua, &globals, "", GLOBALS_REFUSED)?;
    let string: Table = globals.raw_get("string")?;
    string.raw_set("dump", Value::Nil)?;
    refuse_names(
        lua,
        &string,
        "string.",
        &[("dump", "bytecode is not available to flows")],
    )?;
    refuse_names(
        lua,
        &math,
        "math.",
        &[(
            "randomseed",
            "math.random is seeded per run so runs are reproducible",
        )],
    )?;

    let prelude = lua
        .load(PRELUDE)
        .set_name("=sandbox-prelude")
        .set_mode(ChunkMode::Text)
        .into_function()?;
    prelude.call::<()>((
        guard_fn(lua, stop)?,
        stopped_fn(lua, stop)?,
        lua.create_function(|_, ()| -> mlua::Result<()> {
            Err(SandboxRefusal::new(
                "setmetatable",
                "__gc finalizers are not available to flows (Lua runs them without hooks, so no \
                 budget could stop one)",
            )
            .into_lua())
        })?,
        check_rep_fn(lua, limits)?,
        check_match_fn(lua, limits)?,
        check_table_fn(lua, limits)?,
        check_move_fn(lua, limits)?,
    ))?;
    Ok(randomseed)
}

/// Gives `table` a metatable whose `__index` refuses the listed names with their reason.
fn refuse_names(
    lua: &Lua,
    table: &Table,
    prefix: &'static str,
    names: &'static [(&'static str, &'static str)],
) -> mlua::Result<()> {
    let index = lua.create_function(move |_, (_t, key): (Value, Value)| {
        if let Value::String(k) = &key {
            let bytes = k.as_bytes();
            if let Some((name, why)) = names.iter().find(|(n, _)| n.as_bytes() == &bytes[..]) {
                return Err(SandboxRefusal::new(format!("{prefix}{name}"), *why).into_lua());
            }
        }
        Ok(Value::Nil)
    })?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", index)?;
    table.set_metatable(Some(meta))
}

/// `guard(ok, err)`: re-raises a recorded stop, and turns a caught out-of-memory error into a
/// recorded (sticky) memory stop.
fn guard_fn(lua: &Lua, stop: &RunStop) -> mlua::Result<Function> {
    let stop = stop.clone();
    lua.create_function(move |_, (ok, err): (bool, Value)| {
        let Some(stop) = stop.get() else {
            return Ok(()); // not bound to a run yet: no flow code has run
        };
        if let Some(reason) = stop.get() {
            return Err(stop.error(reason));
        }
        if !ok && value_is_memory_error(&err) {
            return Err(stop.error(StopReason::Memory));
        }
        Ok(())
    })
}

/// `stopped()`: whether a stop is recorded for the run.
fn stopped_fn(lua: &Lua, stop: &RunStop) -> mlua::Result<Function> {
    let stop = stop.clone();
    lua.create_function(move |_, ()| Ok(stop.get().and_then(|s| s.get()).is_some()))
}

/// Lua's own out-of-memory message (`MEMERRMSG`), which is what `pcall` returns for it.
const LUA_MEMORY_ERROR: &[u8] = b"not enough memory";

fn value_is_memory_error(value: &Value) -> bool {
    match value {
        Value::String(s) => s.as_bytes() == LUA_MEMORY_ERROR,
        Value::Error(e) => error_is_memory(e),
        _ => false,
    }
}

fn error_is_memory(err: &mlua::Error) -> bool {
    let mut current = err;
    loop {
        match current {
            mlua::Error::MemoryError(_) => return true,
            mlua::Error::CallbackError { cause, .. }
            | mlua::Error::WithContext { cause, .. }
            | mlua::Error::BadArgument { cause, .. } => current = cause,
            other => {
                return other
                    .downcast_ref::<Stopped>()
                    .is_some_and(|s| s.reason == StopReason::Memory)
            }
        }
    }
}

/// Length a value has once Lua coerces it to a string, when it is a string or a number.
fn coerced_len(value: &Value) -> Option<usize> {
    match value {
        Value::String(s) => Some(s.as_bytes().len()),
        // "%.14g" of a float or an i64 in decimal: at most 24 bytes.
        Value::Integer(_) | Value::Number(_) => Some(24),
        _ => None,
    }
}

/// A count argument as Lua's `luaL_checkinteger` would read it: numbers, and strings that
/// convert to numbers (`"1e15"`, `"0x10"`).
fn as_count(lua: &Lua, value: &Value) -> Option<f64> {
    match value {
        // `as` on purpose: only compared with a bound.
        Value::Integer(n) => Some(*n as f64),
        Value::Number(n) => Some(*n),
        Value::String(_) => lua.coerce_number(value.clone()).ok().flatten(),
        _ => None,
    }
}

/// `check_rep(s, n, sep)`: the result must fit `string_bytes_max`, the count
/// `c_loop_items_max` (an empty string repeated 2^62 times is a C loop the hook never sees).
fn check_rep_fn(lua: &Lua, limits: &Limits) -> mlua::Result<Function> {
    let string_bytes_max = limits.string_bytes_max;
    let items_max = limits.c_loop_items_max;
    lua.create_function(move |lua, (s, n, sep): (Value, Value, Value)| {
        let (Some(len), Some(count)) = (coerced_len(&s), as_count(lua, &n)) else {
            return Ok(()); // string.rep raises its own type error
        };
        if count <= 0.0 {
            return Ok(());
        }
        let sep_len = coerced_len(&sep).unwrap_or(0);
        // f64: exact enough for a bound and cannot overflow.
        let total = len as f64 * count + sep_len as f64 * (count - 1.0);
        if count > items_max as f64 {
            return Err(SandboxRefusal::new(
                "string.rep",
                format!("count {count} is over the limit of {items_max}"),
            )
            .into_lua());
        }
        if total > string_bytes_max as f64 {
            return Err(SandboxRefusal::new(
                "string.rep",
                format!("result of {total} bytes is over the limit of {string_bytes_max} bytes"),
            )
            .into_lua());
        }
        Ok(())
    })
}

/// `check_match(name, s, p, plain)`: subject, pattern and worst-case cost bounds.
fn check_match_fn(lua: &Lua, limits: &Limits) -> mlua::Result<Function> {
    let subject_max = limits.pattern_subject_bytes_max;
    let pattern_max = limits.pattern_bytes_max;
    let steps_max = limits.pattern_steps_max;
    lua.create_function(
        move |_, (name, s, p, plain): (String, Value, Value, Value)| {
            let (Some(subject_len), Some(pattern_len)) = (coerced_len(&s), coerced_len(&p)) else {
                return Ok(()); // the string function raises its own type error
            };
            if subject_len > subject_max {
                return Err(SandboxRefusal::new(
                    name,
                    format!(
                        "subject of {subject_len} bytes is over the limit of {subject_max} bytes"
                    ),
                )
                .into_lua());
            }
            if pattern_len > pattern_max {
                return Err(SandboxRefusal::new(
                    name,
                    format!(
                        "pattern of {pattern_len} bytes is over the limit of {pattern_max} bytes"
                    ),
                )
                .into_lua());
            }
            let plain = !matches!(plain, Value::Nil | Value::Boolean(false));
            let Value::String(pattern) = &p else {
                return Ok(()); // a number pattern has no special characters
            };
            if plain {
                return Ok(());
            }
            let anchor_allowed = name != "string.gmatch";
            let steps = pattern_steps_estimate(subject_len, &pattern.as_bytes(), anchor_allowed);
            if steps > steps_max as f64 {
                return Err(SandboxRefusal::new(
                    name,
                    format!(
                        "pattern {:?} on a {subject_len}-byte subject may backtrack for ~{steps:.0e} \
                         steps (limit {steps_max}); anchor it with ^, use fewer repetitions \
                         (* + -), or shorten the subject",
                        pattern.to_string_lossy()
                    ),
                )
                .into_lua());
            }
            Ok(())
        },
    )
}

/// `check_table(name, t, i, j)`: refuses tables with a `__len` metamethod (raw metatable, so a
/// `__metatable` field cannot hide it), because a lying `__len` turns the library's loops into
/// C loops of any length; and refuses explicit `i..j` ranges (`concat`, `unpack`) over
/// `c_loop_items_max`.
fn check_table_fn(lua: &Lua, limits: &Limits) -> mlua::Result<Function> {
    let items_max = limits.c_loop_items_max;
    lua.create_function(move |lua, (name, t, i, j): (String, Value, Value, Value)| {
        if let Some(last) = as_count(lua, &j) {
            let first = as_count(lua, &i).unwrap_or(1.0);
            if last >= first && last - first + 1.0 > items_max as f64 {
                return Err(SandboxRefusal::new(
                    name,
                    format!(
                        "range of {} items is over the limit of {items_max}",
                        last - first + 1.0
                    ),
                )
                .into_lua());
            }
        }
        if let Value::Table(t) = t {
            if let Some(meta) = t.metatable() {
                if !matches!(meta.raw_get::<Value>("__len")?, Value::Nil) {
                    return Err(SandboxRefusal::new(
                        name,
                        "tables with a __len metamethod are not accepted by the table library",
                    )
                    .into_lua());
                }
            }
        }
        Ok(())
    })
}

/// `check_move(f, e)`: the range `table.move` walks must fit `c_loop_items_max`.
fn check_move_fn(lua: &Lua, limits: &Limits) -> mlua::Result<Function> {
    let items_max = limits.c_loop_items_max;
    lua.create_function(move |lua, (f, e): (Value, Value)| {
        if let (Some(first), Some(last)) = (as_count(lua, &f), as_count(lua, &e)) {
            if last >= first && last - first + 1.0 > items_max as f64 {
                return Err(SandboxRefusal::new(
                    "table.move",
                    format!(
                        "range of {} items is over the limit of {items_max}",
                        last - first + 1.0
                    ),
                )
                .into_lua());
            }
        }
        Ok(())
    })
}

/// An upper bound on the matcher steps Lua's backtracking pattern matcher may take for
/// `pattern` on a subject of `subject_len` bytes.
///
/// Lua's matcher (`lstrlib.c`) backtracks: each repetition item (`*`, `+`, `-`) may be tried at
/// every length, so `k` repetitions over a subject of `S` bytes can be tried in about
/// C(S + k, k) combinations, times S + 1 start positions unless the pattern is anchored. `?`
/// doubles the work, `%b` and back-references `%1`–`%9` scan up to S bytes per attempt, and
/// each attempt walks the pattern (P bytes). The estimate multiplies these; it is pessimistic
/// for patterns that succeed early, exact in shape for adversarial subjects such as
/// `("a"):rep(n):find(".-.-.-.-b")`.
pub fn pattern_steps_estimate(subject_len: usize, pattern: &[u8], anchor_allowed: bool) -> f64 {
    let s = subject_len as f64;
    let mut repetitions: u32 = 0;
    let mut optionals: u32 = 0;
    let mut scans: u32 = 0;
    let mut i = 0;
    let anchored = anchor_allowed && pattern.first() == Some(&b'^');
    if anchored {
        i = 1;
    }
    while i < pattern.len() {
        let single_item = match pattern[i] {
            b'(' | b')' => {
                i += 1;
                false
            }
            b'%' => match pattern.get(i + 1) {
                Some(b'b') => {
                    scans += 1;
                    i += 4;
                    false
                }
                Some(b'f') => {
                    i = skip_set(pattern, i + 2);
                    false
                }
                Some(d) if d.is_ascii_digit() => {
                    scans += 1;
                    i += 2;
                    false
                }
                _ => {
                    i += 2;
                    true
                }
            },
            b'[' => {
                i = skip_set(pattern, i);
                true
            }
            _ => {
                i += 1;
                true
            }
        };
        if single_item {
            match pattern.get(i) {
                Some(b'*' | b'+' | b'-') => {
                    repetitions += 1;
                    i += 1;
                }
                Some(b'?') => {
                    optionals += 1;
                    i += 1;
                }
                _ => {}
            }
        }
    }
    let m = repetitions + u32::from(!anchored);
    let mut combinations = 1.0_f64;
    for j in 1..=m {
        combinations *= (s + f64::from(j)) / f64::from(j);
    }
    let per_attempt = (pattern.len() as f64 + 1.0) * f64::from(repetitions + 1);
    combinations
        * per_attempt
        * 2.0_f64.powi(i32::try_from(optionals).unwrap_or(i32::MAX))
        * (s + 1.0).powi(i32::try_from(scans).unwrap_or(i32::MAX))
}

/// Index just past a `[...]` set starting at `start` (lenient on malformed sets: Lua reports
/// those itself).
fn skip_set(pattern: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    if pattern.get(i) == Some(&b'^') {
        i += 1;
    }
    // A ']' right after '[' or '[^' is a literal.
    if pattern.get(i) == Some(&b']') {
        i += 1;
    }
    while i < pattern.len() {
        match pattern[i] {
            b'%' => i += 2,
            b']' => return i + 1,
            _ => i += 1,
        }
    }
    pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_estimates_grow_with_repetitions() {
        let plain = pattern_steps_estimate(1000, b"abc", true);
        let one = pattern_steps_estimate(1000, b"a.-b", true);
        let four = pattern_steps_estimate(1000, b".-.-.-.-b", true);
        let anchored = pattern_steps_estimate(1000, b"^.-.-.-.-b", true);
        assert!(plain < one && one < four);
        assert!(anchored < four);
        assert!(four > Limits::default().pattern_steps_max as f64);
        // Typical flow patterns on short inputs are cheap.
        assert!(pattern_steps_estimate(64, b"^(%d+)%.(%d%d)$", true) < 1e5);
        assert!(pattern_steps_estimate(4096, b"%s+", true) < 1e9);
    }

    #[test]
    fn sets_are_skipped_whole() {
        assert_eq!(skip_set(b"[]a]x", 0), 4);
        assert_eq!(skip_set(b"[^%]]x", 0), 5);
        assert_eq!(skip_set(b"[abc", 0), 4);
    }

    #[test]
    fn stop_flag_keeps_the_first_reason() {
        let flag = StopFlag::default();
        assert_eq!(flag.get(), None);
        assert_eq!(flag.trip(StopReason::WallTime), StopReason::WallTime);
        assert_eq!(flag.trip(StopReason::Cancelled), StopReason::WallTime);
        assert_eq!(flag.get(), Some(StopReason::WallTime));
    }
}
