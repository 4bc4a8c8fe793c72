//! `host`: the issuer host as flows see it (flow API v1).
//!
//! Flows read vehicle accounts and recharge records. They cannot change a record's 圈存 status:
//! a record moves only with the money, through `card.load_record` (the journaled load, in
//! Rust), or through the daemon's evidence-checked methods (`etc.records.*`). A flow that could
//! set 已圈存 or 未圈存 by itself could load the same money twice.

use std::sync::Arc;

use cardd_etc::{IssuerHost, RecordQuery, RecordStatus};
use cardd_script::mlua::{self, Lua, Value};
use cardd_script::{install_module, json_arg, json_value, str_arg, LuaModule, RunContext};

/// Longest id or text argument, in bytes.
const ARG_BYTES_MAX: usize = 256;

/// The module for one run.
#[derive(Debug)]
pub struct HostModule {
    pub host: Arc<dyn IssuerHost>,
    pub operator: String,
}

fn lua_error(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::RuntimeError(e.to_string())
}

fn to_lua<T: serde::Serialize>(lua: &Lua, value: &T) -> mlua::Result<Value> {
    let json = serde_json::to_value(value).map_err(lua_error)?;
    json_value(lua, &json)
}

fn status_arg(lua: &Lua, value: Value) -> mlua::Result<Option<RecordStatus>> {
    match value {
        Value::Nil => Ok(None),
        v => {
            let text = str_arg(lua, "status", v, 32)?;
            serde_json::from_value(serde_json::Value::String(text.clone()))
                .map(Some)
                .map_err(|_| lua_error(format!("unknown record status {text:?}")))
        }
    }
}

impl LuaModule for HostModule {
    fn name(&self) -> &'static str {
        "host"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        macro_rules! function {
            ($name:literal, |$lua:ident, $host:ident, $operator:ident, $args:ident : $ty:ty| $body:expr) => {{
                let (host, operator, ctx) = (self.host.clone(), self.operator.clone(), ctx.clone());
                table.raw_set(
                    $name,
                    lua.create_function(move |$lua, $args: $ty| {
                        let _call = ctx.enter("host")?;
                        let ($host, $operator) = (&host, operator.as_str());
                        let _ = $operator;
                        $body
                    })?,
                )?;
            }};
        }
        function!("vehicle", |lua, host, op, args: (Value, i64)| {
            let plate = str_arg(lua, "plate", args.0, ARG_BYTES_MAX)?;
            let colour = u16::try_from(args.1).map_err(lua_error)?;
            to_lua(lua, &host.vehicle(&plate, colour).map_err(lua_error)?)
        });
        function!("vehicles_for_card", |lua, host, op, card: Value| {
            let card = str_arg(lua, "card_number", card, ARG_BYTES_MAX)?;
            to_lua(lua, &host.vehicles_for_card(&card).map_err(lua_error)?)
        });
        function!("records", |lua, host, op, query: Value| {
            let query: RecordQuery =
                serde_json::from_value(json_arg(lua, "query", &query)?).map_err(lua_error)?;
            to_lua(lua, &host.query_records(&query).map_err(lua_error)?)
        });
        function!("records_for_card", |lua, host, op, args: (Value, Value)| {
            let card = str_arg(lua, "card_number", args.0, ARG_BYTES_MAX)?;
            let status = status_arg(lua, args.1)?;
            to_lua(
                lua,
                &host.records_for_card(&card, status).map_err(lua_error)?,
            )
        });
        function!("record", |lua, host, op, id: Value| {
            let id = str_arg(lua, "record_id", id, ARG_BYTES_MAX)?;
            to_lua(lua, &host.record(&id).map_err(lua_error)?)
        });
        install_module(lua, "host", table)
    }
}
