//! The plugin driver's configuration table.
//!
//! One `[[readers]]` entry with `driver = "plugin"` runs one plugin program. Everything that
//! bounds how long cardd waits for it, and how hard it retries, is an option with a unit in its
//! name and a checked range, so that a typo or an absurd value is a startup error rather than a
//! daemon that hangs or spins.
//!
//! ```toml
//! [[readers]]
//! driver = "plugin"
//! [readers.options]
//! name = "acme"                                # reader ids are plugin:acme:<plugin's id>
//! command = "/opt/acme/cardd-plugin"
//! args = ["--port", "COM3"]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cardd_reader::ReaderError;
use serde::{Deserialize, Serialize};

use crate::DRIVER_NAME;

/// Longest plugin instance name (it is part of every reader id).
pub const NAME_CHARS_MAX: usize = 32;
/// Most command-line arguments.
pub const ARGS_MAX: usize = 64;
/// Most extra environment variables.
pub const ENV_VARS_MAX: usize = 64;
/// Allowed range of `restart_backoff_initial_ms`.
pub const RESTART_BACKOFF_INITIAL_MS_RANGE: (u64, u64) = (10, 60_000);
/// Upper bound of `restart_backoff_max_ms`.
pub const RESTART_BACKOFF_MAX_MS_LIMIT: u64 = 600_000;
/// Allowed range of `hello_timeout_ms` and `request_timeout_ms`.
pub const TIMEOUT_MS_RANGE: (u64, u64) = (50, 120_000);
/// Allowed range of `request_timeout_grace_ms`.
pub const GRACE_MS_RANGE: (u64, u64) = (10, 10_000);
/// Allowed range of `ping_interval_ms` when not 0 (0 turns liveness pings off).
pub const PING_INTERVAL_MS_RANGE: (u64, u64) = (100, 3_600_000);

fn default_backoff_initial_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_hello_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_grace_ms() -> u64 {
    500
}
fn default_ping_interval_ms() -> u64 {
    10_000
}

/// `[readers.options]` of a `plugin` reader entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOptions {
    /// This plugin instance's name: reader ids are `plugin:<name>:<plugin's reader id>`.
    /// 1 to 32 characters from `A-Z a-z 0-9 _ . -`.
    pub name: String,
    /// The program to run (an absolute path is best; a bare name is looked up in `PATH`).
    pub command: PathBuf,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for it (for example where the vendor SDK lives).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wait before the first restart after a crash or hang; doubled after each further failure.
    #[serde(default = "default_backoff_initial_ms")]
    pub restart_backoff_initial_ms: u64,
    /// The longest wait between restarts.
    #[serde(default = "default_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
    /// How long the plugin has to answer `hello` after it is started.
    #[serde(default = "default_hello_timeout_ms")]
    pub hello_timeout_ms: u64,
    /// Timeout of requests that have none of their own (list, open, power, presence, ping);
    /// `transmit` uses the reader's APDU timeout.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long past a request's timeout cardd still waits for the answer before it declares
    /// the plugin hung, kills and restarts it.
    #[serde(default = "default_grace_ms")]
    pub request_timeout_grace_ms: u64,
    /// Liveness ping after this much idle time; 0 turns pings off.
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
}

impl PluginOptions {
    /// Options with defaults for everything but the name and the command.
    pub fn new(name: impl Into<String>, command: impl Into<PathBuf>) -> Self {
        PluginOptions {
            name: name.into(),
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            restart_backoff_initial_ms: default_backoff_initial_ms(),
            restart_backoff_max_ms: default_backoff_max_ms(),
            hello_timeout_ms: default_hello_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            request_timeout_grace_ms: default_grace_ms(),
            ping_interval_ms: default_ping_interval_ms(),
        }
    }

    /// Checks every option; the error names the option and the allowed values.
    pub fn validate(&self) -> Result<(), ReaderError> {
        let name_ok = !self.name.is_empty()
            && self.name.chars().count() <= NAME_CHARS_MAX
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(config_error(format!(
                "name {:?}: use 1 to {NAME_CHARS_MAX} characters from A-Z a-z 0-9 _ . -",
                self.name
            )));
        }
        if self.command.as_os_str().is_empty() {
            return Err(config_error("command is empty".into()));
        }
        if self.args.len() > ARGS_MAX {
            return Err(config_error(format!("at most {ARGS_MAX} args")));
        }
        if self.env.len() > ENV_VARS_MAX {
            return Err(config_error(format!(
                "at most {ENV_VARS_MAX} env variables"
            )));
        }
        if let Some(bad) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(config_error(format!(
                "env variable name {bad:?} is invalid"
            )));
        }
        check_range(
            "restart_backoff_initial_ms",
            self.restart_backoff_initial_ms,
            RESTART_BACKOFF_INITIAL_MS_RANGE,
        )?;
        check_range(
            "restart_backoff_max_ms",
            self.restart_backoff_max_ms,
            (
                self.restart_backoff_initial_ms,
                RESTART_BACKOFF_MAX_MS_LIMIT,
            ),
        )?;
        check_range("hello_timeout_ms", self.hello_timeout_ms, TIMEOUT_MS_RANGE)?;
        check_range(
            "request_timeout_ms",
            self.request_timeout_ms,
            TIMEOUT_MS_RANGE,
        )?;
        check_range(
            "request_timeout_grace_ms",
            self.request_timeout_grace_ms,
            GRACE_MS_RANGE,
        )?;
        if self.ping_interval_ms != 0 {
            check_range(
                "ping_interval_ms",
                self.ping_interval_ms,
                PING_INTERVAL_MS_RANGE,
            )?;
        }
        Ok(())
    }

    pub(crate) fn grace(&self) -> Duration {
        Duration::from_millis(self.request_timeout_grace_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The wait before restart number `failures` (1 = first restart after a failure).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let ms = self
            .restart_backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.restart_backoff_max_ms);
        Duration::from_millis(ms)
    }
}

fn check_range(option: &str, value: u64, (low, high): (u64, u64)) -> Result<(), ReaderError> {
    if value < low || value > high {
        return Err(config_error(format!(
            "{option} = {value} is outside {low}..={high}"
        )));
    }
    Ok(())
}

pub(crate) fn config_error(detail: String) -> ReaderError {
    ReaderError::Config {
        driver: DRIVER_NAME.to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_option() {
        let ok = PluginOptions::new("acme", "/bin/true");
        ok.validate().unwrap();
        let bad_name = PluginOptions::new("ac:me", "/bin/true");
        assert!(bad_name
            .validate()
            .unwrap_err()
            .to_string()
            .contains("name"));
        let mut backoff = ok.clone();
        backoff.restart_backoff_max_ms = 1;
        let err = backoff.validate().unwrap_err().to_string();
        assert!(err.contains("restart_backoff_max_ms"), "{err}");
        let mut grace = ok.clone();
        grace.request_timeout_grace_ms = 0;
        assert!(grace
            .validate()
            .unwrap_err()
            .to_string()
            .contains("request_timeout_grace_ms"));
        let mut ping = ok;
        ping.ping_interval_ms = 0;
        ping.validate().unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut o = PluginOptions::new("a", "x");
        o.restart_backoff_initial_ms = 100;
        o.restart_backoff_max_ms = 1_000;
        let waits: Vec<u64> = (1..=6).map(|n| o.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(o.backoff(u32::MAX).as_millis(), 1_000);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let value = serde_json::json!({"name": "a", "command": "x", "comand": "y"});
        let err = serde_json::from_value::<PluginOptions>(value).unwrap_err();
        assert!(err.to_string().contains("unknown field `comand`"), "{err}");
    }
}
