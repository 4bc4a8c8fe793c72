//! 待核对 (supervisors and auditors): the loads the host authorised that no card settled: the
//! card never came back (lost, broken, kept) or its proof failed. Two people decide each
//! (`cardd_store_pg::review`): a 主管 or 审核员 proposes 已到账 or 未到账 with a reason, after the
//! card had time to come back; a different 审核员 confirms (the record or order follows) or
//! rejects. A confirmed verdict is checked by the card at its next load, and one the card
//! contradicts comes back here with the card's evidence.

use cardd_api::Role;
use cardd_store_pg::{ReviewItem, Verdict};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, when, yuan, Caller, Method, Stores, AUDITORS, REASON_CHARS_MAX};
use crate::backoffice::error::BackOfficeError;

/// Who may see the list and propose a verdict.
const PROPOSERS: &[Role] = &[Role::Supervisor, Role::Auditor];

pub const METHODS: &[Method] = &[
    Method {
        name: "review.pending",
        roles: PROPOSERS,
        changes: false,
        ends_sessions_of: None,
        run: pending,
    },
    Method {
        name: "review.propose",
        roles: PROPOSERS,
        changes: true,
        ends_sessions_of: None,
        run: propose,
    },
    Method {
        name: "review.decide",
        roles: AUDITORS,
        changes: true,
        ends_sessions_of: None,
        run: decide,
    },
];

fn verdict_json(v: &Verdict) -> Value {
    json!({
        "landed": v.landed,
        "reason": v.reason,
        "proposed_by": v.proposed_by,
        "proposed_at": when(v.proposed_at),
        "state": v.state,
        "decided_by": v.decided_by,
        "decided_at": v.decided_at.map(when),
        "card_check": v.card_check,
        "card_evidence": v.card_evidence,
    })
}

fn item_json(i: &ReviewItem) -> Value {
    json!({
        "txn_id": i.txn_id,
        "site_id": i.site_id,
        "card_number": i.card_number,
        "amount": yuan(i.amount_fen),
        "online_atc": i.online_atc,
        "balance_before": yuan(i.balance_before_fen),
        "balance_if_landed": yuan(i.balance_before_fen + i.amount_fen),
        "funding_kind": i.funding_kind,
        "funding_id": i.funding_id,
        "state": i.state,
        "authorized_at": when(i.authorized_at),
        "why": i.why,
        "decidable": i.decidable,
        "decidable_at": when(i.decidable_at),
        "verdict": i.verdict.as_ref().map(verdict_json),
    })
}

fn pending(stores: &Stores, _: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    let items = stores.review.pending()?;
    answer(items.iter().map(item_json).collect::<Vec<_>>())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Proposal {
    txn_id: String,
    landed: bool,
    reason: String,
}

fn propose(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Proposal = params(p)?;
    let reason = super::text(&p.reason, "核定原因", REASON_CHARS_MAX)?;
    let item = stores
        .review
        .propose(&p.txn_id, p.landed, &reason, &caller.username)?;
    answer(item_json(&item))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    txn_id: String,
    confirm: bool,
}

fn decide(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Decision = params(p)?;
    let item = stores
        .review
        .decide(&p.txn_id, p.confirm, &caller.username)?;
    answer(item_json(&item))
}
