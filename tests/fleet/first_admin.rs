//! A new single-machine install (real `cardd` processes, no `--demo`): with no operator, the
//! daemon starts, logs how to create the first administrator and says `needs_setup` on
//! `/health`; `cardd operators add` (the daemon stopped) refuses a weak password, reads a good
//! one from standard input (never from the command line) and creates the administrator, who
//! then logs in; `needs_setup` is gone.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::processes::{binary, run};
use crate::single::{health, rpc, Daemon};

#[test]
fn a_new_install_says_it_needs_its_first_administrator_and_takes_only_a_strong_password(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = cardd_fleet_launch::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = dir.path().join("cardd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n\n[data]\ndir = {:?}\n\n[keys]\nsource = \"demo\"\n\n\
             [[readers]]\ndriver = \"sim\"\n[readers.options]\n\
             [[readers.options.readers]]\nid = \"etc\"\nkind = \"contact\"\ncard = \"demo-etc\"\n",
            dir.path().join("data")
        ),
    )?;
    let log = dir.path().join("cardd.log");

    // No operator: it runs, says so on /health and in its log.
    let daemon = Daemon::start(&config, &log, addr)?;
    let h = health(addr)?;
    ensure!(h["needs_setup"] == true, "{h}");
    drop(daemon);
    let logged = std::fs::read_to_string(&log)?;
    ensure!(
        logged.contains("operators add --role admin"),
        "the log says how to create the first administrator: {logged}"
    );

    // Weak passwords are refused and create nothing; the password never comes from argv.
    let add = || {
        let mut c = Command::new(binary("cardd"));
        c.arg("--config")
            .arg(&config)
            .args(["operators", "add", "--role", "admin", "boss"]);
        c
    };
    for weak in ["boss12345678", "1234567890", "password123", "short"] {
        let refused = run(add(), Some(&format!("{weak}\n")));
        let message = format!("{:?}", refused.as_ref().err());
        ensure!(
            refused.is_err() && message.contains("nothing was created"),
            "{weak}: {message}"
        );
    }
    let created = run(add(), Some("Lz8#mQ2!vR4t-counter\n")).context("a strong password")?;
    ensure!(
        created.contains("operator boss (admin) created"),
        "{created}"
    );

    // Started again: the administrator logs in, and nothing needs setting up.
    let _daemon = Daemon::start(&config, &log, addr)?;
    let h = health(addr)?;
    ensure!(h["needs_setup"] == false, "{h}");
    let login = rpc(
        addr,
        "auth.login",
        json!({"username": "boss", "password": "Lz8#mQ2!vR4t-counter"}),
        None,
    )?;
    ensure!(login["result"]["token"].is_string(), "{login}");
    Ok(())
}
