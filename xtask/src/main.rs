//! `cargo xtask`: the project's own automation, in Rust so it runs wherever cargo does.
//!
//! * `cargo xtask test` is the README's test command: it installs the system packages the
//!   suite needs (idempotently, PostgreSQL 15 included when none is installed), type-checks
//!   the web client (`tsc`, see `cargo xtask tsc`), starts pcscd when none runs (the PC/SC
//!   tests talk to a real one) and a throw-away PostgreSQL cluster (`cardd-pg-throwaway`: a
//!   temporary directory, an unprivileged user when run as root, `fsync` and
//!   `synchronous_commit` on), runs every test in the workspace with `CARDD_PCSCD=1` and the
//!   cluster's URL in `CARDD_TEST_DATABASE_URL`, checks the Debian package when they pass
//!   (`cargo xtask package --check`), and stops both, whether the tests pass or not (the
//!   cluster also when xtask is interrupted: it stops when xtask's end of a pipe closes).
//! * `cargo xtask pg -- <command> [args]` runs one command with a throw-away PostgreSQL
//!   cluster's URL in `CARDD_TEST_DATABASE_URL` (for example
//!   `cargo xtask pg -- cargo test -p cardd-store-pg`), then stops and deletes the cluster.
//! * `cargo xtask tsc` type-checks the web client: `tsc --noEmit` over clients/web, installing
//!   the TypeScript pinned in clients/web/package-lock.json with `npm ci` when it is missing.
//! * `cargo xtask setup` only installs the system packages.
//! * `cargo xtask demo` installs them (cardd links libpcsclite) and runs the daemon on its
//!   embedded default (`cargo run -p cardd -- --demo`).
//! * `cargo xtask fleet [--base-port N]` installs them, builds `cardd` and `cardd-host` (debug)
//!   and runs a whole demo fleet until Ctrl-C: a throw-away PostgreSQL, one `cardd-host` with
//!   its back office and two sites, S01 and S02, with simulated readers (see [`fleet`]; ports
//!   from 7443: the host, the back office, S01, S02). The fleet tests start the same fleet
//!   (`cardd-fleet-launch`).
//! * `cargo xtask package [--check]` builds the release binaries and the Debian package
//!   `target/debian/cardd_VERSION_ARCH.deb` from `packaging/`; `--check` then reads it back and,
//!   as root, installs, starts, stops and removes it (see [`package`]). `cargo xtask test` runs
//!   the same check after the workspace's tests.
//! * `cargo xtask tidy` checks the project's own rules (also run as a test).
//! * `cargo xtask rpc-types` writes `clients/web/types/rpc.d.ts` from `docs/openrpc.json` (a test
//!   fails when it is stale; `UPDATE_DOCS=1 cargo test -p xtask` does the same).
//! * `cargo xtask bench` builds cardd and its benchmarks in release mode, starts pcscd when none
//!   runs (the APDU benchmark goes through a real one) and, for the `host` section, cardd-host
//!   and a throw-away PostgreSQL (passed as `CARDD_TEST_DATABASE_URL`), prints every figure and
//!   stops what it started. Not part of the test suite (see docs/performance.md).

mod cycles;
mod fleet;
mod package;
mod pcscd;
mod rpc_types;
mod setup;
mod tidy;
mod web;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("setup") => setup::install_system_packages(),
        Some("pg") => pg(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("fleet") => {
            let root = project_root();
            fleet::run(&root, &target_dir(&root), &args[1..])
        }
        Some("bench") => bench(&args[1..]),
        Some("package") => {
            let root = project_root();
            package::run(&root, &target_dir(&root), &args[1..])
        }
        Some("tsc") => {
            setup::install_system_packages()?;
            web::check(&project_root())
        }
        Some("rpc-types") => {
            let root = project_root();
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(root.join(rpc_types::INPUT))?)
                    .context("docs/openrpc.json")?;
            let path = root.join(rpc_types::OUTPUT);
            std::fs::create_dir_all(path.parent().unwrap_or(&root))?;
            std::fs::write(&path, rpc_types::generate(&doc))?;
            println!("wrote {}", rpc_types::OUTPUT);
            Ok(())
        }
        Some("tidy") => {
            let problems = tidy::check(&project_root())?;
            if problems.is_empty() {
                println!("tidy: ok");
                Ok(())
            } else {
                for p in &problems {
                    eprintln!("{p}");
                }
                bail!("{} tidy problem(s)", problems.len())
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <test [-- cargo test args] | pg -- command [args] | setup | demo [-- cardd args] | fleet [--base-port N] | bench [-- sections] | package [--check] [--debug] | tidy | tsc | rpc-types>"
            );
            bail!("unknown or missing subcommand")
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn project_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or(manifest)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The directory cargo builds into (where xtask keeps pcscd's log).
fn target_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn test(extra: &[String]) -> Result<()> {
    setup::install_system_packages()?;
    let root = project_root();
    web::check(&root)?;
    // Stops the pcscd it started when dropped: after the tests, and on any error below.
    let pcscd = pcscd::ensure_running(&target_dir(&root))?;
    // Stopped and deleted when dropped, likewise; and by its supervisor if xtask is killed.
    let cluster = start_cluster()?;
    // The fleet tests start the daemon and the issuer host as real processes; the package
    // check packages these binaries (and cardctl).
    let mut build = cargo();
    build
        .current_dir(&root)
        .args([
            "build",
            "--locked",
            "-p",
            "cardd",
            "-p",
            "cardctl",
            "-p",
            "cardd-host",
        ])
        // The host's crash points (inert unless CARDD_CRASH_AT names one) for the kill tests.
        .args(["--features", "cardd-host/crashpoints"])
        .stdin(std::process::Stdio::null());
    if let Err(e) = run_checked(build, "cargo build (the binaries the fleet tests start)") {
        let _ = stop_cluster(cluster);
        drop(pcscd);
        return Err(e);
    }
    let mut command = cargo();
    command
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .env("CARDD_PCSCD", "1")
        .env(cardd_pg_throwaway::URL_VAR, cluster.url())
        .stdin(std::process::Stdio::null());
    let result = run_checked(command, "cargo test");
    // The Debian package, built, read back and (as root) installed, run and removed, while
    // pcscd still runs (the packaged configuration serves PC/SC readers).
    let result = result.and_then(|()| {
        let deb = package::build(&root, &target_dir(&root), package::Profile::Check)?;
        package::check(&root, &deb)
    });
    let stopped = stop_cluster(cluster);
    drop(pcscd);
    result.and(stopped)
}

/// Starts a throw-away PostgreSQL cluster for the tests.
fn start_cluster() -> Result<cardd_pg_throwaway::Cluster> {
    let cluster = cardd_pg_throwaway::Cluster::start()?;
    println!(
        "xtask: started a throw-away PostgreSQL on 127.0.0.1:{}",
        cluster.port()
    );
    Ok(cluster)
}

fn stop_cluster(cluster: cardd_pg_throwaway::Cluster) -> Result<()> {
    cluster.stop()?;
    println!("xtask: stopped and deleted the throw-away PostgreSQL");
    Ok(())
}

/// `cargo xtask pg -- <command> [args]`: one command with a throw-away cluster's URL.
fn pg(args: &[String]) -> Result<()> {
    let mut args = args.iter().skip_while(|a| a.as_str() == "--");
    let Some(program) = args.next() else {
        bail!("usage: cargo xtask pg -- <command> [args]");
    };
    setup::install_postgresql()?;
    let cluster = start_cluster()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(project_root())
        .env(cardd_pg_throwaway::URL_VAR, cluster.url());
    let result = run_checked(command, program);
    result.and(stop_cluster(cluster))
}

fn bench(extra: &[String]) -> Result<()> {
    setup::install_system_packages()?;
    let root = project_root();
    let args: Vec<&String> = extra.iter().skip_while(|a| a.as_str() == "--").collect();
    // The host section (named, or every section) runs against a throw-away PostgreSQL.
    let sections = ["apdu", "flow", "loads", "service", "footprint", "host"];
    let host = args.iter().any(|a| a.as_str() == "host")
        || !args.iter().any(|a| sections.contains(&a.as_str()));
    let mut build = cargo();
    build.current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "cardd",
        "-p",
        "cardd-bench",
    ]);
    if host {
        build.args(["-p", "cardd-host"]);
    }
    run_checked(build, "cargo build --release")?;
    let release = target_dir(&root).join("release");
    // Stops the pcscd it started when dropped, after the benchmarks or on an error.
    let pcscd = pcscd::ensure_running(&target_dir(&root))?;
    // Stopped and deleted when dropped, likewise.
    let cluster = if host {
        setup::install_postgresql()?;
        Some(start_cluster()?)
    } else {
        None
    };
    let mut command = Command::new(release.join("cardd-bench"));
    command
        .current_dir(&root)
        .arg("--cardd")
        .arg(release.join("cardd"))
        .args(args)
        .stdin(std::process::Stdio::null());
    if let Some(cluster) = &cluster {
        command.env(cardd_pg_throwaway::URL_VAR, cluster.url());
    }
    let result = run_checked(command, "cardd-bench");
    drop(pcscd);
    match cluster {
        Some(cluster) => result.and(stop_cluster(cluster)),
        None => result,
    }
}

/// Runs `command` and turns a failure into an error naming `what`.
fn run_checked(mut command: Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn demo(extra: &[String]) -> Result<()> {
    setup::install_system_packages()?;
    let status = cargo()
        .current_dir(project_root())
        .args(["run", "-p", "cardd", "--", "--demo"])
        .args(extra.iter().skip_while(|a| a.as_str() == "--"))
        .status()
        .context("running cargo run -p cardd")?;
    if !status.success() {
        bail!("cardd exited with {status}");
    }
    Ok(())
}
