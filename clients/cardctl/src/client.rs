//! The JSON-RPC client: one POST per call to cardd's loopback endpoint, the session token kept
//! in a file only the user can read, and cardd's errors turned into messages that say what to
//! do next (the daemon's own `data.action`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// How long one call may take, in seconds (flows.events long-polls for at most 25 s).
pub const CALL_TIMEOUT_S: u64 = 40;
/// Largest answer read, in bytes (cardd's own response limit is smaller).
const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// An error answered by cardd, with its code, message and what to do.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub name: String,
    pub message: String,
    pub action: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.message, self.name, self.code)?;
        if !self.action.is_empty() {
            write!(f, "\n  what to do: {}", self.action)?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

/// A connection to one cardd.
#[derive(Debug)]
pub struct Client {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
    next_id: u64,
}

/// Where `cardctl login` keeps the session: `$CARDCTL_SESSION`, else
/// `$XDG_CONFIG_HOME/cardctl/session.json`, else `~/.config/cardctl/session.json`.
pub fn session_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CARDCTL_SESSION") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("cardctl").join("session.json")
}

/// Saves the session for later commands, readable by the user only.
pub fn save_session(url: &str, token: &str, username: &str) -> Result<PathBuf> {
    let path = session_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let body = json!({ "url": url, "token": token, "username": username }).to_string();
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The saved session's token, if it was saved for `url`.
pub fn saved_token(url: &str) -> Option<String> {
    let text = std::fs::read_to_string(session_path()).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    (v["url"] == url).then(|| v["token"].as_str().map(str::to_owned))?
}

/// Forgets the saved session.
pub fn forget_session() {
    let _ = std::fs::remove_file(session_path());
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(CALL_TIMEOUT_S)))
            .http_status_as_error(false)
            .build();
        Client {
            url: url.to_owned(),
            token,
            agent: config.into(),
            next_id: 1,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with named `params`; a cardd error comes back as [`RpcError`].
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut request = self.agent.post(&self.url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .map_err(|e| {
                anyhow!(
                    "cannot reach cardd at {}: {e}; is the daemon running (cargo xtask demo), and is --url right?",
                    self.url
                )
            })?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_string()
            .context("reading cardd's answer")?;
        let reply: Value = serde_json::from_str(&text).with_context(|| {
            format!("cardd answered HTTP {status} with something that is not JSON: {text}")
        })?;
        if let Some(error) = reply.get("error") {
            let data = error.get("data").cloned().unwrap_or(Value::Null);
            return Err(RpcError {
                code: error["code"].as_i64().unwrap_or(0),
                name: data["error"].as_str().unwrap_or("").to_owned(),
                message: error["message"].as_str().unwrap_or("").to_owned(),
                action: data["action"].as_str().unwrap_or("").to_owned(),
            }
            .into());
        }
        match reply.get("result") {
            Some(result) => Ok(result.clone()),
            None => bail!("cardd answered without a result or an error: {reply}"),
        }
    }
}
