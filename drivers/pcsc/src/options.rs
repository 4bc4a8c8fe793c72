//! The `pcsc` driver's configuration table, parsed strictly (`deny_unknown_fields`) and
//! validated once, so a typo is an error at start rather than a silently different reader.
//!
//! ```toml
//! [[readers]]
//! driver = "pcsc"
//! [readers.options]
//! readers = ["ACS ACR39U", "Virtual PCD 00 00"]  # name filters (substring); absent = all readers
//! share_mode = "shared"                          # shared (default) | exclusive
//! protocols = ["t0", "t1"]                       # protocols offered at connect (default both)
//! connect_timeout_ms = 5000                      # bound on connect / power-up / reset
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default bound on connecting to a card (power-up and ATR), reconnecting and disconnecting.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Largest `connect_timeout_ms` accepted.
pub const CONNECT_TIMEOUT_MS_MAX: u64 = 60_000;
/// Most name filters in `readers`.
pub const READER_FILTERS_MAX: usize = 64;
/// Longest name filter, in bytes.
pub const READER_FILTER_BYTES_MAX: usize = 256;

/// How cardd shares a card with other PC/SC applications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareMode {
    /// Other applications may connect to the card too; use `ExclusiveAccess` (a PC/SC
    /// transaction) to keep them out for the length of a flow.
    #[default]
    Shared,
    /// No other application may connect while cardd holds the card.
    Exclusive,
}

impl ShareMode {
    pub(crate) fn to_pcsc(self) -> pcsc::ShareMode {
        match self {
            ShareMode::Shared => pcsc::ShareMode::Shared,
            ShareMode::Exclusive => pcsc::ShareMode::Exclusive,
        }
    }
}

/// A transmission protocol cardd offers when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolOption {
    T0,
    T1,
}

/// The driver's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcscOptions {
    /// Serve only readers whose name contains one of these texts; empty means every reader.
    #[serde(default)]
    pub readers: Vec<String>,
    #[serde(default)]
    pub share_mode: ShareMode,
    /// Protocols offered at connect; the card and reader pick one of them.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<ProtocolOption>,
    /// Bound on connecting (power-up and ATR), reconnecting and disconnecting, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_protocols() -> Vec<ProtocolOption> {
    vec![ProtocolOption::T0, ProtocolOption::T1]
}

fn default_connect_timeout_ms() -> u64 {
    CONNECT_TIMEOUT_MS_DEFAULT
}

impl Default for PcscOptions {
    fn default() -> Self {
        PcscOptions {
            readers: Vec::new(),
            share_mode: ShareMode::default(),
            protocols: default_protocols(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl PcscOptions {
    /// Checks the values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.protocols.is_empty() {
            return Err("protocols must name at least one of \"t0\", \"t1\"".into());
        }
        if !(1..=CONNECT_TIMEOUT_MS_MAX).contains(&self.connect_timeout_ms) {
            return Err(format!(
                "connect_timeout_ms must be between 1 and {CONNECT_TIMEOUT_MS_MAX}"
            ));
        }
        if self.readers.len() > READER_FILTERS_MAX {
            return Err(format!(
                "readers lists {} filters; at most {READER_FILTERS_MAX}",
                self.readers.len()
            ));
        }
        for filter in &self.readers {
            if filter.is_empty() || filter.len() > READER_FILTER_BYTES_MAX || filter.contains('\0')
            {
                return Err(format!(
                    "readers entry {filter:?} must be 1 to {READER_FILTER_BYTES_MAX} bytes without NUL"
                ));
            }
        }
        Ok(())
    }

    /// Whether this configuration serves the reader called `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.readers.is_empty() || self.readers.iter().any(|f| name.contains(f.as_str()))
    }

    pub(crate) fn pcsc_protocols(&self) -> pcsc::Protocols {
        self.protocols
            .iter()
            .fold(pcsc::Protocols::empty(), |acc, p| match p {
                ProtocolOption::T0 => acc | pcsc::Protocols::T0,
                ProtocolOption::T1 => acc | pcsc::Protocols::T1,
            })
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_every_reader_shared_with_both_protocols() {
        let o: PcscOptions = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(o, PcscOptions::default());
        assert!(o.validate().is_ok());
        assert!(o.serves("anything"));
        assert_eq!(
            o.pcsc_protocols(),
            pcsc::Protocols::T0 | pcsc::Protocols::T1
        );
    }

    #[test]
    fn filters_match_substrings_and_bad_values_are_refused() {
        let o: PcscOptions = serde_json::from_value(serde_json::json!({
            "readers": ["Virtual PCD"], "share_mode": "exclusive", "protocols": ["t1"]
        }))
        .unwrap();
        assert!(o.serves("Virtual PCD 00 00"));
        assert!(!o.serves("ACS ACR39U 00 00"));
        assert_eq!(o.share_mode.to_pcsc(), pcsc::ShareMode::Exclusive);
        let typo = serde_json::from_value::<PcscOptions>(serde_json::json!({"reader": []}));
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        let none = PcscOptions {
            protocols: vec![],
            ..PcscOptions::default()
        };
        assert!(none.validate().unwrap_err().contains("protocols"));
        let zero = PcscOptions {
            connect_timeout_ms: 0,
            ..PcscOptions::default()
        };
        assert!(zero.validate().unwrap_err().contains("connect_timeout_ms"));
        let empty = PcscOptions {
            readers: vec![String::new()],
            ..PcscOptions::default()
        };
        assert!(empty.validate().is_err());
    }
}
