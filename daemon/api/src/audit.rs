//! `audit.*`: the hash-chained audit log.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::method::NoParams;
use crate::Role;

/// `audit.list`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditListParams {
    /// Return records after this sequence number (oldest first).
    pub after_seq: Option<u64>,
    /// At most this many records (default 100, at most 500).
    pub limit: Option<usize>,
}

/// One record of the log: what was done, by whom, plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, RFC 3339 in UTC.
    pub at: String,
    /// The operator's user name, if the action was done in a session.
    pub operator: Option<String>,
    /// The operator's role at the time.
    pub role: Option<Role>,
    /// What was done, e.g. the JSON-RPC method (`auth.login`, `card.load`).
    pub action: String,
    /// What it was done to: a user name, a reader id, a card number.
    pub target: Option<String>,
    /// Parameters and results worth keeping (never passwords or keys).
    pub detail: Value,
    /// How it ended, e.g. `ok` or an error code name.
    pub outcome: String,
    /// The previous record's `hash` (64 zeros for seq 1).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and this record's canonical JSON without `hash`.
    pub hash: String,
}

/// What `audit.verify` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerifyResult {
    pub records: u64,
    pub chain_ok: bool,
}

crate::method!(
    /// Audit records, oldest first, after a sequence number.
    List, "audit.list", AuditListParams => Vec<AuditRecord>
);
crate::method!(
    /// Verify the audit log's hash chain.
    Verify, "audit.verify", NoParams => AuditVerifyResult
);
