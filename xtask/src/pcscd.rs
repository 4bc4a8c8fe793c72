//! Running pcscd around the test suite, because the PC/SC tests talk to a real one.
//!
//! The development and CI machines have no systemd, so nothing starts pcscd on its own. Before
//! `cargo test`, [`ensure_running`] starts `pcscd -f` (foreground, so it stays our child and is
//! stopped by its pid) unless one already answers on its socket, and waits (bounded) until it
//! does. The returned guard stops the pcscd it started when it is dropped: after the tests,
//! also when they fail or xtask itself errors. A pcscd that was already running is left alone.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// pcsc-lite's client socket.
pub const SOCKET: &str = "/run/pcscd/pcscd.comm";
/// pcscd's pid file (a stale one makes a new pcscd refuse to start).
const PID_FILE: &str = "/run/pcscd/pcscd.pid";
/// vsmartcard-vpcd's reader configuration: without it pcscd has no virtual reader.
pub const VPCD_CONF: &str = "/etc/reader.conf.d/vpcd";
/// How long a starting pcscd may take to answer on its socket.
const START_WAIT_MS: u64 = 10_000;
/// How long a stopping pcscd may take to exit after SIGTERM before it is killed.
const STOP_WAIT_MS: u64 = 5_000;
/// Pause between two checks while waiting for pcscd to start or stop.
const CHECK_EVERY_MS: u64 = 50;
/// Where pcscd binaries are installed (root's PATH has sbin, CI's may not).
const PCSCD_PATHS: &[&str] = &["/usr/sbin/pcscd", "/usr/local/sbin/pcscd"];

/// Whether a pcscd answers on its socket now.
pub fn answers() -> bool {
    UnixStream::connect(SOCKET).is_ok()
}

/// The pcscd xtask started, stopped (by pid) when dropped.
#[derive(Debug)]
pub struct PcscdGuard {
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for PcscdGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child, &self.log);
        }
    }
}

/// Makes sure pcscd runs with vpcd configured; starts it when none answers.
pub fn ensure_running(target_dir: &Path) -> Result<PcscdGuard> {
    if !Path::new(VPCD_CONF).exists() {
        bail!(
            "{VPCD_CONF} is missing: the package vsmartcard-vpcd should have installed it; \
             reinstall it (apt-get install --reinstall vsmartcard-vpcd)"
        );
    }
    let log = target_dir.join("xtask-pcscd.log");
    if answers() {
        println!("xtask: using the pcscd already running on {SOCKET}");
        return Ok(PcscdGuard { child: None, log });
    }
    remove_stale_files();
    let binary = PCSCD_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .copied()
        .unwrap_or("pcscd");
    std::fs::create_dir_all(target_dir)
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(binary)
        .arg("-f")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {binary} (is the package pcscd installed?)"))?;
    let mut guard = PcscdGuard {
        child: Some(child),
        log: log.clone(),
    };
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
    while !answers() {
        if let Some(child) = guard.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                guard.child = None;
                bail!(
                    "pcscd exited at start ({status}); its log {}:\n{}",
                    log.display(),
                    tail(&log)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "pcscd did not answer on {SOCKET} within {START_WAIT_MS} ms; its log {}:\n{}",
                log.display(),
                tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS));
    }
    let pid = guard.child.as_ref().map(Child::id).unwrap_or(0);
    println!("xtask: started pcscd (pid {pid}, log {})", log.display());
    Ok(guard)
}

/// Removes a pid file and socket left by a pcscd that is gone (no pcscd answers), which would
/// make a new pcscd refuse to start.
fn remove_stale_files() {
    let pid_alive = std::fs::read_to_string(PID_FILE)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if !pid_alive {
        let _ = std::fs::remove_file(PID_FILE);
        let _ = std::fs::remove_file(SOCKET);
    }
}

/// Stops the pcscd we started: SIGTERM (it removes its socket and pid file), then SIGKILL.
fn stop(mut child: Child, log: &Path) {
    let pid = child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                println!("xtask: stopped pcscd (pid {pid})");
                return;
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS));
            }
            _ => break,
        }
    }
    eprintln!(
        "xtask: pcscd (pid {pid}) did not stop within {STOP_WAIT_MS} ms; killing it (log {})",
        log.display()
    );
    let _ = child.kill();
    let _ = child.wait();
    remove_stale_files();
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    const LINES: usize = 20;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}
