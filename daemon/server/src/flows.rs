//! The flow engine in the daemon: Lua business flows as runs that clients start, follow,
//! answer and cancel over JSON-RPC.
//!
//! * A **run** is started with a client-chosen idempotency key (scoped to the operator). The
//!   key and the run record are durable before the flow starts; re-sending the same start
//!   returns the same run, and the same key with other parameters is refused. A run never loads
//!   a card twice: its loads go through the journal with transaction ids derived from the run.
//! * A run follows one flow **version**: it holds the definition it started with, whatever is
//!   reloaded meanwhile.
//! * Flows talk to the world only through the modules below: `card` (the reader the run was
//!   started on, through the reader manager: the purse layer and the journaled load), `ui`
//!   (confirmations and choices that pause the flow until the client answers or the prompt
//!   times out; progress messages) and `log`. Keys never reach Lua; amounts are integer fen.
//! * Runs that were in progress when the daemon stopped are marked `interrupted` at start-up;
//!   their money, if any, is settled by journal recovery when the card is presented. Reading
//!   such a run shows each of its loads with the journal's outcome at that moment (credited,
//!   not credited, or unknown with what to do), never "interrupted" alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use cardd_api::{ErrorCode, Role};
use cardd_journal::{load_card, Journal, LoadError, LoadRequest, LoadTxn, Store, TxnState};
use cardd_purse::Purse;
use cardd_script::mlua::{self, Lua, Table, Value};
use cardd_script::{
    fen_arg, install_module, json_value, positive_fen_arg, run_flow, str_arg, FlowDefinition,
    FlowRegistry, Limits, LogModule, LuaModule, RunContext, ScriptError,
};
use serde_json::json;

use crate::errors::ApiError;
use crate::readers::Holder;
use crate::server::Daemon;

/// The sled tree of runs (`run/<id>`) and idempotency keys (`key/<operator>/<key>`).
pub const RUNS_TREE: &str = "runs";
/// Most events kept in one run's record.
pub const RUN_EVENTS_MAX: usize = 200;
/// Longest idempotency key, in characters.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;
/// Longest prompt message, in bytes.
pub const PROMPT_BYTES_MAX: usize = 1024;
/// Most choices in one prompt.
pub const PROMPT_CHOICES_MAX: usize = 32;
/// Most runs in progress at once.
pub const RUNS_ACTIVE_MAX: usize = 64;

pub use cardd_api::flows::{
    Answer, FlowInfo, Prompt, RunEvent, RunFailure, RunLoad, RunRecord, RunState, StartParams,
};

/// Most loads of one run shown with an interrupted run.
pub const RUN_LOADS_MAX: usize = 64;

/// What to tell whoever reads an unknown outcome (zh-CN): never "failed".
pub const UNKNOWN_OUTCOME_ZH: &str =
    "请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值";

const INTERRUPTED_ZH: &str = "cardd 重启时该业务尚未完成";

fn yuan(fen: impl Into<i64>) -> String {
    cardd_api::Fen(fen.into()).to_yuan_string()
}

fn run_load(txn: &LoadTxn) -> RunLoad {
    let amount = yuan(txn.amount_fen());
    let (outcome, state, balance_after, tac, message) = match &txn.state {
        TxnState::Committed { tac, .. } => {
            let after = yuan(i64::from(txn.session.init.old_balance) + i64::from(txn.amount_fen()));
            let message = format!(
                "圈存已写入卡内：卡号 {}，金额 {amount} 元，圈存后余额 {after} 元（交易 {}）；请勿重复充值",
                txn.card_number, txn.txn_id
            );
            (
                "credited",
                "committed",
                Some(after),
                Some(tac.clone()),
                message,
            )
        }
        TxnState::NotApplied { .. } => (
            "not_credited",
            "not_applied",
            None,
            None,
            format!(
                "该笔圈存未写入卡内：卡号 {}，金额 {amount} 元（交易 {}），卡内金额未变",
                txn.card_number, txn.txn_id
            ),
        ),
        TxnState::Intent | TxnState::NeedsReconciliation { .. } => (
            "unknown",
            if txn.state == TxnState::Intent {
                "intent"
            } else {
                "needs_reconciliation"
            },
            None,
            None,
            format!(
                "圈存结果未知：卡号 {}，金额 {amount} 元（交易 {}）。{UNKNOWN_OUTCOME_ZH}",
                txn.card_number, txn.txn_id
            ),
        ),
    };
    RunLoad {
        txn_id: txn.txn_id.clone(),
        card_number: txn.card_number.clone(),
        amount,
        outcome: outcome.into(),
        state: state.into(),
        balance_after,
        tac,
        message,
    }
}

/// The number after `#` in a run's transaction id, for ordering loads as the run made them.
fn load_seq(txn_id: &str) -> u64 {
    txn_id
        .rsplit_once('#')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Gives a run interrupted by a restart its money outcome from the journal, read now: each
/// load the run started (transaction ids `<run_id>#<n>`) with its state, and a failure message
/// that says what happened to the money. Other runs are left as they are.
pub fn attach_load_outcomes(run: &mut RunRecord, journal: Option<&Journal>) {
    if run.state != RunState::Interrupted {
        return;
    }
    let found = match journal {
        Some(journal) => journal
            .with_id_prefix(&format!("{}#", run.run_id), RUN_LOADS_MAX)
            .map_err(|e| e.to_string()),
        None => Err("the journal did not verify".to_owned()),
    };
    let message = match found {
        Ok(mut txns) => {
            txns.sort_by_key(|t| load_seq(&t.txn_id));
            run.loads = txns.iter().map(run_load).collect();
            if run.loads.is_empty() {
                format!("{INTERRUPTED_ZH}；该业务没有向卡片发出圈存，卡内金额未变，可重新办理")
            } else {
                let each: Vec<&str> = run.loads.iter().map(|l| l.message.as_str()).collect();
                format!("{INTERRUPTED_ZH}。{}", each.join("；"))
            }
        }
        Err(e) => {
            tracing::warn!(run = %run.run_id, error = %e, "the loads of an interrupted run could not be read");
            run.loads.clear();
            format!("{INTERRUPTED_ZH}；暂时无法读取圈存记录，圈存结果未知。{UNKNOWN_OUTCOME_ZH}")
        }
    };
    run.failure = Some(RunFailure {
        kind: "interrupted".into(),
        message,
    });
}

/// An answer and the user name of the operator who gave it.
type AnsweredBy = (Answer, String);

struct LiveRun {
    answers: Mutex<Option<(u32, mpsc::SyncSender<AnsweredBy>)>>,
    prompts: AtomicU32,
    cancel: cardd_script::CancelHandle,
    changed: tokio::sync::Notify,
}

/// The engine.
pub struct FlowEngine {
    registry: FlowRegistry,
    store: Store,
    tree: sled::Tree,
    live: Mutex<HashMap<String, Arc<LiveRun>>>,
    records: Mutex<()>,
    limits: Limits,
    prompt_timeout: Duration,
}

impl std::fmt::Debug for FlowEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEngine")
            .field("dir", &self.registry.dir())
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    crate::audit::utc_now_rfc3339()
}

fn run_key(run_id: &str) -> Vec<u8> {
    format!("run/{run_id}").into_bytes()
}

fn idem_key(operator: &str, key: &str) -> Vec<u8> {
    format!("key/{operator}/{key}").into_bytes()
}

fn new_run_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("the run store failed: {e}"))
}

impl FlowEngine {
    /// Scans `dir` for flows and marks runs left in progress by a previous daemon as interrupted.
    pub fn open(
        dir: &Path,
        store: &Store,
        limits: Limits,
        prompt_timeout: Duration,
    ) -> Result<FlowEngine, String> {
        let registry = FlowRegistry::scan(dir).map_err(|e| e.to_string())?;
        for problem in registry.problems() {
            tracing::warn!(?problem, "a flow file was not loaded");
        }
        let tree = store.tree(RUNS_TREE).map_err(|e| e.to_string())?;
        let engine = FlowEngine {
            registry,
            store: store.clone(),
            tree,
            live: Mutex::new(HashMap::new()),
            records: Mutex::new(()),
            limits,
            prompt_timeout,
        };
        engine.interrupt_leftovers().map_err(|e| e.to_string())?;
        Ok(engine)
    }

    fn interrupt_leftovers(&self) -> Result<(), ApiError> {
        for item in self.tree.scan_prefix(b"run/") {
            let (_, value) = item.map_err(store_error)?;
            let Ok(mut record) = serde_json::from_slice::<RunRecord>(&value) else {
                continue;
            };
            if !record.state.is_finished() {
                record.state = RunState::Interrupted;
                record.prompt = None;
                record.failure = Some(RunFailure {
                    kind: "interrupted".into(),
                    message:
                        "cardd 重启时该业务尚未完成；如涉及写卡，请重新插卡，系统会根据卡片确认结果"
                            .into(),
                });
                self.save(&record, true)?;
                tracing::warn!(run = %record.run_id, flow = %record.flow, "run interrupted by a restart");
            }
        }
        Ok(())
    }

    /// The flows that can be started, for `flows.list`.
    pub fn list(&self) -> Vec<FlowInfo> {
        let mut out: Vec<FlowInfo> = self
            .registry
            .list()
            .iter()
            .map(|d| FlowInfo {
                name: d.name().into(),
                version: d.version().into(),
                title: d.title().into(),
                description: d.description().map(str::to_owned),
                roles: d.roles().to_vec(),
                params: d.params_schema(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Re-reads changed flow files; running flows keep their version.
    pub fn reload(&self) {
        match self.registry.reload_if_changed() {
            Ok(report) => tracing::debug!(?report, "flows reloaded"),
            Err(e) => tracing::warn!(error = %e, "flow reload failed"),
        }
    }

    fn save(&self, record: &RunRecord, durable: bool) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(record).map_err(store_error)?;
        self.tree
            .insert(run_key(&record.run_id), bytes)
            .map_err(store_error)?;
        if durable {
            self.store.durable_flush().map_err(store_error)?;
        }
        Ok(())
    }

    /// A run by id, for its operator (or an administrator).
    pub fn get(&self, run_id: &str) -> Result<RunRecord, ApiError> {
        let bytes = self
            .tree
            .get(run_key(run_id))
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(ErrorCode::RunNotFound, format!("no run {run_id:?}")))?;
        serde_json::from_slice(&bytes).map_err(store_error)
    }

    fn update(
        &self,
        run_id: &str,
        durable: bool,
        change: impl FnOnce(&mut RunRecord),
    ) -> Result<RunRecord, ApiError> {
        let _guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.get(run_id)?;
        change(&mut record);
        record.updated_at = now();
        self.save(&record, durable)?;
        drop(_guard);
        if let Some(live) = self.live_run(run_id) {
            live.changed.notify_waiters();
        }
        Ok(record)
    }

    fn push_event(&self, run_id: &str, kind: &str, message: &str, data: serde_json::Value) {
        let result = self.update(run_id, false, |r| {
            let seq = r.events.last().map_or(1, |e| e.seq + 1);
            if r.events.len() >= RUN_EVENTS_MAX {
                r.events.remove(0);
            }
            r.events.push(RunEvent {
                seq,
                at: now(),
                kind: kind.into(),
                message: message.into(),
                data,
            });
        });
        if let Err(e) = result {
            tracing::warn!(run = run_id, error = %e, "could not record a run event");
        }
    }

    fn live_run(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
    }

    /// Waits until the run changes or `wait` passes (for long polling).
    pub async fn wait_change(&self, run_id: &str, wait: Duration) {
        if let Some(live) = self.live_run(run_id) {
            let _ = tokio::time::timeout(wait, live.changed.notified()).await;
        }
    }

    /// Waits (at most `wait`) until the run has finished and returns its record; a run still
    /// going when the time is up is returned as it stands. No change can slip between the check
    /// and the wait: the waiter is registered before the record is read.
    pub async fn wait_finished(&self, run_id: &str, wait: Duration) -> Result<RunRecord, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(live) = self.live_run(run_id) else {
                return self.get(run_id);
            };
            let notified = live.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let record = self.get(run_id)?;
            if record.state.is_finished() {
                return Ok(record);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get(run_id);
            }
        }
    }

    /// Answers the run's pending prompt as `session`'s operator, who must have started the run
    /// or hold a role allowed to start its flow; the run's `answer` event names them.
    pub fn answer(
        &self,
        session: &crate::auth::Session,
        run_id: &str,
        prompt_id: u32,
        answer: Answer,
    ) -> Result<RunRecord, ApiError> {
        let record = self.get(run_id)?;
        let may_start = self
            .registry
            .get(&record.flow)
            .is_some_and(|def| def.allows(session.role));
        if record.operator != session.username && !may_start {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{}（{}）不能回答别人发起的“{}”：只有发起人或可以发起此业务的角色可以回答",
                    session.username,
                    session.role.label_zh(),
                    record.flow
                ),
            ));
        }
        let live = self.live_run(run_id).ok_or_else(|| no_prompt(run_id))?;
        let sender = {
            let mut slot = live.answers.lock().unwrap_or_else(|p| p.into_inner());
            match slot.take() {
                Some((id, tx)) if id == prompt_id => tx,
                Some(other) => {
                    *slot = Some(other);
                    return Err(no_prompt(run_id));
                }
                None => return Err(no_prompt(run_id)),
            }
        };
        sender
            .send((answer, session.username.clone()))
            .map_err(|_| no_prompt(run_id))?;
        self.get(run_id)
    }

    /// Cancels a run in progress.
    pub fn cancel(&self, run_id: &str) -> Result<RunRecord, ApiError> {
        let record = self.get(run_id)?;
        if record.state.is_finished() {
            return Ok(record);
        }
        if let Some(live) = self.live_run(run_id) {
            live.cancel.cancel();
            live.answers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        self.get(run_id)
    }
}

fn no_prompt(run_id: &str) -> ApiError {
    ApiError::new(ErrorCode::NoPendingPrompt, format!("run {run_id} is not waiting for that answer (it may have been answered, cancelled or timed out)"))
}

/// Starts a run, or returns the run an earlier identical start created.
pub fn start(
    daemon: &Arc<Daemon>,
    session: &crate::auth::Session,
    p: StartParams,
) -> Result<RunRecord, ApiError> {
    let engine = daemon
        .flows
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::FlowNotFound, "no flows are configured"))?;
    let key = p.idempotency_key.trim().to_owned();
    if key.is_empty() || key.chars().count() > IDEMPOTENCY_KEY_CHARS_MAX {
        return Err(ApiError::invalid_params(format!(
            "idempotency_key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters"
        )));
    }
    let def = engine.registry.get(&p.flow).ok_or_else(|| {
        ApiError::new(
            ErrorCode::FlowNotFound,
            format!("no flow {:?}; call flows.list", p.flow),
        )
    })?;
    if !def.allows(session.role) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{}（{}）无权执行“{}”",
                session.username,
                session.role.label_zh(),
                def.title()
            ),
        ));
    }
    let params_json = if p.params.is_null() {
        json!({})
    } else {
        p.params.clone()
    };
    let params = def
        .validate_params(&params_json)
        .map_err(|e| ApiError::invalid_params(e.to_string()))?;
    let _guard = engine.records.lock().unwrap_or_else(|g| g.into_inner());
    if let Some(existing) = engine
        .tree
        .get(idem_key(&session.username, &key))
        .map_err(store_error)?
    {
        let run_id = String::from_utf8_lossy(&existing).into_owned();
        let record = engine.get(&run_id)?;
        if record.flow != p.flow || record.params != params_json || record.reader_id != p.reader_id
        {
            return Err(ApiError::new(
                ErrorCode::IdempotencyConflict,
                format!("idempotency key {key:?} was used for run {run_id} with other parameters; use a new key for a new operation"),
            ));
        }
        let mut record = record;
        attach_load_outcomes(&mut record, daemon.journal.as_deref());
        return Ok(record);
    }
    let active = engine.live.lock().unwrap_or_else(|g| g.into_inner()).len();
    if active >= RUNS_ACTIVE_MAX {
        return Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!("{RUNS_ACTIVE_MAX} flows are running; retry shortly"),
        ));
    }
    let run_id = new_run_id();
    let at = now();
    let record = RunRecord {
        run_id: run_id.clone(),
        idempotency_key: key.clone(),
        operator: session.username.clone(),
        flow: def.name().into(),
        version: def.version().into(),
        params: params_json,
        reader_id: p.reader_id.clone(),
        state: RunState::Running,
        prompt: None,
        result: None,
        failure: None,
        loads: Vec::new(),
        events: vec![RunEvent {
            seq: 1,
            at: at.clone(),
            kind: "state".into(),
            message: "running".into(),
            data: json!({}),
        }],
        created_at: at.clone(),
        updated_at: at,
    };
    let bytes = serde_json::to_vec(&record).map_err(store_error)?;
    let mut batch = sled::Batch::default();
    batch.insert(run_key(&run_id), bytes);
    batch.insert(idem_key(&session.username, &key), run_id.as_bytes());
    engine.tree.apply_batch(batch).map_err(store_error)?;
    engine.store.durable_flush().map_err(store_error)?;
    drop(_guard);

    let ctx = RunContext::new(run_id.clone());
    let live = Arc::new(LiveRun {
        answers: Mutex::new(None),
        prompts: AtomicU32::new(0),
        cancel: ctx.cancel_handle(),
        changed: tokio::sync::Notify::new(),
    });
    engine
        .live
        .lock()
        .unwrap_or_else(|g| g.into_inner())
        .insert(run_id.clone(), live.clone());
    let holder = Holder {
        operator: session.username.clone(),
        session: session.token.clone(),
    };
    let runtime = tokio::runtime::Handle::current();
    let weak = Arc::downgrade(daemon);
    let spawned = std::thread::Builder::new()
        .name(format!("flow-{run_id}"))
        .spawn(move || {
            execute(weak, def, params, ctx, live, holder, p.reader_id, runtime);
        });
    if let Err(e) = spawned {
        engine
            .live
            .lock()
            .unwrap_or_else(|g| g.into_inner())
            .remove(&run_id);
        return Err(ApiError::internal(format!(
            "cannot start the flow thread: {e}"
        )));
    }
    Ok(record)
}

#[allow(clippy::too_many_arguments)]
fn execute(
    weak: Weak<Daemon>,
    def: Arc<FlowDefinition>,
    params: cardd_script::ValidatedParams,
    ctx: RunContext,
    live: Arc<LiveRun>,
    holder: Holder,
    reader_id: Option<String>,
    runtime: tokio::runtime::Handle,
) {
    let Some(daemon) = weak.upgrade() else { return };
    let Some(engine) = daemon.flows.as_ref() else {
        return;
    };
    let run_id = ctx.run_id().to_owned();
    let started = std::time::Instant::now();
    let flow_name = def.name().to_owned();
    let card = CardModule {
        daemon: weak.clone(),
        holder,
        reader_id,
        run_id: run_id.clone(),
        runtime,
        loads: Arc::new(AtomicU32::new(0)),
    };
    let host = daemon
        .host
        .clone()
        .map(|host| crate::host_module::HostModule {
            host,
            operator: card.holder.operator.clone(),
        });
    let ui = UiModule {
        daemon: weak.clone(),
        run_id: run_id.clone(),
        live: live.clone(),
    };
    let log_run = run_id.clone();
    let log_daemon = weak.clone();
    let log = LogModule::with_sink(move |record| {
        if let Some(d) = log_daemon.upgrade() {
            if let Some(engine) = d.flows.as_ref() {
                engine.push_event(
                    &log_run,
                    "log",
                    &record.message,
                    json!({ "level": format!("{:?}", record.level) }),
                );
            }
        }
    });
    let obu = crate::obu_module::ObuModule::new(
        weak.clone(),
        card.holder.clone(),
        card.reader_id.clone(),
        card.runtime.clone(),
    );
    let group = crate::group_module::GroupModule::for_run(&daemon, &card);
    let mut modules: Vec<&dyn LuaModule> = vec![&card, &ui, &log, &obu];
    if let Some(host) = &host {
        modules.push(host);
    }
    if let Some(group) = &group {
        modules.push(group);
    }
    let outcome = run_flow(def, params, &modules, engine.limits.clone(), ctx);
    let (state, result, failure) = match outcome {
        Ok(value) => (RunState::Succeeded, Some(value), None),
        Err(ScriptError::Cancelled) => (
            RunState::Cancelled,
            None,
            Some(RunFailure {
                kind: "cancelled".into(),
                message: "已取消".into(),
            }),
        ),
        Err(e) => {
            let kind = if e.is_limit() { "limit" } else { "flow_error" };
            (
                RunState::Failed,
                None,
                Some(RunFailure {
                    kind: kind.into(),
                    message: flow_message(&e),
                }),
            )
        }
    };
    let outcome = format!("{state:?}").to_lowercase();
    daemon
        .metrics
        .flow_finished(&flow_name, &outcome, started.elapsed());
    let finished = engine.update(&run_id, true, |r| {
        r.state = state;
        r.prompt = None;
        r.result = result;
        r.failure = failure;
        let seq = r.events.last().map_or(1, |e| e.seq + 1);
        r.events.push(RunEvent {
            seq,
            at: now(),
            kind: "state".into(),
            message: format!("{state:?}").to_lowercase(),
            data: json!({}),
        });
    });
    if let Err(e) = finished {
        tracing::error!(run = %run_id, error = %e, "could not record the end of a run");
    }
    engine
        .live
        .lock()
        .unwrap_or_else(|g| g.into_inner())
        .remove(&run_id);
    live.changed.notify_waiters();
}

/// The message of a flow's own `error(...)` without Lua's location prefixes
/// (`runtime error: [string "x.lua"]:12: `), keeping any `: ` inside the message itself.
fn flow_message(e: &ScriptError) -> String {
    match e {
        ScriptError::Runtime { message, .. } => strip_location(message).to_owned(),
        other => other.to_string(),
    }
}

fn strip_location(message: &str) -> &str {
    let mut rest = message.strip_prefix("runtime error: ").unwrap_or(message);
    while let Some(colon) = rest.find(':') {
        let (chunk, tail) = rest.split_at(colon);
        if chunk.is_empty() || (chunk.contains(' ') && !chunk.starts_with("[string \"")) {
            break;
        }
        let tail = &tail[1..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        match tail[digits..].strip_prefix(": ") {
            Some(after) if digits > 0 => rest = after,
            _ => break,
        }
    }
    rest
}

#[cfg(test)]
mod message_tests {
    use super::strip_location;

    #[test]
    fn only_lua_locations_are_stripped() {
        for (raw, shown) in [
            (
                "runtime error: [string \"etc_load.lua\"]:27: 卡号不符",
                "卡号不符",
            ),
            (
                "[string \"a.lua\"]:3: [string \"a.lua\"]:9: 圈存失败：PIN: wrong",
                "圈存失败：PIN: wrong",
            ),
            (
                "flow.lua:12: the card answered 6985: too full",
                "the card answered 6985: too full",
            ),
            (
                "圈存失败：INITIALIZE FOR LOAD: the card answered 6985",
                "圈存失败：INITIALIZE FOR LOAD: the card answered 6985",
            ),
        ] {
            assert_eq!(strip_location(raw), shown, "{raw}");
        }
    }
}

/// `card`: the reader the run was started on.
#[derive(Clone)]
pub(crate) struct CardModule {
    daemon: Weak<Daemon>,
    holder: Holder,
    reader_id: Option<String>,
    run_id: String,
    runtime: tokio::runtime::Handle,
    loads: Arc<AtomicU32>,
}

fn lua_error(message: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(message.into())
}

impl CardModule {
    fn daemon(&self) -> mlua::Result<Arc<Daemon>> {
        self.daemon
            .upgrade()
            .ok_or_else(|| lua_error("cardd 正在停止"))
    }

    fn reader(&self) -> mlua::Result<String> {
        self.reader_id
            .clone()
            .ok_or_else(|| lua_error("该业务需要读卡器：启动时请指定 reader_id"))
    }

    /// Runs a job on the run's reader and waits for it (the flow thread may block).
    pub(crate) fn on_reader<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut cardd_reader::Reader) -> R + Send + 'static,
    ) -> mlua::Result<R> {
        let daemon = self.daemon()?;
        let reader = self.reader()?;
        let holder = self.holder.clone();
        self.runtime
            .block_on(async move { daemon.readers.run(&reader, &holder, job).await })
            .map_err(|e| lua_error(e.message))
    }
}

impl LuaModule for CardModule {
    fn name(&self) -> &'static str {
        "card"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        let me = Arc::new(CardModule {
            daemon: self.daemon.clone(),
            holder: self.holder.clone(),
            reader_id: self.reader_id.clone(),
            run_id: self.run_id.clone(),
            runtime: self.runtime.clone(),
            loads: self.loads.clone(),
        });
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "info",
                lua.create_function(move |lua, ()| {
                    let _call = ctx.enter("card")?;
                    let daemon = me.daemon()?;
                    let (pin, terminal) =
                        (daemon.config.etc_pin.clone(), daemon.config.terminal_id);
                    let summary = me
                        .on_reader(move |reader| crate::summary::read(reader, &pin, terminal))?
                        .map_err(|e| lua_error(e.message))?;
                    let value =
                        serde_json::to_value(summary).map_err(|e| lua_error(e.to_string()))?;
                    json_value(lua, &value)
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "load",
                lua.create_function(move |lua, args: Table| {
                    let _call = ctx.enter("card")?;
                    let amount = positive_fen_arg(args.raw_get::<Value>("amount")?)?;
                    let amount = u32::try_from(amount).map_err(|_| {
                        lua_error(format!(
                            "金额过大：单笔圈存金额不能超过 {} 元",
                            cardd_api::Fen(i64::from(u32::MAX)).to_yuan_string()
                        ))
                    })?;
                    let expected = match args.raw_get::<Value>("expected_card")? {
                        Value::Nil => None,
                        v => Some(str_arg(lua, "expected_card", v, 32)?),
                    };
                    let receipt = me.load(amount, expected)?;
                    let value =
                        serde_json::to_value(receipt).map_err(|e| lua_error(e.to_string()))?;
                    json_value(lua, &value)
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "check_record",
                lua.create_function(move |lua, record_id: Value| {
                    let _call = ctx.enter("card")?;
                    let record_id = str_arg(lua, "record_id", record_id, 32)?;
                    let daemon = me.daemon()?;
                    me.on_reader(move |reader| {
                        daemon.etc_service().and_then(|etc| {
                            etc.check_card_for_record(reader, &record_id)
                                .map_err(crate::errors::ApiError::from)
                        })
                    })?
                    .map_err(|e| lua_error(e.message))
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "settle_record",
                lua.create_function(move |lua, record_id: Value| {
                    let _call = ctx.enter("card")?;
                    let record_id = str_arg(lua, "record_id", record_id, 32)?;
                    let value = me.settle_record(record_id)?;
                    json_value(lua, &value)
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "load_record",
                lua.create_function(move |lua, record_id: Value| {
                    let _call = ctx.enter("card")?;
                    let record_id = str_arg(lua, "record_id", record_id, 32)?;
                    let value = me.load_record(record_id)?;
                    json_value(lua, &value)
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "balance",
                lua.create_function(move |_, ()| {
                    let _call = ctx.enter("card")?;
                    let fen = me
                        .on_reader(|reader| {
                            let mut purse = Purse::new(reader);
                            purse.select_etc_adf()?;
                            purse.balance()
                        })?
                        .map_err(|e| lua_error(e.to_string()))?;
                    Ok(i64::from(fen))
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "read_log",
                lua.create_function(move |lua, max: Option<i64>| {
                    let _call = ctx.enter("card")?;
                    let max = u8::try_from(max.unwrap_or(10).clamp(1, 50)).unwrap_or(10);
                    let records = me
                        .on_reader(move |reader| {
                            let mut purse = Purse::new(reader);
                            purse.select_etc_adf()?;
                            purse.read_log(max)
                        })?
                        .map_err(|e| lua_error(e.to_string()))?;
                    let rows: Vec<serde_json::Value> = records
                        .iter()
                        .map(|r| {
                            json!({
                                "atc": r.atc, "amount_fen": r.amount, "tx_type": r.tx_type,
                                "terminal": hex::encode_upper(r.terminal),
                                "date": hex::encode(r.date_bcd), "time": hex::encode(r.time_bcd),
                            })
                        })
                        .collect();
                    json_value(lua, &serde_json::Value::Array(rows))
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "prove_load",
                lua.create_function(move |lua, atc: i64| {
                    let _call = ctx.enter("card")?;
                    let atc = u16::try_from(atc).map_err(|_| lua_error("atc must be 0..=65535"))?;
                    let proof = me
                        .on_reader(move |reader| {
                            let mut purse = Purse::new(reader);
                            purse.select_etc_adf()?;
                            purse.prove(cardd_purse::TransactionType::EpLoad, atc)
                        })?
                        .map_err(|e| lua_error(e.to_string()))?;
                    let value = proof
                        .map(|p| json!({ "mac": hex::encode_upper(p.mac), "tac": hex::encode_upper(p.tac) }))
                        .unwrap_or(serde_json::Value::Null);
                    json_value(lua, &value)
                })?,
            )?;
        }
        {
            let ctx = ctx.clone();
            table.raw_set(
                "fen_to_yuan",
                lua.create_function(move |_, amount: Value| {
                    let _call = ctx.enter("card")?;
                    Ok(cardd_api::Fen(fen_arg(amount)?).to_yuan_string())
                })?,
            )?;
        }
        install_module(lua, "card", table)
    }
}

impl CardModule {
    fn load(
        &self,
        amount_fen: u32,
        expected_card: Option<String>,
    ) -> mlua::Result<cardd_journal::LoadReceipt> {
        // No credit without funds: a load that names no funded record (ETC recharge record,
        // group order) exists only in the demo-keys test mode, and only for an administrator
        // (checked here too, whatever the flow file's roles say).
        let daemon = self.daemon()?;
        if !daemon.config.flows.unfunded_test_loads
            || daemon.config.keys.source != crate::config::KeySource::Demo
        {
            return Err(lua_error(
                "无资金来源的圈存未开放：每笔圈存必须对应已付款的充值记录或集团订单；请在【充值记录】中选择记录圈存",
            ));
        }
        let role = daemon
            .auth
            .get_operator(self.operator())
            .map(|o| o.role)
            .map_err(|e| lua_error(e.to_string()))?;
        if role != Role::Admin {
            return Err(lua_error(format!(
                "无资金来源的圈存仅供管理员在测试模式下使用：操作员 {}（{}）不能执行；请在【充值记录】中选择已付款的记录圈存",
                self.operator(),
                role.label_zh()
            )));
        }
        self.load_as(
            self.next_txn_id(),
            amount_fen,
            expected_card,
            cardd_journal::Funding::TestMode,
        )
    }

    /// The transaction id of the run's next load (`<run_id>#<n>`), taken.
    pub(crate) fn next_txn_id(&self) -> String {
        let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
        format!("{}#{n}", self.run_id)
    }

    /// The operator who started the run.
    pub(crate) fn operator(&self) -> &str {
        &self.holder.operator
    }

    /// The journaled load under `txn_id` (from [`CardModule::next_txn_id`]).
    pub(crate) fn load_as(
        &self,
        txn_id: String,
        amount_fen: u32,
        expected_card: Option<String>,
        funding: cardd_journal::Funding,
    ) -> mlua::Result<cardd_journal::LoadReceipt> {
        let daemon = self.daemon()?;
        let today = time::OffsetDateTime::now_utc()
            .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
        let request = LoadRequest {
            txn_id,
            amount_fen,
            terminal: daemon.config.terminal_id,
            date: cardd_crypto::bcd::date(
                today.year() as u16,
                u8::from(today.month()),
                today.day(),
            ),
            time: cardd_crypto::bcd::time(today.hour(), today.minute(), today.second()),
            etc_pin: daemon.config.etc_pin.clone(),
            expected_card,
            city_algorithm: cardd_crypto::Algorithm::Tdes,
            funding,
        };
        let reader_id = self.reader()?;
        let job_daemon = daemon.clone();
        let result = self.on_reader(move |reader| {
            let journal = job_daemon.journal.as_ref().ok_or(LoadFailure::Closed)?;
            let mut purse = Purse::new(reader);
            load_card(
                &mut purse,
                job_daemon.sam.as_ref(),
                journal,
                &reader_id,
                &request,
            )
            .map_err(LoadFailure::Load)
        })?;
        match result {
            Ok(receipt) => {
                if let Some(engine) = daemon.flows.as_ref() {
                    engine.push_event(
                        &self.run_id,
                        "load",
                        "圈存成功",
                        serde_json::to_value(&receipt).unwrap_or_default(),
                    );
                }
                Ok(receipt)
            }
            Err(failure) => Err(lua_error(failure.message_zh())),
        }
    }
}

impl CardModule {
    /// `card.settle_record(record_id)`: before anyone is asked, what the card on the reader
    /// says about the record's earlier loads (see `cardd_etc::EtcService::settle_record`), without
    /// loading: `{record, already_on_card}`.
    fn settle_record(&self, record_id: String) -> mlua::Result<serde_json::Value> {
        let daemon = self.daemon()?;
        let operator = self.operator().to_owned();
        let job_daemon = daemon.clone();
        let outcome = self
            .on_reader(move |reader| {
                job_daemon.etc_service().and_then(|etc| {
                    etc.settle_record(reader, &record_id, &operator)
                        .map_err(crate::errors::ApiError::from)
                })
            })?
            .map_err(|e| lua_error(e.message))?;
        let value = json!({
            "record": crate::etc_rpc::RecordView::from(&outcome.record),
            "already_on_card": outcome.already_on_card,
        });
        if outcome.already_on_card {
            if let Some(engine) = daemon.flows.as_ref() {
                engine.push_event(&self.run_id, "load", "该笔充值已在卡内", value.clone());
            }
        }
        Ok(value)
    }

    /// `card.load_record(record_id)`: the recharge record's money onto the card, exactly once
    /// (see `cardd_etc::EtcService::load_record`), under the run's next transaction id.
    fn load_record(&self, record_id: String) -> mlua::Result<serde_json::Value> {
        let daemon = self.daemon()?;
        let txn_id = self.next_txn_id();
        let reader_id = self.reader()?;
        let operator = self.operator().to_owned();
        let job_daemon = daemon.clone();
        let outcome = self
            .on_reader(move |reader| {
                job_daemon.etc_service().and_then(|etc| {
                    etc.load_record(reader, &reader_id, &record_id, &operator, &txn_id)
                        .map_err(crate::errors::ApiError::from)
                })
            })?
            .map_err(|e| lua_error(e.message))?;
        let receipt = outcome.receipt.as_ref().map(|r| {
            json!({
                "txn_id": r.txn_id, "tac": r.tac, "online_atc_before": r.online_atc_before,
                "balance_before": cardd_api::Fen(i64::from(r.balance_before_fen)).to_yuan_string(),
                "amount": cardd_api::Fen(i64::from(r.amount_fen)).to_yuan_string(),
                "balance_after": cardd_api::Fen(i64::from(r.balance_after_fen)).to_yuan_string(),
            })
        });
        let record = crate::etc_rpc::RecordView::from(&outcome.record);
        let value = json!({
            "record": record,
            "receipt": receipt,
            "already_on_card": outcome.already_on_card,
        });
        if let Some(engine) = daemon.flows.as_ref() {
            let message = if outcome.already_on_card {
                "该笔充值已在卡内"
            } else {
                "圈存成功"
            };
            engine.push_event(&self.run_id, "load", message, value.clone());
        }
        Ok(value)
    }
}

enum LoadFailure {
    Closed,
    Load(LoadError),
}

impl LoadFailure {
    /// What a teller reads when a load fails.
    fn message_zh(&self) -> String {
        match self {
            LoadFailure::Closed => "系统完整性检查未通过，已停止写卡；请联系管理员".into(),
            LoadFailure::Load(LoadError::WrongCard { expected, found }) => {
                format!("卡号不符：读卡器上是 {found}，应为 {expected}；请插入正确的卡")
            }
            LoadFailure::Load(LoadError::OutcomeUnknown { .. } | LoadError::AfterCredit { .. }) => {
                "写卡过程中卡片被拔出或无响应，圈存结果未知：请重新插入该卡，系统会根据卡片确认结果，切勿重复圈存".into()
            }
            LoadFailure::Load(LoadError::Unresolved { .. }) => {
                "该卡有一笔未确认的圈存，需主管核对后处理；在此之前不能再次圈存".into()
            }
            LoadFailure::Load(e @ LoadError::VerdictContradicted { .. }) => {
                cardd_etc::load_error(e).to_string()
            }
            LoadFailure::Load(LoadError::Unfunded(e)) => crate::errors::unfunded_load(e).message,
            LoadFailure::Load(other) => format!("圈存失败：{other}"),
        }
    }
}

/// `ui`: questions to the client and progress messages.
struct UiModule {
    daemon: Weak<Daemon>,
    run_id: String,
    live: Arc<LiveRun>,
}

impl UiModule {
    fn ask(&self, kind: &str, message: String, choices: Vec<String>) -> mlua::Result<Answer> {
        let daemon = self
            .daemon
            .upgrade()
            .ok_or_else(|| lua_error("cardd 正在停止"))?;
        let engine = daemon
            .flows
            .as_ref()
            .ok_or_else(|| lua_error("no flow engine"))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let prompt_id = self.live.prompts.fetch_add(1, Ordering::SeqCst) + 1;
        *self.live.answers.lock().unwrap_or_else(|p| p.into_inner()) = Some((prompt_id, tx));
        let prompt = Prompt {
            prompt_id,
            kind: kind.into(),
            message: message.clone(),
            choices,
        };
        let data = serde_json::to_value(&prompt).unwrap_or_default();
        engine
            .update(&self.run_id, false, |r| {
                r.state = RunState::Waiting;
                r.prompt = Some(prompt);
                let seq = r.events.last().map_or(1, |e| e.seq + 1);
                r.events.push(RunEvent {
                    seq,
                    at: now(),
                    kind: "prompt".into(),
                    message,
                    data,
                });
            })
            .map_err(|e| lua_error(e.message))?;
        let answer = rx.recv_timeout(engine.prompt_timeout);
        self.live
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let _ = engine.update(&self.run_id, false, |r| {
            r.state = RunState::Running;
            r.prompt = None;
        });
        match answer {
            Ok((answer, operator)) => {
                engine.push_event(
                    &self.run_id,
                    "answer",
                    &operator,
                    json!({ "answer": answer, "operator": operator }),
                );
                Ok(answer)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(lua_error("操作超时，业务已取消")),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(lua_error("业务已取消")),
        }
    }
}

impl LuaModule for UiModule {
    fn name(&self) -> &'static str {
        "ui"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        let me = Arc::new(UiModule {
            daemon: self.daemon.clone(),
            run_id: self.run_id.clone(),
            live: self.live.clone(),
        });
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "confirm",
                lua.create_function(move |lua, message: Value| {
                    let _call = ctx.enter("ui")?;
                    let message = str_arg(lua, "message", message, PROMPT_BYTES_MAX)?;
                    match me.ask("confirm", message, Vec::new())? {
                        Answer::Confirm(yes) => Ok(yes),
                        Answer::Choice(_) => Err(lua_error("应回答 true 或 false")),
                    }
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "choose",
                lua.create_function(move |lua, (message, choices): (Value, Table)| {
                    let _call = ctx.enter("ui")?;
                    let message = str_arg(lua, "message", message, PROMPT_BYTES_MAX)?;
                    let mut options = Vec::new();
                    for value in choices.sequence_values::<Value>() {
                        if options.len() >= PROMPT_CHOICES_MAX {
                            return Err(lua_error(format!("at most {PROMPT_CHOICES_MAX} choices")));
                        }
                        options.push(str_arg(lua, "choice", value?, 256)?);
                    }
                    match me.ask("choose", message, options.clone())? {
                        Answer::Choice(c) if options.contains(&c) => Ok(c),
                        _ => Err(lua_error("回答不在可选项中")),
                    }
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "progress",
                lua.create_function(move |lua, (message, counts): (Value, Option<Table>)| {
                    let _call = ctx.enter("ui")?;
                    let message = str_arg(lua, "message", message, PROMPT_BYTES_MAX)?;
                    let data = match counts {
                        None => json!({}),
                        Some(t) => {
                            let (done, total) = progress_counts(&t)?;
                            json!({ "done": done, "total": total })
                        }
                    };
                    if let Some(d) = me.daemon.upgrade() {
                        if let Some(engine) = d.flows.as_ref() {
                            engine.push_event(&me.run_id, "progress", &message, data);
                        }
                    }
                    Ok(())
                })?,
            )?;
        }
        install_module(lua, "ui", table)
    }
}

/// The `{ done = n, total = m }` of `ui.progress`: whole numbers, `0 <= done <= total`.
fn progress_counts(t: &Table) -> mlua::Result<(u64, u64)> {
    let count = |key: &str| -> mlua::Result<u64> {
        match t.raw_get::<Value>(key)? {
            Value::Integer(n) => u64::try_from(n).ok(),
            _ => None,
        }
        .ok_or_else(|| lua_error(format!("ui.progress: {key} 应为非负整数")))
    };
    let (done, total) = (count("done")?, count("total")?);
    if done > total {
        return Err(lua_error("ui.progress: done 不能大于 total"));
    }
    Ok((done, total))
}

/// The flows directory of a source checkout (`scripts/`), the default when none is configured.
pub fn default_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts"))
}
