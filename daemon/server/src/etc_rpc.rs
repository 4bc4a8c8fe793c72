//! The ETC service's JSON-RPC methods: vehicle accounts, recharges (充值), the recharge-record
//! query (充值记录), a record's card evidence, 修改圈存状态 and supervisors' reconciliation.
//!
//! Loads themselves are flows (`etc.load`, `etc.kiosk_load` in `scripts/`), because they ask the
//! teller or the customer to confirm; everything here answers at once. Amounts cross as decimal
//! yuan strings; times are RFC 3339 at +08:00 (a query also takes plain `YYYY-MM-DD` dates,
//! whole China days). The logic lives in [`crate::etc`]; this file only declares the methods.

use std::sync::Arc;

use cardd_api::{ErrorCode, Fen, Role};
use cardd_store::{RechargeRecord, RecordChange, RecordQuery, Vehicle, VehicleInput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::errors::ApiError;
use crate::etc::{host, Evidence};
use crate::rpc::{audit_as_json, Access, AuditDetail, Caller, Methods};
use crate::server::Daemon;

/// Who reads ETC data: the counter, its supervisors, auditors and administrators.
const ETC_READERS: Access =
    Access::Roles(&[Role::Teller, Role::Supervisor, Role::Auditor, Role::Admin]);
/// Who takes recharges and changes records at the counter.
const ETC_COUNTER: Access = Access::Roles(&[Role::Teller, Role::Supervisor]);
/// Who maintains vehicle accounts and decides reconciliations.
const ETC_SUPERVISORS: Access = Access::Roles(&[Role::Supervisor, Role::Admin]);

/// A plate colour on the wire.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ColourView {
    pub code: u16,
    pub label: String,
}

/// A vehicle account as clients see it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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
    pub details: Option<cardd_store::model::VehicleDetails>,
    pub updated_at: String,
    pub updated_by: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl From<&Vehicle> for VehicleView {
    fn from(v: &Vehicle) -> Self {
        VehicleView {
            plate: v.plate.clone(),
            plate_colour: v.plate_colour.code,
            plate_colour_label: v.plate_colour.label.clone(),
            card_numbers: v.card_numbers.clone(),
            owner_name: v.owner_name.clone(),
            vehicle_class: v.vehicle_class,
            vehicle_class_label: v.vehicle_class_label().into(),
            obu_contract_serial: v.obu_contract_serial.clone(),
            details: v.details.clone(),
            updated_at: rfc3339(v.updated_at),
            updated_by: v.updated_by.clone(),
        }
    }
}

/// One change in a record's history.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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

impl From<&RecordChange> for ChangeView {
    fn from(c: &RecordChange) -> Self {
        ChangeView {
            at: rfc3339(c.at),
            operator: c.operator.clone(),
            operator_name: c.operator.clone(),
            action: serde_json::to_value(c.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            action_label: c.action.label().into(),
            from_label: c.from.map(|s| s.label().into()),
            to_label: c.to.label().into(),
            reason: c.reason.clone(),
            txn_id: c.txn_id.clone(),
        }
    }
}

/// A recharge record (充值记录) as clients see it: every field the counter app shows.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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

impl RecordView {
    /// The record with its history's operators named as people read them (display names).
    pub fn named(d: &Daemon, r: &RechargeRecord) -> RecordView {
        let mut view = RecordView::from(r);
        for change in &mut view.history {
            change.operator_name = crate::rpc::operator_name(d, &change.operator);
        }
        view
    }
}

impl From<&RechargeRecord> for RecordView {
    fn from(r: &RechargeRecord) -> Self {
        RecordView {
            record_id: r.record_id.clone(),
            card_number: r.card_number.clone(),
            plate: r.plate.clone(),
            plate_colour: r.plate_colour.code,
            plate_colour_label: r.plate_colour.label.clone(),
            balance_before: r.balance_before_yuan(),
            amount: r.amount_yuan(),
            balance_after: r.balance_after_yuan(),
            recharged_at: rfc3339(r.recharged_at),
            channel: r.channel.clone(),
            status: r.status.code().into(),
            status_label: r.status.label().into(),
            load_txn_id: r.load_txn_id.clone(),
            loaded_at: r.loaded_at.map(rfc3339),
            history: r.history.iter().map(ChangeView::from).collect(),
        }
    }
}

/// `etc.vehicles.get`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleParams {
    /// 车牌号, e.g. `陕A12345`.
    pub plate: String,
    /// 车牌颜色 code (0 蓝色, 1 黄色, 2 黑色, 3 白色, 4 渐变绿色, 5 黄绿双拼色, 6 蓝白渐变色,
    /// 11 绿色, 12 红色).
    pub plate_colour: u16,
}
audit_as_json!(VehicleParams, plate);

/// `etc.recharge`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RechargeParams {
    pub plate: String,
    pub plate_colour: u16,
    /// 充值金额, decimal yuan string (`"200.00"`).
    pub amount: String,
    /// Where it was paid; default 银行柜台.
    pub channel: Option<String>,
}
audit_as_json!(RechargeParams, plate);

/// `etc.records.query`: the 充值记录 screen.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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
audit_as_json!(QueryParams, plate);

/// A page of records, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

/// `etc.records.get`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordParams {
    pub record_id: String,
}
audit_as_json!(RecordParams, record_id);

/// `etc.records.evidence`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceParams {
    pub record_id: String,
    /// The reader holding the record's card; without it only the journal speaks.
    pub reader_id: Option<String>,
}
audit_as_json!(EvidenceParams, record_id);

/// The evidence and the record as it is after the check.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EvidenceResult {
    pub evidence: Evidence,
    pub record: RecordView,
}

/// `etc.records.mark_not_loaded`: 修改圈存状态.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkParams {
    pub record_id: String,
    /// The reader holding the record's card (the card decides); without it, supervisors only.
    pub reader_id: Option<String>,
    /// Why (required for a supervisor acting without proof from the card).
    pub reason: Option<String>,
}
audit_as_json!(MarkParams, record_id);

/// The outcome of 修改圈存状态.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MarkResult {
    pub record: RecordView,
    pub evidence: Evidence,
    /// 修改圈存状态成功！请进行圈存操作
    pub message: String,
}

/// `etc.records.resolve`: a supervisor settles a 待核对 record.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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
audit_as_json!(ResolveParams, record_id);

/// `etc.vehicles.upsert`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertParams {
    pub vehicle: VehicleInput,
}

impl AuditDetail for UpsertParams {
    fn audit_detail(&self) -> Value {
        serde_json::to_value(&self.vehicle).unwrap_or(Value::Null)
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.vehicle.plate.clone())
    }
}

/// Parses a query bound: a China date (whole day) or an RFC 3339 time.
fn parse_bound(text: &str, end_of_day: bool) -> Result<OffsetDateTime, ApiError> {
    let text = text.trim();
    let bad = || {
        ApiError::invalid_params(format!(
            "时间“{text}”格式不正确：请使用 2024-06-15 或 2024-06-15T10:00:00+08:00"
        ))
    };
    if text.len() == 10 {
        let date = time::Date::parse(
            text,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| bad())?;
        let clock = if end_of_day {
            time::Time::from_hms(23, 59, 59).map_err(|_| bad())?
        } else {
            time::Time::MIDNIGHT
        };
        return Ok(date
            .with_time(clock)
            .assume_offset(cardd_store::model::CHINA_OFFSET));
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| bad())
}

/// Runs `job` on `reader_id` for the caller, or without a card when no reader is named.
async fn with_card<R: Send + 'static>(
    d: &Arc<Daemon>,
    c: &Caller,
    reader_id: Option<String>,
    job: impl FnOnce(&Daemon, Option<&mut cardd_reader::Reader>) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    match reader_id {
        Some(reader_id) => {
            let holder = c.holder()?;
            let daemon = d.clone();
            d.readers
                .run(&reader_id, &holder, move |reader| {
                    job(&daemon, Some(reader))
                })
                .await?
        }
        None => job(d, None),
    }
}

/// Declares the ETC methods.
pub fn add_methods(m: &mut Methods) {
    m.add(
        "etc.vehicles.get",
        "A vehicle account by plate number and plate colour.",
        ETC_READERS,
        false,
        |d, _, p: VehicleParams| async move {
            let vehicle = host(&d)?
                .vehicle(&p.plate, p.plate_colour)?
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::HostNotFound,
                        format!(
                            "未找到车辆 {}（{}），请核对车牌号和车牌颜色",
                            p.plate.trim(),
                            cardd_api::types::plate_colour_zh(p.plate_colour)
                        ),
                    )
                })?;
            Ok::<VehicleView, ApiError>(VehicleView::from(&vehicle))
        },
    );
    m.add(
        "etc.vehicles.upsert",
        "Create or replace a vehicle account (plate, colour, cards, owner, class, OBU contract serial, vehicle details for OBU issuance).",
        ETC_SUPERVISORS,
        true,
        |d, c, p: UpsertParams| async move {
            let operator = c.session()?.username.clone();
            let vehicle = host(&d)?.upsert_vehicle(&p.vehicle, &operator)?;
            Ok::<VehicleView, ApiError>(VehicleView::from(&vehicle))
        },
    );
    m.add(
        "etc.recharge",
        "充值: record a payment into a vehicle's account; creates a 未圈存 record for its card in service.",
        ETC_COUNTER,
        true,
        |d, c, p: RechargeParams| async move {
            let operator = c.session()?.username.clone();
            let amount = Fen::parse_yuan(&p.amount)?;
            if amount.0 <= 0 {
                return Err(ApiError::invalid_params("充值金额必须大于 0 元"));
            }
            let channel = p.channel.as_deref().unwrap_or("银行柜台");
            let record = host(&d)?.recharge(&p.plate, p.plate_colour, amount.0, &operator, channel)?;
            Ok(RecordView::named(&d, &record))
        },
    );
    m.add(
        "etc.records.query",
        "充值记录: a vehicle's recharge records by plate and colour, optionally within a time range, newest first, paged.",
        ETC_READERS,
        false,
        |d, _, p: QueryParams| async move {
            let query = RecordQuery {
                plate: p.plate,
                colour: p.plate_colour,
                from: p.from.as_deref().map(|t| parse_bound(t, false)).transpose()?,
                to: p.to.as_deref().map(|t| parse_bound(t, true)).transpose()?,
                page: p.page.unwrap_or(1),
                page_size: p.page_size.unwrap_or(cardd_store::model::PAGE_SIZE_DEFAULT),
            };
            let page = host(&d)?.query_records(&query)?;
            Ok::<RecordPage, ApiError>(RecordPage {
                records: page.records.iter().map(|r| RecordView::named(&d, r)).collect(),
                total: page.total,
                page: page.page,
                page_size: page.page_size,
            })
        },
    );
    m.add(
        "etc.records.get",
        "A recharge record with its history.",
        ETC_READERS,
        false,
        |d, _, p: RecordParams| async move {
            let record = host(&d)?.record(&p.record_id)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::HostNotFound,
                    format!("未找到充值记录 {}", p.record_id),
                )
            })?;
            Ok::<RecordView, ApiError>(RecordView::named(&d, &record))
        },
    );
    m.add(
        "etc.records.evidence",
        "What the card (on `reader_id`) and the journal prove about a record's money: landed, not landed or unknown. A record the proof contradicts is corrected.",
        ETC_READERS,
        true,
        |d, c, p: EvidenceParams| async move {
            let operator = c.session()?.username.clone();
            let record_id = p.record_id.clone();
            let (evidence, record) = with_card(&d, &c, p.reader_id, move |d, reader| {
                crate::etc::evidence(d, reader, &record_id, &operator)
            })
            .await?;
            Ok::<EvidenceResult, ApiError>(EvidenceResult {
                evidence,
                record: RecordView::named(&d, &record),
            })
        },
    );
    m.add(
        "etc.records.mark_not_loaded",
        "修改圈存状态: set a record back to 未圈存 for 二次圈存. With the card on `reader_id`, allowed only when the card proves the load did not land; refused with the evidence when it did. Without the card: supervisors only, with a reason.",
        ETC_COUNTER,
        true,
        |d, c, p: MarkParams| async move {
            let session = c.session()?.clone();
            let supervisor = session.role == Role::Supervisor;
            let record_id = p.record_id.clone();
            let reason = p.reason.clone();
            let outcome = with_card(&d, &c, p.reader_id, move |d, reader| {
                crate::etc::mark_not_loaded(d, reader, &record_id, &session.username, supervisor, reason.as_deref())
            })
            .await?;
            Ok::<MarkResult, ApiError>(MarkResult {
                record: RecordView::named(&d, &outcome.record),
                evidence: outcome.evidence,
                message: outcome.message,
            })
        },
    );
    m.add(
        "etc.records.resolve",
        "A supervisor settles a 待核对 record as loaded or not, with a reason; with the card on `reader_id`, the card's evidence must not contradict the verdict.",
        ETC_SUPERVISORS,
        true,
        |d, c, p: ResolveParams| async move {
            let operator = c.session()?.username.clone();
            let record_id = p.record_id.clone();
            let (loaded, reason) = (p.loaded, p.reason.clone());
            let record = with_card(&d, &c, p.reader_id, move |d, reader| {
                crate::etc::resolve_record(d, reader, &record_id, &operator, loaded, &reason)
            })
            .await?;
            Ok::<RecordView, ApiError>(RecordView::named(&d, &record))
        },
    );
}
