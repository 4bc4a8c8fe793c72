//! [`PgGroupHost`]: group recharge (集团充值) in PostgreSQL. It implements
//! [`cardd_group::GroupHost`], whose documentation states the ledger, order and top-up rules it
//! keeps, with the same refusals, word for word, as the embedded `cardd_store::EmbeddedGroupHost`
//! (one trait-level suite runs against both: `daemon/domain/group/tests/suite/mod.rs`).
//!
//! **Tables** (`migrations/0003_groups.sql`): `groups` (name, terminal), `group_ledger` (the
//! append-only quota ledger), `group_orders` (recharge orders, each order's status history as
//! JSON), `group_topups` (quota top-ups, likewise), `group_batches` and `group_batch_items`,
//! `group_id_days` (the last id sequence of each kind and China day).
//!
//! **The quota is the ledger.** A group row holds no quota: its available quota and ledger
//! sequence are those of its last ledger entry. Entries are only inserted (no statement here
//! updates or deletes one), and the schema chains them: entry `n` starts from the balance after
//! entry `n − 1` (a foreign key), ends at `before + amount` and never below zero nor above
//! [`QUOTA_FEN_MAX`] (checks). So the available quota is always the sum of the ledger, and
//! [`PgGroupHost::verify`] checks it again together with the orders' and top-ups' entries.
//!
//! **Concurrency.** Every change is one SERIALIZABLE transaction ([`Database::transaction`]):
//! a reservation reads the group's last ledger entry, the card's unsettled orders and the load
//! transaction's owner in the same transaction that appends the entry and inserts the order. Of
//! two reservations that would together overdraw the quota, or both pass for one card,
//! PostgreSQL aborts one; its retry sees the other and is refused as the trait says. No row
//! locks are relied on. (A partial unique index on the card's unsettled orders is a backstop.)

use std::future::Future;
use std::sync::Arc;

use cardd_etc::model::{LOAD_TXN_ID_CHARS_MAX, OPERATOR_CHARS_MAX};
use cardd_etc::{validate, HostError};
use cardd_group::model::*;
use cardd_group::{check_recharge, check_topup_amount, GroupError, GroupHost};
use cardd_journal::clock::{china_date, china_seconds, Clock, SystemClock};
use cardd_journal::CHINA_OFFSET;
use time::OffsetDateTime;
use tokio_postgres::{Client, Row};

use crate::db::{self, body, Database, DbFailure, Mode, TxError};

type TxResult<T> = db::TxResult<T, GroupError>;

impl From<GroupError> for TxError<GroupError> {
    fn from(e: GroupError) -> Self {
        TxError::Refused(e)
    }
}

/// A database failure as the group domain reports it: [`GroupError::Storage`] (not a
/// refusal), in the issuer host's words for the same failure (unreachable, commit not
/// confirmed, a schema newer than this program).
impl From<DbFailure> for GroupError {
    fn from(e: DbFailure) -> Self {
        GroupError::Storage(HostError::from(e).to_string())
    }
}

/// The issuer host's refusals and storage failures, as the group domain reports them (the same
/// words as the embedded group host's).
fn host_error(e: HostError) -> GroupError {
    if e.is_refusal() {
        GroupError::Invalid(e.to_string())
    } else {
        GroupError::Storage(e.to_string())
    }
}

fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> GroupError {
    host_error(HostError::Corrupt {
        key: key.into(),
        reason: reason.into(),
    })
}

fn china(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(CHINA_OFFSET)
}

/// A ledger kind's wire name (as `cardd_api` serialises it).
fn kind_code(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::TopUp => "top_up",
        LedgerKind::Reserve => "reserve",
        LedgerKind::Refund => "refund",
    }
}

fn kind_of(key: &str, code: &str) -> Result<LedgerKind, GroupError> {
    [LedgerKind::TopUp, LedgerKind::Reserve, LedgerKind::Refund]
        .into_iter()
        .find(|k| kind_code(*k) == code)
        .ok_or_else(|| corrupt(key, format!("unknown ledger kind {code}")))
}

fn order_status_of(key: &str, code: &str) -> Result<OrderStatus, GroupError> {
    OrderStatus::ALL
        .into_iter()
        .find(|s| s.code() == code)
        .ok_or_else(|| corrupt(key, format!("unknown status {code}")))
}

fn topup_status_of(key: &str, code: &str) -> Result<TopUpStatus, GroupError> {
    TopUpStatus::ALL
        .into_iter()
        .find(|s| s.code() == code)
        .ok_or_else(|| corrupt(key, format!("unknown status {code}")))
}

fn unsigned(key: &str, n: i64) -> Result<u64, GroupError> {
    u64::try_from(n).map_err(|_| corrupt(key, format!("negative sequence {n}")))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn history_json(key: &str, history: &[StatusChange]) -> Result<serde_json::Value, GroupError> {
    serde_json::to_value(history).map_err(|e| {
        host_error(HostError::Encode {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    })
}

fn history_of(key: &str, value: serde_json::Value) -> Result<Vec<StatusChange>, GroupError> {
    serde_json::from_value(value).map_err(|e| corrupt(key, e.to_string()))
}

/// Rows past the query limit: one more than [`QUERY_ROWS_MAX`] is asked for.
fn rows_limit() -> i64 {
    i64::try_from(QUERY_ROWS_MAX + 1).unwrap_or(i64::MAX)
}

// ---- The same input checks, word for word, as the embedded group host's. ----

/// Ids are looked up as given, bounded.
fn bounded_id(id: &str) -> Result<&str, GroupError> {
    if id.is_empty() || id.len() > 32 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(host_error(HostError::InvalidField {
            field: "编号",
            reason: "应为 1 到 32 个字符".into(),
        }));
    }
    Ok(id)
}

fn operator(name: &str) -> Result<String, GroupError> {
    validate::text("操作员", name, OPERATOR_CHARS_MAX).map_err(host_error)
}

fn reason(text: &str) -> Result<String, GroupError> {
    validate::text("原因", text, AUDIT_REASON_CHARS_MAX).map_err(host_error)
}

fn group_id(id: &str) -> Result<String, GroupError> {
    validate::text("集团编号", id, GROUP_ID_CHARS_MAX).map_err(host_error)
}

/// A failure message, bounded, or 充值失败 when none was given.
fn failure_text(text: &str) -> String {
    let bounded: String = text.chars().take(FAILURE_CHARS_MAX).collect();
    let t = bounded.trim();
    if t.is_empty() {
        "充值失败".into()
    } else {
        t.chars().filter(|c| !c.is_control()).collect()
    }
}

fn bad_state(
    what: &'static str,
    id: &str,
    current: &'static str,
    action: &'static str,
) -> GroupError {
    GroupError::BadState {
        what,
        id: id.to_owned(),
        current,
        action,
    }
}

fn push_history(history: &mut Vec<StatusChange>, change: StatusChange) {
    history.push(change);
    while history.len() > GROUP_HISTORY_MAX {
        history.remove(1);
    }
}

/// Records a load's balances on an order, refused unless `after = before + amount`.
fn set_balances(order: &mut RechargeOrder, before: i64, after: i64) -> Result<(), GroupError> {
    if before.checked_add(order.amount_fen) != Some(after) {
        return Err(GroupError::BalanceMismatch {
            order_id: order.order_id.clone(),
            before_fen: before,
            amount_fen: order.amount_fen,
            after_fen: after,
        });
    }
    order.balance_before_fen = Some(before);
    order.balance_after_fen = Some(after);
    Ok(())
}

// ---- Rows. ----

const GROUP_SELECT: &str = "SELECT g.group_id, g.name, g.terminal_no, g.created_at, \
         g.updated_at, coalesce(l.balance_after_fen, 0), coalesce(l.seq, 0) \
     FROM groups g LEFT JOIN LATERAL (SELECT seq, balance_after_fen FROM group_ledger \
         WHERE group_id = g.group_id ORDER BY seq DESC LIMIT 1) l ON true";

fn group_of(row: &Row) -> Result<Group, GroupError> {
    let group_id: String = row.get(0);
    let key = format!("groups/{group_id}");
    Ok(Group {
        name: row.get(1),
        terminal_no: row.get(2),
        created_at: china(row.get(3)),
        updated_at: china(row.get(4)),
        available_fen: row.get(5),
        ledger_seq: unsigned(&key, row.get(6))?,
        group_id,
    })
}

async fn group_in(c: &Client, group_id: &str) -> TxResult<Option<Group>> {
    let row = c
        .query_opt(
            &format!("{GROUP_SELECT} WHERE g.group_id = $1"),
            &[&group_id],
        )
        .await?;
    Ok(row.as_ref().map(group_of).transpose()?)
}

async fn existing_group(c: &Client, group_id: &str) -> TxResult<Group> {
    match group_in(c, group_id).await? {
        Some(g) => Ok(g),
        None => Err(GroupError::GroupNotFound(group_id.to_owned()).into()),
    }
}

const LEDGER_COLUMNS: &str =
    "group_id, seq, at, kind, amount_fen, balance_after_fen, reference, operator";

fn entry_of(row: &Row) -> Result<LedgerEntry, GroupError> {
    let group_id: String = row.get(0);
    let seq: i64 = row.get(1);
    let key = format!("group_ledger/{group_id}/{seq}");
    Ok(LedgerEntry {
        seq: unsigned(&key, seq)?,
        at: china(row.get(2)),
        kind: kind_of(&key, row.get(3))?,
        amount_fen: row.get(4),
        balance_after_fen: row.get(5),
        reference: row.get(6),
        operator: row.get(7),
        group_id,
    })
}

const ORDER_COLUMNS: &str = "order_id, group_id, operator, card_number, amount_fen, \
     card_balance_fen, balance_before_fen, balance_after_fen, quota_before_fen, quota_after_fen, \
     txn_id, batch_id, batch_index, status, failure, created_at, updated_at, history";

fn order_of(row: &Row) -> Result<RechargeOrder, GroupError> {
    let order_id: String = row.get(0);
    let key = format!("group_orders/{order_id}");
    let batch_id: Option<String> = row.get(11);
    let batch_index: Option<i32> = row.get(12);
    let batch = match (batch_id, batch_index) {
        (Some(batch_id), Some(index)) => Some(BatchRef {
            batch_id,
            index: usize::try_from(index)
                .map_err(|_| corrupt(&key, format!("batch index {index}")))?,
        }),
        _ => None,
    };
    let status: String = row.get(13);
    Ok(RechargeOrder {
        group_id: row.get(1),
        operator: row.get(2),
        card_number: row.get(3),
        amount_fen: row.get(4),
        card_balance_fen: row.get(5),
        balance_before_fen: row.get(6),
        balance_after_fen: row.get(7),
        quota_before_fen: row.get(8),
        quota_after_fen: row.get(9),
        txn_id: row.get(10),
        batch,
        status: order_status_of(&key, &status)?,
        failure: row.get(14),
        created_at: china(row.get(15)),
        updated_at: china(row.get(16)),
        history: history_of(&key, row.get(17))?,
        order_id,
    })
}

pub(crate) async fn order_in(c: &Client, order_id: &str) -> TxResult<Option<RechargeOrder>> {
    let row = c
        .query_opt(
            &format!("SELECT {ORDER_COLUMNS} FROM group_orders WHERE order_id = $1"),
            &[&order_id],
        )
        .await?;
    Ok(row.as_ref().map(order_of).transpose()?)
}

const TOPUP_COLUMNS: &str = "topup_id, group_id, operator, amount_fen, remark, status, \
     bank_serial, bank_message, auditor, created_at, updated_at, history";

fn topup_of(row: &Row) -> Result<TopUp, GroupError> {
    let topup_id: String = row.get(0);
    let key = format!("group_topups/{topup_id}");
    let status: String = row.get(5);
    Ok(TopUp {
        group_id: row.get(1),
        operator: row.get(2),
        amount_fen: row.get(3),
        remark: row.get(4),
        status: topup_status_of(&key, &status)?,
        bank_serial: row.get(6),
        bank_message: row.get(7),
        auditor: row.get(8),
        created_at: china(row.get(9)),
        updated_at: china(row.get(10)),
        history: history_of(&key, row.get(11))?,
        topup_id,
    })
}

async fn topup_in(c: &Client, topup_id: &str) -> TxResult<Option<TopUp>> {
    let row = c
        .query_opt(
            &format!("SELECT {TOPUP_COLUMNS} FROM group_topups WHERE topup_id = $1"),
            &[&topup_id],
        )
        .await?;
    Ok(row.as_ref().map(topup_of).transpose()?)
}

async fn insert_topup(c: &Client, t: &TopUp) -> TxResult<()> {
    let history = history_json(&t.topup_id, &t.history)?;
    c.execute(
        "INSERT INTO group_topups (topup_id, group_id, operator, amount_fen, remark, status, \
             bank_serial, bank_message, auditor, created_at, updated_at, history) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &t.topup_id,
            &t.group_id,
            &t.operator,
            &t.amount_fen,
            &t.remark,
            &t.status.code(),
            &t.bank_serial,
            &t.bank_message,
            &t.auditor,
            &t.created_at,
            &t.updated_at,
            &history,
        ],
    )
    .await?;
    Ok(())
}

async fn update_topup(c: &Client, t: &TopUp) -> TxResult<()> {
    let history = history_json(&t.topup_id, &t.history)?;
    c.execute(
        "UPDATE group_topups SET status = $2, bank_serial = $3, bank_message = $4, \
             auditor = $5, updated_at = $6, history = $7 WHERE topup_id = $1",
        &[
            &t.topup_id,
            &t.status.code(),
            &t.bank_serial,
            &t.bank_message,
            &t.auditor,
            &t.updated_at,
            &history,
        ],
    )
    .await?;
    Ok(())
}

async fn batch_in(c: &Client, batch_id: &str) -> TxResult<Option<Batch>> {
    let Some(row) = c
        .query_opt(
            "SELECT group_id, operator, created_at FROM group_batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let items = c
        .query(
            "SELECT card_number, amount_fen, order_id FROM group_batch_items \
             WHERE batch_id = $1 ORDER BY idx",
            &[&batch_id],
        )
        .await?
        .iter()
        .map(|i| BatchItem {
            card_number: i.get(0),
            amount_fen: i.get(1),
            order_id: i.get(2),
        })
        .collect();
    Ok(Some(Batch {
        batch_id: batch_id.to_owned(),
        group_id: row.get(0),
        operator: row.get(1),
        items,
        created_at: china(row.get(2)),
    }))
}

/// The next id `<prefix><YYYYMMDD><seq:06>` of the day, its sequence taken.
async fn next_id(c: &Client, prefix: &str, date: &str) -> TxResult<String> {
    let row = c
        .query_one(
            "INSERT INTO group_id_days (prefix, day, last_seq) VALUES ($1, $2, 1) \
             ON CONFLICT (prefix, day) DO UPDATE SET last_seq = group_id_days.last_seq + 1 \
             RETURNING last_seq",
            &[&prefix, &date],
        )
        .await?;
    let seq: i32 = row.get(0);
    if u32::try_from(seq).map_or(true, |s| s > ID_SEQ_PER_DAY_MAX) {
        return Err(GroupError::IdsExhausted(date.to_owned()).into());
    }
    Ok(format!("{prefix}{date}{seq:06}"))
}

/// Appends a ledger entry moving `group`'s quota by `amount_fen` (refused below zero or above
/// [`QUOTA_FEN_MAX`]) and marks the group changed; `group` is updated to match.
async fn move_quota(
    c: &Client,
    group: &mut Group,
    kind: LedgerKind,
    amount_fen: i64,
    reference: &str,
    operator: &str,
    at: OffsetDateTime,
) -> TxResult<LedgerEntry> {
    let before = group.available_fen;
    let after = match before.checked_add(amount_fen) {
        Some(a) if (0..=QUOTA_FEN_MAX).contains(&a) => a,
        Some(a) if a < 0 => {
            return Err(GroupError::QuotaInsufficient {
                available_fen: before,
                amount_fen: -amount_fen,
            }
            .into())
        }
        _ => return Err(GroupError::QuotaOverflow.into()),
    };
    let seq = group.ledger_seq + 1;
    let entry = LedgerEntry {
        group_id: group.group_id.clone(),
        seq,
        at,
        kind,
        amount_fen,
        balance_after_fen: after,
        reference: reference.to_owned(),
        operator: operator.to_owned(),
    };
    let prev_seq = (seq > 1).then(|| signed(seq - 1));
    c.execute(
        "INSERT INTO group_ledger (group_id, seq, prev_seq, at, kind, amount_fen, \
             balance_before_fen, balance_after_fen, reference, operator) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &entry.group_id,
            &signed(seq),
            &prev_seq,
            &at,
            &kind_code(kind),
            &amount_fen,
            &before,
            &after,
            &entry.reference,
            &entry.operator,
        ],
    )
    .await?;
    c.execute(
        "UPDATE groups SET updated_at = $2 WHERE group_id = $1",
        &[&entry.group_id, &at],
    )
    .await?;
    group.ledger_seq = seq;
    group.available_fen = after;
    group.updated_at = at;
    Ok(entry)
}

/// Which statuses an order change starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FromStatus {
    /// Exactly this one.
    Exactly(OrderStatus),
    /// Either unsettled status (充值中 or 结果待确认).
    Unsettled,
}

/// What an order change does besides moving the status.
#[derive(Debug)]
pub(crate) enum Effect {
    Nothing,
    /// The load's balances (`after = before + amount`), if known.
    Balances(Option<(i64, i64)>),
    /// Why the load failed.
    Failure(String),
    /// The quota comes back to the group (one ledger entry).
    Refund,
}

/// Moves an order `from → to` in the caller's transaction (refused from any other status).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn change_order_in(
    c: &Client,
    order_id: &str,
    from: FromStatus,
    to: OrderStatus,
    action: &'static str,
    operator: &str,
    reason: Option<&String>,
    effect: &Effect,
    at: OffsetDateTime,
) -> TxResult<RechargeOrder> {
    let Some(mut order) = order_in(c, order_id).await? else {
        return Err(GroupError::NotFound {
            what: "充值订单",
            id: order_id.to_owned(),
        }
        .into());
    };
    let from = match from {
        FromStatus::Exactly(s) => s,
        // An order that is not unsettled is refused naming its real status.
        FromStatus::Unsettled if order.status.is_unsettled() => order.status,
        FromStatus::Unsettled => OrderStatus::Reserved,
    };
    // Settled already with these balances (a retry whose answer was lost, or the host booked
    // it from the card's TAC first): answered as it is, not refused. Succeeded is final.
    if let (OrderStatus::Succeeded, OrderStatus::Succeeded, Effect::Balances(Some((b, a)))) =
        (to, order.status, effect)
    {
        if from != OrderStatus::Failed
            && order.balance_before_fen == Some(*b)
            && order.balance_after_fen == Some(*a)
        {
            return Ok(order);
        }
    }
    if order.status != from {
        return Err(bad_state("充值订单", &order.order_id, order.status.label(), action).into());
    }
    match effect {
        Effect::Nothing => {}
        Effect::Balances(None) => {}
        Effect::Balances(Some((before, after))) => set_balances(&mut order, *before, *after)?,
        Effect::Failure(why) => order.failure = Some(why.clone()),
        Effect::Refund => {
            refuse_refund_of_open_or_landed_in(c, &order).await?;
            let mut group = existing_group(c, &order.group_id).await?;
            move_quota(
                c,
                &mut group,
                LedgerKind::Refund,
                order.amount_fen,
                &order.order_id,
                operator,
                at,
            )
            .await?;
        }
    }
    order.status = to;
    order.updated_at = at;
    push_history(
        &mut order.history,
        StatusChange {
            at,
            operator: operator.to_owned(),
            from: Some(from.code().into()),
            to: to.code().into(),
            reason: reason.cloned(),
        },
    );
    settle_authorization_in(c, &order, operator, reason, at).await?;
    let history = history_json(&order.order_id, &order.history)?;
    c.execute(
        "UPDATE group_orders SET status = $2, failure = $3, balance_before_fen = $4, \
             balance_after_fen = $5, updated_at = $6, history = $7 WHERE order_id = $1",
        &[
            &order.order_id,
            &order.status.code(),
            &order.failure,
            &order.balance_before_fen,
            &order.balance_after_fen,
            &at,
            &history,
        ],
    )
    .await?;
    Ok(order)
}

/// Refuses, in the caller's transaction, to refund an order whose load the host authorised and
/// either booked (the card's TAC proved the money is on it) or has not settled (open, or waiting
/// for people: 待核对): whoever asks, the host's own record of the card's word comes first.
async fn refuse_refund_of_open_or_landed_in(c: &Client, order: &RechargeOrder) -> TxResult<()> {
    let Some(row) = c
        .query_opt(
            "SELECT state FROM load_authorizations WHERE funding_kind = 'group_order' \
             AND funding_id = $1 AND state IN ('booked', 'authorized', 'reconcile') LIMIT 1",
            &[&order.order_id],
        )
        .await?
    else {
        return Ok(());
    };
    let state: String = row.get(0);
    let why = if state == "booked" {
        "卡片已圈存成功（发卡方后台已验证卡片 TAC）：该订单的金额已在卡内，不能退款；请改为充值成功"
    } else {
        "该订单的圈存结果尚未确认（发卡方后台待核对）：请先在后台“待核对”中由两人核定，或出示卡片确认结果后再审核"
    };
    Err(GroupError::EvidenceConflict(format!("订单 {} 不能退款：{why}", order.order_id)).into())
}

/// Keeps the host's load authorisation of `order` (if a site's load was authorised by the host
/// under the order's transaction) in step with the order, in the caller's transaction: an order
/// settled as succeeded books it, a failed or refunded order releases it; an order left
/// 结果待确认 leaves it open (the card will decide). Authorisations already settled are left
/// as they are, except that an auditor's 改为充值成功 books a released one.
async fn settle_authorization_in(
    c: &Client,
    order: &RechargeOrder,
    operator: &str,
    reason: Option<&String>,
    at: OffsetDateTime,
) -> TxResult<()> {
    let (state, from): (&str, &[&str]) = match order.status {
        OrderStatus::Succeeded => ("booked", &["authorized", "reconcile", "released"]),
        OrderStatus::Failed | OrderStatus::Refunded => ("released", &["authorized", "reconcile"]),
        OrderStatus::Reserved | OrderStatus::Pending => return Ok(()),
    };
    let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
    c.execute(
        "UPDATE load_authorizations SET state = $2, settled_at = $3, settled_by = $4, \
             reason = $5 WHERE txn_id = $1 AND funding_kind = 'group_order' \
             AND funding_id = $6 AND state = ANY($7)",
        &[
            &order.txn_id,
            &state,
            &at,
            &operator,
            &reason,
            &order.order_id,
            &from,
        ],
    )
    .await?;
    Ok(())
}

/// What [`PgGroupHost::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupVerifyReport {
    /// Groups.
    pub groups: u64,
    /// Ledger entries.
    pub ledger_entries: u64,
    /// Orders.
    pub orders: u64,
    /// Top-ups.
    pub topups: u64,
}

/// Consistency checks of [`PgGroupHost::verify`]: each query returns the key and what is wrong
/// of the first offending row, if any.
const VERIFY_QUERIES: &[&str] = &[
    // The ledger of each group is 1, 2, 3, … and its running balance is the sum of the amounts.
    "SELECT group_id, 'ledger sequence or running balance broken' FROM (\
         SELECT group_id, seq, balance_after_fen, \
             row_number() OVER w AS n, sum(amount_fen) OVER w AS total \
         FROM group_ledger WINDOW w AS (PARTITION BY group_id ORDER BY seq)) x \
     WHERE seq <> n OR balance_after_fen <> total LIMIT 1",
    // Every ledger entry belongs to an order or top-up of its group, of the matching kind.
    "SELECT l.group_id || '/' || l.seq, 'ledger entry without its order or top-up' \
     FROM group_ledger l \
     LEFT JOIN group_orders o ON o.order_id = l.reference AND o.group_id = l.group_id \
     LEFT JOIN group_topups t ON t.topup_id = l.reference AND t.group_id = l.group_id \
     WHERE NOT ((l.kind IN ('reserve', 'refund') AND o.order_id IS NOT NULL) \
             OR (l.kind = 'top_up' AND t.topup_id IS NOT NULL)) LIMIT 1",
    // Every order took its amount once, and got it back once exactly when refunded.
    "SELECT o.order_id, 'order and ledger disagree' FROM group_orders o \
     WHERE (SELECT count(*) FROM group_ledger l WHERE l.reference = o.order_id \
                AND l.kind = 'reserve' AND l.amount_fen = -o.amount_fen) <> 1 \
        OR (SELECT count(*) FROM group_ledger l WHERE l.reference = o.order_id \
                AND l.kind = 'refund' AND l.amount_fen = o.amount_fen) \
           <> CASE WHEN o.status = 'refunded' THEN 1 ELSE 0 END \
        OR (SELECT count(*) FROM group_ledger l WHERE l.reference = o.order_id) \
           <> CASE WHEN o.status = 'refunded' THEN 2 ELSE 1 END LIMIT 1",
    // A top-up grew the quota once exactly when approved.
    "SELECT t.topup_id, 'top-up and ledger disagree' FROM group_topups t \
     WHERE (SELECT count(*) FROM group_ledger l WHERE l.reference = t.topup_id \
                AND l.kind = 'top_up' AND l.amount_fen = t.amount_fen) \
           <> CASE WHEN t.status = 'approved' THEN 1 ELSE 0 END \
        OR (SELECT count(*) FROM group_ledger l WHERE l.reference = t.topup_id) \
           <> CASE WHEN t.status = 'approved' THEN 1 ELSE 0 END LIMIT 1",
    // A batch item's order serves that item.
    "SELECT i.batch_id || '/' || i.idx, 'batch item and order disagree' \
     FROM group_batch_items i LEFT JOIN group_orders o ON o.order_id = i.order_id \
     WHERE i.order_id IS NOT NULL AND (o.order_id IS NULL OR o.batch_id IS DISTINCT FROM \
         i.batch_id OR o.batch_index IS DISTINCT FROM i.idx \
         OR o.card_number <> i.card_number OR o.amount_fen <> i.amount_fen) LIMIT 1",
];

/// Group recharge on PostgreSQL. Its calls block the calling thread on the database's runtime
/// (see [`Database`]): call them from threads of their own, not from a thread of an async
/// runtime.
pub struct PgGroupHost {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgGroupHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgGroupHost")
            .field("db", &self.db)
            .field("clock", &self.clock)
            .finish()
    }
}

impl PgGroupHost {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with the system clock
    /// and brings the schema up to date ([`Database::open`]); refuses a newer schema.
    pub fn open(url: &str) -> Result<PgGroupHost, GroupError> {
        PgGroupHost::open_with_clock(url, Arc::new(SystemClock))
    }

    /// [`PgGroupHost::open`] with another clock (tests).
    pub fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<PgGroupHost, GroupError> {
        Ok(PgGroupHost::new(Arc::new(Database::open(url)?), clock))
    }

    /// Group recharge in an open database (shared with the host's other stores).
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgGroupHost {
        PgGroupHost { db, clock }
    }

    /// The database the host uses.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Makes the next change lose its connection right before COMMIT (the server ends the
    /// session), to test that nothing of it remains. For tests of failure handling.
    #[doc(hidden)]
    pub fn drop_connection_before_next_commit(&self) {
        self.db.drop_connection_before_next_commit();
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    fn call<T>(&self, fut: impl Future<Output = Result<T, GroupError>>) -> Result<T, GroupError> {
        self.db.call(fut)
    }

    async fn transaction<'e, T>(
        &self,
        mode: Mode,
        what: &'static str,
        body: impl Fn(deadpool_postgres::Client) -> db::TxFuture<'e, T, GroupError>,
    ) -> Result<T, GroupError> {
        self.db.transaction(mode, what, body).await
    }

    /// Checks that each group's ledger runs 1, 2, 3, … with a running balance that is the sum
    /// of its amounts (so the available quota, the last balance, is the ledger's sum), that
    /// every entry belongs to an order or top-up of its group, that every order took its
    /// amount once and got it back once exactly when refunded, that a top-up grew the quota
    /// once exactly when approved, and that batch items and their orders agree. Fails closed
    /// ([`GroupError::Storage`], 已损坏) on the first disagreement.
    pub fn verify(&self) -> Result<GroupVerifyReport, GroupError> {
        self.call(self.transaction(
            Mode::Read,
            "核对集团数据",
            body!(|c| async {
                for sql in VERIFY_QUERIES {
                    if let Some(row) = c.query_opt(*sql, &[]).await? {
                        let (key, why): (String, String) = (row.get(0), row.get(1));
                        return Err(corrupt(key, why).into());
                    }
                }
                let row = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM groups), (SELECT count(*) FROM group_ledger), \
                                (SELECT count(*) FROM group_orders), \
                                (SELECT count(*) FROM group_topups)",
                        &[],
                    )
                    .await?;
                let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
                Ok(GroupVerifyReport {
                    groups: count(0),
                    ledger_entries: count(1),
                    orders: count(2),
                    topups: count(3),
                })
            }),
        ))
    }

    /// Adds the [`DEMO_GROUPS`] that are missing, each with an approved opening transfer; what
    /// exists is left alone. Returns how many groups were added.
    pub fn seed_demo(&self) -> Result<u32, GroupError> {
        let at = DEMO_GROUPS_AT;
        let date = china_date(at);
        let day = &date;
        let added = self.call(self.transaction(
            Mode::Write,
            "添加演示集团",
            body!(|c| async {
                let mut added: u32 = 0;
                for (id, name, terminal, quota) in DEMO_GROUPS {
                    let inserted = c
                        .execute(
                            "INSERT INTO groups (group_id, name, terminal_no, created_at, \
                                 updated_at) VALUES ($1, $2, $3, $4, $4) \
                             ON CONFLICT (group_id) DO NOTHING",
                            &[id, name, terminal, &at],
                        )
                        .await?;
                    if inserted == 0 {
                        continue;
                    }
                    let mut group = existing_group(c, id).await?;
                    let topup_id = next_id(c, "GT", day).await?;
                    let topup = TopUp {
                        topup_id: topup_id.clone(),
                        group_id: (*id).into(),
                        operator: "cardd-demo".into(),
                        amount_fen: *quota,
                        remark: "演示开户额度".into(),
                        status: TopUpStatus::Approved,
                        bank_serial: Some(format!("SANDBOX-DEMO-{id}")),
                        bank_message: None,
                        auditor: Some("cardd-demo".into()),
                        created_at: at,
                        updated_at: at,
                        history: vec![StatusChange {
                            at,
                            operator: "cardd-demo".into(),
                            from: None,
                            to: TopUpStatus::Approved.code().into(),
                            reason: Some("演示数据".into()),
                        }],
                    };
                    insert_topup(c, &topup).await?;
                    move_quota(
                        c,
                        &mut group,
                        LedgerKind::TopUp,
                        *quota,
                        &topup_id,
                        "cardd-demo",
                        at,
                    )
                    .await?;
                    added += 1;
                }
                Ok(added)
            }),
        ))?;
        Ok(added)
    }

    /// Moves an order `from → to` with `effect`, in one serializable transaction.
    #[allow(clippy::too_many_arguments)]
    fn change_order(
        &self,
        order_id: &str,
        from: FromStatus,
        to: OrderStatus,
        action: &'static str,
        operator: &str,
        reason: Option<String>,
        effect: Effect,
    ) -> Result<RechargeOrder, GroupError> {
        let order_id = bounded_id(order_id)?;
        let at = self.now();
        let (reason, effect) = (reason.as_ref(), &effect);
        let order = self.call(self.transaction(
            Mode::Write,
            "修改集团充值订单",
            body!(|c| async {
                change_order_in(c, order_id, from, to, action, operator, reason, effect, at).await
            }),
        ))?;
        tracing::info!(order = %order.order_id, status = order.status.code(), "group order changed");
        Ok(order)
    }
}

impl GroupHost for PgGroupHost {
    fn group(&self, group_id: &str) -> Result<Option<Group>, GroupError> {
        let id = self::group_id(group_id)?;
        let id = &id;
        self.call(self.transaction(
            Mode::Read,
            "查询集团",
            body!(|c| async { group_in(c, id).await }),
        ))
    }

    fn groups(&self) -> Result<Vec<Group>, GroupError> {
        let limit = i64::try_from(GROUPS_MAX).unwrap_or(i64::MAX);
        self.call(self.transaction(
            Mode::Read,
            "查询集团",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!("{GROUP_SELECT} ORDER BY g.group_id COLLATE \"C\" LIMIT $1"),
                        &[&limit],
                    )
                    .await?;
                Ok(rows.iter().map(group_of).collect::<Result<Vec<_>, _>>()?)
            }),
        ))
    }

    fn upsert_group(&self, input: &GroupInput) -> Result<Group, GroupError> {
        let id = group_id(&input.group_id)?;
        if id.contains('/') {
            return Err(host_error(HostError::InvalidField {
                field: "集团编号",
                reason: "不能含有“/”".into(),
            }));
        }
        let name =
            validate::text("集团名称", &input.name, GROUP_NAME_CHARS_MAX).map_err(host_error)?;
        let terminal = validate::text("终端编号", &input.terminal_no, TERMINAL_NO_CHARS_MAX)
            .map_err(host_error)?;
        let at = self.now();
        let groups_max = i64::try_from(GROUPS_MAX).unwrap_or(i64::MAX);
        let (id, name, terminal) = (&id, &name, &terminal);
        self.call(self.transaction(
            Mode::Write,
            "保存集团",
            body!(|c| async {
                let updated = c
                    .execute(
                        "UPDATE groups SET name = $2, terminal_no = $3, updated_at = $4 \
                         WHERE group_id = $1",
                        &[id, name, terminal, &at],
                    )
                    .await?;
                if updated == 0 {
                    let count: i64 = c
                        .query_one("SELECT count(*) FROM groups", &[])
                        .await?
                        .get(0);
                    if count >= groups_max {
                        return Err(
                            GroupError::Batch(format!("集团数量已达上限 {GROUPS_MAX}")).into()
                        );
                    }
                    c.execute(
                        "INSERT INTO groups (group_id, name, terminal_no, created_at, \
                             updated_at) VALUES ($1, $2, $3, $4, $4)",
                        &[id, name, terminal, &at],
                    )
                    .await?;
                }
                existing_group(c, id).await
            }),
        ))
    }

    fn ledger(
        &self,
        group_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, GroupError> {
        let id = self::group_id(group_id)?;
        let id = &id;
        let after = signed(after_seq);
        let limit = i64::try_from(limit.min(QUERY_ROWS_MAX)).unwrap_or(0);
        self.call(self.transaction(
            Mode::Read,
            "查询额度明细",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {LEDGER_COLUMNS} FROM group_ledger \
                             WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                        ),
                        &[id, &after, &limit],
                    )
                    .await?;
                Ok(rows.iter().map(entry_of).collect::<Result<Vec<_>, _>>()?)
            }),
        ))
    }

    fn reserve(&self, req: &ReserveRequest) -> Result<RechargeOrder, GroupError> {
        let gid = group_id(&req.group_id)?;
        let op = operator(&req.operator)?;
        let card = validate::card_number(&req.card_number).map_err(host_error)?;
        let txn_id = validate::txn_id(&req.txn_id, LOAD_TXN_ID_CHARS_MAX).map_err(host_error)?;
        check_recharge(req.amount_fen, req.card_balance_fen, i64::MAX)?;
        let at = self.now();
        let date = china_date(at);
        let (gid, op, card, txn_id, date) = (&gid, &op, &card, &txn_id, &date);
        let order = self.call(self.transaction(
            Mode::Write,
            "集团充值扣减额度",
            body!(|c| async {
                let mut group = existing_group(c, gid).await?;
                check_recharge(req.amount_fen, req.card_balance_fen, group.available_fen)?;
                if let Some(other) = c
                    .query_opt(
                        "SELECT order_id FROM group_orders WHERE card_number = $1 \
                         AND status IN ('reserved', 'pending') LIMIT 1",
                        &[card],
                    )
                    .await?
                {
                    return Err(GroupError::CardBusy {
                        card_number: card.clone(),
                        order_id: other.get(0),
                    }
                    .into());
                }
                if c.query_opt("SELECT 1 FROM group_orders WHERE txn_id = $1", &[txn_id])
                    .await?
                    .is_some()
                {
                    return Err(GroupError::TxnInUse(txn_id.clone()).into());
                }
                let mut batch_index = None;
                if let Some(batch_ref) = &req.batch {
                    let Some(batch_group) = c
                        .query_opt(
                            "SELECT group_id FROM group_batches WHERE batch_id = $1",
                            &[&batch_ref.batch_id],
                        )
                        .await?
                    else {
                        return Err(GroupError::NotFound {
                            what: "批量充值",
                            id: batch_ref.batch_id.clone(),
                        }
                        .into());
                    };
                    let nth = batch_ref.index + 1;
                    let index = i32::try_from(batch_ref.index).ok();
                    let item = match index {
                        Some(index) => {
                            c.query_opt(
                                "SELECT card_number, amount_fen, order_id FROM group_batch_items \
                                 WHERE batch_id = $1 AND idx = $2",
                                &[&batch_ref.batch_id, &index],
                            )
                            .await?
                        }
                        None => None,
                    };
                    let Some(item) = item else {
                        return Err(GroupError::Batch(format!("没有第 {nth} 张卡")).into());
                    };
                    let (item_card, item_amount, done): (String, i64, Option<String>) =
                        (item.get(0), item.get(1), item.get(2));
                    let group_of_batch: String = batch_group.get(0);
                    if group_of_batch != *gid || item_card != *card || item_amount != req.amount_fen
                    {
                        return Err(GroupError::Batch(format!("第 {nth} 张卡与批次不符")).into());
                    }
                    if let Some(done) = done {
                        return Err(
                            GroupError::Batch(format!("第 {nth} 张卡已有订单 {done}")).into()
                        );
                    }
                    batch_index = index;
                }
                let order_id = next_id(c, "GO", date).await?;
                let quota_before = group.available_fen;
                move_quota(
                    c,
                    &mut group,
                    LedgerKind::Reserve,
                    -req.amount_fen,
                    &order_id,
                    op,
                    at,
                )
                .await?;
                let order = RechargeOrder {
                    order_id: order_id.clone(),
                    group_id: group.group_id.clone(),
                    operator: op.clone(),
                    card_number: card.clone(),
                    amount_fen: req.amount_fen,
                    card_balance_fen: req.card_balance_fen,
                    balance_before_fen: None,
                    balance_after_fen: None,
                    quota_before_fen: quota_before,
                    quota_after_fen: group.available_fen,
                    txn_id: txn_id.clone(),
                    batch: req.batch.clone(),
                    status: OrderStatus::Reserved,
                    failure: None,
                    created_at: at,
                    updated_at: at,
                    history: vec![StatusChange {
                        at,
                        operator: op.clone(),
                        from: None,
                        to: OrderStatus::Reserved.code().into(),
                        reason: None,
                    }],
                };
                let history = history_json(&order_id, &order.history)?;
                let batch_id = req.batch.as_ref().map(|b| &b.batch_id);
                c.execute(
                    "INSERT INTO group_orders (order_id, group_id, operator, card_number, \
                         amount_fen, card_balance_fen, quota_before_fen, quota_after_fen, txn_id, \
                         batch_id, batch_index, status, created_at, updated_at, history) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)",
                    &[
                        &order.order_id,
                        &order.group_id,
                        &order.operator,
                        &order.card_number,
                        &order.amount_fen,
                        &order.card_balance_fen,
                        &order.quota_before_fen,
                        &order.quota_after_fen,
                        &order.txn_id,
                        &batch_id,
                        &batch_index,
                        &order.status.code(),
                        &at,
                        &history,
                    ],
                )
                .await?;
                if let (Some(batch_id), Some(index)) = (batch_id, batch_index) {
                    c.execute(
                        "UPDATE group_batch_items SET order_id = $3 \
                         WHERE batch_id = $1 AND idx = $2",
                        &[batch_id, &index, &order_id],
                    )
                    .await?;
                }
                Ok(order)
            }),
        ))?;
        tracing::info!(order = %order.order_id, group = %order.group_id, card = %order.card_number, amount_fen = order.amount_fen, "group quota reserved");
        Ok(order)
    }

    fn mark_pending(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        let op = self::operator(operator)?;
        self.change_order(
            order_id,
            FromStatus::Exactly(OrderStatus::Reserved),
            OrderStatus::Pending,
            "标记为结果待确认",
            &op,
            Some(failure_text(reason)),
            Effect::Nothing,
        )
    }

    fn settle(
        &self,
        order_id: &str,
        operator: &str,
        balance_before_fen: i64,
        balance_after_fen: i64,
    ) -> Result<RechargeOrder, GroupError> {
        let op = self::operator(operator)?;
        self.change_order(
            order_id,
            FromStatus::Unsettled,
            OrderStatus::Succeeded,
            "确认充值成功",
            &op,
            None,
            Effect::Balances(Some((balance_before_fen, balance_after_fen))),
        )
    }

    fn fail(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        let op = self::operator(operator)?;
        let why = failure_text(reason);
        self.change_order(
            order_id,
            FromStatus::Unsettled,
            OrderStatus::Failed,
            "标记为充值失败",
            &op,
            Some(why.clone()),
            Effect::Failure(why),
        )
    }

    fn refund(
        &self,
        order_id: &str,
        auditor: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        let op = operator(auditor)?;
        let why = self::reason(reason)?;
        self.change_order(
            order_id,
            FromStatus::Exactly(OrderStatus::Failed),
            OrderStatus::Refunded,
            "退款",
            &op,
            Some(why),
            Effect::Refund,
        )
    }

    fn resolve_succeeded(
        &self,
        order_id: &str,
        auditor: &str,
        reason: &str,
        balances_fen: Option<(i64, i64)>,
    ) -> Result<RechargeOrder, GroupError> {
        let op = operator(auditor)?;
        let why = self::reason(reason)?;
        self.change_order(
            order_id,
            FromStatus::Exactly(OrderStatus::Failed),
            OrderStatus::Succeeded,
            "改为充值成功",
            &op,
            Some(why),
            Effect::Balances(balances_fen),
        )
    }

    fn order(&self, order_id: &str) -> Result<Option<RechargeOrder>, GroupError> {
        let id = bounded_id(order_id)?;
        self.call(self.transaction(
            Mode::Read,
            "查询集团充值订单",
            body!(|c| async { order_in(c, id).await }),
        ))
    }

    fn orders(&self, group_id: &str, period: &Period) -> Result<Vec<RechargeOrder>, GroupError> {
        let id = self::group_id(group_id)?;
        let (id, from, to, limit) = (&id, period.from_time(), period.to_time(), rows_limit());
        let orders = self.call(self.transaction(
            Mode::Read,
            "查询集团充值订单",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {ORDER_COLUMNS} FROM group_orders WHERE group_id = $1 \
                             AND created_at >= $2 AND created_at <= $3 \
                             ORDER BY created_at DESC, order_id COLLATE \"C\" DESC LIMIT $4"
                        ),
                        &[id, &from, &to, &limit],
                    )
                    .await?;
                Ok(rows.iter().map(order_of).collect::<Result<Vec<_>, _>>()?)
            }),
        ))?;
        if orders.len() > QUERY_ROWS_MAX {
            return Err(GroupError::TooManyRows);
        }
        Ok(orders)
    }

    fn orders_in(&self, status: OrderStatus) -> Result<Vec<RechargeOrder>, GroupError> {
        let (code, limit) = (status.code(), rows_limit());
        let orders = self.call(self.transaction(
            Mode::Read,
            "查询集团充值订单",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {ORDER_COLUMNS} FROM group_orders WHERE status = $1 \
                             ORDER BY order_id COLLATE \"C\" LIMIT $2"
                        ),
                        &[&code, &limit],
                    )
                    .await?;
                Ok(rows.iter().map(order_of).collect::<Result<Vec<_>, _>>()?)
            }),
        ))?;
        if orders.len() > QUERY_ROWS_MAX {
            return Err(GroupError::TooManyRows);
        }
        Ok(orders)
    }

    fn create_topup(
        &self,
        group_id: &str,
        operator: &str,
        amount_fen: i64,
        remark: &str,
    ) -> Result<TopUp, GroupError> {
        let gid = self::group_id(group_id)?;
        let op = self::operator(operator)?;
        check_topup_amount(amount_fen)?;
        let remark = remark.trim();
        if remark.chars().count() > REMARK_CHARS_MAX || remark.chars().any(char::is_control) {
            return Err(host_error(HostError::InvalidField {
                field: "备注",
                reason: format!("最多 {REMARK_CHARS_MAX} 个字符，且不能含有控制字符"),
            }));
        }
        let at = self.now();
        let date = china_date(at);
        let (gid, op, date) = (&gid, &op, &date);
        self.call(self.transaction(
            Mode::Write,
            "创建额度充值订单",
            body!(|c| async {
                existing_group(c, gid).await?;
                let topup_id = next_id(c, "GT", date).await?;
                let topup = TopUp {
                    topup_id,
                    group_id: gid.clone(),
                    operator: op.clone(),
                    amount_fen,
                    remark: remark.to_owned(),
                    status: TopUpStatus::Pending,
                    bank_serial: None,
                    bank_message: None,
                    auditor: None,
                    created_at: at,
                    updated_at: at,
                    history: vec![StatusChange {
                        at,
                        operator: op.clone(),
                        from: None,
                        to: TopUpStatus::Pending.code().into(),
                        reason: None,
                    }],
                };
                insert_topup(c, &topup).await?;
                Ok(topup)
            }),
        ))
    }

    fn record_payment(
        &self,
        topup_id: &str,
        outcome: &PaymentOutcome,
    ) -> Result<TopUp, GroupError> {
        let topup_id = bounded_id(topup_id)?;
        let at = self.now();
        self.call(self.transaction(
            Mode::Write,
            "记录银行结果",
            body!(|c| async {
                let Some(mut topup) = topup_in(c, topup_id).await? else {
                    return Err(GroupError::NotFound {
                        what: "额度充值订单",
                        id: topup_id.to_owned(),
                    }
                    .into());
                };
                let old = topup.status;
                if !old.awaiting_bank() {
                    return Err(
                        bad_state("额度充值订单", topup_id, old.label(), "更新银行结果").into(),
                    );
                }
                let (status, message) = match outcome {
                    PaymentOutcome::Paid { bank_serial } => {
                        topup.bank_serial = Some(bank_serial.clone());
                        (TopUpStatus::Paid, None)
                    }
                    PaymentOutcome::Declined { message } => {
                        (TopUpStatus::Failed, Some(message.clone()))
                    }
                    PaymentOutcome::NoAnswer { message } => {
                        (TopUpStatus::Unknown, Some(message.clone()))
                    }
                };
                if status == old {
                    return Ok(topup);
                }
                topup.status = status;
                topup.bank_message = message.clone();
                topup.updated_at = at;
                push_history(
                    &mut topup.history,
                    StatusChange {
                        at,
                        operator: "bank".into(),
                        from: Some(old.code().into()),
                        to: status.code().into(),
                        reason: message,
                    },
                );
                update_topup(c, &topup).await?;
                Ok(topup)
            }),
        ))
    }

    fn audit_topup(
        &self,
        topup_id: &str,
        auditor: &str,
        approve: bool,
        reason: &str,
    ) -> Result<TopUp, GroupError> {
        let topup_id = bounded_id(topup_id)?;
        let op = operator(auditor)?;
        let why = self::reason(reason)?;
        let at = self.now();
        let (op_ref, why) = (&op, &why);
        let topup = self.call(self.transaction(
            Mode::Write,
            "审核额度充值",
            body!(|c| async {
                let Some(mut topup) = topup_in(c, topup_id).await? else {
                    return Err(GroupError::NotFound {
                        what: "额度充值订单",
                        id: topup_id.to_owned(),
                    }
                    .into());
                };
                let old = topup.status;
                if old != TopUpStatus::Paid {
                    return Err(bad_state("额度充值订单", topup_id, old.label(), "审核").into());
                }
                let status = if approve {
                    let mut group = existing_group(c, &topup.group_id).await?;
                    move_quota(
                        c,
                        &mut group,
                        LedgerKind::TopUp,
                        topup.amount_fen,
                        topup_id,
                        op_ref,
                        at,
                    )
                    .await?;
                    TopUpStatus::Approved
                } else {
                    TopUpStatus::Rejected
                };
                topup.status = status;
                topup.auditor = Some(op_ref.clone());
                topup.updated_at = at;
                push_history(
                    &mut topup.history,
                    StatusChange {
                        at,
                        operator: op_ref.clone(),
                        from: Some(old.code().into()),
                        to: status.code().into(),
                        reason: Some(why.clone()),
                    },
                );
                update_topup(c, &topup).await?;
                Ok(topup)
            }),
        ))?;
        tracing::info!(topup = %topup.topup_id, status = topup.status.code(), auditor = %op, "quota top-up audited");
        Ok(topup)
    }

    fn topup(&self, topup_id: &str) -> Result<Option<TopUp>, GroupError> {
        let id = bounded_id(topup_id)?;
        self.call(self.transaction(
            Mode::Read,
            "查询额度充值订单",
            body!(|c| async { topup_in(c, id).await }),
        ))
    }

    fn topups(&self, group_id: &str, period: &Period) -> Result<Vec<TopUp>, GroupError> {
        let id = self::group_id(group_id)?;
        let (id, from, to, limit) = (&id, period.from_time(), period.to_time(), rows_limit());
        let topups = self.call(self.transaction(
            Mode::Read,
            "查询额度充值订单",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {TOPUP_COLUMNS} FROM group_topups WHERE group_id = $1 \
                             AND created_at >= $2 AND created_at <= $3 \
                             ORDER BY created_at DESC, topup_id COLLATE \"C\" DESC LIMIT $4"
                        ),
                        &[id, &from, &to, &limit],
                    )
                    .await?;
                Ok(rows.iter().map(topup_of).collect::<Result<Vec<_>, _>>()?)
            }),
        ))?;
        if topups.len() > QUERY_ROWS_MAX {
            return Err(GroupError::TooManyRows);
        }
        Ok(topups)
    }

    fn topups_in(&self, status: TopUpStatus) -> Result<Vec<TopUp>, GroupError> {
        let (code, limit) = (status.code(), rows_limit());
        let topups = self.call(self.transaction(
            Mode::Read,
            "查询额度充值订单",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {TOPUP_COLUMNS} FROM group_topups WHERE status = $1 \
                             ORDER BY topup_id COLLATE \"C\" LIMIT $2"
                        ),
                        &[&code, &limit],
                    )
                    .await?;
                Ok(rows.iter().map(topup_of).collect::<Result<Vec<_>, _>>()?)
            }),
        ))?;
        if topups.len() > QUERY_ROWS_MAX {
            return Err(GroupError::TooManyRows);
        }
        Ok(topups)
    }

    fn create_batch(
        &self,
        group_id: &str,
        operator: &str,
        items: &[BatchItemInput],
    ) -> Result<Batch, GroupError> {
        let gid = self::group_id(group_id)?;
        let op = self::operator(operator)?;
        if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
            return Err(GroupError::Batch(format!(
                "一个批次应有 1 到 {BATCH_ITEMS_MAX} 张卡"
            )));
        }
        let mut checked: Vec<BatchItem> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let card = validate::card_number(&item.card_number)
                .map_err(|e| GroupError::Batch(format!("第 {} 张卡：{e}", i + 1)))?;
            check_recharge(item.amount_fen, 0, i64::MAX)
                .map_err(|e| GroupError::Batch(format!("第 {} 张卡：{e}", i + 1)))?;
            if checked.iter().any(|c| c.card_number == card) {
                return Err(GroupError::Batch(format!("第 {} 张卡 {card} 重复", i + 1)));
            }
            checked.push(BatchItem {
                card_number: card,
                amount_fen: item.amount_fen,
                order_id: None,
            });
        }
        let at = self.now();
        let date = china_date(at);
        let (gid, op, date, checked) = (&gid, &op, &date, &checked);
        self.call(self.transaction(
            Mode::Write,
            "创建批量充值",
            body!(|c| async {
                existing_group(c, gid).await?;
                let batch_id = next_id(c, "GB", date).await?;
                c.execute(
                    "INSERT INTO group_batches (batch_id, group_id, operator, created_at) \
                     VALUES ($1, $2, $3, $4)",
                    &[&batch_id, gid, op, &at],
                )
                .await?;
                for (idx, item) in checked.iter().enumerate() {
                    let idx = i32::try_from(idx).unwrap_or(i32::MAX);
                    c.execute(
                        "INSERT INTO group_batch_items (batch_id, idx, card_number, amount_fen) \
                         VALUES ($1, $2, $3, $4)",
                        &[&batch_id, &idx, &item.card_number, &item.amount_fen],
                    )
                    .await?;
                }
                Ok(Batch {
                    batch_id,
                    group_id: gid.clone(),
                    operator: op.clone(),
                    items: checked.clone(),
                    created_at: at,
                })
            }),
        ))
    }

    fn batch(&self, batch_id: &str) -> Result<Option<Batch>, GroupError> {
        let id = bounded_id(batch_id)?;
        self.call(self.transaction(
            Mode::Read,
            "查询批量充值",
            body!(|c| async { batch_in(c, id).await }),
        ))
    }
}
