//! `system.*` and `rpc.*`: what the daemon is and what it offers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::NoParams;
use crate::vocab::Vocabulary;

/// What `system.version` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub api_version: String,
}

crate::method!(
    /// The daemon's name and version.
    VersionInfo, "system.version", NoParams => Version
);
crate::method!(
    /// Every code clients show with its zh-CN label.
    GetVocabulary, "system.vocabulary", NoParams => Vocabulary
);
crate::method!(
    /// This API's OpenRPC document.
    Discover, "rpc.discover", NoParams => serde_json::Value
);
