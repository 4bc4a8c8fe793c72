//! The `plugin` driver as the daemon's registry sees it.
//!
//! `driver = "plugin"` with a `command` runs one out-of-process plugin (see `PROTOCOL.md`);
//! configure several entries to run several plugins, each supervised on its own so one
//! vendor's crash never touches another's readers.

use std::sync::Arc;

use cardd_reader::{Driver, DriverOptions, ReaderError, ReaderFactory};

use crate::options::PluginOptions;
use crate::reader::PluginFactory;
use crate::DRIVER_NAME;

/// The driver descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginDriver;

/// The descriptor the built-in registry registers.
pub static PLUGIN_DRIVER: PluginDriver = PluginDriver;

impl Driver for PluginDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn summary(&self) -> &'static str {
        "readers served by a supervised child process speaking cardd-plugin/1 over stdin/stdout (vendor SDKs in any language)"
    }

    fn instantiate(&self, options: &DriverOptions) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
        let options: PluginOptions = options.parse()?;
        Ok(Arc::new(PluginFactory::new(options)?))
    }

    /// The options parse and validate; the program is looked for, not started.
    fn check(&self, options: &DriverOptions) -> Result<Vec<String>, ReaderError> {
        let options: PluginOptions = options.parse()?;
        options.validate()?;
        let mut warnings = Vec::new();
        let command = &options.command;
        if command.components().count() > 1 && !command.exists() {
            warnings.push(format!(
                "plugin {:?}: the program {} does not exist (yet): install it before starting cardd",
                options.name,
                command.display()
            ));
        }
        Ok(warnings)
    }
}
