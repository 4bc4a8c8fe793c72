//! The JSON-RPC client: one POST per call to cardd's loopback endpoint, the session token kept
//! in a file only the user can read, and cardd's errors turned into messages that say what to
//! do next (the daemon's own `data.action`).
//!
//! Calls are typed on the wire contract: [`Client::call`] takes a `cardd_api` method type, sends
//! its params and decodes its result, so cardctl and the daemon are compiled against the same
//! definitions. [`Client::call_by_name`] is for `cardctl call`, whose method the user names.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cardd_api::Method;
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

    /// Calls the method `M` with its params; a cardd error comes back as [`RpcError`], an
    /// answer that is not `M`'s result as an error naming the method.
    pub fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result> {
        let params = serde_json::to_value(params)
            .with_context(|| format!("encoding the parameters of {}", M::NAME))?;
        let result = self.call_by_name(M::NAME, params)?;
        serde_json::from_value(result)
            .with_context(|| format!("cardd's answer to {} is not what the API defines", M::NAME))
    }

    /// Calls the method named `method` with named `params`, untyped: for `cardctl call`, whose
    /// method and params the user gives. A cardd error comes back as [`RpcError`].
    pub fn call_by_name(&mut self, method: &str, params: Value) -> Result<Value> {
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

#[cfg(test)]
mod tests {
    use cardd_api::{auth, card, flows, readers, system, NoParams};
    use serde_json::json;

    use super::Client;

    /// Typed calls against a daemon on the embedded default: params encoded from, and results
    /// decoded into, the API's own types.
    #[tokio::test(flavor = "multi_thread")]
    async fn typed_calls_round_trip_against_a_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = cardd::config::Config::demo(dir.path().join("data"));
        let world = format!("cardctl-typed-{}", std::process::id());
        config.readers[0].options = json!({ "world": world });
        config.flows.dir = Some(cardd::flows::default_dir());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let running = cardd::server::start(config, listener).await.unwrap();
        let url = format!("http://127.0.0.1:{}/", running.addr.port());
        tokio::task::spawn_blocking(move || {
            let mut c = Client::new(&url, None);
            let version = c.call::<system::VersionInfo>(&NoParams {}).unwrap();
            assert_eq!(version.name, "cardd");
            let refused = c.call::<readers::List>(&NoParams {}).unwrap_err();
            let refused = refused.downcast_ref::<super::RpcError>().unwrap();
            assert_eq!(refused.name, "Unauthenticated");

            let login = c
                .call::<auth::Login>(&auth::LoginParams {
                    username: "teller".into(),
                    password: "teller123".into(),
                })
                .unwrap();
            assert_eq!(login.operator.username, "teller");
            let mut c = Client::new(&url, Some(login.token));
            let me = c.call::<auth::Whoami>(&NoParams {}).unwrap();
            assert_eq!(me.operator.role, cardd_api::Role::Teller);
            let list = c.call::<readers::List>(&NoParams {}).unwrap();
            let etc = list.iter().find(|r| r.id == "sim:etc").unwrap();
            assert!(etc.card_present);
            let summary = c
                .call::<card::Summary>(&card::SummaryParams {
                    reader_id: "sim:etc".into(),
                    online_counter: false,
                })
                .unwrap();
            assert_eq!(summary.kind, Some(card::CardKind::Etc));
            assert!(summary.balance_fen.is_some());
            let flows = c.call::<flows::List>(&NoParams {}).unwrap();
            assert!(!flows.is_empty());
        })
        .await
        .unwrap();
        running.stop().await;
    }
}
