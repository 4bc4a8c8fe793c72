//! The business vocabulary on the wire, once: operator roles, plate colours, recharge order and
//! quota top-up statuses, query periods, each with its wire code and zh-CN label, and the shape
//! of the group recharge rules ([`GroupRules`]; their figures live where the rule is enforced,
//! `cardd_group::model::recharge_rules`).
//!
//! Clients fetch them (`system.vocabulary`, `group.rules`) instead of copying tables; flows get
//! the rules as structured values (`group.rules()`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::Fen;
use crate::roles::Role;
use crate::types::PLATE_COLOURS;

/// What moved a group's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// 额度充值: an approved transfer (+).
    TopUp,
    /// 充值扣减: quota reserved for a card recharge (−).
    Reserve,
    /// 退款: the quota of a failed recharge, returned after the auditor approved (+).
    Refund,
}

impl LedgerKind {
    /// zh-CN name.
    pub fn label(self) -> &'static str {
        match self {
            LedgerKind::TopUp => "额度充值",
            LedgerKind::Reserve => "充值扣减",
            LedgerKind::Refund => "退款",
        }
    }
}

/// Did a load land: what the card and the journal (decided from the card) say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The money is on the card.
    Landed,
    /// The card proves the money is not on it (or the load never reached it).
    NotLanded,
    /// Nothing proves either yet: the card must be presented, or a person must reconcile.
    Unknown,
}

/// Where a recharge order (充值订单) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// 充值中: the quota is reserved, the card load is in progress or its outcome is not yet
    /// known.
    Reserved,
    /// 结果待确认: CREDIT may have reached the card and nothing proves whether it landed. Not
    /// failed and not refundable: settled from the journal when the card is presented again
    /// (→ 充值成功, or → 充值失败（待退款） only when the card proves the load did not land).
    Pending,
    /// 充值成功: the card was credited; the reservation is settled.
    Succeeded,
    /// 充值失败（待退款）: the load did not complete; the reservation waits for the auditor.
    Failed,
    /// 已退款: the auditor returned the quota.
    Refunded,
}

impl OrderStatus {
    /// Every status.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Reserved,
        OrderStatus::Pending,
        OrderStatus::Succeeded,
        OrderStatus::Failed,
        OrderStatus::Refunded,
    ];

    /// zh-CN name.
    pub fn label(self) -> &'static str {
        match self {
            OrderStatus::Reserved => "充值中",
            OrderStatus::Pending => "结果待确认",
            OrderStatus::Succeeded => "充值成功",
            OrderStatus::Failed => "充值失败（待退款）",
            OrderStatus::Refunded => "充值失败（已退款）",
        }
    }

    /// Wire name.
    pub fn code(self) -> &'static str {
        match self {
            OrderStatus::Reserved => "reserved",
            OrderStatus::Pending => "pending",
            OrderStatus::Succeeded => "succeeded",
            OrderStatus::Failed => "failed",
            OrderStatus::Refunded => "refunded",
        }
    }
}

impl OrderStatus {
    /// Whether the order's money may still be on its way to the card: its card takes no other
    /// recharge, and it is neither failed nor refundable.
    pub fn is_unsettled(self) -> bool {
        matches!(self, OrderStatus::Reserved | OrderStatus::Pending)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where a quota top-up (额度充值) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopUpStatus {
    /// 支付中: sent to the bank, no answer yet.
    Pending,
    /// 支付结果未知: the bank did not answer in time; ask it again before anything else.
    Unknown,
    /// 转账失败: the bank refused; no money moved.
    Failed,
    /// 转账成功（待审核）: the bank took the money; the quota grows once an auditor approves.
    Paid,
    /// 审核通过: the quota grew by the amount.
    Approved,
    /// 审核未通过: the auditor refused; the quota did not change.
    Rejected,
}

impl TopUpStatus {
    /// Every status.
    pub const ALL: [TopUpStatus; 6] = [
        TopUpStatus::Pending,
        TopUpStatus::Unknown,
        TopUpStatus::Failed,
        TopUpStatus::Paid,
        TopUpStatus::Approved,
        TopUpStatus::Rejected,
    ];

    /// zh-CN name.
    pub fn label(self) -> &'static str {
        match self {
            TopUpStatus::Pending => "支付中",
            TopUpStatus::Unknown => "支付结果未知",
            TopUpStatus::Failed => "转账失败",
            TopUpStatus::Paid => "转账成功（待审核）",
            TopUpStatus::Approved => "审核通过",
            TopUpStatus::Rejected => "审核未通过",
        }
    }

    /// Wire name.
    pub fn code(self) -> &'static str {
        match self {
            TopUpStatus::Pending => "pending",
            TopUpStatus::Unknown => "unknown",
            TopUpStatus::Failed => "failed",
            TopUpStatus::Paid => "paid",
            TopUpStatus::Approved => "approved",
            TopUpStatus::Rejected => "rejected",
        }
    }

    /// Whether the bank took the money (转账成功), whatever the audit said.
    pub fn transferred(self) -> bool {
        matches!(
            self,
            TopUpStatus::Paid | TopUpStatus::Approved | TopUpStatus::Rejected
        )
    }

    /// Whether the bank's answer is still to be learned.
    pub fn awaiting_bank(self) -> bool {
        matches!(self, TopUpStatus::Pending | TopUpStatus::Unknown)
    }
}

/// The query period presets of the seed's query pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 最近7天: today and the six days before.
    #[serde(rename = "last_7_days")]
    Last7Days,
    /// 最近一个月: from the same day one month ago to today.
    LastMonth,
    /// 最近三个月.
    #[serde(rename = "last_3_months")]
    Last3Months,
    /// 最近半年.
    #[serde(rename = "last_6_months")]
    Last6Months,
}

impl Preset {
    /// Every preset, in the order the query pages offer them.
    pub const ALL: [Preset; 4] = [
        Preset::Last7Days,
        Preset::LastMonth,
        Preset::Last3Months,
        Preset::Last6Months,
    ];

    /// Wire name.
    pub fn code(self) -> &'static str {
        match self {
            Preset::Last7Days => "last_7_days",
            Preset::LastMonth => "last_month",
            Preset::Last3Months => "last_3_months",
            Preset::Last6Months => "last_6_months",
        }
    }

    /// zh-CN name, as the query page shows it.
    pub fn label(self) -> &'static str {
        match self {
            Preset::Last7Days => "最近7天",
            Preset::LastMonth => "最近一个月",
            Preset::Last3Months => "最近三个月",
            Preset::Last6Months => "最近半年",
        }
    }
}

/// A word of the vocabulary: its wire code and its zh-CN label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Term {
    /// The code on the wire (`teller`, `succeeded`, `last_7_days` …).
    pub code: String,
    /// The zh-CN label tellers read.
    pub label: String,
}

impl Term {
    fn new(code: &str, label: &str) -> Term {
        Term {
            code: code.to_owned(),
            label: label.to_owned(),
        }
    }
}

/// A plate colour: the GB/T 38444 code ETC cards store and its zh-CN name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlateColourTerm {
    /// The code on the card and on the wire.
    pub code: u16,
    /// The zh-CN name.
    pub label: String,
}

/// What `system.vocabulary` returns: every code a client shows, with its zh-CN label, in the
/// order pages offer them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Vocabulary {
    /// Operator roles.
    pub roles: Vec<Term>,
    /// Standard plate colours.
    pub plate_colours: Vec<PlateColourTerm>,
    /// Where a group recharge order stands.
    pub order_statuses: Vec<Term>,
    /// Where a quota top-up stands.
    pub topup_statuses: Vec<Term>,
    /// The query period presets (最近7天 …).
    pub query_periods: Vec<Term>,
}

impl Vocabulary {
    /// The vocabulary of this version of the contract.
    pub fn current() -> Vocabulary {
        Vocabulary {
            roles: Role::ALL
                .iter()
                .map(|r| Term::new(r.as_str(), r.label_zh()))
                .collect(),
            plate_colours: PLATE_COLOURS
                .iter()
                .map(|(code, label)| PlateColourTerm {
                    code: *code,
                    label: (*label).to_owned(),
                })
                .collect(),
            order_statuses: OrderStatus::ALL
                .iter()
                .map(|s| Term::new(s.code(), s.label()))
                .collect(),
            topup_statuses: TopUpStatus::ALL
                .iter()
                .map(|s| Term::new(s.code(), s.label()))
                .collect(),
            query_periods: Preset::ALL
                .iter()
                .map(|p| Term::new(p.code(), p.label()))
                .collect(),
        }
    }
}

/// An amount the recharge page offers as a button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AmountPreset {
    /// What the button says (`10元`).
    pub label: String,
    /// The amount, in fen.
    pub fen: i64,
    /// The amount as a yuan decimal string (`10.00`).
    pub amount: String,
}

impl AmountPreset {
    /// The preset of `fen`.
    pub fn new(fen: i64) -> AmountPreset {
        AmountPreset {
            label: format!("{}元", Fen(fen).to_yuan_short()),
            fen,
            amount: Fen(fen).to_yuan_string(),
        }
    }
}

/// The group recharge rules (集团充值规则) as clients and flows read them: a recharge is a
/// whole multiple of `step_fen`, at least `min_fen`, and leaves the card with at most
/// `card_balance_max_fen`. The `*_yuan` fields are the same figures as short yuan text (`10`,
/// `1000`) for phrasing refusals in the rule's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupRules {
    /// A recharge is a whole multiple of this, in fen.
    pub step_fen: i64,
    /// Smallest recharge, in fen.
    pub min_fen: i64,
    /// Largest card balance after a recharge, in fen.
    pub card_balance_max_fen: i64,
    /// `step_fen` in yuan, short (`10`).
    pub step_yuan: String,
    /// `min_fen` in yuan, short (`10`).
    pub min_yuan: String,
    /// `card_balance_max_fen` in yuan, short (`1000`).
    pub card_balance_max_yuan: String,
    /// The amounts the recharge page offers.
    pub presets: Vec<AmountPreset>,
}

impl GroupRules {
    /// The rules of these figures.
    pub fn new(step_fen: i64, min_fen: i64, card_balance_max_fen: i64, presets: &[i64]) -> Self {
        GroupRules {
            step_fen,
            min_fen,
            card_balance_max_fen,
            step_yuan: Fen(step_fen).to_yuan_short(),
            min_yuan: Fen(min_fen).to_yuan_short(),
            card_balance_max_yuan: Fen(card_balance_max_fen).to_yuan_short(),
            presets: presets.iter().copied().map(AmountPreset::new).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_codes_are_the_wire_names() {
        let v = Vocabulary::current();
        for t in &v.order_statuses {
            let s: OrderStatus = serde_json::from_value(serde_json::json!(t.code)).unwrap();
            assert_eq!(s.label(), t.label);
        }
        for t in &v.topup_statuses {
            let s: TopUpStatus = serde_json::from_value(serde_json::json!(t.code)).unwrap();
            assert_eq!(s.label(), t.label);
        }
        for t in &v.query_periods {
            let p: Preset = serde_json::from_value(serde_json::json!(t.code)).unwrap();
            assert_eq!(p.label(), t.label);
        }
        for t in &v.roles {
            assert_eq!(
                Role::parse(&t.code).map(Role::label_zh),
                Some(t.label.as_str())
            );
        }
        assert_eq!(v.plate_colours.len(), PLATE_COLOURS.len());
    }

    #[test]
    fn presets_carry_label_and_fen() {
        let rules = GroupRules::new(1_000, 1_000, 100_000, &[1_000, 2_050]);
        assert_eq!(rules.card_balance_max_yuan, "1000");
        assert_eq!(rules.presets[0].label, "10元");
        assert_eq!(rules.presets[0].fen, 1_000);
        assert_eq!(rules.presets[1].label, "20.50元");
        assert_eq!(rules.presets[1].amount, "20.50");
    }
}
