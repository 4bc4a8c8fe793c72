//! The ETC service's JSON-RPC methods: vehicle accounts, recharges (充值), the recharge-record
//! query (充值记录), a record's card evidence, 修改圈存状态 and supervisors' reconciliation.
//!
//! Loads themselves are flows (`etc.load`, `etc.kiosk_load` in `scripts/`), because they ask the
//! teller or the customer to confirm; everything here answers at once. Amounts cross as decimal
//! yuan strings; times are RFC 3339 at +08:00 (a query also takes plain `YYYY-MM-DD` dates,
//! whole China days). The logic lives in `cardd_etc::EtcService`, the params and results in
//! `cardd_api::etc`; this file only declares the methods.

use std::sync::Arc;

use cardd_api::{ErrorCode, Fen, Role};
use cardd_etc::{EtcService, RechargeRecord, RecordQuery};
use serde_json::Value;
use time::OffsetDateTime;

use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::rpc::{audit_as_json, Access, AuditDetail, Caller, Methods};

/// Who reads ETC data: the counter, its supervisors, auditors and administrators.
const ETC_READERS: Access =
    Access::Roles(&[Role::Teller, Role::Supervisor, Role::Auditor, Role::Admin]);
/// Who takes recharges and changes records at the counter.
const ETC_COUNTER: Access = Access::Roles(&[Role::Teller, Role::Supervisor]);
/// Who maintains vehicle accounts and decides reconciliations.
const ETC_SUPERVISORS: Access = Access::Roles(&[Role::Supervisor, Role::Admin]);

pub use cardd_api::etc::{
    ChangeView, ColourView, EvidenceParams, EvidenceResult, MarkParams, MarkResult, QueryParams,
    RechargeParams, RecordPage, RecordParams, RecordView, ResolveParams, UpsertParams,
    VehicleParams, VehicleView,
};

/// The record with its history's operators named as people read them (display names).
pub fn named_record(d: &Daemon, r: &RechargeRecord) -> RecordView {
    let mut view = RecordView::from(r);
    for change in &mut view.history {
        change.operator_name = crate::methods::auth::operator_name(d, &change.operator);
    }
    view
}

audit_as_json!(VehicleParams, plate);
audit_as_json!(RechargeParams, plate);
audit_as_json!(QueryParams, plate);
audit_as_json!(RecordParams, record_id);
audit_as_json!(EvidenceParams, record_id);
audit_as_json!(MarkParams, record_id);
audit_as_json!(ResolveParams, record_id);

impl AuditDetail for UpsertParams {
    fn audit_detail(&self) -> Value {
        serde_json::to_value(&self.vehicle).unwrap_or(Value::Null)
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.vehicle.plate.clone())
    }
}

/// The ETC service over the daemon's records, journal and security module, asking both
/// domains' owners of loads before any new credit, reporting watch-list checks to the audit log;
/// in a fleet, adopting the loads other sites began (`fleet`).
pub(crate) fn service(
    records: Arc<dyn cardd_etc::IssuerHost>,
    journal: Option<Arc<cardd_journal::Journal>>,
    sam: Arc<dyn cardd_purse::SecurityModule>,
    owners: Arc<dyn cardd_journal::IntentOwners>,
    audit: Arc<crate::audit::AuditLog>,
    fleet: Option<Arc<dyn cardd_journal::ForeignIntents>>,
    config: &crate::config::Config,
) -> EtcService {
    EtcService::new(
        records,
        journal,
        sam,
        cardd_journal::InFlight::default(),
        owners,
        Arc::new(crate::recovery::AuditWatch(audit)),
        Arc::new(cardd_journal::SystemClock),
        cardd_etc::EtcSettings {
            etc_pin: config.etc_pin.clone(),
            terminal_id: config.terminal_id,
            fleet,
        },
    )
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
            .assume_offset(cardd_etc::model::CHINA_OFFSET));
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| bad())
}

/// Runs `job` on `reader_id` for the caller, or without a card when no reader is named.
async fn with_card<R: Send + 'static>(
    d: &Arc<Daemon>,
    c: &Caller,
    reader_id: Option<String>,
    job: impl FnOnce(&EtcService, Option<&mut cardd_reader::Reader>) -> Result<R, cardd_etc::EtcError>
        + Send
        + 'static,
) -> Result<R, ApiError> {
    match reader_id {
        Some(reader_id) => {
            let holder = c.holder()?;
            let daemon = d.clone();
            d.readers
                .run(&reader_id, &holder, c.method, move |reader| {
                    Ok(job(daemon.etc_service()?, Some(reader))?)
                })
                .await?
        }
        None => records_call(d, move |etc| Ok(job(etc, None)?)).await,
    }
}

/// Runs `work` on the ETC service off the async threads: its records may be the issuer host's
/// (a fleet site), and a call may wait for the host up to the link's timeout.
async fn records_call<R: Send + 'static>(
    d: &Arc<Daemon>,
    work: impl FnOnce(&EtcService) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let daemon = d.clone();
    tokio::task::spawn_blocking(move || work(daemon.etc_service()?))
        .await
        .map_err(|e| ApiError::internal(format!("the records call stopped: {e}")))?
}

/// Declares the ETC methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::etc::VehicleGet, _, _>(
        "A vehicle account by plate number and plate colour.",
        ETC_READERS,
        false,
        |d, _, p: VehicleParams| async move {
            let (plate, colour) = (p.plate.clone(), p.plate_colour);
            let vehicle = records_call(&d, move |etc| Ok(etc.records().vehicle(&plate, colour)?))
                .await?
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
    m.method::<cardd_api::etc::VehicleUpsert, _, _>(
        "Create or replace a vehicle account (plate, colour, cards, owner, class, OBU contract serial, vehicle details for OBU issuance).",
        ETC_SUPERVISORS,
        true,
        |d, c, p: UpsertParams| async move {
            let operator = c.session()?.username.clone();
            let vehicle = records_call(&d, move |etc| {
                Ok(etc.records().upsert_vehicle(&p.vehicle, &operator)?)
            })
            .await?;
            Ok::<VehicleView, ApiError>(VehicleView::from(&vehicle))
        },
    );
    m.method::<cardd_api::etc::Recharge, _, _>(
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
            let (plate, colour, channel) = (p.plate.clone(), p.plate_colour, channel.to_owned());
            let record = records_call(&d, move |etc| {
                Ok(etc.records().recharge(&plate, colour, amount.0, &operator, &channel)?)
            })
            .await?;
            Ok(named_record(&d, &record))
        },
    );
    m.method::<cardd_api::etc::RecordsQuery, _, _>(
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
                page_size: p.page_size.unwrap_or(cardd_etc::model::PAGE_SIZE_DEFAULT),
            };
            let page = records_call(&d, move |etc| Ok(etc.records().query_records(&query)?)).await?;
            Ok::<RecordPage, ApiError>(RecordPage {
                records: page.records.iter().map(|r| named_record(&d, r)).collect(),
                total: page.total,
                page: page.page,
                page_size: page.page_size,
            })
        },
    );
    m.method::<cardd_api::etc::RecordGet, _, _>(
        "A recharge record with its history.",
        ETC_READERS,
        false,
        |d, _, p: RecordParams| async move {
            let id = p.record_id.clone();
            let record = records_call(&d, move |etc| Ok(etc.records().record(&id)?))
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::HostNotFound,
                        format!("未找到充值记录 {}", p.record_id),
                    )
                })?;
            Ok::<RecordView, ApiError>(named_record(&d, &record))
        },
    );
    m.method::<cardd_api::etc::RecordEvidence, _, _>(
        "What the card (on `reader_id`) and the journal prove about a record's money: landed, not landed or unknown. A record the proof contradicts is corrected.",
        ETC_READERS,
        true,
        |d, c, p: EvidenceParams| async move {
            let operator = c.session()?.username.clone();
            let record_id = p.record_id.clone();
            let (evidence, record) = with_card(&d, &c, p.reader_id, move |etc, reader| {
                etc.evidence(reader, &record_id, &operator)
            })
            .await?;
            Ok::<EvidenceResult, ApiError>(EvidenceResult {
                evidence,
                record: named_record(&d, &record),
            })
        },
    );
    m.method::<cardd_api::etc::MarkNotLoaded, _, _>(
        "修改圈存状态: set a record back to 未圈存 for 二次圈存. With the card on `reader_id`, allowed only when the card proves the load did not land; refused with the evidence when it did. Without the card: supervisors only, with a reason.",
        ETC_COUNTER,
        true,
        |d, c, p: MarkParams| async move {
            let session = c.session()?.clone();
            let supervisor = session.role == Role::Supervisor;
            let record_id = p.record_id.clone();
            let reason = p.reason.clone();
            let outcome = with_card(&d, &c, p.reader_id, move |etc, reader| {
                etc.mark_not_loaded(reader, &record_id, &session.username, supervisor, reason.as_deref())
            })
            .await?;
            Ok::<MarkResult, ApiError>(MarkResult {
                record: named_record(&d, &outcome.record),
                evidence: outcome.evidence,
                message: outcome.message,
            })
        },
    );
    m.method::<cardd_api::etc::Resolve, _, _>(
        "A supervisor settles a 待核对 record as loaded or not, with a reason; with the card on `reader_id`, the card's evidence must not contradict the verdict.",
        ETC_SUPERVISORS,
        true,
        |d, c, p: ResolveParams| async move {
            let operator = c.session()?.username.clone();
            let record_id = p.record_id.clone();
            let (loaded, reason) = (p.loaded, p.reason.clone());
            let record = with_card(&d, &c, p.reader_id, move |etc, reader| {
                etc.resolve_record(reader, &record_id, &operator, loaded, &reason)
            })
            .await?;
            Ok::<RecordView, ApiError>(named_record(&d, &record))
        },
    );
}
