//! `log.debug/info/warn/error(message, fields)`: the built-in example of a [`LuaModule`].
//!
//! Why flows log through this and not `print`: output must carry the run id and flow so an
//! operator can follow one load through the daemon's logs, must go where the daemon's logs go
//! (`tracing`), and must be bounded (a loop of `log.info` cannot fill a disk). Messages are cut
//! at [`LOG_MESSAGE_BYTES_MAX`], fields are converted to JSON within [`LOG_FIELDS_BYTES_MAX`],
//! and a run writes at most [`LOG_LINES_MAX`] lines; later lines are dropped with one warning.
//! An optional sink receives every record too (tests, or forwarding to a client's event stream).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use mlua::{Lua, Value};

use crate::convert::{lua_to_json, JsonLimits, JSON_DEPTH_MAX};
use crate::error::bounded;
use crate::module::{install_module, ArgError, LuaModule, RunContext};

/// Longest log message kept, in bytes (longer ones are cut, not refused).
pub const LOG_MESSAGE_BYTES_MAX: usize = 1024;
/// Largest `fields` table, as JSON, in bytes (larger ones are refused: a script bug).
pub const LOG_FIELDS_BYTES_MAX: usize = 4096;
/// Most log lines one run may write.
pub const LOG_LINES_MAX: u32 = 1000;

/// Severity of a flow's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    const ALL: [LogLevel; 4] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a flow logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub run_id: String,
    pub flow: Option<String>,
    pub level: LogLevel,
    pub message: String,
    pub fields: serde_json::Value,
}

type Sink = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// The `log` module.
#[derive(Clone, Default)]
pub struct LogModule {
    sink: Option<Sink>,
}

impl fmt::Debug for LogModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogModule")
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl LogModule {
    /// Logs to `tracing` only (target `cardd::flow`).
    pub fn new() -> LogModule {
        LogModule::default()
    }

    /// Logs to `tracing` and also hands every record to `sink`.
    pub fn with_sink(sink: impl Fn(&LogRecord) + Send + Sync + 'static) -> LogModule {
        LogModule {
            sink: Some(Arc::new(sink)),
        }
    }
}

impl LuaModule for LogModule {
    fn name(&self) -> &'static str {
        "log"
    }

    fn register(&self, lua: &Lua, ctx: &RunContext) -> mlua::Result<()> {
        let table = lua.create_table()?;
        let lines = Arc::new(AtomicU32::new(0));
        for level in LogLevel::ALL {
            let ctx = ctx.clone();
            let sink = self.sink.clone();
            let lines = lines.clone();
            let f = lua.create_function(move |lua, (message, fields): (Value, Value)| {
                ctx.check_active("log")?;
                let message = match &message {
                    Value::String(s) => {
                        // Cut before converting: the string may be megabytes.
                        let bytes = s.as_bytes();
                        let head = &bytes[..bytes.len().min(LOG_MESSAGE_BYTES_MAX + 1)];
                        bounded(&String::from_utf8_lossy(head), LOG_MESSAGE_BYTES_MAX)
                    }
                    other => {
                        return Err(mlua::Error::external(ArgError::WrongType {
                            what: format!("log.{} message", level.name()),
                            expected: "a string",
                            got: other.type_name(),
                        }))
                    }
                };
                let limits = JsonLimits {
                    depth_max: JSON_DEPTH_MAX.min(8),
                    bytes_max: LOG_FIELDS_BYTES_MAX,
                    string_bytes_max: LOG_FIELDS_BYTES_MAX,
                };
                let fields = match &fields {
                    Value::Nil => serde_json::Value::Null,
                    Value::Table(_) => lua_to_json(lua, &fields, &limits).map_err(|e| {
                        mlua::Error::external(ArgError::Convert {
                            what: format!("log.{} fields", level.name()),
                            reason: e.to_string(),
                        })
                    })?,
                    other => {
                        return Err(mlua::Error::external(ArgError::WrongType {
                            what: format!("log.{} fields", level.name()),
                            expected: "a table or nil",
                            got: other.type_name(),
                        }))
                    }
                };
                let n = lines.fetch_add(1, Ordering::Relaxed);
                if n > LOG_LINES_MAX {
                    return Ok(());
                }
                let record = if n == LOG_LINES_MAX {
                    LogRecord {
                        run_id: ctx.run_id().to_owned(),
                        flow: ctx.flow().map(|(name, _)| name.to_owned()),
                        level: LogLevel::Warn,
                        message: format!(
                            "log line limit of {LOG_LINES_MAX} reached; later lines are dropped"
                        ),
                        fields: serde_json::Value::Null,
                    }
                } else {
                    LogRecord {
                        run_id: ctx.run_id().to_owned(),
                        flow: ctx.flow().map(|(name, _)| name.to_owned()),
                        level,
                        message,
                        fields,
                    }
                };
                emit(&record);
                if let Some(sink) = &sink {
                    sink(&record);
                }
                Ok(())
            })?;
            table.raw_set(level.name(), f)?;
        }
        install_module(lua, self.name(), table)
    }
}

fn emit(record: &LogRecord) {
    let flow = record.flow.as_deref().unwrap_or("");
    let run_id = record.run_id.as_str();
    let fields = &record.fields;
    let message = record.message.as_str();
    match record.level {
        LogLevel::Debug => {
            tracing::debug!(target: "cardd::flow", run_id, flow, %fields, "{message}")
        }
        LogLevel::Info => tracing::info!(target: "cardd::flow", run_id, flow, %fields, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "cardd::flow", run_id, flow, %fields, "{message}"),
        LogLevel::Error => {
            tracing::error!(target: "cardd::flow", run_id, flow, %fields, "{message}")
        }
    }
}
