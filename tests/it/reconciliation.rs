//! Loads nobody could decide from the card, and a person's verdict: `journal.open` lists them,
//! `journal.resolve` records the verdict of a supervisor or auditor with a reason, and the group
//! order and the ETC recharge record hanging on the load follow it at once. A load still in
//! `intent` is refused: presenting its card decides it.

use crate::common;

use cardd_api::ErrorCode;
use cardd_journal::TxnState;
use cardd_sim::{FaultKind, FaultPlan};
use common::TestDaemon;
use serde_json::json;

/// A daemon whose `group.recharge` of 10.00 lost its CREDIT to `kind` (the card pulled at
/// CREDIT, into the reader's pocket), after one clean recharge: the daemon, its world, the
/// group operator's token and the finished run (结果待确认).
async fn lost_group_load(
    prefix: &str,
    kind: FaultKind,
) -> (TestDaemon, cardd_sim::SimWorld, String, serde_json::Value) {
    let world_name = format!("{prefix}-{}", std::process::id());
    let w = world_name.clone();
    let d = TestDaemon::start_with(move |c| {
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": w });
    })
    .await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let group = d.login("group1", "group123").await;
    let start = |key: &str| json!({"flow": "group.recharge", "params": {"amount": "10.00"}, "idempotency_key": key, "reader_id": "sim:city"});
    // Where CREDIT is: the last APDU after the confirmation of a clean recharge.
    let mut at_confirm = 0;
    let clean = d
        .drive(&group, start("clean"), |_| {
            at_confirm = world.apdu_count("sim:city");
            json!(true)
        })
        .await
        .done;
    assert_eq!(clean["state"], "succeeded", "{clean}");
    let credit_offset = world.apdu_count("sim:city") - at_confirm;
    let lost = d
        .drive(&group, start("lost"), |_| {
            let at = world.apdu_count("sim:city") + credit_offset;
            world
                .set_fault_plan("sim:city", FaultPlan::new().at(at, kind.clone()))
                .unwrap();
            json!(true)
        })
        .await
        .done;
    assert_eq!(lost["state"], "succeeded", "{lost}");
    assert_eq!(
        lost["result"]["status"], "unknown",
        "结果待确认, never failed: {lost}"
    );
    (d, world, group, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_decides_an_unprovable_load_and_the_group_order_follows() {
    // The card is pulled right after CREDIT; the customer keeps it.
    let (d, world, group, lost) = lost_group_load("reconcile", FaultKind::RemoveAfterExec).await;
    let supervisor = d.login("supervisor", "super123").await;
    let auditor = d.login("auditor", "audit123").await;
    let teller = d.login("teller", "teller123").await;
    let journal = d.daemon().journal.as_ref().unwrap();
    let open = journal.list_open().unwrap();
    assert_eq!(open.len(), 1);
    let txn_id = open[0].txn_id.clone();

    // Still `intent`: the card decides, not a person.
    let (code, message) = d
        .err(
            "journal.resolve",
            json!({"txn_id": txn_id, "landed": true, "reason": "客户称已到账"}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(
        code,
        i64::from(ErrorCode::CardEvidenceRequired.code()),
        "{message}"
    );
    assert!(message.contains("放到读卡器上"), "{message}");

    // Say the card, when it came back, could prove nothing (its counter had moved on).
    journal
        .resolve(
            &txn_id,
            TxnState::NeedsReconciliation {
                reason: "联机交易序号已变化，交易证明不存在".into(),
            },
        )
        .unwrap();
    let listed = d.ok("journal.open", json!({}), Some(&auditor)).await;
    assert_eq!(listed[0]["txn_id"], txn_id);
    assert_eq!(listed[0]["state"], "needs_reconciliation");
    assert_eq!(listed[0]["amount"], "10.00");

    // Tellers may not decide; a reason is required.
    let (code, _) = d
        .err(
            "journal.resolve",
            json!({"txn_id": txn_id, "landed": true, "reason": "x"}),
            Some(&teller),
        )
        .await;
    assert_eq!(code, i64::from(ErrorCode::Forbidden.code()));
    let (code, _) = d
        .err(
            "journal.resolve",
            json!({"txn_id": txn_id, "landed": true, "reason": " "}),
            Some(&auditor),
        )
        .await;
    assert_eq!(code, i64::from(ErrorCode::InvalidParams.code()));

    // The card in hand shows 70.00 (50.00 + two loads): the load did land.
    let in_hand = world.take_pocket("sim:city").unwrap();
    assert_eq!(in_hand.balance(), Some(7_000));
    let resolved = d
        .ok("journal.resolve", json!({"txn_id": txn_id, "landed": true, "reason": "卡内余额 70.00 元，与两笔充值相符"}), Some(&auditor))
        .await;
    assert_eq!(resolved["state"], "committed");
    assert!(journal.list_open().unwrap().is_empty());
    // Decided once.
    let (code, _) = d
        .err(
            "journal.resolve",
            json!({"txn_id": txn_id, "landed": false, "reason": "改判"}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(code, i64::from(ErrorCode::RecordStateConflict.code()));

    // The order was 结果待确认, never failed: the verdict settles it as succeeded, and a
    // refund is refused; the quota paid for both loads once.
    let pending = lost["result"]["order_id"].as_str().unwrap().to_owned();
    let (code, _) = d
        .err(
            "group.audit.refund",
            json!({"order_id": pending, "reason": "退款"}),
            Some(&auditor),
        )
        .await;
    assert_ne!(code, 0, "no refund for a load that landed");
    let orders = d
        .ok(
            "group.orders",
            json!({"preset": "last_7_days"}),
            Some(&group),
        )
        .await;
    let statuses: Vec<&str> = orders["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded"], "{orders}");
    let info = d.ok("group.info", json!({}), Some(&group)).await;
    assert_eq!(info["available_quota"], "480.00", "{info}");
    d.stop().await;
}

/// For a group order, the person who declares a load "not landed" cannot also approve its
/// refund: two different people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declarer_of_not_landed_cannot_approve_the_refund() {
    // The card leaves before CREDIT reaches it; it never comes back (nothing can prove it).
    let (d, _world, _group, lost) =
        lost_group_load("reconcile-two", FaultKind::RemoveBeforeExec).await;
    let auditor = d.login("auditor", "audit123").await;
    let admin = d.login("admin", "admin123").await;
    d.ok(
        "operators.create",
        json!({"username": "auditor2", "display_name": "审核员二", "role": "auditor", "group_id": null, "password": "audit2pw"}),
        Some(&admin),
    )
    .await;
    let auditor2 = d.login("auditor2", "audit2pw").await;
    let order_id = lost["result"]["order_id"].as_str().unwrap().to_owned();
    let journal = d.daemon().journal.as_ref().unwrap();
    let txn_id = journal.list_open().unwrap()[0].txn_id.clone();
    journal
        .resolve(
            &txn_id,
            TxnState::NeedsReconciliation {
                reason: "卡片已遗失".into(),
            },
        )
        .unwrap();
    d.ok(
        "journal.resolve",
        json!({"txn_id": txn_id, "landed": false, "reason": "发卡方核对：未到卡"}),
        Some(&auditor),
    )
    .await;
    let (code, message) = d
        .err(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "退款"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(code, i64::from(ErrorCode::Forbidden.code()), "{message}");
    assert!(message.contains("另一位"), "{message}");
    let refunded = d
        .ok(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "复核后退款"}),
            Some(&auditor2),
        )
        .await;
    assert_eq!(refunded["status"], "refunded", "{refunded}");
    d.stop().await;
}

/// With the card on a reader, a person's verdict that contradicts the card is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_the_card_on_a_reader_contradicts_is_refused() {
    // CREDIT executes, the answer is lost with the card.
    let (d, world, _group, _lost) =
        lost_group_load("reconcile-card", FaultKind::RemoveAfterExec).await;
    let supervisor = d.login("supervisor", "super123").await;
    let journal = d.daemon().journal.as_ref().unwrap();
    let txn_id = journal.list_open().unwrap()[0].txn_id.clone();
    journal
        .resolve(
            &txn_id,
            TxnState::NeedsReconciliation {
                reason: "待人工核对".into(),
            },
        )
        .unwrap();
    // The card is back on the reader: it shows the load landed. Presenting it would settle the
    // load by itself (the card's proof); the reader fails that first attempt, so the load still
    // waits for a person while the card sits on the reader.
    let card = world.take_pocket("sim:city").unwrap();
    world
        .set_fault_plan(
            "sim:city",
            FaultPlan::once(
                world.apdu_count("sim:city") + 1,
                FaultKind::Timeout { executed: false },
            ),
        )
        .unwrap();
    world.insert_card("sim:city", card).unwrap();
    common::group::settle_apdus(&world).await;
    assert!(
        journal.get(&txn_id).unwrap().unwrap().state.is_open(),
        "the first attempt to settle it from the card failed"
    );
    let (code, message) = d
        .err(
            "journal.resolve",
            json!({"txn_id": txn_id, "landed": false, "reason": "客户称未到账"}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(
        code,
        i64::from(ErrorCode::EvidenceConflict.code()),
        "{message}"
    );
    assert!(message.contains("已写入卡内"), "{message}");
    assert!(
        journal.get(&txn_id).unwrap().unwrap().state.is_open(),
        "nothing decided"
    );
    let resolved = d
        .ok(
            "journal.resolve",
            json!({"txn_id": txn_id, "landed": true, "reason": "卡片显示已写入"}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(resolved["state"], "committed");
    d.stop().await;
}
