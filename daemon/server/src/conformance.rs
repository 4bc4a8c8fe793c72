//! `cardd conformance`: the driver conformance kit (`cardd_conformance`) against a configured
//! reader or a plugin program, for reader vendors and installers, without Rust.
//!
//! * `--plugin COMMAND [ARGS...]` runs the program as plugin instance `conformance` (no
//!   configuration needed); `--config FILE --reader ID` builds the `[[readers]]` instances of a
//!   configuration and tests the reader with that cardd reader id.
//! * A plugin that announces the `test_hooks` feature is driven through its test hooks
//!   (PROTOCOL.md §12): its simulated card is pulled, pulled during a command and made silent.
//!   Any other reader gets [`GuidedHarness`]: a person is asked (zh-CN, then English) to move
//!   the card, and each step waits for the reader to see it, bounded by the step timeout.
//!
//! The checks, the report and its exit codes ([`EXIT_PASSED`], [`EXIT_FAILED`], [`EXIT_ERROR`])
//! are documented in docs/driver-guide.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_conformance::{run, Arranged, GuidedHarness, Harness, Report};
use cardd_plugin::protocol::{feature, test_method};
use cardd_plugin::{PluginFactory, PluginOptions, DRIVER_NAME as PLUGIN_DRIVER};
use cardd_reader::{DriverOptions, ReaderFactory, SupervisedState};
use serde_json::json;

use crate::config::Config;

/// Every check passed or was skipped.
pub const EXIT_PASSED: u8 = 0;
/// A check failed.
pub const EXIT_FAILED: u8 = 1;
/// The kit could not run: bad arguments or configuration, a plugin that does not start, a
/// reader that is not there.
pub const EXIT_ERROR: u8 = 2;
/// The plugin instance name `--plugin` uses (reader ids `plugin:conformance:<id>`).
pub const PLUGIN_INSTANCE: &str = "conformance";
/// How long the kit waits for the reader to be listed (a plugin may still be starting).
pub const READER_WAIT_MS: u64 = 15_000;
/// `hello_timeout_ms` for `--plugin`: generous, for interpreters and SDKs that start slowly.
pub const PLUGIN_HELLO_TIMEOUT_MS: u64 = 30_000;

/// What to test.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A plugin program and its arguments; `reader` is the plugin's own reader id (default: the
    /// first it lists).
    Plugin {
        command: Vec<String>,
        reader: Option<String>,
    },
    /// A reader of a configuration's `[[readers]]` instances, by cardd reader id.
    Configured { config: Box<Config>, reader: String },
}

/// Why the kit could not run (exit code [`EXIT_ERROR`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(String);

/// Builds the subject's reader, picks the harness and runs the kit. `prompt` shows a guided
/// step's instruction to the person at the reader.
pub fn run_subject(
    subject: &Subject,
    step_timeout: Duration,
    prompt: Box<dyn FnMut(&str) + Send>,
) -> Result<Report, SetupError> {
    let mut harness: Box<dyn Harness> = match subject {
        Subject::Plugin { command, reader } => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| SetupError("--plugin needs the plugin's command".into()))?;
            let mut options = PluginOptions::new(PLUGIN_INSTANCE, program);
            options.args = args.to_vec();
            options.hello_timeout_ms = PLUGIN_HELLO_TIMEOUT_MS;
            let plugin = Arc::new(
                PluginFactory::new(options)
                    .map_err(|e| SetupError(format!("the plugin does not start: {e}")))?,
            );
            let want = reader
                .as_deref()
                .map(|id| cardd_plugin::reader_id(PLUGIN_INSTANCE, id));
            let reader_id = wait_listed(plugin.as_ref(), want.as_deref())?;
            let name = format!("plugin {}", command.join(" "));
            harness_for(
                plugin.clone(),
                Some(plugin),
                name,
                reader_id,
                step_timeout,
                prompt,
            )?
        }
        Subject::Configured { config, reader } => {
            let (factory, plugin) = configured(config, reader)?;
            let name = format!("{} driver", factory.driver());
            harness_for(factory, plugin, name, reader.clone(), step_timeout, prompt)?
        }
    };
    Ok(run(harness.as_mut()))
}

/// Failed starts after which `--plugin` gives up (the supervisor would keep retrying).
pub const PLUGIN_STARTS_MAX: u64 = 3;

/// Waits (bounded) for the plugin to list `want` (a cardd reader id), or any reader; its id.
/// A plugin that cannot start (a missing program, a version mismatch, or
/// [`PLUGIN_STARTS_MAX`] failed starts) ends the wait at once, with the plugin's own error.
fn wait_listed(factory: &dyn ReaderFactory, want: Option<&str>) -> Result<String, SetupError> {
    let deadline = Instant::now() + Duration::from_millis(READER_WAIT_MS);
    loop {
        let listed: Vec<String> = factory
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let found = match want {
            Some(id) => listed.iter().find(|r| *r == id),
            None => listed.first(),
        };
        if let Some(id) = found {
            return Ok(id.clone());
        }
        let status = factory.supervised().map(|s| s.status());
        let last_error = status.as_ref().and_then(|s| s.last_error.clone());
        if let Some(status) = &status {
            let given_up = status.state == SupervisedState::Failed
                || (status.state == SupervisedState::Backoff
                    && status.restarts + 1 >= PLUGIN_STARTS_MAX);
            if given_up && status.readers == 0 {
                let attempts = match status.restarts + 1 {
                    1 => String::new(),
                    n => format!(" ({n} attempts)"),
                };
                return Err(SetupError(format!(
                    "the plugin does not start{attempts}: {}",
                    last_error.as_deref().unwrap_or("no reason given")
                )));
            }
        }
        if Instant::now() >= deadline {
            let why = last_error.map_or_else(String::new, |e| format!(" (its last error: {e})"));
            return Err(SetupError(match want {
                Some(id) => format!(
                    "the plugin does not list {id} within {READER_WAIT_MS} ms (listed: {}){why}: \
                     give one of the listed ids with --reader",
                    if listed.is_empty() {
                        "none".to_owned()
                    } else {
                        listed.join(", ")
                    }
                ),
                None => format!(
                    "the plugin listed no reader within {READER_WAIT_MS} ms{why}: attach a \
                     reader, or check the plugin's log above"
                ),
            }));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the configuration's reader instances until one lists `reader`.
#[allow(clippy::type_complexity)]
fn configured(
    config: &Config,
    reader: &str,
) -> Result<(Arc<dyn ReaderFactory>, Option<Arc<PluginFactory>>), SetupError> {
    let registry = cardd_drivers::registry();
    let deadline = Instant::now() + Duration::from_millis(READER_WAIT_MS);
    let mut factories: Vec<(Arc<dyn ReaderFactory>, Option<Arc<PluginFactory>>)> = Vec::new();
    for (i, instance) in config.readers.iter().enumerate() {
        let built = if instance.driver == PLUGIN_DRIVER {
            // Built directly (as the registry's `instantiate` does) to reach its test hooks.
            let options: PluginOptions = serde_json::from_value(instance.options.clone())
                .map_err(|e| SetupError(format!("readers[{i}].options: {e}")))?;
            PluginFactory::new(options).map(|p| {
                let p = Arc::new(p);
                (p.clone() as Arc<dyn ReaderFactory>, Some(p))
            })
        } else {
            let options = DriverOptions::new(instance.driver.clone(), instance.options.clone());
            registry
                .instantiate(&instance.driver, &options)
                .map(|f| (f, None))
        };
        factories.push(
            built.map_err(|e| {
                SetupError(format!("readers[{i}] ({} driver): {e}", instance.driver))
            })?,
        );
    }
    loop {
        let mut seen = Vec::new();
        for (factory, plugin) in &factories {
            let listed = factory.list().unwrap_or_default();
            if listed.iter().any(|r| r.id == reader) {
                return Ok((factory.clone(), plugin.clone()));
            }
            seen.extend(listed.into_iter().map(|r| r.id));
        }
        if Instant::now() >= deadline {
            return Err(SetupError(format!(
                "no reader {reader:?} in the configuration's [[readers]] (listed: {}): give one \
                 of the listed ids with --reader",
                if seen.is_empty() {
                    "none".to_owned()
                } else {
                    seen.join(", ")
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn harness_for(
    factory: Arc<dyn ReaderFactory>,
    plugin: Option<Arc<PluginFactory>>,
    name: String,
    reader_id: String,
    step_timeout: Duration,
    prompt: Box<dyn FnMut(&str) + Send>,
) -> Result<Box<dyn Harness>, SetupError> {
    if let Some(plugin) = plugin.filter(|p| p.has_feature(feature::TEST_HOOKS)) {
        let plugin_reader = plugin
            .plugin_reader_id(&reader_id)
            .ok_or_else(|| SetupError(format!("{reader_id} is not a reader of this plugin")))?
            .to_owned();
        return Ok(Box::new(HookHarness {
            name: format!("{name} (test hooks)"),
            plugin,
            reader_id,
            plugin_reader,
        }));
    }
    Ok(Box::new(GuidedHarness::new(
        format!("{name} (guided)"),
        factory,
        reader_id,
        step_timeout,
        prompt,
    )))
}

/// A plugin's simulated card, moved through its test hooks.
#[derive(Debug)]
struct HookHarness {
    name: String,
    plugin: Arc<PluginFactory>,
    reader_id: String,
    plugin_reader: String,
}

impl HookHarness {
    fn hook(&self, method: &'static str) -> Result<(), String> {
        self.plugin
            .test_hook(method, json!({"reader": self.plugin_reader}))
            .map(|_| ())
            .map_err(|e| format!("test hook {method} failed: {e}"))
    }
}

impl Harness for HookHarness {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.plugin.clone()
    }
    fn reader_id(&self) -> String {
        self.reader_id.clone()
    }
    fn remove_card(&mut self) -> Result<(), String> {
        self.hook(test_method::REMOVE_CARD)
    }
    fn insert_card(&mut self) -> Result<(), String> {
        self.hook(test_method::INSERT_CARD)
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        self.hook(test_method::REMOVE_DURING_NEXT)
            .map(|()| Arranged::Yes)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        self.hook(test_method::SILENCE_NEXT).map(|()| Arranged::Yes)
    }
}

/// The report as JSON: `passed` (no check failed), `driver`, `reader` and `checks`, each with
/// `name`, `outcome` (`passed`, `failed` or `skipped`), `detail` and `duration_ms`.
pub fn report_json(report: &Report) -> serde_json::Value {
    json!({
        "passed": report.passed_all(),
        "driver": report.driver,
        "reader": report.reader,
        "checks": report.checks,
    })
}
