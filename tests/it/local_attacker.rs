//! A local attacker on the teller's machine, against connections and subscriptions: WebSockets
//! opened with made-up tokens, idle sockets, many connections from one process, subscriptions
//! that outlive their session, and calls of a shape no method takes. One test per attack, each
//! asserting the defence. The attacker that must be another process runs in a child process
//! (this test binary again, [`attacker_process`]).

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cardd_api::ErrorCode;
use common::TestDaemon;
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde_json::{json, Value};

/// Set in the child process: `<addr> <fake-token WebSockets> <idle sockets>`.
const ATTACKER_ENV: &str = "CARDD_TEST_ATTACKER";
/// Longest wait for something the daemon does on its own (an idle close, a final event).
const WAIT: Duration = Duration::from_secs(30);
/// Polls of the connection pool before giving up.
const POLLS_MAX: usize = 600;

/// The attacker's side, run by [`Attacker::start`] in a child process (without the variable
/// this is a no-op): opens WebSocket upgrades with made-up tokens and bare sockets, prints what
/// it got, and holds every socket until its stdin closes.
#[test]
fn attacker_process() {
    let Ok(spec) = std::env::var(ATTACKER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let addr: SocketAddr = parts[0].parse().expect("addr");
    let (websockets, idle): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
    let mut held = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..websockets {
        let Ok(mut socket) = TcpStream::connect(addr) else {
            *statuses.entry(0).or_default() += 1;
            continue;
        };
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let upgrade = format!(
            "GET /?token={i:064x} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let _ = socket.write_all(upgrade.as_bytes());
        *statuses.entry(read_status(&mut socket)).or_default() += 1;
        held.push(socket);
    }
    for _ in 0..idle {
        if let Ok(socket) = TcpStream::connect(addr) {
            held.push(socket);
        }
    }
    println!("ATTACK {}", serde_json::to_string(&statuses).unwrap());
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    drop(held);
}

/// The status of the HTTP answer on `socket` (0 when it closed first).
fn read_status(socket: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An attacking child process holding its sockets.
struct Attacker {
    child: Child,
    statuses: BTreeMap<u16, usize>,
}

impl Attacker {
    async fn start(addr: SocketAddr, websockets: usize, idle: usize) -> Attacker {
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "local_attacker::attacker_process",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ATTACKER_ENV, format!("{addr} {websockets} {idle}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the attacker starts");
            // Read to the end (on another thread), so the child never writes to a closed pipe.
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let (report, reported) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in stdout.lines().map_while(Result::ok) {
                    if let Some((_, line)) = line.split_once("ATTACK ") {
                        let _ = report.send(line.to_owned());
                    }
                }
            });
            let line = reported.recv().expect("the attacker reports");
            Attacker {
                child,
                statuses: serde_json::from_str(&line).unwrap(),
            }
        })
        .await
        .unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn pool(d: &TestDaemon) -> &cardd::transport::connections::ConnectionPool {
    &d.running.as_ref().unwrap().connections
}

/// Waits (bounded) until the pool shows `wanted` for process `pid`.
async fn pool_shows(d: &TestDaemon, pid: u32, wanted: impl Fn((usize, usize)) -> bool) {
    for _ in 0..POLLS_MAX {
        if wanted(pool(d).unauthenticated_of(pid)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the pool shows {:?} for pid {pid}",
        pool(d).unauthenticated_of(pid)
    );
}

async fn ws(d: &TestDaemon, token: &str) -> WsClient {
    WsClientBuilder::default()
        .build(format!("ws://{}/?token={token}", d.host()))
        .await
        .expect("a WebSocket with a live session")
}

/// Blocking: reads until the peer closes; true if it closed (rather than sent data or timed out).
fn closes(mut socket: TcpStream) -> bool {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn request(d: &TestDaemon, body: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        d.host(),
        body.len()
    )
}

/// Sends `request` on a kept-alive socket and reads one answer's head and body.
fn exchange(socket: &mut TcpStream, request: &str) -> (u16, Value) {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(socket.read(&mut byte).unwrap(), 1, "answer head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    socket.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

const VERSION: &str = r#"{"jsonrpc":"2.0","id":1,"method":"system.version"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_token_websockets_and_idle_sockets_do_not_block_a_teller() {
    let d = TestDaemon::start().await;
    let teller = d.login("teller", "teller123").await;
    let console = ws(&d, &teller).await;
    let mut events: Subscription<Value> = console
        .subscribe("events.subscribe", rpc_params![], "events.unsubscribe")
        .await
        .expect("subscribed");

    // Another process opens 200 WebSockets with made-up tokens and 200 bare sockets, and holds
    // them. Today's daemon had 64 connection slots, all of them taken by such sockets.
    let attacker = Attacker::start(d.addr, 200, 200).await;
    assert_eq!(
        attacker.statuses.get(&101),
        None,
        "no made-up token gets a WebSocket: {:?}",
        attacker.statuses
    );
    assert!(
        attacker
            .statuses
            .keys()
            .all(|status| [0, 401, 503].contains(status)),
        "{:?}",
        attacker.statuses
    );
    let limits = &d.daemon().config.limits;
    let (held, _) = pool(&d).unauthenticated_of(attacker.pid());
    assert!(
        held <= limits.unauthenticated_connections_per_process_max as usize,
        "the attacker holds {held} connections"
    );

    // While it holds them, the teller is served: calls on the console's WebSocket, a new login
    // and calls over HTTP, /health, and events.
    let readers: Value = console
        .request("readers.list", ObjectParams::new())
        .await
        .expect("a call on the WebSocket");
    assert!(
        readers.as_array().is_some_and(|r| !r.is_empty()),
        "{readers}"
    );
    let again = d.login("teller", "teller123").await;
    d.ok("readers.list", json!({}), Some(&again)).await;
    let health = d
        .raw(format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    assert_eq!(health.status, 200, "{health:?}");
    d.ok(
        "readers.lease",
        json!({"reader_id": "sim:obu"}),
        Some(&again),
    )
    .await;
    let event = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("the event in time")
        .expect("the subscription is open")
        .expect("json");
    assert_eq!(event["type"], "lease_taken", "{event}");
    attacker.stop();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_closed_after_their_idle_timeout() {
    let d = TestDaemon::start_with(|c| c.limits.unauthenticated_idle_timeout_s = 1).await;
    let teller = d.login("teller", "teller123").await;
    let me = std::process::id();
    let addr = d.addr;

    // A connection that carried a live session's token leaves the unauthenticated pool.
    let mut authenticated = TcpStream::connect(addr).unwrap();
    let (status, answer) = exchange(&mut authenticated, &request(&d, VERSION, Some(&teller)));
    assert_eq!((status, &answer["result"]["name"]), (200, &json!("cardd")));
    pool_shows(&d, me, |(open, _)| open == 0).await;

    // A bare socket, and one that made a public call and went quiet, are closed.
    let bare = TcpStream::connect(addr).unwrap();
    let mut public = TcpStream::connect(addr).unwrap();
    let (status, _) = exchange(&mut public, &request(&d, VERSION, None));
    assert_eq!(status, 200);
    let closed = tokio::task::spawn_blocking(move || (closes(bare), closes(public)))
        .await
        .unwrap();
    assert_eq!(
        closed,
        (true, true),
        "both idle unauthenticated sockets are closed"
    );
    pool_shows(&d, me, |(open, _)| open == 0).await;

    // The authenticated one is still served.
    let (status, _) = exchange(&mut authenticated, &request(&d, VERSION, Some(&teller)));
    assert_eq!(status, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_process_is_capped_and_crowds_out_only_itself() {
    let d = TestDaemon::start_with(|c| {
        c.limits.unauthenticated_connections_max = 8;
        c.limits.unauthenticated_connections_per_process_max = 3;
    })
    .await;
    let me = std::process::id();
    let attacker = Attacker::start(d.addr, 0, 3).await;
    pool_shows(&d, attacker.pid(), |(open, _)| open == 3).await;

    // This process opens its three, one after the other, then a fourth: its own oldest goes.
    let mut mine = Vec::new();
    for n in 1..=3 {
        mine.push(TcpStream::connect(d.addr).unwrap());
        pool_shows(&d, me, |(open, _)| open == n).await;
    }
    let mut fourth = TcpStream::connect(d.addr).unwrap();
    let oldest = mine.remove(0);
    assert!(
        tokio::task::spawn_blocking(move || closes(oldest))
            .await
            .unwrap(),
        "this process's oldest idle connection made room"
    );
    let (status, _) = exchange(&mut fourth, &request(&d, VERSION, None));
    assert_eq!(status, 200, "the new connection is served");
    assert_eq!(
        pool(&d).unauthenticated_of(attacker.pid()).0,
        3,
        "the other process kept all of its connections"
    );

    // With every one of its connections in a call (a body still on its way), a process gets no
    // more: the new connection is refused with a documented code.
    mine.push(fourth);
    let partial = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        d.host()
    );
    for socket in &mut mine {
        socket.write_all(partial.as_bytes()).unwrap();
    }
    pool_shows(&d, me, |(open, busy)| open == 3 && busy == 3).await;
    let mut refused = TcpStream::connect(d.addr).unwrap();
    let (status, answer) = tokio::task::spawn_blocking(move || {
        refused.set_read_timeout(Some(WAIT)).unwrap();
        let mut text = String::new();
        let _ = refused.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["error"]["code"],
        i64::from(ErrorCode::ServerBusy.code())
    );
    drop(mine);
    attacker.stop();
    d.stop().await;
}

/// Opens `username`'s event subscription on a WebSocket.
async fn subscribed(
    d: &TestDaemon,
    username: &str,
    password: &str,
) -> (WsClient, Subscription<Value>, String) {
    let token = d.login(username, password).await;
    let client = ws(d, &token).await;
    let subscription = client
        .subscribe("events.subscribe", rpc_params![], "events.unsubscribe")
        .await
        .expect("subscribed");
    (client, subscription, token)
}

/// The subscription's next notification is its last: the session ended, for `reason`; a later
/// event is not delivered.
async fn ends_with(
    d: &TestDaemon,
    admin: &str,
    subscription: &mut Subscription<Value>,
    reason: &str,
) {
    let last = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("the final event in time")
        .expect("a final event")
        .expect("json");
    assert_eq!(last["type"], "session_ended", "{last}");
    assert_eq!(last["reason"], reason, "{last}");
    let lease = d
        .ok(
            "readers.lease",
            json!({"reader_id": "sim:city"}),
            Some(admin),
        )
        .await;
    let after = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
    assert!(
        !matches!(after, Ok(Some(Ok(_)))),
        "nothing after the session ended: {after:?}"
    );
    d.ok(
        "readers.release",
        json!({"lease_id": lease["lease_id"]}),
        Some(admin),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_with_their_session_and_say_why() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    for (n, reason) in [
        "logged_out",
        "operator_disabled",
        "password_reset",
        "role_changed",
    ]
    .into_iter()
    .enumerate()
    {
        let username = format!("watcher{n}");
        d.ok(
            "operators.create",
            json!({"username": username, "display_name": "值班", "role": "teller", "password": "watch123"}),
            Some(&admin),
        )
        .await;
        let (client, mut subscription, token) = subscribed(&d, &username, "watch123").await;
        match reason {
            "logged_out" => {
                let _: Value = client
                    .request("auth.logout", ObjectParams::new())
                    .await
                    .expect("logout");
            }
            "operator_disabled" => {
                d.ok(
                    "operators.set_disabled",
                    json!({"username": username, "disabled": true}),
                    Some(&admin),
                )
                .await;
            }
            "password_reset" => {
                d.ok(
                    "operators.reset_password",
                    json!({"username": username, "new_password": "watch456"}),
                    Some(&admin),
                )
                .await;
            }
            _ => {
                let changed = d
                    .ok(
                        "operators.set_role",
                        json!({"username": username, "role": "supervisor"}),
                        Some(&admin),
                    )
                    .await;
                assert_eq!(changed["role"], "supervisor", "{changed}");
            }
        }
        ends_with(&d, &admin, &mut subscription, reason).await;
        let unauthenticated = i64::from(ErrorCode::Unauthenticated.code());
        common::refused(&d, "readers.list", json!({}), Some(&token), unauthenticated).await;
    }

    // A run's subscription ends the same way: the administrator follows a load waiting for its
    // confirmation, logs out, and the run's events stop with the reason.
    let follower = d.login("admin", "admin123").await;
    let run = d
        .ok(
            "flows.start",
            json!({"flow": "card.load", "params": {"amount": "1.00"}, "idempotency_key": "watch-run-1", "reader_id": "sim:etc"}),
            Some(&follower),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let client = ws(&d, &follower).await;
    let mut params = ObjectParams::new();
    params.insert("run_id", &run_id).unwrap();
    let mut run_events: Subscription<Value> = client
        .subscribe("flows.subscribe", params, "flows.unsubscribe")
        .await
        .expect("subscribed to the run");
    let mut logged_out = false;
    let mut last = Value::Null;
    for _ in 0..100 {
        let event = tokio::time::timeout(WAIT, run_events.next())
            .await
            .expect("a run event in time")
            .expect("the run's subscription is open")
            .expect("json");
        if event["kind"] == "prompt" && !logged_out {
            d.ok("auth.logout", json!({}), Some(&follower)).await;
            logged_out = true;
        }
        if event["type"] == "session_ended" {
            last = event;
            break;
        }
    }
    assert_eq!(last["reason"], "logged_out", "{last}");
    d.ok("flows.cancel", json!({"run_id": run_id}), Some(&admin))
        .await;
    d.stop().await;

    // Idle expiry: nobody calls, the session times out, the subscription says so.
    let d = TestDaemon::start_with(|c| c.auth.session_idle_timeout_s = 1).await;
    let (_client, mut subscription, _) = subscribed(&d, "teller", "teller123").await;
    let last = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("the final event in time")
        .expect("a final event")
        .expect("json");
    assert_eq!(last["type"], "session_ended", "{last}");
    assert_eq!(last["reason"], "idle_timeout", "{last}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_over_http_and_deeply_nested_params_get_documented_codes() {
    let d = TestDaemon::start().await;
    let teller = d.login("teller", "teller123").await;
    for method in ["events.subscribe", "flows.subscribe", "events.unsubscribe"] {
        let reply = d.call(method, json!({}), Some(&teller)).await;
        assert_eq!(
            reply["error"]["code"],
            i64::from(ErrorCode::WebSocketRequired.code()),
            "{method}: {reply}"
        );
        assert_eq!(reply["error"]["data"]["error"], "WebSocketRequired");
    }

    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let invalid_params = i64::from(ErrorCode::InvalidParams.code());
    for (method, params) in [
        ("readers.list", deep.clone()),
        ("flows.get", json!({ "run_id": deep })),
        (
            "flows.answer",
            json!({"run_id": "r", "prompt_id": 1, "answer": deep}),
        ),
    ] {
        let reply = d.call(method, params.clone(), Some(&teller)).await;
        assert_eq!(reply["error"]["code"], invalid_params, "{method}: {reply}");
        let console = ws(&d, &teller).await;
        let mut object = ObjectParams::new();
        for (key, value) in params.as_object().unwrap() {
            object.insert(key, value).unwrap();
        }
        let over_ws = console.request::<Value, _>(method, object).await;
        match over_ws {
            Err(jsonrpsee::core::ClientError::Call(e)) => {
                assert_eq!(
                    i64::from(e.code()),
                    invalid_params,
                    "{method} over WebSocket"
                )
            }
            other => panic!("{method} over WebSocket: {other:?}"),
        }
    }
    let reply = d
        .post(
            &format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100)),
            &[],
        )
        .await;
    assert_eq!(
        reply.json()["error"]["code"],
        i64::from(ErrorCode::ParseError.code()),
        "{reply:?}"
    );
    d.stop().await;
}
