//! The crash and card-removal matrices of the flow engine, for any flow that loads a card.
//!
//! A [`Scenario`] names a flow, its parameters, the reader and card it loads, and who runs it:
//! the `card.load` flow on the ETC card ([`CARD_LOAD`]) and the `group.recharge` flow on the
//! city card out of group `G001`'s quota ([`GROUP_RECHARGE`]). [`removal_matrix`] pulls the
//! card at every APDU of the flow, before and after the command executes; [`crash_matrix`]
//! SIGKILLs the whole daemon at every crash point of the load and restarts it on the same data
//! directory. After every case the card's balance change equals the committed loads (at most
//! one per run) and no intent is left open; for a group recharge, the quota, the orders and the
//! card also reconcile ([`reconcile_group`]): every order is settled from the journal, a
//! succeeded order is a committed load, the auditor refunds exactly the failed orders the card
//! proves did not land, and the quota then equals the opening quota minus the committed loads,
//! which is also the sum of the ledger.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cardd::config::Config;
use cardd_journal::crash::CRASH_POINTS;
use cardd_journal::TxnState;
use serde_json::{json, Value};

use super::group::run_to_end;
use super::TestDaemon;

/// A flow that loads one card.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The flow.
    pub flow: &'static str,
    /// Its `amount` parameter (yuan).
    pub amount: &'static str,
    /// The same in fen.
    pub amount_fen: u32,
    /// The reader it runs on.
    pub reader: &'static str,
    /// The card in that reader.
    pub card_number: &'static str,
    /// The card's opening balance, fen.
    pub opening_fen: u32,
    /// Who runs it.
    pub user: &'static str,
    pub password: &'static str,
    /// Whether it is a group recharge (then quota and orders are reconciled too).
    pub group: bool,
}

/// 圈存 on the demo ETC card.
pub const CARD_LOAD: Scenario = Scenario {
    flow: "card.load",
    amount: "20.00",
    amount_fen: 2_000,
    reader: "sim:etc",
    card_number: cardd_sim::demo::DEMO_ETC_CARD_NUMBER,
    opening_fen: cardd_sim::demo::DEMO_ETC_BALANCE_FEN,
    // The unfunded test mode is the administrator's.
    user: "admin",
    password: "admin123",
    group: false,
};

/// 集团充值 on the demo city card, out of group G001's quota.
pub const GROUP_RECHARGE: Scenario = Scenario {
    flow: "group.recharge",
    amount: "10.00",
    amount_fen: 1_000,
    reader: "sim:city",
    card_number: cardd_sim::demo::DEMO_CITY_CARD_NUMBER,
    opening_fen: cardd_sim::demo::DEMO_CITY_BALANCE_FEN,
    user: "group1",
    password: "group123",
    group: true,
};

/// G001's opening quota on the embedded default, fen.
pub const GROUP_OPENING_QUOTA_FEN: i64 = 50_000;

impl Scenario {
    fn start(&self, key: &str) -> Value {
        json!({"flow": self.flow, "params": {"amount": self.amount}, "idempotency_key": key, "reader_id": self.reader})
    }

    fn balance(&self, world: &cardd_sim::SimWorld) -> u32 {
        world.card(self.reader).unwrap().balance().unwrap()
    }
}

/// The committed loads of the scenario's card, in fen.
fn committed(d: &TestDaemon, s: &Scenario) -> u32 {
    d.daemon()
        .journal
        .as_ref()
        .expect("journal")
        .for_card(s.card_number)
        .unwrap()
        .iter()
        .filter(|t| matches!(t.state, TxnState::Committed { .. }))
        .map(|t| t.amount_fen())
        .sum()
}

/// Waits until the journal has no open intent (the daemon settles them from the card).
async fn journal_settles(d: &TestDaemon, what: &str) {
    let journal = d.daemon().journal.as_ref().expect("journal");
    for _ in 0..50 {
        if journal.list_open().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: an intent stayed open");
}

/// Quota, orders and card agree: every order settled from the journal; the auditor refunds
/// the failed orders whose load did not land (and resolves those whose load did); then every
/// succeeded order is a committed load, the quota is the opening quota minus the committed
/// loads, and the ledger sums to the quota. Returns the auditor's refunds and resolutions.
pub async fn reconcile_group(d: &TestDaemon, s: &Scenario, what: &str) -> (usize, usize) {
    cardd::methods::group::reconcile(d.daemon()).unwrap();
    let svc = d.daemon().group.as_ref().expect("group services");
    let open = svc
        .host
        .orders_in(cardd_group::model::OrderStatus::Reserved)
        .unwrap();
    assert!(open.is_empty(), "{what}: orders left reserved: {open:?}");
    let pending = svc
        .host
        .orders_in(cardd_group::model::OrderStatus::Pending)
        .unwrap();
    assert!(
        pending.is_empty(),
        "{what}: orders left 结果待确认 after the card was presented: {pending:?}"
    );
    let auditor = d.login("auditor", "audit123").await;
    let pending = d.ok("group.audit.pending", json!({}), Some(&auditor)).await;
    let mut decisions = (0, 0);
    for ev in pending["orders"].as_array().unwrap() {
        let order_id = ev["order"]["order_id"].clone();
        let method = match ev["verdict"].as_str() {
            Some("not_landed") => {
                decisions.0 += 1;
                "group.audit.refund"
            }
            Some("landed") => {
                decisions.1 += 1;
                "group.audit.resolve"
            }
            other => panic!("{what}: a failed order's evidence is {other:?}: {ev}"),
        };
        d.ok(
            method,
            json!({"order_id": order_id, "reason": "按卡片证据处理"}),
            Some(&auditor),
        )
        .await;
        let (code, _) = d
            .err(
                "group.audit.refund",
                json!({"order_id": order_id, "reason": "again"}),
                Some(&auditor),
            )
            .await;
        assert_ne!(code, 0, "{what}: never refunded twice");
    }
    let journal = d.daemon().journal.as_ref().unwrap();
    let group = svc.host.group("G001").unwrap().unwrap();
    let period = cardd_group::model::Period::preset(
        cardd_group::model::Preset::Last7Days,
        time::OffsetDateTime::now_utc(),
    );
    let mut succeeded = 0i64;
    for order in svc.host.orders("G001", &period).unwrap() {
        let txn = journal.get(&order.txn_id).unwrap();
        let landed = matches!(txn.map(|t| t.state), Some(TxnState::Committed { .. }));
        match order.status {
            cardd_group::model::OrderStatus::Succeeded => {
                assert!(
                    landed,
                    "{what}: order {} succeeded without a committed load",
                    order.order_id
                );
                succeeded += order.amount_fen;
            }
            cardd_group::model::OrderStatus::Refunded => {
                assert!(
                    !landed,
                    "{what}: order {} refunded although its load landed",
                    order.order_id
                )
            }
            other => panic!("{what}: order {} left {other:?}", order.order_id),
        }
    }
    assert_eq!(
        succeeded,
        i64::from(committed(d, s)),
        "{what}: succeeded orders = committed loads"
    );
    assert_eq!(
        group.available_fen,
        GROUP_OPENING_QUOTA_FEN - succeeded,
        "{what}: quota = opening quota - committed loads"
    );
    let ledger: i64 = svc
        .host
        .ledger("G001", 0, 10_000)
        .unwrap()
        .iter()
        .map(|e| e.amount_fen)
        .sum();
    assert_eq!(
        ledger, group.available_fen,
        "{what}: the ledger sums to the quota"
    );
    decisions
}

/// The card pulled at every APDU of the scenario's flow, before the command executes and after
/// it executed with the answer lost; after each case the card is put back and everything
/// reconciles. Returns the number of cases and, for a group recharge, how many failed orders
/// the auditor refunded and resolved as succeeded.
pub async fn removal_matrix(s: &Scenario, world_name: &str) -> (usize, usize, usize) {
    use cardd_sim::{FaultKind, FaultPlan};
    let world_owned = world_name.to_owned();
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": world_owned });
    })
    .await;
    let world = cardd_sim::named_world(world_name).unwrap();
    let token = d.login(s.user, s.password).await;
    // Let the daemon's check of the cards present at start-up finish, then count a clean run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = world.apdu_count(s.reader);
    let run = d.ok("flows.start", s.start("clean"), Some(&token)).await;
    let done = run_to_end(&d, &token, run["run_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let apdus = world.apdu_count(s.reader) - before;
    assert!(apdus >= 8, "the flow sends {apdus} APDUs");
    let mut cases = 0;
    let mut decisions = (0, 0);
    for n in 1..=apdus {
        for kind in [FaultKind::RemoveBeforeExec, FaultKind::RemoveAfterExec] {
            let what = format!("{} n={n} {kind:?}", s.flow);
            let start_balance = s.balance(&world);
            let start_committed = committed(&d, s);
            let at = world.apdu_count(s.reader) + n;
            world
                .set_fault_plan(s.reader, FaultPlan::new().at(at, kind.clone()))
                .unwrap();
            let run = d
                .ok(
                    "flows.start",
                    s.start(&format!("rm-{n}-{kind:?}")),
                    Some(&token),
                )
                .await;
            let first = run_to_end(&d, &token, run["run_id"].as_str().unwrap()).await;
            // The operator puts the card back; the daemon settles any open load by itself.
            if world.card(s.reader).is_none() {
                if let Some(card) = world.take_pocket(s.reader) {
                    world.insert_card(s.reader, card).unwrap();
                }
            }
            // A group operator, told anything but success, retries at once with a new
            // idempotency key (as tellers do): the customer's one intent is paid once.
            let retried = s.group && first["result"]["status"] != "ok";
            if retried {
                let run = d
                    .ok(
                        "flows.start",
                        s.start(&format!("rm-{n}-{kind:?}-retry")),
                        Some(&token),
                    )
                    .await;
                let again = run_to_end(&d, &token, run["run_id"].as_str().unwrap()).await;
                if again["result"]["status"] != "ok" {
                    // Refused because the first attempt is pending or was just settled from
                    // the card: the answer names the order and warns against paying twice.
                    let message = again["failure"]["message"].to_string();
                    assert!(
                        message.contains("GO"),
                        "{what}: the retry names the order: {again}"
                    );
                }
            }
            journal_settles(&d, &what).await;
            let gained = s.balance(&world) - start_balance;
            let booked = committed(&d, s) - start_committed;
            assert_eq!(gained, booked, "{what}: balance change = committed loads");
            assert!(
                booked == 0 || booked == s.amount_fen,
                "{what}: at most one load"
            );
            if retried {
                // Per intent: the first attempt or the retry put the money on the card, once.
                assert_eq!(
                    booked, s.amount_fen,
                    "{what}: the customer's intent is paid exactly once"
                );
            }
            if s.group {
                let (refunds, resolutions) = reconcile_group(&d, s, &what).await;
                decisions = (decisions.0 + refunds, decisions.1 + resolutions);
            }
            cases += 1;
        }
    }
    println!(
        "{} removal matrix: {apdus} APDUs x 2 = {cases} cases; failed orders refunded: {}, resolved as succeeded: {}",
        s.flow, decisions.0, decisions.1
    );
    d.stop().await;
    (cases, decisions.0, decisions.1)
}

fn crash_config(dir: &Path) -> Config {
    let mut config = Config::demo(dir.join("data"));
    config.flows.unfunded_test_loads = true;
    config.readers[0].options =
        json!({ "state_dir": dir.join("cards"), "world": format!("crash-{}", dir.display()) });
    config.flows.dir = Some(cardd::flows::default_dir());
    config
}

pub async fn start_crash_daemon(dir: &Path) -> TestDaemon {
    let dir = dir.to_path_buf();
    TestDaemon::start_with(move |c| *c = crash_config(&dir)).await
}

/// The child of [`crash_matrix`]: runs the scenario's flow once and prints `ACK` when it
/// succeeded (a crash point may kill it first).
async fn crash_child(s: &Scenario, dir: &Path) {
    let d = start_crash_daemon(dir).await;
    let token = d.login(s.user, s.password).await;
    let run = d.ok("flows.start", s.start("crash-k1"), Some(&token)).await;
    let done = run_to_end(&d, &token, run["run_id"].as_str().unwrap()).await;
    if done["state"] == "succeeded" {
        println!("ACK");
    }
    d.stop().await;
}

/// Kills the daemon at every crash point of the scenario's load (the test `test_name` re-runs
/// itself as the child with `CARDD_DAEMON_CRASH_DIR` set), restarts it, re-sends the start and
/// checks. Returns how many crash points killed the daemon.
pub async fn crash_matrix(s: &Scenario, test_name: &str) -> usize {
    if let Some(dir) = std::env::var_os("CARDD_DAEMON_CRASH_DIR") {
        crash_child(s, Path::new(&dir)).await;
        return 0;
    }
    let mut crashed = 0;
    for point in CRASH_POINTS.iter().filter(|p| !p.starts_with("recovery")) {
        let tmp = tempfile::tempdir().unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test_name, "--nocapture"])
            .env("CARDD_DAEMON_CRASH_DIR", tmp.path())
            .env("CARDD_CRASH_AT", format!("{point}:1"))
            .output()
            .unwrap();
        let acked = String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|l| l == "ACK");
        if !output.status.success() {
            // Killed by the crash point's SIGKILL, not by a panic or an abort.
            assert_eq!(
                output.status.signal(),
                Some(9),
                "{point}: {:?}",
                output.status
            );
            crashed += 1;
        }
        check_after_restart(s, tmp.path(), acked, point).await;
    }
    println!(
        "{} daemon crash matrix: {crashed} crash points killed the daemon mid-flow",
        s.flow
    );
    assert!(crashed >= 6, "the crash points must be reached ({crashed})");
    crashed
}

async fn check_after_restart(s: &Scenario, dir: &Path, acked: bool, point: &str) {
    let d = start_crash_daemon(dir).await;
    let world = cardd_sim::named_world(&format!("crash-{}", dir.display())).unwrap();
    assert!(
        d.daemon().journal.is_some(),
        "{point}: the journal verifies after a crash"
    );
    // Start-up recovery settles the card's open load by itself.
    journal_settles(&d, point).await;
    // The client re-sends its start: the same run, never a second credit.
    let token = d.login(s.user, s.password).await;
    let before = s.balance(&world);
    let again = d
        .call("flows.start", s.start("crash-k1"), Some(&token))
        .await;
    if let Some(run) = again.get("result") {
        if !matches!(
            run["state"].as_str(),
            Some("interrupted") | Some("succeeded") | Some("failed") | Some("cancelled")
        ) {
            run_to_end(&d, &token, run["run_id"].as_str().unwrap()).await;
        }
    }
    let balance = s.balance(&world);
    assert_eq!(
        balance, before,
        "{point}: a re-sent start must return the same run, never load again"
    );
    assert_eq!(
        again["result"]["idempotency_key"], "crash-k1",
        "{point}: the same run came back: {again}"
    );
    let committed = committed(&d, s);
    assert_eq!(
        balance - s.opening_fen,
        committed,
        "{point}: the card's balance change equals the committed loads"
    );
    assert!(committed <= s.amount_fen, "{point}: loaded at most once");
    if acked {
        assert_eq!(
            committed, s.amount_fen,
            "{point}: an acknowledged load is committed"
        );
    }
    if s.group {
        reconcile_group(&d, s, point).await;
    }
    d.stop().await;
}
