//! `cardd-host.toml`: what the issuer host listens on, its database, its TLS files and its
//! keys. Unknown keys are refused, every path is checked when the host starts, and a key file
//! readable by others is refused.
//!
//! ```toml
//! listen = "0.0.0.0:7443"          # the address the sites reach
//! database_url = "postgres://cardd@127.0.0.1:5432/cardd"
//!
//! [tls]
//! ca_cert = "/etc/cardd/tls/ca.crt"     # the fleet CA (sites' certificates are checked against it)
//! cert = "/etc/cardd/tls/host.crt"      # from `cardd-fleet ca issue-host`
//! key = "/etc/cardd/tls/host.key"
//!
//! [keys]
//! source = "file"                  # or "demo": the public demo keys, simulated cards only
//! file = "/etc/cardd/host-keys.toml"
//!
//! [backoffice]
//! listen = "127.0.0.1:7480"        # the back office's web pages (loopback only)
//! review_wait_min = 30             # 待核对: minutes an open load waits for its card first
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The host's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The address the sites connect to (HTTPS, mutual TLS).
    pub listen: SocketAddr,
    /// The PostgreSQL database (`postgres://user:password@host:port/database`).
    pub database_url: String,
    pub tls: TlsSection,
    pub keys: KeysSection,
    /// `[backoffice]`: the back office's web pages (absent: not served).
    #[serde(default)]
    pub backoffice: Option<BackOfficeSection>,
}

/// `[backoffice]`: where the back office's web pages (后台) are served: plain HTTP on a loopback
/// address, with the site console's Host, Origin and Content-Security-Policy discipline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackOfficeSection {
    pub listen: SocketAddr,
    /// 待核对: how long an open load waits for its card before people may decide it, in
    /// minutes (`cardd_store_pg::review::REVIEW_WAIT_MIN` when absent; at most a week).
    #[serde(default)]
    pub review_wait_min: Option<u64>,
}

/// Longest `backoffice.review_wait_min`, in minutes (a week).
pub const REVIEW_WAIT_MIN_MAX: u64 = 7 * 24 * 60;

/// `[tls]`: the host's certificate and the fleet CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[keys]`: the issuer's master keys (the only place a fleet keeps them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    pub source: KeySource,
    pub file: Option<PathBuf>,
}

/// Where the keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The public demo keys of the simulated cards.
    Demo,
    /// A TOML file of master keys (the daemon's key file format, docs/keys.md).
    File,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("keys.source = \"file\" needs keys.file: the path of the issuer's key file")]
    NoKeyFile,
    #[error("the key file {0} is readable by other users: `chmod 600` it (and own it by the host's user)")]
    KeyFileOpen(PathBuf),
    #[error("backoffice.listen = {0}: the back office is served on a loopback address only (127.0.0.1 or [::1]); reach it from other machines through an SSH tunnel")]
    BackOfficeNotLoopback(SocketAddr),
    #[error("the key file {path} is not usable: {message}")]
    Keys { path: PathBuf, message: String },
}

impl HostConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: HostConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        if config.keys.source == KeySource::File && config.keys.file.is_none() {
            return Err(ConfigError::NoKeyFile);
        }
        if let Some(b) = &config.backoffice {
            if !b.listen.ip().is_loopback() {
                return Err(ConfigError::BackOfficeNotLoopback(b.listen));
            }
            if b.review_wait_min.is_some_and(|m| m > REVIEW_WAIT_MIN_MAX) {
                return Err(ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!(
                        "backoffice.review_wait_min is at most {REVIEW_WAIT_MIN_MAX} minutes (a week)"
                    ),
                });
            }
        }
        Ok(config)
    }

    /// The security module of the configured keys.
    pub fn security_module(&self) -> Result<cardd_purse::SoftSam, ConfigError> {
        let sam_config = match (self.keys.source, &self.keys.file) {
            (KeySource::Demo, _) => cardd_purse::SamConfig::demo(),
            (KeySource::File, None) => return Err(ConfigError::NoKeyFile),
            (KeySource::File, Some(path)) => {
                refuse_open_key_file(path)?;
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Keys {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Keys {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?
            }
        };
        cardd_purse::SoftSam::new(&sam_config).map_err(|e| ConfigError::Keys {
            path: self.keys.file.clone().unwrap_or_default(),
            message: e.to_string(),
        })
    }

    /// The TLS files.
    pub fn tls_files(&self) -> cardd_fleet::TlsFiles {
        cardd_fleet::TlsFiles {
            ca_cert: self.tls.ca_cert.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        }
    }
}

#[cfg(unix)]
fn refuse_open_key_file(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::Keys {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ConfigError::KeyFileOpen(path.to_owned()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_open_key_file(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}
