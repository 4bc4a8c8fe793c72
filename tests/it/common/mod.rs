//! Test harness: starts the daemon in-process on `127.0.0.1:0` and talks to it with raw HTTP,
//! so tests can forge any header.

#![allow(dead_code)]

pub mod group;
pub mod matrix;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cardd::config::Config;
use cardd::server::Running;
use serde_json::{json, Value};

/// Most polls [`TestDaemon::follow`] makes before it gives up on a run.
const FOLLOW_POLLS_MAX: usize = 200;

/// What happened in a run: its final state and the questions it asked.
pub struct Run {
    pub done: Value,
    pub prompts: Vec<Value>,
}

/// A daemon on the embedded default, with its own data directory.
pub struct TestDaemon {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The simulated worlds the daemon published by name.
    worlds: NamedWorlds,
}

/// The names of the simulated worlds a daemon published. The whole suite runs in one process,
/// which holds a bounded number of named worlds (the `sim` driver's `NAMED_WORLDS_MAX`): a daemon's are forgotten
/// when it is stopped or dropped.
struct NamedWorlds(Vec<String>);

impl NamedWorlds {
    fn of(config: &Config) -> NamedWorlds {
        NamedWorlds(
            config
                .readers
                .iter()
                .filter_map(|r| r.options.get("world")?.as_str().map(str::to_owned))
                .collect(),
        )
    }
}

impl Drop for NamedWorlds {
    fn drop(&mut self) {
        for name in &self.0 {
            cardd_sim::forget_world(name);
        }
    }
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::demo(dir.path().join("data"));
        // The suite drives the journaled load through the demo-keys test flow `card.load`.
        config.flows.unfunded_test_loads = true;
        adjust(&mut config);
        let worlds = NamedWorlds::of(&config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let running = cardd::server::start(config, listener)
            .await
            .expect("daemon starts");
        let addr = running.addr;
        TestDaemon {
            running: Some(running),
            addr,
            dir,
            worlds,
        }
    }

    /// A daemon the test started itself on `dir`, with no simulated world published by name.
    pub fn started(running: Running, dir: tempfile::TempDir) -> TestDaemon {
        TestDaemon {
            addr: running.addr,
            running: Some(running),
            dir,
            worlds: NamedWorlds(Vec::new()),
        }
    }

    /// Starts a daemon on the data directory a stopped one used (`adjust` names it): sled lets
    /// go of its file lock only once its background flusher has stopped, so a start that finds
    /// the database still locked is tried again (bounded).
    pub async fn start_again_with(adjust: impl Fn(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tries = 0;
        loop {
            let mut config = Config::demo(dir.path().join("data"));
            config.flows.unfunded_test_loads = true;
            adjust(&mut config);
            let worlds = NamedWorlds::of(&config);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            match cardd::server::start(config, listener).await {
                Ok(running) => {
                    let addr = running.addr;
                    return TestDaemon {
                        running: Some(running),
                        addr,
                        dir,
                        worlds,
                    };
                }
                Err(e) if tries < 250 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("daemon starts again: {e}"),
            }
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn daemon(&self) -> &std::sync::Arc<cardd::server::Daemon> {
        &self.running.as_ref().expect("running").daemon
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// A raw HTTP exchange; returns status, headers (lower-case names) and body.
    pub async fn raw(&self, request: String) -> HttpReply {
        let addr = self.addr;
        tokio::task::spawn_blocking(move || raw_http(addr, &request))
            .await
            .expect("join")
    }

    /// POSTs a JSON-RPC body with the given extra headers.
    pub async fn post(&self, body: &str, headers: &[(&str, &str)]) -> HttpReply {
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.host(),
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.raw(req).await
    }

    /// Calls a method with named params and an optional token; returns the JSON-RPC reply.
    pub async fn call(&self, method: &str, params: Value, token: Option<&str>) -> Value {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let reply = self.post(&body, &headers).await;
        assert_eq!(
            reply.status, 200,
            "HTTP status for {method}: {}",
            reply.body
        );
        serde_json::from_str(&reply.body).expect("JSON reply")
    }

    /// Calls and expects a result.
    pub async fn ok(&self, method: &str, params: Value, token: Option<&str>) -> Value {
        let reply = self.call(method, params, token).await;
        match reply.get("result") {
            Some(r) => r.clone(),
            None => panic!("{method} failed: {reply}"),
        }
    }

    /// Calls and expects an error; returns its code.
    pub async fn err(&self, method: &str, params: Value, token: Option<&str>) -> (i64, String) {
        let reply = self.call(method, params, token).await;
        let e = reply
            .get("error")
            .unwrap_or_else(|| panic!("{method} unexpectedly succeeded: {reply}"));
        (
            e["code"].as_i64().unwrap_or(0),
            e["message"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Starts a flow (`start` is the `flows.start` parameters) and follows it to its end; see
    /// [`TestDaemon::follow`].
    pub async fn drive(
        &self,
        token: &str,
        start: Value,
        answer: impl FnMut(&Value) -> Value,
    ) -> Run {
        let run = self.ok("flows.start", start, Some(token)).await;
        self.follow(token, run["run_id"].as_str().expect("run_id"), answer)
            .await
    }

    /// Follows a run to its end, answering each new question with `answer(prompt)` (which may
    /// also arm a fault before the answer goes out). A question is answered once, however many
    /// polls still see it while the flow takes the answer.
    pub async fn follow(
        &self,
        token: &str,
        run_id: &str,
        mut answer: impl FnMut(&Value) -> Value,
    ) -> Run {
        let (mut since, mut answered) = (0, 0);
        let mut prompts = Vec::new();
        for _ in 0..FOLLOW_POLLS_MAX {
            let polled = self
                .ok(
                    "flows.events",
                    json!({"run_id": run_id, "since": since, "wait_ms": 2000}),
                    Some(token),
                )
                .await;
            since = polled["next_since"].as_u64().expect("next_since");
            let prompt = &polled["prompt"];
            let prompt_id = prompt["prompt_id"].as_u64().unwrap_or(0);
            if polled["state"] == "waiting" && prompt_id > answered {
                answered = prompt_id;
                let reply = answer(prompt);
                prompts.push(prompt.clone());
                self.ok(
                    "flows.answer",
                    json!({"run_id": run_id, "prompt_id": prompt_id, "answer": reply}),
                    Some(token),
                )
                .await;
            }
            if !matches!(polled["state"].as_str(), Some("running") | Some("waiting")) {
                let done = self
                    .ok("flows.get", json!({ "run_id": run_id }), Some(token))
                    .await;
                return Run { done, prompts };
            }
        }
        panic!("run {run_id} did not finish");
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let r = self
            .ok(
                "auth.login",
                json!({"username": user, "password": password}),
                None,
            )
            .await;
        r["token"].as_str().expect("token").to_owned()
    }

    /// Number of audit records (as the administrator sees them).
    pub async fn audit_count(&self) -> u64 {
        self.daemon().audit.verify_chain().expect("chain")
    }
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn raw_http(addr: SocketAddr, request: &str) -> HttpReply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                // A 101 upgrade keeps the socket open: stop after the head.
                if bytes.starts_with(b"HTTP/1.1 101") && bytes.windows(4).any(|w| w == b"\r\n\r\n")
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let body = if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Calls `method` and asserts that `d` refuses it with `code`; returns the refusal's message.
pub async fn refused(
    d: &TestDaemon,
    method: &str,
    params: Value,
    token: Option<&str>,
    code: i64,
) -> String {
    let (got, message) = d.err(method, params, token).await;
    assert_eq!(got, code, "{method} refused with another code: {message}");
    message
}

/// The configuration of a daemon whose data directory and cards live in `dir` (so it can be
/// stopped and started again on them).
pub fn on_dir(dir: &std::path::Path, world: &str) -> impl Fn(&mut cardd::config::Config) + Clone {
    let (dir, world) = (dir.to_path_buf(), world.to_owned());
    move |c: &mut cardd::config::Config| {
        c.data_dir = dir.join("data");
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": world, "state_dir": dir.join("cards") });
    }
}

/// Stops the daemon and waits until the last holder of it let go (the database is free).
pub async fn stop_and_release(d: TestDaemon) {
    let gone = std::sync::Arc::downgrade(d.daemon());
    d.stop().await;
    for _ in 0..250 {
        if gone.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the stopped daemon is never released");
}
