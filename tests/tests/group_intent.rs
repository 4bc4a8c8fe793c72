//! Exactly-once per customer intent for group recharge: a CREDIT whose answer is lost (the
//! card executed it, the reader lost the reply) is 结果待确认, never 充值失败; a retry with a
//! new idempotency key is refused naming the pending order; once the card is back the order
//! reads 充值成功 and the card holds the money once, the quota charged once.

mod common;

use cardd_host::group_model::OrderStatus;
use common::group::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_credit_answer_is_pending_blocks_a_retry_and_settles_from_the_card() {
    let world_name = format!("group-intent-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let card_number = "61010000000000000077";
    world.remove_card("sim:city");
    world
        .insert_card("sim:city", city_card(card_number, 0))
        .unwrap();
    settle_apdus(&world).await;
    let opening_quota = quota(&d, &op).await;
    assert_eq!(opening_quota, "500.00");

    // Two clean recharges tell how many exchanges one takes (CREDIT FOR LOAD is the last).
    let mut counts = Vec::new();
    for key in ["intent-warm", "intent-probe"] {
        let before = world.apdu_count("sim:city");
        let run = run_recharge(&d, &op, json!({"amount": "10.00"}), key).await;
        assert_eq!(run["result"]["status"], "ok", "{run}");
        counts.push(world.apdu_count("sim:city") - before);
    }
    let per_recharge = counts.into_iter().min().unwrap();
    let balance_before = world.card("sim:city").unwrap().balance().unwrap();
    assert_eq!(balance_before, 2_000);
    let at = world.apdu_count("sim:city") + per_recharge;
    world
        .set_fault_plan(
            "sim:city",
            cardd_sim::FaultPlan::new().at(at, cardd_sim::FaultKind::RemoveAfterExec),
        )
        .unwrap();

    // The first answer: unknown, and what to do; never 失败.
    let first = run_recharge(&d, &op, json!({"amount": "50.00"}), "intent-1").await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["result"]["status"], "unknown", "{first}");
    let message = first["result"]["message"].as_str().unwrap();
    assert!(
        message.contains("结果待确认")
            && message.contains("请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值")
            && !message.contains("失败"),
        "{message}"
    );
    let order_id = first["result"]["order_id"].as_str().unwrap().to_owned();
    assert!(message.contains(&order_id), "{message}");
    let svc = d.daemon().group.as_ref().unwrap();
    assert_eq!(
        svc.host.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Pending
    );
    // 充值查询 shows it, counted apart from successes and failures.
    let q = d
        .ok("group.orders", json!({"preset": "last_7_days"}), Some(&op))
        .await;
    assert_eq!(q["stats"]["pending_count"], 1, "{q}");
    assert_eq!(q["stats"]["failure_count"], 0, "{q}");
    assert_eq!(q["stats"]["success_count"], 2, "{q}");
    // Not refundable while pending.
    let auditor = d.login("auditor", "audit123").await;
    let (c, m) = d
        .err(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "未到卡"}),
            Some(&auditor),
        )
        .await;
    assert_ne!(c, 0, "{m}");

    // The card comes back and the operator, at once, retries with a new idempotency key: the
    // retry is refused naming the pending order, and loads nothing.
    let card = world.take_pocket("sim:city").unwrap();
    world.insert_card("sim:city", card).unwrap();
    let retry = run_recharge(&d, &op, json!({"amount": "50.00"}), "intent-2").await;
    let retry_message = retry["failure"]["message"].as_str().unwrap_or_default();
    assert_eq!(retry["state"], "failed", "{retry}");
    assert!(retry_message.contains(&order_id), "{retry_message}");
    assert!(retry_message.contains("重复充值"), "{retry_message}");

    // The order reads 充值成功 and the card holds the money once; the quota paid once.
    let mut status = OrderStatus::Pending;
    for _ in 0..100 {
        status = svc.host.order(&order_id).unwrap().unwrap().status;
        if status == OrderStatus::Succeeded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, OrderStatus::Succeeded);
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 7_000);
    assert_eq!(quota(&d, &op).await, "430.00");
    let q = d
        .ok("group.orders", json!({"preset": "last_7_days"}), Some(&op))
        .await;
    assert_eq!(q["stats"]["pending_count"], 0, "{q}");
    assert_eq!(q["stats"]["success_count"], 3, "{q}");

    // A later, new recharge of the settled card goes ahead.
    let next = run_recharge(&d, &op, json!({"amount": "10.00"}), "intent-3").await;
    assert_eq!(next["result"]["status"], "ok", "{next}");
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 8_000);
    assert_eq!(quota(&d, &op).await, "420.00");
    d.stop().await;
}
