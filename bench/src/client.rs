//! An in-process daemon for the benchmarks, and JSON-RPC clients (HTTP and WebSocket) that
//! carry an operator's token, as a teller's page or a legacy client would.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use cardd::config::Config;
use cardd::server::{Daemon, Running};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde_json::Value;

/// A daemon started in this process on `127.0.0.1:0` with its own data directory.
pub struct BenchDaemon {
    pub running: Running,
    _dir: tempfile::TempDir,
}

impl BenchDaemon {
    /// Starts the embedded default, adjusted. The per-connection rate limit is raised so the
    /// figures measure cardd's work, not its throttle.
    pub async fn start(adjust: impl FnOnce(&mut Config, &std::path::Path)) -> Result<BenchDaemon> {
        BenchDaemon::start_in(&std::env::temp_dir(), adjust).await
    }

    /// [`BenchDaemon::start`] with the data directory under `base` (e.g. a tmpfs).
    pub async fn start_in(
        base: &std::path::Path,
        adjust: impl FnOnce(&mut Config, &std::path::Path),
    ) -> Result<BenchDaemon> {
        let dir = tempfile::tempdir_in(base).context("temp dir")?;
        let mut config = Config::demo(dir.path().join("data"));
        // The load benchmarks drive the journaled load through the demo-keys test flow.
        config.flows.unfunded_test_loads = true;
        config.limits.requests_per_second_per_connection = 100_000;
        config.limits.request_burst_per_connection = 100_000;
        config.limits.connections_max = 1_000;
        config.limits.unauthenticated_connections_max = 500;
        config.limits.unauthenticated_connections_per_process_max = 500;
        adjust(&mut config, dir.path());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind")?;
        listener.set_nonblocking(true)?;
        let running = cardd::server::start(config, listener)
            .await
            .context("the daemon starts")?;
        Ok(BenchDaemon { running, _dir: dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.running.daemon
    }

    /// Logs in (a demo operator) and returns the bearer token.
    pub async fn login(&self, user: &str, password: &str) -> Result<String> {
        let client = HttpClientBuilder::default().build(format!("http://{}/", self.addr()))?;
        let mut params = ObjectParams::new();
        params.insert("username", user)?;
        params.insert("password", password)?;
        let reply: Value = client.request("auth.login", params).await?;
        reply["token"]
            .as_str()
            .map(str::to_owned)
            .context("auth.login returned no token")
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

fn auth_headers(token: &str) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    Ok(headers)
}

pub fn http(addr: SocketAddr, token: &str) -> Result<HttpClient> {
    Ok(HttpClientBuilder::default()
        .set_headers(auth_headers(token)?)
        .build(format!("http://{addr}/"))?)
}

pub async fn ws(addr: SocketAddr, token: &str) -> Result<WsClient> {
    Ok(WsClientBuilder::default()
        .set_headers(auth_headers(token)?)
        .max_concurrent_requests(1_024)
        .build(format!("ws://{addr}/"))
        .await?)
}

/// `{"reader_id": id}`.
pub fn reader_params(reader_id: &str) -> ObjectParams {
    let mut params = ObjectParams::new();
    // Inserting a string into a fresh object cannot fail.
    let _ = params.insert("reader_id", reader_id);
    params
}
