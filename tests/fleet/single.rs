//! A single-machine `cardd` as a real process, for the tests of a real install: start it on a
//! configuration file, wait for `/health`, talk HTTP and JSON-RPC to it, stop it as systemd
//! does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::processes::{binary, eventually};

/// One HTTP exchange with the daemon: the answer's body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<String> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// `GET /health`.
pub fn health(addr: SocketAddr) -> Result<Value> {
    Ok(serde_json::from_str(&http(
        addr, "GET", "/health", "", None,
    )?)?)
}

/// One JSON-RPC call over HTTP: the reply.
pub fn rpc(addr: SocketAddr, method: &str, params: Value, token: Option<&str>) -> Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let answer = http(addr, "POST", "/", &body, token)?;
    serde_json::from_str(&answer).with_context(|| format!("{method}: {answer}"))
}

/// A running `cardd`; killed if the test ends before [`Daemon::stop`].
pub struct Daemon(Child);

impl Daemon {
    /// Starts `cardd --config CONFIG`, its log in `log`, and waits until it answers `/health`
    /// at `addr`.
    pub fn start(config: &Path, log: &Path, addr: SocketAddr) -> Result<Daemon> {
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

    /// Stops it as systemd does (SIGTERM) and waits for it to exit.
    pub fn stop(mut self) -> Result<()> {
        let term = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()?;
        ensure!(term.success(), "kill -TERM failed");
        let exit = self.0.wait()?;
        ensure!(exit.success(), "cardd exited with {exit}");
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ETC master keys of a key file: the demo masters, with which the simulated cards are
/// personalised (hex).
pub const KEYS_HEX: [&str; 4] = [
    cardd_crypto::demo::MASTER_LOAD_KEY,
    cardd_crypto::demo::MASTER_PURCHASE_KEY,
    cardd_crypto::demo::MASTER_TAC_KEY,
    cardd_crypto::demo::MASTER_MAINTENANCE_KEY,
];

/// Writes a key file holding [`KEYS_HEX`] at `path`, readable by its owner only.
pub fn write_key_file(path: &Path) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "[etc]\nalgorithm = \"tdes\"\ntwo_level = true\nload = \"{}\"\npurchase = \"{}\"\n\
             tac = \"{}\"\nmaintenance = \"{}\"\n",
            KEYS_HEX[0], KEYS_HEX[1], KEYS_HEX[2], KEYS_HEX[3]
        ),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
