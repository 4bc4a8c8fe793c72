//! `cardd-obu`: OBU issuance and activation, the Rust operation behind the flows' `obu` module.
//!
//! An OBU's ESAM holds two files that issuance writes (`docs/card-protocol.md`): the MF `EF01`
//! system information (contract provider, contract serial, signed and expiry dates, the tamper
//! flag that activation sets to `01`) and the DF01 `EF01` vehicle information (plate, plate
//! colour, vehicle class, vehicle user type, dimensions, wheels, axles, wheelbase, load or
//! seats, description, engine number). Both are written with secure messaging: the MAC comes
//! from the security module, with the system maintenance key for MF `EF01` and the application
//! maintenance key for DF01 `EF01`. The file layouts, offsets, key ids and BCD dates are
//! `cardd-purse`'s; this crate decides what to write and when to refuse.
//!
//! [`ObuService`] reads an OBU ([`ObuService::read_info`]), plans an issuance from a vehicle
//! account ([`ObuService::plan`]) and performs it ([`ObuService::issue`]). The vehicle account
//! comes in as plain data ([`VehicleAccount`]): this crate does not know where accounts are
//! stored.
//!
//! # Architecture invariants
//!
//! * The vehicle file is built from the vehicle account, never from bytes a caller hands over;
//!   details given at issuance are used only when the account has none, and must then agree.
//! * The refusals (contract serial not the account's, contract expired, OBU activated for
//!   another vehicle) are checked again on the card itself right before writing, whatever the
//!   caller checked first.
//! * After writing, every byte is read back (the vehicle file through READ ENCRYPTED, decrypted
//!   by the security module) and compared; only then is the issuance reported done.
//! * Issuance is idempotent: it rewrites the same bytes. An OBU pulled in the middle is left not
//!   activated (the flag is written last) or activated with the files already written; either
//!   way issuing it again to the same vehicle rewrites everything and verifies it.
//! * Every error's message is what a teller reads (zh-CN); [`IssueError::code`] is its API code.
#![forbid(unsafe_code)]

use std::sync::Arc;

use cardd_api::obu::{
    IssuePlan, IssueReport, ObuInfo, ObuVehicleView, VehicleDetails, VehicleView,
};
use cardd_api::types::{plate_colour_zh, vehicle_class_zh, vehicle_user_type_zh};
use cardd_api::ErrorCode;
use cardd_crypto::gbk::{self, GbkError};
use cardd_journal::clock::Clock;
use cardd_purse::{
    obu_read_key_for, CardKeyContext, MaintenanceKey, ObuSystemInfo, ObuVehicleInfo, PlateColour,
    Purse, PurseError, SamError, SecurityModule, Sfi,
};
use cardd_reader::{CardChannel, ObuTarget, Reader, StatusWord};

/// Years an OBU contract runs when issuance has to write its dates (the OBU had none).
pub const OBU_CONTRACT_YEARS: u16 = 10;

/// Why an OBU was not issued. The messages are what a teller reads.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("未找到车辆账户：{plate}（{colour}）。请核对车牌号和车牌颜色，或先为该车辆开户")]
    UnknownVehicle { plate: String, colour: String },
    #[error("车辆账户 {plate} 未登记OBU合同序列号，不能发行OBU；请先在车辆账户中登记该车的OBU")]
    NoContractSerial { plate: String },
    #[error("OBU合同序列号不符：发行器上的OBU为 {on_obu}，车辆账户登记的是 {account}；请放上该车辆的OBU")]
    SerialMismatch { on_obu: String, account: String },
    #[error("OBU合同已于 {expiry} 到期，不能发行；请更换OBU")]
    Expired { expiry: String },
    #[error("该OBU已激活并发行给 {plate}（{colour}），不能再发行给其他车辆")]
    IssuedToOther { plate: String, colour: String },
    #[error("该OBU已激活，但无法读取其车辆信息以确认归属（{detail}）；不能发行，请联系管理员")]
    ActivatedUnreadable { detail: String },
    #[error("车辆账户 {plate} 缺少车辆信息（车辆用户类型、车长、车宽、车高、车轮数、车轴数、轴距、核定载质量/座位数），不能写入OBU；请补全车辆账户，或在发行时填写")]
    MissingDetails { plate: String },
    #[error("发行时填写的车辆信息与车辆账户中的不一致；请以车辆账户为准，或先修改车辆账户")]
    DetailsConflict,
    #[error("{field}“{text}”不能写入OBU：{reason}")]
    Text {
        field: &'static str,
        text: String,
        reason: String,
    },
    /// The vehicle accounts refused (looking the account up, or validating details given at
    /// issuance): their own message and code.
    #[error("{message}")]
    Account { message: String, code: ErrorCode },
    #[error("签发系统不可用（完整性检查未通过），已停止发行；请联系管理员")]
    HostUnavailable,
    #[error("未检测到OBU，或读取OBU时OBU被移开、无响应；未写入任何数据，请放好OBU后重试")]
    NotPresent,
    #[error("读卡器上不是OBU（没有OBU系统信息文件）；请在OBU发行器上放好OBU后重试")]
    NotAnObu,
    #[error("写入过程中OBU被移开或无响应，OBU发行未完成；请放好OBU后重新发行，系统会重写全部信息并逐字节核对")]
    Interrupted,
    #[error("安全模块无法处理该OBU（{}）；请联系管理员检查OBU密钥配置", detail(.0))]
    Sam(SamError),
    #[error("OBU操作失败（{}）；请检查OBU和发行器后重试，如仍失败请联系管理员", detail(.0))]
    Card(PurseError),
    #[error("写入后读回核对不一致：{file}第 {offset} 字节与写入的不同，OBU发行未完成；请重新发行，如仍不一致请更换OBU")]
    VerifyMismatch { file: &'static str, offset: usize },
}

impl IssueError {
    /// The API error code of this refusal or failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            IssueError::UnknownVehicle { .. } => ErrorCode::HostNotFound,
            IssueError::NoContractSerial { .. }
            | IssueError::MissingDetails { .. }
            | IssueError::DetailsConflict
            | IssueError::Text { .. } => ErrorCode::InvalidParams,
            IssueError::SerialMismatch { .. }
            | IssueError::Expired { .. }
            | IssueError::IssuedToOther { .. }
            | IssueError::NotAnObu => ErrorCode::CardNotEligible,
            IssueError::Account { code, .. } => *code,
            IssueError::HostUnavailable => ErrorCode::FailedClosed,
            IssueError::NotPresent => ErrorCode::NoCard,
            IssueError::Interrupted => ErrorCode::CardRemoved,
            IssueError::ActivatedUnreadable { .. }
            | IssueError::Sam(_)
            | IssueError::Card(_)
            | IssueError::VerifyMismatch { .. } => ErrorCode::CardError,
        }
    }

    /// A reader failure where the OBU left or went silent becomes [`IssueError::NotPresent`]
    /// before anything was written and [`IssueError::Interrupted`] after.
    fn after(self, wrote: bool) -> Self {
        match self {
            IssueError::Card(PurseError::Reader(e))
                if e.outcome_unknown() || e.is_card_absent() =>
            {
                if wrote {
                    IssueError::Interrupted
                } else {
                    IssueError::NotPresent
                }
            }
            other => other,
        }
    }
}

/// A lower layer's message inside a zh-CN one: its `: ` separators become `：`, so the flow
/// engine, which keeps what follows the last `: ` of an error, shows the whole message.
fn detail(e: &impl std::fmt::Display) -> String {
    e.to_string().replace(": ", "：")
}

impl From<PurseError> for IssueError {
    fn from(e: PurseError) -> Self {
        match e {
            PurseError::Sam(e) => IssueError::Sam(e),
            other => IssueError::Card(other),
        }
    }
}

/// A vehicle account as issuance needs it: what the ETC domain knows of the vehicle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VehicleAccount {
    /// The account's plate, as displayed.
    pub plate: String,
    /// The plate colour code.
    pub plate_colour: u16,
    /// Toll vehicle class.
    pub vehicle_class: u8,
    /// The OBU's contract serial (16 hex digits), if one was registered.
    pub obu_contract_serial: Option<String>,
    /// The details an OBU's vehicle file needs, if the account has them.
    pub details: Option<VehicleDetails>,
}

/// What issuance writes: everything comes from the vehicle account.
#[derive(Debug, Clone)]
pub struct IssueOrder {
    /// The account's plate, as displayed.
    pub plate: String,
    pub plate_colour: u16,
    /// The account's OBU contract serial.
    pub contract_serial: [u8; 8],
    /// The 59-byte vehicle file.
    pub vehicle_file: ObuVehicleInfo,
    /// Today in China, `(year, month, day)`.
    pub today: (u16, u8, u8),
}

/// What issuance did on the ESAM.
#[derive(Debug, Clone)]
pub struct EsamOutcome {
    pub system: ObuSystemInfo,
    pub written: Vec<&'static str>,
    pub verified: Vec<&'static str>,
}

/// Today's date in China, by the system clock.
pub fn china_today() -> (u16, u8, u8) {
    china_date(time::OffsetDateTime::now_utc())
}

/// The date in China at `now`, `(year, month, day)`.
pub fn china_date(now: time::OffsetDateTime) -> (u16, u8, u8) {
    let now = now.to_offset(cardd_journal::CHINA_OFFSET);
    (
        u16::try_from(now.year()).unwrap_or(0),
        u8::from(now.month()),
        now.day(),
    )
}

/// `YYYY-MM-DD`.
pub fn ymd((y, m, d): (u16, u8, u8)) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

/// `date` plus `years` (29 February becomes 28 February).
pub fn plus_years((y, m, d): (u16, u8, u8), years: u16) -> (u16, u8, u8) {
    let year = y.saturating_add(years);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if m == 2 && d == 29 && !leap {
        (year, 2, 28)
    } else {
        (year, m, d)
    }
}

/// Encodes `text` as GBK into a `00`-padded field of `N` bytes.
fn gbk_field<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], IssueError> {
    gbk::encode_padded(text).map_err(|e| IssueError::Text {
        field,
        text: text.to_owned(),
        reason: match e {
            GbkError::Unmappable(_) => "含有GBK编码中没有的字符".into(),
            GbkError::TooLong { .. } => format!("最多 {N} 字节（GBK，一个汉字占 2 字节）"),
        },
    })
}

/// The 59-byte vehicle file for `vehicle` with `details`.
pub fn vehicle_file(
    vehicle: &VehicleAccount,
    details: &VehicleDetails,
) -> Result<ObuVehicleInfo, IssueError> {
    let engine: [u8; ObuVehicleInfo::ENGINE_NUMBER_BYTES] =
        gbk_field("发动机号", &details.engine_number)?;
    Ok(ObuVehicleInfo {
        plate: gbk_field::<{ ObuVehicleInfo::PLATE_BYTES }>("车牌号", &vehicle.plate)?,
        plate_colour: PlateColour::from_code(vehicle.plate_colour),
        vehicle_class: vehicle.vehicle_class,
        vehicle_user_type: details.user_type,
        length_mm: details.length_mm,
        width_mm: details.width_mm,
        height_mm: details.height_mm,
        wheels: details.wheels,
        axles: details.axles,
        wheelbase_mm: details.wheelbase_mm,
        load_or_seats: details.load_kg_or_seats,
        description: gbk_field::<{ ObuVehicleInfo::DESCRIPTION_BYTES }>(
            "车辆描述",
            &details.description,
        )?,
        engine_number: engine,
    })
}

/// A vehicle file decoded, with zh-CN labels.
pub fn vehicle_view(file: &ObuVehicleInfo) -> VehicleView {
    let colour = file.plate_colour.code();
    VehicleView {
        plate: gbk::decode_lossy(&file.plate),
        plate_colour: colour,
        plate_colour_label: plate_colour_zh(colour).to_owned(),
        vehicle_class: file.vehicle_class,
        vehicle_class_label: vehicle_class_zh(file.vehicle_class)
            .unwrap_or("其他")
            .to_owned(),
        vehicle_user_type_label: vehicle_user_type_zh(file.vehicle_user_type)
            .unwrap_or("其他")
            .to_owned(),
        details: VehicleDetails {
            user_type: file.vehicle_user_type,
            length_mm: file.length_mm,
            width_mm: file.width_mm,
            height_mm: file.height_mm,
            wheels: file.wheels,
            axles: file.axles,
            wheelbase_mm: file.wheelbase_mm,
            load_kg_or_seats: file.load_or_seats,
            description: gbk::decode_lossy(&file.description),
            engine_number: gbk::decode_lossy(&file.engine_number),
        },
    }
}

/// Runs `f` on the ESAM of the OBU in `reader`: through the OBU channel of an OBU programmer,
/// or directly when the ESAM sits in the reader's own slot.
fn with_esam<R>(
    reader: &mut Reader,
    f: impl FnOnce(&mut Purse<'_>) -> Result<R, IssueError>,
) -> Result<R, IssueError> {
    if reader.session().obu().is_some() {
        let mut esam = reader
            .obu(ObuTarget::Esam)
            .map_err(|e| IssueError::Card(e.into()))?;
        let channel: &mut dyn CardChannel = &mut esam;
        f(&mut Purse::new(channel))
    } else {
        f(&mut Purse::new(reader))
    }
}

fn random8() -> [u8; 8] {
    use rand::RngCore;
    let mut random = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut random);
    random
}

/// SELECT MF and READ BINARY of the system information; a card without it is not an OBU.
fn read_system(purse: &mut Purse<'_>) -> Result<ObuSystemInfo, IssueError> {
    purse.select_mf()?;
    purse.read_obu_system_info().map_err(|e| match e {
        PurseError::Status { sw, .. } if sw == StatusWord::FILE_NOT_FOUND => IssueError::NotAnObu,
        other => other.into(),
    })
}

/// SELECT DF01 and READ ENCRYPTED of the vehicle file, decrypted by `sam`.
fn read_vehicle(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    card: &CardKeyContext,
) -> Result<ObuVehicleInfo, PurseError> {
    let (key_id, key_version) = obu_read_key_for(card.algorithm);
    purse.select_df01()?;
    purse.read_obu_vehicle(sam, card, &random8(), key_id, key_version)
}

fn is_expired(system: &ObuSystemInfo, today: (u16, u8, u8)) -> bool {
    system.expiry_date().is_some_and(|expiry| expiry < today)
}

/// The refusals, checked on the card itself right before writing.
fn check(
    system: &ObuSystemInfo,
    current: Option<Result<ObuVehicleInfo, PurseError>>,
    order: &IssueOrder,
) -> Result<(), IssueError> {
    if system.contract_serial != order.contract_serial {
        return Err(IssueError::SerialMismatch {
            on_obu: system.obu_number(),
            account: hex::encode_upper(order.contract_serial),
        });
    }
    if is_expired(system, order.today) {
        return Err(IssueError::Expired {
            expiry: system.expiry_date().map(ymd).unwrap_or_default(),
        });
    }
    match current {
        None => Ok(()),
        Some(Ok(file)) if file.same_vehicle(&order.vehicle_file) => Ok(()),
        Some(Ok(file)) => {
            let view = vehicle_view(&file);
            Err(IssueError::IssuedToOther {
                plate: view.plate,
                colour: view.plate_colour_label,
            })
        }
        Some(Err(PurseError::Reader(e))) => Err(IssueError::Card(e.into())),
        Some(Err(e)) => Err(IssueError::ActivatedUnreadable { detail: detail(&e) }),
    }
}

/// The first differing byte of `wrote` and `read`, as a verification failure.
fn verify(file: &'static str, wrote: &[u8], read: &[u8]) -> Result<(), IssueError> {
    match wrote.iter().zip(read).position(|(a, b)| a != b) {
        Some(offset) => Err(IssueError::VerifyMismatch { file, offset }),
        None if wrote.len() != read.len() => Err(IssueError::VerifyMismatch {
            file,
            offset: wrote.len().min(read.len()),
        }),
        None => Ok(()),
    }
}

/// Reads the OBU on `reader` (what `obu.info()` returns); `today` decides `expired`.
pub fn read_info(
    reader: &mut Reader,
    sam: &dyn SecurityModule,
    today: (u16, u8, u8),
) -> Result<ObuInfo, IssueError> {
    with_esam(reader, |purse| {
        let system = read_system(purse)?;
        let card = CardKeyContext::obu(&system);
        let mut notes = Vec::new();
        let vehicle = match read_vehicle(purse, sam, &card) {
            Ok(file) => Some(ObuVehicleView {
                vehicle: vehicle_view(&file),
                blank: file.is_blank(),
            }),
            Err(PurseError::Reader(e)) => return Err(IssueError::Card(e.into())),
            Err(e) => {
                notes.push(format!("无法读取OBU车辆信息：{}", detail(&e)));
                None
            }
        };
        Ok(ObuInfo {
            obu_number: system.obu_number(),
            contract_provider: hex::encode_upper(system.contract_provider),
            provider_province: system.provider_province_name().map(str::to_owned),
            contract_type: system.contract_type,
            contract_version: system.contract_version,
            algorithm: system.algorithm().as_str().to_owned(),
            signed_date: system.signed_date().map(ymd),
            expiry_date: system.expiry_date().map(ymd),
            dates_missing: system.signed_date().is_none() || system.expiry_date().is_none(),
            expired: is_expired(&system, today),
            activated: system.is_activated(),
            vehicle,
            notes,
        })
    })
    .map_err(|e| e.after(false))
}

/// Issues the OBU on `reader` per `order`: checks, writes the dates if missing, the vehicle
/// file and the activation flag, then reads everything back and compares it.
pub fn issue_on_reader(
    reader: &mut Reader,
    sam: &dyn SecurityModule,
    order: &IssueOrder,
) -> Result<EsamOutcome, IssueError> {
    let mut wrote = false;
    with_esam(reader, |purse| issue_esam(purse, sam, order, &mut wrote)).map_err(|e| e.after(wrote))
}

/// Issuance on an ESAM already reached; `wrote` is set once anything was written.
pub fn issue_esam(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    order: &IssueOrder,
    wrote: &mut bool,
) -> Result<EsamOutcome, IssueError> {
    let system = read_system(purse)?;
    let card = CardKeyContext::obu(&system);
    let current = system
        .is_activated()
        .then(|| read_vehicle(purse, sam, &card));
    check(&system, current, order)?;
    // GET CHALLENGE and a secure-messaging UPDATE BINARY of EF01 of the selected DF.
    let mut write = |purse: &mut Purse<'_>, key, offset, data: &[u8]| {
        *wrote = true;
        purse.write_binary_sm(sam, &card, key, Sfi::ESAM_EF01, offset, data)
    };

    let mut expected = system.clone();
    let mut written = Vec::new();
    if system.signed_date().is_none() || system.expiry_date().is_none() {
        let signed = system.signed_date().unwrap_or(order.today);
        let expiry = system
            .expiry_date()
            .unwrap_or_else(|| plus_years(order.today, OBU_CONTRACT_YEARS));
        expected.set_dates(signed, expiry);
        purse.select_mf()?;
        write(
            purse,
            MaintenanceKey::ObuSystem,
            ObuSystemInfo::SIGNED_DATE_OFFSET,
            &expected.dates_bytes(),
        )?;
        written.push("system_info_dates");
    }

    let vehicle_bytes = order.vehicle_file.to_bytes();
    purse.select_df01()?;
    write(purse, MaintenanceKey::ObuApplication, 0, &vehicle_bytes)?;
    written.push("vehicle_info");

    purse.select_mf()?;
    expected.activate();
    write(
        purse,
        MaintenanceKey::ObuSystem,
        ObuSystemInfo::TAMPER_FLAG_OFFSET,
        &[expected.tamper_flag],
    )?;
    written.push("activation_flag");

    let system_back = purse.read_obu_system_info()?;
    verify(
        "系统信息文件",
        &expected.to_bytes(),
        &system_back.to_bytes(),
    )?;
    let vehicle_back = read_vehicle(purse, sam, &card)?;
    verify("车辆信息文件", &vehicle_bytes, &vehicle_back.to_bytes())?;
    Ok(EsamOutcome {
        system: system_back,
        written,
        verified: vec!["system_info", "vehicle_info"],
    })
}

/// The zh-CN name of a `written` code.
pub fn written_label(code: &str) -> &'static str {
    match code {
        "system_info_dates" => "系统信息（签约日期、有效期）",
        "vehicle_info" => "车辆信息",
        "activation_flag" => "激活标志",
        _ => "其他",
    }
}

/// OBU issuance with its security module and clock.
#[derive(Clone)]
pub struct ObuService {
    sam: Arc<dyn SecurityModule>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ObuService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObuService")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ObuService {
    /// The service over `sam` (the MACs and the vehicle file's decryption) and `clock` (today's
    /// date in China: expiry, and the dates written to an OBU without them).
    pub fn new(sam: Arc<dyn SecurityModule>, clock: Arc<dyn Clock>) -> Self {
        ObuService { sam, clock }
    }

    /// Today in China.
    pub fn today(&self) -> (u16, u8, u8) {
        china_date(self.clock.now())
    }

    /// Reads the OBU on `reader` (`obu.info()`).
    pub fn read_info(&self, reader: &mut Reader) -> Result<ObuInfo, IssueError> {
        read_info(reader, self.sam.as_ref(), self.today())
    }

    /// What issuance will write for `account` (`obu.plan`): `given` details are used only
    /// when the account has none, after `validate` (the vehicle accounts' own rules) accepted
    /// them, and must agree with the account's when it has some.
    pub fn plan(
        &self,
        account: &VehicleAccount,
        given: Option<VehicleDetails>,
        validate: impl FnOnce(&VehicleDetails) -> Result<VehicleDetails, IssueError>,
    ) -> Result<(IssuePlan, IssueOrder), IssueError> {
        let serial = account
            .obu_contract_serial
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| IssueError::NoContractSerial {
                plate: account.plate.clone(),
            })?;
        let given = given.map(|d| validate(&d)).transpose()?;
        let (details, source) = match (&account.details, given) {
            (Some(stored), Some(given)) if *stored != given => {
                return Err(IssueError::DetailsConflict)
            }
            (Some(stored), _) => (stored.clone(), "account"),
            (None, Some(given)) => (given, "params"),
            (None, None) => {
                return Err(IssueError::MissingDetails {
                    plate: account.plate.clone(),
                })
            }
        };
        let order = IssueOrder {
            plate: account.plate.clone(),
            plate_colour: account.plate_colour,
            contract_serial: serial,
            vehicle_file: vehicle_file(account, &details)?,
            today: self.today(),
        };
        let plan = IssuePlan {
            obu_number: hex::encode_upper(serial),
            vehicle: vehicle_view(&order.vehicle_file),
            details_source: source.to_owned(),
        };
        Ok((plan, order))
    }

    /// Issues the OBU on `reader` per `order` (checked again on the card, written, read back
    /// and compared).
    pub fn issue(
        &self,
        reader: &mut Reader,
        order: &IssueOrder,
    ) -> Result<EsamOutcome, IssueError> {
        issue_on_reader(reader, self.sam.as_ref(), order)
    }

    /// What `obu.issue` returns for `plan` carried out with `outcome`.
    pub fn report(plan: IssuePlan, outcome: &EsamOutcome) -> IssueReport {
        IssueReport {
            plan,
            signed_date: outcome.system.signed_date().map(ymd),
            expiry_date: outcome.system.expiry_date().map(ymd),
            written: outcome.written.iter().map(|w| (*w).to_owned()).collect(),
            written_labels: outcome
                .written
                .iter()
                .map(|w| written_label(w).to_owned())
                .collect(),
            verified: outcome.verified.iter().map(|v| (*v).to_owned()).collect(),
            activated: outcome.system.is_activated(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_text_fields() {
        assert_eq!(plus_years((2024, 2, 29), 10), (2034, 2, 28));
        assert_eq!(plus_years((2024, 6, 1), 10), (2034, 6, 1));
        assert_eq!(plus_years((2020, 2, 29), 20), (2040, 2, 29));
        let plate: [u8; 12] = gbk_field("车牌号", "陕A12345").unwrap();
        assert_eq!(
            &plate[..8],
            &[0xC9, 0xC2, b'A', b'1', b'2', b'3', b'4', b'5']
        );
        assert_eq!(gbk::decode_lossy(&plate), "陕A12345");
        assert!(matches!(
            gbk_field::<12>("车牌号", "陕A1234567890"),
            Err(IssueError::Text { .. })
        ));
        assert!(matches!(
            gbk_field::<16>("车辆描述", "🚗"),
            Err(IssueError::Text { .. })
        ));
    }

    #[test]
    fn verification_names_the_first_differing_byte() {
        assert!(verify("f", &[1, 2, 3], &[1, 2, 3]).is_ok());
        assert!(matches!(
            verify("f", &[1, 2, 3], &[1, 9, 3]),
            Err(IssueError::VerifyMismatch { offset: 1, .. })
        ));
        assert!(matches!(
            verify("f", &[1, 2, 3], &[1, 2]),
            Err(IssueError::VerifyMismatch { offset: 2, .. })
        ));
    }

    #[test]
    fn china_date_is_utc_plus_8() {
        let t = time::macros::datetime!(2025-12-31 16:30 UTC);
        assert_eq!(china_date(t), (2026, 1, 1));
        assert_eq!(ymd((2026, 1, 1)), "2026-01-01");
    }
}
