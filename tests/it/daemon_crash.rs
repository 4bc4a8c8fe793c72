//! The whole daemon killed at every crash point of a load run by a flow over JSON-RPC, then
//! restarted on the same data directory with the card as it was.
//!
//! The child (this binary with `CARDD_DAEMON_CRASH_DIR` set) starts the daemon on its embedded
//! default with the simulated cards saved to disk after every APDU, logs in, starts the flow
//! with an idempotency key, confirms, and prints `ACK` when the run succeeded. `CARDD_CRASH_AT`
//! SIGKILLs the process at a crash point. The parent then starts the daemon again on the same
//! directories, re-presents the card (start-up recovery runs), re-sends the same `flows.start`,
//! and checks: the card's balance changed by exactly the committed loads, at most once; an
//! acknowledged load is committed; no intent is left open; for a group recharge, quota, orders
//! and card reconcile (`common::matrix`).

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use cardd::flows::{attach_load_outcomes, FlowEngine, RunState, UNKNOWN_OUTCOME_ZH};
use cardd_journal::crash::CRASH_POINTS;
use cardd_journal::IntentOutcome;
use common::matrix::{crash_matrix, start_crash_daemon, CARD_LOAD, GROUP_RECHARGE};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_at_every_crash_point_never_loses_or_doubles_a_load() {
    crash_matrix(
        &CARD_LOAD,
        "daemon_crash::daemon_killed_at_every_crash_point_never_loses_or_doubles_a_load",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_at_every_crash_point_of_a_group_recharge_reconciles_quota_orders_and_card() {
    crash_matrix(
        &GROUP_RECHARGE,
        "daemon_crash::daemon_killed_at_every_crash_point_of_a_group_recharge_reconciles_quota_orders_and_card",
    )
    .await;
}

/// SIGKILLed right after CREDIT (the card holds the money, the journal still says `intent`),
/// the run is read after the restart: it stays `interrupted`, but never without its money's
/// outcome. Before the card is presented the load is unknown, with what to do and never
/// "failed"; once start-up recovery settled it from the card, the same run shows it credited
/// with the card's balance, and the card holds the money once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_credit_shows_its_load_outcome_after_a_restart() {
    const NAME: &str =
        "daemon_crash::a_run_killed_after_credit_shows_its_load_outcome_after_a_restart";
    if std::env::var_os("CARDD_DAEMON_CRASH_DIR").is_some() {
        // The child: runs the flow once; the crash point kills it after CREDIT.
        crash_matrix(&CARD_LOAD, NAME).await;
        return;
    }
    let s = &CARD_LOAD;
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture"])
        .env("CARDD_DAEMON_CRASH_DIR", tmp.path())
        .env("CARDD_CRASH_AT", "load.after_credit:1")
        .output()
        .unwrap();
    assert_eq!(output.status.signal(), Some(9), "{output:?}");
    assert!(
        !String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|l| l == "ACK"),
        "killed before the answer"
    );

    // Before any daemon or reader sees the card again: the run, read as the restarted daemon
    // reads it, names its load as unknown.
    let run_id = {
        let store = cardd_journal::Store::open(&tmp.path().join("data").join("store")).unwrap();
        let journal = cardd_journal::Journal::open(&store).unwrap();
        let open = journal
            .open_for_card(s.card_number)
            .unwrap()
            .expect("open intent");
        let run_id = open.txn_id.split_once('#').unwrap().0.to_owned();
        let engine = FlowEngine::open(
            &cardd::flows::default_dir(),
            &store,
            Default::default(),
            Duration::from_secs(60),
            std::sync::Arc::new(cardd::metrics::Metrics::new()),
        )
        .unwrap();
        let mut run = engine.get(&run_id).unwrap();
        assert_eq!(run.state, RunState::Interrupted);
        attach_load_outcomes(&mut run, Some(&journal));
        assert_eq!(run.loads.len(), 1, "{run:?}");
        let load = &run.loads[0];
        assert_eq!(load.txn_id, open.txn_id);
        assert_eq!(load.card_number, s.card_number);
        assert_eq!(load.amount, s.amount);
        assert_eq!(load.outcome, "unknown");
        assert_eq!(load.state, "intent");
        let failure = run.failure.as_ref().expect("a failure message");
        for text in [&load.message, &failure.message] {
            assert!(text.contains(UNKNOWN_OUTCOME_ZH), "{text}");
            assert!(!text.contains("失败"), "unknown is never failed: {text}");
        }
        run_id
    };

    // The daemon restarts with the card on the reader: whatever moment the run is read at, it
    // shows the load, unknown or (once recovery settled it from the card) credited.
    let d = start_crash_daemon(tmp.path()).await;
    let world = cardd_sim::named_world(&format!("crash-{}", tmp.path().display())).unwrap();
    let token = d.login(s.user, s.password).await;
    let first = d
        .ok("flows.get", json!({"run_id": run_id}), Some(&token))
        .await;
    assert_eq!(first["state"], "interrupted", "{first}");
    let outcome = first["loads"][0]["outcome"].as_str().unwrap_or_default();
    assert!(
        matches!(outcome, "unknown" | "credited"),
        "an interrupted run shows its load's outcome: {first}"
    );
    assert!(!first["failure"]["message"]
        .as_str()
        .unwrap()
        .contains("失败"));
    let journal = d.daemon().journal.as_ref().expect("journal");
    for _ in 0..50 {
        if journal.list_open().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        journal.list_open().unwrap().is_empty(),
        "recovery settled the load"
    );

    // Read live: the settlement from the card shows in the same run, via flows.get and via a
    // re-sent start with the same key.
    let settled = d
        .ok("flows.get", json!({"run_id": run_id}), Some(&token))
        .await;
    let again = d
        .ok(
            "flows.start",
            json!({"flow": s.flow, "params": {"amount": s.amount}, "idempotency_key": "crash-k1", "reader_id": s.reader}),
            Some(&token),
        )
        .await;
    let balance = world.card(s.reader).unwrap().balance().unwrap();
    assert_eq!(
        balance,
        s.opening_fen + s.amount_fen,
        "the money is on the card once"
    );
    let after = cardd_api::Fen(i64::from(balance)).to_yuan_string();
    for run in [&settled, &again] {
        assert_eq!(run["run_id"], run_id.as_str(), "{run}");
        assert_eq!(run["state"], "interrupted", "{run}");
        let loads = run["loads"].as_array().unwrap();
        assert_eq!(loads.len(), 1, "{run}");
        assert_eq!(loads[0]["outcome"], "credited", "{run}");
        assert_eq!(loads[0]["state"], "committed", "{run}");
        assert_eq!(loads[0]["balance_after"], after.as_str(), "{run}");
        assert!(loads[0]["tac"].is_string(), "{run}");
        let message = run["failure"]["message"].as_str().unwrap();
        assert!(message.contains("圈存已写入卡内"), "{message}");
        assert!(message.contains(&after), "{message}");
        assert!(!message.contains("失败"), "{message}");
    }
    d.stop().await;
}

/// At every crash point of a load (card load and group recharge), the run read after the
/// restart names exactly the loads the journal holds for it, with the journal's outcome, and
/// once the card settled them the credited ones are exactly the money the card gained. An
/// interrupted run is never shown without what happened to its money, and never as "failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_every_crash_point_an_interrupted_run_shows_what_its_loads_did() {
    const NAME: &str =
        "daemon_crash::at_every_crash_point_an_interrupted_run_shows_what_its_loads_did";
    if let Ok(which) = std::env::var("CARDD_CRASH_SCENARIO") {
        let s = if which == "group" {
            &GROUP_RECHARGE
        } else {
            &CARD_LOAD
        };
        crash_matrix(s, NAME).await;
        return;
    }
    for (which, s) in [("card", &CARD_LOAD), ("group", &GROUP_RECHARGE)] {
        let mut crashed = 0;
        for point in CRASH_POINTS.iter().filter(|p| !p.starts_with("recovery")) {
            let what = format!("{} at {point}", s.flow);
            let tmp = tempfile::tempdir().unwrap();
            let output = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture"])
                .env("CARDD_DAEMON_CRASH_DIR", tmp.path())
                .env("CARDD_CRASH_SCENARIO", which)
                .env("CARDD_CRASH_AT", format!("{point}:1"))
                .output()
                .unwrap();
            if output.status.success() {
                continue; // the point was not reached: the run finished normally
            }
            assert_eq!(output.status.signal(), Some(9), "{what}: {output:?}");
            crashed += 1;
            let d = start_crash_daemon(tmp.path()).await;
            let world = cardd_sim::named_world(&format!("crash-{}", tmp.path().display())).unwrap();
            let journal = d.daemon().journal.as_ref().expect("journal");
            for _ in 0..50 {
                if journal.list_open().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(journal.list_open().unwrap().is_empty(), "{what}: settled");
            let token = d.login(s.user, s.password).await;
            let run = d
                .ok(
                    "flows.start",
                    json!({"flow": s.flow, "params": {"amount": s.amount}, "idempotency_key": "crash-k1", "reader_id": s.reader}),
                    Some(&token),
                )
                .await;
            let run = d
                .ok("flows.get", json!({"run_id": run["run_id"]}), Some(&token))
                .await;
            assert_eq!(run["state"], "interrupted", "{what}: {run}");
            let run_id = run["run_id"].as_str().unwrap();
            let txns = journal
                .with_id_prefix(&format!("{run_id}#"), cardd::flows::RUN_LOADS_MAX)
                .unwrap();
            let loads = run["loads"].as_array().cloned().unwrap_or_default();
            assert_eq!(loads.len(), txns.len(), "{what}: every load shown: {run}");
            let mut credited = 0;
            for txn in &txns {
                let load = loads
                    .iter()
                    .find(|l| l["txn_id"] == txn.txn_id.as_str())
                    .unwrap_or_else(|| panic!("{what}: {} not shown: {run}", txn.txn_id));
                let expected = match IntentOutcome::of(journal, &txn.txn_id) {
                    IntentOutcome::Credited(_) => {
                        credited += txn.amount_fen();
                        "credited"
                    }
                    IntentOutcome::NotCredited(_) => "not_credited",
                    IntentOutcome::Unknown(_) => "unknown",
                };
                assert_eq!(load["outcome"], expected, "{what}: {run}");
            }
            let balance = world.card(s.reader).unwrap().balance().unwrap();
            assert_eq!(
                balance - s.opening_fen,
                credited,
                "{what}: the loads shown as credited are the money the card gained"
            );
            let message = run["failure"]["message"].as_str().unwrap();
            assert!(!message.contains("失败"), "{what}: {message}");
            if credited > 0 {
                assert!(message.contains("圈存已写入卡内"), "{what}: {message}");
            } else if txns.is_empty() {
                assert!(message.contains("卡内金额未变"), "{what}: {message}");
            }
            d.stop().await;
        }
        assert!(
            crashed >= 6,
            "{}: the crash points must be reached ({crashed})",
            s.flow
        );
    }
}
