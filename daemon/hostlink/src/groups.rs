//! [`RemoteGroups`]: a site's view of the host's group recharge (集团充值), `cardd_group::GroupHost`
//! over the host's `groups.*` methods, and the host's side of those methods
//! ([`serve_group_call`]). In fleet mode a site keeps no group, quota or order of its own: a
//! group's quota is reserved, and its orders settled, at the host, in the host's serializable
//! transactions, so that sites recharging from one quota at once can never overdraw it.
//!
//! A host that cannot be reached is [`GroupError::Unreachable`] (无法连接发卡方后台…): nothing is
//! assumed, and a recharge is refused before anything is reserved or sent to a card. The host's
//! refusals reach the operator word for word with their API codes ([`GroupError::Remote`]). A
//! change whose answer was lost may have been made; settling an order again with the same
//! balances is answered with the order as it is, so the caller may retry.

use std::sync::Arc;

use cardd_api::ErrorCode;
use cardd_group::model::{
    Batch, BatchItemInput, Group, GroupInput, LedgerEntry, OrderStatus, PaymentOutcome, Period,
    RechargeOrder, ReserveRequest, TopUp, TopUpStatus,
};
use cardd_group::{GroupError, GroupHost};
use serde::de::DeserializeOwned;

use crate::link::{CallError, HostClient};
use crate::wire::{GroupCall, Refusal};

/// The host's group store, seen from a site.
#[derive(Debug, Clone)]
pub struct RemoteGroups {
    client: Arc<HostClient>,
}

impl RemoteGroups {
    pub fn new(client: Arc<HostClient>) -> RemoteGroups {
        RemoteGroups { client }
    }

    fn call<R: DeserializeOwned>(&self, call: GroupCall) -> Result<R, GroupError> {
        let (method, params) = call.split();
        self.client
            .call(&method, &params)
            .map_err(|e| remote_group_error(&method, e))
    }
}

/// A failed call as the group store's error.
pub fn remote_group_error(method: &str, e: CallError) -> GroupError {
    match e {
        CallError::Unreachable(detail) => {
            tracing::warn!(method, %detail, "the issuer host did not answer");
            GroupError::Unreachable(detail)
        }
        CallError::Refused(error) => match error.data {
            Some(Refusal::Record {
                code,
                refusal,
                message,
            }) => GroupError::Remote {
                code: ErrorCode::from_code(code).unwrap_or(ErrorCode::Internal),
                refusal,
                message,
            },
            _ => GroupError::Remote {
                code: ErrorCode::Internal,
                refusal: false,
                message: format!("发卡方后台出错：{}", error.message),
            },
        },
    }
}

impl GroupHost for RemoteGroups {
    fn group(&self, group_id: &str) -> Result<Option<Group>, GroupError> {
        self.call(GroupCall::Group {
            group_id: group_id.to_owned(),
        })
    }

    fn groups(&self) -> Result<Vec<Group>, GroupError> {
        self.call(GroupCall::Groups {})
    }

    fn upsert_group(&self, input: &GroupInput) -> Result<Group, GroupError> {
        self.call(GroupCall::UpsertGroup {
            input: input.clone(),
        })
    }

    fn ledger(
        &self,
        group_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, GroupError> {
        self.call(GroupCall::Ledger {
            group_id: group_id.to_owned(),
            after_seq,
            limit,
        })
    }

    fn reserve(&self, req: &ReserveRequest) -> Result<RechargeOrder, GroupError> {
        self.call(GroupCall::Reserve {
            request: req.clone(),
        })
    }

    fn mark_pending(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        self.call(GroupCall::MarkPending {
            order_id: order_id.to_owned(),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        })
    }

    fn settle(
        &self,
        order_id: &str,
        operator: &str,
        balance_before_fen: i64,
        balance_after_fen: i64,
    ) -> Result<RechargeOrder, GroupError> {
        self.call(GroupCall::Settle {
            order_id: order_id.to_owned(),
            operator: operator.to_owned(),
            balance_before_fen,
            balance_after_fen,
        })
    }

    fn fail(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        self.call(GroupCall::Fail {
            order_id: order_id.to_owned(),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        })
    }

    fn refund(
        &self,
        order_id: &str,
        auditor: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError> {
        self.call(GroupCall::Refund {
            order_id: order_id.to_owned(),
            auditor: auditor.to_owned(),
            reason: reason.to_owned(),
        })
    }

    fn resolve_succeeded(
        &self,
        order_id: &str,
        auditor: &str,
        reason: &str,
        balances_fen: Option<(i64, i64)>,
    ) -> Result<RechargeOrder, GroupError> {
        self.call(GroupCall::ResolveSucceeded {
            order_id: order_id.to_owned(),
            auditor: auditor.to_owned(),
            reason: reason.to_owned(),
            balances_fen,
        })
    }

    fn order(&self, order_id: &str) -> Result<Option<RechargeOrder>, GroupError> {
        self.call(GroupCall::Order {
            order_id: order_id.to_owned(),
        })
    }

    fn orders(&self, group_id: &str, period: &Period) -> Result<Vec<RechargeOrder>, GroupError> {
        self.call(GroupCall::Orders {
            group_id: group_id.to_owned(),
            period: *period,
        })
    }

    fn orders_in(&self, status: OrderStatus) -> Result<Vec<RechargeOrder>, GroupError> {
        self.call(GroupCall::OrdersIn { status })
    }

    fn create_topup(
        &self,
        group_id: &str,
        operator: &str,
        amount_fen: i64,
        remark: &str,
    ) -> Result<TopUp, GroupError> {
        self.call(GroupCall::CreateTopup {
            group_id: group_id.to_owned(),
            operator: operator.to_owned(),
            amount_fen,
            remark: remark.to_owned(),
        })
    }

    fn record_payment(
        &self,
        topup_id: &str,
        outcome: &PaymentOutcome,
    ) -> Result<TopUp, GroupError> {
        self.call(GroupCall::RecordPayment {
            topup_id: topup_id.to_owned(),
            outcome: outcome.clone(),
        })
    }

    fn audit_topup(
        &self,
        topup_id: &str,
        auditor: &str,
        approve: bool,
        reason: &str,
    ) -> Result<TopUp, GroupError> {
        self.call(GroupCall::AuditTopup {
            topup_id: topup_id.to_owned(),
            auditor: auditor.to_owned(),
            approve,
            reason: reason.to_owned(),
        })
    }

    fn topup(&self, topup_id: &str) -> Result<Option<TopUp>, GroupError> {
        self.call(GroupCall::Topup {
            topup_id: topup_id.to_owned(),
        })
    }

    fn topups(&self, group_id: &str, period: &Period) -> Result<Vec<TopUp>, GroupError> {
        self.call(GroupCall::Topups {
            group_id: group_id.to_owned(),
            period: *period,
        })
    }

    fn topups_in(&self, status: TopUpStatus) -> Result<Vec<TopUp>, GroupError> {
        self.call(GroupCall::TopupsIn { status })
    }

    fn create_batch(
        &self,
        group_id: &str,
        operator: &str,
        items: &[BatchItemInput],
    ) -> Result<Batch, GroupError> {
        self.call(GroupCall::CreateBatch {
            group_id: group_id.to_owned(),
            operator: operator.to_owned(),
            items: items.to_vec(),
        })
    }

    fn batch(&self, batch_id: &str) -> Result<Option<Batch>, GroupError> {
        self.call(GroupCall::Batch {
            batch_id: batch_id.to_owned(),
        })
    }
}

/// Runs `call` against `groups` (the host's side of the group methods).
pub fn serve_group_call(
    groups: &dyn GroupHost,
    call: GroupCall,
) -> Result<serde_json::Value, GroupError> {
    fn json<T: serde::Serialize>(
        v: Result<T, GroupError>,
    ) -> Result<serde_json::Value, GroupError> {
        v.and_then(|v| {
            serde_json::to_value(v)
                .map_err(|e| GroupError::Internal(format!("the answer could not be encoded: {e}")))
        })
    }
    let g = groups;
    match call {
        GroupCall::Group { group_id } => json(g.group(&group_id)),
        GroupCall::Groups {} => json(g.groups()),
        GroupCall::UpsertGroup { input } => json(g.upsert_group(&input)),
        GroupCall::Ledger {
            group_id,
            after_seq,
            limit,
        } => json(g.ledger(
            &group_id,
            after_seq,
            limit.min(cardd_group::model::QUERY_ROWS_MAX),
        )),
        GroupCall::Reserve { request } => json(g.reserve(&request)),
        GroupCall::MarkPending {
            order_id,
            operator,
            reason,
        } => json(g.mark_pending(&order_id, &operator, &reason)),
        GroupCall::Settle {
            order_id,
            operator,
            balance_before_fen,
            balance_after_fen,
        } => json(g.settle(&order_id, &operator, balance_before_fen, balance_after_fen)),
        GroupCall::Fail {
            order_id,
            operator,
            reason,
        } => json(g.fail(&order_id, &operator, &reason)),
        GroupCall::Refund {
            order_id,
            auditor,
            reason,
        } => json(g.refund(&order_id, &auditor, &reason)),
        GroupCall::ResolveSucceeded {
            order_id,
            auditor,
            reason,
            balances_fen,
        } => json(g.resolve_succeeded(&order_id, &auditor, &reason, balances_fen)),
        GroupCall::Order { order_id } => json(g.order(&order_id)),
        GroupCall::Orders { group_id, period } => json(g.orders(&group_id, &period)),
        GroupCall::OrdersIn { status } => json(g.orders_in(status)),
        GroupCall::CreateTopup {
            group_id,
            operator,
            amount_fen,
            remark,
        } => json(g.create_topup(&group_id, &operator, amount_fen, &remark)),
        GroupCall::RecordPayment { topup_id, outcome } => {
            json(g.record_payment(&topup_id, &outcome))
        }
        GroupCall::AuditTopup {
            topup_id,
            auditor,
            approve,
            reason,
        } => json(g.audit_topup(&topup_id, &auditor, approve, &reason)),
        GroupCall::Topup { topup_id } => json(g.topup(&topup_id)),
        GroupCall::Topups { group_id, period } => json(g.topups(&group_id, &period)),
        GroupCall::TopupsIn { status } => json(g.topups_in(status)),
        GroupCall::CreateBatch {
            group_id,
            operator,
            items,
        } => json(g.create_batch(&group_id, &operator, &items)),
        GroupCall::Batch { batch_id } => json(g.batch(&batch_id)),
    }
}

/// A group store error as the wire's refusal.
pub fn group_refusal(e: &GroupError) -> Refusal {
    Refusal::Record {
        code: e.code().code(),
        refusal: e.is_refusal(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_calls_round_trip_through_their_method_names() {
        let calls = [
            GroupCall::Groups {},
            GroupCall::Settle {
                order_id: "GR20250301000001".into(),
                operator: "op".into(),
                balance_before_fen: 1_000,
                balance_after_fen: 3_000,
            },
            GroupCall::OrdersIn {
                status: OrderStatus::Reserved,
            },
            GroupCall::Orders {
                group_id: "G001".into(),
                period: Period {
                    start: time::macros::date!(2025 - 03 - 01),
                    end: time::macros::date!(2025 - 03 - 31),
                },
            },
        ];
        for call in calls {
            let (method, params) = call.split();
            assert!(method.starts_with("groups."), "{method}");
            assert_eq!(GroupCall::join(&method, params).unwrap(), call);
        }
        let (method, _) = GroupCall::ResolveSucceeded {
            order_id: String::new(),
            auditor: String::new(),
            reason: String::new(),
            balances_fen: None,
        }
        .split();
        assert_eq!(method, "groups.resolve_succeeded");
    }

    #[test]
    fn the_hosts_refusals_come_back_word_for_word() {
        let e = GroupError::QuotaInsufficient {
            available_fen: 1_000,
            amount_fen: 2_000,
        };
        let error = crate::wire::RpcError {
            code: crate::wire::CODE_GROUPS,
            message: e.to_string(),
            data: Some(group_refusal(&e)),
        };
        let back = remote_group_error("groups.reserve", CallError::Refused(error));
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(back.code(), ErrorCode::QuotaInsufficient);
        assert!(back.is_refusal());
        let down = remote_group_error("groups.reserve", CallError::Unreachable("x".into()));
        assert_eq!(down.code(), ErrorCode::IssuerHostUnreachable);
        assert_eq!(
            down.to_string(),
            "无法连接发卡方后台（x），暂不能办理；请稍后再试"
        );
        assert!(!down.is_refusal());
    }
}
