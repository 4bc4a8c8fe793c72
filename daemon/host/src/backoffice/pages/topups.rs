//! 额度充值审核 (auditors): the groups' paid transfers (转账成功（待审核）) and the auditor's
//! 通过 (the group's quota grows by the amount, in the store's one change) or 驳回, each with
//! an 审核意见. The store allows `Paid → Approved | Rejected` once.

use cardd_group::model::TopUpStatus;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, text, when, yuan, Caller, Method, Stores, AUDITORS, REASON_CHARS_MAX};
use crate::backoffice::error::BackOfficeError;

pub const METHODS: &[Method] = &[
    Method {
        name: "topups.pending",
        roles: AUDITORS,
        changes: false,
        ends_sessions_of: None,
        run: pending,
    },
    Method {
        name: "topups.audit",
        roles: AUDITORS,
        changes: true,
        ends_sessions_of: None,
        run: audit,
    },
];

fn pending(stores: &Stores, _: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    let mut rows = Vec::new();
    for t in stores.groups.topups_in(TopUpStatus::Paid)? {
        let group = stores.groups.group(&t.group_id)?;
        rows.push(json!({
            "topup_id": t.topup_id,
            "group_id": t.group_id,
            "group_name": group.as_ref().map(|g| g.name.clone()),
            "available": group.as_ref().map(|g| yuan(g.available_fen)),
            "amount": yuan(t.amount_fen),
            "operator": t.operator,
            "remark": t.remark,
            "bank_serial": t.bank_serial,
            "status_label": t.status.label(),
            "created_at": when(t.created_at),
        }));
    }
    answer(rows)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    topup_id: String,
    approve: bool,
    #[serde(default)]
    reason: String,
}

fn audit(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Decision = params(p)?;
    let reason = if p.approve && p.reason.trim().is_empty() {
        "审核通过".to_owned()
    } else {
        text(&p.reason, "审核意见（驳回时必填）", REASON_CHARS_MAX)?
    };
    let topup = stores
        .groups
        .audit_topup(&p.topup_id, &caller.username, p.approve, &reason)?;
    let group = stores.groups.group(&topup.group_id)?;
    answer(json!({
        "topup_id": topup.topup_id,
        "group_id": topup.group_id,
        "status": topup.status,
        "status_label": topup.status.label(),
        "available": group.map(|g| yuan(g.available_fen)),
    }))
}
