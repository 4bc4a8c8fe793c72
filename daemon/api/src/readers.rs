//! `readers.*`: the card readers, and leases on them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::{Done, NoParams};

/// A reader id.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReaderParams {
    pub reader_id: String,
}

/// `readers.lease`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseParams {
    pub reader_id: String,
    /// How long to hold the reader (default `limits.lease_ms_default`, at most `limits.lease_ms_max`).
    pub duration_ms: Option<u64>,
    /// What the reader is held for, shown to others who find it busy.
    pub purpose: Option<String>,
}

/// `readers.renew`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewParams {
    pub lease_id: String,
    pub duration_ms: Option<u64>,
}

/// `readers.release`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseParams {
    pub lease_id: String,
}

/// A lease as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeaseInfo {
    pub lease_id: String,
    pub reader_id: String,
    /// The operator holding the reader.
    pub holder: String,
    pub purpose: String,
    /// Milliseconds until the lease ends unless renewed.
    pub expires_in_ms: u64,
}

/// A reader as `readers.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReaderStatus {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub capabilities: CapabilitiesView,
    pub card_present: bool,
    /// Hex ATR of the card, when known.
    pub atr: Option<String>,
    pub lease: Option<LeaseInfo>,
}

/// A reader's capabilities for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CapabilitiesView {
    pub contact: bool,
    pub contactless: bool,
    pub psam_slots: u8,
    pub obu_channel: bool,
    pub events: bool,
    pub exclusive: bool,
}

crate::method!(
    /// Readers with driver, capabilities, card presence and lease.
    List, "readers.list", NoParams => Vec<ReaderStatus>
);
crate::method!(
    /// Hold a reader for a flow, for a bounded time; others find it busy.
    Lease, "readers.lease", LeaseParams => LeaseInfo
);
crate::method!(
    /// Extend a lease you hold.
    Renew, "readers.renew", RenewParams => LeaseInfo
);
crate::method!(
    /// Release a lease you hold.
    Release, "readers.release", ReleaseParams => Done
);
