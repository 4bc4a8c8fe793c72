//! Test helpers: a fake `card` API module (money through `fen_arg`, a callback for re-entrancy,
//! a blocking call standing in for a stuck C function) and one-line flow runners.
#![allow(dead_code)]

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardd_script::mlua::{Function, Lua, Value};
use cardd_script::{
    fen_arg, install_module, run_flow, FlowDefinition, FlowThreads, Limits, LogModule, LuaModule,
    RunContext, ScriptError,
};

/// Lets a test hold a flow inside `card.wait()` until it says so.
#[derive(Debug)]
pub struct Gate {
    pub started: Mutex<Sender<()>>,
    pub release: Mutex<Receiver<()>>,
}

/// `card.credit(amount)`, `card.with_callback(f)`, `card.block_ms(ms)`, `card.wait()`.
#[derive(Debug, Clone, Default)]
pub struct TestCard {
    pub credits: Arc<Mutex<Vec<i64>>>,
    /// Calls to `credit` refused by `RunContext::enter` (stopped or re-entrant run).
    pub refused: Arc<Mutex<Vec<String>>>,
    pub gate: Option<Arc<Gate>>,
}

impl TestCard {
    pub fn credits(&self) -> Vec<i64> {
        self.credits.lock().unwrap().clone()
    }

    /// Waits until `credit` has been refused at least once (a late call from an abandoned run).
    pub fn wait_for_refusal(&self, timeout: Duration) -> Vec<String> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let refused = self.refused.lock().unwrap().clone();
            if !refused.is_empty() || std::time::Instant::now() >= until {
                return refused;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl LuaModule for TestCard {
    fn name(&self) -> &'static str {
        "card"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> cardd_script::mlua::Result<()> {
        let table = lua.create_table()?;
        let (c, credits, refused) = (ctx.clone(), self.credits.clone(), self.refused.clone());
        table.raw_set(
            "credit",
            lua.create_function(move |_, amount: Value| {
                let _call = c.enter("card").inspect_err(|e| {
                    refused.lock().unwrap().push(e.to_string());
                })?;
                let fen = fen_arg(amount)?;
                credits.lock().unwrap().push(fen);
                Ok(fen)
            })?,
        )?;
        let c = ctx.clone();
        table.raw_set(
            "with_callback",
            lua.create_function(move |_, f: Function| {
                let _call = c.enter("card")?;
                f.call::<Value>(())
            })?,
        )?;
        let c = ctx.clone();
        table.raw_set(
            "block_ms",
            lua.create_function(move |_, ms: u64| {
                let _call = c.enter("card")?;
                // Ignores the deadline on purpose: a stand-in for a C function that hooks
                // cannot interrupt.
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            })?,
        )?;
        let (c, gate) = (ctx.clone(), self.gate.clone());
        table.raw_set(
            "wait",
            lua.create_function(move |_, ()| {
                let _call = c.enter("card")?;
                if let Some(gate) = &gate {
                    let _ = gate.started.lock().unwrap().send(());
                    let _ = gate
                        .release
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                }
                Ok(())
            })?,
        )?;
        install_module(lua, "card", table)
    }
}

/// A flow whose `run` has `body`.
pub fn flow_source(body: &str) -> String {
    format!(
        "return {{ name = \"test.flow\", version = \"1.0.0\", title = \"测试\", role = {{\"admin\"}},\n\
         params = {{}},\nrun = function(ctx, params)\n{body}\nend }}\n"
    )
}

/// Limits for tests: the defaults with a smaller instruction budget and wall time, so a
/// runaway test ends quickly even in a debug build.
pub fn test_limits() -> Limits {
    Limits {
        instructions_max: 5_000_000,
        wall_ms_max: 10_000,
        ..Limits::default()
    }
}

/// Runs `body` as a flow with `card` and `log`.
pub fn run_body_with(
    body: &str,
    card: &TestCard,
    limits: Limits,
    ctx: RunContext,
) -> Result<serde_json::Value, ScriptError> {
    let def = Arc::new(FlowDefinition::from_source("test.lua", &flow_source(body)).unwrap());
    let params = def.validate_params(&serde_json::Value::Null).unwrap();
    // On a long-lived flow thread, as the daemon runs flows.
    let card = card.clone();
    let (done, result) = std::sync::mpsc::channel();
    flow_threads()
        .spawn(move || {
            let log = LogModule::new();
            let _ = done.send(run_flow(def, params, &[&card, &log], limits, ctx));
        })
        .expect("a flow thread");
    result.recv().expect("the flow thread answered")
}

/// The tests' long-lived flow threads (as many as tests may run at once).
fn flow_threads() -> &'static FlowThreads {
    static THREADS: std::sync::OnceLock<FlowThreads> = std::sync::OnceLock::new();
    THREADS.get_or_init(|| FlowThreads::new("test-flow", 64))
}

pub fn run_body(body: &str) -> Result<serde_json::Value, ScriptError> {
    run_body_with(
        body,
        &TestCard::default(),
        test_limits(),
        RunContext::new("test"),
    )
}
