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
    /// For a reader served by a vendor plugin (driver `plugin`): the plugin's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginStatus>,
}

/// Where a reader plugin (a supervised driver program) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    /// Started; its handshake is not complete yet.
    Starting,
    /// Up; its readers are listed.
    Running,
    /// Lost (crashed, hung, failed to start); waiting `backoff_ms` before the next start.
    Backoff,
    /// Cannot start for a reason only a person can fix (see `last_error`: a missing program, a
    /// protocol version mismatch); still retried every `backoff_ms`.
    Failed,
    /// Shut down with the daemon.
    Stopped,
}

/// The health of one configured reader plugin (`[[readers]]` with `driver = "plugin"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginStatus {
    /// The configured instance name: readers are `plugin:<instance>:<id>`.
    pub instance: String,
    pub state: PluginState,
    /// Starts after the first one (crashes, hangs, failed starts, restarts asked for).
    pub restarts: u64,
    /// The wait before the next start while `backoff` or `failed`, else 0.
    pub backoff_ms: u64,
    /// Lines the plugin sent that were not valid protocol messages.
    pub malformed_lines: u64,
    /// Why the plugin last stopped or failed to start, and what to do (English, for the log).
    pub last_error: Option<String>,
    /// The plugin's own name and version from its handshake.
    pub name: Option<String>,
    pub version: Option<String>,
    /// Optional protocol features the plugin declared.
    pub features: Vec<String>,
    /// Readers the plugin lists now.
    pub readers: u64,
}

/// `readers.restart_plugin`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPluginParams {
    /// The plugin's instance name (`name` in its `[[readers]]` options).
    pub instance: String,
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
    /// The configured reader plugins with their health, including plugins with no reader now.
    Plugins, "readers.plugins", NoParams => Vec<PluginStatus>
);
crate::method!(
    /// Kill a reader plugin and start it again at once, skipping its backoff (administrators; audited).
    RestartPlugin, "readers.restart_plugin", RestartPluginParams => PluginStatus
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
