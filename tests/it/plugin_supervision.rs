//! Reader plugins supervised by the daemon: a plugin that cannot start takes only its own
//! readers offline and is reported (`readers.plugins`, `readers.list`, `/metrics`); an operator
//! can restart a plugin at once; after a restart its readers come back with their cards
//! announced, and a lease on a reader that went away ends with an event saying why.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use serde_json::{json, Value};

/// A standard-library Python plugin with one reader `r1` holding a card. With `crash`, it
/// exits at a GET BALANCE; with `garble`, it answers a GET BALANCE with a broken line. (Only
/// GET BALANCE: the daemon reads the cards present at start-up to settle interrupted loads.)
const PLUGIN: &str = r#"
import json, sys
mode = sys.argv[1] if len(sys.argv) > 1 else ""
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    if not line.strip():
        continue
    req = json.loads(line)
    i, m = req["id"], req["method"]
    if m == "hello":
        send({"id": i, "result": {"protocol": "cardd-plugin/1", "name": "mini", "version": "0.3"}})
    elif m == "list":
        send({"id": i, "result": {"readers": [{"id": "r1", "name": "Mini",
              "capabilities": {"contact": True, "contactless": False, "events": True}}]}})
    elif m == "open":
        send({"id": i, "result": {"protocol": "t1"}})
    elif m in ("power_on", "reset"):
        send({"id": i, "result": {"atr": "3B00"}})
    elif m == "presence":
        send({"id": i, "result": {"state": "powered", "atr": "3B00"}})
    elif m == "transmit":
        balance = req["params"]["apdu"].upper().startswith("805C")
        if mode == "crash" and balance:
            sys.exit(3)
        if mode == "garble" and balance:
            sys.stdout.write("SDK: card ok\n"); sys.stdout.flush()
            continue
        send({"id": i, "result": {"response": "9000"}})
    else:
        send({"id": i, "result": {}})
"#;

/// Answers `hello` with `unsupported_version`, as a plugin built for another protocol would.
const OLD_PLUGIN: &str = r#"
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.write(json.dumps({"id": req["id"], "error": {"code": "unsupported_version", "message": "cardd-plugin/9"}}) + "\n")
    sys.stdout.flush()
"#;

const WAIT: Duration = Duration::from_secs(20);

fn plugin(name: &str, script: &std::path::Path) -> cardd::config::ReaderInstance {
    cardd::config::ReaderInstance {
        driver: "plugin".into(),
        options: json!({
            "name": name,
            "command": "python3",
            "args": [script.display().to_string()],
            "restart_backoff_initial_ms": 50,
            "restart_backoff_max_ms": 200,
            "ping_interval_ms": 0,
        }),
        trace: None,
    }
}

fn plugin_named<'a>(plugins: &'a Value, instance: &str) -> &'a Value {
    plugins
        .as_array()
        .expect("a list of plugins")
        .iter()
        .find(|p| p["instance"] == instance)
        .unwrap_or_else(|| panic!("no plugin {instance} in {plugins}"))
}

/// Polls events from `since` until `done` holds for what was seen (bounded by [`WAIT`]).
async fn events_until(
    d: &TestDaemon,
    token: &str,
    since: u64,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut since = since;
    while !done(&seen) {
        assert!(Instant::now() < deadline, "events so far: {seen:#?}");
        let page = d
            .ok(
                "events.poll",
                json!({"since": since, "wait_ms": 1000}),
                Some(token),
            )
            .await;
        seen.extend(page["events"].as_array().unwrap().iter().cloned());
        since = page["next_since"].as_u64().unwrap();
    }
    seen
}

fn position(events: &[Value], kind: &str, reader: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| e["type"] == kind && e["reader_id"] == reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_cannot_start_take_only_their_readers_offline() {
    let scripts = tempfile::tempdir().expect("scripts dir");
    let old = scripts.path().join("old.py");
    std::fs::write(&old, OLD_PLUGIN).expect("write the plugin");
    let world = format!("plugin-offline-{}", std::process::id());
    let w = world.clone();
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": w });
        let mut missing = plugin("missing", &old);
        missing.options["command"] = json!("/nonexistent/acme-cardd-plugin");
        c.readers.push(missing);
        c.readers.push(plugin("old", &old));
    })
    .await;
    let teller = d.login("teller", "teller123").await;

    // The simulated readers serve as ever.
    let balance = d
        .ok(
            "card.balance",
            json!({"reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    assert!(balance.is_object(), "{balance}");
    let readers = d.ok("readers.list", json!({}), Some(&teller)).await;
    let ids: Vec<&str> = readers
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sim:etc"), "{ids:?}");
    assert!(ids.iter().all(|id| !id.starts_with("plugin:")), "{ids:?}");
    // Readers of built-in drivers carry no plugin status.
    assert!(readers[0].get("plugin").is_none(), "{readers}");

    // Both plugins are reported, with what is wrong and what to do.
    let plugins = d.ok("readers.plugins", json!({}), Some(&teller)).await;
    let missing = plugin_named(&plugins, "missing");
    assert_eq!(missing["state"], "failed", "{missing}");
    assert_eq!(missing["readers"], 0);
    let why = missing["last_error"].as_str().unwrap();
    assert!(why.contains("cannot start plugin missing"), "{why}");
    assert!(why.contains("check the `command` option"), "{why}");
    let old = plugin_named(&plugins, "old");
    assert_eq!(old["state"], "failed", "{old}");
    let why = old["last_error"].as_str().unwrap();
    assert!(
        why.contains("speaks cardd-plugin/9, but cardd speaks cardd-plugin/1"),
        "{why}"
    );

    // They are retried with backoff, and /metrics shows it.
    let deadline = Instant::now() + WAIT;
    loop {
        let plugins = d.ok("readers.plugins", json!({}), Some(&teller)).await;
        if plugin_named(&plugins, "old")["restarts"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{plugins}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = d
        .raw(format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for needle in [
        r#"cardd_plugin_state{instance="missing",state="failed"} 1"#,
        r#"cardd_plugin_state{instance="old",state="running"} 0"#,
        r#"cardd_plugin_readers{instance="old"} 0"#,
    ] {
        assert!(
            reply.body.contains(needle),
            "{needle} not in:\n{}",
            reply.body
        );
    }
    assert!(
        reply.body.lines().any(|l| l
            .starts_with(r#"cardd_plugin_restarts_total{instance="old"} "#)
            && !l.ends_with(" 0")),
        "{}",
        reply.body
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_leases_and_announces_the_cards_that_come_back() {
    let scripts = tempfile::tempdir().expect("scripts dir");
    let mini = scripts.path().join("mini.py");
    std::fs::write(&mini, PLUGIN).expect("write the plugin");
    let world = format!("plugin-restart-{}", std::process::id());
    let w = world.clone();
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": w });
        c.readers.push(plugin("mini", &mini));
    })
    .await;
    let teller = d.login("teller", "teller123").await;
    let admin = d.login("admin", "admin123").await;
    let reader = "plugin:mini:r1";

    let readers = d.ok("readers.list", json!({}), Some(&teller)).await;
    let listed = readers
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == reader)
        .unwrap_or_else(|| panic!("{reader} not in {readers}"));
    assert_eq!(listed["card_present"], true, "{listed}");
    assert_eq!(listed["plugin"]["instance"], "mini", "{listed}");
    assert_eq!(listed["plugin"]["state"], "running", "{listed}");
    assert_eq!(listed["plugin"]["name"], "mini", "{listed}");
    assert_eq!(listed["plugin"]["version"], "0.3", "{listed}");

    let lease = d
        .ok(
            "readers.lease",
            json!({"reader_id": reader, "duration_ms": 60000}),
            Some(&teller),
        )
        .await;
    let lease_id = lease["lease_id"].as_str().unwrap().to_owned();
    let since = d.ok("events.poll", json!({}), Some(&teller)).await["next_since"]
        .as_u64()
        .unwrap();

    // Only administrators restart plugins; an unknown instance is named as such.
    let (code, _) = d
        .err(
            "readers.restart_plugin",
            json!({"instance": "mini"}),
            Some(&teller),
        )
        .await;
    assert_eq!(code, i64::from(cardd_api::ErrorCode::Forbidden.code()));
    let audited = d.audit_count().await;
    let (code, message) = d
        .err(
            "readers.restart_plugin",
            json!({"instance": "nosuch"}),
            Some(&admin),
        )
        .await;
    assert_eq!(code, i64::from(cardd_api::ErrorCode::ReaderNotFound.code()));
    assert!(message.contains("configured plugins: mini"), "{message}");

    let restarted = d
        .ok(
            "readers.restart_plugin",
            json!({"instance": "mini"}),
            Some(&admin),
        )
        .await;
    assert_eq!(restarted["instance"], "mini", "{restarted}");
    // Audited before it acted (the refused call is audited too).
    assert!(d.audit_count().await >= audited + 2);

    // The lease ends with a reason, the reader leaves and comes back, and so does its card.
    let events = events_until(&d, &teller, since, |seen| {
        position(seen, "reader_added", reader).is_some_and(|added| {
            seen[added..]
                .iter()
                .any(|e| e["type"] == "card_inserted" && e["reader_id"] == reader)
        })
    })
    .await;
    let ended = events
        .iter()
        .position(|e| e["type"] == "lease_released" && e["lease_id"] == lease_id.as_str())
        .unwrap_or_else(|| panic!("no end of lease {lease_id} in {events:#?}"));
    assert_eq!(events[ended]["reason"], "reader_gone", "{events:#?}");
    let removed = position(&events, "reader_removed", reader).expect("reader_removed");
    let added = position(&events, "reader_added", reader).expect("reader_added");
    assert!(ended < removed && removed < added, "{events:#?}");
    let inserted = events
        .iter()
        .rposition(|e| e["type"] == "card_inserted" && e["reader_id"] == reader)
        .unwrap();
    assert!(added < inserted, "{events:#?}");
    assert_eq!(events[inserted]["atr"], "3B00", "{events:#?}");

    let plugins = d.ok("readers.plugins", json!({}), Some(&teller)).await;
    let mini = plugin_named(&plugins, "mini");
    assert_eq!(mini["state"], "running", "{mini}");
    assert_eq!(mini["restarts"], 1, "{mini}");
    assert!(
        mini["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("restarted by an operator")),
        "{mini}"
    );
    // The old lease is gone; the reader serves again.
    let (code, _) = d
        .err(
            "readers.release",
            json!({"lease_id": lease_id}),
            Some(&teller),
        )
        .await;
    assert_eq!(code, i64::from(cardd_api::ErrorCode::LeaseNotFound.code()));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teller_is_told_of_a_plugin_crash_or_garbled_reply_in_plain_words() {
    let scripts = tempfile::tempdir().expect("scripts dir");
    let mini = scripts.path().join("mini.py");
    std::fs::write(&mini, PLUGIN).expect("write the plugin");
    let world = format!("plugin-words-{}", std::process::id());
    let w = world.clone();
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": w });
        let mut crashy = plugin("crashy", &mini);
        crashy.options["args"] = json!([mini.display().to_string(), "crash"]);
        // Not back before the test ends: its state stays `backoff`.
        crashy.options["restart_backoff_initial_ms"] = json!(60_000);
        crashy.options["restart_backoff_max_ms"] = json!(60_000);
        c.readers.push(crashy);
        let mut garbled = plugin("garbled", &mini);
        garbled.options["args"] = json!([mini.display().to_string(), "garble"]);
        c.readers.push(garbled);
    })
    .await;
    let teller = d.login("teller", "teller123").await;

    // A garbled reply fails the read at once (the APDU timeout is far longer), worded as the
    // plugin's fault, not the card's.
    let started = Instant::now();
    let (code, message) = d
        .err(
            "card.balance",
            json!({"reader_id": "plugin:garbled:r1"}),
            Some(&teller),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        code,
        i64::from(cardd_api::ErrorCode::ReaderDriverMalformed.code()),
        "{message}"
    );
    assert!(
        message.starts_with("读卡器插件 garbled 回复格式错误"),
        "{message}"
    );

    // A crash is a crash: the teller is not sent to reconnect the reader.
    let (code, message) = d
        .err(
            "card.balance",
            json!({"reader_id": "plugin:crashy:r1"}),
            Some(&teller),
        )
        .await;
    assert_eq!(
        code,
        i64::from(cardd_api::ErrorCode::ReaderDriverCrashed.code()),
        "{message}"
    );
    assert!(
        message.starts_with("读卡器插件 crashy 意外退出，正在重启"),
        "{message}"
    );
    assert!(!message.contains("重新连接"), "{message}");

    // The status says the plugin is waiting out its backoff, and why.
    let deadline = Instant::now() + WAIT;
    loop {
        let plugins = d.ok("readers.plugins", json!({}), Some(&teller)).await;
        let crashy = plugin_named(&plugins, "crashy");
        if crashy["state"] == "backoff" {
            assert_eq!(crashy["backoff_ms"], 60_000, "{crashy}");
            assert_eq!(crashy["readers"], 0, "{crashy}");
            assert!(
                crashy["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("exited unexpectedly")),
                "{crashy}"
            );
            let garbled = plugin_named(&plugins, "garbled");
            assert_eq!(garbled["state"], "running", "{garbled}");
            assert!(
                garbled["malformed_lines"].as_u64().unwrap() >= 1,
                "{garbled}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{plugins}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await;
}
