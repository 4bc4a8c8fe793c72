//! `group`: group recharge (集团充值) as flows see it (flow API v1).
//!
//! Offered to runs started by a group operator. The flow shows the group and the card, asks
//! for the amount and the confirmation, and calls `group.recharge`, which does the money part
//! in Rust: it reads the card again, checks the seed's rules against the group's quota,
//! reserves the quota durably, credits the card through the journal (exactly once) and settles
//! or fails the order. The flow can neither skip the reservation nor forget the settlement.

use std::sync::{Arc, Weak};

use cardd_group::model::{recharge_rules, yuan, BatchRef};
use cardd_script::mlua::{self, Lua, Table, Value};
use cardd_script::{install_module, json_value, positive_fen_arg, str_arg, LuaModule, RunContext};
use serde_json::json;

use cardd_api::group::RechargeDone;
use cardd_api::Role;
use cardd_group::service::{CardOnReader, RechargeCard, RechargeRequest, RechargeStop};
use cardd_group::GroupError;

use crate::daemon::Daemon;
use crate::lua::card::CardModule;

/// Longest card number or batch id argument, in bytes.
const ARG_BYTES_MAX: usize = 64;

/// The module for one run.
pub(crate) struct GroupModule {
    daemon: Weak<Daemon>,
    card: CardModule,
    group_id: String,
    operator_name: String,
}

impl GroupModule {
    /// The module for a run, when its operator is a group operator and the group services are
    /// open.
    pub(crate) fn for_run(daemon: &Arc<Daemon>, card: &CardModule) -> Option<GroupModule> {
        daemon.group.as_ref()?;
        let operator = daemon.auth.get_operator(card.operator()).ok()?;
        Some(GroupModule {
            daemon: Arc::downgrade(daemon),
            card: card.clone(),
            group_id: operator.group_id?,
            operator_name: operator.display_name,
        })
    }

    fn daemon(&self) -> mlua::Result<Arc<Daemon>> {
        self.daemon
            .upgrade()
            .ok_or_else(|| lua_error("cardd 正在停止"))
    }
}

fn lua_error(message: impl ToString) -> mlua::Error {
    mlua::Error::RuntimeError(message.to_string())
}

impl LuaModule for GroupModule {
    fn name(&self) -> &'static str {
        "group"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        let me = Arc::new(GroupModule {
            daemon: self.daemon.clone(),
            card: self.card.clone(),
            group_id: self.group_id.clone(),
            operator_name: self.operator_name.clone(),
        });
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "info",
                lua.create_function(move |lua, ()| {
                    let _call = ctx.enter("group")?;
                    let daemon = me.daemon()?;
                    let svc = daemon
                        .group
                        .as_ref()
                        .ok_or_else(|| lua_error("集团充值未开放"))?;
                    let group = svc
                        .host
                        .group(&me.group_id)
                        .map_err(lua_error)?
                        .ok_or_else(|| lua_error("用户和密码错误：集团不存在"))?;
                    json_value(
                        lua,
                        &json!({
                            "group_id": group.group_id,
                            "group_name": group.name,
                            "terminal_no": group.terminal_no,
                            "available_quota": yuan(group.available_fen),
                            "available_quota_fen": group.available_fen,
                            "operator": me.card.operator(),
                            "operator_name": me.operator_name,
                        }),
                    )
                })?,
            )?;
        }
        {
            let ctx = ctx.clone();
            table.raw_set(
                "rules",
                lua.create_function(move |lua, ()| {
                    let _call = ctx.enter("group")?;
                    let rules = serde_json::to_value(recharge_rules()).map_err(lua_error)?;
                    json_value(lua, &rules)
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "recharge",
                lua.create_function(move |lua, args: Table| {
                    let _call = ctx.enter("group")?;
                    let amount = positive_fen_arg(args.raw_get::<Value>("amount")?)?;
                    let expected = match args.raw_get::<Value>("card_number")? {
                        Value::Nil => None,
                        v => Some(str_arg(lua, "card_number", v, ARG_BYTES_MAX)?),
                    };
                    let batch = match args.raw_get::<Value>("batch_id")? {
                        Value::Nil => None,
                        v => {
                            let batch_id = str_arg(lua, "batch_id", v, ARG_BYTES_MAX)?;
                            let index: i64 = args.raw_get("item")?;
                            let index = usize::try_from(index)
                                .map_err(|_| lua_error("item 应为批次中卡片的序号（从 0 开始）"))?;
                            Some(BatchRef { batch_id, index })
                        }
                    };
                    let daemon = me.daemon()?;
                    let value =
                        match recharge(&daemon, &me.card, expected.as_deref(), amount, batch) {
                            Ok(done) => serde_json::to_value(done).map_err(lua_error)?,
                            // The outcome is unknown: not an error (never "failed"), a result the
                            // flow shows as 结果待确认.
                            Err(RechargeStop {
                                message,
                                pending_order: Some(order_id),
                            }) => serde_json::json!({
                                "status": "unknown",
                                "order_id": order_id,
                                "message": message,
                            }),
                            Err(stop) => return Err(lua_error(stop.message)),
                        };
                    json_value(lua, &value)
                })?,
            )?;
        }
        {
            let (me, ctx) = (me.clone(), ctx.clone());
            table.raw_set(
                "batch",
                lua.create_function(move |lua, batch_id: Value| {
                    let _call = ctx.enter("group")?;
                    let batch_id = str_arg(lua, "batch_id", batch_id, ARG_BYTES_MAX)?;
                    let daemon = me.daemon()?;
                    let svc = daemon
                        .group
                        .as_ref()
                        .ok_or_else(|| lua_error("集团充值未开放"))?;
                    svc.reconcile(daemon.journal.as_deref())
                        .map_err(|e| lua_error(crate::errors::ApiError::from(e).message))?;
                    let report = svc
                        .batch_report(&batch_id)
                        .map_err(|e| lua_error(crate::errors::ApiError::from(e).message))?
                        .filter(|r| r.group_id == me.group_id)
                        .ok_or_else(|| lua_error(format!("未找到本集团的批量充值 {batch_id}")))?;
                    let value = serde_json::to_value(report).map_err(lua_error)?;
                    json_value(lua, &value)
                })?,
            )?;
        }
        install_module(lua, "group", table)
    }
}

/// One card recharge from the group's quota on the run's reader (see
/// [`GroupService::recharge`]). Errors are messages for the operator.
pub(crate) fn recharge(
    daemon: &Arc<Daemon>,
    card: &CardModule,
    expected_card: Option<&str>,
    amount_fen: i64,
    batch: Option<BatchRef>,
) -> Result<RechargeDone, RechargeStop> {
    let svc = daemon.group_service().map_err(|e| e.message)?;
    let operator = card.operator().to_owned();
    let who = daemon
        .auth
        .get_operator(&operator)
        .map_err(|e| e.to_string())?;
    let group_id = match (who.role, who.group_id) {
        (Role::GroupOperator, Some(g)) => g,
        _ => return Err(GroupError::NotGroupOperator(operator).to_string().into()),
    };
    let mut run_card = RunCard { daemon, card };
    svc.recharge(
        daemon.journal.as_deref(),
        &mut run_card,
        RechargeRequest {
            group_id,
            operator,
            expected_card: expected_card.map(str::to_owned),
            amount_fen,
            batch,
        },
    )
}

/// The run's reader as the card of a recharge.
struct RunCard<'a> {
    daemon: &'a Arc<Daemon>,
    card: &'a CardModule,
}

impl RechargeCard for RunCard<'_> {
    fn read(&mut self) -> Result<CardOnReader, String> {
        let terminal = self.daemon.config.terminal_id;
        let summary = self
            .card
            .on_reader("group card read", move |reader| {
                crate::summary::read(reader, terminal, crate::summary::Counters::None)
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)?;
        Ok(CardOnReader {
            city: summary.kind == Some(crate::summary::CardKind::City),
            card_number: summary.card_number,
            balance_fen: summary.balance_fen,
        })
    }

    fn recover(&mut self) {
        let d = self.daemon.clone();
        if let Ok(Some(outcome)) = self.card.on_reader("group recover", move |reader| {
            crate::recovery::recover_on(&d, reader)
        }) {
            tracing::info!(
                ?outcome,
                "pending load settled from the card before a recharge"
            );
        }
    }

    fn next_txn_id(&mut self) -> String {
        self.card.next_txn_id()
    }

    fn load(
        &mut self,
        txn_id: String,
        amount_fen: u32,
        card_number: String,
        funding: cardd_journal::Funding,
    ) -> Result<cardd_journal::LoadReceipt, String> {
        self.card
            .load_as(txn_id, amount_fen, Some(card_number), funding)
            .map_err(|e| e.to_string())
    }
}
