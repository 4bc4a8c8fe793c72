//! Helpers shared by the plugin driver's tests: finding python3, a scratch directory, starting
//! the example plugin and driving its test hooks, and bounded waits on hotplug events.
//!
//! The tests run the real example plugin (`examples/example_plugin.py`) as a child process, so
//! they prove what a vendor's plugin will see, not what a mock would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardd_plugin::protocol::test_method;
use cardd_plugin::{PluginFactory, PluginOptions, PluginState};
use cardd_reader::{HotplugEvent, HotplugWatch, ReaderError, ReaderFactory};

/// The example plugin: the template plugin (`template/`) with its simulated SDK and test hooks.
pub const EXAMPLE_PLUGIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/example_plugin.py");
/// Longest a test waits for something asynchronous before failing.
pub const WAIT_MS_MAX: u64 = 10_000;

/// `python3` from `PATH`, or a failing test that says it is required.
pub fn python3() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(if cfg!(windows) { "python3.exe" } else { "python3" }))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("python3 is required to run cardd-plugin's tests (the example plugin is Python): install Python 3 and put python3 on PATH")
        })
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "cardd-plugin-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options running the example plugin as instance `name`, with fast restarts and no liveness
/// pings (tests that want pings turn them on). `dir` is kept for tests that need scratch space.
pub fn example_options(name: &str, _dir: &ScratchDir) -> PluginOptions {
    let mut options = PluginOptions::new(name, python3());
    options.args = vec![EXAMPLE_PLUGIN.into()];
    options.restart_backoff_initial_ms = 100;
    options.restart_backoff_max_ms = 1_000;
    options.hello_timeout_ms = 10_000;
    options.request_timeout_grace_ms = 300;
    options.ping_interval_ms = 0;
    options
}

/// A running example plugin.
pub struct TestPlugin {
    pub factory: Arc<PluginFactory>,
    pub dir: ScratchDir,
    pub name: String,
}

impl TestPlugin {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, |_| {})
    }

    pub fn start_with(name: &str, adjust: impl FnOnce(&mut PluginOptions)) -> Self {
        let dir = ScratchDir::new();
        let mut options = example_options(name, &dir);
        adjust(&mut options);
        let factory = Arc::new(PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}")));
        TestPlugin {
            factory,
            dir,
            name: name.into(),
        }
    }

    /// The cardd id of the example plugin's reader.
    pub fn reader_id(&self) -> String {
        format!("plugin:{}:r1", self.name)
    }

    pub fn dyn_factory(&self) -> Arc<dyn ReaderFactory> {
        self.factory.clone()
    }

    /// Sends one test hook (PROTOCOL.md §12) and waits for the plugin to confirm it took
    /// effect. `command` is the hook's name without `test.`, then an optional argument: the
    /// method for `hang_next` / `crash_next`, the line count for `garbage`.
    pub fn control(&self, command: &str) {
        if let Err(e) = self.try_control(command) {
            panic!("test hook {command:?}: {e}");
        }
    }

    /// Like [`TestPlugin::control`], returning the error (a plugin may be killed before it
    /// answers). Waits (bounded) for a restarting plugin to be up again first.
    pub fn try_control(&self, command: &str) -> Result<(), ReaderError> {
        let mut words = command.split_whitespace();
        let hook = words.next().unwrap_or_default();
        let arg = words.next();
        let reader = serde_json::json!({"reader": "r1"});
        let (method, params) = match hook {
            "remove" => (test_method::REMOVE_CARD, reader),
            "insert" => (test_method::INSERT_CARD, reader),
            "remove_during_next" => (test_method::REMOVE_DURING_NEXT, reader),
            "silent_next" => (test_method::SILENCE_NEXT, reader),
            "unplug" => (test_method::REMOVE_READER, reader),
            "plug" => (test_method::ADD_READER, reader),
            "hang_next" => (test_method::HANG_NEXT, serde_json::json!({"method": arg})),
            "crash_next" => (test_method::CRASH_NEXT, serde_json::json!({"method": arg})),
            "garbage" => (test_method::GARBAGE, serde_json::json!({})),
            "flood" => (test_method::GARBAGE, serde_json::json!({"lines": 40})),
            other => panic!("no test hook {other:?}"),
        };
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
        while self.factory.status().state != PluginState::Running && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.factory.test_hook(method, params).map(|_| ())
    }
}

/// The next hotplug event, failing the test if none comes within [`WAIT_MS_MAX`].
pub fn next_hotplug(watch: &mut dyn HotplugWatch) -> HotplugEvent {
    watch
        .wait(Duration::from_millis(WAIT_MS_MAX))
        .expect("the hotplug watch works")
        .unwrap_or_else(|| panic!("no hotplug event within {WAIT_MS_MAX} ms"))
}

/// Waits for the plugin to be removed then added back; returns when it is back.
pub fn expect_restart(watch: &mut dyn HotplugWatch, reader_id: &str) -> Duration {
    let started = Instant::now();
    match next_hotplug(watch) {
        HotplugEvent::Removed { reader_id: id } => assert_eq!(id, reader_id),
        other => panic!("expected {reader_id} removed, got {other:?}"),
    }
    let removed = started.elapsed();
    match next_hotplug(watch) {
        HotplugEvent::Added { reader } => assert_eq!(reader.id, reader_id),
        other => panic!("expected {reader_id} added back, got {other:?}"),
    }
    started.elapsed() - removed
}
