//! The web client's type check: `tsc --noEmit` over clients/web (its `tsconfig.json`: `checkJs`,
//! `strict`), with the TypeScript version pinned in `clients/web/package-lock.json`.
//!
//! TypeScript is installed with `npm ci` into `clients/web/node_modules` (gitignored) only when
//! the installed version is not the locked one, so a second run, or one without a network after
//! the first, does not touch the registry.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The web client, from the project root.
const WEB: &str = "clients/web";

/// The `"version"` of the `node_modules/typescript` entry of a package-lock.json (or of a
/// package.json when `lock` is false).
fn version(text: &str, lock: bool) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let v = if lock {
        &value["packages"]["node_modules/typescript"]["version"]
    } else {
        &value["version"]
    };
    v.as_str().map(str::to_owned)
}

/// Installs the locked TypeScript unless it is there already.
fn install(web: &Path) -> Result<()> {
    let lock = std::fs::read_to_string(web.join("package-lock.json"))
        .context("reading clients/web/package-lock.json")?;
    let locked = version(&lock, true).context("no typescript in package-lock.json")?;
    let installed = std::fs::read_to_string(web.join("node_modules/typescript/package.json"))
        .ok()
        .and_then(|t| version(&t, false));
    if installed.as_deref() == Some(locked.as_str()) {
        return Ok(());
    }
    println!("xtask: installing typescript {locked} into clients/web/node_modules (npm ci)");
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(web)
        .stdin(std::process::Stdio::null())
        .status()
        .context("running npm (is Node.js installed? `cargo xtask setup`)")?;
    if !status.success() {
        bail!("npm ci in clients/web failed ({status})");
    }
    Ok(())
}

/// Type-checks the web client; an error lists what tsc found.
pub fn check(root: &Path) -> Result<()> {
    let web = root.join(WEB);
    install(&web)?;
    let status = Command::new("node")
        .arg(web.join("node_modules/typescript/bin/tsc"))
        .args(["--noEmit", "-p"])
        .arg(&web)
        .stdin(std::process::Stdio::null())
        .status()
        .context("running node (is Node.js installed? `cargo xtask setup`)")?;
    if !status.success() {
        bail!("tsc found type errors in clients/web ({status})");
    }
    println!("tsc: clients/web ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_locked_typescript_version_is_read() {
        let lock = r#"{"packages": {"node_modules/typescript": {"version": "5.9.3"}}}"#;
        assert_eq!(super::version(lock, true).as_deref(), Some("5.9.3"));
        assert_eq!(
            super::version(r#"{"version": "5.9.3"}"#, false).as_deref(),
            Some("5.9.3")
        );
        assert_eq!(super::version("{}", true), None);
    }
}
