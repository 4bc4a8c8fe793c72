//! The ETC methods (`etc.*`): vehicle accounts, recharges (充值), the recharge-record query
//! (充值记录), a record's card evidence, 修改圈存状态 and supervisors' reconciliation.
//!
//! Amounts cross as decimal yuan strings; times are RFC 3339 at +08:00 (a query also takes plain
//! `YYYY-MM-DD` dates, whole China days). Loads themselves are flows (`etc.load`,
//! `etc.kiosk_load`), not methods of this family.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method;

pub use crate::types::VEHICLE_USER_TYPES;
/// Longest vehicle description, in GBK bytes (a Chinese character counts 2, ASCII 1): the OBU
/// field has 16 bytes.
pub const VEHICLE_DESCRIPTION_GBK_BYTES_MAX: usize = 16;
/// Longest engine number, in ASCII characters: the OBU field has 14 bytes.
pub const ENGINE_NUMBER_CHARS_MAX: usize = 14;

/// What `etc.vehicles.upsert` (`cardd_etc::IssuerHost::upsert_vehicle`) takes: a vehicle account as entered. The plate is
/// normalised and everything validated before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleInput {
    /// 车牌号.
    pub plate: String,
    /// 车牌颜色 code.
    pub plate_colour: u16,
    /// Card numbers, oldest first; the last is the card in service.
    pub card_numbers: Vec<String>,
    /// The owner's name.
    pub owner_name: String,
    /// Toll vehicle class.
    pub vehicle_class: u8,
    /// The OBU's contract serial, if any.
    #[serde(default)]
    pub obu_contract_serial: Option<String>,
    /// Vehicle details for the OBU's vehicle file, if known.
    #[serde(default)]
    pub details: Option<VehicleDetails>,
}

/// What an OBU's vehicle information file (ESAM DF01 EF01) holds besides plate, plate colour
/// and vehicle class; see `docs/card-protocol.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleDetails {
    /// 车辆用户类型 ([`VEHICLE_USER_TYPES`]).
    pub user_type: u8,
    /// 车长, millimetres.
    pub length_mm: u16,
    /// 车宽, millimetres.
    pub width_mm: u16,
    /// 车高, millimetres.
    pub height_mm: u16,
    /// 车轮数.
    pub wheels: u8,
    /// 车轴数.
    pub axles: u8,
    /// 轴距, millimetres.
    pub wheelbase_mm: u16,
    /// 核定载质量 in kg (trucks) or 核定载人数 (passenger vehicles).
    pub load_kg_or_seats: u32,
    /// 车辆描述 (make and model), at most [`VEHICLE_DESCRIPTION_GBK_BYTES_MAX`] GBK bytes.
    #[serde(default)]
    pub description: String,
    /// 发动机号, ASCII letters, digits and `-`, at most [`ENGINE_NUMBER_CHARS_MAX`].
    #[serde(default)]
    pub engine_number: String,
}

/// A plate colour on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ColourView {
    pub code: u16,
    pub label: String,
}

/// A vehicle account as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VehicleView {
    pub plate: String,
    pub plate_colour: u16,
    pub plate_colour_label: String,
    /// Cards issued to the vehicle, oldest first; the last is in service.
    pub card_numbers: Vec<String>,
    pub owner_name: String,
    pub vehicle_class: u8,
    pub vehicle_class_label: String,
    pub obu_contract_serial: Option<String>,
    /// What the OBU's vehicle file needs besides plate, colour and class, when known.
    pub details: Option<VehicleDetails>,
    pub updated_at: String,
    pub updated_by: String,
}

/// One change in a record's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeView {
    pub at: String,
    /// The operator's user name (`cardd` for the daemon itself).
    pub operator: String,
    /// The operator's display name (姓名) as people read it; 系统 for the daemon itself.
    pub operator_name: String,
    /// `recharge`, `begin_load`, `finish_load`, `abort_load`, `flag_reconciliation`,
    /// `mark_not_loaded`, `resolve_reconciliation`.
    pub action: String,
    /// 充值, 开始圈存, 圈存成功, …
    pub action_label: String,
    pub from_label: Option<String>,
    pub to_label: String,
    pub reason: Option<String>,
    pub txn_id: Option<String>,
}

/// A recharge record (充值记录) as clients see it: every field the counter app shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordView {
    pub record_id: String,
    /// 用户卡卡号.
    pub card_number: String,
    /// 车牌号.
    pub plate: String,
    /// 车牌颜色 code and name.
    pub plate_colour: u16,
    pub plate_colour_label: String,
    /// 充值前的金额, yuan; `null` until loaded.
    pub balance_before: Option<String>,
    /// 充值金额, yuan.
    pub amount: String,
    /// 充值后的金额, yuan; `null` until loaded.
    pub balance_after: Option<String>,
    /// 充值时间, RFC 3339 at +08:00.
    pub recharged_at: String,
    /// Where it was paid (银行柜台, 网上银行, …).
    pub channel: String,
    /// `not_loaded`, `loading`, `loaded`, `needs_reconciliation`.
    pub status: String,
    /// 未圈存, 圈存中, 已圈存, 待核对.
    pub status_label: String,
    pub load_txn_id: Option<String>,
    pub loaded_at: Option<String>,
    /// Who did what and when, oldest first.
    pub history: Vec<ChangeView>,
}

/// `etc.vehicles.get`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleParams {
    /// 车牌号, e.g. `陕A12345`.
    pub plate: String,
    /// 车牌颜色 code (0 蓝色, 1 黄色, 2 黑色, 3 白色, 4 渐变绿色, 5 黄绿双拼色, 6 蓝白渐变色,
    /// 11 绿色, 12 红色).
    pub plate_colour: u16,
}

/// `etc.recharge`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RechargeParams {
    pub plate: String,
    pub plate_colour: u16,
    /// 充值金额, decimal yuan string (`"200.00"`).
    pub amount: String,
    /// Where it was paid; default 银行柜台.
    pub channel: Option<String>,
}

/// `etc.records.query`: the 充值记录 screen.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    pub plate: String,
    pub plate_colour: u16,
    /// Earliest 充值时间, inclusive: `YYYY-MM-DD` (from 00:00:00 China time) or RFC 3339.
    pub from: Option<String>,
    /// Latest 充值时间, inclusive: `YYYY-MM-DD` (to 23:59:59 China time) or RFC 3339.
    pub to: Option<String>,
    /// Page, from 1 (default 1).
    pub page: Option<u32>,
    /// Records per page, 1 to 100 (default 20).
    pub page_size: Option<u32>,
}

/// A page of records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

/// `etc.records.get`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordParams {
    pub record_id: String,
}

/// `etc.records.evidence`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceParams {
    pub record_id: String,
    /// The reader holding the record's card; without it only the journal speaks.
    pub reader_id: Option<String>,
}

/// Did a load land (shared with the group domain's evidence).
pub use crate::vocab::Verdict;

/// One load transaction of the record, as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoadEvidence {
    pub txn_id: String,
    /// `intent`, `committed`, `not_applied` or `needs_reconciliation`.
    pub state: String,
    /// The card's online counter before this load.
    pub online_atc_before: u16,
    /// 圈存前的金额 the card reported for this load, yuan.
    pub balance_before: String,
    /// The load's amount, yuan.
    pub amount: String,
    /// The card's TAC (verified), for committed loads.
    pub tac: Option<String>,
    /// How the outcome was established (`card_response`, `recovery`, `manual`).
    pub decided_by: Option<String>,
}

/// A load found in the card's own transaction log (0018).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardLogEvidence {
    /// The online counter before the load.
    pub atc: u16,
    /// Amount, yuan.
    pub amount: String,
    /// Date and time as the card keeps them (`YYYYMMDD`, `HHMMSS`).
    pub date: String,
    pub time: String,
    /// Terminal number, hex.
    pub terminal: String,
}

/// The evidence about one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    pub record_id: String,
    pub verdict: Verdict,
    /// What the evidence means, for the teller (zh-CN).
    pub explanation: String,
    /// Whether the card itself was read for this answer.
    pub card_checked: bool,
    /// The card's balance now, yuan (when read).
    pub card_balance: Option<String>,
    /// The record's load transactions in the journal, oldest first.
    pub loads: Vec<LoadEvidence>,
    /// The matching load in the card's log, if any.
    pub card_log: Option<CardLogEvidence>,
}

/// The evidence and the record as it is after the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceResult {
    pub evidence: Evidence,
    pub record: RecordView,
}

/// `etc.records.mark_not_loaded`: 修改圈存状态.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkParams {
    pub record_id: String,
    /// The reader holding the record's card (the card decides); without it, supervisors only.
    pub reader_id: Option<String>,
    /// Why (required for a supervisor acting without proof from the card).
    pub reason: Option<String>,
}

/// The outcome of 修改圈存状态.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MarkResult {
    pub record: RecordView,
    pub evidence: Evidence,
    /// 修改圈存状态成功！请进行圈存操作
    pub message: String,
}

/// `etc.records.resolve`: a supervisor settles a 待核对 record.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveParams {
    pub record_id: String,
    /// The person's verdict: the money is on the card (`true`) or not (`false`).
    pub loaded: bool,
    /// Why; required.
    pub reason: String,
    /// The reader holding the card: when given, the card's evidence must not contradict the verdict.
    pub reader_id: Option<String>,
}

/// `etc.vehicles.upsert`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertParams {
    pub vehicle: VehicleInput,
}

method!(
    /// A vehicle account by plate number and plate colour.
    VehicleGet, "etc.vehicles.get", VehicleParams => VehicleView
);
method!(
    /// Create or replace a vehicle account.
    VehicleUpsert, "etc.vehicles.upsert", UpsertParams => VehicleView
);
method!(
    /// 充值: record a payment into a vehicle's account (a new 未圈存 record).
    Recharge, "etc.recharge", RechargeParams => RecordView
);
method!(
    /// 充值记录: a vehicle's recharge records, newest first, paged.
    RecordsQuery, "etc.records.query", QueryParams => RecordPage
);
method!(
    /// A recharge record with its history.
    RecordGet, "etc.records.get", RecordParams => RecordView
);
method!(
    /// What the card and the journal prove about a record's money.
    RecordEvidence, "etc.records.evidence", EvidenceParams => EvidenceResult
);
method!(
    /// 修改圈存状态: a record back to 未圈存 for 二次圈存, only when that is safe.
    MarkNotLoaded, "etc.records.mark_not_loaded", MarkParams => MarkResult
);
method!(
    /// A supervisor settles a 待核对 record.
    Resolve, "etc.records.resolve", ResolveParams => RecordView
);
