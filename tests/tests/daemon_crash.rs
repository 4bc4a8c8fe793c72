//! The whole daemon killed at every crash point of a load run by a flow over JSON-RPC, then
//! restarted on the same data directory with the card as it was.
//!
//! The child (this binary with `CARDD_DAEMON_CRASH_DIR` set) starts the daemon on its embedded
//! default with the simulated card saved to disk after every APDU, logs in as a teller, starts
//! the `card.load` flow with an idempotency key, confirms, and prints `ACK` when the run
//! succeeded. `CARDD_CRASH_AT` SIGKILLs the process at a crash point. The parent then starts the
//! daemon again on the same directories, re-presents the card (start-up recovery runs), re-sends
//! the same `flows.start`, and checks: the card's balance changed by exactly the committed
//! loads, at most once; an acknowledged load is committed; no intent is left open.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cardd::config::Config;
use cardd_journal::crash::CRASH_POINTS;
use cardd_journal::TxnState;
use common::TestDaemon;
use serde_json::{json, Value};

const AMOUNT_FEN: u32 = 2_000;

fn config(dir: &Path) -> Config {
    let mut config = Config::demo(dir.join("data"));
    config.readers[0].options =
        json!({ "state_dir": dir.join("cards"), "world": format!("crash-{}", dir.display()) });
    config.flows.dir = Some(cardd::flows::default_dir());
    config
}

async fn start(dir: &Path) -> TestDaemon {
    let dir = dir.to_path_buf();
    TestDaemon::start_with(move |c| *c = config(&dir)).await
}

fn start_request() -> Value {
    json!({"flow": "card.load", "params": {"amount": "20.00"}, "idempotency_key": "crash-k1", "reader_id": "sim:etc"})
}

async fn run_to_end(d: &TestDaemon, token: &str, run_id: &str) -> Value {
    let mut since = 0;
    loop {
        let polled = d
            .ok(
                "flows.events",
                json!({"run_id": run_id, "since": since, "wait_ms": 2000}),
                Some(token),
            )
            .await;
        since = polled["next_since"].as_u64().unwrap();
        if polled["state"] == "waiting" {
            let prompt = polled["prompt"]["prompt_id"].clone();
            d.ok(
                "flows.answer",
                json!({"run_id": run_id, "prompt_id": prompt, "answer": true}),
                Some(token),
            )
            .await;
        }
        if !matches!(polled["state"].as_str(), Some("running") | Some("waiting")) {
            return d
                .ok("flows.get", json!({"run_id": run_id}), Some(token))
                .await;
        }
    }
}

async fn child(dir: &Path) {
    let d = start(dir).await;
    let teller = d.login("teller", "teller123").await;
    let run = d.ok("flows.start", start_request(), Some(&teller)).await;
    let done = run_to_end(&d, &teller, run["run_id"].as_str().unwrap()).await;
    if done["state"] == "succeeded" {
        println!("ACK");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_at_every_crash_point_never_loses_or_doubles_a_load() {
    if let Some(dir) = std::env::var_os("CARDD_DAEMON_CRASH_DIR") {
        child(Path::new(&dir)).await;
        return;
    }
    let mut crashed = 0;
    for point in CRASH_POINTS.iter().filter(|p| !p.starts_with("recovery")) {
        let tmp = tempfile::tempdir().unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "daemon_killed_at_every_crash_point_never_loses_or_doubles_a_load",
                "--nocapture",
            ])
            .env("CARDD_DAEMON_CRASH_DIR", tmp.path())
            .env("CARDD_CRASH_AT", format!("{point}:1"))
            .output()
            .unwrap();
        let acked = String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|l| l == "ACK");
        if !output.status.success() {
            // Killed by the crash point's SIGKILL, not by a panic or an abort.
            assert_eq!(output.status.signal(), Some(9), "{point}: {:?}", output.status);
            crashed += 1;
        }
        check_after_restart(tmp.path(), acked, point).await;
    }
    println!(
        "daemon crash matrix: {crashed} of the load's crash points killed the daemon mid-flow"
    );
    assert!(crashed >= 6, "the crash points must be reached ({crashed})");
}

async fn check_after_restart(dir: &Path, acked: bool, point: &str) {
    let d = start(dir).await;
    let world = cardd_sim::named_world(&format!("crash-{}", dir.display())).unwrap();
    let journal = d
        .daemon()
        .journal
        .as_ref()
        .expect("the journal verifies after a crash");
    // Start-up recovery settles the card's open load by itself.
    for _ in 0..50 {
        if journal.list_open().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        journal.list_open().unwrap().is_empty(),
        "{point}: no intent left open"
    );
    // The client re-sends its start: the same run, never a second credit.
    let teller = d.login("teller", "teller123").await;
    let before = world.card("sim:etc").unwrap().balance().unwrap();
    let again = d.call("flows.start", start_request(), Some(&teller)).await;
    if let Some(run) = again.get("result") {
        if !matches!(
            run["state"].as_str(),
            Some("interrupted") | Some("succeeded") | Some("failed") | Some("cancelled")
        ) {
            run_to_end(&d, &teller, run["run_id"].as_str().unwrap()).await;
        }
    }
    let balance = world.card("sim:etc").unwrap().balance().unwrap();
    assert_eq!(
        balance, before,
        "{point}: a re-sent start must return the same run, never load again"
    );
    assert_eq!(
        again["result"]["idempotency_key"], "crash-k1",
        "{point}: the same run came back: {again}"
    );
    let committed: u32 = journal
        .for_card(cardd_sim::demo::DEMO_ETC_CARD_NUMBER)
        .unwrap()
        .iter()
        .filter(|t| matches!(t.state, TxnState::Committed { .. }))
        .map(|t| t.amount_fen())
        .sum();
    assert_eq!(
        balance - 10_000,
        committed,
        "{point}: the card's balance change equals the committed loads"
    );
    assert!(committed <= AMOUNT_FEN, "{point}: loaded at most once");
    if acked {
        assert_eq!(
            committed, AMOUNT_FEN,
            "{point}: an acknowledged load is committed"
        );
    }
    d.stop().await;
}
