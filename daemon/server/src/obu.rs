//! `obu`: OBU issuance and activation (flow API v1), and the Rust operation behind it.
//!
//! An OBU's ESAM holds two files that issuance writes (`docs/card-protocol.md`): the MF `EF01`
//! system information (contract provider, contract serial, signed and expiry dates, the tamper
//! flag that activation sets to `01`) and the DF01 `EF01` vehicle information (plate, plate
//! colour, vehicle class, vehicle user type, dimensions, wheels, axles, wheelbase, load or
//! seats, description, engine number). Both are written with secure messaging: the MAC comes
//! from the security module, with the system maintenance key for MF `EF01` and the application
//! maintenance key for DF01 `EF01`.
//!
//! Flows get two calls and nothing lower: `obu.info()` reads the OBU on the run's reader, and
//! `obu.issue{ plate, plate_colour, details }` issues it to that vehicle account. The flow
//! refuses first, with its own messages; this module checks the same things again, so that no
//! flow can issue an OBU whose contract serial is not the vehicle account's, whose contract has
//! expired, or that is activated for another vehicle. The vehicle file is built here from the
//! issuer host's vehicle account, never from bytes a flow hands over. After writing, every byte
//! is read back (the vehicle file through READ ENCRYPTED, decrypted by the security module) and
//! compared; only then is the issuance reported done.
//!
//! Issuance is idempotent: it rewrites the same bytes. An OBU pulled in the middle is left not
//! activated (the flag is written last) or activated with the files already written; either
//! way issuing it again to the same vehicle rewrites everything and verifies it.

use std::sync::{Arc, Weak};

use cardd_api::types::plate_colour_zh;
use cardd_crypto::gbk::{self, GbkError};
use cardd_purse::{
    obu_read_key_for, CardKeyContext, MaintenanceKey, ObuSystemInfo, ObuVehicleInfo, PlateColour,
    Purse, PurseError, SamError, SecurityModule, Sfi,
};
use cardd_reader::{CardChannel, ObuTarget, Reader, StatusWord};
use cardd_script::mlua::{self, Lua, Value};
use cardd_script::{install_module, json_arg, json_value, str_arg, LuaModule, RunContext};
use cardd_store::model::{vehicle_class_zh, vehicle_user_type_zh, Vehicle, VehicleDetails};
use serde::Serialize;

use crate::readers::Holder;
use crate::server::Daemon;

/// Years an OBU contract runs when issuance has to write its dates (the OBU had none).
pub const OBU_CONTRACT_YEARS: u16 = 10;
/// Longest plate or text argument from a flow, in bytes.
const ARG_BYTES_MAX: usize = 256;

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
    #[error("{0}")]
    Host(#[from] cardd_store::HostError),
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

impl IssueError {
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

/// A vehicle information file as flows see it, decoded, with zh-CN labels.
#[derive(Debug, Clone, Serialize)]
pub struct VehicleView {
    pub plate: String,
    pub plate_colour: u16,
    pub plate_colour_label: String,
    pub vehicle_class: u8,
    pub vehicle_class_label: String,
    pub vehicle_user_type_label: String,
    /// Everything after plate, colour and class.
    pub details: VehicleDetails,
}

/// The vehicle file on an OBU.
#[derive(Debug, Clone, Serialize)]
pub struct ObuVehicleView {
    #[serde(flatten)]
    pub vehicle: VehicleView,
    /// No plate written yet.
    pub blank: bool,
}

/// What `obu.info()` returns.
#[derive(Debug, Clone, Serialize)]
pub struct ObuInfo {
    /// The contract serial (16 hex digits): the OBU number.
    pub obu_number: String,
    /// Contract provider, hex.
    pub contract_provider: String,
    pub provider_province: Option<String>,
    pub contract_type: u8,
    pub contract_version: u8,
    /// `tdes` or `sm4`.
    pub algorithm: String,
    /// YYYY-MM-DD, `None` when not written.
    pub signed_date: Option<String>,
    /// YYYY-MM-DD, `None` when not written.
    pub expiry_date: Option<String>,
    /// Issuance will write the signed and expiry dates.
    pub dates_missing: bool,
    /// The contract's expiry date is before today (China time).
    pub expired: bool,
    /// Tamper flag `01`.
    pub activated: bool,
    /// The vehicle file, when it could be read.
    pub vehicle: Option<ObuVehicleView>,
    /// Why something could not be read.
    pub notes: Vec<String>,
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

/// What issuance will write, from the vehicle account (what `obu.plan` returns and the
/// confirmation shows).
#[derive(Debug, Clone, Serialize)]
pub struct IssuePlan {
    /// The account's OBU contract serial.
    pub obu_number: String,
    /// The vehicle file to be written, decoded back.
    #[serde(flatten)]
    pub vehicle: VehicleView,
    /// `account` or `params`: where the vehicle details came from.
    pub details_source: String,
}

/// What `obu.issue` returns: the plan, and what was written and verified.
#[derive(Debug, Clone, Serialize)]
pub struct IssueReport {
    #[serde(flatten)]
    pub plan: IssuePlan,
    pub signed_date: Option<String>,
    pub expiry_date: Option<String>,
    /// Codes of what was written: `system_info_dates`, `vehicle_info`, `activation_flag`.
    pub written: Vec<String>,
    /// zh-CN names of what was written.
    pub written_labels: Vec<String>,
    /// What was read back and found equal, byte for byte: `system_info`, `vehicle_info`.
    pub verified: Vec<String>,
    pub activated: bool,
}

/// Today's date in China.
pub fn china_today() -> (u16, u8, u8) {
    let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let now = time::OffsetDateTime::now_utc().to_offset(offset);
    (
        u16::try_from(now.year()).unwrap_or(0),
        u8::from(now.month()),
        now.day(),
    )
}

fn ymd((y, m, d): (u16, u8, u8)) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

/// `date` plus `years` (29 February becomes 28 February).
fn plus_years((y, m, d): (u16, u8, u8), years: u16) -> (u16, u8, u8) {
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
    vehicle: &Vehicle,
    details: &VehicleDetails,
) -> Result<ObuVehicleInfo, IssueError> {
    let engine: [u8; ObuVehicleInfo::ENGINE_NUMBER_BYTES] =
        gbk_field("发动机号", &details.engine_number)?;
    Ok(ObuVehicleInfo {
        plate: gbk_field::<{ ObuVehicleInfo::PLATE_BYTES }>("车牌号", &vehicle.plate)?,
        plate_colour: PlateColour::from_code(vehicle.plate_colour.code),
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

fn vehicle_view(file: &ObuVehicleInfo) -> VehicleView {
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

/// Reads the OBU on `reader` for `obu.info()`.
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

/// What issuance did on the ESAM.
#[derive(Debug, Clone)]
pub struct EsamOutcome {
    pub system: ObuSystemInfo,
    pub written: Vec<&'static str>,
    pub verified: Vec<&'static str>,
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

fn issue_esam(
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

fn written_label(code: &str) -> &'static str {
    match code {
        "system_info_dates" => "系统信息（签约日期、有效期）",
        "vehicle_info" => "车辆信息",
        "activation_flag" => "激活标志",
        _ => "其他",
    }
}

/// The `obu` module for one run: the run's reader, the daemon's security module and host.
#[derive(Debug)]
pub struct ObuModule {
    daemon: Weak<Daemon>,
    holder: Holder,
    reader_id: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl ObuModule {
    pub fn new(
        daemon: Weak<Daemon>,
        holder: Holder,
        reader_id: Option<String>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ObuModule {
            daemon,
            holder,
            reader_id,
            runtime,
        }
    }

    fn live(&self) -> mlua::Result<Arc<Daemon>> {
        self.daemon
            .upgrade()
            .ok_or_else(|| lua_error("cardd 正在停止"))
    }

    /// Runs `job` on the run's reader with the daemon's security module.
    fn on_esam<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Reader, &dyn SecurityModule) -> Result<R, IssueError> + Send + 'static,
    ) -> mlua::Result<R> {
        let daemon = self.live()?;
        let Some(reader_id) = self.reader_id.clone() else {
            return Err(lua_error("OBU发行需要OBU发行器：启动时请指定 reader_id"));
        };
        let (holder, sam) = (self.holder.clone(), daemon.sam.clone());
        let outcome = self.runtime.block_on(async move {
            let job = move |reader: &mut Reader| job(reader, sam.as_ref());
            daemon.readers.run(&reader_id, &holder, job).await
        });
        match outcome {
            Ok(result) => result.map_err(lua_error),
            Err(e) => Err(lua_error(e.message)),
        }
    }

    /// The vehicle account's data as issuance will write it (`obu.plan`); `given` details are
    /// used only when the account has none.
    fn plan(
        &self,
        plate: &str,
        colour: u16,
        given: Option<VehicleDetails>,
    ) -> Result<(IssuePlan, IssueOrder), IssueError> {
        let daemon = self.daemon.upgrade().ok_or(IssueError::HostUnavailable)?;
        let host = daemon.host.clone().ok_or(IssueError::HostUnavailable)?;
        let vehicle = host
            .vehicle(plate, colour)?
            .ok_or_else(|| IssueError::UnknownVehicle {
                plate: plate.trim().to_owned(),
                colour: plate_colour_zh(colour).to_owned(),
            })?;
        let serial = vehicle
            .obu_contract_serial
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| IssueError::NoContractSerial {
                plate: vehicle.plate.clone(),
            })?;
        let given = given
            .map(|d| cardd_store::validate::vehicle_details(&d))
            .transpose()?;
        let (details, source) = match (&vehicle.details, given) {
            (Some(account), Some(given)) if *account != given => {
                return Err(IssueError::DetailsConflict)
            }
            (Some(account), _) => (account.clone(), "account"),
            (None, Some(given)) => (given, "params"),
            (None, None) => {
                return Err(IssueError::MissingDetails {
                    plate: vehicle.plate.clone(),
                })
            }
        };
        let order = IssueOrder {
            plate: vehicle.plate.clone(),
            plate_colour: vehicle.plate_colour.code,
            contract_serial: serial,
            vehicle_file: vehicle_file(&vehicle, &details)?,
            today: china_today(),
        };
        let plan = IssuePlan {
            obu_number: hex::encode_upper(serial),
            vehicle: vehicle_view(&order.vehicle_file),
            details_source: source.to_owned(),
        };
        Ok((plan, order))
    }

    /// `obu.issue{ plate, plate_colour, details }`.
    fn issue(
        &self,
        plate: &str,
        colour: u16,
        given: Option<VehicleDetails>,
    ) -> mlua::Result<IssueReport> {
        let (plan, order) = self.plan(plate, colour, given).map_err(lua_error)?;
        let job_order = order.clone();
        let outcome = self.on_esam(move |reader, sam| issue_on_reader(reader, sam, &job_order));
        let operator = &self.holder.operator;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(plate = %order.plate, colour = order.plate_colour, operator = %operator, error = %e, "OBU not issued");
                return Err(e);
            }
        };
        tracing::info!(obu = %outcome.system.obu_number(), plate = %order.plate, colour = order.plate_colour, operator = %operator, written = ?outcome.written, "OBU issued and activated");
        Ok(IssueReport {
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
        })
    }
}

/// One function of the module: the run's module and the call's argument.
type Call = fn(&Lua, &ObuModule, Value) -> mlua::Result<Value>;

/// The `{ plate, plate_colour, details }` argument of `obu.plan` and `obu.issue`.
fn order_args(lua: &Lua, args: Value) -> mlua::Result<(String, u16, Option<VehicleDetails>)> {
    let Value::Table(args) = args else {
        return Err(lua_error(
            "expected a table { plate = …, plate_colour = …, details = … }",
        ));
    };
    let plate = str_arg(lua, "plate", args.raw_get("plate")?, ARG_BYTES_MAX)?;
    let colour = match args.raw_get::<Value>("plate_colour")? {
        Value::Integer(code) => {
            u16::try_from(code).map_err(|_| lua_error("plate_colour must be a colour code"))?
        }
        _ => return Err(lua_error("plate_colour must be an integer colour code")),
    };
    let details = match args.raw_get::<Value>("details")? {
        Value::Nil => None,
        value => Some(
            serde_json::from_value::<VehicleDetails>(json_arg(lua, "details", &value)?)
                .map_err(|e| lua_error(format!("details: {e}")))?,
        ),
    };
    Ok((plate, colour, details))
}

fn lua_error(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::RuntimeError(e.to_string())
}

fn to_lua<T: Serialize>(lua: &Lua, value: &T) -> mlua::Result<Value> {
    let json = serde_json::to_value(value).map_err(lua_error)?;
    json_value(lua, &json)
}

impl LuaModule for ObuModule {
    fn name(&self) -> &'static str {
        "obu"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        let me = Arc::new(ObuModule::new(
            self.daemon.clone(),
            self.holder.clone(),
            self.reader_id.clone(),
            self.runtime.clone(),
        ));
        let add = |name: &'static str, call: Call| -> mlua::Result<()> {
            let (me, ctx) = (me.clone(), ctx.clone());
            let function = lua.create_function(move |lua, args: Value| {
                let _call = ctx.enter("obu")?;
                call(lua, &me, args)
            })?;
            table.raw_set(name, function)
        };
        add("info", |lua, me, _| {
            let today = china_today();
            to_lua(
                lua,
                &me.on_esam(move |reader, sam| read_info(reader, sam, today))?,
            )
        })?;
        add("plan", |lua, me, args| {
            let (plate, colour, details) = order_args(lua, args)?;
            let (plan, _) = me.plan(&plate, colour, details).map_err(lua_error)?;
            to_lua(lua, &plan)
        })?;
        add("issue", |lua, me, args| {
            let (plate, colour, details) = order_args(lua, args)?;
            to_lua(lua, &me.issue(&plate, colour, details)?)
        })?;
        install_module(lua, "obu", table)
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
}
