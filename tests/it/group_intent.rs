//! Exactly-once per customer intent for group recharge: a CREDIT whose answer is lost (the
//! card executed it, the reader lost the reply) is 结果待确认, never 充值失败; a retry with a
//! new idempotency key is refused naming the pending order; once the card is back the order
//! reads 充值成功 and the card holds the money once, the quota charged once.

use crate::common;

use cardd_api::ErrorCode;
use cardd_group::model::OrderStatus;
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

/// A card that will not come back (lost, broken, PIN-blocked): after the waiting period a
/// supervisor proposes a verdict and an auditor, another person, confirms it; whoever took part
/// does not also approve the refund; the card goes on the watch list, and when it turns up
/// after all it is checked against the verdict before anything else: a card that contradicts
/// the verdict takes no new recharge until an auditor has dealt with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_card_is_settled_by_two_people_and_checked_when_it_comes_back() {
    let world_name = format!("group-lost-{}", std::process::id());
    let d = start_group_daemon(&world_name, |c| {
        c.lost_card_wait = std::time::Duration::ZERO;
    })
    .await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let card_number = "61010000000000000078";
    world.remove_card("sim:city");
    world
        .insert_card("sim:city", city_card(card_number, 0))
        .unwrap();
    settle_apdus(&world).await;
    let before = world.apdu_count("sim:city");
    let warm = run_recharge(&d, &op, json!({"amount": "10.00"}), "lost-warm").await;
    assert_eq!(warm["result"]["status"], "ok", "{warm}");
    let per_recharge = world.apdu_count("sim:city") - before;
    let at = world.apdu_count("sim:city") + per_recharge;
    world
        .set_fault_plan(
            "sim:city",
            cardd_sim::FaultPlan::new().at(at, cardd_sim::FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let first = run_recharge(&d, &op, json!({"amount": "50.00"}), "lost-1").await;
    assert_eq!(first["result"]["status"], "unknown", "{first}");
    let order_id = first["result"]["order_id"].as_str().unwrap().to_owned();
    // The card is lost: it stays out of the reader.
    let card = world.take_pocket("sim:city").expect("the pulled card");
    let svc = d.daemon().group.as_ref().unwrap();
    assert_eq!(
        svc.host.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Pending
    );

    let supervisor = d.login("supervisor", "super123").await;
    let auditor = d.login("auditor", "audit123").await;
    let open = d.ok("journal.open", json!({}), Some(&supervisor)).await;
    let row = open
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["card_number"] == card_number)
        .unwrap_or_else(|| panic!("{open}"))
        .clone();
    let txn_id = row["txn_id"].as_str().unwrap().to_owned();
    assert!(
        row["lost_card_allowed_from"].as_str().unwrap().len() > 10,
        "{row}"
    );

    // A person's plain verdict is not the way for an intent; the lost-card way needs two.
    let (c, m) = d
        .err(
            "journal.propose_lost_card",
            json!({"txn_id": txn_id, "landed": false, "reason": "  "}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(c, code(ErrorCode::InvalidParams), "{m}");
    let (c, m) = d
        .err(
            "journal.propose_lost_card",
            json!({"txn_id": txn_id, "landed": false, "reason": "卡片遗失"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::Forbidden),
        "an auditor does not propose: {m}"
    );
    // The supervisor proposes "not landed" (the card in fact holds the money: the watch list
    // exists for verdicts like this one).
    let proposed = d
        .ok(
            "journal.propose_lost_card",
            json!({"txn_id": txn_id, "landed": false, "reason": "客户挂失，卡片遗失，无法读卡"}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(proposed["status"], "proposed", "{proposed}");
    assert_eq!(
        (
            proposed["proposed_by"].as_str(),
            proposed["proposed_by_name"].as_str()
        ),
        (Some("supervisor"), Some("主管老李")),
        "the proposer by user name and by the name people read: {proposed}"
    );
    let (c, m) = d
        .err(
            "journal.confirm_lost_card",
            json!({"txn_id": txn_id, "landed": false}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::Forbidden),
        "the proposer does not confirm: {m}"
    );
    let (c, m) = d
        .err(
            "journal.confirm_lost_card",
            json!({"txn_id": txn_id, "landed": true}),
            Some(&auditor),
        )
        .await;
    assert_eq!(c, code(ErrorCode::EvidenceConflict), "{m}");
    assert_eq!(
        svc.host.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Pending,
        "nothing settled yet"
    );
    let confirmed = d
        .ok(
            "journal.confirm_lost_card",
            json!({"txn_id": txn_id, "landed": false}),
            Some(&auditor),
        )
        .await;
    assert_eq!(confirmed["state"], "not_applied", "{confirmed}");
    assert_eq!(
        svc.host.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Failed
    );
    let open = d.ok("journal.open", json!({}), Some(&supervisor)).await;
    assert!(!open.to_string().contains(&txn_id), "{open}");
    // Whoever took part in the verdict does not approve the refund: a third person does.
    let (c, m) = d
        .err(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "挂失核定未到卡"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(c, code(ErrorCode::Forbidden), "{m}");
    assert!(m.contains("另一位"), "{m}");
    let admin = d.login("admin", "admin123").await;
    d.ok(
        "operators.create",
        json!({"username": "auditor2", "display_name": "审核员二", "role": "auditor", "group_id": null, "password": "audit2pw"}),
        Some(&admin),
    )
    .await;
    let auditor2 = d.login("auditor2", "audit2pw").await;
    d.ok(
        "group.audit.refund",
        json!({"order_id": order_id, "reason": "挂失核定未到卡"}),
        Some(&auditor2),
    )
    .await;

    // The card turns up after all, holding the money: it is checked against the verdict
    // first, found to contradict it, and refused until an auditor has dealt with it.
    assert_eq!(card.balance().unwrap(), 6_000, "the load had landed");
    world.insert_card("sim:city", card).unwrap();
    let mut status = String::new();
    // Waits for the daemon's own check of the card (a busy machine may take a while).
    for _ in 0..600 {
        let lost = d.ok("journal.lost_cards", json!({}), Some(&auditor)).await;
        status = lost[0]["status"].as_str().unwrap_or_default().to_owned();
        if status == "card_contradicted" {
            assert_eq!(lost[0]["card_shows"], "landed", "{lost}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "card_contradicted");
    // The check is audited too (appended after the journal records it).
    wait_audited(&d, &auditor, "card_contradicted").await;
    let retry = run_recharge(&d, &op, json!({"amount": "10.00"}), "lost-2").await;
    assert_eq!(retry["state"], "failed", "{retry}");
    let message = retry["failure"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("挂失核定"), "{message}");
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 6_000);
    // The auditor records how it was dealt with; the card takes recharges again.
    let (c, m) = d
        .err(
            "journal.clear_watch",
            json!({"txn_id": txn_id, "reason": ""}),
            Some(&auditor),
        )
        .await;
    assert_eq!(c, code(ErrorCode::InvalidParams), "{m}");
    let cleared = d
        .ok(
            "journal.clear_watch",
            json!({"txn_id": txn_id, "reason": "已与集团核对，退回的额度已重新扣减"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(cleared["status"], "cleared", "{cleared}");
    let next = run_recharge(&d, &op, json!({"amount": "10.00"}), "lost-3").await;
    assert_eq!(next["result"]["status"], "ok", "{next}");
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 7_000);
    d.stop().await;
}

fn code(c: ErrorCode) -> i64 {
    i64::from(c.code())
}

/// `GET /health`'s status.
async fn health(d: &common::TestDaemon) -> serde_json::Value {
    let reply = d
        .raw(format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    reply.json()["status"].clone()
}

/// The group's orders of the last days.
fn all_orders(d: &common::TestDaemon) -> Vec<cardd_group::model::RechargeOrder> {
    let svc = d.daemon().group.as_ref().unwrap();
    let period = cardd_group::model::Period::preset(
        cardd_group::model::Preset::Last7Days,
        time::OffsetDateTime::now_utc(),
    );
    svc.host.orders("G001", &period).unwrap()
}

fn committed(d: &common::TestDaemon, txn_id: &str) -> bool {
    let txn = d.daemon().journal.as_ref().unwrap().get(txn_id).unwrap();
    matches!(
        txn.map(|t| t.state),
        Some(cardd_journal::TxnState::Committed { .. })
    )
}

/// The journal's flush fails at every durable flush after the operator confirmed a
/// `group.recharge` (skipping `k` of them), among them the flush of the load's outcome right
/// after the card answered CREDIT. That one is answered 结果待确认 with what to do (never
/// 失败), its order is 结果待确认, and the daemon fails closed (health, money methods refused).
/// After a restart on the same data directory the card is presented: the order reads
/// 充值成功, the money is on the card once and the quota charged once, and the operator's
/// retry with a new key is refused. For every other failed flush, 充值失败 is shown only for
/// money that did not reach the card, and after the restart the customer's intent is paid
/// exactly once: the quota spent is the succeeded and the refundable orders, and the auditor
/// refunds exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_after_credit_is_pending_fails_closed_and_settles_once_after_a_restart() {
    let (mut after_credit, mut refused_answers) = (0, 0);
    // Data directories of daemons whose run still waits for its refused answer.
    let mut kept = Vec::new();
    let mut k = 0;
    loop {
        assert!(k < 16, "the flushes of one recharge never ran out");
        let what = format!("flush {k} after the confirmation fails");
        let tmp = tempfile::tempdir().unwrap();
        let world_name = format!("group-flush-{}-{k}", std::process::id());
        let config = {
            let (dir, world) = (tmp.path().to_path_buf(), world_name.clone());
            move |c: &mut cardd::config::Config| {
                c.data_dir = dir.join("data");
                c.readers[0].options = json!({ "world": world, "state_dir": dir.join("cards") });
            }
        };
        let d = common::TestDaemon::start_with(config.clone()).await;
        let world = cardd_sim::named_world(&world_name).unwrap();
        let op = group_login(&d, "G001", "group1", "group123").await;
        let card_number = "61010000000000000088";
        world.remove_card("sim:city");
        world
            .insert_card("sim:city", city_card(card_number, 0))
            .unwrap();
        settle_apdus(&world).await;
        let balance = |w: &cardd_sim::SimWorld| w.card("sim:city").unwrap().balance().unwrap();

        let start = json!({"flow": "group.recharge", "params": {"amount": "10.00"}, "idempotency_key": "flush-1", "reader_id": "sim:city"});
        let run = d.ok("flows.start", start, Some(&op)).await;
        let run_id = run["run_id"].as_str().unwrap().to_owned();
        let prompt = wait_prompt(&d, &op, &run_id, 0).await;
        d.daemon().store.fail_flushes_for_test(k, 1);
        let answered = d
            .call(
                "flows.answer",
                json!({"run_id": run_id, "prompt_id": prompt["prompt_id"], "answer": true}),
                Some(&op),
            )
            .await;
        // The confirmation could not be audited: nothing was done. (Other writers, such as the
        // audit log's periodic summary, may take a flush first: then the failure lands later
        // and the run is followed like every other case below.)
        if answered.get("error").is_some() && all_orders(&d).is_empty() {
            assert_eq!(balance(&world), 0, "{what}: {answered}");
            assert_eq!(health(&d).await, "failed_closed", "{what}");
            refused_answers += 1;
            d.stop().await;
            kept.push(tmp);
            k += 1;
            continue;
        }
        let done = wait_ended(&d, &op, &run_id).await;
        if d.daemon().store.failed_closed().is_none() {
            // Every flush of the recharge and its run succeeded: nothing left to break.
            assert_eq!(done["result"]["status"], "ok", "{what}: {done}");
            d.daemon().store.fail_flushes_for_test(0, 0);
            d.stop().await;
            break;
        }
        let gained = balance(&world);
        let message = done["result"]["message"]
            .as_str()
            .or(done["failure"]["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        let ok = done["result"]["status"] == "ok";
        if message.contains("充值失败") {
            assert_eq!(
                gained, 0,
                "{what}: 充值失败 with the money on the card: {message}"
            );
        }
        if gained > 0 {
            assert_eq!(gained, 1_000, "{what}");
            assert!(
                !message.contains("失败"),
                "{what}: money on the card shown as failed: {message}"
            );
            if !ok {
                assert!(
                    (message.contains("结果待确认") || message.contains("卡片已充值成功"))
                        && message.contains("切勿重复充值"),
                    "{what}: {message}"
                );
            }
            for order in all_orders(&d) {
                assert!(
                    !matches!(order.status, OrderStatus::Failed | OrderStatus::Refunded),
                    "{what}: refundable with its money on the card: {order:?}"
                );
            }
        }
        let journal_open = !d
            .daemon()
            .journal
            .as_ref()
            .unwrap()
            .list_open()
            .unwrap()
            .is_empty();
        if journal_open && gained > 0 {
            after_credit += 1;
            assert_eq!(done["result"]["status"], "unknown", "{what}: {done}");
            assert!(
                message.contains("充值结果待确认")
                    && message
                        .contains("请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值"),
                "{what}: {message}"
            );
            let orders = all_orders(&d);
            assert_eq!(orders.len(), 1, "{what}");
            assert_eq!(orders[0].status, OrderStatus::Pending, "{what}: 结果待确认");
        }
        // The daemon failed closed: health says so and money methods are refused.
        assert!(d.daemon().failed_closed(), "{what}");
        assert_eq!(health(&d).await, "failed_closed", "{what}");
        let failed_closed = i64::from(cardd_api::ErrorCode::FailedClosed.code());
        let retry = json!({"flow": "group.recharge", "params": {"amount": "10.00"}, "idempotency_key": "flush-2", "reader_id": "sim:city"});
        let (code, _) = d.err("flows.start", retry, Some(&op)).await;
        assert_eq!(code, failed_closed, "{what}");
        let (code, _) = d
            .err(
                "group.batch.create",
                json!({"items": [{"card_number": card_number, "amount": "10"}]}),
                Some(&op),
            )
            .await;
        assert_eq!(code, failed_closed, "{what}");

        // The operator keeps the card; the daemon is restarted on the same data.
        let card = world.remove_card("sim:city").expect("the card");
        let gone = std::sync::Arc::downgrade(d.daemon());
        d.stop().await;
        for _ in 0..250 {
            if gone.upgrade().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            gone.upgrade().is_none(),
            "{what}: the stopped daemon is released"
        );
        let d = common::TestDaemon::start_again_with(config).await;
        let world = cardd_sim::named_world(&world_name).unwrap();
        assert!(!d.daemon().failed_closed(), "{what}: a restart reopens");
        assert_eq!(health(&d).await, "ok", "{what}");
        let op = group_login(&d, "G001", "group1", "group123").await;
        // The card is presented: its load is settled from the card, the order follows.
        world.insert_card("sim:city", card).unwrap();
        settle_apdus(&world).await;
        let journal = d.daemon().journal.as_ref().unwrap();
        for _ in 0..100 {
            cardd::methods::group::reconcile(d.daemon()).unwrap();
            if journal.list_open().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(journal.list_open().unwrap().is_empty(), "{what}: settled");
        cardd::methods::group::reconcile(d.daemon()).unwrap();
        let orders = all_orders(&d);
        if gained > 0 {
            assert_eq!(orders.len(), 1, "{what}");
            assert_eq!(
                orders[0].status,
                OrderStatus::Succeeded,
                "{what}: {orders:?}"
            );
            if !ok && !message.contains("卡片已充值成功") {
                // The operator told the result is unknown retries with a new key: refused.
                let retry = run_recharge(&d, &op, json!({"amount": "10.00"}), "flush-3").await;
                assert_ne!(
                    retry["result"]["status"], "ok",
                    "{what}: paid twice: {retry}"
                );
            }
        } else {
            for order in &orders {
                assert!(
                    matches!(order.status, OrderStatus::Failed),
                    "{what}: nothing on the card, the order is refundable: {order:?}"
                );
            }
            let retry = run_recharge(&d, &op, json!({"amount": "10.00"}), "flush-3").await;
            assert_eq!(retry["result"]["status"], "ok", "{what}: {retry}");
        }
        // Per intent: the money on the card once, equal to the succeeded orders.
        let orders = all_orders(&d);
        let succeeded: i64 = orders
            .iter()
            .filter(|o| o.status == OrderStatus::Succeeded)
            .map(|o| o.amount_fen)
            .sum();
        let refundable: i64 = orders
            .iter()
            .filter(|o| o.status == OrderStatus::Failed)
            .map(|o| o.amount_fen)
            .sum();
        assert_eq!(
            balance(&world),
            1_000,
            "{what}: the money is on the card once"
        );
        assert_eq!(succeeded, 1_000, "{what}: {orders:?}");
        for order in &orders {
            assert_eq!(
                committed(&d, &order.txn_id),
                order.status == OrderStatus::Succeeded,
                "{what}: {order:?}"
            );
        }
        let svc = d.daemon().group.as_ref().unwrap();
        let available = || svc.host.group("G001").unwrap().unwrap().available_fen;
        assert_eq!(
            50_000 - available(),
            succeeded + refundable,
            "{what}: quota spent"
        );
        let auditor = d.login("auditor", "audit123").await;
        let pending = d.ok("group.audit.pending", json!({}), Some(&auditor)).await;
        for ev in pending["orders"].as_array().unwrap() {
            assert_eq!(ev["verdict"], "not_landed", "{what}: {ev}");
            d.ok(
                "group.audit.refund",
                json!({"order_id": ev["order"]["order_id"], "reason": "按卡片证据处理"}),
                Some(&auditor),
            )
            .await;
        }
        assert_eq!(
            available(),
            50_000 - 1_000,
            "{what}: the quota charged once"
        );
        d.stop().await;
        k += 1;
    }
    println!("{k} flushes after the confirmation failed in turn: {refused_answers} refused the confirmation, {after_credit} came right after CREDIT");
    assert_eq!(
        after_credit, 1,
        "the flush right after CREDIT was reached once"
    );
}
