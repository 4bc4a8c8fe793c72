//! The group store on the daemon's sled store: [`EmbeddedGroupHost`] implements
//! [`cardd_group::GroupHost`] (whose documentation states the ledger, order and top-up rules
//! it keeps; the available quota is checked against the ledger at every open: fail closed).
//!
//! **Storage** (tree [`GROUP_TREE`]): `grp/<group>`, `led/<group>/<seq: 8 bytes BE>`,
//! `ord/<order>`, `gord/<group>/<time><order>`, `cord/<card>` (the card's reserved order),
//! `otxn/<txn>` (the order of a load transaction), `top/<topup>`, `gtop/<group>/<time><topup>`,
//! `st/<o|t>/<status>/<id>` (orders and top-ups by status), `bat/<batch>`, `seq/<kind><date>`.
//! Values are `sha256(json) ‖ json` like the issuer host's; every change is one sled
//! transaction followed by a durable flush before it returns.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use time::OffsetDateTime;

use cardd_journal::Store;

use crate::embedded::keys::time as time_key;
use cardd_etc::error::HostError;
use cardd_etc::validate;
use cardd_group::model::*;
use cardd_group::{check_recharge, check_topup_amount, GroupError, GroupHost};
use cardd_journal::clock::{china_date, china_seconds, Clock, SystemClock};

/// The sled tree of the group host.
pub const GROUP_TREE: &str = "group";

/// The issuer host's refusals and storage failures, as the group domain reports them (same
/// words).
fn host_error(e: HostError) -> GroupError {
    if e.is_refusal() {
        GroupError::Invalid(e.to_string())
    } else {
        GroupError::Storage(e.to_string())
    }
}

/// A checksummed record of the embedded store's format, as the group domain's error.
fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, GroupError> {
    crate::embedded::encode(key, value).map_err(host_error)
}

/// A checksummed record read back, as the group domain's error.
fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, GroupError> {
    crate::embedded::decode(key, bytes).map_err(host_error)
}

fn sled_error(e: sled::Error) -> GroupError {
    host_error(crate::embedded::sled_err(e))
}

type Tx<T> = sled::transaction::ConflictableTransactionResult<T, GroupError>;

fn abort<T>(e: impl Into<GroupError>) -> Tx<T> {
    Err(ConflictableTransactionError::Abort(e.into()))
}

fn run<T>(tree: &sled::Tree, f: impl Fn(&TransactionalTree) -> Tx<T>) -> Result<T, GroupError> {
    tree.transaction(f).map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => sled_error(e),
    })
}

fn corrupt(key: &[u8], reason: &str) -> GroupError {
    host_error(HostError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    })
}

fn tx_get<T: DeserializeOwned>(tx: &TransactionalTree, key: &str) -> Tx<Option<T>> {
    match tx.get(key)? {
        Some(v) => decode(key.as_bytes(), &v).map(Some).or_else(abort),
        None => Ok(None),
    }
}

fn tx_put<T: Serialize>(tx: &TransactionalTree, key: &str, value: &T) -> Tx<()> {
    let bytes = encode(key, value).or_else(abort)?;
    tx.insert(key.as_bytes(), bytes)?;
    Ok(())
}

fn timed_key(prefix: &str, group_id: &str, at: OffsetDateTime, id: &str) -> Vec<u8> {
    let mut key = format!("{prefix}/{group_id}/").into_bytes();
    key.extend_from_slice(&time_key(at.unix_timestamp()));
    key.extend_from_slice(id.as_bytes());
    key
}

fn ledger_key(group_id: &str, seq: u64) -> Vec<u8> {
    let mut key = format!("led/{group_id}/").into_bytes();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn status_key(kind: char, status: &str, id: &str) -> String {
    format!("st/{kind}/{status}/{id}")
}

/// The next id `<prefix><YYYYMMDD><seq:06>` of the day, its sequence taken.
fn tx_next_id(tx: &TransactionalTree, prefix: &str, date: &str, exists: &str) -> Tx<String> {
    let key = format!("seq/{prefix}{date}");
    let mut seq = match tx.get(&key)? {
        None => 0,
        Some(b) => match <[u8; 4]>::try_from(b.as_ref()) {
            Ok(b) => u32::from_be_bytes(b),
            Err(_) => return abort(corrupt(key.as_bytes(), "sequence is not 4 bytes")),
        },
    };
    loop {
        seq += 1;
        if seq > ID_SEQ_PER_DAY_MAX {
            return abort(GroupError::IdsExhausted(date.to_owned()));
        }
        let id = format!("{prefix}{date}{seq:06}");
        if tx.get(format!("{exists}/{id}"))?.is_none() {
            tx.insert(key.as_bytes(), seq.to_be_bytes().to_vec())?;
            return Ok(id);
        }
    }
}

/// Appends a ledger entry and stores the group with its new quota.
fn tx_move_quota(
    tx: &TransactionalTree,
    group: &mut Group,
    kind: LedgerKind,
    amount_fen: i64,
    reference: &str,
    operator: &str,
    at: OffsetDateTime,
) -> Tx<LedgerEntry> {
    let after = match group.available_fen.checked_add(amount_fen) {
        Some(a) if (0..=QUOTA_FEN_MAX).contains(&a) => a,
        Some(a) if a < 0 => {
            return abort(GroupError::QuotaInsufficient {
                available_fen: group.available_fen,
                amount_fen: -amount_fen,
            })
        }
        _ => return abort(GroupError::QuotaOverflow),
    };
    group.ledger_seq += 1;
    group.available_fen = after;
    group.updated_at = at;
    let entry = LedgerEntry {
        group_id: group.group_id.clone(),
        seq: group.ledger_seq,
        at,
        kind,
        amount_fen,
        balance_after_fen: after,
        reference: reference.to_owned(),
        operator: operator.to_owned(),
    };
    let key = ledger_key(&group.group_id, entry.seq);
    let key_text = String::from_utf8_lossy(&key).into_owned();
    let bytes = encode(&key_text, &entry).or_else(abort)?;
    if tx.insert(key, bytes)?.is_some() {
        return abort(corrupt(key_text.as_bytes(), "ledger entry already exists"));
    }
    tx_put(tx, &format!("grp/{}", group.group_id), group)?;
    Ok(entry)
}

fn tx_group(tx: &TransactionalTree, group_id: &str) -> Tx<Group> {
    match tx_get(tx, &format!("grp/{group_id}"))? {
        Some(g) => Ok(g),
        None => abort(GroupError::GroupNotFound(group_id.to_owned())),
    }
}

fn tx_order(tx: &TransactionalTree, order_id: &str) -> Tx<RechargeOrder> {
    match tx_get(tx, &format!("ord/{order_id}"))? {
        Some(o) => Ok(o),
        None => abort(GroupError::NotFound {
            what: "充值订单",
            id: order_id.to_owned(),
        }),
    }
}

fn tx_topup(tx: &TransactionalTree, topup_id: &str) -> Tx<TopUp> {
    match tx_get(tx, &format!("top/{topup_id}"))? {
        Some(t) => Ok(t),
        None => abort(GroupError::NotFound {
            what: "额度充值订单",
            id: topup_id.to_owned(),
        }),
    }
}

fn push_history(history: &mut Vec<StatusChange>, change: StatusChange) {
    history.push(change);
    while history.len() > GROUP_HISTORY_MAX {
        history.remove(1);
    }
}

/// Stores an order whose status may have changed, with its status index.
fn tx_put_order(tx: &TransactionalTree, order: &RechargeOrder, old: Option<OrderStatus>) -> Tx<()> {
    if let Some(old) = old {
        tx.remove(status_key('o', old.code(), &order.order_id).as_bytes())?;
    }
    tx.insert(
        status_key('o', order.status.code(), &order.order_id).as_bytes(),
        Vec::new(),
    )?;
    let cord = format!("cord/{}", order.card_number);
    if order.status.is_unsettled() {
        tx.insert(cord.as_bytes(), order.order_id.as_bytes())?;
    } else if tx.get(&cord)?.as_deref() == Some(order.order_id.as_bytes()) {
        tx.remove(cord.as_bytes())?;
    }
    tx_put(tx, &format!("ord/{}", order.order_id), order)
}

fn tx_put_topup(tx: &TransactionalTree, topup: &TopUp, old: Option<TopUpStatus>) -> Tx<()> {
    if let Some(old) = old {
        tx.remove(status_key('t', old.code(), &topup.topup_id).as_bytes())?;
    }
    tx.insert(
        status_key('t', topup.status.code(), &topup.topup_id).as_bytes(),
        Vec::new(),
    )?;
    tx_put(tx, &format!("top/{}", topup.topup_id), topup)
}

/// The group host on the daemon's sled [`Store`].
pub struct EmbeddedGroupHost {
    store: Store,
    tree: sled::Tree,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EmbeddedGroupHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedGroupHost")
            .field("dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

/// What [`EmbeddedGroupHost::verify`] found.
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

pub use cardd_group::model::DEMO_GROUPS;

impl EmbeddedGroupHost {
    /// Opens the tree with the system clock and verifies it (fails closed on corruption or a
    /// quota that is not the sum of its ledger).
    pub fn open(store: &Store) -> Result<EmbeddedGroupHost, GroupError> {
        EmbeddedGroupHost::open_with_clock(store, Arc::new(SystemClock))
    }

    /// [`EmbeddedGroupHost::open`] with another clock.
    pub fn open_with_clock(
        store: &Store,
        clock: Arc<dyn Clock>,
    ) -> Result<EmbeddedGroupHost, GroupError> {
        let host = EmbeddedGroupHost {
            store: store.clone(),
            tree: store
                .tree(GROUP_TREE)
                .map_err(|e| host_error(HostError::from(e)))?,
            clock,
        };
        host.verify()?;
        Ok(host)
    }

    fn now(&self) -> OffsetDateTime {
        china_seconds(self.clock.now())
    }

    fn flush(&self) -> Result<(), GroupError> {
        self.store
            .durable_flush()
            .map_err(|e| host_error(HostError::from(e)))?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, GroupError> {
        self.tree
            .get(key)
            .map_err(sled_error)?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    /// Checks every value's checksum, that each group's quota is the sum of its ledger with
    /// sequence numbers 1, 2, 3, …, and that every order and top-up is in its status index.
    pub fn verify(&self) -> Result<GroupVerifyReport, GroupError> {
        let mut report = GroupVerifyReport::default();
        for item in self.tree.scan_prefix(b"grp/") {
            let (key, value) = item.map_err(sled_error)?;
            let group: Group = decode(&key, &value)?;
            let mut sum = 0i64;
            let mut seq = 0u64;
            for entry in self.tree.scan_prefix(format!("led/{}/", group.group_id)) {
                let (k, v) = entry.map_err(sled_error)?;
                let entry: LedgerEntry = decode(&k, &v)?;
                seq += 1;
                sum = sum.saturating_add(entry.amount_fen);
                if entry.seq != seq || entry.balance_after_fen != sum {
                    return Err(corrupt(&k, "ledger sequence or running balance broken"));
                }
                report.ledger_entries += 1;
            }
            if sum != group.available_fen || seq != group.ledger_seq {
                return Err(corrupt(
                    &key,
                    "available quota is not the sum of the ledger",
                ));
            }
            report.groups += 1;
        }
        for item in self.tree.scan_prefix(b"ord/") {
            let (key, value) = item.map_err(sled_error)?;
            let order: RechargeOrder = decode(&key, &value)?;
            let st = status_key('o', order.status.code(), &order.order_id);
            if !self.tree.contains_key(st).map_err(sled_error)? {
                return Err(corrupt(&key, "missing from the status index"));
            }
            report.orders += 1;
        }
        for item in self.tree.scan_prefix(b"top/") {
            let (key, value) = item.map_err(sled_error)?;
            let topup: TopUp = decode(&key, &value)?;
            let st = status_key('t', topup.status.code(), &topup.topup_id);
            if !self.tree.contains_key(st).map_err(sled_error)? {
                return Err(corrupt(&key, "missing from the status index"));
            }
            report.topups += 1;
        }
        Ok(report)
    }

    /// Adds the [`DEMO_GROUPS`] that are missing, each with an approved opening transfer; what
    /// exists is left alone. Returns how many groups were added.
    pub fn seed_demo(&self) -> Result<u32, GroupError> {
        let at = DEMO_GROUPS_AT;
        let added = run(&self.tree, |tx| {
            let mut added: u32 = 0;
            for (id, name, terminal, quota) in DEMO_GROUPS {
                if tx.get(format!("grp/{id}"))?.is_some() {
                    continue;
                }
                let mut group = Group {
                    group_id: (*id).into(),
                    name: (*name).into(),
                    terminal_no: (*terminal).into(),
                    available_fen: 0,
                    ledger_seq: 0,
                    created_at: at,
                    updated_at: at,
                };
                let topup_id = format!("GT{}{:06}", china_date(at), added + 1);
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
                tx_put_topup(tx, &topup, None)?;
                tx.insert(timed_key("gtop", id, at, &topup_id), Vec::new())?;
                tx_move_quota(
                    tx,
                    &mut group,
                    LedgerKind::TopUp,
                    *quota,
                    &topup_id,
                    "cardd-demo",
                    at,
                )?;
                tx.insert(
                    format!("seq/GT{}", china_date(at)).as_bytes(),
                    (added + 1).to_be_bytes().to_vec(),
                )?;
                added += 1;
            }
            Ok(added)
        })?;
        if added > 0 {
            self.flush()?;
        }
        Ok(added)
    }

    fn in_period<T: DeserializeOwned>(
        &self,
        index: &str,
        group_id: &str,
        data: &str,
        period: &Period,
    ) -> Result<Vec<T>, GroupError> {
        let prefix = format!("{index}/{group_id}/").into_bytes();
        let mut low = prefix.clone();
        low.extend_from_slice(&time_key(period.from_time().unix_timestamp()));
        let mut high = prefix.clone();
        high.extend_from_slice(&time_key(period.to_time().unix_timestamp()));
        high.push(0xFF);
        let mut out = Vec::new();
        for item in self.tree.range(low..=high).rev() {
            let (key, _) = item.map_err(sled_error)?;
            if out.len() == QUERY_ROWS_MAX {
                return Err(GroupError::TooManyRows);
            }
            let id = key
                .get(prefix.len() + 8..)
                .ok_or_else(|| corrupt(&key, "index key too short"))?;
            let data_key = format!("{data}/{}", String::from_utf8_lossy(id));
            out.push(
                self.get(&data_key)?
                    .ok_or_else(|| corrupt(&key, "index points to a missing record"))?,
            );
        }
        Ok(out)
    }

    fn in_status<T: DeserializeOwned>(
        &self,
        kind: char,
        status: &str,
        data: &str,
    ) -> Result<Vec<T>, GroupError> {
        let prefix = format!("st/{kind}/{status}/");
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, _) = item.map_err(sled_error)?;
            if out.len() == QUERY_ROWS_MAX {
                return Err(GroupError::TooManyRows);
            }
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.push(
                self.get(&format!("{data}/{id}"))?
                    .ok_or_else(|| corrupt(&key, "status index points to a missing record"))?,
            );
        }
        Ok(out)
    }

    /// The order's status when it is unsettled (充值中 or 结果待确认); otherwise 充值中, so
    /// that the change is refused with the order's real status.
    fn unsettled_status(&self, order_id: &str) -> Result<OrderStatus, GroupError> {
        let order_id = bounded_id(order_id)?;
        Ok(self
            .get::<RechargeOrder>(&format!("ord/{order_id}"))?
            .map(|o| o.status)
            .filter(|s| s.is_unsettled())
            .unwrap_or(OrderStatus::Reserved))
    }

    /// Moves an order `from → to` (refused from any other status), after `extra` (more checks
    /// and changes in the same transaction), durably.
    #[allow(clippy::too_many_arguments)]
    fn change_order(
        &self,
        order_id: &str,
        from: OrderStatus,
        to: OrderStatus,
        action: &'static str,
        operator: &str,
        reason: Option<String>,
        extra: impl Fn(&TransactionalTree, &mut RechargeOrder, OffsetDateTime) -> Tx<()>,
    ) -> Result<RechargeOrder, GroupError> {
        let order_id = bounded_id(order_id)?;
        let at = self.now();
        let order = run(&self.tree, |tx| {
            let mut order = tx_order(tx, order_id)?;
            if order.status != from {
                return abort(bad_state(
                    "充值订单",
                    &order.order_id,
                    order.status.label(),
                    action,
                ));
            }
            extra(tx, &mut order, at)?;
            order.status = to;
            order.updated_at = at;
            push_history(
                &mut order.history,
                change(at, operator, from, to, reason.clone()),
            );
            tx_put_order(tx, &order, Some(from))?;
            Ok(order)
        })?;
        self.flush()?;
        tracing::info!(order = %order.order_id, status = order.status.code(), "group order changed");
        Ok(order)
    }
}

/// Whether `order` is settled as succeeded with exactly these balances.
fn already_settled(order: &RechargeOrder, before: i64, after: i64) -> bool {
    order.status == OrderStatus::Succeeded
        && order.balance_before_fen == Some(before)
        && order.balance_after_fen == Some(after)
}

/// Records a load's balances on an order, refused unless `after = before + amount`.
fn set_balances(order: &mut RechargeOrder, before: i64, after: i64) -> Tx<()> {
    if before.checked_add(order.amount_fen) != Some(after) {
        return abort(GroupError::BalanceMismatch {
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

fn operator(name: &str) -> Result<String, GroupError> {
    validate::text("操作员", name, cardd_etc::model::OPERATOR_CHARS_MAX).map_err(host_error)
}

fn reason(text: &str) -> Result<String, GroupError> {
    validate::text("原因", text, AUDIT_REASON_CHARS_MAX).map_err(host_error)
}

fn group_id(id: &str) -> Result<String, GroupError> {
    validate::text("集团编号", id, GROUP_ID_CHARS_MAX).map_err(host_error)
}

impl GroupHost for EmbeddedGroupHost {
    fn group(&self, group_id: &str) -> Result<Option<Group>, GroupError> {
        self.get(&format!("grp/{}", self::group_id(group_id)?))
    }

    fn groups(&self) -> Result<Vec<Group>, GroupError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"grp/").take(GROUPS_MAX) {
            let (key, value) = item.map_err(sled_error)?;
            out.push(decode(&key, &value)?);
        }
        Ok(out)
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
        let count = self.tree.scan_prefix(b"grp/").count();
        let group = run(&self.tree, |tx| {
            let key = format!("grp/{id}");
            let group = match tx_get::<Group>(tx, &key)? {
                Some(mut g) => {
                    g.name = name.clone();
                    g.terminal_no = terminal.clone();
                    g.updated_at = at;
                    g
                }
                None if count >= GROUPS_MAX => {
                    return abort(GroupError::Batch(format!("集团数量已达上限 {GROUPS_MAX}")))
                }
                None => Group {
                    group_id: id.clone(),
                    name: name.clone(),
                    terminal_no: terminal.clone(),
                    available_fen: 0,
                    ledger_seq: 0,
                    created_at: at,
                    updated_at: at,
                },
            };
            tx_put(tx, &key, &group)?;
            Ok(group)
        })?;
        self.flush()?;
        Ok(group)
    }

    fn ledger(
        &self,
        group_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, GroupError> {
        let id = self::group_id(group_id)?;
        let start = ledger_key(&id, after_seq.saturating_add(1));
        let end = ledger_key(&id, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(start..=end).take(limit.min(QUERY_ROWS_MAX)) {
            let (key, value) = item.map_err(sled_error)?;
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    fn reserve(&self, req: &ReserveRequest) -> Result<RechargeOrder, GroupError> {
        let gid = group_id(&req.group_id)?;
        let op = operator(&req.operator)?;
        let card = validate::card_number(&req.card_number).map_err(host_error)?;
        let txn_id = validate::txn_id(&req.txn_id, cardd_etc::model::LOAD_TXN_ID_CHARS_MAX)
            .map_err(host_error)?;
        check_recharge(req.amount_fen, req.card_balance_fen, i64::MAX)?;
        let at = self.now();
        let date = china_date(at);
        let order = run(&self.tree, |tx| {
            let mut group = tx_group(tx, &gid)?;
            check_recharge(req.amount_fen, req.card_balance_fen, group.available_fen)
                .or_else(abort)?;
            if let Some(other) = tx.get(format!("cord/{card}"))? {
                return abort(GroupError::CardBusy {
                    card_number: card.clone(),
                    order_id: String::from_utf8_lossy(&other).into_owned(),
                });
            }
            if tx.get(format!("otxn/{txn_id}"))?.is_some() {
                return abort(GroupError::TxnInUse(txn_id.clone()));
            }
            if let Some(batch_ref) = &req.batch {
                let key = format!("bat/{}", batch_ref.batch_id);
                let Some(mut batch) = tx_get::<Batch>(tx, &key)? else {
                    return abort(GroupError::NotFound {
                        what: "批量充值",
                        id: batch_ref.batch_id.clone(),
                    });
                };
                let Some(item) = batch.items.get_mut(batch_ref.index) else {
                    return abort(GroupError::Batch(format!(
                        "没有第 {} 张卡",
                        batch_ref.index + 1
                    )));
                };
                if batch.group_id != gid
                    || item.card_number != card
                    || item.amount_fen != req.amount_fen
                {
                    return abort(GroupError::Batch(format!(
                        "第 {} 张卡与批次不符",
                        batch_ref.index + 1
                    )));
                }
                if let Some(done) = &item.order_id {
                    return abort(GroupError::Batch(format!(
                        "第 {} 张卡已有订单 {done}",
                        batch_ref.index + 1
                    )));
                }
                let order_id = tx_next_id(tx, "GO", &date, "ord")?;
                item.order_id = Some(order_id.clone());
                tx_put(tx, &key, &batch)?;
                return reserve_in(tx, &mut group, req, &card, &txn_id, &op, at, order_id);
            }
            let order_id = tx_next_id(tx, "GO", &date, "ord")?;
            reserve_in(tx, &mut group, req, &card, &txn_id, &op, at, order_id)
        })?;
        self.flush()?;
        tracing::info!(order = %order.order_id, group = %order.group_id, card = %order.card_number, amount_fen = order.amount_fen, "group quota reserved");
        Ok(order)
    }

    fn settle(
        &self,
        order_id: &str,
        operator: &str,
        before: i64,
        after: i64,
    ) -> Result<RechargeOrder, GroupError> {
        let op = self::operator(operator)?;
        // Settled already with these balances (a retry whose answer was lost, or the issuer
        // host booked it from the card's TAC first): answered, not refused. Succeeded is final.
        if let Some(done) = self
            .get::<RechargeOrder>(&format!("ord/{}", bounded_id(order_id)?))?
            .filter(|o| already_settled(o, before, after))
        {
            return Ok(done);
        }
        let from = self.unsettled_status(order_id)?;
        self.change_order(
            order_id,
            from,
            OrderStatus::Succeeded,
            "确认充值成功",
            &op,
            None,
            |_, order, _| set_balances(order, before, after),
        )
    }

    fn mark_pending(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        let op = self::operator(operator)?;
        let why: String = reason.chars().take(FAILURE_CHARS_MAX).collect();
        let why = reason_or(&why);
        self.change_order(
            order_id,
            OrderStatus::Reserved,
            OrderStatus::Pending,
            "标记为结果待确认",
            &op,
            Some(why),
            |_, _, _| Ok(()),
        )
    }

    fn fail(&self, order_id: &str, operator: &str, why: &str) -> Result<RechargeOrder, GroupError> {
        let op = self::operator(operator)?;
        let why: String = why.chars().take(FAILURE_CHARS_MAX).collect();
        let why = reason_or(&why);
        let from = self.unsettled_status(order_id)?;
        self.change_order(
            order_id,
            from,
            OrderStatus::Failed,
            "标记为充值失败",
            &op,
            Some(why.clone()),
            |_, order, _| {
                order.failure = Some(why.clone());
                Ok(())
            },
        )
    }

    fn refund(
        &self,
        order_id: &str,
        auditor: &str,
        why: &str,
    ) -> Result<RechargeOrder, GroupError> {
        let op = operator(auditor)?;
        let why = reason(why)?;
        self.change_order(
            order_id,
            OrderStatus::Failed,
            OrderStatus::Refunded,
            "退款",
            &op,
            Some(why),
            |tx, order, at| {
                let mut group = tx_group(tx, &order.group_id)?;
                tx_move_quota(
                    tx,
                    &mut group,
                    LedgerKind::Refund,
                    order.amount_fen,
                    &order.order_id,
                    &op,
                    at,
                )?;
                Ok(())
            },
        )
    }

    fn resolve_succeeded(
        &self,
        order_id: &str,
        auditor: &str,
        why: &str,
        balances: Option<(i64, i64)>,
    ) -> Result<RechargeOrder, GroupError> {
        let op = operator(auditor)?;
        let why = reason(why)?;
        self.change_order(
            order_id,
            OrderStatus::Failed,
            OrderStatus::Succeeded,
            "改为充值成功",
            &op,
            Some(why),
            |_, order, _| match balances {
                Some((before, after)) => set_balances(order, before, after),
                None => Ok(()),
            },
        )
    }

    fn order(&self, order_id: &str) -> Result<Option<RechargeOrder>, GroupError> {
        self.get(&format!("ord/{}", bounded_id(order_id)?))
    }

    fn orders(&self, group_id: &str, period: &Period) -> Result<Vec<RechargeOrder>, GroupError> {
        self.in_period("gord", &self::group_id(group_id)?, "ord", period)
    }

    fn orders_in(&self, status: OrderStatus) -> Result<Vec<RechargeOrder>, GroupError> {
        self.in_status('o', status.code(), "ord")
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
        let topup = run(&self.tree, |tx| {
            tx_group(tx, &gid)?;
            let topup_id = tx_next_id(tx, "GT", &date, "top")?;
            let topup = TopUp {
                topup_id: topup_id.clone(),
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
            tx_put_topup(tx, &topup, None)?;
            tx.insert(timed_key("gtop", &gid, at, &topup_id), Vec::new())?;
            Ok(topup)
        })?;
        self.flush()?;
        Ok(topup)
    }

    fn record_payment(
        &self,
        topup_id: &str,
        outcome: &PaymentOutcome,
    ) -> Result<TopUp, GroupError> {
        let topup_id = bounded_id(topup_id)?;
        let at = self.now();
        let topup = run(&self.tree, |tx| {
            let mut topup = tx_topup(tx, topup_id)?;
            let old = topup.status;
            if !old.awaiting_bank() {
                return abort(bad_state(
                    "额度充值订单",
                    topup_id,
                    old.label(),
                    "更新银行结果",
                ));
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
            tx_put_topup(tx, &topup, Some(old))?;
            Ok(topup)
        })?;
        self.flush()?;
        Ok(topup)
    }

    fn audit_topup(
        &self,
        topup_id: &str,
        auditor: &str,
        approve: bool,
        why: &str,
    ) -> Result<TopUp, GroupError> {
        let topup_id = bounded_id(topup_id)?;
        let op = operator(auditor)?;
        let why = reason(why)?;
        let at = self.now();
        let topup = run(&self.tree, |tx| {
            let mut topup = tx_topup(tx, topup_id)?;
            let old = topup.status;
            if old != TopUpStatus::Paid {
                return abort(bad_state("额度充值订单", topup_id, old.label(), "审核"));
            }
            let status = if approve {
                let mut group = tx_group(tx, &topup.group_id)?;
                tx_move_quota(
                    tx,
                    &mut group,
                    LedgerKind::TopUp,
                    topup.amount_fen,
                    topup_id,
                    &op,
                    at,
                )?;
                TopUpStatus::Approved
            } else {
                TopUpStatus::Rejected
            };
            topup.status = status;
            topup.auditor = Some(op.clone());
            topup.updated_at = at;
            push_history(
                &mut topup.history,
                StatusChange {
                    at,
                    operator: op.clone(),
                    from: Some(old.code().into()),
                    to: status.code().into(),
                    reason: Some(why.clone()),
                },
            );
            tx_put_topup(tx, &topup, Some(old))?;
            Ok(topup)
        })?;
        self.flush()?;
        tracing::info!(topup = %topup.topup_id, status = topup.status.code(), auditor = %op, "quota top-up audited");
        Ok(topup)
    }

    fn topup(&self, topup_id: &str) -> Result<Option<TopUp>, GroupError> {
        self.get(&format!("top/{}", bounded_id(topup_id)?))
    }

    fn topups(&self, group_id: &str, period: &Period) -> Result<Vec<TopUp>, GroupError> {
        self.in_period("gtop", &self::group_id(group_id)?, "top", period)
    }

    fn topups_in(&self, status: TopUpStatus) -> Result<Vec<TopUp>, GroupError> {
        self.in_status('t', status.code(), "top")
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
        let batch = run(&self.tree, |tx| {
            tx_group(tx, &gid)?;
            let batch_id = tx_next_id(tx, "GB", &date, "bat")?;
            let batch = Batch {
                batch_id: batch_id.clone(),
                group_id: gid.clone(),
                operator: op.clone(),
                items: checked.clone(),
                created_at: at,
            };
            tx_put(tx, &format!("bat/{batch_id}"), &batch)?;
            Ok(batch)
        })?;
        self.flush()?;
        Ok(batch)
    }

    fn batch(&self, batch_id: &str) -> Result<Option<Batch>, GroupError> {
        self.get(&format!("bat/{}", bounded_id(batch_id)?))
    }
}

fn reason_or(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        "充值失败".into()
    } else {
        t.chars().filter(|c| !c.is_control()).collect()
    }
}

fn change(
    at: OffsetDateTime,
    operator: &str,
    from: OrderStatus,
    to: OrderStatus,
    reason: Option<String>,
) -> StatusChange {
    StatusChange {
        at,
        operator: operator.to_owned(),
        from: Some(from.code().into()),
        to: to.code().into(),
        reason,
    }
}

#[allow(clippy::too_many_arguments)]
fn reserve_in(
    tx: &TransactionalTree,
    group: &mut Group,
    req: &ReserveRequest,
    card: &str,
    txn_id: &str,
    op: &str,
    at: OffsetDateTime,
    order_id: String,
) -> Tx<RechargeOrder> {
    let quota_before = group.available_fen;
    tx_move_quota(
        tx,
        group,
        LedgerKind::Reserve,
        -req.amount_fen,
        &order_id,
        op,
        at,
    )?;
    let order = RechargeOrder {
        order_id: order_id.clone(),
        group_id: group.group_id.clone(),
        operator: op.to_owned(),
        card_number: card.to_owned(),
        amount_fen: req.amount_fen,
        card_balance_fen: req.card_balance_fen,
        balance_before_fen: None,
        balance_after_fen: None,
        quota_before_fen: quota_before,
        quota_after_fen: group.available_fen,
        txn_id: txn_id.to_owned(),
        batch: req.batch.clone(),
        status: OrderStatus::Reserved,
        failure: None,
        created_at: at,
        updated_at: at,
        history: vec![StatusChange {
            at,
            operator: op.to_owned(),
            from: None,
            to: OrderStatus::Reserved.code().into(),
            reason: None,
        }],
    };
    tx.insert(format!("otxn/{txn_id}").as_bytes(), order_id.as_bytes())?;
    tx.insert(
        timed_key("gord", &group.group_id, at, &order_id),
        Vec::new(),
    )?;
    tx_put_order(tx, &order, None)?;
    Ok(order)
}
