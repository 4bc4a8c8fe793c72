//! The host's methods on the wire, JSON-RPC 2.0 over `POST /`:
//! * the load methods, `host.authorize`, `host.confirm` and `host.open_loads`, whose params
//!   and results are
//!   `cardd_authority`'s messages; refusals of the host's security module are carried as error
//!   data ([`Refusal`]) so that the site sees the same refusal the host's keys gave;
//! * the record methods `records.*` ([`RecordCall`]), one per method of
//!   `cardd_etc::IssuerHost`, whose refusals carry the record store's code and zh-CN message
//!   ([`Refusal::Record`]) so that the teller reads what the host said;
//! * the group methods `groups.*` ([`GroupCall`]), one per method of `cardd_group::GroupHost`,
//!   whose refusals carry the group store's code and zh-CN message the same way;
//! * the operator methods `operators.verify` ([`VerifyParams`] → `cardd_api::operators::Operator`:
//!   the host checks the password, no hash ever leaves it) and `operators.status`
//!   ([`StatusParams`] → [`StatusAnswer`]), whose refusals carry the API code and zh-CN message
//!   under [`CODE_OPERATORS`].

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
/// The JSON-RPC code of a refusal or failure of the host's group store.
pub const CODE_GROUPS: i64 = -32122;
/// The group methods' names share this prefix.
pub const GROUPS_PREFIX: &str = "groups.";
/// The JSON-RPC code of a refusal or failure of the host's operator store.
pub const CODE_OPERATORS: i64 = -32123;
/// Checks an operator's password at the host (params [`VerifyParams`], result
/// `cardd_api::operators::Operator`).
pub const OPERATORS_VERIFY: &str = "operators.verify";
/// Which of the named operators are disabled or gone (params [`StatusParams`], result
/// [`StatusAnswer`]).
pub const OPERATORS_STATUS: &str = "operators.status";
/// Most user names one [`OPERATORS_STATUS`] call names.
pub const STATUS_USERNAMES_MAX: usize = 1024;

/// The params of [`OPERATORS_VERIFY`]. `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for VerifyParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyParams")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The params of [`OPERATORS_STATUS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    pub usernames: Vec<String>,
}

/// The answer of [`OPERATORS_STATUS`]: of the names asked about, the disabled ones and the
/// ones the host does not know (removed); the others are enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub disabled: Vec<String>,
    pub gone: Vec<String>,
}

/// A site's report (params [`SiteReport`], result `{}`): it is alive, and this much waits in
/// its outbox. Sent every few seconds; the back office shows it.
pub const SITES_REPORT: &str = "sites.report";
/// The JSON-RPC code of a refusal or failure of the host's site directory.
pub const CODE_SITES: i64 = -32124;

/// The params of [`SITES_REPORT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteReport {
    /// Changes waiting in the site's outbox for the host.
    pub outbox_pending: u64,
}

/// The JSON-RPC code of a request of a site the host no longer admits (disabled, re-issued or
/// removed since its connection opened, or the directory could not be read). A site's client
/// takes it as it takes a connection refused at the handshake: the host cannot be used
/// (`CallError::Unreachable`, with the host's reason).
pub const CODE_SITE_REFUSED: i64 = -32125;

/// The JSON-RPC code of a request the host could not read.
pub const CODE_BAD_REQUEST: i64 = -32600;
/// The JSON-RPC code of an unknown method.
pub const CODE_NO_METHOD: i64 = -32601;

/// Largest request body, in bytes (the load messages are a few hundred bytes; a batch of
/// `cardd_group::model::BATCH_ITEMS_MAX` cards is the largest request, about 20 KiB).
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// Largest answer body a site reads, in bytes: a query answers at most
/// `cardd_group::model::QUERY_ROWS_MAX` orders of well under a kilobyte each.
pub const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;

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
    /// The record store (or, under [`CODE_GROUPS`], the group store) refused or failed: its
    /// API code (`cardd_api::ErrorCode` number), whether the request itself was wrong, and the
    /// message a teller reads.
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

/// A call enum (`{"method": …, "params": …}`) as a JSON-RPC method name with `prefix`, and its
/// params.
fn split_call<C: Serialize>(call: &C, prefix: &str) -> (String, serde_json::Value) {
    let mut v = serde_json::to_value(call).unwrap_or_default();
    let method = v
        .get("method")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_owned();
    let params = v
        .get_mut("params")
        .map(serde_json::Value::take)
        .unwrap_or_else(|| serde_json::json!({}));
    (format!("{prefix}{method}"), params)
}

/// The call named `method` (with `prefix`) with `params`.
fn join_call<C: serde::de::DeserializeOwned>(
    method: &str,
    prefix: &str,
    params: serde_json::Value,
) -> Result<C, serde_json::Error> {
    let name = method.strip_prefix(prefix).unwrap_or(method);
    serde_json::from_value(serde_json::json!({ "method": name, "params": params }))
}

impl RecordCall {
    /// The JSON-RPC method name and params of this call.
    pub fn split(&self) -> (String, serde_json::Value) {
        split_call(self, RECORDS_PREFIX)
    }

    /// The call named `method` (with [`RECORDS_PREFIX`]) with `params`.
    pub fn join(method: &str, params: serde_json::Value) -> Result<RecordCall, serde_json::Error> {
        join_call(method, RECORDS_PREFIX, params)
    }
}

/// The group methods: `cardd_group::GroupHost` on the wire, one variant per trait method (the
/// method is `groups.<snake name>`, the params the variant's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum GroupCall {
    Group {
        group_id: String,
    },
    Groups {},
    UpsertGroup {
        input: cardd_group::model::GroupInput,
    },
    Ledger {
        group_id: String,
        after_seq: u64,
        limit: usize,
    },
    Reserve {
        request: cardd_group::model::ReserveRequest,
    },
    MarkPending {
        order_id: String,
        operator: String,
        reason: String,
    },
    Settle {
        order_id: String,
        operator: String,
        balance_before_fen: i64,
        balance_after_fen: i64,
    },
    Fail {
        order_id: String,
        operator: String,
        reason: String,
    },
    Refund {
        order_id: String,
        auditor: String,
        reason: String,
    },
    ResolveSucceeded {
        order_id: String,
        auditor: String,
        reason: String,
        balances_fen: Option<(i64, i64)>,
    },
    Order {
        order_id: String,
    },
    Orders {
        group_id: String,
        period: cardd_group::model::Period,
    },
    OrdersIn {
        status: cardd_group::model::OrderStatus,
    },
    CreateTopup {
        group_id: String,
        operator: String,
        amount_fen: i64,
        remark: String,
    },
    RecordPayment {
        topup_id: String,
        outcome: cardd_group::model::PaymentOutcome,
    },
    AuditTopup {
        topup_id: String,
        auditor: String,
        approve: bool,
        reason: String,
    },
    Topup {
        topup_id: String,
    },
    Topups {
        group_id: String,
        period: cardd_group::model::Period,
    },
    TopupsIn {
        status: cardd_group::model::TopUpStatus,
    },
    CreateBatch {
        group_id: String,
        operator: String,
        items: Vec<cardd_group::model::BatchItemInput>,
    },
    Batch {
        batch_id: String,
    },
}

impl GroupCall {
    /// The JSON-RPC method name and params of this call.
    pub fn split(&self) -> (String, serde_json::Value) {
        split_call(self, GROUPS_PREFIX)
    }

    /// The call named `method` (with [`GROUPS_PREFIX`]) with `params`.
    pub fn join(method: &str, params: serde_json::Value) -> Result<GroupCall, serde_json::Error> {
        join_call(method, GROUPS_PREFIX, params)
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
