//! The supervisor: one thread per plugin instance that owns the child process.
//!
//! Vendor SDKs crash and hang (see pyscard's deadlocks), and a daemon that loads money must not
//! go down with them. So the plugin runs in its own process and this module is the only code
//! that touches it:
//!
//! * the **supervisor thread** starts the child, performs the `hello` handshake and the first
//!   `list`, watches it (exit, closed output, requests left unanswered past their timeout plus
//!   grace, failed liveness pings, a burst of malformed output), and when the child is lost it
//!   kills it, reports only this instance's readers gone, waits an exponentially growing,
//!   bounded backoff and starts it again;
//! * per child, a **stdout thread** reads bounded lines and routes answers to waiting requests
//!   by id and events to the event logs; a **writer thread** feeds stdin from a bounded queue
//!   (so a child that stops reading never blocks a caller); a **stderr thread** forwards the
//!   plugin's log to `tracing`;
//! * callers and the I/O threads meet in the shared state (`crate::shared`), which routes
//!   answers and events and bounds every wait.
//!
//! When a run ends, its sessions answer `DriverCrashed` for good and its readers are announced
//! removed; the daemon reopens them when `HotplugEvent::Added` arrives after the restart. A
//! start that fails (even for a reason only a person can fix: no such program, another
//! protocol version) is retried the same way, so a broken plugin never stops the daemon; an
//! operator's `restart_now` ends the run and skips the backoff.

use std::io::{BufReader, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::PluginError;
use crate::options::PluginOptions;
use crate::protocol::{
    self, method, read_line_bounded, truncate_chars, HelloParams, HelloResult, LineRead,
    ListResult, IDENTITY_CHARS_MAX, IN_FLIGHT_MAX, MESSAGE_BYTES_MAX, SUPPORTED_VERSIONS,
};
use crate::shared::{CallError, RunEnd, Shared, Target};
pub use crate::shared::{
    PluginState, PluginStats, PluginStatus, EVENTS_KEPT, MISBEHAVIOUR_MAX, MISBEHAVIOUR_WINDOW_MS,
    PENDING_MAX,
};

/// Requests queued for the writer thread at most (beyond `max_in_flight`, only `close`s).
pub const WRITE_QUEUE_MAX: usize = 128;
/// After a graceful stop (stdin closed), how long the child has to exit before it is killed.
pub const SHUTDOWN_GRACE_MS: u64 = 500;
/// A child that stayed ready this long resets the restart backoff.
pub const STABLE_RUN_MS: u64 = 10_000;
/// The supervisor re-checks the child's exit status at least this often.
pub const MONITOR_WAKE_MS: u64 = 1_000;
/// Longest stderr line forwarded (longer ones are dropped with a note).
pub const STDERR_LINE_BYTES_MAX: usize = 4_096;
/// Most stderr lines forwarded per second (the rest are counted and dropped).
pub const STDERR_LINES_PER_SECOND_MAX: u32 = 100;

/// The supervisor thread's body: start, watch, restart, until shut down.
pub(crate) fn supervise(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    loop {
        if shared.is_shutdown() {
            break;
        }
        shared.attempt();
        if let RunEnd::Shutdown = run_once(&shared) {
            break;
        }
        let was_stable = shared
            .lock()
            .ready_since
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(STABLE_RUN_MS));
        if was_stable {
            failures = 0;
        }
        let (asked, last_error) = {
            let mut st = shared.lock();
            (
                std::mem::take(&mut st.restart_requested),
                st.last_error.clone(),
            )
        };
        let delay = if asked {
            // An operator's restart: at once, and the next failure starts the backoff afresh.
            failures = 0;
            Duration::ZERO
        } else {
            failures = failures.saturating_add(1);
            shared.options.backoff(failures)
        };
        let reason = last_error
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |e| e.to_string());
        let restart_in_ms = delay.as_millis() as u64;
        if asked {
            tracing::info!(plugin = %shared.options.name, "plugin restarting now: {reason}");
        } else if last_error.as_ref().is_some_and(PluginError::is_permanent) {
            // Only a person can fix this; the plugin's readers stay offline until then.
            tracing::error!(
                plugin = %shared.options.name,
                restart_in_ms,
                "plugin cannot start: {reason}"
            );
        } else {
            tracing::warn!(
                plugin = %shared.options.name,
                restart_in_ms,
                "plugin lost: {reason}"
            );
        }
        shared.backing_off(delay);
        if shared.sleep_unless_shutdown(delay) {
            break;
        }
    }
    let mut st = shared.lock();
    st.state = PluginState::Stopped;
    if st.first_attempt.is_none() {
        st.first_attempt = Some(Err(PluginError::Stopped {
            plugin: shared.options.name.clone(),
        }));
    }
    drop(st);
    shared.changed.notify_all();
}

/// One child process from start to end.
fn run_once(shared: &Arc<Shared>) -> RunEnd {
    let options = &shared.options;
    let mut child = match spawn(options) {
        Ok(child) => child,
        Err(error) => {
            shared.spawn_failed(error.clone());
            return RunEnd::Failed(error);
        }
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(WRITE_QUEUE_MAX);
    let run = shared.begin_run(tx);
    tracing::info!(plugin = %options.name, run, pid = child.id(), "plugin started");
    let end = match start_io_threads(shared, run, &mut child, rx) {
        Err(error) => RunEnd::Failed(error),
        Ok(()) => match handshake(shared, run) {
            Err(end) => {
                shared.lock().stats.handshake_failures += 1;
                end
            }
            Ok(()) => monitor(shared, run, &mut child),
        },
    };
    shared.end_run(run);
    let graceful = matches!(end, RunEnd::Shutdown);
    if graceful {
        shared.wait_output_closed(run, Duration::from_millis(SHUTDOWN_GRACE_MS));
    }
    let _ = child.kill();
    let status = match child.wait() {
        Ok(status) => status.to_string(),
        Err(e) => format!("status unknown: {e}"),
    };
    tracing::info!(plugin = %options.name, run, %status, "plugin process ended");
    let error = match &end {
        RunEnd::Shutdown => None,
        RunEnd::Exited => {
            shared.lock().stats.crashes += 1;
            Some(PluginError::Exited {
                plugin: options.name.clone(),
                status,
            })
        }
        RunEnd::Failed(e) => {
            if matches!(e, PluginError::Misbehaving { .. }) {
                shared.lock().stats.misbehaviour_restarts += 1;
            }
            Some(e.clone())
        }
    };
    shared.record_failure(error);
    end
}

fn spawn(options: &PluginOptions) -> Result<Child, PluginError> {
    Command::new(&options.command)
        .args(&options.args)
        .envs(&options.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PluginError::Spawn {
            plugin: options.name.clone(),
            command: options.command.display().to_string(),
            detail: e.to_string(),
            permanent: matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
        })
}

fn start_io_threads(
    shared: &Arc<Shared>,
    run: u64,
    child: &mut Child,
    rx: Receiver<Vec<u8>>,
) -> Result<(), PluginError> {
    let name = &shared.options.name;
    let thread_error = |what: &str, detail: String| PluginError::Spawn {
        plugin: name.clone(),
        command: format!("({what} thread)"),
        detail,
        permanent: false,
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(thread_error(
            "pipes",
            "the child's pipes are missing".into(),
        ));
    };
    let out_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("plugin-{name}-out"))
        .spawn(move || read_stdout(out_shared, run, stdout))
        .map_err(|e| thread_error("stdout", e.to_string()))?;
    let log_name = name.clone();
    std::thread::Builder::new()
        .name(format!("plugin-{name}-log"))
        .spawn(move || forward_stderr(log_name, stderr))
        .map_err(|e| thread_error("stderr", e.to_string()))?;
    let in_name = name.clone();
    std::thread::Builder::new()
        .name(format!("plugin-{name}-in"))
        .spawn(move || write_stdin(in_name, rx, stdin))
        .map_err(|e| thread_error("stdin", e.to_string()))?;
    Ok(())
}

fn read_stdout(shared: Arc<Shared>, run: u64, stdout: ChildStdout) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        match read_line_bounded(&mut reader, &mut line, MESSAGE_BYTES_MAX) {
            Ok(LineRead::Line) => shared.handle_line(run, &line),
            Ok(LineRead::Oversized { bytes }) => shared.garbled(
                run,
                format!("a line of {bytes} bytes, over the {MESSAGE_BYTES_MAX}-byte limit"),
            ),
            Ok(LineRead::Eof) | Err(_) => {
                shared.output_closed(run);
                return;
            }
        }
    }
}

fn write_stdin(plugin: String, rx: Receiver<Vec<u8>>, mut stdin: ChildStdin) {
    // Ends when every sender is gone (the run ended: the child sees end of input) or the
    // child stops accepting input (it died; the stdout thread notices that).
    while let Ok(line) = rx.recv() {
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            tracing::debug!(plugin = %plugin, "plugin input closed: {e}");
            return;
        }
    }
}

fn forward_stderr(plugin: String, stderr: ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut window = Instant::now();
    let mut lines_in_window: u32 = 0;
    let mut dropped: u64 = 0;
    loop {
        let text = match read_line_bounded(&mut reader, &mut line, STDERR_LINE_BYTES_MAX) {
            Ok(LineRead::Line) => String::from_utf8_lossy(&line).into_owned(),
            Ok(LineRead::Oversized { bytes }) => {
                format!("(a log line of {bytes} bytes was dropped)")
            }
            Ok(LineRead::Eof) | Err(_) => return,
        };
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(plugin = %plugin, dropped, "plugin log lines dropped (rate limit)");
            }
            window = Instant::now();
            lines_in_window = 0;
            dropped = 0;
        }
        lines_in_window += 1;
        if lines_in_window > STDERR_LINES_PER_SECOND_MAX {
            dropped += 1;
            continue;
        }
        tracing::info!(target: "cardd_plugin::log", plugin = %plugin, "{text}");
    }
}

/// `hello`, then `list`; the run is ready when this returns `Ok`.
fn handshake(shared: &Shared, run: u64) -> Result<(), RunEnd> {
    let options = &shared.options;
    let target = Target { run, reader: None };
    let params = serde_json::json!(HelloParams {
        protocols: SUPPORTED_VERSIONS,
        host: "cardd",
        host_version: env!("CARGO_PKG_VERSION"),
        features: protocol::HOST_FEATURES,
    });
    let budget = Duration::from_millis(options.hello_timeout_ms) + options.grace();
    let cardd_speaks = SUPPORTED_VERSIONS.join(", ");
    let value = match shared.call(target, method::HELLO, params, budget) {
        Ok(value) => value,
        Err(CallError::Remote(e)) if e.code == protocol::ErrorCode::UnsupportedVersion.as_str() => {
            return Err(RunEnd::Failed(PluginError::VersionMismatch {
                plugin: options.name.clone(),
                cardd_speaks,
                plugin_speaks: truncate_chars(&e.message, IDENTITY_CHARS_MAX),
            }))
        }
        Err(e) => return Err(setup_failure(shared, method::HELLO, e, budget)),
    };
    let hello: HelloResult = serde_json::from_value(value).map_err(|e| {
        RunEnd::Failed(PluginError::Malformed {
            plugin: options.name.clone(),
            method: method::HELLO.into(),
            detail: e.to_string(),
        })
    })?;
    if !SUPPORTED_VERSIONS.contains(&hello.protocol.as_str()) {
        return Err(RunEnd::Failed(PluginError::VersionMismatch {
            plugin: options.name.clone(),
            cardd_speaks,
            plugin_speaks: truncate_chars(&hello.protocol, IDENTITY_CHARS_MAX),
        }));
    }
    let max_in_flight = hello.max_in_flight.clamp(1, IN_FLIGHT_MAX);
    tracing::info!(
        plugin = %options.name,
        plugin_name = %truncate_chars(&hello.name, IDENTITY_CHARS_MAX),
        plugin_version = %truncate_chars(&hello.version, IDENTITY_CHARS_MAX),
        protocol = %hello.protocol,
        max_in_flight,
        "plugin handshake done"
    );
    shared.set_identity(run, &hello, max_in_flight);
    let budget = options.request_timeout() + options.grace();
    let value = shared
        .call(target, method::LIST, serde_json::json!({}), budget)
        .map_err(|e| setup_failure(shared, method::LIST, e, budget))?;
    let list: ListResult = serde_json::from_value(value).map_err(|e| {
        RunEnd::Failed(PluginError::Malformed {
            plugin: options.name.clone(),
            method: method::LIST.into(),
            detail: e.to_string(),
        })
    })?;
    shared.install_readers(run, list.readers);
    Ok(())
}

fn setup_failure(shared: &Shared, method: &str, error: CallError, budget: Duration) -> RunEnd {
    let plugin = shared.options.name.clone();
    match error {
        CallError::Gone => shared.why_gone(),
        CallError::Timeout if method == method::HELLO => {
            RunEnd::Failed(PluginError::HelloTimeout {
                plugin,
                waited_ms: budget.as_millis() as u64,
            })
        }
        CallError::Timeout => RunEnd::Failed(PluginError::Unresponsive {
            plugin,
            method: method.into(),
            waited_ms: budget.as_millis() as u64,
        }),
        CallError::Remote(e) => RunEnd::Failed(PluginError::Remote {
            plugin,
            method: method.into(),
            code: truncate_chars(&e.code, IDENTITY_CHARS_MAX),
            message: truncate_chars(&e.message, protocol::ERROR_MESSAGE_CHARS_MAX),
        }),
        CallError::Local(detail) | CallError::Malformed(detail) => {
            RunEnd::Failed(PluginError::Malformed {
                plugin,
                method: method.into(),
                detail,
            })
        }
    }
}

/// Watches a ready run until it ends; sends liveness pings when it is idle.
fn monitor(shared: &Shared, run: u64, child: &mut Child) -> RunEnd {
    let ping_every = (shared.options.ping_interval_ms > 0)
        .then(|| Duration::from_millis(shared.options.ping_interval_ms));
    let wake = Duration::from_millis(MONITOR_WAKE_MS);
    loop {
        {
            let mut st = shared.lock();
            loop {
                if st.shutdown {
                    return RunEnd::Shutdown;
                }
                if let Some(error) = st.failing.clone() {
                    return RunEnd::Failed(error);
                }
                if st.output_closed {
                    return RunEnd::Exited;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    return RunEnd::Exited;
                }
                let now = Instant::now();
                let next_ping = ping_every.map(|every| st.last_activity + every);
                if let Some(at) = next_ping {
                    if now >= at {
                        if st.in_flight == 0 {
                            break;
                        }
                        // Busy, so evidently alive enough; look again later.
                        st.last_activity = now;
                        continue;
                    }
                }
                let until_ping = next_ping.map_or(wake, |at| at.saturating_duration_since(now));
                st = shared.wait(st, until_ping.min(wake));
            }
        }
        let budget = shared.options.request_timeout() + shared.options.grace();
        let target = Target { run, reader: None };
        match shared.call(target, method::PING, serde_json::json!({}), budget) {
            Ok(_) | Err(CallError::Remote(_)) => {
                let mut st = shared.lock();
                st.stats.pings += 1;
                st.last_activity = Instant::now();
            }
            // A timeout already marked the run hung; `Gone` means it ended: the loop sees both.
            Err(_) => {}
        }
    }
}
