//! OBU issuance as flows see it: what `obu.info()`, `obu.plan{…}` and `obu.issue{…}` return
//! to a flow (and so what a run's result may hold). The operation itself is `cardd-obu`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an OBU's vehicle information file holds besides plate, plate colour and vehicle
/// class: the vehicle account's details, one type.
pub use crate::etc::VehicleDetails;

/// A vehicle information file as flows see it, decoded, with zh-CN labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObuVehicleView {
    #[serde(flatten)]
    pub vehicle: VehicleView,
    /// No plate written yet.
    pub blank: bool,
}

/// What `obu.info()` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// What issuance will write, from the vehicle account (what `obu.plan` returns and the
/// confirmation shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
