//! A new single-machine install (real `cardd` processes, no `--demo`): with no operator, the
//! daemon starts, logs how to create the first administrator and says `needs_setup` on
//! `/health`; `cardd operators add` (the daemon stopped) refuses a weak password, reads a good
//! one from standard input (never from the command line) and creates the administrator, who
//! then logs in; `needs_setup` is gone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::processes::{binary, eventually, run};

/// One HTTP exchange with the daemon: the answer's body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

fn health(addr: SocketAddr) -> Result<Value> {
    Ok(serde_json::from_str(&http(addr, "GET", "/health", "")?)?)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path, log: &std::path::Path, addr: SocketAddr) -> Result<Daemon> {
    let child = Command::new(binary("cardd"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let daemon = Daemon(child);
    eventually(Duration::from_secs(30), "cardd answers /health", || {
        Ok(health(addr).is_ok())
    })?;
    Ok(daemon)
}

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
    let daemon = start(&config, &log, addr)?;
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
    let _daemon = start(&config, &log, addr)?;
    let h = health(addr)?;
    ensure!(h["needs_setup"] == false, "{h}");
    let login = http(
        addr,
        "POST",
        "/",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login",
                "params": {"username": "boss", "password": "Lz8#mQ2!vR4t-counter"}})
        .to_string(),
    )?;
    ensure!(login.contains("\"token\""), "{login}");
    Ok(())
}
