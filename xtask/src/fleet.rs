//! `cargo xtask fleet [--base-port N]`: a whole demo fleet on this machine, in one command.
//!
//! It installs the system packages cardd needs (PostgreSQL included when none is installed),
//! builds `cardd` and `cardd-host` (debug), and starts through `cardd-fleet-launch` (the
//! same launch the fleet tests drive) a throw-away PostgreSQL, one `cardd-host` (demo keys,
//! the back office on loopback) and two sites, S01 and S02, with simulated readers and the
//! 模拟读卡器 panel; then prints the URLs, the demo operators and a command that pays a demo
//! recharge at the host.
//!
//! Ports, from `--base-port` (default [`DEFAULT_BASE_PORT`], 7443): the host N, the back
//! office N+1, S01 N+2, S02 N+3; a port already taken is refused before anything starts.
//!
//! It stops everything, in order (the sites, the host, PostgreSQL, then the temporary
//! directory), on Ctrl-C (SIGINT) and on SIGTERM, exiting 0; and when a child ends
//! unexpectedly, exiting with an error that names it and shows the end of its log. The
//! children run in process groups of their own, so a Ctrl-C reaches only xtask, which then
//! stops them in that order. SIGINT and SIGTERM are taken by tokio's signal handling on a
//! thread of its own (no unsafe code here); nothing is blocked, since a blocked signal would
//! stay blocked in every child.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cardd_fleet_launch::{
    Fleet, Ports, DEFAULT_BASE_PORT, DEMO_OPERATORS, DEMO_SITES, HOST_NAME, PLATE,
};

/// How often the fleet's processes and the signals are looked at, in milliseconds.
const WATCH_MS: u64 = 200;

/// The usage of `cargo xtask fleet`.
pub const USAGE: &str = "cargo xtask fleet [--base-port N]";

/// SIGINT's number.
const SIGINT: i32 = 2;
/// SIGTERM's number.
const SIGTERM: i32 = 15;

/// The signal that asked for the end (0: none yet).
#[derive(Debug, Clone, Default)]
struct Stop(Arc<AtomicI32>);

impl Stop {
    /// Takes SIGINT and SIGTERM from now on: a thread with a small tokio runtime waits for
    /// them (tokio's handlers only note a signal; nothing is blocked, so the children start
    /// with the default dispositions and an empty mask).
    fn install() -> Result<Stop> {
        let stop = Stop::default();
        let flag = stop.0.clone();
        let (ready, installed) = std::sync::mpsc::channel::<std::io::Result<()>>();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (mut int, mut term) = match (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) {
                        (Ok(int), Ok(term)) => (int, term),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let got = tokio::select! {
                        _ = int.recv() => SIGINT,
                        _ = term.recv() => SIGTERM,
                    };
                    flag.store(got, Ordering::SeqCst);
                });
            })
            .context("starting the signal thread")?;
        installed
            .recv()
            .context("the signal thread ended")?
            .context("taking SIGINT and SIGTERM")?;
        Ok(stop)
    }

    /// The signal received, if any (`SIGINT`, `SIGTERM`).
    fn signal(&self) -> Option<&'static str> {
        match self.0.load(Ordering::SeqCst) {
            SIGINT => Some("SIGINT"),
            SIGTERM => Some("SIGTERM"),
            _ => None,
        }
    }
}

/// The `--base-port` of `args` (or the default).
fn base_port(args: &[String]) -> Result<u16> {
    let mut base = DEFAULT_BASE_PORT;
    let mut args = args.iter().skip_while(|a| a.as_str() == "--");
    while let Some(arg) = args.next() {
        let value = match arg.split_once('=') {
            Some(("--base-port", value)) => value.to_owned(),
            None if arg == "--base-port" => args
                .next()
                .with_context(|| format!("--base-port needs a port; usage: {USAGE}"))?
                .clone(),
            _ => bail!("unknown argument {arg:?}; usage: {USAGE}"),
        };
        base = value
            .parse()
            .ok()
            .filter(|p| *p >= 1024)
            .with_context(|| format!("--base-port {value:?}: a port from 1024 to 65531"))?;
    }
    Ok(base)
}

pub fn run(root: &Path, target: &Path, args: &[String]) -> Result<()> {
    let base = base_port(args)?;
    let stop = Stop::install()?;
    let ports = Ports::from_base(base, DEMO_SITES.len())?;
    // Before any install or build: a taken port is known at once.
    ports.check_free(&DEMO_SITES)?;
    crate::setup::install_system_packages()?;
    crate::setup::install_postgresql()?;
    let mut build = crate::cargo();
    build
        .current_dir(root)
        .args(["build", "-p", "cardd", "-p", "cardd-host"])
        // The same build as `cargo xtask test`'s (crash points inert unless CARDD_CRASH_AT
        // names one), so switching between the two rebuilds nothing.
        .args(["--features", "cardd-host/crashpoints"])
        .stdin(std::process::Stdio::null());
    let built = crate::run_checked(build, "cargo build -p cardd -p cardd-host");
    if let Some(signal) = stop.signal() {
        println!("xtask: {signal} before the fleet started; nothing is running");
        return Ok(());
    }
    built?;
    println!("xtask: starting PostgreSQL, cardd-host and sites {DEMO_SITES:?}…");
    let fleet = Fleet::launch(&target.join("debug"), &ports).context("starting the fleet")?;
    if let Some(signal) = stop.signal() {
        println!("xtask: {signal}: stopping the fleet");
        fleet.stop()?;
        println!("xtask: stopped");
        return Ok(());
    }
    print_guide(&fleet, target);
    watch(fleet, &stop)
}

/// Waits for a signal or a child's end, then stops the fleet in order.
fn watch(mut fleet: Fleet, stop: &Stop) -> Result<()> {
    loop {
        if let Some(signal) = stop.signal() {
            println!("\nxtask: {signal}: stopping the sites, then cardd-host, then PostgreSQL…");
            fleet.stop().context("stopping the fleet")?;
            println!("xtask: stopped; the fleet's temporary directory is removed");
            return Ok(());
        }
        if let Some(ended) = fleet.ended_child() {
            eprintln!("xtask: {ended}");
            eprintln!("xtask: stopping the rest of the fleet");
            let stopped = fleet.stop();
            bail!(
                "a process of the fleet ended unexpectedly (see above){}",
                stopped
                    .err()
                    .map(|e| format!("; stopping the rest: {e}"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(WATCH_MS));
    }
}

/// What to open and type: URLs, operators, a recharge to pay.
fn print_guide(fleet: &Fleet, target: &Path) {
    let host = &fleet.host;
    let cli = target.join("debug").join("cardd-host");
    let mut out = String::new();
    out.push_str(&format!(
        "\ncardd fleet up in {:.1} s (debug binaries; temporary directory {})\n\n",
        fleet.started_in.as_secs_f64(),
        fleet.root.path().display()
    ));
    out.push_str(&format!(
        "  PostgreSQL (throw-away)  127.0.0.1:{}\n",
        fleet.pg.port()
    ));
    out.push_str(&format!(
        "  cardd-host               https://{} ({HOST_NAME}, mutual TLS, for the sites)\n",
        host.addr
    ));
    if let Some(url) = host.backoffice_url() {
        out.push_str(&format!("  back office (后台)       {url}\n"));
    }
    for site in &fleet.sites {
        out.push_str(&format!(
            "  site {}: teller console {}   kiosk {}kiosk/demo\n",
            site.id,
            site.url(),
            site.url()
        ));
    }
    out.push_str(
        "\nOperators (kept at the host; they log in at any site; public demo passwords):\n",
    );
    for o in DEMO_OPERATORS {
        out.push_str(&format!(
            "  {:<11} {:<10} {}\n",
            o.user, o.password, o.title
        ));
    }
    let s02 = fleet.sites.get(1).map(|s| s.url()).unwrap_or_default();
    out.push_str(&format!(
        "\nPay a demo recharge at the host (prints the new record's id, 未圈存):\n  \
         {} --config {} recharge --plate {PLATE} --amount 50.00\n\
         Load it at S02's kiosk: open {s02}kiosk/demo, enter kiosk / kiosk123; the demo ETC \
         card is in the reader: confirm 是否圈存？.\n\
         See it 已圈存 at the host:\n  {} --config {} records --plate {PLATE}\n\
         Logs: {}/*/… (cardd-host: host/host.log; sites: S01/cardd.log, S02/cardd.log)\n\n\
         Ctrl-C stops everything (sites, then cardd-host, then PostgreSQL) and removes the \
         temporary directory.\n",
        cli.display(),
        host.config.display(),
        cli.display(),
        host.config.display(),
        fleet.root.path().display()
    ));
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_base_port_is_an_option() {
        assert_eq!(base_port(&[]).unwrap(), DEFAULT_BASE_PORT);
        assert_eq!(base_port(&args(&["--base-port", "9000"])).unwrap(), 9000);
        assert_eq!(base_port(&args(&["--", "--base-port=9100"])).unwrap(), 9100);
        assert!(base_port(&args(&["--base-port"])).is_err());
        assert!(base_port(&args(&["--base-port", "80"])).is_err());
        assert!(base_port(&args(&["--ports", "1"])).is_err());
    }
}
