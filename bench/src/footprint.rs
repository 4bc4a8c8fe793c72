//! Footprint of the `cardd` binary as an operator runs it (`cardd --demo`: three simulated
//! readers attached): start-up time until `/health` answers, resident memory idle and under
//! load, CPU time and wake-ups while idle.
//!
//! Idle CPU is read from `/proc/<pid>/task/*/schedstat` (nanoseconds on a CPU, every thread),
//! wake-ups from the threads' context switches; both over a quiet window after start-up. The
//! wake-ups are split by thread name into sled's own threads and the rest (cardd's), and
//! measured again on a daemon with no reader configured.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use jsonrpsee::core::client::ClientT;
use serde_json::Value;

use crate::client;
use crate::report;

/// Longest a start may take before the benchmark gives up.
const READY_WAIT: Duration = Duration::from_secs(30);
/// Clients calling at once while "under load" is measured.
const LOAD_CLIENTS: usize = 16;
const LOAD_TIME: Duration = Duration::from_secs(3);
/// Ordinary starts timed (their median is the figure).
const STARTS: usize = 7;

pub fn run(
    runtime: &tokio::runtime::Runtime,
    cardd: Option<&Path>,
    idle_seconds: u64,
) -> Result<()> {
    let binary = match cardd {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("cardd"))
            .context("no directory")?,
    };
    if !binary.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release -p cardd) or pass --cardd",
            binary.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    // First start: creates the database and the demo operators (argon2 hashes).
    let (child, addr, first) = start(&binary, &data, dir.path())?;
    report::figure("footprint.first_start_to_ready", ms(first), "ms");
    stop(child)?;

    // Ordinary starts, on an existing database; the last one stays up for the idle figures.
    let _ = addr;
    let mut starts = crate::report::Samples::default();
    for _ in 1..STARTS {
        let (child, _, ready) = start(&binary, &data, dir.path())?;
        starts.push(ready);
        stop(child)?;
    }
    let (child, addr2, ready) = start(&binary, &data, dir.path())?;
    starts.push(ready);
    let pid = child.id();
    report::figure("footprint.start_to_ready.p50", starts.median() / 1e3, "ms");
    report::figure(
        "footprint.start_to_ready.min",
        starts.percentile(0.0) / 1e3,
        "ms",
    );
    report::figure(
        "footprint.start_to_ready.max",
        starts.percentile(100.0) / 1e3,
        "ms",
    );
    std::thread::sleep(Duration::from_secs(2));
    report::figure("footprint.rss_idle", rss_kib(pid, "VmRSS") / 1024.0, "MiB");
    report::figure("footprint.threads", threads(pid).len() as f64, "threads");
    idle("footprint", pid, Duration::from_secs(idle_seconds));
    runtime.block_on(load(addr2))?;
    report::figure(
        "footprint.rss_under_load",
        rss_kib(pid, "VmRSS") / 1024.0,
        "MiB",
    );
    report::figure("footprint.rss_peak", rss_kib(pid, "VmHWM") / 1024.0, "MiB");
    stop(child)?;

    // The same daemon with no reader configured (demo keys, no operators yet).
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare)?;
    let config = bare.join("cardd.toml");
    let (child, _, _) = start_with(&binary, dir.path(), |addr| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\n[data]\ndir = {:?}\n[keys]\nsource = \"demo\"\n",
                bare.join("data").display().to_string()
            ),
        )?;
        Ok(vec!["--config".into(), config.clone().into_os_string()])
    })?;
    std::thread::sleep(Duration::from_secs(2));
    idle(
        "footprint.no_readers",
        child.id(),
        Duration::from_secs(idle_seconds),
    );
    stop(child)?;
    Ok(())
}

/// Sled 0.34's own threads: its log flusher and its I/O pool (`sled-io-N`).
fn is_sled_thread(name: &str) -> bool {
    name == "log flusher" || name.starts_with("sled-io")
}

/// Most threads named in the note on where idle wake-ups outside sled come from.
const TOP_THREADS_NAMED: usize = 5;

/// CPU time and wake-ups of `pid` over `window` while nobody calls it: all threads, sled's
/// threads and the rest (the rest's busiest threads by name in a note).
fn idle(prefix: &str, pid: u32, window: Duration) {
    let before = per_thread(pid);
    std::thread::sleep(window);
    let after = per_thread(pid);
    let seconds = window.as_secs_f64();
    let mut cpu_ns = 0u64;
    let (mut sled, mut outside) = (0u64, 0u64);
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    for (tid, t) in &after {
        // A thread started during the window counts from zero; one that ended is not seen.
        let (cpu0, switches0) = before.get(tid).map_or((0, 0), |b| (b.cpu_ns, b.switches));
        cpu_ns += t.cpu_ns.saturating_sub(cpu0);
        let woke = t.switches.saturating_sub(switches0);
        if is_sled_thread(&t.name) {
            sled += woke;
        } else {
            outside += woke;
            if woke > 0 {
                *by_name.entry(t.name.clone()).or_default() += woke;
            }
        }
    }
    let cpu = cpu_ns as f64 / 1e9;
    report::figure(
        &format!("{prefix}.idle_cpu"),
        100.0 * cpu / seconds,
        "% of one core",
    );
    report::figure(&format!("{prefix}.idle_cpu_time"), cpu * 1e3, "ms");
    report::figure(
        &format!("{prefix}.idle_wakeups"),
        (sled + outside) as f64 / seconds,
        "wake-ups/s",
    );
    report::figure(
        &format!("{prefix}.idle_wakeups_sled"),
        sled as f64 / seconds,
        "wake-ups/s (sled's log flusher and sled-io threads)",
    );
    report::figure(
        &format!("{prefix}.idle_wakeups_outside_sled"),
        outside as f64 / seconds,
        "wake-ups/s",
    );
    let mut top: Vec<(String, u64)> = by_name.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let named: Vec<String> = top
        .iter()
        .take(TOP_THREADS_NAMED)
        .map(|(name, n)| format!("{name} {:.2}/s", *n as f64 / seconds))
        .collect();
    let named = if named.is_empty() {
        "none".to_owned()
    } else {
        named.join(", ")
    };
    report::note(
        &format!("{prefix}.idle_wakeups_outside_sled_threads"),
        &named,
    );
    report::figure(&format!("{prefix}.idle_window"), seconds, "s");
}

/// `LOAD_CLIENTS` clients reading cards and listing readers for `LOAD_TIME`.
async fn load(addr: SocketAddr) -> Result<()> {
    let http =
        jsonrpsee::http_client::HttpClientBuilder::default().build(format!("http://{addr}/"))?;
    let mut params = jsonrpsee::core::params::ObjectParams::new();
    params.insert("username", "teller")?;
    params.insert("password", "teller123")?;
    let reply: Value = http.request("auth.login", params).await?;
    let token = reply["token"].as_str().context("token")?.to_owned();
    let mut tasks = Vec::new();
    for i in 0..LOAD_CLIENTS {
        let ws = client::ws(addr, &token).await?;
        let reader = ["sim:etc", "sim:city", "sim:obu"][i % 3];
        tasks.push(tokio::spawn(async move {
            let end = Instant::now() + LOAD_TIME;
            let mut calls = 0u64;
            while Instant::now() < end {
                let r: Result<Value, _> = ws
                    .request("card.summary", client::reader_params(reader))
                    .await;
                let l: Result<Value, _> = ws
                    .request("readers.list", jsonrpsee::core::params::ObjectParams::new())
                    .await;
                if r.is_err() || l.is_err() {
                    break;
                }
                calls += 2;
            }
            calls
        }));
    }
    let mut calls = 0;
    for t in tasks {
        calls += t.await?;
    }
    report::figure(
        "footprint.load_calls",
        calls as f64 / LOAD_TIME.as_secs_f64(),
        "req/s (card.summary + readers.list, 16 clients)",
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `cardd --demo` and waits until `/health` answers; returns the time it took.
fn start(binary: &Path, data: &Path, logs: &Path) -> Result<(Child, SocketAddr, Duration)> {
    let data = data.as_os_str().to_owned();
    start_with(binary, logs, |addr| {
        Ok(vec![
            "--demo".into(),
            "--data-dir".into(),
            data.clone(),
            "--listen".into(),
            addr.to_string().into(),
        ])
    })
}

/// Starts `cardd` with the arguments `args` gives for its address, and waits until `/health`
/// answers; returns the time it took.
fn start_with(
    binary: &Path,
    logs: &Path,
    args: impl FnOnce(SocketAddr) -> Result<Vec<std::ffi::OsString>>,
) -> Result<(Child, SocketAddr, Duration)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let args = args(addr)?;
    let log = std::fs::File::create(logs.join(format!("cardd-{port}.log")))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    loop {
        if health(addr) {
            return Ok((child, addr, started.elapsed()));
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "cardd exited at start ({status}); its log is in {}",
                logs.display()
            );
        }
        if started.elapsed() > READY_WAIT {
            let _ = child.kill();
            bail!("cardd did not answer /health within {READY_WAIT:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn health(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// SIGTERM (graceful stop), then waits.
fn stop(mut child: Child) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

fn rss_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|l| l.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn threads(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// One thread's name (`comm`), nanoseconds on a CPU and context switches (voluntary and not).
#[derive(Debug, Clone)]
struct ThreadFigures {
    name: String,
    cpu_ns: u64,
    switches: u64,
}

/// Every thread of `pid`, by thread id.
fn per_thread(pid: u32) -> std::collections::HashMap<String, ThreadFigures> {
    let mut out = std::collections::HashMap::new();
    for task in threads(pid) {
        let Some(tid) = task.file_name().map(|t| t.to_string_lossy().into_owned()) else {
            continue;
        };
        let sched = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        let cpu_ns = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            .sum();
        let name = std::fs::read_to_string(task.join("comm"))
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        out.insert(
            tid,
            ThreadFigures {
                name,
                cpu_ns,
                switches,
            },
        );
    }
    out
}
