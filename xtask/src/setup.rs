//! Installing the system packages the test suite needs, idempotently.
//!
//! A fresh Debian machine has only the Rust toolchain. Each package here is installed with
//! `apt-get` only when `dpkg` says it is missing, so a second run does nothing. When the
//! machine cannot install (not root, no apt), the error names the missing packages so the
//! operator can install them by hand: nothing is skipped silently.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the suite needs, with why.
pub const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    (
        "pcscd",
        "the PC/SC daemon the pcsc driver's end-to-end tests talk to (started by `cargo xtask test`)",
    ),
    (
        "libpcsclite-dev",
        "libpcsclite.so to link the `pcsc` crate: cardd and its tests link the pcsc driver",
    ),
    (
        "python3",
        "the example plugin and the legacy-teller example client are Python (standard library only); their tests run them",
    ),
    (
        "vsmartcard-vpcd",
        "vpcd, pcscd's virtual reader `Virtual PCD 00 00` that the tests' simulated card plugs into",
    ),
    (
        "chromium",
        "the real browser the browser tests drive headless (teller console, kiosk screen)",
    ),
    (
        "chromium-driver",
        "chromedriver, the WebDriver server the browser tests talk to",
    ),
    (
        "systemd",
        "systemd-analyze, which verifies the Debian package's units (`cargo xtask package --check`; \
         installing it does not make systemd the container's init)",
    ),
    (
        "binutils",
        "strip, which takes the debug info out of the binaries of the package the test command \
         checks",
    ),
    (
        "fonts-wqy-microhei",
        "a CJK font, so the browser tests' screenshots show the zh-CN pages and not empty boxes",
    ),
];

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Debian packages for the web client's type check (`tsc`, installed by npm), needed only when
/// `node` and `npm` are not on the PATH already (a machine may have Node.js from elsewhere).
pub const NODE_PACKAGES: &[(&str, &str)] = &[
    (
        "nodejs",
        "runs the TypeScript compiler that type-checks the web client",
    ),
    (
        "npm",
        "installs the TypeScript compiler pinned in clients/web/package-lock.json",
    ),
];

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Debian package of PostgreSQL's server, needed only when no PostgreSQL is installed
/// (any version under `/usr/lib/postgresql` will do): the issuer host's PostgreSQL tests run a
/// throw-away cluster of it (`cardd-pg-throwaway`).
pub const POSTGRESQL_PACKAGE: (&str, &str) = (
    "postgresql-15",
    "initdb and postgres for the throw-away cluster the PostgreSQL issuer host's tests run on",
);

pub fn install_system_packages() -> Result<()> {
    let mut missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !is_installed(p))
        .collect();
    if cardd_pg_throwaway::bin_dir().is_none() && !is_installed(POSTGRESQL_PACKAGE.0) {
        missing.push(POSTGRESQL_PACKAGE.0);
    }
    if !(runs("node") && runs("npm")) {
        missing.extend(
            NODE_PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| !is_installed(p)),
        );
    }
    install(missing)
}

/// Installs PostgreSQL's server alone, when none is installed (`cargo xtask pg`).
pub fn install_postgresql() -> Result<()> {
    if cardd_pg_throwaway::bin_dir().is_some() || is_installed(POSTGRESQL_PACKAGE.0) {
        return Ok(());
    }
    install(vec![POSTGRESQL_PACKAGE.0])
}

/// Installs `missing` with apt-get, or says which packages to install by hand.
fn install(missing: Vec<&str>) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing system packages: {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<bool> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .status()
            .with_context(|| {
                format!(
                    "running apt-get (is this Debian, and are you root?); install these packages by hand: {}",
                    missing.join(" ")
                )
            })?;
        Ok(status.success())
    };
    if !apt(&["update", "-qq"])? {
        bail!(
            "apt-get update failed; install these packages by hand: {}",
            missing.join(" ")
        );
    }
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    if !apt(&args)? {
        bail!(
            "apt-get install failed; install these packages by hand: {}",
            missing.join(" ")
        );
    }
    let still: Vec<&str> = missing.into_iter().filter(|p| !is_installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but these packages are still missing; install them by hand: {}",
            still.join(" ")
        );
    }
    Ok(())
}
