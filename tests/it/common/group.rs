//! Helpers of the group recharge tests: a daemon on the embedded default with its simulated
//! world published by name, group login, and driving the group flows over JSON-RPC.

use cardd_sim::cards::{CityCard, CityCardSpec, SimCard};
use serde_json::{json, Value};

use super::TestDaemon;

/// A daemon on the embedded default whose simulated readers are published as `world`.
pub async fn start_group_daemon(
    world: &str,
    adjust: impl FnOnce(&mut cardd::config::Config) + Send + 'static,
) -> TestDaemon {
    let world = world.to_owned();
    TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": world });
        adjust(c);
    })
    .await
}

/// `group.login`; returns the token.
pub async fn group_login(d: &TestDaemon, group: &str, user: &str, password: &str) -> String {
    let r = d
        .ok(
            "group.login",
            json!({"group_id": group, "username": user, "password": password}),
            None,
        )
        .await;
    r["token"].as_str().expect("token").to_owned()
}

/// The group's available quota, as `group.info` shows it.
pub async fn quota(d: &TestDaemon, token: &str) -> String {
    d.ok("group.info", json!({}), Some(token)).await["available_quota"]
        .as_str()
        .expect("quota")
        .to_owned()
}

/// Waits until the run asks a question newer than prompt `after` (0 for any); returns it.
pub async fn wait_prompt(d: &TestDaemon, token: &str, run_id: &str, after: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let run = d
            .ok("flows.get", json!({"run_id": run_id}), Some(token))
            .await;
        if run["state"] == "waiting" && run["prompt"]["prompt_id"].as_u64() > Some(after) {
            return run["prompt"].clone();
        }
        assert!(
            matches!(run["state"].as_str(), Some("running") | Some("waiting")),
            "run {run_id} ended without asking: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never asked");
}

/// Answers a prompt.
pub async fn answer(d: &TestDaemon, token: &str, run_id: &str, prompt: &Value, answer: Value) {
    d.ok(
        "flows.answer",
        json!({"run_id": run_id, "prompt_id": prompt["prompt_id"], "answer": answer}),
        Some(token),
    )
    .await;
}

/// Follows a run to its end, confirming every question with `true`; returns the run.
pub async fn run_to_end(d: &TestDaemon, token: &str, run_id: &str) -> Value {
    d.follow(token, run_id, |_| json!(true)).await.done
}

/// Follows a run that asks nothing to its end.
pub async fn wait_run(d: &TestDaemon, token: &str, run_id: &str) -> Value {
    run_to_end(d, token, run_id).await
}

/// Starts `group.recharge` on `sim:city` with `params`, confirms, returns the finished run.
pub async fn run_recharge(d: &TestDaemon, token: &str, params: Value, key: &str) -> Value {
    let start = json!({"flow": "group.recharge", "params": params, "idempotency_key": key, "reader_id": "sim:city"});
    let run = d.ok("flows.start", start, Some(token)).await;
    run_to_end(d, token, run["run_id"].as_str().expect("run_id")).await
}

/// A city one-card with the demo keys, `serial` and `balance_fen`.
pub fn city_card(serial: &str, balance_fen: u32) -> SimCard {
    CityCard::issue(
        &CityCardSpec {
            app_serial: serial.into(),
            balance_fen,
            ..cardd_sim::demo::demo_city_spec()
        },
        &cardd_sim::demo::demo_masters(),
    )
    .unwrap()
    .into()
}

/// Waits until `sim:city` has been quiet for a moment (the daemon's own check of a newly
/// inserted card is done).
pub async fn settle_apdus(world: &cardd_sim::SimWorld) {
    let mut last = world.apdu_count("sim:city");
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let now = world.apdu_count("sim:city");
        if now == last {
            return;
        }
        last = now;
    }
}

/// Waits, without answering anything, until the run has ended (a question already answered
/// may still show while the flow takes the answer); returns the run.
pub async fn wait_ended(d: &TestDaemon, token: &str, run_id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let run = d
            .ok("flows.get", json!({"run_id": run_id}), Some(token))
            .await;
        if !matches!(run["state"].as_str(), Some("running") | Some("waiting")) {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never ended");
}

/// Waits until the audit log (as `token` reads it) holds a record mentioning `what`; returns
/// the audit list. For records the daemon appends after the effect a test saw first (the
/// lost-card watch check is journaled before it is audited).
pub async fn wait_audited(d: &TestDaemon, token: &str, what: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let audit = d.ok("audit.list", json!({"limit": 500}), Some(token)).await;
        if audit.to_string().contains(what) {
            return audit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit record mentions {what}: {audit}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
