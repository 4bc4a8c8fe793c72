//! The issuer host's records as the daemon returns them: vehicle accounts, recharge records
//! (充值记录) and their 圈存 states, queries and pages, and the limits on all of them.
//!
//! The fields follow what the ETC mobile issuance app shows a bank teller for a recharge
//! record: 用户卡卡号, 车牌号, 车牌颜色, 充值前的金额, 充值金额, 充值后的金额, 充值时间 and
//! 充值状态/圈存状态. Money is integer fen (`i64`, the same as [`cardd_api::money::Fen`]); the
//! `*_yuan` helpers format it for display. Times are RFC 3339 at +08:00 because the business,
//! its day boundaries and its record numbers run on China time.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use cardd_api::money::Fen;

pub use cardd_api::etc::{
    VehicleDetails, VehicleInput, ENGINE_NUMBER_CHARS_MAX, VEHICLE_DESCRIPTION_GBK_BYTES_MAX,
    VEHICLE_USER_TYPES,
};

/// Longest plate number, in characters (the longest real plates are 8–9; the margin is for
/// suffixes such as 挂 and 学).
pub const PLATE_CHARS_MAX: usize = 12;
/// Digits of an ETC user card number (4-digit network id + 16-digit internal number).
pub const CARD_NUMBER_DIGITS: usize = 20;
/// Characters of an OBU contract serial (8 bytes as hex).
pub const OBU_CONTRACT_SERIAL_DIGITS: usize = 16;
/// Most cards one vehicle account lists (replacements keep the old numbers for the records).
pub const CARDS_PER_VEHICLE_MAX: usize = 8;
/// Longest owner name, in characters.
pub const OWNER_NAME_CHARS_MAX: usize = 50;
/// Longest operator user name, in characters.
pub const OPERATOR_CHARS_MAX: usize = 64;
/// Longest recharge channel name (银行柜台, 网上银行, …), in characters.
pub const CHANNEL_CHARS_MAX: usize = 32;
/// Longest reason given for a manual change, in characters.
pub const REASON_CHARS_MAX: usize = 200;
/// Longest load transaction id, in characters: the journal's own bound, so any id the journal
/// accepts fits here.
pub const LOAD_TXN_ID_CHARS_MAX: usize = cardd_journal::journal::TXN_ID_CHARS_MAX;
/// Longest record id accepted in a lookup, in characters (ours are 15: `R` + 8 + 6).
pub const RECORD_ID_CHARS_MAX: usize = 32;
/// Largest single recharge, in fen: 50 000.00 yuan. Far above a car's or a truck's tolls for a
/// long while, below the simulator's ETC card ceiling of 100 000.00 yuan, and a typo with an
/// extra zero or two is refused rather than credited.
pub const RECHARGE_FEN_MAX: i64 = 5_000_000;
/// Largest card balance a load may report, in fen: the card's balance is a 4-byte unsigned
/// count of fen.
pub const BALANCE_FEN_MAX: i64 = u32::MAX as i64;
/// Largest page of records, in records.
pub const PAGE_SIZE_MAX: u32 = 100;
/// Page size when a query does not say, in records.
pub const PAGE_SIZE_DEFAULT: u32 = 20;
/// Most state changes kept in one record's history; past this the oldest change after the
/// creation is dropped (the daemon's audit log keeps every call in full).
pub const HISTORY_ENTRIES_MAX: usize = 32;
/// Most load attempts (journal transactions) one record may have. Every one stays linked in
/// [`RechargeRecord::txn_ids`], apart from the capped history; past this a new load of the
/// record is refused, never a link dropped.
pub const RECORD_LOAD_ATTEMPTS_MAX: usize = 128;
/// Most records [`crate::IssuerHost::records_for_card`] returns in one answer; beyond that the
/// caller must page by plate and time.
pub const CARD_RECORDS_MAX: usize = 1_000;
/// Records per China calendar day: the sequence in a record id has six digits.
pub const RECORD_SEQ_PER_DAY_MAX: u32 = 999_999;
/// Largest stored value (a vehicle or a record), in bytes.
pub const STORED_VALUE_BYTES_MAX: usize = 64 * 1024;

/// China Standard Time, the offset of every time the host records.
pub use cardd_journal::CHINA_OFFSET;

/// What the seed's app says after 修改圈存状态 (a 已圈存 record set back to 未圈存).
pub const MARK_NOT_LOADED_DONE_ZH: &str = "修改圈存状态成功！请进行圈存操作";

pub use cardd_api::types::{vehicle_class_zh, vehicle_user_type_zh, VEHICLE_CLASSES};

/// A plate colour: the standard code and its zh-CN name (`0`, `蓝色`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PlateColour {
    /// The code as ETC cards store it (`cardd_api::types::PLATE_COLOURS`).
    pub code: u16,
    /// Its zh-CN name.
    pub label: String,
}

/// A vehicle account: who the vehicle belongs to and which ETC cards were issued to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Vehicle {
    /// 车牌号, normalised (trimmed, ASCII letters upper case).
    pub plate: String,
    /// 车牌颜色.
    pub plate_colour: PlateColour,
    /// ETC user card numbers issued to the vehicle, oldest first; recharges go to the last one,
    /// the card in service.
    pub card_numbers: Vec<String>,
    /// The owner's name.
    pub owner_name: String,
    /// Toll vehicle class ([`VEHICLE_CLASSES`]).
    pub vehicle_class: u8,
    /// The OBU's contract serial, if an OBU was issued.
    pub obu_contract_serial: Option<String>,
    /// What an OBU's vehicle file needs beyond plate, colour and class (absent in accounts
    /// stored before it existed).
    #[serde(default)]
    pub details: Option<VehicleDetails>,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
    /// Who last changed it.
    pub updated_by: String,
}

impl Vehicle {
    /// The card in service, which recharges credit.
    pub fn current_card(&self) -> Option<&str> {
        self.card_numbers.last().map(String::as_str)
    }

    /// The vehicle class's zh-CN name.
    pub fn vehicle_class_label(&self) -> &'static str {
        vehicle_class_zh(self.vehicle_class).unwrap_or("其他")
    }
}

/// Largest length, width, height or wheelbase, in millimetres (a two-byte field on the OBU;
/// oversize transport stays below it).
pub const VEHICLE_DIMENSION_MM_MAX: u16 = 30_000;
/// Most wheels of one vehicle.
pub const VEHICLE_WHEELS_MAX: u8 = 64;
/// Most axles of one vehicle.
pub const VEHICLE_AXLES_MAX: u8 = 16;
/// Largest rated load in kg or seat count: the OBU field has three bytes.
pub const VEHICLE_LOAD_KG_OR_SEATS_MAX: u32 = 0xFF_FFFF;

/// 圈存状态 of a recharge record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// 未圈存: paid into the account, not on the card.
    NotLoaded,
    /// 圈存中: a load onto the card has started and its outcome is not yet recorded.
    Loading,
    /// 已圈存: on the card.
    Loaded,
    /// 待核对: nobody can tell whether it is on the card; a person must compare the card with
    /// the records before anything else happens to this money.
    NeedsReconciliation,
}

impl RecordStatus {
    /// Every status.
    pub const ALL: [RecordStatus; 4] = [
        RecordStatus::NotLoaded,
        RecordStatus::Loading,
        RecordStatus::Loaded,
        RecordStatus::NeedsReconciliation,
    ];

    /// The zh-CN name as the seed's app writes it (未圈存, 已圈存) plus 圈存中 and 待核对.
    pub fn label(self) -> &'static str {
        match self {
            RecordStatus::NotLoaded => "未圈存",
            RecordStatus::Loading => "圈存中",
            RecordStatus::Loaded => "已圈存",
            RecordStatus::NeedsReconciliation => "待核对",
        }
    }

    /// The wire name (`not_loaded`, …), also stored in the per-card index.
    pub fn code(self) -> &'static str {
        match self {
            RecordStatus::NotLoaded => "not_loaded",
            RecordStatus::Loading => "loading",
            RecordStatus::Loaded => "loaded",
            RecordStatus::NeedsReconciliation => "needs_reconciliation",
        }
    }

    /// The status with this wire name.
    pub fn from_code(code: &str) -> Option<RecordStatus> {
        RecordStatus::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether a record in this status blocks new loads on its card: its money may be on the
    /// card or on its way there.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RecordStatus::Loading | RecordStatus::NeedsReconciliation
        )
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What happened to a record, for its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordAction {
    /// 充值: the payment created the record.
    Recharge,
    /// 开始圈存: 未圈存 → 圈存中.
    BeginLoad,
    /// 圈存成功: 圈存中 → 已圈存.
    FinishLoad,
    /// 圈存未成功: 圈存中 → 未圈存, the card proved the load did not land.
    AbortLoad,
    /// 标记待核对: → 待核对.
    FlagReconciliation,
    /// 修改圈存状态: 已圈存 → 未圈存, by a person, for 二次圈存.
    MarkNotLoaded,
    /// 核对完成: 待核对 → 已圈存 or 未圈存, by a person.
    ResolveReconciliation,
}

impl RecordAction {
    /// The zh-CN name shown in a record's history.
    pub fn label(self) -> &'static str {
        match self {
            RecordAction::Recharge => "充值",
            RecordAction::BeginLoad => "开始圈存",
            RecordAction::FinishLoad => "圈存成功",
            RecordAction::AbortLoad => "圈存未成功",
            RecordAction::FlagReconciliation => "标记待核对",
            RecordAction::MarkNotLoaded => "修改圈存状态",
            RecordAction::ResolveReconciliation => "核对完成",
        }
    }

    /// The status this action leads to from `from`, or `None` when it is not allowed there.
    /// `loaded` matters only for [`RecordAction::ResolveReconciliation`] (the person's verdict).
    ///
    /// The allowed changes: 未圈存 → 圈存中 (begin), 圈存中 → 已圈存 (finish), 圈存中 → 未圈存
    /// (abort), 未圈存/圈存中/已圈存 → 待核对 (flag: always the safe direction, it stops the
    /// money moving), 已圈存 → 未圈存 (修改圈存状态), 待核对 → 已圈存/未圈存 (resolve). A record
    /// is created 未圈存 by a recharge and by nothing else.
    pub fn next_status(self, from: RecordStatus, loaded: bool) -> Option<RecordStatus> {
        match (self, from) {
            (RecordAction::BeginLoad, RecordStatus::NotLoaded) => Some(RecordStatus::Loading),
            (RecordAction::FinishLoad, RecordStatus::Loading) => Some(RecordStatus::Loaded),
            (RecordAction::AbortLoad, RecordStatus::Loading) => Some(RecordStatus::NotLoaded),
            (
                RecordAction::FlagReconciliation,
                RecordStatus::NotLoaded | RecordStatus::Loading | RecordStatus::Loaded,
            ) => Some(RecordStatus::NeedsReconciliation),
            (RecordAction::MarkNotLoaded, RecordStatus::Loaded) => Some(RecordStatus::NotLoaded),
            (RecordAction::ResolveReconciliation, RecordStatus::NeedsReconciliation) => {
                Some(if loaded {
                    RecordStatus::Loaded
                } else {
                    RecordStatus::NotLoaded
                })
            }
            _ => None,
        }
    }

    /// What a refusal says the teller cannot do (不能…).
    pub(crate) fn refused_verb(self) -> &'static str {
        match self {
            RecordAction::Recharge => "充值",
            RecordAction::BeginLoad => "圈存",
            RecordAction::FinishLoad => "完成圈存",
            RecordAction::AbortLoad => "撤销圈存",
            RecordAction::FlagReconciliation => "标记为待核对",
            RecordAction::MarkNotLoaded => "改为未圈存",
            RecordAction::ResolveReconciliation => "核对",
        }
    }
}

/// One entry of a record's history: who changed what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordChange {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// The operator's user name.
    pub operator: String,
    /// What was done.
    pub action: RecordAction,
    /// The status before (`None` for the recharge that created the record).
    pub from: Option<RecordStatus>,
    /// The status after.
    pub to: RecordStatus,
    /// Why, for manual changes.
    pub reason: Option<String>,
    /// The load transaction this change belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    /// 充值前的金额 reported with this change (a finished load), in fen. Kept here so that a
    /// later 修改圈存状态, which clears the record's balances, loses no evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_before_fen: Option<i64>,
    /// 充值后的金额 reported with this change, in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after_fen: Option<i64>,
}

/// A recharge record (充值记录): money paid into a vehicle's account for its card, and whether
/// it is on the card yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RechargeRecord {
    /// Unique id: `R`, the China date of the recharge (`YYYYMMDD`), a six-digit sequence of the
    /// day (`R20240615000001`).
    pub record_id: String,
    /// 用户卡卡号: the card the money is for.
    pub card_number: String,
    /// 车牌号.
    pub plate: String,
    /// 车牌颜色.
    pub plate_colour: PlateColour,
    /// 充值金额, in fen.
    pub amount_fen: i64,
    /// 充值前的金额: the card's balance before the load, in fen; `None` until loaded.
    pub balance_before_fen: Option<i64>,
    /// 充值后的金额: the card's balance after the load, in fen; `None` until loaded.
    pub balance_after_fen: Option<i64>,
    /// 充值时间, RFC 3339 at +08:00.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub recharged_at: OffsetDateTime,
    /// Where the money was paid (银行柜台, 网上银行, …).
    pub channel: String,
    /// 充值状态/圈存状态.
    pub status: RecordStatus,
    /// The journal transaction of the load in progress or done, if any.
    pub load_txn_id: Option<String>,
    /// When the load was recorded as done.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>")]
    pub loaded_at: Option<OffsetDateTime>,
    /// Every change, oldest first (at most [`HISTORY_ENTRIES_MAX`]).
    pub history: Vec<RecordChange>,
    /// Every journal transaction the record was ever loaded under, oldest first (at most
    /// [`RECORD_LOAD_ATTEMPTS_MAX`]); kept apart from the capped history so that no number of
    /// attempts drops a link. Empty in records written before it existed: their links are in
    /// the history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub txn_ids: Vec<String>,
}

impl RechargeRecord {
    /// 圈存状态 in zh-CN (未圈存, 圈存中, 已圈存, 待核对).
    pub fn status_label(&self) -> &'static str {
        self.status.label()
    }

    /// 充值金额 in yuan (`"200.00"`).
    pub fn amount_yuan(&self) -> String {
        Fen(self.amount_fen).to_yuan_string()
    }

    /// 充值前的金额 in yuan, when loaded.
    pub fn balance_before_yuan(&self) -> Option<String> {
        self.balance_before_fen.map(|f| Fen(f).to_yuan_string())
    }

    /// 充值后的金额 in yuan, when loaded.
    pub fn balance_after_yuan(&self) -> Option<String> {
        self.balance_after_fen.map(|f| Fen(f).to_yuan_string())
    }
}

/// A query for a vehicle's recharge records (the app's 充值记录 screen): plate and colour, and
/// optionally a time range (充值前的时间 to 充值后的时间, both inclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// 车牌号.
    pub plate: String,
    /// 车牌颜色 code.
    pub colour: u16,
    /// Earliest 充值时间, inclusive, RFC 3339.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>")]
    pub from: Option<OffsetDateTime>,
    /// Latest 充值时间, inclusive, RFC 3339.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>")]
    pub to: Option<OffsetDateTime>,
    /// Page number, from 1.
    #[serde(default = "first_page")]
    pub page: u32,
    /// Records per page, 1 to [`PAGE_SIZE_MAX`].
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

impl RecordQuery {
    /// The first page of a vehicle's records, newest first, without a time range.
    pub fn vehicle(plate: &str, colour: u16) -> RecordQuery {
        RecordQuery {
            plate: plate.to_owned(),
            colour,
            from: None,
            to: None,
            page: first_page(),
            page_size: default_page_size(),
        }
    }
}

fn first_page() -> u32 {
    1
}

fn default_page_size() -> u32 {
    PAGE_SIZE_DEFAULT
}

/// One page of records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Page {
    /// The records of this page.
    pub records: Vec<RechargeRecord>,
    /// How many records match the query in all pages.
    pub total: u64,
    /// This page's number, from 1.
    pub page: u32,
    /// The page size asked for.
    pub page_size: u32,
}

/// What `cardd_store::EmbeddedHost::seed_demo` added (all zero when the demo data was there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SeedReport {
    /// Vehicle accounts created.
    pub vehicles_added: u32,
    /// Recharge records created.
    pub records_added: u32,
}
