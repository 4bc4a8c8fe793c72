//! The flow engine in the daemon: Lua business flows as runs that clients start, follow,
//! answer and cancel over JSON-RPC.
//!
//! * A **run** is started with a client-chosen idempotency key (scoped to the operator). The
//!   key and the run record are written before the flow starts and are durable before
//!   `flows.start` answers: the flow starts at once, and the start's flush round runs beside its
//!   first steps (group commit, off the async threads). The run's first load intent is flushed
//!   after that write, so its round covers the run too (sled's flush is database-wide) and the
//!   card work never waits for a flush of the run's own. If the start's round fails, the store
//!   fails closed: the start is answered with the error, the run is cancelled, and no intent
//!   can become durable, so the run loads no card. Re-sending the same start returns the same
//!   run once it is durable (also while the first start's round runs), and the same key with
//!   other parameters is refused. A run never loads a card twice: its loads go through the
//!   journal with transaction ids derived from the run.
//! * A running run's record lives **in memory** (its live run): progress, log and card events
//!   are visible at once to `flows.get`, `flows.events` and `flows.subscribe`, and reach sled
//!   only with the run's next state change (running → waiting for an answer → running →
//!   succeeded / failed / cancelled), each of which writes the whole record (events bounded by
//!   [`RUN_EVENTS_MAX`]). A crash loses the events since the last state change, never money:
//!   loads are in the journal, and an interrupted run shows them from there. The end of a run
//!   is durable before it is visible: until its flush round returns, readers see the run still
//!   running.
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

use cardd_api::ErrorCode;
use cardd_journal::{Journal, LoadTxn, Store, TxnState};
use cardd_script::mlua::{self, Lua, Table, Value};
use cardd_script::{
    install_module, run_flow, str_arg, FlowDefinition, FlowRegistry, Limits, LogModule, LuaModule,
    RunContext, ScriptError,
};
use serde_json::json;

use crate::errors::ApiError;
use crate::readers::Holder;

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
    /// The run's record while it runs: the newest events are here before they are in sled.
    record: Mutex<RunRecord>,
    answers: Mutex<Option<(u32, mpsc::SyncSender<AnsweredBy>)>>,
    prompts: AtomicU32,
    cancel: cardd_script::CancelHandle,
    changed: tokio::sync::Notify,
    /// Set by whoever records the run's end first: the run returning, or the watchdog giving
    /// up on a run stuck in a call (the run's own return is then not recorded again).
    ended: std::sync::atomic::AtomicBool,
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
    /// The modules every run gets besides `ui` and `log`, registered by the composition root.
    modules: std::sync::OnceLock<Arc<dyn RunModules>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The long-lived threads runs execute on (a run has no thread of its own).
    threads: cardd_script::FlowThreads,
    /// The engine itself, for the run threads (set by [`FlowEngine::open`]).
    me: Weak<FlowEngine>,
}

/// Who a run is and where it works: what a run's modules are built for.
#[derive(Debug, Clone)]
pub struct RunScope {
    pub run_id: String,
    /// The flow's name (`etc.load`, ...), for the context marks of a reader's APDU trace.
    pub flow: String,
    /// The operator who started the run, as the reader manager knows lessees.
    pub holder: Holder,
    /// The reader the run was started on, if any.
    pub reader_id: Option<String>,
    /// The daemon's runtime, for the blocking flow thread to wait on async services.
    /// (Card calls need no runtime: they use the reader on the flow thread.)
    pub runtime: tokio::runtime::Handle,
    /// The engine, to report the run's events.
    pub engine: Weak<FlowEngine>,
}

/// The Lua modules of the daemon's services (card, ETC records, group recharge, OBU), built
/// for each run. The engine provides `ui` and `log` itself and knows nothing of the rest.
pub trait RunModules: Send + Sync {
    /// The modules of one run.
    fn for_run(&self, run: &RunScope) -> Vec<Box<dyn LuaModule>>;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends an event to a run's record, dropping the oldest beyond [`RUN_EVENTS_MAX`].
fn add_event(r: &mut RunRecord, kind: &str, message: String, data: serde_json::Value) {
    let seq = r.events.last().map_or(1, |e| e.seq + 1);
    if r.events.len() >= RUN_EVENTS_MAX {
        r.events.remove(0);
    }
    r.events.push(RunEvent {
        seq,
        at: now(),
        kind: kind.into(),
        message,
        data,
    });
}

impl FlowEngine {
    /// Registers the modules of the daemon's services (once, by the composition root).
    pub fn register_modules(&self, modules: Arc<dyn RunModules>) {
        if self.modules.set(modules).is_err() {
            tracing::warn!("the flows' service modules were registered twice; the first set stays");
        }
    }

    /// Scans `dir` for flows and marks runs left in progress by a previous daemon as interrupted.
    pub fn open(
        dir: &Path,
        store: &Store,
        limits: Limits,
        prompt_timeout: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<FlowEngine>, String> {
        let registry = FlowRegistry::scan(dir).map_err(|e| e.to_string())?;
        for problem in registry.problems() {
            tracing::warn!(?problem, "a flow file was not loaded");
        }
        let tree = store.tree(RUNS_TREE).map_err(|e| e.to_string())?;
        let engine = Arc::new_cyclic(|me| FlowEngine {
            registry,
            store: store.clone(),
            tree,
            live: Mutex::new(HashMap::new()),
            records: Mutex::new(()),
            limits,
            prompt_timeout,
            modules: std::sync::OnceLock::new(),
            metrics,
            threads: cardd_script::FlowThreads::new("cardd-flow", RUNS_ACTIVE_MAX),
            me: me.clone(),
        });
        engine.interrupt_leftovers().map_err(|e| e.to_string())?;
        Ok(engine)
    }

    fn interrupt_leftovers(&self) -> Result<(), ApiError> {
        let mut interrupted = false;
        for item in self.tree.scan_prefix(b"run/") {
            let (_, value) = item.map_err(store_error)?;
            let Ok(mut record) = serde_json::from_slice::<RunRecord>(&value) else {
                continue;
            };
            if !record.state.is_finished() {
                interrupted = true;
                record.state = RunState::Interrupted;
                record.prompt = None;
                record.failure = Some(RunFailure {
                    kind: "interrupted".into(),
                    message:
                        "cardd 重启时该业务尚未完成；如涉及写卡，请重新插卡，系统会根据卡片确认结果"
                            .into(),
                });
                self.save(&record, false)?;
                tracing::warn!(run = %record.run_id, flow = %record.flow, "run interrupted by a restart");
            }
        }
        // One flush round for all of them.
        if interrupted {
            self.store.durable_flush().map_err(store_error)?;
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

    /// A run by id, for its operator (or an administrator): a running run as it stands in
    /// memory, with its newest events; a finished one as stored.
    pub fn get(&self, run_id: &str) -> Result<RunRecord, ApiError> {
        if let Some(live) = self.live_run(run_id) {
            return Ok(lock(&live.record).clone());
        }
        self.stored(run_id)
    }

    /// A run as stored in sled.
    fn stored(&self, run_id: &str) -> Result<RunRecord, ApiError> {
        let bytes = self
            .tree
            .get(run_key(run_id))
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(ErrorCode::RunNotFound, format!("no run {run_id:?}")))?;
        serde_json::from_slice(&bytes).map_err(store_error)
    }

    /// Changes a run's record. A running run changes in memory; the record is written to sled
    /// when its state changes (or `durable` asks), made durable when `durable` asks, and only
    /// then shown to readers. A run that is not running (none is changed so today) is changed
    /// in sled.
    pub(crate) fn update(
        &self,
        run_id: &str,
        durable: bool,
        change: impl FnOnce(&mut RunRecord),
    ) -> Result<RunRecord, ApiError> {
        let Some(live) = self.live_run(run_id) else {
            let _guard = lock(&self.records);
            let mut record = self.stored(run_id)?;
            change(&mut record);
            record.updated_at = now();
            self.save(&record, durable)?;
            return Ok(record);
        };
        let record = {
            let mut current = lock(&live.record);
            let mut record = current.clone();
            change(&mut record);
            record.updated_at = now();
            if durable || record.state != current.state {
                // Under the run's lock, so the run's writes reach sled in order.
                self.save(&record, false)?;
            }
            if !durable {
                *current = record.clone();
            }
            record
        };
        if durable {
            // Readers see the change only once it survives a crash ("record the outcome before
            // answering"); the run's thread is the only writer, so nothing changes meanwhile.
            self.store.durable_flush().map_err(store_error)?;
            *lock(&live.record) = record.clone();
        }
        live.changed.notify_waiters();
        Ok(record)
    }

    /// Adds an event to a running run (in memory: it reaches sled with the next state change).
    pub(crate) fn push_event(
        &self,
        run_id: &str,
        kind: &str,
        message: &str,
        data: serde_json::Value,
    ) {
        let result = self.update(run_id, false, |r| add_event(r, kind, message.into(), data));
        if let Err(e) = result {
            tracing::warn!(run = run_id, error = %e, "could not record a run event");
        }
    }

    fn live_run(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        lock(&self.live).get(run_id).cloned()
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

/// Starts a run, or returns the run an earlier identical start created, once it is durable.
/// `journal` is read for the outcomes of an earlier identical start's loads.
///
/// The flow starts before the run is durable; the answer waits for the flush round (on a
/// blocking thread), which runs beside the flow's first steps. A failed round fails the start
/// and cancels the run; the store is then failed closed, so the run's loads cannot begin.
pub async fn start(
    engine: &FlowEngine,
    session: &crate::auth::Session,
    p: StartParams,
    journal: Option<&Journal>,
) -> Result<RunRecord, ApiError> {
    let begun = begin(engine, session, p, journal)?;
    let store = engine.store.clone();
    let mark = begun.mark;
    let durable = tokio::task::spawn_blocking(move || match mark {
        Some(mark) => store.wait_durable(mark),
        // A re-sent start: whatever it returns is made durable (re-sends are rare).
        None => store.durable_flush(),
    })
    .await
    .map_err(|e| ApiError::internal(format!("the run store's flush stopped: {e}")))?;
    if let Err(e) = durable {
        if mark.is_some() {
            tracing::error!(run = %begun.record.run_id, error = %e, "a run could not be made durable: it is cancelled");
            if let Some(live) = engine.live_run(&begun.record.run_id) {
                live.cancel.cancel();
            }
        }
        return Err(store_error(e));
    }
    Ok(begun.record)
}

/// A start's record, and for a new run the mark its durability waits for.
struct Begun {
    record: RunRecord,
    mark: Option<cardd_journal::WriteMark>,
}

/// The part of [`start`] that writes and starts the flow, without waiting for the disk.
fn begin(
    engine: &FlowEngine,
    session: &crate::auth::Session,
    p: StartParams,
    journal: Option<&Journal>,
) -> Result<Begun, ApiError> {
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
        attach_load_outcomes(&mut record, journal);
        return Ok(Begun { record, mark: None });
    }
    if let Some(first) = engine.store.failed_closed() {
        return Err(store_error(format!(
            "an earlier sync to disk failed ({first}), so no run can be made durable; stop cardd, check the disk, and start it again"
        )));
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
    // Made durable by whichever round comes first: `start`'s or the run's first load intent's.
    let mark = engine.store.write_mark();
    drop(_guard);

    let ctx = RunContext::new(run_id.clone());
    let live = Arc::new(LiveRun {
        record: Mutex::new(record.clone()),
        answers: Mutex::new(None),
        prompts: AtomicU32::new(0),
        cancel: ctx.cancel_handle(),
        changed: tokio::sync::Notify::new(),
        ended: std::sync::atomic::AtomicBool::new(false),
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
    let weak = engine.me.clone();
    // On one of the engine's long-lived flow threads: the run's card calls then use its
    // reader right there, without a hand-off to the reader's worker.
    let spawned = engine.threads.spawn(move || {
        execute(weak, def, params, ctx, live, holder, p.reader_id, runtime);
    });
    if let Err(e) = spawned {
        engine
            .live
            .lock()
            .unwrap_or_else(|g| g.into_inner())
            .remove(&run_id);
        // Nothing ran: the run and its key go, so the same start can be sent again.
        let mut batch = sled::Batch::default();
        batch.remove(run_key(&run_id));
        batch.remove(idem_key(&session.username, &key));
        if let Err(e) = engine.tree.apply_batch(batch) {
            tracing::warn!(run = %run_id, error = %e, "could not remove a run that did not start");
        }
        return Err(match e {
            cardd_script::FlowThreadsError::Busy { threads_max } => ApiError::new(
                ErrorCode::ServerBusy,
                format!("all {threads_max} flow threads are busy; retry shortly"),
            ),
            e => ApiError::internal(e.to_string()),
        });
    }
    Ok(Begun {
        record,
        mark: Some(mark),
    })
}

#[allow(clippy::too_many_arguments)]
fn execute(
    weak: Weak<FlowEngine>,
    def: Arc<FlowDefinition>,
    params: cardd_script::ValidatedParams,
    ctx: RunContext,
    live: Arc<LiveRun>,
    holder: Holder,
    reader_id: Option<String>,
    runtime: tokio::runtime::Handle,
) {
    let Some(engine) = weak.upgrade() else { return };
    let run_id = ctx.run_id().to_owned();
    let started = std::time::Instant::now();
    let flow_name = def.name().to_owned();
    let scope = RunScope {
        run_id: run_id.clone(),
        flow: flow_name.clone(),
        holder,
        reader_id,
        runtime,
        engine: weak.clone(),
    };
    let ui = UiModule {
        engine: weak.clone(),
        run_id: run_id.clone(),
        live: live.clone(),
    };
    let log_run = run_id.clone();
    let log_engine = weak.clone();
    let log = LogModule::with_sink(move |record| {
        if let Some(engine) = log_engine.upgrade() {
            engine.push_event(
                &log_run,
                "log",
                &record.message,
                json!({ "level": format!("{:?}", record.level) }),
            );
        }
    });
    let services = engine
        .modules
        .get()
        .map(|m| m.for_run(&scope))
        .unwrap_or_default();
    let mut modules: Vec<&dyn LuaModule> = vec![&ui, &log];
    modules.extend(services.iter().map(|m| m.as_ref()));
    // The watchdog gives up on a run stuck in a call past its deadline (+ grace): its end is
    // recorded then, and the stuck call's eventual return is not recorded again.
    let ctx = {
        let (weak, run_id, flow_name, live) = (
            weak.clone(),
            run_id.clone(),
            flow_name.clone(),
            live.clone(),
        );
        ctx.on_given_up(move |error| {
            if let Some(engine) = weak.upgrade() {
                finish_run(&engine, &run_id, &flow_name, started, &live, Err(error));
            }
        })
    };
    let outcome = run_flow(def, params, &modules, engine.limits.clone(), ctx);
    finish_run(&engine, &run_id, &flow_name, started, &live, outcome);
}

/// Records the end of a run (once: by the run returning or by the watchdog giving up on it).
fn finish_run(
    engine: &FlowEngine,
    run_id: &str,
    flow_name: &str,
    started: std::time::Instant,
    live: &LiveRun,
    outcome: Result<serde_json::Value, ScriptError>,
) {
    if live.ended.swap(true, Ordering::SeqCst) {
        return;
    }
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
    engine
        .metrics
        .flow_finished(flow_name, &outcome, started.elapsed());
    // Durable before readers see it: until then they see the run still running.
    let finished = engine.update(run_id, true, |r| {
        r.state = state;
        r.prompt = None;
        r.result = result;
        r.failure = failure;
        add_event(r, "state", format!("{state:?}").to_lowercase(), json!({}));
    });
    if let Err(e) = finished {
        tracing::error!(run = %run_id, error = %e, "could not record the end of a run");
    }
    engine
        .live
        .lock()
        .unwrap_or_else(|g| g.into_inner())
        .remove(run_id);
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

fn lua_error(message: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(message.into())
}

/// `ui`: questions to the client and progress messages.
struct UiModule {
    engine: Weak<FlowEngine>,
    run_id: String,
    live: Arc<LiveRun>,
}

impl UiModule {
    fn ask(&self, kind: &str, message: String, choices: Vec<String>) -> mlua::Result<Answer> {
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| lua_error("cardd 正在停止"))?;
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
                add_event(r, "prompt", message, data);
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
            engine: self.engine.clone(),
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
                    if let Some(engine) = me.engine.upgrade() {
                        engine.push_event(&me.run_id, "progress", &message, data);
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

#[cfg(test)]
mod run_record_tests {
    use super::*;

    /// A flow that reports progress, then waits at the gate, then (on request) writes and
    /// flushes as a load intent would.
    const GATED: &str = r#"
return {
  name = "test.gated", version = "1.0.0", title = "测试", role = {"teller"},
  params = { progress = { type = "integer", min = 1, max = 1000 } },
  run = function(ctx, params)
    for i = 1, (params.progress or 1) do
      ui.progress("进度 " .. i)
    end
    gate.wait()
    if not gate.intent() then
      error("intent not durable")
    end
    return { ok = true }
  end,
}
"#;

    /// Generous bound for a run to reach the gate or its end.
    const WAIT: Duration = Duration::from_secs(30);

    struct Gate {
        store: Store,
        reached: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
        intents: Mutex<mpsc::Sender<bool>>,
    }

    struct GateModules(Arc<Gate>);

    impl RunModules for GateModules {
        fn for_run(&self, _run: &RunScope) -> Vec<Box<dyn LuaModule>> {
            vec![Box::new(GateModule(self.0.clone()))]
        }
    }

    struct GateModule(Arc<Gate>);

    impl LuaModule for GateModule {
        fn name(&self) -> &'static str {
            "gate"
        }

        fn register(&self, lua: &Lua, _ctx: &RunContext) -> mlua::Result<()> {
            let table = lua.create_table()?;
            let gate = self.0.clone();
            table.raw_set(
                "wait",
                lua.create_function(move |_, ()| {
                    let _ = lock(&gate.reached).send(());
                    lock(&gate.release)
                        .recv_timeout(WAIT)
                        .map_err(|_| lua_error("the test did not open the gate"))
                })?,
            )?;
            let gate = self.0.clone();
            table.raw_set(
                "intent",
                lua.create_function(move |_, ()| {
                    // What the journal does for a load intent: write, then a durable flush.
                    let tree = gate.store.tree("test_intents").map_err(lua_error_of)?;
                    tree.insert(b"intent", b"1".as_slice())
                        .map_err(lua_error_of)?;
                    let ok = gate.store.durable_flush().is_ok();
                    let _ = lock(&gate.intents).send(ok);
                    Ok(ok)
                })?,
            )?;
            install_module(lua, "gate", table)
        }
    }

    fn lua_error_of(e: impl std::fmt::Display) -> mlua::Error {
        lua_error(e.to_string())
    }

    struct Rig {
        engine: Arc<FlowEngine>,
        store: Store,
        reached: mpsc::Receiver<()>,
        release: mpsc::Sender<()>,
        intents: mpsc::Receiver<bool>,
        session: crate::auth::Session,
        _dir: tempfile::TempDir,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gated.lua"), GATED).expect("flow file");
        let store = Store::temporary().expect("store");
        let engine = FlowEngine::open(
            dir.path(),
            &store,
            Limits::default(),
            WAIT,
            Arc::new(crate::metrics::Metrics::new()),
        )
        .expect("engine");
        let (reached_tx, reached) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let (intents_tx, intents) = mpsc::channel();
        engine.register_modules(Arc::new(GateModules(Arc::new(Gate {
            store: store.clone(),
            reached: Mutex::new(reached_tx),
            release: Mutex::new(release_rx),
            intents: Mutex::new(intents_tx),
        }))));
        let session = crate::auth::Session {
            token: "t".repeat(64),
            username: "teller".into(),
            display_name: "柜员".into(),
            role: cardd_api::Role::Teller,
            group_id: None,
            created_at: std::time::Instant::now(),
            last_seen: std::time::Instant::now(),
        };
        Rig {
            engine,
            store,
            reached,
            release,
            intents,
            session,
            _dir: dir,
        }
    }

    fn params(key: &str, progress: u64) -> StartParams {
        StartParams {
            flow: "test.gated".into(),
            params: json!({ "progress": progress }),
            idempotency_key: key.into(),
            reader_id: None,
        }
    }

    fn kinds(record: &RunRecord) -> Vec<String> {
        record
            .events
            .iter()
            .map(|e| format!("{}:{}", e.kind, e.message))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_is_read_from_memory_and_stored_with_the_end() {
        let r = rig();
        let started = start(&r.engine, &r.session, params("k1", 3), None)
            .await
            .expect("start");
        let run_id = started.run_id.clone();
        r.reached
            .recv_timeout(WAIT)
            .expect("the run reaches the gate");
        let live = r.engine.get(&run_id).expect("get");
        assert_eq!(
            kinds(&live),
            [
                "state:running",
                "progress:进度 1",
                "progress:进度 2",
                "progress:进度 3"
            ],
            "readers see the progress at once"
        );
        let stored = r.engine.stored(&run_id).expect("stored");
        assert_eq!(
            kinds(&stored),
            ["state:running"],
            "progress alone writes nothing to sled"
        );
        let flushes = r.store.flush_stats();
        r.release.send(()).expect("open the gate");
        assert!(r.intents.recv_timeout(WAIT).expect("the intent"));
        let done = r
            .engine
            .wait_finished(&run_id, WAIT)
            .await
            .expect("finished");
        assert_eq!(done.state, RunState::Succeeded, "{done:?}");
        let stored = r.engine.stored(&run_id).expect("stored");
        assert_eq!(stored, done, "the end is what sled holds");
        assert_eq!(
            kinds(&stored),
            [
                "state:running",
                "progress:进度 1",
                "progress:进度 2",
                "progress:进度 3",
                "state:succeeded"
            ]
        );
        let rounds = r.store.flush_stats().since(&flushes).rounds;
        assert_eq!(rounds, 2, "the intent's round and the end's round");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stored_record_keeps_the_newest_events_only() {
        let r = rig();
        let many = RUN_EVENTS_MAX as u64 + 20;
        let started = start(&r.engine, &r.session, params("k1", many), None)
            .await
            .expect("start");
        r.reached
            .recv_timeout(WAIT)
            .expect("the run reaches the gate");
        let live = r.engine.get(&started.run_id).expect("get");
        assert_eq!(live.events.len(), RUN_EVENTS_MAX);
        r.release.send(()).expect("open the gate");
        let done = r
            .engine
            .wait_finished(&started.run_id, WAIT)
            .await
            .expect("finished");
        let stored = r.engine.stored(&started.run_id).expect("stored");
        assert_eq!(stored.events.len(), RUN_EVENTS_MAX);
        assert_eq!(stored.events, done.events);
        let last = stored.events.last().expect("an event");
        assert_eq!(
            (last.kind.as_str(), last.seq),
            ("state", many + 2),
            "the oldest went, the end stayed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_start_round_fails_the_start_and_no_intent_becomes_durable() {
        let r = rig();
        r.store.fail_flushes_for_test(0, 1);
        let err = start(&r.engine, &r.session, params("k1", 1), None)
            .await
            .expect_err("the run is not durable");
        assert!(err.message.contains("injected flush failure"), "{err:?}");
        // The run was cancelled; had it reached its load, the intent could not be durable.
        let run_id = idem_run(&r, "k1");
        let _ = r.release.send(());
        let done = r.engine.wait_finished(&run_id, WAIT).await.expect("ended");
        assert!(done.state.is_finished(), "{done:?}");
        if let Ok(intent) = r.intents.try_recv() {
            assert!(
                !intent,
                "an intent after a failed start round is never durable"
            );
        }
        assert_ne!(done.state, RunState::Succeeded, "{done:?}");
        // A re-send is not answered with a run that is not durable.
        let again = start(&r.engine, &r.session, params("k1", 1), None).await;
        assert!(again.is_err(), "{again:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_resent_while_the_first_is_not_yet_durable_returns_the_same_run() {
        let r = rig();
        let first = begin(&r.engine, &r.session, params("k1", 1), None).expect("begin");
        assert!(first.mark.is_some(), "not yet waited for");
        let again = start(&r.engine, &r.session, params("k1", 1), None)
            .await
            .expect("re-sent start");
        assert_eq!(again.run_id, first.record.run_id);
        r.store
            .wait_durable(first.mark.expect("mark"))
            .expect("the re-sent start's round covered the first");
        let other = start(&r.engine, &r.session, params("k1", 2), None)
            .await
            .expect_err("other parameters");
        assert_eq!(other.code, ErrorCode::IdempotencyConflict);
        r.reached
            .recv_timeout(WAIT)
            .expect("the run reaches the gate");
        r.release.send(()).expect("open the gate");
        let done = r
            .engine
            .wait_finished(&first.record.run_id, WAIT)
            .await
            .expect("finished");
        assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    }

    fn idem_run(r: &Rig, key: &str) -> String {
        let bytes = r
            .engine
            .tree
            .get(idem_key(&r.session.username, key))
            .expect("read")
            .expect("the key was written");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }
}
