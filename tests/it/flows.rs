//! Flow lifecycle over JSON-RPC: list, start with an idempotency key, follow, answer, cancel,
//! outcome; parameters validated before anything runs; one credit per run whatever the retries;
//! runaway scripts stopped; flows reloaded while a running flow keeps its version.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use cardd_api::ErrorCode;
use common::TestDaemon;
use serde_json::{json, Value};

const LOAD_FLOW: &str = include_str!("../../scripts/card_load.lua");

fn flows_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("card_load.lua"), LOAD_FLOW).unwrap();
    for (name, source) in extra {
        std::fs::write(dir.path().join(name), source).unwrap();
    }
    dir
}

async fn start_with_flows(
    dir: &Path,
    world: &str,
    adjust: impl FnOnce(&mut cardd::config::Config) + Send + 'static,
) -> TestDaemon {
    let (dir, world) = (dir.to_path_buf(), world.to_owned());
    TestDaemon::start_with(move |c| {
        c.flows.dir = Some(dir);
        c.readers[0].options = json!({ "world": world });
        adjust(c);
    })
    .await
}

async fn wait_for(
    d: &TestDaemon,
    token: &str,
    run_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut since = 0;
    for _ in 0..50 {
        let polled = d
            .ok(
                "flows.events",
                json!({"run_id": run_id, "since": since, "wait_ms": 2000}),
                Some(token),
            )
            .await;
        since = polled["next_since"].as_u64().unwrap();
        if done(&polled) {
            return d
                .ok("flows.get", json!({"run_id": run_id}), Some(token))
                .await;
        }
    }
    panic!("run {run_id} did not reach the expected state");
}

fn balance(world: &str) -> u32 {
    cardd_sim::named_world(world)
        .unwrap()
        .card("sim:etc")
        .unwrap()
        .balance()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_flow_asks_loads_once_and_replays_retries() {
    let dir = flows_dir(&[]);
    let world = format!("flows-load-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let admin = d.login("admin", "admin123").await;
    let listed = d.ok("flows.list", json!({}), Some(&admin)).await;
    assert_eq!(listed[0]["name"], "card.load");
    assert_eq!(listed[0]["params"]["required"][0], "amount");
    let auditor = d.login("auditor", "audit123").await;
    assert_eq!(
        d.ok("flows.list", json!({}), Some(&auditor)).await,
        json!([]),
        "auditors may not start loads"
    );

    let start = json!({"flow": "card.load", "params": {"amount": "20.00"}, "idempotency_key": "teller-0001", "reader_id": "sim:etc"});
    let run = d.ok("flows.start", start.clone(), Some(&admin)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let waiting = wait_for(&d, &admin, &run_id, |p| p["state"] == "waiting").await;
    assert_eq!(
        waiting["prompt"]["message"],
        "卡内余额：100.00元。圈存金额：20.00元。是否圈存？"
    );
    assert_eq!(
        balance(&world),
        10_000,
        "nothing loaded before the confirmation"
    );

    // A retry of the start while waiting returns the same run.
    assert_eq!(
        d.ok("flows.start", start.clone(), Some(&admin)).await["run_id"],
        run_id
    );
    let prompt_id = waiting["prompt"]["prompt_id"].as_u64().unwrap();
    d.ok(
        "flows.answer",
        json!({"run_id": run_id, "prompt_id": prompt_id, "answer": true}),
        Some(&admin),
    )
    .await;
    let done = wait_for(&d, &admin, &run_id, |p| p["state"] == "succeeded").await;
    assert_eq!(done["result"]["message"], "圈存成功！");
    assert_eq!(done["result"]["balance_after"], "120.00");
    assert_eq!(balance(&world), 12_000);

    // Re-sending the start after it finished: the same run, never a second credit.
    let again = d.ok("flows.start", start, Some(&admin)).await;
    assert_eq!(again["run_id"], run_id);
    assert_eq!(again["state"], "succeeded");
    assert_eq!(balance(&world), 12_000);
    // The same key with other parameters is refused.
    let other = json!({"flow": "card.load", "params": {"amount": "30.00"}, "idempotency_key": "teller-0001", "reader_id": "sim:etc"});
    assert_eq!(
        d.err("flows.start", other, Some(&admin)).await.0,
        ErrorCode::IdempotencyConflict.code() as i64
    );
    // A stale answer is refused.
    let (code, _) = d
        .err(
            "flows.answer",
            json!({"run_id": run_id, "prompt_id": prompt_id, "answer": true}),
            Some(&admin),
        )
        .await;
    assert_eq!(code, ErrorCode::NoPendingPrompt.code() as i64);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_and_roles_are_checked_before_anything_runs() {
    let dir = flows_dir(&[]);
    let world = format!("flows-params-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let admin = d.login("admin", "admin123").await;
    for (i, bad) in [
        json!("10.001"),
        json!("-5"),
        json!("abc"),
        json!(10.5),
        json!("0"),
        json!("10000.01"),
        json!(null),
    ]
    .iter()
    .enumerate()
    {
        let start = json!({"flow": "card.load", "params": {"amount": bad}, "idempotency_key": format!("bad-{i}"), "reader_id": "sim:etc"});
        let (code, message) = d.err("flows.start", start, Some(&admin)).await;
        assert_eq!(
            code,
            ErrorCode::InvalidParams.code() as i64,
            "{bad}: {message}"
        );
        assert!(message.contains("参数错误"), "{bad}: {message}");
    }
    let unknown = json!({"flow": "card.load", "params": {"amount": "1.00", "amont": "2"}, "idempotency_key": "bad-x", "reader_id": "sim:etc"});
    assert_eq!(
        d.err("flows.start", unknown, Some(&admin)).await.0,
        ErrorCode::InvalidParams.code() as i64
    );
    let auditor = d.login("auditor", "audit123").await;
    let start = json!({"flow": "card.load", "params": {"amount": "1.00"}, "idempotency_key": "a-1", "reader_id": "sim:etc"});
    assert_eq!(
        d.err("flows.start", start, Some(&auditor)).await.0,
        ErrorCode::Forbidden.code() as i64
    );
    let nope = json!({"flow": "no.such", "params": {}, "idempotency_key": "n-1"});
    assert_eq!(
        d.err("flows.start", nope, Some(&admin)).await.0,
        ErrorCode::FlowNotFound.code() as i64
    );
    assert_eq!(balance(&world), 10_000);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_cancelling_and_timing_out_load_nothing() {
    let dir = flows_dir(&[]);
    let world = format!("flows-cancel-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |c| c.flows.prompt_timeout_s = 1).await;
    let admin = d.login("admin", "admin123").await;
    let start = |key: &str| json!({"flow": "card.load", "params": {"amount": "5.00"}, "idempotency_key": key, "reader_id": "sim:etc"});

    let run = d.ok("flows.start", start("no"), Some(&admin)).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = wait_for(&d, &admin, &run, |p| p["state"] == "waiting").await;
    let prompt_id = waiting["prompt"]["prompt_id"].clone();
    d.ok(
        "flows.answer",
        json!({"run_id": run, "prompt_id": prompt_id, "answer": false}),
        Some(&admin),
    )
    .await;
    let done = wait_for(&d, &admin, &run, |p| p["state"] == "succeeded").await;
    assert_eq!(done["result"]["status"], "cancelled");

    let run = d.ok("flows.start", start("cancel"), Some(&admin)).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(&d, &admin, &run, |p| p["state"] == "waiting").await;
    d.ok("flows.cancel", json!({"run_id": run}), Some(&admin))
        .await;
    let done = wait_for(&d, &admin, &run, |p| {
        p["state"] == "cancelled" || p["state"] == "failed"
    })
    .await;
    assert!(
        done["state"] == "cancelled"
            || done["failure"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("取消"),
        "{done}"
    );

    let run = d.ok("flows.start", start("timeout"), Some(&admin)).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_for(&d, &admin, &run, |p| p["state"] == "failed").await;
    assert!(
        done["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("超时"),
        "{done}"
    );
    assert_eq!(balance(&world), 10_000, "no money moved");

    // Another operator cannot see or steer these runs.
    let other = d.login("kiosk", "kiosk123").await;
    assert_eq!(
        d.err("flows.get", json!({"run_id": run}), Some(&other))
            .await
            .0,
        ErrorCode::RunNotFound.code() as i64
    );
    d.stop().await;
}

const RUNAWAY: &str = r#"
return {
  name = "test.runaway", version = "1.0.0", title = "runaway", role = { "teller" }, params = {},
  run = function(ctx, params)
    while true do pcall(function() while true do end end) end
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_flow_is_stopped_and_flows_reload_without_touching_running_ones() {
    let dir = flows_dir(&[("runaway.lua", RUNAWAY)]);
    let world = format!("flows-runaway-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let teller = d.login("teller", "teller123").await;
    let started = Instant::now();
    let run = d
        .ok(
            "flows.start",
            json!({"flow": "test.runaway", "params": {}, "idempotency_key": "r1"}),
            Some(&teller),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let done = wait_for(&d, &teller, &run_id, |p| p["state"] == "failed").await;
    assert_eq!(done["failure"]["kind"], "limit", "{done}");
    println!(
        "runaway flow stopped after {:?} (including the RPC round trips)",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A running load flow keeps its version when the file changes (`card.load` is the
    // administrator's test mode).
    let admin = d.login("admin", "admin123").await;
    let run = d
        .ok("flows.start", json!({"flow": "card.load", "params": {"amount": "1.00"}, "idempotency_key": "v1", "reader_id": "sim:etc"}), Some(&admin))
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let waiting = wait_for(&d, &admin, &run_id, |p| p["state"] == "waiting").await;
    std::fs::write(
        dir.path().join("card_load.lua"),
        LOAD_FLOW.replace("version = \"1.0.0\"", "version = \"1.1.0\""),
    )
    .unwrap();
    // The daemon notices the change by itself within a few seconds.
    let mut version = String::new();
    for _ in 0..40 {
        let listed = d.ok("flows.list", json!({}), Some(&admin)).await;
        let load = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "card.load")
            .unwrap()
            .clone();
        version = load["version"].as_str().unwrap().to_owned();
        if version == "1.1.0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(version, "1.1.0", "the changed flow file was reloaded");
    d.ok(
        "flows.answer",
        json!({"run_id": run_id, "prompt_id": waiting["prompt"]["prompt_id"], "answer": true}),
        Some(&admin),
    )
    .await;
    let done = wait_for(&d, &admin, &run_id, |p| p["state"] == "succeeded").await;
    assert_eq!(
        done["version"], "1.0.0",
        "the run finished on the version it started with"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_can_be_followed_over_a_websocket_subscription() {
    use jsonrpsee::core::client::{Subscription, SubscriptionClientT};
    use jsonrpsee::ws_client::WsClientBuilder;

    let dir = flows_dir(&[]);
    let world = format!("flows-ws-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let admin = d.login("admin", "admin123").await;
    let run = d
        .ok("flows.start", json!({"flow": "card.load", "params": {"amount": "3.00"}, "idempotency_key": "ws-1", "reader_id": "sim:etc"}), Some(&admin))
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let client = WsClientBuilder::default()
        .build(format!("ws://{}/?token={admin}", d.host()))
        .await
        .unwrap();
    let mut params = jsonrpsee::core::params::ObjectParams::new();
    params.insert("run_id", &run_id).unwrap();
    let mut sub: Subscription<Value> = client
        .subscribe("flows.subscribe", params, "flows.unsubscribe")
        .await
        .unwrap();
    let mut kinds = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event in time");
        let Some(Ok(event)) = event else { break };
        kinds.push(event["kind"].as_str().unwrap().to_owned());
        if event["kind"] == "prompt" {
            let prompt_id = event["data"]["prompt_id"].clone();
            d.ok(
                "flows.answer",
                json!({"run_id": run_id, "prompt_id": prompt_id, "answer": true}),
                Some(&admin),
            )
            .await;
        }
        if event["kind"] == "state" && event["message"] == "succeeded" {
            break;
        }
    }
    for expected in ["state", "progress", "prompt", "answer", "load"] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:?}"
        );
    }
    assert_eq!(balance(&world), 10_300);
    d.stop().await;
}

/// Card removal at every APDU of the `card.load` flow, before the card executes the command
/// and after it executed with the answer lost: after the card is re-presented (the daemon
/// recovers by itself), the card's balance changed by exactly the committed loads, at most
/// once, and no intent is left open (`common::matrix`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_removal_at_every_apdu_of_the_flow() {
    let world = format!("flows-removal-{}", std::process::id());
    common::matrix::removal_matrix(&common::matrix::CARD_LOAD, &world).await;
}

const HOST_FLOW: &str = r##"
return {
  name = "test.host", version = "1.0.0", title = "host", role = { "teller" },
  params = { plate = { type = "string", required = true }, colour = { type = "integer", min = 0, max = 12 } },
  run = function(ctx, params)
    local vehicle = host.vehicle(params.plate, params.colour)
    local page = host.records({ plate = params.plate, colour = params.colour, page = 1, page_size = 10 })
    local pending = host.records_for_card(vehicle.card_numbers[#vehicle.card_numbers], "not_loaded")
    local record = host.record(pending[1].record_id)
    return { owner = vehicle.owner_name, total = page.total, pending = #pending, newest = page.records[1].record_id,
             status = record.status, no_begin = host.begin_load == nil, no_finish = host.finish_load == nil }
  end,
}
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_call_the_issuer_host() {
    let dir = flows_dir(&[("host.lua", HOST_FLOW)]);
    let world = format!("flows-host-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let teller = d.login("teller", "teller123").await;
    let run = d.ok("flows.start", json!({"flow": "test.host", "params": {"plate": "陕A12345", "colour": 0}, "idempotency_key": "h1"}), Some(&teller)).await;
    let done = wait_for(&d, &teller, run["run_id"].as_str().unwrap(), |p| {
        p["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["owner"], "张三");
    assert_eq!(r["total"], 3);
    assert_eq!(r["pending"], 2);
    assert_eq!(r["status"], "not_loaded");
    // Flows cannot move a record's money state by themselves.
    assert_eq!(r["no_begin"], true);
    assert_eq!(r["no_finish"], true);
    d.stop().await;
}

const CARD_FLOW: &str = r##"
return {
  name = "test.card", version = "1.0.0", title = "card", role = { "teller" }, params = {},
  run = function(ctx, params)
    local info = card.info({ online_counter = true })
    local log = card.read_log(5)
    local proof = card.prove_load(info.online_atc)
    local missing = card.prove_load(info.online_atc + 7)
    return { balance = card.balance(), log = #log, last = log[1].amount_fen, mac = proof.mac, missing = missing == nil }
  end,
}
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_read_balance_log_and_transaction_proof() {
    let dir = flows_dir(&[("card.lua", CARD_FLOW)]);
    let world = format!("flows-card-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let teller = d.login("teller", "teller123").await;
    // One load first (the administrator's test mode), so the card has a log record and a proof.
    let admin = d.login("admin", "admin123").await;
    let id = d.ok("flows.start", json!({"flow": "card.load", "params": {"amount": "7.00"}, "idempotency_key": "c0", "reader_id": "sim:etc"}), Some(&admin)).await["run_id"].as_str().unwrap().to_owned();
    let waiting = wait_for(&d, &admin, &id, |p| p["state"] == "waiting").await;
    d.ok(
        "flows.answer",
        json!({"run_id": id, "prompt_id": waiting["prompt"]["prompt_id"], "answer": true}),
        Some(&admin),
    )
    .await;
    wait_for(&d, &admin, &id, |p| p["state"] == "succeeded").await;
    let run = d.ok("flows.start", json!({"flow": "test.card", "params": {}, "idempotency_key": "c1", "reader_id": "sim:etc"}), Some(&teller)).await;
    let done = wait_for(&d, &teller, run["run_id"].as_str().unwrap(), |p| {
        p["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["balance"], 10_700);
    assert_eq!(r["log"], 1);
    assert_eq!(r["last"], 700);
    assert_eq!(r["mac"].as_str().unwrap().len(), 8);
    assert_eq!(r["missing"], true);
    d.stop().await;
}

/// The kiosk account (its password is typed in at a public kiosk) cannot start the unfunded
/// `card.load` flow: a kiosk loads only paid recharge records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiosk_cannot_start_an_unfunded_load() {
    let d = TestDaemon::start().await;
    let kiosk = d.login("kiosk", "kiosk123").await;
    let (code, message) = d
        .err(
            "flows.start",
            json!({"flow": "card.load", "params": {"amount": "100.00"}, "idempotency_key": "kiosk-mint", "reader_id": "sim:etc"}),
            Some(&kiosk),
        )
        .await;
    assert_eq!(code, ErrorCode::Forbidden.code() as i64, "{message}");
    let listed = d.ok("flows.list", json!({}), Some(&kiosk)).await;
    assert!(!listed.to_string().contains("\"card.load\""), "{listed}");
    d.stop().await;
}

/// No credit without funds: by default (`flows.unfunded_test_loads` off) the `card.load` flow
/// credits nothing, whoever starts it (the administrator's run fails; the others may not start
/// it); the test mode is refused with anything but the demo keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfunded_loads_are_refused_unless_in_the_demo_test_mode() {
    let world = format!("unfunded-{}", std::process::id());
    let w = world.clone();
    let d = TestDaemon::start_with(move |c| {
        c.flows.unfunded_test_loads = false;
        c.readers[0].options = json!({ "world": w });
    })
    .await;
    let sim = cardd_sim::named_world(&world).unwrap();
    let before = sim.card("sim:etc").and_then(|c| c.balance()).unwrap();
    let admin = d.login("admin", "admin123").await;
    let start = json!({"flow": "card.load", "params": {"amount": "100.00"}, "idempotency_key": "mint-admin", "reader_id": "sim:etc"});
    let done = d.drive(&admin, start, |_| json!(true)).await.done;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("无资金来源的圈存未开放"),
        "{done}"
    );
    for (user, password) in [("teller", "teller123"), ("supervisor", "super123")] {
        let token = d.login(user, password).await;
        let start = json!({"flow": "card.load", "params": {"amount": "100.00"}, "idempotency_key": format!("mint-{user}"), "reader_id": "sim:etc"});
        let (code, message) = d.err("flows.start", start, Some(&token)).await;
        assert_eq!(
            code,
            ErrorCode::Forbidden.code() as i64,
            "{user}: {message}"
        );
    }
    assert_eq!(
        sim.card("sim:etc").and_then(|c| c.balance()).unwrap(),
        before
    );
    assert!(d
        .daemon()
        .journal
        .as_ref()
        .unwrap()
        .for_card(cardd_sim::demo::DEMO_ETC_CARD_NUMBER)
        .unwrap()
        .is_empty());
    d.stop().await;
    let toml = "[keys]\nsource = \"file\"\nfile = \"/nonexistent/keys.toml\"\n[flows]\nunfunded_test_loads = true\n";
    let e = cardd::config::Config::from_toml(toml, "t.toml").unwrap_err();
    assert_eq!(e.key, "flows.unfunded_test_loads", "{e:?}");
}

/// Refusal of unfunded loads by role, with the test mode on: only the administrator may run
/// `card.load`. The kiosk, teller, supervisor and auditor are refused at the start (the flow's
/// roles) and, should a flow file be edited to let them in, by `card.load` itself (the check in
/// Rust); a refusal credits nothing (the card's balance and the journal are unchanged). The
/// administrator's load is credited once, recorded as funded by the test mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfunded_loads_are_refused_by_role() {
    let edited = LOAD_FLOW
        .replace("name = \"card.load\"", "name = \"test.edited_load\"")
        .replace(
            "role = { \"admin\" }",
            "role = { \"admin\", \"teller\", \"supervisor\", \"auditor\", \"kiosk\" }",
        );
    assert!(edited.contains("test.edited_load") && edited.contains("\"kiosk\" }"));
    let dir = flows_dir(&[("edited.lua", edited.as_str())]);
    let world = format!("flows-roles-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let journal_of_card = |d: &TestDaemon| {
        d.daemon()
            .journal
            .as_ref()
            .unwrap()
            .for_card(cardd_sim::demo::DEMO_ETC_CARD_NUMBER)
            .unwrap()
    };
    let before = balance(&world);
    for (user, password) in [
        ("kiosk", "kiosk123"),
        ("teller", "teller123"),
        ("supervisor", "super123"),
        ("auditor", "audit123"),
    ] {
        let token = d.login(user, password).await;
        let start = json!({"flow": "card.load", "params": {"amount": "100.00"}, "idempotency_key": format!("mint-{user}"), "reader_id": "sim:etc"});
        let (code, message) = d.err("flows.start", start, Some(&token)).await;
        assert_eq!(
            code,
            ErrorCode::Forbidden.code() as i64,
            "{user}: {message}"
        );
        let start = json!({"flow": "test.edited_load", "params": {"amount": "100.00"}, "idempotency_key": format!("edited-{user}"), "reader_id": "sim:etc"});
        let done = d.drive(&token, start, |_| json!(true)).await.done;
        assert_eq!(done["state"], "failed", "{user}: {done}");
        let message = done["failure"]["message"].as_str().unwrap();
        assert!(
            message.contains("无资金来源的圈存仅供管理员在测试模式下使用"),
            "{user}: {message}"
        );
        assert_eq!(balance(&world), before, "{user}: nothing credited");
        assert!(journal_of_card(&d).is_empty(), "{user}: nothing journaled");
    }
    let admin = d.login("admin", "admin123").await;
    let start = json!({"flow": "card.load", "params": {"amount": "1.00"}, "idempotency_key": "admin-1", "reader_id": "sim:etc"});
    let done = d.drive(&admin, start, |_| json!(true)).await.done;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(balance(&world), before + 100);
    let txns = journal_of_card(&d);
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].funding, Some(cardd_journal::Funding::TestMode));
    d.stop().await;
}

const COUNTING: &str = r#"
return {
  name = "test.counting", version = "1.0.0", title = "counting", role = { "teller" },
  params = { bad = { type = "string", max_len = 8 } },
  run = function(ctx, params)
    ui.progress("开始")
    ui.progress("进度：1/2", { done = 1, total = 2 })
    if params.bad == "over" then
      ui.progress("x", { done = 3, total = 2 })
    elseif params.bad == "text" then
      ui.progress("x", { done = "1", total = 2 })
    end
    return { status = "ok" }
  end,
}
"#;

/// `ui.progress` with counts gives the event `{done, total}` besides the message; without
/// counts the data is empty; counts that are not whole numbers with `done <= total` fail the
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_counts_are_the_events_data() {
    let dir = flows_dir(&[("counting.lua", COUNTING)]);
    let world = format!("flows-counting-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let teller = d.login("teller", "teller123").await;
    let start = |key: &str, bad: &str| json!({"flow": "test.counting", "params": {"bad": bad}, "idempotency_key": key});
    let run = d.ok("flows.start", start("c1", ""), Some(&teller)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let done = wait_for(&d, &teller, &run_id, |p| p["state"] == "succeeded").await;
    assert_eq!(done["result"]["status"], "ok", "{done}");
    let events = d
        .ok("flows.events", json!({"run_id": run_id}), Some(&teller))
        .await;
    let progress: Vec<(Value, Value)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "progress")
        .map(|e| (e["message"].clone(), e["data"].clone()))
        .collect();
    assert_eq!(
        progress,
        [
            (json!("开始"), json!({})),
            (json!("进度：1/2"), json!({"done": 1, "total": 2})),
        ]
    );
    for (key, bad) in [("c2", "over"), ("c3", "text")] {
        let run = d.ok("flows.start", start(key, bad), Some(&teller)).await;
        let run_id = run["run_id"].as_str().unwrap().to_owned();
        let failed = wait_for(&d, &teller, &run_id, |p| p["state"] == "failed").await;
        assert_eq!(failed["failure"]["kind"], "flow_error", "{failed}");
        assert!(
            failed["failure"]["message"]
                .as_str()
                .unwrap()
                .contains("ui.progress"),
            "{failed}"
        );
    }
    d.stop().await;
}

/// A load without a question: the run goes from the start straight to its load intent.
const DIRECT_LOAD: &str = r#"
return {
  name = "test.direct_load", version = "1.0.0", title = "direct", role = { "admin" },
  params = { amount = { type = "amount", required = true, min = "0.01", max = "100.00" } },
  run = function(ctx, params)
    ui.progress("正在读取卡片……")
    local info = card.info()
    local receipt = card.load({ amount = params.amount, expected_card = info.card_number })
    return { status = "ok", balance_after = card.fen_to_yuan(receipt.balance_after_fen) }
  end,
}
"#;

/// `flows.start` answers only once the run and its key are durable. The flow starts before
/// that; when the flush round that would make the run durable fails (injected as a failed
/// fsync), the start fails, and the run loads no card: the store failed
/// closed, so the run's load intent cannot become durable. A re-send is refused rather than
/// answered with a run that is not durable. Without the failure, the same flow
/// loads the card once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_be_made_durable_fails_and_loads_nothing() {
    let dir = flows_dir(&[("direct.lua", DIRECT_LOAD)]);
    let world = format!("flows-durable-start-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let admin = d.login("admin", "admin123").await;
    let before = balance(&world);
    let store = d.daemon().store.clone();
    // The next round is the start's audit record's; the one after it covers the run.
    store.fail_flushes_for_test(1, 1);
    let start = json!({"flow": "test.direct_load", "params": {"amount": "5.00"}, "idempotency_key": "durable-1", "reader_id": "sim:etc"});
    // The start fails (its outcome's audit record, written after it on the failed store, is
    // refused too and names the first failure).
    let (_, message) = d.err("flows.start", start.clone(), Some(&admin)).await;
    assert!(message.contains("injected flush failure"), "{message}");
    let runs = store.tree(cardd::flows::RUNS_TREE).unwrap();
    let run_id = runs
        .get(b"key/admin/durable-1")
        .unwrap()
        .map(|id| String::from_utf8(id.to_vec()).unwrap())
        .expect("the run was written before the round");
    let engine = d.daemon().flows.clone().unwrap();
    let ended = engine
        .wait_finished(&run_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(ended.state.is_finished(), "{ended:?}");
    assert_ne!(ended.state, cardd::flows::RunState::Succeeded, "{ended:?}");
    assert_eq!(balance(&world), before, "no card was loaded");
    // A re-send is refused (the daemon stopped state-changing methods), never answered with
    // the run that is not durable.
    d.err("flows.start", start, Some(&admin)).await;
    assert_eq!(balance(&world), before);
    d.stop().await;

    // The same flow on a healthy store loads once.
    let dir = flows_dir(&[("direct.lua", DIRECT_LOAD)]);
    let world = format!("flows-durable-start-ok-{}", std::process::id());
    let d = start_with_flows(dir.path(), &world, |_| {}).await;
    let admin = d.login("admin", "admin123").await;
    let before = balance(&world);
    let start = json!({"flow": "test.direct_load", "params": {"amount": "5.00"}, "idempotency_key": "durable-2", "reader_id": "sim:etc"});
    let done = d.drive(&admin, start, |_| json!(true)).await.done;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(balance(&world), before + 500);
    d.stop().await;
}
