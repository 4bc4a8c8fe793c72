//! City one-card group recharge (集团充值): the records, the rules and the limits.
//!
//! A company (集团) recharges its employees' city one-cards out of a prepaid quota (额度) that it
//! tops up by bank transfer (额度充值). The seed's rules, enforced here once for everyone who
//! stores an order: a recharge is a whole multiple of 10 yuan, at least 10 yuan, leaves the
//! card with at most 1000 yuan, and never exceeds the group's available quota.
//!
//! Money is integer fen (`i64`); the `*_yuan` helpers format it. Times are RFC 3339 at +08:00
//! (the business and its day boundaries run on China time), whole seconds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime, Time};

pub use cardd_api::group::GroupInput;
use cardd_api::money::Fen;
pub use cardd_api::vocab::{GroupRules, LedgerKind, OrderStatus, Preset, TopUpStatus, Verdict};

use cardd_journal::CHINA_OFFSET;

/// A recharge must be a whole multiple of this, in fen: 10 yuan (充值金额为10的整数倍).
pub const RECHARGE_STEP_FEN: i64 = 1_000;
/// Smallest recharge, in fen: 10 yuan (充值金额不能小于10).
pub const RECHARGE_MIN_FEN: i64 = 1_000;
/// Largest balance a card may have after a group recharge, in fen: 1000 yuan
/// (充值后卡内金额不能超1000元).
pub const CARD_BALANCE_AFTER_FEN_MAX: i64 = 100_000;
/// The amounts the recharge page offers (10元、20元、30元、50元、100元), in fen.
pub const RECHARGE_PRESETS_FEN: [i64; 5] = [1_000, 2_000, 3_000, 5_000, 10_000];
/// Largest single quota transfer (额度充值), in fen: 1 000 000 yuan; a typo with extra zeros is
/// refused rather than sent to the bank.
pub const TOPUP_FEN_MAX: i64 = 100_000_000;
/// Largest quota a group may hold, in fen: 100 000 000 yuan.
pub const QUOTA_FEN_MAX: i64 = 10_000_000_000;
/// Longest group id, in characters (the same bound as an operator's `group_id`).
pub const GROUP_ID_CHARS_MAX: usize = 64;
/// Longest group name (集团名称), in characters.
pub const GROUP_NAME_CHARS_MAX: usize = 64;
/// Longest terminal number (终端编号), in characters.
pub const TERMINAL_NO_CHARS_MAX: usize = 32;
/// Longest transfer remark (备注), in characters.
pub const REMARK_CHARS_MAX: usize = 100;
/// Longest reason an auditor gives, in characters.
pub const AUDIT_REASON_CHARS_MAX: usize = 200;
/// Longest failure message kept on an order, in characters.
pub const FAILURE_CHARS_MAX: usize = 300;
/// Most rows one query returns (and one export holds); a longer period must be split.
pub const QUERY_ROWS_MAX: usize = 10_000;
/// Longest period one query covers, in days (both ends inclusive).
pub const QUERY_DAYS_MAX: i64 = 366;
/// Most cards in one batch.
pub const BATCH_ITEMS_MAX: usize = 200;
/// Most groups the host keeps.
pub const GROUPS_MAX: usize = 10_000;
/// Ids per China calendar day and kind: six digits of sequence.
pub const ID_SEQ_PER_DAY_MAX: u32 = 999_999;
/// Most changes kept in one order's or top-up's history.
pub const GROUP_HISTORY_MAX: usize = 16;

/// The demo groups every group store seeds (`seed_demo`): `(集团编号, 集团名称, 终端编号, opening
/// quota in fen)`. `G001` is the demo operator `group1`'s; each opens with an approved sandbox
/// transfer of its quota, dated [`DEMO_GROUPS_AT`].
pub const DEMO_GROUPS: &[(&str, &str, &str, i64)] = &[
    ("G001", "郑州示例科技有限公司", "ZZ0001", 50_000),
    ("G002", "郑州示例物流有限公司", "ZZ0002", 20_000),
];

/// When the demo groups were opened.
pub const DEMO_GROUPS_AT: OffsetDateTime = time::macros::datetime!(2024-06-01 09:00:00 +8);

/// `12.30` from 1230 fen.
pub fn yuan(fen: i64) -> String {
    Fen(fen).to_yuan_string()
}

/// `10` from 1000 fen, `12.30` from 1230: a figure inside a sentence.
pub fn yuan_short(fen: i64) -> String {
    Fen(fen).to_yuan_short()
}

/// The recharge rules, from the figures above: the one place the daemon's methods, the flows'
/// `group.rules()` and the clients read them from.
pub fn recharge_rules() -> GroupRules {
    GroupRules::new(
        RECHARGE_STEP_FEN,
        RECHARGE_MIN_FEN,
        CARD_BALANCE_AFTER_FEN_MAX,
        &RECHARGE_PRESETS_FEN,
    )
}

/// A group (集团): who recharges, from which terminal, with how much quota left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Group {
    /// 集团编号 (the `group_id` of its operators).
    pub group_id: String,
    /// 集团名称.
    pub name: String,
    /// 终端编号.
    pub terminal_no: String,
    /// 集团可用额度, in fen: approved top-ups minus reserved recharges plus refunds; always the
    /// sum of the group's ledger.
    pub available_fen: i64,
    /// Sequence of the group's last ledger entry (0: none yet).
    pub ledger_seq: u64,
    /// When the group was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
}

/// One movement of a group's quota. Entries are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerEntry {
    /// The group.
    pub group_id: String,
    /// 1, 2, 3, … per group, without gaps.
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// What moved the quota.
    pub kind: LedgerKind,
    /// The change, in fen (negative for a reservation).
    pub amount_fen: i64,
    /// The available quota after this entry, in fen.
    pub balance_after_fen: i64,
    /// The order or top-up this entry belongs to.
    pub reference: String,
    /// Who caused it (the group operator, or the auditor who approved).
    pub operator: String,
}

/// What changed an order or a top-up, for its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusChange {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// Who.
    pub operator: String,
    /// The status before (`None` at creation).
    pub from: Option<String>,
    /// The status after.
    pub to: String,
    /// Why, when a person decided or something failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A card recharge paid from a group's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RechargeOrder {
    /// 订单编号: `GO`, the China date, a six-digit sequence of the day.
    pub order_id: String,
    /// The group that pays.
    pub group_id: String,
    /// The group operator who recharged.
    pub operator: String,
    /// 卡号.
    pub card_number: String,
    /// 充值金额, in fen.
    pub amount_fen: i64,
    /// The card's balance when the order was placed, in fen.
    pub card_balance_fen: i64,
    /// 充值前余额 as the card reported it in the load, in fen (once known).
    pub balance_before_fen: Option<i64>,
    /// 现余额 after the load, in fen (once known).
    pub balance_after_fen: Option<i64>,
    /// 充值前集团额度, in fen.
    pub quota_before_fen: i64,
    /// 充值后集团额度, in fen.
    pub quota_after_fen: i64,
    /// The journal transaction that credits the card (exactly once).
    pub txn_id: String,
    /// The batch and item this order serves, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRef>,
    /// Where it stands.
    pub status: OrderStatus,
    /// Why the load failed, when it did.
    pub failure: Option<String>,
    /// 充值时间.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When the order last changed status.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
    /// Every change, oldest first.
    pub history: Vec<StatusChange>,
}

/// A batch item an order serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchRef {
    /// The batch.
    pub batch_id: String,
    /// The item's index in the batch, from 0.
    pub index: usize,
}

/// What [`crate::GroupHost::reserve`] takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The operator's group.
    pub group_id: String,
    /// The group operator.
    pub operator: String,
    /// The card on the reader.
    pub card_number: String,
    /// Its balance as just read, in fen.
    pub card_balance_fen: i64,
    /// 充值金额, in fen.
    pub amount_fen: i64,
    /// The journal transaction that will credit the card.
    pub txn_id: String,
    /// The batch item, if this recharge serves one.
    pub batch: Option<BatchRef>,
}

/// A quota top-up: a bank transfer from the group to the card company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopUp {
    /// 订单编号: `GT`, the China date, a six-digit sequence of the day.
    pub topup_id: String,
    /// The group.
    pub group_id: String,
    /// The group operator.
    pub operator: String,
    /// 转账金额, in fen (whole yuan).
    pub amount_fen: i64,
    /// 备注.
    pub remark: String,
    /// Where it stands.
    pub status: TopUpStatus,
    /// 银行返回流水号, once the bank paid.
    pub bank_serial: Option<String>,
    /// What the bank said, when it refused or did not answer.
    pub bank_message: Option<String>,
    /// The auditor who decided, if any.
    pub auditor: Option<String>,
    /// 转账时间.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
    /// Every change, oldest first.
    pub history: Vec<StatusChange>,
}

/// The bank's answer to a transfer, as the host records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentOutcome {
    /// Paid, with the bank's serial number.
    Paid { bank_serial: String },
    /// Refused; no money moved.
    Declined { message: String },
    /// No answer in time; the outcome is unknown.
    NoAnswer { message: String },
}

/// A batch: cards and amounts to recharge one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Batch {
    /// `GB`, the China date, a six-digit sequence of the day.
    pub batch_id: String,
    /// The group.
    pub group_id: String,
    /// Who created it.
    pub operator: String,
    /// The cards, in order.
    pub items: Vec<BatchItem>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
}

/// One card of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchItem {
    /// 卡号.
    pub card_number: String,
    /// 充值金额, in fen.
    pub amount_fen: i64,
    /// The order that recharged (or tried to recharge) this card; `None` while still to do.
    pub order_id: Option<String>,
}

/// A batch item as it was entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchItemInput {
    /// 卡号.
    pub card_number: String,
    /// 充值金额, in fen.
    pub amount_fen: i64,
}

/// A query period: China calendar days, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Period {
    /// First day.
    #[schemars(with = "String")]
    pub start: Date,
    /// Last day.
    #[schemars(with = "String")]
    pub end: Date,
}

/// `date` moved back `months` calendar months, the day clamped to the month's length.
fn months_back(date: Date, months: u8) -> Date {
    let total = i32::from(u8::from(date.month())) - 1 - i32::from(months);
    let year = date.year() + total.div_euclid(12);
    let month = Month::try_from(total.rem_euclid(12) as u8 + 1).unwrap_or(Month::January);
    let mut day = date.day();
    loop {
        if let Ok(d) = Date::from_calendar_date(year, month, day) {
            return d;
        }
        day -= 1;
    }
}

/// A `YYYY-MM-DD` date typed as `what` (开始日期, 结束日期).
fn parse_date(what: &str, s: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s.trim(), &format)
        .map_err(|_| format!("{what}“{s}”不正确：应为 YYYY-MM-DD，如 2024-06-01"))
}

impl Period {
    /// The period of a preset, ending today (China time) at `now`.
    pub fn preset(preset: Preset, now: OffsetDateTime) -> Period {
        let today = now.to_offset(CHINA_OFFSET).date();
        let start = match preset {
            Preset::Last7Days => today.saturating_sub(Duration::days(6)),
            Preset::LastMonth => months_back(today, 1),
            Preset::Last3Months => months_back(today, 3),
            Preset::Last6Months => months_back(today, 6),
        };
        Period { start, end: today }
    }

    /// A period typed as `YYYY-MM-DD` start and end dates; refused when reversed or longer than
    /// [`QUERY_DAYS_MAX`] days.
    pub fn dates(start: &str, end: &str) -> Result<Period, String> {
        let (start, end) = (parse_date("开始日期", start)?, parse_date("结束日期", end)?);
        Period::new(start, end)
    }

    /// A period typed with its start date only: from that day to today (China time) at `now`.
    /// Refused when the start is after today or the period is longer than [`QUERY_DAYS_MAX`].
    pub fn since(start: &str, now: OffsetDateTime) -> Result<Period, String> {
        let start = parse_date("开始日期", start)?;
        let today = now.to_offset(CHINA_OFFSET).date();
        if start > today {
            return Err(format!("开始日期 {start} 晚于今天 {today}，请重新选择"));
        }
        Period::new(start, today)
    }

    /// A period typed with its end date only: the longest period allowed ([`QUERY_DAYS_MAX`]
    /// days) up to and including that day.
    pub fn until(end: &str) -> Result<Period, String> {
        let end = parse_date("结束日期", end)?;
        let start = end.saturating_sub(Duration::days(QUERY_DAYS_MAX - 1));
        Period::new(start, end)
    }

    /// A checked period.
    pub fn new(start: Date, end: Date) -> Result<Period, String> {
        if start > end {
            return Err(format!("开始日期 {start} 晚于结束日期 {end}，请重新选择"));
        }
        if (end - start).whole_days() + 1 > QUERY_DAYS_MAX {
            return Err(format!(
                "查询时间段最长 {QUERY_DAYS_MAX} 天，请缩短时间段后分次查询"
            ));
        }
        Ok(Period { start, end })
    }

    /// The first second of the period.
    pub fn from_time(&self) -> OffsetDateTime {
        self.start
            .with_time(Time::MIDNIGHT)
            .assume_offset(CHINA_OFFSET)
    }

    /// The last second of the period.
    pub fn to_time(&self) -> OffsetDateTime {
        self.end
            .with_hms(23, 59, 59)
            .unwrap_or(self.end.with_time(Time::MIDNIGHT))
            .assume_offset(CHINA_OFFSET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn presets_end_today_in_china() {
        // 2024-08-31 20:00 UTC is 2024-09-01 in China.
        let now = datetime!(2024-08-31 20:00 UTC);
        let p = |preset| Period::preset(preset, now);
        assert_eq!(
            p(Preset::Last7Days),
            Period {
                start: date!(2024 - 08 - 26),
                end: date!(2024 - 09 - 01)
            }
        );
        assert_eq!(p(Preset::LastMonth).start, date!(2024 - 08 - 01));
        assert_eq!(p(Preset::Last3Months).start, date!(2024 - 06 - 01));
        assert_eq!(p(Preset::Last6Months).start, date!(2024 - 03 - 01));
        // Clamped to the month's length, across a year.
        assert_eq!(months_back(date!(2024 - 03 - 31), 1), date!(2024 - 02 - 29));
        assert_eq!(months_back(date!(2024 - 01 - 15), 3), date!(2023 - 10 - 15));
        let period = p(Preset::Last7Days);
        assert_eq!(period.from_time(), datetime!(2024-08-26 00:00:00 +8));
        assert_eq!(period.to_time(), datetime!(2024-09-01 23:59:59 +8));
    }

    #[test]
    fn typed_periods_are_checked() {
        assert!(Period::dates("2024-06-01", "2024-06-30").is_ok());
        assert!(Period::dates("2024-06-30", "2024-06-01")
            .unwrap_err()
            .contains("晚于"));
        assert!(Period::dates("2024/06/01", "2024-06-30")
            .unwrap_err()
            .contains("YYYY-MM-DD"));
        assert!(Period::dates("2023-01-01", "2024-06-30")
            .unwrap_err()
            .contains("最长"));
        // One date: from the start to today, or the longest period up to the end.
        let now = datetime!(2024-08-31 20:00 UTC);
        assert_eq!(
            Period::since("2024-08-20", now).unwrap(),
            Period {
                start: date!(2024 - 08 - 20),
                end: date!(2024 - 09 - 01)
            }
        );
        assert!(Period::since("2024-09-02", now)
            .unwrap_err()
            .contains("晚于今天"));
        assert!(Period::since("2023-01-01", now)
            .unwrap_err()
            .contains("最长"));
        let until = Period::until("2024-06-30").unwrap();
        assert_eq!(until.end, date!(2024 - 06 - 30));
        assert_eq!((until.end - until.start).whole_days() + 1, QUERY_DAYS_MAX);
    }
}
