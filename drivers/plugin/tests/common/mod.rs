//! Helpers shared by the plugin driver's tests: finding python3, a scratch directory, starting
//! the example plugin with its test-hook control socket, and bounded waits on hotplug events.
//!
//! The tests run the real example plugin (`examples/example_plugin.py`) as a child process, so
//! they prove what a vendor's plugin will see, not what a mock would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardd_plugin::{PluginFactory, PluginOptions};
use cardd_reader::{HotplugEvent, HotplugWatch, ReaderFactory};

/// The example plugin, the template vendors copy.
pub const EXAMPLE_PLUGIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/example_plugin.py");
/// Longest a test waits for something asynchronous before failing.
pub const WAIT_MS_MAX: u64 = 10_000;

/// `python3` from `PATH`, or a failing test that says it is required.
pub fn python3() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("python3 is required to run cardd-plugin's tests (the example plugin is Python): install Python 3 and put python3 on PATH")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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
        // Unix socket paths are limited to about 100 bytes: stay short.
        let dir = PathBuf::from("/tmp").join(format!(
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

/// Options running the example plugin as instance `name`, with its control socket in `dir`,
/// fast restarts and no liveness pings (tests that want pings turn them on).
pub fn example_options(name: &str, dir: &ScratchDir) -> PluginOptions {
    let mut options = PluginOptions::new(name, python3());
    options.args = vec![
        EXAMPLE_PLUGIN.into(),
        "--control".into(),
        control_path(dir).display().to_string(),
    ];
    options.restart_backoff_initial_ms = 100;
    options.restart_backoff_max_ms = 1_000;
    options.hello_timeout_ms = 10_000;
    options.request_timeout_grace_ms = 300;
    options.ping_interval_ms = 0;
    options
}

pub fn control_path(dir: &ScratchDir) -> PathBuf {
    dir.0.join("ctl.sock")
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

    /// Sends one test-hook command and waits for the plugin to confirm it took effect.
    pub fn control(&self, command: &str) {
        let answer = control(&control_path(&self.dir), command);
        assert_eq!(answer, "ok", "control command {command:?}");
    }
}

/// Sends `command` to the control socket at `path` (retrying while a restarted plugin binds
/// it again) and returns the answer line.
pub fn control(path: &Path, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    let mut stream = loop {
        match UnixStream::connect(path) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("control socket {}: {e}", path.display()),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(WAIT_MS_MAX)))
        .expect("set a read timeout");
    writeln!(stream, "{command}").expect("send a control command");
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("read the control answer");
    answer.trim().to_owned()
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
