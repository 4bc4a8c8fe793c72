//! `card`: the flows' module for the reader a run was started on: the card's summary and
//! balance through the purse layer, and the journaled load (tied to an ETC record, a group
//! order or, in the demo test mode, nothing) with the journal's receipt.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use cardd_api::Role;
use cardd_journal::{load_card, LoadError, LoadRequest};
use cardd_purse::Purse;
use cardd_script::mlua::{self, Lua, Table, Value};
use cardd_script::{
    fen_arg, install_module, json_value, positive_fen_arg, str_arg, LuaModule, RunContext,
};
use serde_json::json;

use crate::daemon::Daemon;
use crate::flows::RunScope;
use crate::readers::Holder;

/// `card`: the reader the run was started on.
#[derive(Clone)]
pub struct CardModule {
    daemon: Weak<Daemon>,
    flow: String,
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

    /// Runs a job on the run's reader, on the flow's own thread (no hand-off to the reader's
    /// worker; the flow thread may block while the worker finishes a queued job).
    /// `step` names the flow's step in the reader's APDU trace.
    pub(crate) fn on_reader<R>(
        &self,
        step: &str,
        job: impl FnOnce(&mut cardd_reader::Reader) -> R,
    ) -> mlua::Result<R> {
        let daemon = self.daemon()?;
        let reader = self.reader()?;
        let context = format!("flow {} step {step}", self.flow);
        daemon
            .readers
            .run_here(&reader, &self.holder, &context, job)
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
            flow: self.flow.clone(),
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
                lua.create_function(move |lua, opts: Option<mlua::Table>| {
                    let _call = ctx.enter("card")?;
                    let daemon = me.daemon()?;
                    let terminal = daemon.config.terminal_id;
                    // `card.info()` presents no PIN and starts no load; the online counter
                    // only with `card.info({online_counter = true})`.
                    let online = match &opts {
                        Some(t) => t.get::<Option<bool>>("online_counter")?.unwrap_or(false),
                        None => false,
                    };
                    let counters = if online {
                        crate::summary::Counters::online(&daemon)
                            .map_err(|e| lua_error(e.message))?
                    } else {
                        crate::summary::Counters::None
                    };
                    let summary = me
                        .on_reader(
                            if online {
                                "card.info online_counter"
                            } else {
                                "card.info"
                            },
                            move |reader| crate::summary::read(reader, terminal, counters),
                        )?
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
                    me.on_reader("card.check_record", move |reader| {
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
                        .on_reader("card.balance", |reader| {
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
                        .on_reader("card.read_log", move |reader| {
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
                        .on_reader("card.prove_load", move |reader| {
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
        let result = self.on_reader("card.load", move |reader| {
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
            .on_reader("card.settle_record", move |reader| {
                job_daemon.etc_service().and_then(|etc| {
                    etc.settle_record(reader, &record_id, &operator)
                        .map_err(crate::errors::ApiError::from)
                })
            })?
            .map_err(|e| lua_error(e.message))?;
        let value = json!({
            "record": cardd_api::etc::RecordView::from(&outcome.record),
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
            .on_reader("card.load_record", move |reader| {
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
        let record = cardd_api::etc::RecordView::from(&outcome.record);
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
            LoadFailure::Load(
                e @ (LoadError::VerdictContradicted { .. }
                | LoadError::LoadedSinceBackup(_)
                | LoadError::RestoredUnproven { .. }),
            ) => {
                cardd_etc::load_error(e).to_string()
            }
            LoadFailure::Load(LoadError::Unfunded(e)) => crate::errors::unfunded_load(e).message,
            LoadFailure::Load(other) => format!("圈存失败：{other}"),
        }
    }
}

impl std::fmt::Debug for CardModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardModule")
            .field("run_id", &self.run_id)
            .field("reader_id", &self.reader_id)
            .finish_non_exhaustive()
    }
}

impl CardModule {
    /// The module of one run.
    pub(crate) fn for_run(daemon: Weak<Daemon>, run: &RunScope) -> CardModule {
        CardModule {
            daemon,
            flow: run.flow.clone(),
            holder: run.holder.clone(),
            reader_id: run.reader_id.clone(),
            run_id: run.run_id.clone(),
            runtime: run.runtime.clone(),
            loads: Arc::new(AtomicU32::new(0)),
        }
    }
}
