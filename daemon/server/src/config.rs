//! Configuration in two stages: the raw TOML file, then the validated `Config`.
//!
//! [`RawConfig`] is exactly what the file says (serde, unknown keys refused); [`Config`] is what
//! the daemon runs on: addresses parsed, limits checked, paths resolved, reader drivers known.
//! Each option is defined once, on [`RawConfig`] and its sections, with its doc comment and
//! default; `docs/config.md` is generated from that definition ([`reference_markdown`]) and a
//! test fails when the committed copy is stale.
//!
//! With `--demo` the daemon runs on [`Config::demo`]: simulated readers holding an ETC card, a
//! city card and an OBU, demo key material and seeded host data.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;

use crate::transport::guard::{default_origins as loopback_origins, loopback_hosts};
use serde::{Deserialize, Serialize};

/// Why a configuration was refused: the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

fn default_listen() -> String {
    "127.0.0.1:7420".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Human
}
fn default_log_level() -> String {
    "info".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/cardd")
}

/// The configuration file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Where and how the daemon listens.
    pub server: ServerSection,
    /// Bounds on everything a client or a card can make the daemon do.
    pub limits: LimitsSection,
    /// Operator sessions and login throttling.
    pub auth: AuthSection,
    /// The audit log's size policy.
    pub audit: AuditSection,
    /// Where the daemon keeps its database.
    pub data: DataSection,
    /// Where the master keys of the software security module come from.
    pub keys: KeysSection,
    /// Settings of the card applications.
    pub cards: CardsSection,
    /// Business flows (Lua).
    pub flows: FlowsSection,
    /// Group recharge (集团充值): the payment gateway of quota top-ups.
    pub group: GroupSection,
    /// Reader driver instances, one table per driver (`[[readers]]`).
    pub readers: Vec<ReaderSection>,
    /// Fleet mode: the recharge records, the load keys and the operators live at a central issuer host (`cardd-host`), which this site reaches over HTTPS with its own client certificate; operators log in here with their accounts at the host and are managed there (`cardd-host operators`), and one disabled there loses its sessions here within seconds. Absent: the embedded single machine.
    pub fleet: Option<FleetSection>,
}

/// `[fleet]`: this site's link to the central issuer host.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// The host's address and port as this site reaches it, e.g. `10.1.0.5:7443`.
    pub host_addr: String,
    /// The name in the host's certificate (`cardd-fleet ca issue-host --name`).
    pub host_name: String,
    /// The fleet CA's certificate (`ca.crt`).
    pub ca_cert: PathBuf,
    /// This site's certificate (`cardd-fleet ca issue-site`).
    pub cert: PathBuf,
    /// This site's private key (owner-only). It authenticates the site; it is not a card key.
    pub key: PathBuf,
    /// How long one call to the host may take, in milliseconds (100 to 60000).
    #[serde(default = "default_host_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

fn default_host_call_timeout_ms() -> u64 {
    5_000
}

/// A validated `[fleet]` section.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub host_addr: SocketAddr,
    pub host_name: String,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub call_timeout: Duration,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address and port for JSON-RPC over HTTP and WebSocket. Must be a loopback address unless `allow_non_loopback` is set.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Allow listening on a non-loopback address. Off by default: cardd is meant for the machine it runs on.
    pub allow_non_loopback: bool,
    /// Web origins (scheme://host:port) allowed to call the API from a browser, in addition to the daemon's own loopback origins.
    pub allowed_origins: Vec<String>,
    /// Extra `Host` header values to accept, in addition to the loopback names with the listening port.
    pub allowed_hosts: Vec<String>,
    /// Log format: `human` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `cardd=debug`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Serve the 模拟读卡器 panel (the `sim.*` methods, administrators only) for the simulated readers of this configuration, as `--demo` does: a training or test site. Never with real cards.
    pub sim_panel: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            allow_non_loopback: false,
            sim_panel: false,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            log_format: default_log_format(),
            log_level: default_log_level(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest JSON-RPC request body or WebSocket message, in bytes.
    pub request_body_bytes_max: u32,
    /// Largest JSON-RPC response, in bytes.
    pub response_body_bytes_max: u32,
    /// Most WebSockets plus HTTP calls in progress at once. A WebSocket needs a live session, so
    /// only logged-in operators hold these for long.
    pub connections_max: u32,
    /// Most open connections that have not yet carried a live session's token (logins and public
    /// calls use these). Kept below `connections_max`, so they can never take every slot.
    pub unauthenticated_connections_max: u32,
    /// Most unauthenticated connections of one client process (found from `/proc` on Linux; by
    /// user where the process cannot be read). A process at its cap has its own oldest idle
    /// connection closed to make room; it never crowds out another process.
    pub unauthenticated_connections_per_process_max: u32,
    /// An unauthenticated connection with no request in progress for this long is closed, in
    /// seconds.
    pub unauthenticated_idle_timeout_s: u64,
    /// An authenticated HTTP connection with no request in progress for this long is closed, in
    /// seconds (WebSockets are kept alive by pings and end with their session's subscriptions).
    pub connection_idle_timeout_s: u64,
    /// Most subscriptions one WebSocket connection may hold.
    pub subscriptions_per_connection_max: u32,
    /// Sustained JSON-RPC requests per second allowed on one connection.
    pub requests_per_second_per_connection: u32,
    /// Requests one connection may send in a burst above the sustained rate.
    pub request_burst_per_connection: u32,
    /// How long one APDU may take before the reader reports a timeout, in milliseconds.
    pub apdu_timeout_ms: u64,
    /// Longest reader lease a client may take, in milliseconds.
    pub lease_ms_max: u64,
    /// Lease length when the client names none, in milliseconds.
    pub lease_ms_default: u64,
    /// Most events kept for polling clients (older ones are dropped; pollers see a gap marker).
    pub events_buffered_max: usize,
    /// Most commands queued for one reader before new ones are refused as busy.
    pub reader_queue_max: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            request_body_bytes_max: 64 * 1024,
            response_body_bytes_max: 1024 * 1024,
            connections_max: 64,
            unauthenticated_connections_max: 32,
            unauthenticated_connections_per_process_max: 16,
            unauthenticated_idle_timeout_s: 10,
            connection_idle_timeout_s: 120,
            subscriptions_per_connection_max: 16,
            requests_per_second_per_connection: 50,
            request_burst_per_connection: 100,
            apdu_timeout_ms: 5_000,
            lease_ms_max: 10 * 60 * 1000,
            lease_ms_default: 2 * 60 * 1000,
            events_buffered_max: 1024,
            reader_queue_max: 16,
        }
    }
}

/// `[auth]`
///
/// Login throttling slows guessing without letting anyone lock an operator out: failures are
/// counted per user name and per source (the peer address without its port, and browser page
/// (per Origin, ignoring case) or program (no Origin) apart). After `login_failures_free`
/// failures a user name or source waits `login_delay_base_ms` before its next attempt, twice as
/// long after each further failure, at most `login_delay_max_s`; attempts during the wait are
/// refused without being counted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// A session unused for this long ends; the operator must log in again (seconds).
    pub session_idle_timeout_s: u64,
    /// Failed logins per user name or per source that cost no wait.
    pub login_failures_free: u32,
    /// The wait after the first failure beyond the free ones (milliseconds); it doubles with each further failure.
    pub login_delay_base_ms: u64,
    /// The longest wait between login attempts of one user name or source (seconds); never a lock-out.
    pub login_delay_max_s: u64,
    /// A user name's or source's failures are forgotten this long after its last one (seconds).
    pub login_failures_forget_s: u64,
    /// Failed logins of one source (and its state-changing calls without a session) are written to the audit log as one record per method and this interval (seconds): the first at once, the rest counted into one summary.
    pub login_failure_audit_interval_s: u64,
    /// Shortest password accepted when setting one, in characters.
    pub password_chars_min: usize,
    /// Most concurrent sessions in all; when full, a login ends the least recently used session of its own role, or is refused if its role has none.
    pub sessions_max: usize,
    /// Most concurrent sessions of one operator; a further login ends that operator's least recently used one.
    pub sessions_per_user_max: usize,
    /// Most concurrent sessions of one role (kiosks: `kiosk_sessions_max`); a further login ends that role's least recently used one, never another role's.
    pub sessions_per_role_max: usize,
    /// Most concurrent sessions of the kiosk role.
    pub kiosk_sessions_max: usize,
    /// Most password hashes (argon2id, tens of milliseconds each) computed at once, on blocking threads.
    pub hashing_concurrent_max: usize,
    /// Longest wait for a hashing slot (milliseconds); then the login is refused with 系统繁忙 (server_busy).
    pub hashing_wait_ms_max: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            session_idle_timeout_s: 15 * 60,
            login_failures_free: 3,
            login_delay_base_ms: 1000,
            login_delay_max_s: 30,
            login_failures_forget_s: 15 * 60,
            login_failure_audit_interval_s: 60,
            password_chars_min: 6,
            sessions_max: 1024,
            sessions_per_user_max: 8,
            sessions_per_role_max: 256,
            kiosk_sessions_max: 16,
            hashing_concurrent_max: 2,
            hashing_wait_ms_max: 5000,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Size policy: when the live audit log holds twice this many records, the oldest this many are sealed into a segment file (`audit/` in the data directory) and leave the database. Segments stay hash-chained: `audit.verify` checks them with the live log.
    pub segment_records: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            segment_records: 100_000,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Directory of the daemon's database (operators, audit log, journal). Created if missing.
    #[serde(default = "default_data_dir")]
    pub dir: PathBuf,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            dir: default_data_dir(),
        }
    }
}

/// `[keys]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    /// `demo` uses the public demo masters that the simulated cards are personalised with (never for real cards); `file` reads master keys from `file`.
    pub source: KeySource,
    /// With `source = "file"`: a TOML file of master keys (see docs/keys.md). Keep it readable by the daemon's user only.
    pub file: Option<PathBuf>,
}

/// Where master keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    #[default]
    Demo,
    File,
}

/// `[cards]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CardsSection {
    /// The terminal number written into card transactions: 12 hexadecimal digits.
    pub terminal_id: String,
    /// PIN presented to ETC cards before a load (personalisation-dependent; ASCII digits). A card that refuses it is never presented it again; correcting this value lets each card be tried once with the new PIN.
    pub etc_pin: String,
    /// How long a load whose outcome is unknown waits for its card, in hours, before a supervisor and an auditor may settle it without the card (lost, broken or PIN-blocked card). 0 to 8760.
    pub lost_card_wait_hours: u32,
}

impl Default for CardsSection {
    fn default() -> Self {
        CardsSection {
            terminal_id: "112233445566".into(),
            etc_pin: "123456".into(),
            lost_card_wait_hours: 72,
        }
    }
}

/// `[flows]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsSection {
    /// Directory of the flow files (`*.lua`); changed files are reloaded when the flows are next listed or one is started (at most once a second, no polling), running flows keep their version. Default: the `scripts/` directory of the source tree.
    pub dir: Option<PathBuf>,
    /// Longest a run may take, including the time it waits for the client, in seconds.
    pub run_s_max: u64,
    /// Lua instructions one run may execute (stops runaway scripts within milliseconds).
    pub instructions_max: u64,
    /// Lua memory of one run, in bytes.
    pub memory_bytes_max: usize,
    /// How long a flow waits for the client to answer a question before it is cancelled, in seconds.
    pub prompt_timeout_s: u64,
    /// Test mode: lets an administrator's `card.load` credit a card with no funded record behind it (no ETC recharge record, no group order). Off by default; refused unless `keys.source = "demo"`. Never on a real issuer's terminal.
    pub unfunded_test_loads: bool,
}

impl Default for FlowsSection {
    fn default() -> Self {
        FlowsSection {
            dir: None,
            run_s_max: 15 * 60,
            instructions_max: 10_000_000,
            memory_bytes_max: 8 * 1024 * 1024,
            prompt_timeout_s: 5 * 60,
            unfunded_test_loads: false,
        }
    }
}

/// `[group]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSection {
    /// How the embedded sandbox bank (the payment gateway of quota top-ups) answers: `approve`, `decline` or `timeout` (no answer, nothing paid). Words in a transfer's remark make single transfers fail too (README, group recharge).
    pub sandbox_mode: cardd_group::SandboxMode,
}

/// One `[[readers]]` table: a driver instance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReaderSection {
    /// Driver name (`sim`, …). `cardd --list-drivers` shows the compiled-in drivers.
    pub driver: String,
    /// The driver's own options (see docs/driver-guide.md for each driver's keys).
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub options: toml::Table,
    /// Records this driver instance's card traffic to a file (off when absent); see docs/traces.md.
    #[serde(default)]
    pub trace: Option<TraceSection>,
}

/// `[readers.trace]`: the APDU trace recorder of one driver instance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceSection {
    /// The trace file (one JSON line per exchange, mark and event), created if missing (with its directory) and appended to. A relative path is taken from `data.dir`.
    pub path: PathBuf,
    /// The file's size bound: the line that would pass it first moves the file to `<path>.1` (replacing an older one) and the trace goes on in a fresh file, so at most twice this is kept. 4096 to 1 GiB.
    #[serde(default = "default_trace_bytes_max")]
    pub bytes_max: u64,
    /// Hide PINs, MACs, TACs and key material (written as `**`). Only `false` turns this off, for test cards.
    #[serde(default = "default_true")]
    pub redact: bool,
}

fn default_trace_bytes_max() -> u64 {
    cardd_reader::trace::TRACE_BYTES_MAX_DEFAULT
}

fn default_true() -> bool {
    true
}

/// A validated trace recorder setting of a driver instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// The trace file (a relative configured path is joined to `data.dir`).
    pub path: PathBuf,
    pub bytes_max: u64,
    pub redact: bool,
}

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or `--demo`), for messages.
    pub source: String,
    pub listen: SocketAddr,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub limits: LimitsSection,
    pub auth: AuthSection,
    pub audit: AuditSection,
    pub data_dir: PathBuf,
    pub keys: KeysSection,
    pub terminal_id: [u8; 6],
    pub etc_pin: String,
    /// How long an unknown load waits for its card before the two-person lost-card verdict.
    pub lost_card_wait: Duration,
    pub readers: Vec<ReaderInstance>,
    pub flows: FlowsSection,
    pub group: GroupSection,
    /// Fleet mode: the issuer host this site works against (no keys and no records here).
    pub fleet: Option<FleetConfig>,
    /// Serve the simulated readers' panel outside the demo.
    pub sim_panel: bool,
    /// The embedded default: seed demo operators and host data.
    pub demo: bool,
}

/// A validated reader driver instance.
#[derive(Debug, Clone)]
pub struct ReaderInstance {
    pub driver: String,
    pub options: serde_json::Value,
    /// Where this instance's card traffic is recorded, if anywhere.
    pub trace: Option<TraceConfig>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "-".into(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Config::from_toml(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: e
                .span()
                .map(|s| key_at(text, s.start))
                .unwrap_or_else(|| "-".into()),
            reason: e.message().to_owned(),
        })?;
        Config::validate(raw, file, false)
    }

    /// The embedded default: simulated readers, demo keys, demo operators and host data,
    /// data kept in `data_dir`.
    pub fn demo(data_dir: PathBuf) -> Config {
        let raw = RawConfig {
            data: DataSection { dir: data_dir },
            readers: vec![ReaderSection {
                driver: "sim".into(),
                options: toml::Table::new(),
                trace: None,
            }],
            ..RawConfig::default()
        };
        // The embedded default is valid by construction; a failure here is a bug in this file.
        match Config::validate(raw, "--demo", true) {
            Ok(config) => config,
            Err(e) => panic!("the embedded demo configuration is invalid: {e}"),
        }
    }

    /// Stage two: checks every value and derives what the daemon needs.
    pub fn validate(raw: RawConfig, file: &str, demo: bool) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            err(
                "server.listen",
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:7420",
                    raw.server.listen
                ),
            )
        })?;
        if !is_loopback(listen.ip()) && !raw.server.allow_non_loopback {
            return Err(err(
                "server.listen",
                format!("{listen} is not a loopback address; cardd serves only this machine unless server.allow_non_loopback = true"),
            ));
        }
        for origin in &raw.server.allowed_origins {
            check_origin(origin).map_err(|reason| err("server.allowed_origins", reason))?;
        }
        let limits = raw.limits;
        check_limits(&limits).map_err(|(key, reason)| err(&format!("limits.{key}"), reason))?;
        let auth = raw.auth;
        if auth.session_idle_timeout_s == 0
            || auth.login_delay_max_s == 0
            || auth.login_failures_forget_s == 0
            || auth.login_failure_audit_interval_s == 0
            || auth.sessions_max == 0
            || auth.sessions_per_user_max == 0
            || auth.sessions_per_role_max == 0
            || auth.kiosk_sessions_max == 0
            || auth.hashing_concurrent_max == 0
            || auth.hashing_wait_ms_max == 0
        {
            return Err(err("auth", "session_idle_timeout_s, login_delay_max_s, login_failures_forget_s, login_failure_audit_interval_s, the sessions_* limits and the hashing_* limits must all be above zero".into()));
        }
        if raw.audit.segment_records == 0 {
            return Err(err("audit.segment_records", "must be above zero".into()));
        }
        if !(1..=256).contains(&auth.password_chars_min) {
            return Err(err(
                "auth.password_chars_min",
                "must be between 1 and 256".into(),
            ));
        }
        if raw.keys.source == KeySource::File && raw.keys.file.is_none() {
            return Err(err(
                "keys.file",
                "keys.source = \"file\" needs keys.file = \"/path/to/keys.toml\"".into(),
            ));
        }
        let terminal_id = parse_terminal_id(&raw.cards.terminal_id).ok_or_else(|| {
            err(
                "cards.terminal_id",
                format!("{:?} is not 12 hexadecimal digits", raw.cards.terminal_id),
            )
        })?;
        if raw.cards.etc_pin.is_empty()
            || raw.cards.etc_pin.len() > 12
            || !raw.cards.etc_pin.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err("cards.etc_pin", "must be 1 to 12 ASCII digits".into()));
        }
        if raw.cards.lost_card_wait_hours > 8760 {
            return Err(err(
                "cards.lost_card_wait_hours",
                "must be 0 to 8760 (one year)".into(),
            ));
        }
        let readers = validate_readers(&raw.readers, &raw.data.dir)
            .map_err(|(key, reason)| err(&key, reason))?;
        let flows = raw.flows;
        if !(1..=24 * 3600).contains(&flows.run_s_max)
            || !(1_000..=10_000_000_000).contains(&flows.instructions_max)
            || !(64 * 1024..=1024 * 1024 * 1024).contains(&flows.memory_bytes_max)
            || !(1..=24 * 3600).contains(&flows.prompt_timeout_s)
        {
            return Err(err("flows", "run_s_max and prompt_timeout_s must be 1..=86400, instructions_max 1000..=1e10, memory_bytes_max 64 KiB..=1 GiB".into()));
        }
        if flows.unfunded_test_loads && raw.keys.source != KeySource::Demo {
            return Err(err(
                "flows.unfunded_test_loads",
                "is a test mode for the demo keys only: with real keys every credit must be backed by a funded record; remove it".into(),
            ));
        }
        let fleet = match raw.fleet {
            None => None,
            Some(f) => {
                if raw.keys.file.is_some() || raw.keys.source == KeySource::File {
                    return Err(err(
                        "keys",
                        "a fleet site holds no keys: the issuer host authorises every load; remove keys.file and keys.source".into(),
                    ));
                }
                if flows.unfunded_test_loads {
                    return Err(err(
                        "flows.unfunded_test_loads",
                        "is not available in fleet mode: every load is authorised by the issuer host".into(),
                    ));
                }
                let host_addr: SocketAddr = f.host_addr.parse().map_err(|_| {
                    err(
                        "fleet.host_addr",
                        format!(
                            "{:?} is not an address:port such as 10.1.0.5:7443",
                            f.host_addr
                        ),
                    )
                })?;
                if f.host_name.trim().is_empty() {
                    return Err(err(
                        "fleet.host_name",
                        "give the name the host's certificate was issued for".into(),
                    ));
                }
                if !(100..=60_000).contains(&f.call_timeout_ms) {
                    return Err(err("fleet.call_timeout_ms", "must be 100 to 60000".into()));
                }
                Some(FleetConfig {
                    host_addr,
                    host_name: f.host_name,
                    ca_cert: f.ca_cert,
                    cert: f.cert,
                    key: f.key,
                    call_timeout: Duration::from_millis(f.call_timeout_ms),
                })
            }
        };
        let mut allowed_origins = loopback_origins(listen.port());
        allowed_origins.extend(
            raw.server
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned()),
        );
        let mut allowed_hosts = loopback_hosts(listen.port());
        allowed_hosts.extend(raw.server.allowed_hosts.iter().cloned());
        Ok(Config {
            source: file.to_owned(),
            listen,
            allowed_origins,
            allowed_hosts,
            log_format: raw.server.log_format,
            log_level: raw.server.log_level,
            limits,
            auth,
            audit: raw.audit,
            data_dir: raw.data.dir,
            keys: raw.keys,
            terminal_id,
            etc_pin: raw.cards.etc_pin,
            lost_card_wait: Duration::from_secs(u64::from(raw.cards.lost_card_wait_hours) * 3600),
            readers,
            flows,
            group: raw.group,
            fleet,
            sim_panel: raw.server.sim_panel,
            demo,
        })
    }

    /// Re-derives the Host and Origin allow-lists for the port actually bound (tests bind port 0).
    pub fn bind_port(&mut self, port: u16, raw_extra_origins: &[String]) {
        self.listen.set_port(port);
        self.allowed_hosts.retain(|h| !is_loopback_host_entry(h));
        self.allowed_hosts.extend(loopback_hosts(port));
        self.allowed_origins.retain(|o| !is_loopback_origin(o));
        self.allowed_origins.extend(loopback_origins(port));
        self.allowed_origins
            .extend(raw_extra_origins.iter().cloned());
    }

    pub fn apdu_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.apdu_timeout_ms)
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

fn is_loopback_host_entry(h: &str) -> bool {
    h.starts_with("127.0.0.1:") || h.starts_with("localhost:") || h.starts_with("[::1]:")
}

fn is_loopback_origin(o: &str) -> bool {
    o.strip_prefix("http://")
        .is_some_and(is_loopback_host_entry)
}

fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or_else(|| format!("{origin:?} must start with http:// or https://"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('*') || rest.contains(' ') {
        return Err(format!(
            "{origin:?} must be scheme://host[:port] with no path and no wildcard"
        ));
    }
    Ok(())
}

fn check_limits(l: &LimitsSection) -> Result<(), (&'static str, String)> {
    let range = |key: &'static str, value: u64, min: u64, max: u64| {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err((key, format!("{value} is outside {min}..={max}")))
        }
    };
    range(
        "request_body_bytes_max",
        l.request_body_bytes_max.into(),
        1024,
        16 * 1024 * 1024,
    )?;
    range(
        "response_body_bytes_max",
        l.response_body_bytes_max.into(),
        1024,
        64 * 1024 * 1024,
    )?;
    range("connections_max", l.connections_max.into(), 2, 10_000)?;
    range(
        "unauthenticated_connections_max",
        l.unauthenticated_connections_max.into(),
        1,
        u64::from(l.connections_max) - 1,
    )?;
    range(
        "unauthenticated_connections_per_process_max",
        l.unauthenticated_connections_per_process_max.into(),
        1,
        l.unauthenticated_connections_max.into(),
    )?;
    range(
        "unauthenticated_idle_timeout_s",
        l.unauthenticated_idle_timeout_s,
        1,
        3600,
    )?;
    range(
        "connection_idle_timeout_s",
        l.connection_idle_timeout_s,
        1,
        24 * 3600,
    )?;
    range(
        "subscriptions_per_connection_max",
        l.subscriptions_per_connection_max.into(),
        1,
        1024,
    )?;
    range(
        "requests_per_second_per_connection",
        l.requests_per_second_per_connection.into(),
        1,
        100_000,
    )?;
    range(
        "request_burst_per_connection",
        l.request_burst_per_connection.into(),
        1,
        100_000,
    )?;
    range("apdu_timeout_ms", l.apdu_timeout_ms, 10, 120_000)?;
    range("lease_ms_max", l.lease_ms_max, 1_000, 24 * 3600 * 1000)?;
    range(
        "lease_ms_default",
        l.lease_ms_default,
        1_000,
        l.lease_ms_max,
    )?;
    range(
        "events_buffered_max",
        l.events_buffered_max as u64,
        16,
        1_000_000,
    )?;
    range("reader_queue_max", l.reader_queue_max as u64, 1, 1024)?;
    Ok(())
}

fn parse_terminal_id(text: &str) -> Option<[u8; 6]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

fn validate_readers(
    readers: &[ReaderSection],
    data_dir: &Path,
) -> Result<Vec<ReaderInstance>, (String, String)> {
    use cardd_reader::trace::{TRACE_BYTES_MAX_MAX, TRACE_BYTES_MAX_MIN};
    let registry = cardd_drivers::registry();
    let mut out = Vec::with_capacity(readers.len());
    for (i, section) in readers.iter().enumerate() {
        if registry.get(&section.driver).is_none() {
            return Err((
                format!("readers[{i}].driver"),
                format!(
                    "no driver named {:?}; compiled-in drivers: {}",
                    section.driver,
                    registry.names().join(", ")
                ),
            ));
        }
        let options = serde_json::to_value(&section.options)
            .map_err(|e| (format!("readers[{i}].options"), e.to_string()))?;
        let trace = match &section.trace {
            None => None,
            Some(t) => {
                if !(TRACE_BYTES_MAX_MIN..=TRACE_BYTES_MAX_MAX).contains(&t.bytes_max) {
                    return Err((
                        format!("readers[{i}].trace.bytes_max"),
                        format!("must be {TRACE_BYTES_MAX_MIN} to {TRACE_BYTES_MAX_MAX} bytes"),
                    ));
                }
                if t.path.as_os_str().is_empty() || t.path.file_name().is_none() {
                    return Err((
                        format!("readers[{i}].trace.path"),
                        "must name a file, e.g. \"traces/reader1.jsonl\"".into(),
                    ));
                }
                Some(TraceConfig {
                    path: data_dir.join(&t.path),
                    bytes_max: t.bytes_max,
                    redact: t.redact,
                })
            }
        };
        out.push(ReaderInstance {
            driver: section.driver.clone(),
            options,
            trace,
        });
    }
    Ok(out)
}

/// The dotted key whose value starts at byte `offset` of `text`, best effort, for messages.
fn key_at(text: &str, offset: usize) -> String {
    let mut section = String::new();
    let mut line_no = 0;
    for (i, line) in text.lines().enumerate() {
        let start = text.lines().take(i).map(|l| l.len() + 1).sum::<usize>();
        if start > offset {
            break;
        }
        line_no = i + 1;
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').to_owned();
        }
    }
    let line = text
        .lines()
        .nth(line_no.saturating_sub(1))
        .unwrap_or("")
        .trim();
    let key = line.split('=').next().unwrap_or("").trim();
    let dotted = if line.starts_with('[') || key.is_empty() {
        section
    } else if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    };
    format!("{dotted} (line {line_no})")
}

/// `docs/config.md`, generated from the option definitions above.
pub fn reference_markdown() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default();
    let defaults = serde_json::to_value(RawConfig::default()).unwrap_or_default();
    let mut out = String::from(
        "# cardd configuration reference\n\n\
         Generated from `daemon/server/src/config.rs` (`cargo test -p cardd config` checks it is current;\n\
         `UPDATE_DOCS=1 cargo test -p cardd config` rewrites it).\n\n\
         One TOML file, passed with `cardd --config FILE`. Unknown keys and bad values are refused with\n\
         the file, the key and the reason. Every key is optional; the default is shown.\n",
    );
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    let props = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .cloned()
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (section, prop) in &props {
        let description = prop
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or("");
        let reference = prop
            .get("$ref")
            .or_else(|| prop.pointer("/items/$ref"))
            .and_then(|r| r.as_str())
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or("");
        let is_array = prop.get("type").and_then(|t| t.as_str()) == Some("array");
        let header = if is_array {
            format!("[[{section}]]")
        } else {
            format!("[{section}]")
        };
        out.push_str(&format!(
            "\n## `{header}`\n\n{description}\n\n| key | default | meaning |\n|---|---|---|\n"
        ));
        let Some(fields) = defs
            .pointer(&format!("/{reference}/properties"))
            .and_then(|f| f.as_object())
        else {
            continue;
        };
        let mut nested = Vec::new();
        for (key, field) in fields {
            if !seen.insert(format!("{section}.{key}")) {
                continue;
            }
            let default = defaults
                .get(section)
                .and_then(|s| s.get(key))
                .or_else(|| field.get("default"));
            out.push_str(&field_row(key, field, default));
            let sub = sub_table(field)
                .filter(|sub| defs.pointer(&format!("/{sub}/properties")).is_some());
            if let Some(sub) = sub {
                nested.push((format!("{section}.{key}"), sub, field.clone()));
            }
        }
        // Sub-tables of a section (`[readers.trace]`): their keys, with the schema's defaults.
        for (header, sub, field) in nested {
            let description = field
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("");
            out.push_str(&format!(
                "\n### `[{header}]`\n\n{description}\n\n| key | default | meaning |\n|---|---|---|\n"
            ));
            let sub_fields = defs
                .pointer(&format!("/{sub}/properties"))
                .and_then(|f| f.as_object())
                .cloned()
                .unwrap_or_default();
            for (key, field) in &sub_fields {
                out.push_str(&field_row(key, field, field.get("default")));
            }
        }
    }
    out
}

/// The `$defs` name of the table a field holds (directly or as an optional), if it is one.
fn sub_table(field: &serde_json::Value) -> Option<String> {
    let direct = field.get("$ref").into_iter();
    let optional = field
        .get("anyOf")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("$ref"));
    direct
        .chain(optional)
        .find_map(|r| r.as_str()?.rsplit('/').next().map(str::to_owned))
}

/// One row of a reference table.
fn field_row(key: &str, field: &serde_json::Value, default: Option<&serde_json::Value>) -> String {
    let default = default
        .map(|v| match v {
            serde_json::Value::Null => "(none)".to_owned(),
            other => format!("`{other}`"),
        })
        .unwrap_or_else(|| "(required)".into());
    let meaning = field
        .get("description")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .replace('\n', " ");
    format!("| `{key}` | {default} | {meaning} |\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_secure_default() {
        let c = Config::from_toml("", "empty.toml").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7420");
        assert!(c
            .allowed_origins
            .contains(&"http://127.0.0.1:7420".to_owned()));
        assert!(c.allowed_hosts.contains(&"localhost:7420".to_owned()));
        assert!(c.readers.is_empty());
    }

    #[test]
    fn bad_input_names_file_key_and_reason() {
        let e = Config::from_toml("[server]\nlisen = \"127.0.0.1:1\"\n", "a.toml").unwrap_err();
        assert_eq!(e.file, "a.toml");
        assert!(e.reason.contains("unknown field `lisen`"), "{e}");
        assert!(e.key.contains("server"), "{e}");

        let e = Config::from_toml("[server]\nlisten = \"0.0.0.0:7420\"\n", "b.toml").unwrap_err();
        assert_eq!(e.key, "server.listen");
        assert!(e.reason.contains("loopback"), "{e}");
        assert!(Config::from_toml(
            "[server]\nlisten = \"0.0.0.0:7420\"\nallow_non_loopback = true\n",
            "b"
        )
        .is_ok());

        let e = Config::from_toml("[limits]\napdu_timeout_ms = 0\n", "c.toml").unwrap_err();
        assert_eq!(e.key, "limits.apdu_timeout_ms");

        let e = Config::from_toml("[server]\nallowed_origins = [\"*\"]\n", "d.toml").unwrap_err();
        assert_eq!(e.key, "server.allowed_origins");

        let e = Config::from_toml("[[readers]]\ndriver = \"nosuch\"\n", "e.toml").unwrap_err();
        assert_eq!(e.key, "readers[0].driver");
        assert!(e.reason.contains("sim"), "{e}");

        let e = Config::from_toml("[cards]\nterminal_id = \"12\"\n", "f.toml").unwrap_err();
        assert_eq!(e.key, "cards.terminal_id");

        let e = Config::from_toml("[keys]\nsource = \"file\"\n", "g.toml").unwrap_err();
        assert_eq!(e.key, "keys.file");

        let e = Config::from_toml("[limits]\nconnections_max = \"many\"\n", "h.toml").unwrap_err();
        assert!(e.key.starts_with("limits.connections_max"), "{e}");
    }

    #[test]
    fn a_reader_trace_is_off_by_default_redacted_when_on_and_bounded() {
        let c = Config::from_toml(
            "[data]\ndir = \"/var/d\"\n[[readers]]\ndriver = \"sim\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.readers[0].trace, None);
        let c = Config::from_toml(
            "[data]\ndir = \"/var/d\"\n[[readers]]\ndriver = \"sim\"\n[readers.trace]\npath = \"traces/r.jsonl\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.readers[0].trace,
            Some(TraceConfig {
                path: PathBuf::from("/var/d/traces/r.jsonl"),
                bytes_max: cardd_reader::trace::TRACE_BYTES_MAX_DEFAULT,
                redact: true,
            })
        );
        let e = Config::from_toml(
            "[[readers]]\ndriver = \"sim\"\n[readers.trace]\npath = \"/t\"\nbytes_max = 10\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key, "readers[0].trace.bytes_max");
    }

    #[test]
    fn readers_carry_driver_options() {
        let c = Config::from_toml(
            "[[readers]]\ndriver = \"sim\"\n[readers.options]\nstate_dir = \"/tmp/x\"\n",
            "r",
        )
        .unwrap();
        assert_eq!(c.readers[0].driver, "sim");
        assert_eq!(c.readers[0].options["state_dir"], "/tmp/x");
    }

    #[test]
    fn a_fleet_site_has_no_keys() {
        let fleet = "[fleet]\nhost_addr = \"10.1.0.5:7443\"\nhost_name = \"host.example\"\n\
                     ca_cert = \"ca.crt\"\ncert = \"site.crt\"\nkey = \"site.key\"\n";
        let c = Config::from_toml(fleet, "site.toml").unwrap();
        let f = c.fleet.expect("fleet mode");
        assert_eq!(f.host_addr.to_string(), "10.1.0.5:7443");
        assert_eq!(f.call_timeout, Duration::from_millis(5_000));
        for (extra, key) in [
            ("[keys]\nsource = \"file\"\nfile = \"keys.toml\"\n", "keys"),
            ("[keys]\nfile = \"keys.toml\"\n", "keys"),
            (
                "[flows]\nunfunded_test_loads = true\n",
                "flows.unfunded_test_loads",
            ),
        ] {
            let e = Config::from_toml(&format!("{fleet}{extra}"), "site.toml").unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let e =
            Config::from_toml(&fleet.replace("10.1.0.5:7443", "host"), "site.toml").unwrap_err();
        assert_eq!(e.key, "fleet.host_addr", "{e}");
    }

    #[test]
    fn demo_is_valid_and_has_the_simulator() {
        let c = Config::demo(PathBuf::from("/tmp/cardd-demo"));
        assert!(c.demo);
        assert_eq!(c.readers[0].driver, "sim");
    }

    #[test]
    fn generated_reference_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
        let fresh = reference_markdown();
        for key in [
            "listen",
            "apdu_timeout_ms",
            "session_idle_timeout_s",
            "terminal_id",
            "driver",
        ] {
            assert!(fresh.contains(&format!("`{key}`")), "reference lacks {key}");
        }
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "docs/config.md is stale: run UPDATE_DOCS=1 cargo test -p cardd config"
        );
    }
}
