//! `run_flow`: one flow run, from checked parameters to a JSON result.
//!
//! Why a separate step from [`crate::flow`]: a definition is checked and compiled once, but every
//! run gets a fresh sandbox (Lua state is never shared between runs: the string metatable,
//! globals and anything a previous flow changed are gone), its own API modules bound to its own
//! [`RunContext`], its own limits and the shared watchdog's watch. The order is fixed: a state
//! with the sandbox applied and the flow's bytecode loaded in binary mode, taken from the
//! version's pool or built now ([`crate::pool`]; nothing has run in it) → bound to this run (stop
//! flag, `math.random` seed, context) → modules → evaluate the file and call `run(ctx, params)`
//! on the calling thread (a long-lived [`crate::FlowThreads`] thread in the daemon) → convert
//! the returned table to bounded JSON.
//!
//! API functions may block the flow thread (waiting for a client's confirmation); that is
//! intended, and bounded by the run's wall time ([`RunContext::remaining`]).

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use crate::convert::{lua_to_json, JsonLimits};
use crate::error::ScriptError;
use crate::flow::{FlowDefinition, ValidatedParams};
use crate::module::{LuaModule, RunContext};
use crate::sandbox::{BadReturnError, Limits, Sandbox, GLOBALS_KEPT, GLOBALS_REFUSED};

/// Runs `def` with `params` (validated by `def.validate_params`), exposing `modules`, within
/// `limits`. Returns the table `run` returned, as JSON of at most `limits.result_bytes_max`
/// bytes. Runs on the calling thread (see [`Sandbox::run`]) until the flow ends, is stopped or
/// is cancelled through `ctx.cancel_handle()`; a run stuck in a call past its deadline is given
/// up on by the watchdog, which tells `ctx`'s [`RunContext::on_given_up`] at once.
pub fn run_flow(
    def: Arc<FlowDefinition>,
    params: ValidatedParams,
    modules: &[&dyn LuaModule],
    limits: Limits,
    ctx: RunContext,
) -> Result<serde_json::Value, ScriptError> {
    if !params.belongs_to(&def) {
        return Err(ScriptError::Refused {
            reason: format!(
                "the parameters were validated for another definition than {} {}",
                def.name(),
                def.version()
            ),
        });
    }
    let ctx = ctx.with_flow(def.name(), def.version());
    let prebuilt = def
        .states()
        .take(def.chunk_name(), def.bytecode_arc(), &limits)?;
    let (sandbox, chunk) = prebuilt.bind_with_chunk(&ctx)?;
    register_modules(sandbox.lua(), modules, &ctx)?;
    let chunk = match chunk {
        Some(chunk) => chunk,
        None => def.load_into(&sandbox)?,
    };
    let internal = |e: mlua::Error| ScriptError::Internal {
        reason: format!("cannot prepare the run: {e}"),
    };
    let params_table = params.to_lua(sandbox.lua()).map_err(internal)?;
    let ctx_table = context_table(sandbox.lua(), &ctx).map_err(internal)?;
    let json_limits = JsonLimits::from_limits(&limits);
    sandbox.run(move |lua| {
        let returned: Value = chunk.call(())?;
        let Value::Table(flow) = returned else {
            return Err(bad_return(format!(
                "the flow file returned a {}, not its table",
                returned.type_name()
            )));
        };
        let run: Function = match flow.raw_get::<Value>("run")? {
            Value::Function(f) => f,
            other => {
                return Err(bad_return(format!(
                    "`run` is a {}, not a function",
                    other.type_name()
                )))
            }
        };
        let result: Value = run.call((ctx_table, params_table))?;
        match &result {
            Value::Table(_) => {}
            Value::Nil => {
                return Err(bad_return(
                    "`run` returned nothing; return a table".to_owned(),
                ))
            }
            other => {
                return Err(bad_return(format!(
                    "`run` returned a {}; return a table",
                    other.type_name()
                )))
            }
        }
        lua_to_json(lua, &result, &json_limits).map_err(|e| bad_return(e.to_string()))
    })
}

/// Runs a plain chunk (no flow table) in a fresh sandbox with `modules` and returns its first
/// value as bounded JSON (`nil` is `null`). For Lua unit tests and tools; flows go through
/// [`run_flow`].
pub fn run_chunk(
    chunk_name: &str,
    source: &str,
    modules: &[&dyn LuaModule],
    limits: Limits,
    ctx: RunContext,
) -> Result<serde_json::Value, ScriptError> {
    let sandbox = Sandbox::new(&limits, &ctx)?;
    register_modules(sandbox.lua(), modules, &ctx)?;
    let chunk = sandbox.load(chunk_name, source)?;
    let json_limits = JsonLimits::from_limits(&limits);
    sandbox.run(move |lua| {
        let result: Value = chunk.call(())?;
        lua_to_json(lua, &result, &json_limits).map_err(|e| bad_return(e.to_string()))
    })
}

fn bad_return(reason: String) -> mlua::Error {
    mlua::Error::external(BadReturnError(reason))
}

/// Registers each module, refusing names that are not identifiers, that would shadow a
/// sandbox global, or that are registered twice; checks each module installed its global.
pub(crate) fn register_modules(
    lua: &Lua,
    modules: &[&dyn LuaModule],
    ctx: &RunContext,
) -> Result<(), ScriptError> {
    let globals = lua.globals();
    let internal = |reason: String| ScriptError::Internal { reason };
    for module in modules {
        let name = module.name();
        let identifier = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !identifier {
            return Err(ScriptError::Refused {
                reason: format!("module name `{name}` is not a lower-case identifier"),
            });
        }
        if GLOBALS_KEPT.contains(&name) || GLOBALS_REFUSED.iter().any(|(n, _)| *n == name) {
            return Err(ScriptError::Refused {
                reason: format!("module name `{name}` would shadow a sandbox global"),
            });
        }
        let existing: Value = globals.raw_get(name).map_err(|e| internal(e.to_string()))?;
        if !existing.is_nil() {
            return Err(ScriptError::Refused {
                reason: format!("module `{name}` is registered twice"),
            });
        }
        module
            .register(lua, ctx)
            .map_err(|e| internal(format!("module `{name}` failed to register: {e}")))?;
        let installed: Value = globals.raw_get(name).map_err(|e| internal(e.to_string()))?;
        if !installed.is_table() {
            return Err(internal(format!(
                "module `{name}` did not install the global table `{name}`"
            )));
        }
    }
    Ok(())
}

/// The `ctx` table a flow's `run` receives.
fn context_table(lua: &Lua, ctx: &RunContext) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("run_id", ctx.run_id())?;
    if let Some((name, version)) = ctx.flow() {
        table.raw_set("flow", name)?;
        table.raw_set("version", version)?;
    }
    table.raw_set("started_at_ms", ctx.started_at_ms())?;
    Ok(table)
}
