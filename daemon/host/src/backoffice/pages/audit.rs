//! 审计日志 (auditors, administrators): the host's hash-chained audit log, newest first,
//! filtered by chain (a site's id, or `host`), a page at a time within the newest
//! [`cardd_store_pg::audit::AUDIT_LIST_MAX`] records; and 验证: every chain walked from its
//! first record (intact, or where it breaks).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, when, Caller, Method, Stores, AUDITORS_AND_ADMINS};
use crate::backoffice::error::BackOfficeError;

/// Records on one page.
pub const AUDIT_PAGE_SIZE: i64 = 50;
/// Longest chain name asked for, in characters.
const CHAIN_CHARS_MAX: usize = 64;

pub const METHODS: &[Method] = &[
    Method {
        name: "audit.list",
        roles: AUDITORS_AND_ADMINS,
        changes: false,
        ends_sessions_of: None,
        run: list,
    },
    Method {
        name: "audit.verify",
        roles: AUDITORS_AND_ADMINS,
        changes: false,
        ends_sessions_of: None,
        run: verify,
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    #[serde(default)]
    chain: Option<String>,
    /// From 1.
    #[serde(default)]
    page: Option<i64>,
}

fn list(stores: &Stores, _: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: List = params(p)?;
    let chain = p
        .chain
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if chain
        .as_ref()
        .is_some_and(|c| c.chars().count() > CHAIN_CHARS_MAX)
    {
        return Err(BackOfficeError::InvalidParams("链名过长".into()));
    }
    let pages_max = cardd_store_pg::audit::AUDIT_LIST_MAX / AUDIT_PAGE_SIZE;
    let page = p.page.unwrap_or(1).clamp(1, pages_max);
    let records = stores
        .audit
        .list(chain.as_deref(), page * AUDIT_PAGE_SIZE + 1)?;
    let skip = usize::try_from((page - 1) * AUDIT_PAGE_SIZE).unwrap_or(0);
    let more = records.len() > skip + AUDIT_PAGE_SIZE as usize && page < pages_max;
    let rows: Vec<Value> = records
        .into_iter()
        .skip(skip)
        .take(AUDIT_PAGE_SIZE as usize)
        .map(|r| {
            json!({
                "chain": r.chain,
                "seq": r.seq,
                "at": when(r.at),
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "detail": r.detail,
                "outcome": r.outcome,
                "hash": r.hash,
            })
        })
        .collect();
    answer(json!({ "records": rows, "page": page, "more": more, "page_size": AUDIT_PAGE_SIZE }))
}

fn verify(stores: &Stores, _: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    match stores.audit.verify() {
        Ok(report) => answer(json!({
            "intact": true,
            "records": report.records,
            "chains": report.chains,
            "message": format!("审计日志完整：{} 条链，共 {} 条记录，逐条核对哈希无误", report.chains, report.records),
        })),
        Err(cardd_store_pg::AuditError::Broken { chain, seq, reason }) => answer(json!({
            "intact": false,
            "chain": chain,
            "seq": seq,
            "reason": reason,
            "message": format!("审计日志在链 {chain} 的第 {seq} 条记录处断开（{reason}）：请立即停止操作，由管理员将数据库与备份比对"),
        })),
        Err(e) => Err(e.into()),
    }
}
