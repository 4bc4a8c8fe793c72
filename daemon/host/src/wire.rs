//! The host's two load methods on the wire: JSON-RPC 2.0 requests `host.authorize` and
//! `host.confirm`, whose params and results are `cardd_authority`'s messages, and refusals of the
//! security module carried as error data so that the site sees the same refusal the host's
//! keys gave.

use cardd_purse::SamError;
use serde::{Deserialize, Serialize};

/// Step 1 of a load.
pub const AUTHORIZE: &str = "host.authorize";
/// Step 2 of a load.
pub const CONFIRM: &str = "host.confirm";

/// The JSON-RPC code of a refusal by the host's security module.
pub const CODE_REFUSED: i64 = -32120;
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    NotFunded { reason: String },
    NotAuthorized { card: String },
    Mac1Invalid,
    TacInvalid,
    Other { message: String },
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
            Refusal::Other { message } => SamError::LoadNotFunded { reason: message },
        }
    }
}
