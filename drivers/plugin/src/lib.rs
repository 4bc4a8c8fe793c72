//! `cardd-plugin`: the out-of-process plugin driver of cardd.
//!
//! Reader vendors ship closed SDKs (DLLs, Java jars, Python wheels) that cardd cannot link and
//! should not trust: a crash or a deadlock inside one must not take the daemon, or another
//! vendor's readers, down with it. So a vendor wraps its SDK in a small program, in any
//! language, that speaks `cardd-plugin/1` (newline-delimited JSON over its stdin and stdout,
//! specified in `PROTOCOL.md`), and this driver runs it as a child process whose readers
//! appear in cardd as ordinary readers with ids `plugin:<instance name>:<plugin's reader id>`.
//!
//! * [`protocol`] — the wire messages, error codes and limits ([`MESSAGE_BYTES_MAX`]);
//! * [`options`] — [`PluginOptions`], the driver's configuration table;
//! * [`reader`] — [`PluginFactory`], [`PluginReader`] and [`PluginHotplug`], the
//!   `cardd-reader` face of a plugin;
//! * [`supervisor`] — the thread that starts, watches, kills and restarts the child (the
//!   state it shares with sessions, and the request path, live in a private `shared` module);
//! * [`driver`] — [`PLUGIN_DRIVER`] for the daemon's registry;
//! * [`error`] — [`PluginError`], what is specific to plugins.
//!
//! `template/` is a complete plugin in standard-library Python, the template vendors copy (their
//! part, the protocol plumbing and the optional test hooks in separate files);
//! `examples/example_plugin.py` runs it, and the tests run the conformance kit against it
//! through its test hooks (feature `test_hooks`, [`protocol::test_method`]).
#![forbid(unsafe_code)]

pub mod driver;
pub mod error;
pub mod options;
pub mod protocol;
pub mod reader;
mod shared;
pub mod supervisor;

pub use driver::{PluginDriver, PLUGIN_DRIVER};
pub use error::PluginError;
pub use options::PluginOptions;
pub use protocol::{ErrorCode, MESSAGE_BYTES_MAX, PROTOCOL_VERSION};
pub use reader::{PluginFactory, PluginHotplug, PluginReader};
pub use shared::{PluginState, PluginStats, PluginStatus};

/// The driver's registered name.
pub const DRIVER_NAME: &str = "plugin";

/// The cardd reader id of reader `reader` of plugin instance `instance`.
pub fn reader_id(instance: &str, reader: &str) -> String {
    format!("{DRIVER_NAME}:{instance}:{reader}")
}
