//! 退款审核 (auditors): the failed group recharge orders (充值失败（待退款）), each with its card
//! evidence from the host's own ledger, and the auditor's 退款 or 改为充值成功.
//!
//! **The evidence rule** ([`judge`]): the authorisation the host gave for the order's load
//! transaction decides, never a person's wish:
//! * `booked`: the card's TAC verified with the host's keys, so the money is on the card
//!   (卡片已圈存成功): only 改为充值成功 is offered, and a refund is refused here too;
//! * `released`: the load was settled as not landed (the site's card said so, or nothing was
//!   written, or two people decided it on 待核对): 退款 (by someone else than who decided);
//! * `authorized` / `reconcile`: nobody knows yet: neither; the message says what to do;
//! * no authorisation: the host never issued MAC2 for it, so the card cannot have been
//!   credited: 退款.
//!
//! **Two people** ([`declarers`]): whoever declared the load "not landed" (released its
//! authorisation by hand, or set the order 充值失败) does not also approve its refund.

use cardd_api::vocab::Verdict;
use cardd_group::model::{OrderStatus, RechargeOrder};
use cardd_store_pg::ledger::HOST_OPERATOR as HOST_OPERATOR_PREFIX;
use cardd_store_pg::{AuthorizationDetail, AuthorizationState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, params, text, when, yuan, Caller, Method, Stores, AUDITORS, REASON_CHARS_MAX};
use crate::backoffice::error::BackOfficeError;

pub const METHODS: &[Method] = &[
    Method {
        name: "refunds.pending",
        roles: AUDITORS,
        changes: false,
        ends_sessions_of: None,
        run: pending,
    },
    Method {
        name: "refunds.refund",
        roles: AUDITORS,
        changes: true,
        ends_sessions_of: None,
        run: refund,
    },
    Method {
        name: "refunds.resolve",
        roles: AUDITORS,
        changes: true,
        ends_sessions_of: None,
        run: resolve,
    },
];

/// What the host's ledger says of a load: the verdict, the state's name and the auditor's
/// message (what it means, what to do).
pub fn judge(
    state: Option<AuthorizationState>,
    card_number: &str,
) -> (Verdict, &'static str, String) {
    match state {
        Some(AuthorizationState::Booked) => (
            Verdict::Landed,
            "booked",
            "卡片已圈存成功：卡片的交易验证码（TAC）已由后台核验，该订单的金额已在卡内，不能退款；请改为充值成功".into(),
        ),
        Some(AuthorizationState::Released) => (
            Verdict::NotLanded,
            "released",
            "圈存未成功：站点根据卡片判定金额未进入卡内（或未写卡），后台已解除该笔授权，可以退回额度".into(),
        ),
        Some(AuthorizationState::Authorized) => (
            Verdict::Unknown,
            "authorized",
            format!(
                "圈存结果未知：后台已发出圈存授权，尚未收到卡片的结果。请将卡号 {card_number} 的卡片放到任一站点的读卡器上，系统会根据卡片确认结果，之后再审核"
            ),
        ),
        Some(AuthorizationState::Reconcile) => (
            Verdict::Unknown,
            "reconcile",
            "卡片无法证明圈存是否成功：请主管或审核员在“待核对圈存”中核对卡片后判定，之后再审核".into(),
        ),
        None => (
            Verdict::NotLanded,
            "none",
            "后台从未为该订单发出圈存授权，卡片不可能已充值，可以退回额度".into(),
        ),
    }
}

/// The people who declared the order's load "not landed": who released its authorisation by
/// hand, who set the order 充值失败 (the host acting for a site is nobody), and both people of a
/// confirmed 待核对 verdict "not landed".
pub fn declarers(
    order: &RechargeOrder,
    auth: Option<&AuthorizationDetail>,
    verdict: Option<&cardd_store_pg::Verdict>,
) -> Vec<String> {
    let failed = serde_json::to_value(OrderStatus::Failed)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut people: Vec<String> = order
        .history
        .iter()
        .filter(|c| c.to == failed)
        .map(|c| c.operator.clone())
        .collect();
    if let Some(a) = auth.filter(|a| a.row.state == AuthorizationState::Released) {
        people.extend(a.settled_by.clone());
    }
    // A 待核对 verdict "not landed": both of its people declared it.
    if let Some(v) = verdict.filter(|v| v.state == "confirmed" && !v.landed) {
        people.push(v.proposed_by.clone());
        people.extend(v.decided_by.clone());
    }
    people.retain(|p| !p.starts_with(HOST_OPERATOR_PREFIX));
    people.sort();
    people.dedup();
    people
}

/// Whether `auditor` may refund an order with this evidence.
pub fn may_refund(
    verdict: Verdict,
    declared_by: &[String],
    auditor: &str,
) -> Result<(), BackOfficeError> {
    if verdict != Verdict::NotLanded {
        return Err(BackOfficeError::Refused(if verdict == Verdict::Landed {
            "不能退款：卡片已圈存成功，该订单的金额已在卡内；请改为充值成功".into()
        } else {
            "不能退款：圈存结果未知，请先确认卡片上的结果（见卡片证据）".into()
        }));
    }
    if declared_by.iter().any(|d| d == auditor) {
        return Err(BackOfficeError::Refused(format!(
            "不能退款：您（{auditor}）判定了该订单圈存未成功，退款须由另一位审核员审核"
        )));
    }
    Ok(())
}

/// Whether an order with this evidence may be set 充值成功.
pub fn may_resolve(verdict: Verdict) -> Result<(), BackOfficeError> {
    if verdict != Verdict::Landed {
        return Err(BackOfficeError::Refused(
            "不能改为充值成功：后台没有卡片圈存成功的证据（卡片的交易验证码未核验）".into(),
        ));
    }
    Ok(())
}

/// An order with its evidence.
struct Weighed {
    order: RechargeOrder,
    auth: Option<AuthorizationDetail>,
    verdict: Verdict,
    state: &'static str,
    message: String,
    declared_by: Vec<String>,
}

fn weigh(stores: &Stores, order: RechargeOrder) -> Result<Weighed, BackOfficeError> {
    let auth = stores.ledger.authorization(&order.txn_id)?;
    let (verdict, state, message) = judge(auth.as_ref().map(|a| a.row.state), &order.card_number);
    let review = match &auth {
        Some(_) => stores.review.item(&order.txn_id)?.verdict,
        None => None,
    };
    let declared_by = declarers(&order, auth.as_ref(), review.as_ref());
    Ok(Weighed {
        order,
        auth,
        verdict,
        state,
        message,
        declared_by,
    })
}

fn row(stores: &Stores, w: &Weighed, auditor: &str) -> Result<Value, BackOfficeError> {
    let o = &w.order;
    let group = stores.groups.group(&o.group_id)?;
    let before = o
        .balance_before_fen
        .or(w.auth.as_ref().map(|a| a.balance_before_fen));
    let after = o.balance_after_fen.or(match (w.verdict, before) {
        (Verdict::Landed, Some(b)) => Some(b + o.amount_fen),
        _ => None,
    });
    Ok(json!({
        "order_id": o.order_id,
        "group_id": o.group_id,
        "group_name": group.map(|g| g.name),
        "card_number": o.card_number,
        "amount": yuan(o.amount_fen),
        "operator": o.operator,
        "status_label": o.status.label(),
        "failure": o.failure,
        "created_at": when(o.created_at),
        "updated_at": when(o.updated_at),
        "txn_id": o.txn_id,
        "evidence": {
            "verdict": w.verdict,
            "state": w.state,
            "message": w.message,
            "site_id": w.auth.as_ref().map(|a| a.row.site_id.clone()),
            "authorized_at": w.auth.as_ref().map(|a| when(a.authorized_at)),
            "settled_at": w.auth.as_ref().and_then(|a| a.settled_at).map(when),
            "settled_by": w.auth.as_ref().and_then(|a| a.settled_by.clone()),
            "tac": w.auth.as_ref().and_then(|a| a.row.tac.clone()),
            "balance_before": before.map(yuan),
            "balance_after": after.map(yuan),
            "declared_by": w.declared_by,
        },
        "may_refund": may_refund(w.verdict, &w.declared_by, auditor).is_ok(),
        "may_resolve": may_resolve(w.verdict).is_ok(),
        "refund_refusal": may_refund(w.verdict, &w.declared_by, auditor).err().map(|e| e.to_string()),
    }))
}

fn pending(stores: &Stores, caller: &Caller, _: Value) -> Result<Value, BackOfficeError> {
    let mut rows = Vec::new();
    for order in stores.groups.orders_in(OrderStatus::Failed)? {
        let w = weigh(stores, order)?;
        rows.push(row(stores, &w, &caller.username)?);
    }
    answer(rows)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    order_id: String,
    reason: String,
}

fn failed_order(stores: &Stores, order_id: &str) -> Result<Weighed, BackOfficeError> {
    let order = stores.groups.order(order_id)?.ok_or_else(|| {
        BackOfficeError::NotFound(format!("未找到充值订单 {order_id}，请刷新列表"))
    })?;
    if order.status != OrderStatus::Failed {
        return Err(BackOfficeError::Refused(format!(
            "订单 {order_id} 现在是“{}”，不在待退款审核中；请刷新列表",
            order.status.label()
        )));
    }
    weigh(stores, order)
}

fn refund(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Decision = params(p)?;
    let reason = text(&p.reason, "审核意见", REASON_CHARS_MAX)?;
    let w = failed_order(stores, &p.order_id)?;
    may_refund(w.verdict, &w.declared_by, &caller.username)?;
    let order = stores
        .groups
        .refund(&p.order_id, &caller.username, &reason)?;
    let group = stores.groups.group(&order.group_id)?;
    answer(json!({
        "order_id": order.order_id,
        "status_label": order.status.label(),
        "available": group.map(|g| yuan(g.available_fen)),
    }))
}

fn resolve(stores: &Stores, caller: &Caller, p: Value) -> Result<Value, BackOfficeError> {
    let p: Decision = params(p)?;
    let reason = text(&p.reason, "审核意见", REASON_CHARS_MAX)?;
    let w = failed_order(stores, &p.order_id)?;
    may_resolve(w.verdict)?;
    let balances = w.auth.as_ref().map(|a| {
        let before = a.balance_before_fen;
        (before, before + w.order.amount_fen)
    });
    let order =
        stores
            .groups
            .resolve_succeeded(&p.order_id, &caller.username, &reason, balances)?;
    answer(json!({
        "order_id": order.order_id,
        "status_label": order.status.label(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_booked_load_is_never_refunded_and_only_resolved() {
        let (v, state, message) = judge(Some(AuthorizationState::Booked), "1");
        assert_eq!((v, state), (Verdict::Landed, "booked"));
        assert!(message.contains("卡片已圈存成功"), "{message}");
        let e = may_refund(v, &[], "auditor1").expect_err("refused");
        assert!(e.to_string().contains("不能退款"), "{e}");
        assert!(may_resolve(v).is_ok());
    }

    #[test]
    fn released_or_never_authorised_loads_are_refunded_not_resolved() {
        for state in [Some(AuthorizationState::Released), None] {
            let (v, _, _) = judge(state, "1");
            assert_eq!(v, Verdict::NotLanded);
            assert!(may_refund(v, &[], "auditor1").is_ok());
            assert!(may_resolve(v).is_err());
        }
    }

    #[test]
    fn unknown_outcomes_are_neither_and_say_what_to_do() {
        for state in [
            AuthorizationState::Authorized,
            AuthorizationState::Reconcile,
        ] {
            let (v, _, message) = judge(Some(state), "6101000000000001");
            assert_eq!(v, Verdict::Unknown);
            assert!(may_refund(v, &[], "a").is_err());
            assert!(may_resolve(v).is_err());
            assert!(message.contains("请"), "{message}");
        }
    }

    #[test]
    fn whoever_declared_not_landed_does_not_approve_the_refund() {
        let declared = vec!["auditor1".to_owned()];
        let e = may_refund(Verdict::NotLanded, &declared, "auditor1").expect_err("two people");
        assert!(e.to_string().contains("另一位审核员"), "{e}");
        assert!(may_refund(Verdict::NotLanded, &declared, "auditor2").is_ok());
    }

    #[test]
    fn declarers_are_the_people_who_failed_the_order_or_released_its_load() {
        let t = time::OffsetDateTime::UNIX_EPOCH;
        let change = |operator: &str, to: &str| cardd_group::model::StatusChange {
            at: t,
            operator: operator.into(),
            from: None,
            to: to.into(),
            reason: None,
        };
        let order = RechargeOrder {
            order_id: "GO1".into(),
            group_id: "G001".into(),
            operator: "group1".into(),
            card_number: "1".into(),
            amount_fen: 1000,
            card_balance_fen: 0,
            balance_before_fen: None,
            balance_after_fen: None,
            quota_before_fen: 0,
            quota_after_fen: 0,
            txn_id: "T1".into(),
            batch: None,
            status: OrderStatus::Failed,
            failure: None,
            created_at: t,
            updated_at: t,
            history: vec![
                change("group1", "reserved"),
                change("supervisor1", "failed"),
                change(&format!("{HOST_OPERATOR_PREFIX}S01"), "failed"),
            ],
        };
        let auth = AuthorizationDetail {
            row: cardd_store_pg::AuthorizationRow {
                txn_id: "T1".into(),
                site_id: "S01".into(),
                card_number: "1".into(),
                online_atc: 1,
                amount_fen: 1000,
                funding_id: "GO1".into(),
                state: AuthorizationState::Released,
                tac: None,
            },
            balance_before_fen: 0,
            authorized_at: t,
            settled_at: Some(t),
            settled_by: Some("auditor9".into()),
            reason: None,
        };
        assert_eq!(
            declarers(&order, Some(&auth), None),
            vec!["auditor9".to_owned(), "supervisor1".to_owned()]
        );
        assert_eq!(
            declarers(&order, None, None),
            vec!["supervisor1".to_owned()]
        );
        // A 待核对 verdict "not landed" confirmed: its proposer and its confirmer declared it.
        let verdict = |landed: bool, state: &str| cardd_store_pg::Verdict {
            landed,
            reason: "核对".into(),
            proposed_by: "super2".into(),
            proposed_at: t,
            state: state.into(),
            decided_by: Some("auditor3".into()),
            decided_at: Some(t),
            card_check: "waiting".into(),
            card_evidence: None,
        };
        assert_eq!(
            declarers(&order, None, Some(&verdict(false, "confirmed"))),
            vec![
                "auditor3".to_owned(),
                "super2".to_owned(),
                "supervisor1".to_owned()
            ]
        );
        for other in [verdict(true, "confirmed"), verdict(false, "rejected")] {
            assert_eq!(
                declarers(&order, None, Some(&other)),
                vec!["supervisor1".to_owned()]
            );
        }
    }
}
