//! The plugin driver's own errors.
//!
//! Sessions report failures as `cardd_reader::ReaderError` like every driver; what is specific
//! to a plugin (it would not start, it speaks another protocol version, it answered with a code
//! cardd does not know) is a [`PluginError`], carried as the source of
//! `ReaderError::Driver` or `ReaderError::Config` so callers can `downcast_ref` it, and kept as
//! the supervisor's last error for diagnostics.

/// What went wrong with a plugin process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The program could not be started at all.
    #[error("cannot start plugin {plugin} ({command}): {detail}; check the `command` option and that the file is executable (cardd keeps retrying, and the plugin's readers appear once it starts)")]
    Spawn {
        plugin: String,
        command: String,
        detail: String,
        /// True when retrying cannot help (no such file, permission denied).
        permanent: bool,
    },

    /// The plugin does not speak a protocol version cardd offers.
    #[error("plugin {plugin} speaks {plugin_speaks}, but cardd speaks {cardd_speaks}: install a plugin built for {cardd_speaks} (cardd keeps retrying, and the plugin's readers appear once it matches)")]
    VersionMismatch {
        plugin: String,
        cardd_speaks: String,
        plugin_speaks: String,
    },

    /// A request went unanswered past its timeout plus grace: the plugin is considered hung.
    #[error("plugin {plugin} did not answer {method} within {waited_ms} ms; it is restarted")]
    Unresponsive {
        plugin: String,
        method: String,
        waited_ms: u64,
    },

    /// `hello` went unanswered within `hello_timeout_ms` (plus grace): usually an SDK that
    /// initialises before the plugin answers.
    #[error("plugin {plugin} did not answer hello within {waited_ms} ms; it is restarted with a growing backoff. A plugin whose SDK starts slowly should answer hello at once and report its readers later with reader_added (PROTOCOL.md, \"Slow SDKs\"); otherwise raise hello_timeout_ms")]
    HelloTimeout { plugin: String, waited_ms: u64 },

    /// An operator asked for a restart (`readers.restart_plugin`).
    #[error("plugin {plugin} was restarted by an operator ({reason})")]
    Restarted { plugin: String, reason: String },

    /// The process ended (or closed its stdout) on its own.
    #[error("plugin {plugin} exited unexpectedly ({status}); it is restarted")]
    Exited { plugin: String, status: String },

    /// The plugin kept sending lines that are not protocol messages.
    #[error("plugin {plugin} sent {count} malformed messages within {window_ms} ms (last: {last}); it is restarted")]
    Misbehaving {
        plugin: String,
        count: usize,
        window_ms: u64,
        last: String,
    },

    /// The plugin answered a request with an error code cardd maps to no `ReaderError`.
    #[error("plugin {plugin} failed {method}: {code}: {message}")]
    Remote {
        plugin: String,
        method: String,
        code: String,
        message: String,
    },

    /// An answer that does not have the shape the protocol gives it.
    #[error("plugin {plugin} answered {method} with a malformed result: {detail}")]
    Malformed {
        plugin: String,
        method: String,
        detail: String,
    },

    /// The driver instance was shut down.
    #[error("plugin {plugin} is stopped")]
    Stopped { plugin: String },
}

impl PluginError {
    /// True when restarting the plugin cannot fix this (a configuration problem).
    pub fn is_permanent(&self) -> bool {
        match self {
            PluginError::Spawn { permanent, .. } => *permanent,
            PluginError::VersionMismatch { .. } => true,
            _ => false,
        }
    }
}
