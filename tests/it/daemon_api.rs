//! The daemon's JSON-RPC API end to end: every method's happy path on the embedded default,
//! and every refusal of the security model with its documented code and nothing changed.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::TestDaemon;
use serde_json::{json, Value};

use cardd_api::ErrorCode;

const CODE_UNAUTHENTICATED: i64 = ErrorCode::Unauthenticated.code() as i64;
const CODE_FORBIDDEN: i64 = ErrorCode::Forbidden.code() as i64;
const CODE_INVALID_CREDENTIALS: i64 = ErrorCode::InvalidCredentials.code() as i64;
const CODE_TOO_MANY_ATTEMPTS: i64 = ErrorCode::TooManyAttempts.code() as i64;
const CODE_ORIGIN_NOT_ALLOWED: i64 = ErrorCode::OriginNotAllowed.code() as i64;
const CODE_PASSWORD_REJECTED: i64 = ErrorCode::PasswordRejected.code() as i64;
const CODE_READER_BUSY: i64 = ErrorCode::ReaderBusy.code() as i64;
const CODE_READER_NOT_FOUND: i64 = ErrorCode::ReaderNotFound.code() as i64;
const CODE_INVALID_PARAMS: i64 = ErrorCode::InvalidParams.code() as i64;
const CODE_BATCHES_NOT_SUPPORTED: i64 = ErrorCode::BatchesNotSupported.code() as i64;
const CODE_PARSE_ERROR: i64 = ErrorCode::ParseError.code() as i64;

fn docs(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name)
}

/// Compares a generated document with its committed copy (`UPDATE_DOCS=1` rewrites it).
fn check_committed(name: &str, fresh: &str) {
    let path = docs(name);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, fresh).expect("write doc");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/{name} is stale: run UPDATE_DOCS=1 cargo test -p cardd-tests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_and_committed_openrpc() {
    let d = TestDaemon::start().await;
    let health = d
        .raw(format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["readers"], 3);

    let version = d.ok("system.version", json!({}), None).await;
    assert_eq!(version["name"], "cardd");

    let doc = d.ok("rpc.discover", json!({}), None).await;
    assert_eq!(doc["openrpc"], "1.2.6");
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in [
        "auth.login",
        "card.summary",
        "readers.lease",
        "events.subscribe",
        "reader.transmit",
        "rpc.discover",
    ] {
        assert!(names.contains(&m), "{m} missing from OpenRPC");
    }
    check_committed(
        "openrpc.json",
        &(serde_json::to_string_pretty(&doc).unwrap() + "\n"),
    );
    check_committed("errors.md", &cardd::rpc::openrpc::errors_markdown());
    d.stop().await;
}

/// The 模拟读卡器 panel (`sim.*`) exists on the embedded default only: with any other
/// configuration the methods are not registered, not even for an administrator. On the
/// embedded default only administrators and the kiosk account may use it, a refusal changes
/// nothing, and every change is audited with the reader it touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_panel_exists_only_on_the_embedded_default() {
    const SIM_METHODS: [&str; 7] = [
        "sim.readers",
        "sim.insert",
        "sim.remove",
        "sim.swap",
        "sim.pull_during_next_load",
        "sim.carry",
        "sim.bring",
    ];
    let world = format!("api-sim-panel-{}", std::process::id());
    let production = TestDaemon::start_with(|c| {
        c.demo = false;
        c.readers[0].options = json!({ "world": world });
    })
    .await;
    production
        .daemon()
        .auth
        .create_operator(cardd::auth::NewOperator {
            username: "root".into(),
            display_name: "管理员".into(),
            role: cardd_api::Role::Admin,
            group_id: None,
            password: "root-password-1".into(),
        })
        .expect("an administrator");
    let admin = production.login("root", "root-password-1").await;
    let doc = production.ok("rpc.discover", json!({}), None).await;
    let listed = doc["methods"].to_string();
    for method in SIM_METHODS {
        assert!(!listed.contains(method), "{method} listed without --demo");
        let (code, _) = production
            .err(
                method,
                json!({ "reader_id": "sim:etc", "card": "etc" }),
                Some(&admin),
            )
            .await;
        assert_eq!(code, ErrorCode::MethodNotFound.code() as i64, "{method}");
    }
    let simulated = cardd_sim::named_world(&world).expect("the simulated world");
    assert!(simulated.card("sim:etc").is_some(), "nothing moved");
    production.stop().await;

    let d = TestDaemon::start().await;
    let doc = d.ok("rpc.discover", json!({}), None).await;
    let listed = doc["methods"].to_string();
    for method in SIM_METHODS {
        assert!(listed.contains(method), "{method} missing with --demo");
    }
    let audit_before = d.audit_count().await;
    let (code, _) = d
        .err("sim.remove", json!({ "reader_id": "sim:etc" }), None)
        .await;
    assert_eq!(code, CODE_UNAUTHENTICATED);
    for (user, password) in [
        ("teller", "teller123"),
        ("supervisor", "super123"),
        ("auditor", "audit123"),
        ("group1", "group123"),
    ] {
        let token = d.login(user, password).await;
        let (code, _) = d.err("sim.readers", json!({}), Some(&token)).await;
        assert_eq!(code, CODE_FORBIDDEN, "{user}");
        let (code, _) = d
            .err(
                "sim.remove",
                json!({ "reader_id": "sim:etc" }),
                Some(&token),
            )
            .await;
        assert_eq!(code, CODE_FORBIDDEN, "{user}");
    }
    let admin = d.login("admin", "admin123").await;
    let kiosk = d.login("kiosk", "kiosk123").await;
    let state = d.ok("sim.readers", json!({}), Some(&admin)).await;
    assert_eq!(
        state["readers"][0]["card"]["card_number"], "61011801000000000001",
        "the refusals moved nothing: {state}"
    );
    assert!(
        d.audit_count().await > audit_before,
        "the refused changes are audited"
    );

    // The kiosk account moves the demo cards: out, the second ETC card in, swapped back.
    let out = d
        .ok(
            "sim.remove",
            json!({ "reader_id": "sim:etc" }),
            Some(&kiosk),
        )
        .await;
    assert!(out["readers"][0]["card"].is_null(), "{out}");
    let (code, message) = d
        .err(
            "sim.insert",
            json!({ "reader_id": "sim:etc", "card": "a-new-card" }),
            Some(&kiosk),
        )
        .await;
    assert_eq!(code, CODE_INVALID_PARAMS, "{message}");
    let (code, _) = d
        .err(
            "sim.insert",
            json!({ "reader_id": "sim:nowhere", "card": "etc" }),
            Some(&kiosk),
        )
        .await;
    assert_eq!(code, CODE_READER_NOT_FOUND);
    d.ok(
        "sim.insert",
        json!({ "reader_id": "sim:etc", "card": "etc_sm4" }),
        Some(&kiosk),
    )
    .await;
    let swapped = d
        .ok(
            "sim.swap",
            json!({ "reader_id": "sim:etc", "card": "etc" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        swapped["readers"][0]["card"]["card_number"], "61011801000000000001",
        "{swapped}"
    );
    let armed = d
        .ok(
            "sim.pull_during_next_load",
            json!({ "reader_id": "sim:etc" }),
            Some(&admin),
        )
        .await;
    assert_eq!(armed["readers"][0]["pull_armed"], true, "{armed}");

    let auditor = d.login("auditor", "audit123").await;
    let records = d
        .ok("audit.list", json!({"limit": 500}), Some(&auditor))
        .await;
    let records = records.as_array().expect("records");
    for method in [
        "sim.remove",
        "sim.insert",
        "sim.swap",
        "sim.pull_during_next_load",
    ] {
        let done = records
            .iter()
            .find(|r| r["action"] == method && r["outcome"] == "ok")
            .unwrap_or_else(|| panic!("{method} is audited"));
        assert_eq!(done["target"], "sim:etc", "{done}");
    }
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "sim.remove" && r["outcome"] == "Forbidden"),
        "a refused change is audited as refused"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_whoami_logout_and_wrong_credentials() {
    let d = TestDaemon::start().await;
    let (code, message) = d
        .err(
            "auth.login",
            json!({"username": "teller", "password": "nope"}),
            None,
        )
        .await;
    assert_eq!(code, CODE_INVALID_CREDENTIALS);
    assert_eq!(message, "用户和密码错误");
    let (code2, message2) = d
        .err(
            "auth.login",
            json!({"username": "nobody", "password": "teller123"}),
            None,
        )
        .await;
    assert_eq!(
        (code2, message2),
        (code, message),
        "unknown user and wrong password look the same"
    );

    let login = d
        .ok(
            "auth.login",
            json!({"username": "teller", "password": "teller123"}),
            None,
        )
        .await;
    let token = login["token"].as_str().unwrap();
    assert_eq!(login["operator"]["role"], "teller");
    assert_eq!(login["operator"]["role_label"], "柜员");
    let me = d.ok("auth.whoami", json!({}), Some(token)).await;
    assert_eq!(me["username"], "teller");
    // The password rule 修改密码 states before the operator types.
    assert_eq!(me["password_chars_min"], 6);
    assert_eq!(me["password_chars_max"], 256);
    d.ok("auth.logout", json!({}), Some(token)).await;
    common::refused(
        &d,
        "auth.whoami",
        json!({}),
        Some(token),
        CODE_UNAUTHENTICATED,
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_follows_the_seed() {
    let d = TestDaemon::start().await;
    let token = d.login("teller", "teller123").await;
    let other = d.login("teller", "teller123").await;
    let (code, message) = d
        .err("auth.change_password", json!({"old_password": "teller123", "new_password": "abc12345", "confirm_password": "abc1234"}), Some(&token))
        .await;
    assert_eq!(code, CODE_PASSWORD_REJECTED);
    assert!(message.contains("不一致"), "{message}");
    let (code, _) = d
        .err("auth.change_password", json!({"old_password": "wrong", "new_password": "abc12345", "confirm_password": "abc12345"}), Some(&token))
        .await;
    assert_eq!(code, CODE_PASSWORD_REJECTED);
    d.ok("auth.change_password", json!({"old_password": "teller123", "new_password": "abc12345", "confirm_password": "abc12345"}), Some(&token))
        .await;
    // The other session ended; this one goes on; the old password no longer works.
    assert_eq!(
        d.err("auth.whoami", json!({}), Some(&other)).await.0,
        CODE_UNAUTHENTICATED
    );
    d.ok("auth.whoami", json!({}), Some(&token)).await;
    assert_eq!(
        d.err(
            "auth.login",
            json!({"username": "teller", "password": "teller123"}),
            None
        )
        .await
        .0,
        CODE_INVALID_CREDENTIALS
    );
    d.login("teller", "abc12345").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_cost_a_capped_wait_not_a_lock_out() {
    let d = TestDaemon::start_with(|c| {
        c.auth.login_failures_free = 2;
        c.auth.login_delay_max_s = 1;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            d.err(
                "auth.login",
                json!({"username": "teller", "password": "x"}),
                None
            )
            .await
            .0,
            CODE_INVALID_CREDENTIALS
        );
    }
    let (code, message) = d
        .err(
            "auth.login",
            json!({"username": "teller", "password": "teller123"}),
            None,
        )
        .await;
    assert_eq!(code, CODE_TOO_MANY_ATTEMPTS, "{message}");
    assert!(message.contains("秒后再试"), "{message}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    d.login("teller", "teller123").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    let d = TestDaemon::start_with(|c| c.auth.session_idle_timeout_s = 1).await;
    let token = d.login("teller", "teller123").await;
    d.ok("auth.whoami", json!({}), Some(&token)).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let message = common::refused(
        &d,
        "auth.whoami",
        json!({}),
        Some(&token),
        CODE_UNAUTHENTICATED,
    )
    .await;
    assert!(message.contains("重新登录"), "{message}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_administration_and_roles() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    let teller = d.login("teller", "teller123").await;
    let new_op = json!({"username": "clerk2", "display_name": "柜员二", "role": "teller", "group_id": null, "password": "clerk2pw"});

    let before = d.audit_count().await;
    let (code, message) = d
        .err("operators.create", new_op.clone(), Some(&teller))
        .await;
    assert_eq!(code, CODE_FORBIDDEN, "{message}");
    assert!(message.contains("管理员"), "{message}");
    let list = d.ok("operators.list", json!({}), Some(&admin)).await;
    assert!(
        !list.to_string().contains("clerk2"),
        "a refused call changed nothing"
    );
    assert_eq!(
        d.audit_count().await,
        before + 1,
        "a refused call is audited once, as refused, and nothing else"
    );

    let created = d.ok("operators.create", new_op, Some(&admin)).await;
    assert_eq!(created["username"], "clerk2");
    assert!(created.get("password").is_none() && !created.to_string().contains("argon2"));
    let clerk = d.login("clerk2", "clerk2pw").await;
    d.ok(
        "operators.set_disabled",
        json!({"username": "clerk2", "disabled": true}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        d.err("auth.whoami", json!({}), Some(&clerk)).await.0,
        CODE_UNAUTHENTICATED
    );
    assert_eq!(
        d.err(
            "auth.login",
            json!({"username": "clerk2", "password": "clerk2pw"}),
            None
        )
        .await
        .0,
        CODE_INVALID_CREDENTIALS
    );
    d.ok(
        "operators.set_disabled",
        json!({"username": "clerk2", "disabled": false}),
        Some(&admin),
    )
    .await;
    d.ok(
        "operators.reset_password",
        json!({"username": "clerk2", "new_password": "fresh-pw"}),
        Some(&admin),
    )
    .await;
    d.login("clerk2", "fresh-pw").await;
    let (code, _) = d
        .err(
            "operators.create",
            json!({"username": "x", "display_name": "x", "role": "wizard", "password": "pppppp"}),
            Some(&admin),
        )
        .await;
    assert_eq!(code, CODE_INVALID_PARAMS);

    // Every state change above is in the audit log, which verifies.
    let auditor = d.login("auditor", "audit123").await;
    let records = d
        .ok("audit.list", json!({"limit": 500}), Some(&auditor))
        .await;
    let actions: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "auth.login",
        "operators.create",
        "operators.set_disabled",
        "operators.reset_password",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    assert!(
        !records.to_string().contains("clerk2pw") && !records.to_string().contains("fresh-pw"),
        "no password in the audit log"
    );
    let verified = d.ok("audit.verify", json!({}), Some(&auditor)).await;
    assert_eq!(verified["chain_ok"], true);
    assert_eq!(
        d.err("audit.list", json!({}), Some(&teller)).await.0,
        CODE_FORBIDDEN
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_card_summaries_and_raw_apdus() {
    let d = TestDaemon::start().await;
    let teller = d.login("teller", "teller123").await;
    let admin = d.login("admin", "admin123").await;
    let readers = d.ok("readers.list", json!({}), Some(&teller)).await;
    let ids: Vec<&str> = readers
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sim:city", "sim:etc", "sim:obu"]);
    assert!(readers
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["card_present"] == true && r["driver"] == "sim"));

    let etc = d
        .ok(
            "card.summary",
            json!({"reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    assert_eq!(etc["kind"], "etc");
    assert_eq!(etc["card_number"], cardd_sim::demo::DEMO_ETC_CARD_NUMBER);
    assert_eq!(etc["plate"], cardd_sim::demo::DEMO_ETC_PLATE);
    assert_eq!(etc["plate_colour_label"], "蓝色");
    assert_eq!(etc["balance"], "100.00");
    assert_eq!(etc["card_type"], "储值卡");
    assert!(
        etc["online_atc"].is_null(),
        "a plain summary reads no counter: {etc}"
    );

    let city = d
        .ok(
            "card.summary",
            json!({"reader_id": "sim:city"}),
            Some(&teller),
        )
        .await;
    assert_eq!(city["kind"], "city");
    assert_eq!(city["balance"], "50.00");
    let obu = d
        .ok(
            "card.summary",
            json!({"reader_id": "sim:obu"}),
            Some(&teller),
        )
        .await;
    assert_eq!(obu["kind"], "obu");
    assert_eq!(obu["obu_activated"], false);

    assert_eq!(
        d.err(
            "card.summary",
            json!({"reader_id": "sim:nope"}),
            Some(&teller)
        )
        .await
        .0,
        CODE_READER_NOT_FOUND
    );
    assert_eq!(
        d.err("card.summary", json!({"reader": "sim:etc"}), Some(&teller))
            .await
            .0,
        CODE_INVALID_PARAMS
    );

    assert_eq!(
        d.err(
            "reader.transmit",
            json!({"reader_id": "sim:etc", "apdu": "00A40000021001"}),
            Some(&teller)
        )
        .await
        .0,
        CODE_FORBIDDEN
    );
    let select = d
        .ok(
            "reader.transmit",
            json!({"reader_id": "sim:etc", "apdu": "00A40000021001"}),
            Some(&admin),
        )
        .await;
    assert_eq!(select["sw"], "9000");
    let balance = d
        .ok(
            "reader.transmit",
            json!({"reader_id": "sim:etc", "apdu": "805C000204"}),
            Some(&admin),
        )
        .await;
    assert_eq!(balance["data"], "00002710");
    assert_eq!(
        d.err(
            "reader.transmit",
            json!({"reader_id": "sim:etc", "apdu": "zz"}),
            Some(&admin)
        )
        .await
        .0,
        CODE_INVALID_PARAMS
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_hold_readers_show_their_holder_and_expire() {
    let d = TestDaemon::start().await;
    let teller = d.login("teller", "teller123").await;
    let other = d.login("supervisor", "super123").await;
    let lease = d
        .ok(
            "readers.lease",
            json!({"reader_id": "sim:etc", "duration_ms": 60000, "purpose": "圈存"}),
            Some(&teller),
        )
        .await;
    let lease_id = lease["lease_id"].as_str().unwrap().to_owned();
    assert_eq!(lease["holder"], "teller");

    let (code, message) = d
        .err(
            "card.summary",
            json!({"reader_id": "sim:etc"}),
            Some(&other),
        )
        .await;
    assert_eq!(code, CODE_READER_BUSY);
    assert!(
        message.contains("teller") && message.contains("圈存"),
        "the holder is visible: {message}"
    );
    let listed = d.ok("readers.list", json!({}), Some(&other)).await;
    let etc = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "sim:etc")
        .unwrap()
        .clone();
    assert_eq!(etc["lease"]["holder"], "teller");
    assert_eq!(
        d.err(
            "readers.release",
            json!({"lease_id": lease_id}),
            Some(&other)
        )
        .await
        .0,
        CODE_FORBIDDEN
    );

    d.ok(
        "card.summary",
        json!({"reader_id": "sim:etc"}),
        Some(&teller),
    )
    .await;
    d.ok(
        "readers.renew",
        json!({"lease_id": lease_id, "duration_ms": 30000}),
        Some(&teller),
    )
    .await;
    d.ok(
        "readers.release",
        json!({"lease_id": lease_id}),
        Some(&teller),
    )
    .await;
    d.ok(
        "card.summary",
        json!({"reader_id": "sim:etc"}),
        Some(&other),
    )
    .await;

    assert_eq!(
        d.err(
            "readers.lease",
            json!({"reader_id": "sim:etc", "duration_ms": 999_999_999}),
            Some(&teller)
        )
        .await
        .0,
        CODE_INVALID_PARAMS
    );
    d.ok(
        "readers.lease",
        json!({"reader_id": "sim:city", "duration_ms": 1000}),
        Some(&teller),
    )
    .await;
    assert_eq!(
        d.err(
            "card.summary",
            json!({"reader_id": "sim:city"}),
            Some(&other)
        )
        .await
        .0,
        CODE_READER_BUSY
    );
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    d.ok(
        "card.summary",
        json!({"reader_id": "sim:city"}),
        Some(&other),
    )
    .await;

    let events = d
        .ok(
            "events.poll",
            json!({"since": 0, "limit": 100}),
            Some(&other),
        )
        .await;
    let kinds: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["type"], e.get("reason").unwrap_or(&Value::Null)))
        .collect();
    assert!(
        kinds
            .iter()
            .filter(|k| k.starts_with("\"reader_added\""))
            .count()
            == 3,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"\"lease_released\":\"released\"".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"\"lease_released\":\"expired\"".to_owned()),
        "{kinds:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscription_receives_events_and_long_poll_waits() {
    use jsonrpsee::core::client::{Subscription, SubscriptionClientT};
    use jsonrpsee::rpc_params;
    use jsonrpsee::ws_client::WsClientBuilder;

    let d = TestDaemon::start().await;
    let teller = d.login("teller", "teller123").await;
    let url = format!("ws://{}/?token={teller}", d.host());
    let client = WsClientBuilder::default()
        .build(&url)
        .await
        .expect("WS with token in the query");
    let mut sub: Subscription<Value> = client
        .subscribe("events.subscribe", rpc_params![], "events.unsubscribe")
        .await
        .expect("subscribe");

    let since = d.ok("events.poll", json!({}), Some(&teller)).await["next_since"]
        .as_u64()
        .unwrap();
    let waiter = {
        let (addr, token) = (d.host(), teller.clone());
        tokio::spawn(async move {
            let body = json!({"jsonrpc":"2.0","id":1,"method":"events.poll","params":{"since": since, "wait_ms": 5000}}).to_string();
            let req = format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let sock: std::net::SocketAddr = addr.parse().unwrap();
            tokio::task::spawn_blocking(move || {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect(sock).unwrap();
                s.write_all(req.as_bytes()).unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.ok(
        "readers.lease",
        json!({"reader_id": "sim:obu"}),
        Some(&teller),
    )
    .await;
    let event = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("event in time")
        .expect("stream")
        .expect("json");
    assert_eq!(event["type"], "lease_taken");
    assert_eq!(event["reader_id"], "sim:obu");
    let polled = waiter.await.unwrap();
    assert!(
        polled.contains("lease_taken"),
        "the long poll woke on the event: {polled}"
    );

    // Without a token even a browser's WebSocket is refused at the upgrade.
    let anon = WsClientBuilder::default().set_headers({
        let mut h = jsonrpsee::http_client::HeaderMap::new();
        h.insert("Origin", d.origin().parse().unwrap());
        h
    });
    assert!(anon.build(&format!("ws://{}/", d.host())).await.is_err());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_attacks_and_malformed_requests_are_refused_and_change_nothing() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    let bearer = format!("Bearer {admin}");
    let create = |name: &str| {
        json!({"jsonrpc":"2.0","id":7,"method":"operators.create","params":{"username": name, "display_name": "x", "role": "teller", "group_id": null, "password": "pppppp1"}}).to_string()
    };
    let before = d.audit_count().await;

    // Forged Host (DNS rebinding).
    let body = create("evil1");
    let reply = d
        .raw(format!("POST / HTTP/1.1\r\nHost: evil.example:{}\r\nContent-Type: application/json\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", d.addr.port(), body.len()))
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["code"], CODE_ORIGIN_NOT_ALLOWED);

    // Foreign Origin on HTTP.
    let reply = d
        .post(
            &create("evil2"),
            &[
                ("Authorization", &bearer),
                ("Origin", "https://evil.example"),
            ],
        )
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["code"], CODE_ORIGIN_NOT_ALLOWED);
    assert!(reply.header("access-control-allow-origin").is_none());

    // Foreign Origin on the WebSocket upgrade; the daemon's own origin is accepted.
    let upgrade = |origin: &str| {
        format!(
            "GET /?token={admin} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n",
            d.host()
        )
    };
    assert_eq!(d.raw(upgrade("https://evil.example")).await.status, 403);
    assert_eq!(d.raw(upgrade(&d.origin())).await.status, 101);

    // A preflight from a foreign origin gets no CORS grant; from the console's origin it does.
    let preflight = |origin: &str| {
        format!("OPTIONS / HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Private-Network: true\r\nConnection: close\r\n\r\n", d.host())
    };
    let foreign = d.raw(preflight("https://evil.example")).await;
    assert!(foreign.header("access-control-allow-origin").is_none());
    let own = d.raw(preflight(&d.origin())).await;
    assert_eq!(
        own.header("access-control-allow-origin"),
        Some(d.origin().as_str())
    );
    assert_eq!(
        own.header("access-control-allow-private-network"),
        Some("true")
    );

    // Missing and bogus tokens.
    let reply = d.post(&create("evil3"), &[]).await;
    assert_eq!(reply.json()["error"]["code"], CODE_UNAUTHENTICATED);
    let reply = d
        .post(&create("evil4"), &[("Authorization", "Bearer 00")])
        .await;
    assert!(
        reply.status == 401 || reply.json()["error"]["code"] == CODE_UNAUTHENTICATED,
        "{reply:?}"
    );

    // Oversized body, batch, malformed JSON, text/plain.
    let huge = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system.version\",\"params\":{{\"pad\":\"{}\"}}}}", "x".repeat(70 * 1024));
    assert_eq!(
        d.post(&huge, &[("Authorization", &bearer)]).await.status,
        413
    );
    let batch = format!("[{},{}]", create("evil5"), create("evil6"));
    let reply = d.post(&batch, &[("Authorization", &bearer)]).await;
    assert_eq!(
        reply.json()["error"]["code"],
        CODE_BATCHES_NOT_SUPPORTED,
        "batch refused: {reply:?}"
    );
    let reply = d
        .post(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":",
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(reply.json()["error"]["code"], CODE_PARSE_ERROR);
    let text_plain = create("evil7");
    let reply = d
        .raw(format!("POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text_plain}", d.host(), text_plain.len()))
        .await;
    assert_eq!(reply.status, 415);

    // Nothing changed: no operator was created. What the transport refused (Host, Origin,
    // size, batch, JSON, content type) never reached a method and is not audited; the two calls
    // that reached `operators.create` without a valid session are audited as refused: the first
    // at once, the second counted into the source's summary (written when its interval ends).
    let list = d
        .ok("operators.list", json!({}), Some(&admin))
        .await
        .to_string();
    for n in 1..=7 {
        assert!(
            !list.contains(&format!("evil{n}")),
            "evil{n} must not exist"
        );
    }
    assert_eq!(d.audit_count().await, before + 1);
    let daemon = d.daemon().clone();
    daemon.audit_refusals(daemon.refusals.drain());
    assert_eq!(d.audit_count().await, before + 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_insertion_and_removal_are_events_and_a_missing_card_is_explained() {
    let world_name = format!("daemon-api-{}", std::process::id());
    let name = world_name.clone();
    let d = TestDaemon::start_with(move |c| c.readers[0].options = json!({ "world": name })).await;
    let world = cardd_sim::named_world(&world_name).expect("the daemon's simulated world");
    let teller = d.login("teller", "teller123").await;
    let since = d.ok("events.poll", json!({}), Some(&teller)).await["next_since"]
        .as_u64()
        .unwrap();

    let card = world.remove_card("sim:etc").expect("the demo ETC card");
    let removed = d
        .ok(
            "events.poll",
            json!({"since": since, "wait_ms": 5000}),
            Some(&teller),
        )
        .await;
    assert_eq!(removed["events"][0]["type"], "card_removed", "{removed}");
    assert_eq!(removed["events"][0]["reader_id"], "sim:etc");
    let listed = d.ok("readers.list", json!({}), Some(&teller)).await;
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "sim:etc" && r["card_present"] == false));
    let (code, message) = d
        .err(
            "card.summary",
            json!({"reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    assert_eq!(code, ErrorCode::NoCard.code() as i64);
    assert!(message.contains("请将卡片放在读卡器上"), "{message}");

    world.insert_card("sim:etc", card).unwrap();
    let next = removed["next_since"].as_u64().unwrap();
    let inserted = d
        .ok(
            "events.poll",
            json!({"since": next, "wait_ms": 5000}),
            Some(&teller),
        )
        .await;
    assert_eq!(inserted["events"][0]["type"], "card_inserted", "{inserted}");
    assert!(inserted["events"][0]["atr"]
        .as_str()
        .is_some_and(|a| !a.is_empty()));
    d.ok(
        "card.summary",
        json!({"reader_id": "sim:etc"}),
        Some(&teller),
    )
    .await;

    // A reader unplugged is an event too, and leaves the listing.
    let next = inserted["next_since"].as_u64().unwrap();
    world.remove_reader("sim:city").unwrap();
    let gone = d
        .ok(
            "events.poll",
            json!({"since": next, "wait_ms": 10000}),
            Some(&teller),
        )
        .await;
    let types: Vec<&str> = gone["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"reader_removed"), "{gone}");
    let listed = d.ok("readers.list", json!({}), Some(&teller)).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != "sim:city"),
        "{listed}"
    );
    d.stop().await;
}

/// Audit before action: a state-changing call is recorded (bounded) before it acts and again
/// with its result; a detail over the limit is truncated and the call still goes through with
/// both records; a refused call is audited as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_are_audited_before_and_after_with_bounded_details() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    let long_name = "长".repeat(20_000);
    let create = json!({"username": "clerk9", "display_name": long_name, "role": "teller", "group_id": null, "password": "clerk9pw"});
    let _ = d.call("operators.create", create, Some(&admin)).await;
    let auditor = d.login("auditor", "audit123").await;
    let records = d
        .ok("audit.list", json!({"limit": 500}), Some(&auditor))
        .await;
    let mine: Vec<&Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "operators.create")
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine[0]["outcome"], "started");
    assert_ne!(mine[1]["outcome"], "started");
    assert_eq!(mine[1]["detail"]["started_seq"], mine[0]["seq"]);
    assert!(mine[0]["seq"].as_u64() < mine[1]["seq"].as_u64());
    if mine[0]["detail"]["truncated"] == true {
        assert!(mine[0]["detail"]["bytes"].as_u64().unwrap() > 8 * 1024);
    } else {
        assert!(
            mine[0]["detail"].to_string().len() <= 8 * 1024,
            "{}",
            mine[0]["detail"]
        );
    }
    assert!(
        !records.to_string().contains("clerk9pw"),
        "no password in the audit log"
    );
    // A detail over the limit: truncated, never a reason to skip the record.
    let big = cardd::rpc::bounded_detail(json!({ "x": "a".repeat(100_000) }));
    assert_eq!(big["truncated"], true);
    assert_eq!(big["bytes"], 100_000 + 8);
    assert!(big.to_string().len() < 2 * 1024);
    // A refused call (wrong role) is audited as refused.
    let teller = d.login("teller", "teller123").await;
    let (code, _) = d
        .err(
            "operators.set_disabled",
            json!({"username": "admin", "disabled": true}),
            Some(&teller),
        )
        .await;
    assert_eq!(code, CODE_FORBIDDEN);
    let records = d
        .ok("audit.list", json!({"limit": 500}), Some(&auditor))
        .await;
    let refused = records
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["action"] == "operators.set_disabled")
        .cloned()
        .expect("the refused call is audited");
    assert_eq!(refused["outcome"], "Forbidden", "{refused}");
    let verified = d.ok("audit.verify", json!({}), Some(&auditor)).await;
    assert_eq!(verified["chain_ok"], true);
    d.stop().await;
}

/// A failed sync to disk fails the daemon closed: the call whose write could not be made
/// durable fails, and every state-changing method after it is refused with FailedClosed
/// (never retried and called durable); reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_the_daemon_closed() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    d.daemon().store.fail_flushes_for_test(0, 1);
    let first = d
        .call(
            "operators.create",
            json!({"username": "clerk7", "display_name": "x", "role": "teller", "group_id": null, "password": "clerk7pw"}),
            Some(&admin),
        )
        .await;
    assert!(first.get("error").is_some(), "{first}");
    assert!(d.daemon().failed_closed());
    for method in ["operators.create", "etc.recharge", "flows.start"] {
        let (code, message) = d.err(method, json!({}), Some(&admin)).await;
        assert_eq!(
            code,
            i64::from(ErrorCode::FailedClosed.code()),
            "{method}: {message}"
        );
    }
    // Reads still answer.
    d.ok("operators.list", json!({}), Some(&admin)).await;
    d.stop().await;
}
