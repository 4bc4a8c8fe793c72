//! `cargo xtask`: the project's own automation, in Rust so it runs wherever cargo does.
//!
//! * `cargo xtask test` is the README's test command: it installs the system packages the
//!   suite needs (idempotently), then runs every test in the workspace.
//! * `cargo xtask setup` only installs the system packages.
//! * `cargo xtask tidy` checks the project's own rules (also run as a test).

mod setup;
mod tidy;

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
            eprintln!("usage: cargo xtask <test [-- cargo test args] | setup | tidy>");
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

fn test(extra: &[String]) -> Result<()> {
    setup::install_system_packages()?;
    let root = project_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}
