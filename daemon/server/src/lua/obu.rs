//! `obu`: the flows' OBU module (flow API v1), the Lua binding of `cardd-obu`.
//!
//! Flows get two calls and nothing lower: `obu.info()` reads the OBU on the run's reader, and
//! `obu.issue{ plate, plate_colour, details }` issues it to that vehicle account (`obu.plan`
//! shows what would be written). The flow refuses first, with its own messages; `cardd-obu`
//! checks the same things again on the card, so that no flow can issue an OBU whose contract
//! serial is not the vehicle account's, whose contract has expired, or that is activated for
//! another vehicle. The vehicle account is the issuer host's, converted here into
//! [`cardd_obu::VehicleAccount`]; never bytes a flow hands over.

use std::sync::{Arc, Weak};

use cardd_api::obu::{IssuePlan, IssueReport, VehicleDetails};
use cardd_api::types::plate_colour_zh;
use cardd_etc::model::Vehicle;
use cardd_journal::SystemClock;
use cardd_obu::{IssueError, IssueOrder, ObuService, VehicleAccount};
use cardd_reader::Reader;
use cardd_script::mlua::{self, Lua, Value};
use cardd_script::{install_module, json_arg, json_value, str_arg, LuaModule, RunContext};
use serde::Serialize;

use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::readers::Holder;

/// Longest plate or text argument from a flow, in bytes.
const ARG_BYTES_MAX: usize = 256;

/// A vehicle account as OBU issuance needs it.
fn vehicle_account(v: &Vehicle) -> VehicleAccount {
    VehicleAccount {
        plate: v.plate.clone(),
        plate_colour: v.plate_colour.code,
        vehicle_class: v.vehicle_class,
        obu_contract_serial: v.obu_contract_serial.clone(),
        details: v.details.clone(),
    }
}

/// A refusal of the vehicle accounts, inside an issuance error (its message and code kept).
fn account_error(e: cardd_etc::HostError) -> IssueError {
    let api = ApiError::from(e);
    IssueError::Account {
        message: api.message,
        code: api.code,
    }
}

/// The `obu` module for one run: the run's reader, the daemon's security module and host.
#[derive(Debug)]
pub struct ObuModule {
    daemon: Weak<Daemon>,
    flow: String,
    holder: Holder,
    reader_id: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl ObuModule {
    pub fn new(
        daemon: Weak<Daemon>,
        flow: String,
        holder: Holder,
        reader_id: Option<String>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ObuModule {
            daemon,
            flow,
            holder,
            reader_id,
            runtime,
        }
    }

    fn live(&self) -> mlua::Result<Arc<Daemon>> {
        self.daemon
            .upgrade()
            .ok_or_else(|| lua_error("cardd 正在停止"))
    }

    /// The issuance service over the daemon's security module.
    fn service(daemon: &Daemon) -> ObuService {
        ObuService::new(daemon.sam.clone(), Arc::new(SystemClock))
    }

    /// Runs `job` on the run's reader with the issuance service.
    fn on_esam<R>(
        &self,
        step: &str,
        job: impl FnOnce(&mut Reader, &ObuService) -> Result<R, IssueError>,
    ) -> mlua::Result<R> {
        let daemon = self.live()?;
        let Some(reader_id) = self.reader_id.as_deref() else {
            return Err(lua_error("OBU发行需要OBU发行器：启动时请指定 reader_id"));
        };
        let service = Self::service(&daemon);
        let context = format!("flow {} step {step}", self.flow);
        // On the flow's own thread: no hand-off to the reader's worker.
        let outcome =
            daemon
                .readers
                .run_here(reader_id, &self.holder, &context, |reader: &mut Reader| {
                    job(reader, &service)
                });
        match outcome {
            Ok(result) => result.map_err(lua_error),
            Err(e) => Err(lua_error(e.message)),
        }
    }

    /// The vehicle account's data as issuance will write it (`obu.plan`); `given` details are
    /// used only when the account has none.
    fn plan(
        &self,
        plate: &str,
        colour: u16,
        given: Option<VehicleDetails>,
    ) -> Result<(IssuePlan, IssueOrder), IssueError> {
        let daemon = self.daemon.upgrade().ok_or(IssueError::HostUnavailable)?;
        let host = daemon.host.clone().ok_or(IssueError::HostUnavailable)?;
        let vehicle = host
            .vehicle(plate, colour)
            .map_err(account_error)?
            .ok_or_else(|| IssueError::UnknownVehicle {
                plate: plate.trim().to_owned(),
                colour: plate_colour_zh(colour).to_owned(),
            })?;
        let validate = |given: &VehicleDetails| {
            cardd_etc::validate::vehicle_details(given).map_err(account_error)
        };
        Self::service(&daemon).plan(&vehicle_account(&vehicle), given, validate)
    }

    /// `obu.issue{ plate, plate_colour, details }`.
    fn issue(
        &self,
        plate: &str,
        colour: u16,
        given: Option<VehicleDetails>,
    ) -> mlua::Result<IssueReport> {
        let (plan, order) = self.plan(plate, colour, given).map_err(lua_error)?;
        let job_order = order.clone();
        let outcome = self.on_esam("obu.issue", move |reader, obu| {
            obu.issue(reader, &job_order)
        });
        let operator = &self.holder.operator;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(plate = %order.plate, colour = order.plate_colour, operator = %operator, error = %e, "OBU not issued");
                return Err(e);
            }
        };
        tracing::info!(obu = %outcome.system.obu_number(), plate = %order.plate, colour = order.plate_colour, operator = %operator, written = ?outcome.written, "OBU issued and activated");
        Ok(ObuService::report(plan, &outcome))
    }
}

/// One function of the module: the run's module and the call's argument.
type Call = fn(&Lua, &ObuModule, Value) -> mlua::Result<Value>;

/// The `{ plate, plate_colour, details }` argument of `obu.plan` and `obu.issue`.
fn order_args(lua: &Lua, args: Value) -> mlua::Result<(String, u16, Option<VehicleDetails>)> {
    let Value::Table(args) = args else {
        return Err(lua_error(
            "expected a table { plate = …, plate_colour = …, details = … }",
        ));
    };
    let plate = str_arg(lua, "plate", args.raw_get("plate")?, ARG_BYTES_MAX)?;
    let colour = match args.raw_get::<Value>("plate_colour")? {
        Value::Integer(code) => {
            u16::try_from(code).map_err(|_| lua_error("plate_colour must be a colour code"))?
        }
        _ => return Err(lua_error("plate_colour must be an integer colour code")),
    };
    let details = match args.raw_get::<Value>("details")? {
        Value::Nil => None,
        value => Some(
            serde_json::from_value::<VehicleDetails>(json_arg(lua, "details", &value)?)
                .map_err(|e| lua_error(format!("details: {e}")))?,
        ),
    };
    Ok((plate, colour, details))
}

fn lua_error(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::RuntimeError(e.to_string())
}

fn to_lua<T: Serialize>(lua: &Lua, value: &T) -> mlua::Result<Value> {
    let json = serde_json::to_value(value).map_err(lua_error)?;
    json_value(lua, &json)
}

impl LuaModule for ObuModule {
    fn name(&self) -> &'static str {
        "obu"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        let me = Arc::new(ObuModule::new(
            self.daemon.clone(),
            self.flow.clone(),
            self.holder.clone(),
            self.reader_id.clone(),
            self.runtime.clone(),
        ));
        let add = |name: &'static str, call: Call| -> mlua::Result<()> {
            let (me, ctx) = (me.clone(), ctx.clone());
            let function = lua.create_function(move |lua, args: Value| {
                let _call = ctx.enter("obu")?;
                call(lua, &me, args)
            })?;
            table.raw_set(name, function)
        };
        add("info", |lua, me, _| {
            to_lua(
                lua,
                &me.on_esam("obu.read_info", |reader, obu| obu.read_info(reader))?,
            )
        })?;
        add("plan", |lua, me, args| {
            let (plate, colour, details) = order_args(lua, args)?;
            let (plan, _) = me.plan(&plate, colour, details).map_err(lua_error)?;
            to_lua(lua, &plan)
        })?;
        add("issue", |lua, me, args| {
            let (plate, colour, details) = order_args(lua, args)?;
            to_lua(lua, &me.issue(&plate, colour, details)?)
        })?;
        install_module(lua, "obu", table)
    }
}
