//! `cardd support-bundle OUT.tar.gz`: what support needs to look at an install, in one file,
//! without anything that could move money or identify a customer.
//!
//! The bundle (a gzip tar with one directory, `cardd-support/`) holds `version.txt`,
//! `config.toml` (secrets removed: [`redact_config`]), `readers.json`, `logs.txt`,
//! `metrics.txt`, `health.json`, `journal.json` (journal and audit statistics),
//! `open_loads.json` (card numbers masked to their last four digits) and `README.txt` (what was
//! collected and how). With the daemon running everything comes through its control socket
//! ([`crate::control`]); with it stopped, from its data directory opened offline and from
//! journald.
//!
//! **Architecture Invariant:** a bundle never holds a key or the key file, a password or its
//! hash, a session token, the control socket, database files or a full card number: only the
//! files above are written, each built from statistics and views that carry none of them, and
//! every text goes through [`crate::support::redact_text`] on its way in.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;
use crate::control::{ControlError, Request};
use crate::support::{redact_text, Status};

/// Largest bundle, in bytes of uncompressed content; the logs are cut first (oldest lines).
pub const SUPPORT_BUNDLE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Largest configuration file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Lines asked of journald when the daemon is stopped.
pub const JOURNALCTL_LINES: u32 = 2000;
/// How long journalctl may take.
pub const JOURNALCTL_TIMEOUT_S: u64 = 20;
/// Most bytes of journalctl output kept.
pub const JOURNALCTL_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The directory inside the tar.
pub const BUNDLE_DIR: &str = "cardd-support";

/// What replaces a secret in `config.toml` and `readers.json`.
pub const REMOVED: &str = "<removed>";

/// Words that make a configuration key's value a secret (compared case-insensitively, as parts
/// of the key's name): its value is removed, and so is everything under a table so named.
const SECRET_WORDS: &[&str] = &[
    "pin",
    "pass",
    "secret",
    "token",
    "key",
    "credential",
    "private",
    "cookie",
    "hash",
    "salt",
];

/// Configuration keys whose names look secret but whose values are file paths or choices
/// (never the files' contents), kept unless the value itself looks like key material.
const KEPT_PATHS: &[&str] = &[
    "keys.source",
    "keys.file",
    "fleet.key",
    "fleet.cert",
    "fleet.ca_cert",
];

/// Why no bundle was written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the configuration {path}: {reason}; give the file cardd runs with")]
    Config { path: PathBuf, reason: String },
    #[error("{0} exists; give a new file name (nothing was written)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}; check the directory exists and is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`write`] wrote.
#[derive(Debug, Clone)]
pub struct BundleReport {
    pub path: PathBuf,
    /// Size of the `.tar.gz`, in bytes.
    pub bytes: u64,
    /// Each file's name and uncompressed size.
    pub files: Vec<(String, usize)>,
    /// `running`, `stopped` or `unreachable`.
    pub daemon: &'static str,
    /// What could not be collected, and why.
    pub notes: Vec<String>,
}

/// Collects the bundle for the daemon configured by `config_path` and writes it to `out`
/// (a new file, mode 0600, written whole or not at all).
pub fn write(config_path: &Path, out: &Path) -> Result<BundleReport, BundleError> {
    if out.exists() {
        return Err(BundleError::Exists(out.to_path_buf()));
    }
    let collected = collect(config_path)?;
    let mut files = collected.files;
    bound(&mut files, SUPPORT_BUNDLE_BYTES_MAX);
    let bytes = write_tar_gz(out, &files).map_err(|source| BundleError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(BundleReport {
        path: out.to_path_buf(),
        bytes,
        files: files.iter().map(|(n, t)| (n.clone(), t.len())).collect(),
        daemon: collected.daemon,
        notes: collected.notes,
    })
}

/// The files of a bundle, redacted, and how they were collected.
struct Collected {
    files: Vec<(String, String)>,
    daemon: &'static str,
    notes: Vec<String>,
}

/// Where the live parts of a bundle came from.
enum Source {
    Running { status: Status, logs: Vec<String> },
    Stopped { status: Status },
    Unreachable,
}

fn collect(config_path: &Path) -> Result<Collected, BundleError> {
    let config_error = |reason: String| BundleError::Config {
        path: config_path.to_path_buf(),
        reason,
    };
    let text = read_bounded(config_path, CONFIG_FILE_BYTES_MAX).map_err(config_error)?;
    let mut notes = Vec::new();
    // Shown whole in the bundle: support may not know the directory it was run from.
    let absolute = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.into());
    let config_path = absolute.as_path();
    let table = match toml::from_str::<toml::Table>(&text) {
        Ok(mut table) => {
            redact_config(&mut table);
            Some(table)
        }
        Err(e) => {
            notes.push(format!(
                "the configuration is not valid TOML ({}); it is left out of the bundle",
                e.message()
            ));
            None
        }
    };
    let config = match Config::from_toml(&text, &config_path.display().to_string()) {
        Ok(config) => Some(config),
        Err(e) => {
            if table.is_some() {
                notes.push(format!("the configuration does not validate: {e}"));
            }
            None
        }
    };
    let source = match &config {
        Some(config) => live_source(config, &mut notes),
        None => Source::Unreachable,
    };
    let daemon = match source {
        Source::Running { .. } => "running",
        Source::Stopped { .. } => "stopped",
        Source::Unreachable => "unreachable",
    };
    let status = match &source {
        Source::Running { status, .. } | Source::Stopped { status } => Some(status),
        Source::Unreachable => None,
    };
    let mut files = vec![
        ("README.txt".to_owned(), String::new()),
        (
            "version.txt".to_owned(),
            version_text(config_path, daemon, status),
        ),
        (
            "config.toml".to_owned(),
            config_text(config_path, table.as_ref()),
        ),
        (
            "readers.json".to_owned(),
            readers_json(table.as_ref(), status),
        ),
        ("logs.txt".to_owned(), logs_text(&source)),
        ("metrics.txt".to_owned(), metrics_text(status)),
        ("health.json".to_owned(), health_json(status, daemon)),
        ("journal.json".to_owned(), journal_json(status)),
        ("open_loads.json".to_owned(), open_loads_json(status)),
    ];
    files[0].1 = readme_text(daemon, &notes);
    for (_, text) in &mut files {
        *text = redact_text(text);
    }
    Ok(Collected {
        files,
        daemon,
        notes,
    })
}

/// The status (and logs) from the running daemon's control socket, or else from its data
/// directory opened offline; notes say what failed.
fn live_source(config: &Config, notes: &mut Vec<String>) -> Source {
    let socket = crate::control::socket_path(&config.data_dir);
    let asked = crate::control::call(&socket, &Request::Status {}).and_then(|value| {
        serde_json::from_value::<Status>(value).map_err(|e| ControlError::Protocol {
            path: socket.clone(),
            reason: format!("an unexpected status: {e}"),
        })
    });
    let control_error = match asked {
        Ok(status) => {
            let logs = match crate::control::call(&socket, &Request::Logs {}) {
                Ok(value) => value["lines"]
                    .as_array()
                    .map(|lines| {
                        let text = lines.iter().filter_map(Value::as_str);
                        text.map(str::to_owned).collect()
                    })
                    .unwrap_or_default(),
                Err(e) => {
                    notes.push(format!("the daemon's recent logs could not be read: {e}"));
                    Vec::new()
                }
            };
            return Source::Running { status, logs };
        }
        Err(ControlError::NotRunning(_)) => None,
        Err(e) => Some(e),
    };
    if !config.data_dir.exists() {
        notes.push(format!(
            "the data directory {} does not exist: cardd has not run with this configuration",
            config.data_dir.display()
        ));
        return Source::Unreachable;
    }
    match status_offline(config) {
        Ok(status) => {
            if let Some(e) = control_error {
                notes.push(format!(
                    "the control socket did not answer ({e}); the data directory was read offline"
                ));
            }
            Source::Stopped { status }
        }
        Err(e) => {
            let why = match control_error {
                Some(c) => format!("its control socket did not answer ({c})"),
                None => format!(
                    "no daemon answers on its control socket {}",
                    socket.display()
                ),
            };
            notes.push(format!(
                "cannot read the daemon's state: {why}, and its data directory could not be \
                 opened ({e}). If cardd is running, run this as its user (or root) so the control \
                 socket answers; otherwise check the data directory"
            ));
            Source::Unreachable
        }
    }
}

/// The status of a stopped daemon, from its data directory (opened offline: refused while a
/// daemon holds it).
fn status_offline(config: &Config) -> Result<Status, crate::server::ServerError> {
    let store = crate::server::open_store_offline(config)?;
    let audit = match crate::audit::AuditLog::open_with(&store, config.audit.segment_records) {
        Ok(audit) => crate::support::audit_status(&audit),
        Err(e) => crate::support::AuditSummary {
            error: Some(e.to_string()),
            ..Default::default()
        },
    };
    let (journal, failure) = match cardd_journal::Journal::open(&store) {
        Ok(journal) => (Some(journal), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (journal, open_loads) =
        crate::support::journal_status(journal.as_ref(), failure.as_deref());
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: None,
        health: json!({ "status": "stopped", "data_dir": config.data_dir.display().to_string() }),
        readers: None,
        metrics: None,
        journal,
        audit,
        open_loads,
    })
}

fn version_text(config_path: &Path, daemon: &str, status: Option<&Status>) -> String {
    let mut out = format!("cardd {}\n", env!("CARGO_PKG_VERSION"));
    let commit = option_env!("CARDD_GIT_COMMIT").unwrap_or("unknown (not set at build time)");
    out.push_str(&format!("commit: {commit}\n"));
    out.push_str(&format!("target: {}\n", env!("CARDD_BUILD_TARGET")));
    out.push_str(&format!("rustc: {}\n", env!("CARDD_BUILD_RUSTC")));
    out.push_str(&format!("os: {}\n", os_name()));
    if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        out.push_str(&format!("kernel: {}\n", kernel.trim()));
    }
    out.push_str(&format!(
        "bundle time: {}\n",
        crate::audit::utc_now_rfc3339()
    ));
    out.push_str(&format!("configuration: {}\n", config_path.display()));
    match status {
        Some(s) => {
            let pid = s.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
            let uptime = s.health["uptime_s"].as_u64();
            let uptime = uptime.map(|u| format!(", up {u} s")).unwrap_or_default();
            out.push_str(&format!(
                "daemon: {daemon} (cardd {}{pid}{uptime})\n",
                s.version
            ));
        }
        None => out.push_str(&format!("daemon: {daemon}\n")),
    }
    out
}

/// `PRETTY_NAME` of `/etc/os-release`, or the platform's name.
fn os_name() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| format!("{} {}", std::env::consts::OS, std::env::consts::ARCH))
}

fn config_text(path: &Path, table: Option<&toml::Table>) -> String {
    let Some(table) = table else {
        return "# the configuration is not valid TOML; left out (see README.txt)\n".into();
    };
    let body = toml::to_string_pretty(table).unwrap_or_default();
    format!(
        "# {}, with every secret replaced by \"{REMOVED}\" (comments are not kept)\n\n{body}",
        path.display()
    )
}

fn readers_json(table: Option<&toml::Table>, status: Option<&Status>) -> String {
    let registry = cardd_drivers::registry();
    let drivers: Vec<Value> = registry
        .names()
        .into_iter()
        .map(|name| {
            let summary = registry.get(name).map(|d| d.summary()).unwrap_or_default();
            json!({ "name": name, "summary": summary })
        })
        .collect();
    let configured = table
        .and_then(|t| t.get("readers"))
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .unwrap_or_else(|| json!([]));
    let live = status.and_then(|s| s.readers.as_ref());
    let live = match live {
        Some(readers) => serde_json::to_value(readers).unwrap_or(Value::Null),
        None => json!("the daemon is not running: no live readers"),
    };
    pretty(&json!({ "configured": configured, "drivers": drivers, "live": live }))
}

fn logs_text(source: &Source) -> String {
    match source {
        Source::Running { logs, .. } => {
            let mut out = format!(
                "# the running daemon's last {} log lines (its full log is where its output \
                 goes: journald under systemd, `journalctl -u cardd`)\n",
                logs.len()
            );
            for line in logs {
                out.push_str(line);
                out.push('\n');
            }
            out
        }
        Source::Stopped { .. } | Source::Unreachable => {
            let mut out = String::from(
                "# cardd is not running (or did not answer): its log is in journald, \
                 `journalctl -u cardd`\n",
            );
            match journalctl() {
                Ok(text) => {
                    out.push_str(&format!(
                        "# journalctl -u cardd -n {JOURNALCTL_LINES} --no-pager:\n"
                    ));
                    out.push_str(&text);
                }
                Err(e) => out.push_str(&format!("# journalctl gave nothing: {e}\n")),
            }
            out
        }
    }
}

/// The last lines of the `cardd` unit's journal, bounded in time and size.
fn journalctl() -> Result<String, String> {
    let mut child = std::process::Command::new("journalctl")
        .args([
            "-u",
            "cardd",
            "-n",
            &JOURNALCTL_LINES.to_string(),
            "--no-pager",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run journalctl: {e}"))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(out) = stdout {
            let _ = out
                .take(JOURNALCTL_BYTES_MAX as u64)
                .read_to_end(&mut bytes);
        }
        bytes
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(JOURNALCTL_TIMEOUT_S);
    let exit = loop {
        match child.try_wait() {
            Ok(Some(exit)) => break Some(exit),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let bytes = reader.join().unwrap_or_default();
    match exit {
        Some(exit) if exit.success() => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Some(exit) => Err(format!("journalctl failed ({exit})")),
        None => Err(format!(
            "journalctl did not finish within {JOURNALCTL_TIMEOUT_S} s"
        )),
    }
}

fn metrics_text(status: Option<&Status>) -> String {
    match status.and_then(|s| s.metrics.as_ref()) {
        Some(metrics) => metrics.clone(),
        None => {
            "# cardd is not running: no metrics (they live in the running daemon only)\n".into()
        }
    }
}

fn health_json(status: Option<&Status>, daemon: &str) -> String {
    match status {
        Some(s) => pretty(&s.health),
        None => pretty(&json!({ "status": daemon })),
    }
}

fn journal_json(status: Option<&Status>) -> String {
    match status {
        Some(s) => pretty(&json!({ "journal": s.journal, "audit": s.audit })),
        None => {
            pretty(&json!({ "error": "the data directory could not be read (see README.txt)" }))
        }
    }
}

fn open_loads_json(status: Option<&Status>) -> String {
    match status {
        Some(s) => pretty(&json!({
            "listed_max": crate::support::OPEN_LOADS_LISTED_MAX,
            "open_loads": s.open_loads,
        })),
        None => {
            pretty(&json!({ "error": "the data directory could not be read (see README.txt)" }))
        }
    }
}

fn readme_text(daemon: &str, notes: &[String]) -> String {
    let mut out = format!(
        "cardd support bundle\n\n\
         The daemon was {daemon} when this bundle was made.\n\n\
         version.txt      version, build, operating system, time\n\
         config.toml      the configuration, secrets replaced by \"{REMOVED}\"\n\
         readers.json     configured readers, compiled-in drivers, live readers\n\
         logs.txt         recent log lines\n\
         metrics.txt      the OpenMetrics snapshot\n\
         health.json      what /health answers\n\
         journal.json     journal and audit statistics\n\
         open_loads.json  open loads, card numbers masked to their last four digits\n\n\
         Never included: keys or the key file, passwords or their hashes, session tokens, the \
         database files, full card numbers (every run of 12 or more digits is masked).\n"
    );
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for note in notes {
            out.push_str(&format!("- {note}\n"));
        }
    }
    out
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Replaces secrets in `table` (the configuration, or part of it at `prefix`) by [`REMOVED`]:
/// values of keys named like secrets ([`SECRET_WORDS`]), everything under tables or arrays so
/// named, and any value that looks like key material, except the paths of [`KEPT_PATHS`].
pub fn redact_config(table: &mut toml::Table) {
    redact_table("", table, false);
}

fn redact_table(prefix: &str, table: &mut toml::Table, secret: bool) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let kept = KEPT_PATHS.contains(&path.as_str());
        let secret = !kept && (secret || (secret_name(key) && !is_known_table(&path)));
        redact_value(&path, value, secret);
    }
}

/// Tables of the configuration whose names contain a secret word but that hold settings, not
/// secrets (their keys are judged one by one).
fn is_known_table(path: &str) -> bool {
    path == "keys"
}

fn redact_value(path: &str, value: &mut toml::Value, secret: bool) {
    match value {
        toml::Value::Table(table) => redact_table(path, table, secret),
        toml::Value::Array(items) => {
            for item in items {
                redact_value(path, item, secret);
            }
        }
        leaf => {
            let material = leaf.as_str().is_some_and(looks_like_key_material);
            if secret || material {
                *leaf = toml::Value::String(REMOVED.into());
            }
        }
    }
}

fn secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// Hex of 16 digits or more (spaces and colons allowed), PEM, or a long base64-like word that
/// is not a path or an address.
fn looks_like_key_material(text: &str) -> bool {
    if text.contains("-----BEGIN") {
        return true;
    }
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '-'))
        .collect();
    if compact.len() >= 16 && compact.chars().all(|c| c.is_ascii_hexdigit()) {
        return true;
    }
    let base64_like = text.len() >= 24
        && !text.starts_with(['/', '.', '~'])
        && !text.contains("://")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-'))
        && text.chars().any(|c| c.is_ascii_digit())
        && text.chars().any(|c| c.is_ascii_alphabetic());
    base64_like
}

fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// Cuts `files` to at most `max` bytes in all: the oldest log lines first, then each other file
/// to an equal share.
fn bound(files: &mut [(String, String)], max: usize) {
    let total = |files: &[(String, String)]| files.iter().map(|(_, t)| t.len()).sum::<usize>();
    if total(files) <= max {
        return;
    }
    let others: usize = files
        .iter()
        .filter(|(n, _)| n != "logs.txt")
        .map(|(_, t)| t.len())
        .sum();
    let logs_budget = max.saturating_sub(others);
    for (name, text) in files.iter_mut() {
        if name == "logs.txt" && text.len() > logs_budget {
            let note =
                format!("[older log lines left out: the bundle is limited to {max} bytes]\n");
            let keep = logs_budget.saturating_sub(note.len());
            let mut start = text.len() - keep;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            let start = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            *text = format!("{note}{}", &text[start..]);
        }
    }
    if total(files) > max {
        let share = max / files.len().max(1);
        for (_, text) in files.iter_mut() {
            if text.len() > share {
                let mut end = share.saturating_sub(64);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str("\n[cut: the bundle is limited in size]\n");
            }
        }
    }
    assert!(total(files) <= max + files.len() * 64);
}

/// Writes `files` as `BUNDLE_DIR/name` into a new gzip tar at `out` (through a temporary file
/// renamed into place, mode 0600); returns its size.
fn write_tar_gz(out: &Path, files: &[(String, String)]) -> std::io::Result<u64> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&partial)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (name, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("{BUNDLE_DIR}/{name}"), text.as_bytes())?;
        }
        let mut file = tar.into_inner()?.finish()?;
        file.flush()?;
        file.sync_all()?;
        if out.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the file appeared while the bundle was written",
            ));
        }
        std::fs::rename(&partial, out)?;
        Ok(std::fs::metadata(out)?.len())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_leave_the_configuration_and_paths_stay() {
        let mut table: toml::Table = toml::from_str(
            r#"
            [server]
            listen = "127.0.0.1:7420"
            [cards]
            etc_pin = "8675309214"
            terminal_id = "112233445566"
            [keys]
            source = "file"
            file = "/etc/cardd/keys.toml"
            load = "00112233445566778899AABBCCDDEEFF"
            [fleet]
            key = "/etc/cardd/site.key"
            [[readers]]
            driver = "plugin"
            [readers.options]
            command = "/usr/lib/vendor/plugin"
            env = { VENDOR_API_TOKEN = "t0k3n", PORT = "9" }
            [readers.options.credentials]
            user = "vendor"
            password = "hunter2"
            signing = "q2l0aGVyLXNlY3JldC1rZXktbWF0ZXJpYWw="
            "#,
        )
        .unwrap();
        redact_config(&mut table);
        let text = toml::to_string(&table).unwrap();
        for secret in [
            "8675309214",
            "00112233445566778899",
            "t0k3n",
            "hunter2",
            "q2l0aGVy",
            "vendor\"",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        for kept in [
            "/etc/cardd/keys.toml",
            "/etc/cardd/site.key",
            "/usr/lib/vendor/plugin",
            "127.0.0.1:7420",
            "source = \"file\"",
            "PORT = \"9\"",
            "112233445566",
        ] {
            assert!(text.contains(kept), "{kept} kept in {text}");
        }
    }

    #[test]
    fn the_bundle_is_bounded_and_the_logs_are_cut_first() {
        let mut files = vec![
            ("version.txt".to_owned(), "cardd\n".repeat(10)),
            ("logs.txt".to_owned(), "a log line\n".repeat(1000)),
        ];
        bound(&mut files, 2000);
        assert_eq!(files[0].1, "cardd\n".repeat(10), "other files stay whole");
        assert!(files[1].1.starts_with("[older log lines left out"));
        assert!(
            files[1].1.ends_with("a log line\n"),
            "the newest lines stay"
        );
        assert!(files.iter().map(|(_, t)| t.len()).sum::<usize>() <= 2000);
    }
}
