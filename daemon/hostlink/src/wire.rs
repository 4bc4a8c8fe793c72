//! The host's methods on the wire, JSON-RPC 2.0 over `POST /`:
//! * the load methods, `host.authorize`, `host.confirm` and `host.open_loads`, whose params
//!   and results are
//!   `cardd_authority`'s messages; refusals of the host's security module are carried as error
//!   data ([`Refusal`]) so that the site sees the same refusal the host's keys gave;
//! * the record methods `records.*` ([`RecordCall`]), one per method of
//!   `cardd_etc::IssuerHost`, whose refusals carry the record store's code and zh-CN message
//!   ([`Refusal::Record`]) so that the teller reads what the host said.

use cardd_purse::SamError;
use serde::{Deserialize, Serialize};

/// Step 1 of a load.
pub const AUTHORIZE: &str = "host.authorize";
/// Step 2 of a load.
pub const CONFIRM: &str = "host.confirm";
/// A card's loads authorised at any site whose outcome is unknown (params
/// [`OpenLoadsParams`], result `Vec<cardd_authority::OpenLoad>`).
pub const OPEN_LOADS: &str = "host.open_loads";

/// The params of [`OPEN_LOADS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLoadsParams {
    pub card_number: String,
}

/// The JSON-RPC code of a refusal by the host's security module.
pub const CODE_REFUSED: i64 = -32120;
/// The JSON-RPC code of a refusal or failure of the host's record store.
pub const CODE_RECORDS: i64 = -32121;
/// The record methods' names share this prefix.
pub const RECORDS_PREFIX: &str = "records.";
/// The JSON-RPC code of a request the host could not read.
pub const CODE_BAD_REQUEST: i64 = -32600;
/// The JSON-RPC code of an unknown method.
pub const CODE_NO_METHOD: i64 = -32601;

/// Largest request or response body, in bytes (the messages are a few hundred bytes).
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request<P> {
    pub jsonrpc: String,
    pub id: u64,
    pub method: String,
    pub params: P,
}

/// An error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Refusal>,
}

/// A response: a result or an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response<R> {
    pub jsonrpc: String,
    pub id: u64,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A refusal of the host's security module, as data a site turns back into a [`SamError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    NotFunded {
        reason: String,
    },
    NotAuthorized {
        card: String,
    },
    Mac1Invalid,
    TacInvalid,
    Other {
        message: String,
    },
    /// The record store refused or failed: its API code (`cardd_api::ErrorCode` number),
    /// whether the request itself was wrong, and the message a teller reads.
    Record {
        code: i32,
        refusal: bool,
        message: String,
    },
}

impl From<&SamError> for Refusal {
    fn from(e: &SamError) -> Self {
        match e {
            SamError::LoadNotFunded { reason } => Refusal::NotFunded {
                reason: reason.clone(),
            },
            SamError::LoadNotAuthorized { card } => Refusal::NotAuthorized { card: card.clone() },
            SamError::Mac1Invalid => Refusal::Mac1Invalid,
            SamError::TacInvalid => Refusal::TacInvalid,
            other => Refusal::Other {
                message: other.to_string(),
            },
        }
    }
}

impl From<Refusal> for SamError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFunded { reason } => SamError::LoadNotFunded { reason },
            Refusal::NotAuthorized { card } => SamError::LoadNotAuthorized { card },
            Refusal::Mac1Invalid => SamError::Mac1Invalid,
            Refusal::TacInvalid => SamError::TacInvalid,
            Refusal::Other { message } | Refusal::Record { message, .. } => {
                SamError::LoadNotFunded { reason: message }
            }
        }
    }
}

/// The record methods: `cardd_etc::IssuerHost` on the wire, one variant per trait method (the
/// method is `records.<snake name>`, the params the variant's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum RecordCall {
    Vehicle {
        plate: String,
        colour: u16,
    },
    VehiclesForCard {
        card_number: String,
    },
    UpsertVehicle {
        vehicle: cardd_etc::VehicleInput,
        operator: String,
    },
    Recharge {
        plate: String,
        colour: u16,
        amount_fen: i64,
        operator: String,
        channel: String,
    },
    QueryRecords {
        query: cardd_etc::RecordQuery,
    },
    RecordsForCard {
        card_number: String,
        status: Option<cardd_etc::RecordStatus>,
    },
    Record {
        record_id: String,
    },
    RecordForTxn {
        txn_id: String,
    },
    OpenRecords {},
    ChangeRecord {
        record_id: String,
        change: WireChange,
    },
}

impl RecordCall {
    /// The JSON-RPC method name and params of this call.
    pub fn split(&self) -> (String, serde_json::Value) {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let method = v
            .get("method")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        let params = v
            .get_mut("params")
            .map(serde_json::Value::take)
            .unwrap_or_else(|| serde_json::json!({}));
        (format!("{RECORDS_PREFIX}{method}"), params)
    }

    /// The call named `method` (with [`RECORDS_PREFIX`]) with `params`.
    pub fn join(method: &str, params: serde_json::Value) -> Result<RecordCall, serde_json::Error> {
        let name = method.strip_prefix(RECORDS_PREFIX).unwrap_or(method);
        serde_json::from_value(serde_json::json!({ "method": name, "params": params }))
    }
}

/// A record change on the wire (`cardd_etc::change::ChangeRequest`, whose fields the host
/// checks again before applying it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireChange {
    pub action: cardd_etc::RecordAction,
    pub operator: String,
    pub reason: Option<String>,
    pub txn_id: Option<String>,
    pub balances: Option<(i64, i64)>,
    pub loaded: bool,
}

impl From<&cardd_etc::change::ChangeRequest> for WireChange {
    fn from(c: &cardd_etc::change::ChangeRequest) -> Self {
        WireChange {
            action: c.action,
            operator: c.operator.clone(),
            reason: c.reason.clone(),
            txn_id: c.txn_id.clone(),
            balances: c.balances,
            loaded: c.loaded,
        }
    }
}

impl WireChange {
    /// The change, checked as the trait's named forms check it.
    pub fn checked(&self) -> Result<cardd_etc::change::ChangeRequest, cardd_etc::HostError> {
        use cardd_etc::change::ChangeRequest;
        use cardd_etc::RecordAction as A;
        match self.action {
            A::BeginLoad => ChangeRequest::begin_load(
                &self.operator,
                self.txn_id.as_deref().unwrap_or_default(),
            ),
            A::FinishLoad => {
                let (before, after) = self.balances.unwrap_or((-1, -1));
                ChangeRequest::finish_load(&self.operator, before, after)
            }
            A::Recharge => Err(cardd_etc::HostError::InvalidField {
                field: "操作",
                reason: "充值不是状态修改".into(),
            }),
            action => {
                let request = ChangeRequest::with_reason(
                    action,
                    &self.operator,
                    self.reason.as_deref().unwrap_or_default(),
                    self.loaded,
                )?;
                match &self.txn_id {
                    Some(txn_id) => request.for_load(txn_id),
                    None => Ok(request),
                }
            }
        }
    }
}
