//! Flow files: what a flow declares about itself, checked before it may run.
//!
//! Why: a flow is Lua written by people who are not Rust developers, and it moves money. Its
//! metadata (name, version, title, roles, parameters) is what the daemon shows in `flows.list`,
//! what the role check uses, and what a teller's input is validated against **before** any Lua
//! runs. So a flow file is evaluated once, in a sandbox with no API modules and a small budget
//! ([`Limits::for_definition`]), its returned table is checked strictly (unknown keys are
//! refused, so a typo such as `max_length` is not silently ignored), and the source is kept so
//! every run compiles exactly the text that was checked.
//!
//! A flow file returns:
//!
//! ```lua
//! return {
//!   name = "etc.load", version = "1.0.0", title = "圈存", role = {"teller", "kiosk"},
//!   params = {
//!     record_id = { type = "string", required = true, max_len = 64 },
//!     amount = { type = "amount", min = "0.01", max = "10000.00", label = "金额" },
//!     count = { type = "integer", min = 1, max = 100 },
//!     colour = { type = "enum", values = {"0", "1"} },
//!     flag = { type = "boolean" },
//!   },
//!   run = function(ctx, params) ... end,
//! }
//! ```
//!
//! Amounts arrive from clients as decimal yuan strings and reach Lua as **integer fen**.
//! [`FlowRegistry`] loads a directory of such files, reports each bad file with its reason
//! without giving up on the others, and reloads changed files while running flows keep the
//! `Arc<FlowDefinition>` they started with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use cardd_api::money::AMOUNT_FEN_MAX;
use cardd_api::{Fen, Role};
use mlua::{Lua, Table, Value};
use serde_json::{json, Map};

use crate::convert::{lua_to_json, JsonLimits};
use crate::error::{bounded, ScriptError};
use crate::module::{fnv1a64, RunContext};
use crate::pool::StatePool;
use crate::sandbox::{BadReturnError, Limits, Sandbox};

/// Largest flow file, in bytes.
pub const FLOW_SOURCE_BYTES_MAX: usize = 256 * 1024;
/// Most `*.lua` files a registry loads from its directory.
pub const FLOW_FILES_MAX: usize = 256;
/// Longest flow name, in bytes.
pub const FLOW_NAME_BYTES_MAX: usize = 64;
/// Longest version string, in bytes.
pub const FLOW_VERSION_BYTES_MAX: usize = 32;
/// Longest title, in characters.
pub const FLOW_TITLE_CHARS_MAX: usize = 64;
/// Longest flow or parameter description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 1024;
/// Most parameters one flow declares.
pub const PARAMS_MAX: usize = 32;
/// Longest parameter name, in bytes.
pub const PARAM_NAME_BYTES_MAX: usize = 32;
/// Longest parameter label, in characters.
pub const PARAM_LABEL_CHARS_MAX: usize = 32;
/// Largest `max_len` a string parameter may declare, in characters.
pub const STRING_PARAM_CHARS_MAX: usize = 4096;
/// `max_len` of a string parameter that declares none, in characters.
pub const STRING_PARAM_CHARS_DEFAULT: usize = 256;
/// Most values of an enum parameter.
pub const ENUM_VALUES_MAX: usize = 64;
/// Longest enum value, in characters.
pub const ENUM_VALUE_CHARS_MAX: usize = 64;
/// Largest magnitude of an integer parameter: 2^53 - 1, exact in every JSON client.
pub const INTEGER_PARAM_ABS_MAX: i64 = 9_007_199_254_740_991;
/// Most problems one parameter check reports.
pub const PARAM_PROBLEMS_MAX: usize = 64;

/// The JSON Schema pattern of an amount on the wire.
const AMOUNT_PATTERN: &str = "^[0-9]+(\\.[0-9]{1,2})?$";

/// What kind of value a parameter takes, with its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamKind {
    /// Text of `min_len..=max_len` characters, without control characters other than `\n`
    /// and `\t`.
    String { min_len: usize, max_len: usize },
    /// A decimal yuan string on the wire, integer fen in Lua.
    Amount { min: Fen, max: Fen },
    /// A JSON integer.
    Integer { min: i64, max: i64 },
    /// One of a fixed list of strings.
    Enum { values: Vec<String> },
    /// `true` or `false`.
    Boolean,
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamKind,
    pub required: bool,
    /// What a teller sees (`金额`); the name when absent.
    pub label: Option<String>,
    pub description: Option<String>,
}

impl ParamSpec {
    fn shown(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

/// A checked flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDefinition {
    name: String,
    version: String,
    title: String,
    description: Option<String>,
    roles: Vec<Role>,
    params: Vec<ParamSpec>,
    source: Arc<str>,
    chunk_name: String,
    path: Option<PathBuf>,
    fingerprint: u64,
    /// `source` compiled once, when it was checked (debug information kept, so errors name the
    /// same chunk and lines); every run loads it in binary mode.
    bytecode: Arc<[u8]>,
    /// Sandboxed states built ahead of this version's runs.
    states: StatePool,
}

/// Why a flow file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {len} bytes is over the limit of {max} bytes for a flow file")]
    TooLarge { file: String, len: u64, max: usize },
    #[error("{file}: not UTF-8 text")]
    NotUtf8 { file: String },
    #[error("{file}: {source}")]
    Script {
        file: String,
        #[source]
        source: ScriptError,
    },
    #[error("{file}: bad flow definition: {}", problems.join("; "))]
    Metadata { file: String, problems: Vec<String> },
    #[error("cannot read the flow directory {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

impl FlowDefinition {
    /// Reads, evaluates and checks a flow file.
    pub fn load(path: &Path) -> Result<FlowDefinition, FlowError> {
        let file = file_name(path);
        let source = read_source(path, &file)?;
        let mut def = FlowDefinition::from_source(&file, &source)?;
        def.path = Some(path.to_owned());
        Ok(def)
    }

    /// Evaluates and checks flow source; `chunk_name` appears in error messages (the file
    /// name). A binary chunk is refused.
    pub fn from_source(chunk_name: &str, source: &str) -> Result<FlowDefinition, FlowError> {
        let script = |source: ScriptError| FlowError::Script {
            file: chunk_name.to_owned(),
            source,
        };
        let (evaluated, bytecode) = evaluate(chunk_name, source).map_err(script)?;
        let meta = check_metadata(&evaluated).map_err(|problems| FlowError::Metadata {
            file: chunk_name.to_owned(),
            problems,
        })?;
        Ok(FlowDefinition {
            name: meta.name,
            version: meta.version,
            title: meta.title,
            description: meta.description,
            roles: meta.roles,
            params: meta.params,
            source: source.into(),
            chunk_name: chunk_name.to_owned(),
            path: None,
            fingerprint: fnv1a64(source.as_bytes()),
            bytecode,
            states: StatePool::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Roles allowed to run the flow.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Parameters, sorted by name.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// The Lua source that was checked and compiled.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The checked source compiled once, loaded by every run in binary mode.
    pub(crate) fn bytecode_arc(&self) -> &Arc<[u8]> {
        &self.bytecode
    }

    /// Loads this flow's bytecode into `sandbox`, in binary mode (nothing runs). The bytecode
    /// was compiled by this crate from the checked source; Lua code cannot load bytecode.
    pub fn load_into(&self, sandbox: &Sandbox) -> Result<mlua::Function, ScriptError> {
        sandbox.load_bytecode(&self.chunk_name, &self.bytecode)
    }

    /// How many sandboxed states are built and waiting for this version's next runs (at most
    /// [`crate::pool::PREBUILT_STATES_PER_FLOW`]; each serves one run).
    pub fn ready_states(&self) -> usize {
        self.states.ready()
    }

    pub(crate) fn states(&self) -> &StatePool {
        &self.states
    }

    /// The name Lua uses for this chunk in messages (the file name).
    pub fn chunk_name(&self) -> &str {
        &self.chunk_name
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A 64-bit FNV-1a of the source, to tell versions apart (not a security digest).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// JSON Schema (draft 2020-12 subset) of the parameters, for `flows.list`.
    pub fn params_schema(&self) -> serde_json::Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for spec in &self.params {
            let mut schema = match &spec.kind {
                ParamKind::String { min_len, max_len } => {
                    json!({"type": "string", "minLength": min_len, "maxLength": max_len})
                }
                ParamKind::Amount { min, max } => json!({
                    "type": "string",
                    "pattern": AMOUNT_PATTERN,
                    "description": format!("金额（元），{min} 至 {max}"),
                    "x-cardd-amount": {"min": min.to_yuan_string(), "max": max.to_yuan_string()},
                }),
                ParamKind::Integer { min, max } => {
                    json!({"type": "integer", "minimum": min, "maximum": max})
                }
                ParamKind::Enum { values } => json!({"type": "string", "enum": values}),
                ParamKind::Boolean => json!({"type": "boolean"}),
            };
            if let Some(obj) = schema.as_object_mut() {
                if let Some(label) = &spec.label {
                    obj.insert("title".to_owned(), json!(label));
                }
                if let Some(description) = &spec.description {
                    obj.insert("description".to_owned(), json!(description));
                }
            }
            if spec.required {
                required.push(json!(spec.name));
            }
            properties.insert(spec.name.clone(), schema);
        }
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.title,
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": properties,
        })
    }

    /// Checks client parameters against the declaration, before anything runs. Every bad
    /// parameter is reported (up to [`PARAM_PROBLEMS_MAX`]) with a zh-CN message for a teller.
    /// `null` counts as no parameters; a `null` value counts as absent.
    pub fn validate_params(
        &self,
        input: &serde_json::Value,
    ) -> Result<ValidatedParams, ParamError> {
        let empty = Map::new();
        let given = match input {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => &empty,
            _ => {
                return Err(ParamError {
                    problems: vec![ParamProblem {
                        param: String::new(),
                        label: "参数".to_owned(),
                        message: "参数应为对象（参数名 → 值）".to_owned(),
                    }],
                })
            }
        };
        let mut problems = Vec::new();
        let mut values = BTreeMap::new();
        for spec in &self.params {
            let value = given.get(&spec.name).filter(|v| !v.is_null());
            match value {
                None if spec.required => problems.push(problem(spec, "缺少必填参数")),
                None => {}
                Some(value) => match check_value(spec, value) {
                    Ok(v) => {
                        values.insert(spec.name.clone(), v);
                    }
                    Err(message) => problems.push(problem(spec, &message)),
                },
            }
        }
        for key in given.keys() {
            if !self.params.iter().any(|s| &s.name == key) {
                let shown = bounded(key, PARAM_NAME_BYTES_MAX * 2);
                problems.push(ParamProblem {
                    param: shown.clone(),
                    label: shown,
                    message: "未知参数".to_owned(),
                });
            }
        }
        if !problems.is_empty() {
            problems.truncate(PARAM_PROBLEMS_MAX);
            return Err(ParamError { problems });
        }
        Ok(ValidatedParams {
            flow: self.name.clone(),
            version: self.version.clone(),
            fingerprint: self.fingerprint,
            values,
        })
    }
}

fn problem(spec: &ParamSpec, message: &str) -> ParamProblem {
    ParamProblem {
        param: spec.name.clone(),
        label: spec.shown().to_owned(),
        message: message.to_owned(),
    }
}

fn check_value(spec: &ParamSpec, value: &serde_json::Value) -> Result<ParamValue, String> {
    match &spec.kind {
        ParamKind::String { min_len, max_len } => {
            let text = value.as_str().ok_or("应为文本")?;
            let chars = text.chars().count();
            if chars > *max_len {
                return Err(format!("不能超过 {max_len} 个字符"));
            }
            if chars < *min_len {
                return Err(if *min_len == 1 {
                    "不能为空".to_owned()
                } else {
                    format!("不能少于 {min_len} 个字符")
                });
            }
            if text
                .chars()
                .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}')
            {
                return Err("不能包含控制字符".to_owned());
            }
            Ok(ParamValue::Text(text.to_owned()))
        }
        ParamKind::Amount { min, max } => {
            let text = value
                .as_str()
                .ok_or("金额请以文本形式填写，如 \"100.00\"")?;
            let fen = Fen::parse_yuan(text).map_err(|e| e.to_string())?;
            if fen < *min {
                return Err(format!("金额不能小于 {min} 元"));
            }
            if fen > *max {
                return Err(format!("金额不能大于 {max} 元"));
            }
            Ok(ParamValue::Amount(fen))
        }
        ParamKind::Integer { min, max } => {
            let n = value.as_i64().ok_or("应为整数")?;
            if n < *min {
                return Err(format!("不能小于 {min}"));
            }
            if n > *max {
                return Err(format!("不能大于 {max}"));
            }
            Ok(ParamValue::Integer(n))
        }
        ParamKind::Enum { values } => match value.as_str() {
            Some(v) if values.iter().any(|x| x == v) => Ok(ParamValue::Choice(v.to_owned())),
            _ => Err(format!("应为以下之一：{}", values.join("、"))),
        },
        ParamKind::Boolean => value
            .as_bool()
            .map(ParamValue::Flag)
            .ok_or_else(|| "应为 true 或 false".to_owned()),
    }
}

/// A parameter value that passed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Text(String),
    /// Integer fen; Lua receives the integer.
    Amount(Fen),
    Integer(i64),
    Choice(String),
    Flag(bool),
}

/// Parameters checked against one flow definition; only [`FlowDefinition::validate_params`]
/// makes them, and the runner refuses them for any other definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedParams {
    flow: String,
    version: String,
    fingerprint: u64,
    values: BTreeMap<String, ParamValue>,
}

impl ValidatedParams {
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn belongs_to(&self, def: &FlowDefinition) -> bool {
        self.flow == def.name && self.version == def.version && self.fingerprint == def.fingerprint
    }

    /// The Lua table `run` receives: amounts as integer fen, absent optionals as `nil`.
    pub(crate) fn to_lua(&self, lua: &Lua) -> mlua::Result<Table> {
        let table = lua.create_table_with_capacity(0, self.values.len())?;
        for (name, value) in &self.values {
            match value {
                ParamValue::Text(s) | ParamValue::Choice(s) => {
                    table.raw_set(name.as_str(), s.as_str())?
                }
                ParamValue::Amount(Fen(fen)) => table.raw_set(name.as_str(), *fen)?,
                ParamValue::Integer(n) => table.raw_set(name.as_str(), *n)?,
                ParamValue::Flag(b) => table.raw_set(name.as_str(), *b)?,
            }
        }
        Ok(table)
    }
}

/// One bad parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label}：{message}")]
pub struct ParamProblem {
    /// The parameter's name (empty when the whole input is wrong).
    pub param: String,
    /// What the teller sees: the parameter's label, or its name.
    pub label: String,
    /// zh-CN, for a teller.
    pub message: String,
}

/// Every bad parameter of one request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParamError {
    pub problems: Vec<ParamProblem>,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("参数错误：")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("；")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluating a flow file

/// Bounds of the metadata table, as JSON.
const META_JSON: JsonLimits = JsonLimits {
    depth_max: 8,
    bytes_max: 64 * 1024,
    string_bytes_max: 4096,
};

/// What a flow file's returned table held, before checking.
#[derive(Debug)]
struct Evaluated {
    meta: Map<String, serde_json::Value>,
    /// `None` when `run` is a function; otherwise what it was instead.
    run_problem: Option<String>,
    /// Keys other than `run` whose value is a function (not convertible, reported by name).
    function_keys: Vec<String>,
}

/// Compiles `source` (text only) and evaluates it; returns what it returned and its bytecode.
fn evaluate(chunk_name: &str, source: &str) -> Result<(Evaluated, Arc<[u8]>), ScriptError> {
    let ctx = RunContext::new(format!("definition:{chunk_name}"));
    let limits = Limits::for_definition();
    let sandbox = Sandbox::new(&limits, &ctx)?;
    let chunk = sandbox.load(chunk_name, source)?;
    // Debug information is kept: run errors name the chunk and lines as the source would.
    let bytecode: Arc<[u8]> = chunk.dump(false).into();
    let evaluated = sandbox.run(move |lua| {
        let returned: Value = chunk.call(())?;
        let Value::Table(table) = returned else {
            return Err(bad_return(format!(
                "a flow file must return a table, not a {}",
                returned.type_name()
            )));
        };
        let mut meta = Map::new();
        let mut run_problem = Some("`run` is missing".to_owned());
        let mut function_keys = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            let (key, value) = pair?;
            let Value::String(key) = key else {
                return Err(bad_return(format!(
                    "the flow table has a {} key; only names are allowed",
                    key.type_name()
                )));
            };
            let key = key.to_string_lossy();
            if key == "run" {
                run_problem = match value {
                    Value::Function(_) => None,
                    other => Some(format!(
                        "`run` must be a function, not a {}",
                        other.type_name()
                    )),
                };
                continue;
            }
            if value.is_function() {
                function_keys.push(key);
                continue;
            }
            let converted = lua_to_json(lua, &value, &META_JSON).map_err(|e| {
                bad_return(format!("{key}{}", e.to_string().trim_start_matches('$')))
            })?;
            meta.insert(key, converted);
        }
        Ok(Evaluated {
            meta,
            run_problem,
            function_keys,
        })
    })?;
    Ok((evaluated, bytecode))
}

fn bad_return(reason: String) -> mlua::Error {
    mlua::Error::external(BadReturnError(reason))
}

struct Meta {
    name: String,
    version: String,
    title: String,
    description: Option<String>,
    roles: Vec<Role>,
    params: Vec<ParamSpec>,
}

const FLOW_KEYS: &[&str] = &[
    "name",
    "version",
    "title",
    "description",
    "role",
    "params",
    "run",
];

fn check_metadata(evaluated: &Evaluated) -> Result<Meta, Vec<String>> {
    let meta = &evaluated.meta;
    let mut problems = Vec::new();
    if let Some(p) = &evaluated.run_problem {
        problems.push(p.clone());
    }
    for key in &evaluated.function_keys {
        if FLOW_KEYS.contains(&key.as_str()) {
            problems.push(format!("`{key}` must not be a function"));
        }
    }
    for key in meta.keys().chain(&evaluated.function_keys) {
        if !FLOW_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "unknown key `{}` (allowed: {})",
                bounded(key, 64),
                FLOW_KEYS.join(", ")
            ));
        }
    }
    let name = match meta.get("name").and_then(|v| v.as_str()) {
        Some(n) if valid_flow_name(n) => n.to_owned(),
        Some(n) => {
            problems.push(format!(
                "name {:?} must be lower-case words of [a-z0-9_] joined by dots, like \"etc.load\", \
                 at most {FLOW_NAME_BYTES_MAX} bytes",
                bounded(n, 80)
            ));
            String::new()
        }
        None => {
            problems.push("`name` is missing or not a string".to_owned());
            String::new()
        }
    };
    let version = match meta.get("version").and_then(|v| v.as_str()) {
        Some(v) if valid_version(v) => v.to_owned(),
        Some(v) => {
            problems.push(format!(
                "version {:?} must look like \"1.2.3\" (optionally \"1.2.3-beta.1\")",
                bounded(v, 40)
            ));
            String::new()
        }
        None => {
            problems.push("`version` is missing or not a string".to_owned());
            String::new()
        }
    };
    let title =
        text_field(meta, "title", FLOW_TITLE_CHARS_MAX, true, &mut problems).unwrap_or_default();
    let description = text_field(
        meta,
        "description",
        DESCRIPTION_CHARS_MAX,
        false,
        &mut problems,
    );
    let roles = check_roles(meta.get("role"), &mut problems);
    let params = check_params(meta.get("params"), &mut problems);
    if problems.is_empty() {
        Ok(Meta {
            name,
            version,
            title,
            description,
            roles,
            params,
        })
    } else {
        Err(problems)
    }
}

fn text_field(
    meta: &Map<String, serde_json::Value>,
    key: &str,
    chars_max: usize,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    match meta.get(key) {
        None if !required => None,
        Some(serde_json::Value::String(s))
            if !s.trim().is_empty() && s.chars().count() <= chars_max =>
        {
            Some(s.clone())
        }
        _ => {
            problems.push(format!(
                "`{key}` must be a non-empty string of at most {chars_max} characters"
            ));
            None
        }
    }
}

fn valid_flow_name(name: &str) -> bool {
    name.len() <= FLOW_NAME_BYTES_MAX && name.split('.').all(valid_identifier)
}

/// `[a-z][a-z0-9_]*`
fn valid_identifier(word: &str) -> bool {
    let mut bytes = word.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `MAJOR.MINOR.PATCH` with an optional `-prerelease` of `[0-9A-Za-z.-]`.
fn valid_version(version: &str) -> bool {
    if version.len() > FLOW_VERSION_BYTES_MAX {
        return false;
    }
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

fn check_roles(value: Option<&serde_json::Value>, problems: &mut Vec<String>) -> Vec<Role> {
    let known = Role::ALL
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let Some(serde_json::Value::Array(items)) = value else {
        problems.push(format!(
            "`role` must be a non-empty list of roles, like {{\"teller\"}} (known: {known})"
        ));
        return Vec::new();
    };
    let mut roles = Vec::new();
    for item in items {
        match item.as_str().and_then(Role::parse) {
            Some(role) if roles.contains(&role) => {
                problems.push(format!("role `{}` is listed twice", role.as_str()));
            }
            Some(role) => roles.push(role),
            None => problems.push(format!("unknown role {item} (known: {known})")),
        }
    }
    if items.is_empty() {
        problems.push(format!(
            "`role` must name at least one role (known: {known})"
        ));
    }
    roles
}

fn check_params(value: Option<&serde_json::Value>, problems: &mut Vec<String>) -> Vec<ParamSpec> {
    let empty = Map::new();
    let specs = match value {
        None => &empty,
        Some(serde_json::Value::Object(map)) => map,
        // `{}` written in Lua converts to an object; a list of specs is the mistake to name.
        Some(_) => {
            problems.push(
                "`params` must be a table keyed by parameter name, like { amount = { type = \"amount\" } }"
                    .to_owned(),
            );
            return Vec::new();
        }
    };
    if specs.len() > PARAMS_MAX {
        problems.push(format!(
            "{} parameters is over the limit of {PARAMS_MAX}",
            specs.len()
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, spec) in specs {
        let before = problems.len();
        if name.len() > PARAM_NAME_BYTES_MAX || !valid_identifier(name) {
            problems.push(format!(
                "parameter name {:?} must be [a-z][a-z0-9_]*, at most {PARAM_NAME_BYTES_MAX} bytes",
                bounded(name, 40)
            ));
            continue;
        }
        if let Some(parsed) = check_param(name, spec, problems) {
            if problems.len() == before {
                out.push(parsed);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn check_param(
    name: &str,
    spec: &serde_json::Value,
    problems: &mut Vec<String>,
) -> Option<ParamSpec> {
    let at = format!("params.{name}");
    let Some(spec) = spec.as_object() else {
        problems.push(format!("{at} must be a table like {{ type = \"string\" }}"));
        return None;
    };
    let Some(kind_name) = spec.get("type").and_then(|t| t.as_str()) else {
        problems.push(format!(
            "{at}.type is missing (one of string, amount, integer, enum, boolean)"
        ));
        return None;
    };
    let extra: &[&str] = match kind_name {
        "string" => &["min_len", "max_len"],
        "amount" | "integer" => &["min", "max"],
        "enum" => &["values"],
        "boolean" => &[],
        other => {
            problems.push(format!(
                "{at}.type {:?} is not one of string, amount, integer, enum, boolean",
                bounded(other, 40)
            ));
            return None;
        }
    };
    for key in spec.keys() {
        let common = ["type", "required", "label", "description"];
        if !common.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            let mut allowed: Vec<&str> = common.to_vec();
            allowed.extend_from_slice(extra);
            problems.push(format!(
                "{at}: unknown key `{}` for type {kind_name} (allowed: {})",
                bounded(key, 40),
                allowed.join(", ")
            ));
        }
    }
    let required = match spec.get("required") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(format!("{at}.required must be true or false"));
            false
        }
    };
    let label = text_field(spec, "label", PARAM_LABEL_CHARS_MAX, false, problems);
    let description = text_field(spec, "description", DESCRIPTION_CHARS_MAX, false, problems);
    let kind = match kind_name {
        "string" => check_string_kind(&at, spec, required, problems)?,
        "amount" => check_amount_kind(&at, spec, problems)?,
        "integer" => check_integer_kind(&at, spec, problems)?,
        "enum" => check_enum_kind(&at, spec, problems)?,
        _ => ParamKind::Boolean,
    };
    Some(ParamSpec {
        name: name.to_owned(),
        kind,
        required,
        label,
        description,
    })
}

fn bounded_int(
    at: &str,
    spec: &Map<String, serde_json::Value>,
    key: &str,
    range: (i64, i64),
    default: i64,
    problems: &mut Vec<String>,
) -> Option<i64> {
    match spec.get(key) {
        None => Some(default),
        Some(v) => match v.as_i64() {
            Some(n) if n >= range.0 && n <= range.1 => Some(n),
            _ => {
                problems.push(format!(
                    "{at}.{key} must be an integer from {} to {}",
                    range.0, range.1
                ));
                None
            }
        },
    }
}

fn check_string_kind(
    at: &str,
    spec: &Map<String, serde_json::Value>,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<ParamKind> {
    let limit = i64::try_from(STRING_PARAM_CHARS_MAX).unwrap_or(i64::MAX);
    let default_max = i64::try_from(STRING_PARAM_CHARS_DEFAULT).unwrap_or(i64::MAX);
    let max_len = bounded_int(at, spec, "max_len", (1, limit), default_max, problems)?;
    // A required text must not be empty unless the flow says so.
    let min_len = bounded_int(
        at,
        spec,
        "min_len",
        (0, limit),
        i64::from(required),
        problems,
    )?;
    if min_len > max_len {
        problems.push(format!("{at}.min_len is larger than max_len"));
        return None;
    }
    Some(ParamKind::String {
        min_len: usize::try_from(min_len).ok()?,
        max_len: usize::try_from(max_len).ok()?,
    })
}

fn check_amount_kind(
    at: &str,
    spec: &Map<String, serde_json::Value>,
    problems: &mut Vec<String>,
) -> Option<ParamKind> {
    let mut bound = |key: &str, default: Fen| match spec.get(key) {
        None => Some(default),
        Some(serde_json::Value::String(s)) => match Fen::parse_yuan(s) {
            Ok(fen) => Some(fen),
            Err(e) => {
                problems.push(format!("{at}.{key} {s:?}: {e}"));
                None
            }
        },
        Some(_) => {
            problems.push(format!(
                "{at}.{key} must be a decimal yuan string like \"0.01\""
            ));
            None
        }
    };
    let min = bound("min", Fen(1));
    let max = bound("max", Fen(AMOUNT_FEN_MAX));
    let (min, max) = (min?, max?);
    if min > max {
        problems.push(format!("{at}.min is larger than max"));
        return None;
    }
    Some(ParamKind::Amount { min, max })
}

fn check_integer_kind(
    at: &str,
    spec: &Map<String, serde_json::Value>,
    problems: &mut Vec<String>,
) -> Option<ParamKind> {
    let range = (-INTEGER_PARAM_ABS_MAX, INTEGER_PARAM_ABS_MAX);
    let min = bounded_int(at, spec, "min", range, range.0, problems);
    let max = bounded_int(at, spec, "max", range, range.1, problems);
    let (min, max) = (min?, max?);
    if min > max {
        problems.push(format!("{at}.min is larger than max"));
        return None;
    }
    Some(ParamKind::Integer { min, max })
}

fn check_enum_kind(
    at: &str,
    spec: &Map<String, serde_json::Value>,
    problems: &mut Vec<String>,
) -> Option<ParamKind> {
    let Some(serde_json::Value::Array(items)) = spec.get("values") else {
        problems.push(format!("{at}.values must be a list of strings"));
        return None;
    };
    if items.is_empty() || items.len() > ENUM_VALUES_MAX {
        problems.push(format!(
            "{at}.values must list 1 to {ENUM_VALUES_MAX} strings"
        ));
        return None;
    }
    let mut values: Vec<String> = Vec::new();
    for item in items {
        match item.as_str() {
            Some(v) if v.is_empty() || v.chars().count() > ENUM_VALUE_CHARS_MAX => {
                problems.push(format!(
                    "{at}.values: {v:?} must have 1 to {ENUM_VALUE_CHARS_MAX} characters"
                ));
            }
            Some(v) if values.iter().any(|x| x == v) => {
                problems.push(format!("{at}.values: {v:?} is listed twice"));
            }
            Some(v) => values.push(v.to_owned()),
            None => problems.push(format!(
                "{at}.values: {item} is not a string (write \"1\", not 1)"
            )),
        }
    }
    Some(ParamKind::Enum { values })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn read_source(path: &Path, file: &str) -> Result<String, FlowError> {
    let io = |source| FlowError::Io {
        file: file.to_owned(),
        source,
    };
    let handle = fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(FLOW_SOURCE_BYTES_MAX).unwrap_or(u64::MAX);
    handle.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > FLOW_SOURCE_BYTES_MAX {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(limit + 1);
        return Err(FlowError::TooLarge {
            file: file.to_owned(),
            len,
            max: FLOW_SOURCE_BYTES_MAX,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        if e.as_bytes().first() == Some(&0x1b) {
            FlowError::Script {
                file: file.to_owned(),
                source: ScriptError::Refused {
                    reason: format!(
                        "{file}: binary (precompiled) Lua chunks are not accepted; load source text"
                    ),
                },
            }
        } else {
            FlowError::NotUtf8 {
                file: file.to_owned(),
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The registry

/// A flow file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowProblem {
    /// The file name (not the full path).
    pub file: String,
    pub reason: String,
}

/// What a reload changed, by flow name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Every file not loaded in this pass (not only new ones).
    pub problems: Vec<FlowProblem>,
}

#[derive(Debug, Default)]
struct RegistryState {
    by_name: BTreeMap<String, Arc<FlowDefinition>>,
    by_file: BTreeMap<PathBuf, Arc<FlowDefinition>>,
    problems: Vec<FlowProblem>,
}

/// The flows of one directory (`*.lua`, not recursive, at most [`FLOW_FILES_MAX`]).
///
/// Lookups hand out `Arc<FlowDefinition>`, so a reload never changes a run already started.
#[derive(Debug)]
pub struct FlowRegistry {
    dir: PathBuf,
    state: RwLock<RegistryState>,
    reloading: Mutex<()>,
}

impl FlowRegistry {
    /// Loads every flow file of `dir`. Bad files are reported in [`FlowRegistry::problems`];
    /// only an unreadable directory is an error.
    pub fn scan(dir: &Path) -> Result<FlowRegistry, FlowError> {
        let registry = FlowRegistry {
            dir: dir.to_owned(),
            state: RwLock::new(RegistryState::default()),
            reloading: Mutex::new(()),
        };
        registry.reload_if_changed()?;
        Ok(registry)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current definition of flow `name`.
    pub fn get(&self, name: &str) -> Option<Arc<FlowDefinition>> {
        self.read().by_name.get(name).cloned()
    }

    /// All current definitions, by name.
    pub fn list(&self) -> Vec<Arc<FlowDefinition>> {
        self.read().by_name.values().cloned().collect()
    }

    /// Files of the last scan that were not loaded.
    pub fn problems(&self) -> Vec<FlowProblem> {
        self.read().problems.clone()
    }

    /// Re-reads the directory. A file whose content is unchanged keeps its definition (the
    /// same `Arc`); a changed file is evaluated again and replaces it only if it is good (a bad
    /// edit removes the flow and is reported, rather than leaving a stale version running under
    /// the new file's name). Files are small and few, so content is compared directly.
    pub fn reload_if_changed(&self) -> Result<ReloadReport, FlowError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let files = self.list_files()?;
        let old_files = self.read().by_file.clone();
        let old_names = self.read().by_name.clone();
        let mut next = RegistryState::default();
        for path in files.kept {
            let file = file_name(&path);
            let loaded = read_source(&path, &file).and_then(|source| match old_files.get(&path) {
                Some(old) if old.source() == source => Ok(old.clone()),
                _ => FlowDefinition::from_source(&file, &source).map(|mut def| {
                    def.path = Some(path.clone());
                    Arc::new(def)
                }),
            });
            let def = match loaded {
                Ok(def) => def,
                Err(e) => {
                    next.problems.push(FlowProblem {
                        file,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            if let Some(first) = next.by_name.get(def.name()) {
                next.problems.push(FlowProblem {
                    file,
                    reason: format!(
                        "flow name `{}` is already defined by {}",
                        def.name(),
                        first.chunk_name()
                    ),
                });
                continue;
            }
            next.by_name.insert(def.name().to_owned(), def.clone());
            next.by_file.insert(path, def);
        }
        for skipped in files.skipped {
            next.problems.push(FlowProblem {
                file: file_name(&skipped),
                reason: format!("more than {FLOW_FILES_MAX} flow files; this one was not loaded"),
            });
        }
        let mut report = ReloadReport {
            problems: next.problems.clone(),
            ..ReloadReport::default()
        };
        for (name, def) in &next.by_name {
            match old_names.get(name) {
                None => report.added.push(name.clone()),
                Some(old) if !Arc::ptr_eq(old, def) => report.updated.push(name.clone()),
                Some(_) => {}
            }
        }
        report.removed = old_names
            .keys()
            .filter(|n| !next.by_name.contains_key(*n))
            .cloned()
            .collect();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(report)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn list_files(&self) -> Result<ListedFiles, FlowError> {
        let dir_error = |source| FlowError::Dir {
            dir: self.dir.display().to_string(),
            source,
        };
        let mut files = BTreeSet::new();
        for entry in fs::read_dir(&self.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let path = entry.path();
            let is_lua = path.extension().is_some_and(|e| e == "lua");
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if is_lua && !hidden && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                files.insert(path);
            }
        }
        let mut kept: Vec<PathBuf> = files.into_iter().collect();
        let skipped = if kept.len() > FLOW_FILES_MAX {
            kept.split_off(FLOW_FILES_MAX)
        } else {
            Vec::new()
        };
        Ok(ListedFiles { kept, skipped })
    }
}

struct ListedFiles {
    kept: Vec<PathBuf>,
    skipped: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        for good in ["etc.load", "a", "city.card_query2", "x.y.z"] {
            assert!(valid_flow_name(good), "{good}");
        }
        for bad in [
            "",
            "Etc.load",
            "etc..load",
            ".etc",
            "etc.",
            "1etc",
            "etc-load",
            "etc load",
        ] {
            assert!(!valid_flow_name(bad), "{bad}");
        }
        for good in ["1.0.0", "0.12.3", "1.0.0-beta.1", "2.0.0-rc-1"] {
            assert!(valid_version(good), "{good}");
        }
        for bad in [
            "1.0",
            "1",
            "v1.0.0",
            "1.0.0-",
            "1.0.0+build",
            "1.a.0",
            "1.0.0.0",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
