//! The group store as the service sees it ([`GroupHost`]), and the seed's rules that every
//! implementation checks ([`check_recharge`], [`check_topup_amount`]).
//!
//! **Quota ledger.** A group's available quota (集团可用额度) moves only by appending a
//! [`LedgerEntry`] in the same atomic change that changes the group: an approved top-up adds, a
//! reservation for a card recharge subtracts, an approved refund adds back. The group's
//! `available_fen` is always the sum of its ledger.
//!
//! **Orders.** A recharge order is created [`OrderStatus::Reserved`] with the quota already
//! taken, durably, *before* the card is credited; it then moves, once, to `Succeeded` (the card
//! was credited: settled), `Pending` (结果待确认: CREDIT was sent, the outcome is unknown) or
//! `Failed` (refund pending). A failed order's quota comes back only when an auditor approves
//! the refund (`Failed → Refunded`, one ledger entry), or the auditor resolves it as succeeded
//! (`Failed → Succeeded`) when the card shows the load landed. No order moves twice, so nothing
//! is refunded twice. While a card has an unsettled order, no other order for it is accepted, so
//! two recharges cannot both pass the card's 1000-yuan ceiling.
//!
//! **Top-ups.** `Pending → Paid | Failed | Unknown` with the bank's answer, `Unknown → Paid |
//! Failed` once the bank is asked again, and `Paid → Approved | Rejected` by an auditor; only
//! approval grows the quota.

use crate::error::GroupError;
use crate::model::*;

/// The group host as the daemon sees it. Every change is validated, checked against the
/// record's status and durable before it returns.
pub trait GroupHost: Send + Sync + std::fmt::Debug {
    /// A group.
    fn group(&self, group_id: &str) -> Result<Option<Group>, GroupError>;
    /// Every group, by id.
    fn groups(&self) -> Result<Vec<Group>, GroupError>;
    /// Creates a group with no quota, or renames it / changes its terminal.
    fn upsert_group(&self, input: &GroupInput) -> Result<Group, GroupError>;
    /// The group's ledger entries after `after_seq`, oldest first, at most `limit`.
    fn ledger(
        &self,
        group_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, GroupError>;
    /// Checks the seed's rules and reserves the quota: a new [`OrderStatus::Reserved`] order.
    fn reserve(&self, req: &ReserveRequest) -> Result<RechargeOrder, GroupError>;
    /// `Reserved → Pending` (结果待确认): CREDIT was sent and its outcome is unknown.
    fn mark_pending(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError>;
    /// `Reserved|Pending → Succeeded` with the card's balances (`after = before + amount`).
    fn settle(
        &self,
        order_id: &str,
        operator: &str,
        balance_before_fen: i64,
        balance_after_fen: i64,
    ) -> Result<RechargeOrder, GroupError>;
    /// `Reserved|Pending → Failed`: refund pending. Only when nothing was sent to the card or
    /// the card proved the load did not land.
    fn fail(
        &self,
        order_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError>;
    /// `Failed → Refunded`, returning the quota (the auditor checked the load did not land).
    fn refund(
        &self,
        order_id: &str,
        auditor: &str,
        reason: &str,
    ) -> Result<RechargeOrder, GroupError>;
    /// `Failed → Succeeded` (the auditor checked the load landed), with the balances if known.
    fn resolve_succeeded(
        &self,
        order_id: &str,
        auditor: &str,
        reason: &str,
        balances_fen: Option<(i64, i64)>,
    ) -> Result<RechargeOrder, GroupError>;
    /// An order.
    fn order(&self, order_id: &str) -> Result<Option<RechargeOrder>, GroupError>;
    /// A group's orders placed in the period, newest first.
    fn orders(&self, group_id: &str, period: &Period) -> Result<Vec<RechargeOrder>, GroupError>;
    /// Every order in `status` (all groups), oldest first.
    fn orders_in(&self, status: OrderStatus) -> Result<Vec<RechargeOrder>, GroupError>;
    /// A new top-up, [`TopUpStatus::Pending`], before the bank is asked.
    fn create_topup(
        &self,
        group_id: &str,
        operator: &str,
        amount_fen: i64,
        remark: &str,
    ) -> Result<TopUp, GroupError>;
    /// Records the bank's answer for a pending or unknown top-up.
    fn record_payment(&self, topup_id: &str, outcome: &PaymentOutcome)
        -> Result<TopUp, GroupError>;
    /// `Paid → Approved` (the quota grows) or `Paid → Rejected`.
    fn audit_topup(
        &self,
        topup_id: &str,
        auditor: &str,
        approve: bool,
        reason: &str,
    ) -> Result<TopUp, GroupError>;
    /// A top-up.
    fn topup(&self, topup_id: &str) -> Result<Option<TopUp>, GroupError>;
    /// A group's top-ups made in the period, newest first.
    fn topups(&self, group_id: &str, period: &Period) -> Result<Vec<TopUp>, GroupError>;
    /// Every top-up in `status` (all groups), oldest first.
    fn topups_in(&self, status: TopUpStatus) -> Result<Vec<TopUp>, GroupError>;
    /// A new batch of cards to recharge.
    fn create_batch(
        &self,
        group_id: &str,
        operator: &str,
        items: &[BatchItemInput],
    ) -> Result<Batch, GroupError>;
    /// A batch.
    fn batch(&self, batch_id: &str) -> Result<Option<Batch>, GroupError>;
}

/// Checks the seed's recharge rules: a multiple of 10 yuan, at least 10 yuan, the card at most
/// 1000 yuan afterwards, within the available quota.
pub fn check_recharge(
    amount_fen: i64,
    card_balance_fen: i64,
    available_fen: i64,
) -> Result<(), GroupError> {
    if amount_fen < RECHARGE_MIN_FEN {
        return Err(GroupError::AmountTooSmall { amount_fen });
    }
    if amount_fen % RECHARGE_STEP_FEN != 0 {
        return Err(GroupError::AmountNotStep { amount_fen });
    }
    if card_balance_fen < 0
        || card_balance_fen.saturating_add(amount_fen) > CARD_BALANCE_AFTER_FEN_MAX
    {
        return Err(GroupError::CardBalanceOver {
            balance_fen: card_balance_fen,
            amount_fen,
        });
    }
    if amount_fen > available_fen {
        return Err(GroupError::QuotaInsufficient {
            available_fen,
            amount_fen,
        });
    }
    Ok(())
}

/// Checks a transfer amount: a positive whole number of yuan, at most [`TOPUP_FEN_MAX`].
pub fn check_topup_amount(amount_fen: i64) -> Result<(), GroupError> {
    if amount_fen <= 0 {
        return Err(GroupError::TopUpAmount("转账金额必须大于0".into()));
    }
    if amount_fen % 100 != 0 {
        return Err(GroupError::TopUpAmount("转账金额不能带小数点".into()));
    }
    if amount_fen > TOPUP_FEN_MAX {
        return Err(GroupError::TopUpAmount(format!(
            "单笔转账不能超过 {} 元",
            yuan(TOPUP_FEN_MAX)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recharges_are_whole_tens_of_yuan_at_least_ten_and_leave_the_card_at_most_1000() {
        // ×10 yuan, ≥ 10 yuan.
        assert!(check_recharge(1_000, 0, i64::MAX).is_ok());
        assert!(check_recharge(10_000, 0, i64::MAX).is_ok());
        for amount in [0, -1_000, 900, 999] {
            let e = check_recharge(amount, 0, i64::MAX).unwrap_err();
            assert!(
                matches!(e, GroupError::AmountTooSmall { .. }),
                "{amount}: {e}"
            );
            assert!(e.to_string().contains("不能小于10元"), "{e}");
        }
        for amount in [1_001, 1_500, 1_050, 10_010] {
            let e = check_recharge(amount, 0, i64::MAX).unwrap_err();
            assert!(
                matches!(e, GroupError::AmountNotStep { .. }),
                "{amount}: {e}"
            );
            assert!(e.to_string().contains("10元的整数倍"), "{e}");
        }
        // ≤ 1000 yuan on the card afterwards: exactly 1000 is allowed, a fen more is not.
        assert!(check_recharge(1_000, 99_000, i64::MAX).is_ok());
        let e = check_recharge(2_000, 99_000, i64::MAX).unwrap_err();
        assert!(matches!(e, GroupError::CardBalanceOver { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "充值后卡内金额不能超过1000元：卡内余额 990.00 元，充值 20.00 元后为 1010.00 元"
        );
        assert!(check_recharge(1_000, 99_001, i64::MAX).is_err());
        assert!(
            check_recharge(1_000, -1, i64::MAX).is_err(),
            "a negative balance"
        );
        // Within the quota.
        assert!(check_recharge(5_000, 0, 5_000).is_ok());
        let e = check_recharge(5_000, 0, 4_000).unwrap_err();
        assert!(matches!(e, GroupError::QuotaInsufficient { .. }), "{e}");
        assert_eq!(e.code(), cardd_api::ErrorCode::QuotaInsufficient);
        assert_eq!(
            GroupError::AmountNotStep { amount_fen: 1 }.code(),
            cardd_api::ErrorCode::RechargeRefused
        );
        // The rules the clients read are these figures.
        let rules = recharge_rules();
        assert_eq!(
            (rules.step_fen, rules.min_fen, rules.card_balance_max_fen),
            (
                RECHARGE_STEP_FEN,
                RECHARGE_MIN_FEN,
                CARD_BALANCE_AFTER_FEN_MAX
            )
        );
        assert_eq!(
            (
                RECHARGE_STEP_FEN,
                RECHARGE_MIN_FEN,
                CARD_BALANCE_AFTER_FEN_MAX
            ),
            (1_000, 1_000, 100_000)
        );
    }

    #[test]
    fn top_up_amounts_are_positive_whole_yuan_within_the_limit() {
        assert!(check_topup_amount(100).is_ok());
        assert!(check_topup_amount(TOPUP_FEN_MAX).is_ok());
        for (amount, words) in [
            (0, "必须大于0"),
            (-100, "必须大于0"),
            (150, "不能带小数点"),
            (TOPUP_FEN_MAX + 100, "单笔转账不能超过"),
        ] {
            let e = check_topup_amount(amount).unwrap_err();
            assert!(e.to_string().contains(words), "{amount}: {e}");
            assert_eq!(e.code(), cardd_api::ErrorCode::InvalidParams);
        }
    }
}
