//! `cardd backup`, `cardd restore` and the data directory's format on a real install (real
//! `cardd` processes): a backup made through the running daemon's control socket, a restore
//! refused while the daemon runs and refused over newer data without `--force`, a forced
//! restore that starts in restored mode (the replaced data kept), and a data directory of a
//! newer format refused at start with the version it needs, untouched.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::processes::{binary, run};
use crate::single::{health, rpc, write_key_file, Daemon};

const PASSWORD: &str = "Qv7#pL2!zX9m-backup";

fn login(addr: SocketAddr) -> Result<()> {
    let login = rpc(
        addr,
        "auth.login",
        json!({"username": "boss", "password": PASSWORD}),
        None,
    )?;
    ensure!(login["result"]["token"].is_string(), "login: {login}");
    Ok(())
}

/// `cardd --config CONFIG ARGS…` expected to fail: what it printed on standard error.
fn refused(config: &Path, args: &[&str]) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary("cardd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    ensure!(
        !status.success(),
        "{args:?} should fail: {}{stderr}",
        String::from_utf8_lossy(&stdout)
    );
    Ok(stderr)
}

fn cardd(config: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new(binary("cardd"));
    command.arg("--config").arg(config).args(args);
    Ok(run(command, None)?)
}

/// A listing of every file below `dir` with its size, to show a directory was not touched.
fn listing(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path().display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn backups_restores_and_formats_on_a_real_install() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = cardd_fleet_launch::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = dir.path().join("data");
    let keys = dir.path().join("keys.toml");
    write_key_file(&keys)?;
    let config = dir.path().join("cardd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n\n[data]\ndir = {data:?}\n\n\
             [keys]\nsource = \"file\"\nfile = {keys:?}\n\n\
             [[readers]]\ndriver = \"sim\"\n[readers.options]\n\
             [[readers.options.readers]]\nid = \"etc\"\nkind = \"contact\"\ncard = \"demo-etc\"\n"
        ),
    )?;
    let log = dir.path().join("cardd.log");
    let mut add = Command::new(binary("cardd"));
    add.arg("--config")
        .arg(&config)
        .args(["operators", "add", "--role", "admin", "boss"]);
    run(add, Some(&format!("{PASSWORD}\n"))).context("the administrator")?;
    ensure!(
        data.join("cardd-data.toml").is_file(),
        "the data directory carries its format"
    );

    // A backup through the running daemon, then more happens (a login is audited).
    let daemon = Daemon::start(&config, &log, addr)?;
    let backup = dir.path().join("backup-1");
    let printed = cardd(&config, &["backup", backup.to_str().unwrap()])?;
    ensure!(printed.contains("the running daemon"), "{printed}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(backup.join("manifest.json"))?)?;
    ensure!(manifest["kind"] == "cardd-backup", "{manifest}");
    ensure!(manifest["data_format"] == 2, "{manifest}");
    ensure!(
        manifest["audit"]["records"].as_u64() > Some(0),
        "{manifest}"
    );
    // The default place: inside the data directory.
    let printed = cardd(&config, &["backup"])?;
    ensure!(printed.contains("backups/backup-"), "{printed}");
    login(addr)?;
    // No restore under a running daemon.
    let e = refused(&config, &["restore", backup.to_str().unwrap(), "--force"])?;
    ensure!(e.contains("stop it first"), "{e}");
    daemon.stop()?;

    // Newer data: refused without --force, nothing changed.
    let top = |dir: &Path| -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        Ok(names)
    };
    let before = (top(&data)?, top(&data.join("backups"))?);
    let e = refused(&config, &["restore", backup.to_str().unwrap()])?;
    ensure!(e.contains("--force") && e.contains("newer"), "{e}");
    ensure!(
        (top(&data)?, top(&data.join("backups"))?) == before,
        "a refused restore changes nothing"
    );
    let printed = cardd(&config, &["restore", backup.to_str().unwrap(), "--force"])?;
    ensure!(printed.contains("restored mode"), "{printed}");
    let kept: Vec<_> = std::fs::read_dir(data.join("backups"))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("replaced-by-restore-")
        })
        .collect();
    ensure!(kept.len() == 1, "the replaced data is kept");

    let daemon = Daemon::start(&config, &log, addr)?;
    let h = health(addr)?;
    ensure!(
        h["restored"]["backup_created_at"] == manifest["created_at"],
        "{h}"
    );
    login(addr)?;
    daemon.stop()?;
    let logged = std::fs::read_to_string(&log)?;
    ensure!(
        logged.contains("restored mode"),
        "the start says so: {logged}"
    );

    // A data directory written by a newer cardd: refused at start, untouched.
    std::fs::write(
        data.join("cardd-data.toml"),
        "format = 3\nwritten_by = \"cardd 9.0.0\"\nwritten_at = \"2030-01-01T00:00:00Z\"\n",
    )?;
    let before = listing(&data)?;
    let e = refused(&config, &[])?;
    ensure!(e.contains("run cardd 9.0.0 or newer"), "{e}");
    ensure!(listing(&data)? == before, "a newer directory is left alone");
    Ok(())
}
