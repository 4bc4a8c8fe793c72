//! The ETC service over JSON-RPC on the embedded default: recharge records and their query,
//! 圈存 of a record, the refusals (a second load, a wrong, expired or full card), a safe
//! 修改圈存状态 decided by the card, 二次圈存 that never credits twice, and the kiosk.
//!
//! The seed scenario is `a_lost_response_is_found_on_the_card_instead_of_loading_twice`: the
//! card is pulled right after it executed CREDIT (the response is lost), staff ask to set the
//! record back to 未圈存, and cardd finds the load on the card and resolves the record as 已圈存.

use crate::common;

use cardd_api::ErrorCode;
use cardd_sim::{FaultKind, FaultPlan, SimCard};
use common::{on_dir, stop_and_release, Run, TestDaemon};
use serde_json::{json, Value};

const PLATE: &str = "陕A12345";
/// The demo's 未圈存 records of card …0001: 50.00 yuan (newest) and 200.00 yuan.
const R50: &str = "R20240620000001";
const R200: &str = "R20240615000001";
/// The demo's 已圈存 record, loaded before cardd.
const R_OLD: &str = "R20240601000001";
const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;

async fn start(world: &str) -> TestDaemon {
    let world = world.to_owned();
    TestDaemon::start_with(move |c| {
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": world });
    })
    .await
}

fn world(name: &str) -> cardd_sim::SimWorld {
    cardd_sim::named_world(name).unwrap()
}

fn balance(world_name: &str) -> u32 {
    world(world_name)
        .card("sim:etc")
        .and_then(|c| c.balance())
        .unwrap()
}

/// True when the journal has no undecided load.
fn no_open_loads(d: &TestDaemon) -> bool {
    let journal = d.daemon().journal.as_ref().unwrap();
    journal.list_open().unwrap().is_empty()
}

/// A daemon on its own simulated world, and a teller's token.
async fn start_teller(prefix: &str) -> (TestDaemon, String, String) {
    let w = format!("{prefix}-{}", std::process::id());
    let d = start(&w).await;
    let teller = d.login("teller", "teller123").await;
    (d, w, teller)
}

/// The sum of the committed loads of the demo card, in fen.
fn committed_fen(d: &TestDaemon) -> u32 {
    d.daemon()
        .journal
        .as_ref()
        .unwrap()
        .for_card(CARD)
        .unwrap()
        .iter()
        .filter(|t| matches!(t.state, cardd_journal::TxnState::Committed { .. }))
        .map(|t| t.amount_fen())
        .sum()
}

async fn record(d: &TestDaemon, token: &str, id: &str) -> Value {
    d.ok("etc.records.get", json!({ "record_id": id }), Some(token))
        .await
}

/// Starts a flow on `sim:etc` and drives it to the end, answering each prompt with `answer`.
async fn run_flow(
    d: &TestDaemon,
    token: &str,
    flow: &str,
    params: Value,
    key: &str,
    answer: impl FnMut(&Value) -> Value,
) -> Run {
    let start =
        json!({"flow": flow, "params": params, "idempotency_key": key, "reader_id": "sim:etc"});
    d.drive(token, start, answer).await
}

/// Runs `etc.load` on a record, confirming.
async fn load(d: &TestDaemon, token: &str, record_id: &str, key: &str) -> Run {
    run_flow(
        d,
        token,
        "etc.load",
        json!({ "record_id": record_id }),
        key,
        |_| json!(true),
    )
    .await
}

/// Runs `etc.load` on a record and, once the teller confirms, pulls the card at CREDIT
/// (`credit_offset` APDUs after the confirmation) with `kind`.
async fn load_losing_credit(
    d: &TestDaemon,
    token: &str,
    world_name: &str,
    record_id: &str,
    key: &str,
    credit_offset: u64,
    kind: FaultKind,
) -> Run {
    run_flow(
        d,
        token,
        "etc.load",
        json!({ "record_id": record_id }),
        key,
        |_| {
            let w = world(world_name);
            let at = w.apdu_count("sim:etc") + credit_offset;
            w.set_fault_plan("sim:etc", FaultPlan::new().at(at, kind.clone()))
                .unwrap();
            json!(true)
        },
    )
    .await
}

/// Takes the card the fault pulled out of the reader into the teller's hand.
fn card_in_hand(world_name: &str) -> SimCard {
    world(world_name)
        .take_pocket("sim:etc")
        .expect("the pulled card")
}

/// How many APDUs a clean `etc.load` sends after the confirmation: the last one is CREDIT.
async fn apdus_after_confirm(
    d: &TestDaemon,
    token: &str,
    world_name: &str,
    record_id: &str,
) -> u64 {
    let w = world(world_name);
    let mut at_confirm = 0;
    let run = run_flow(
        d,
        token,
        "etc.load",
        json!({ "record_id": record_id }),
        "measure",
        |_| {
            at_confirm = w.apdu_count("sim:etc");
            json!(true)
        },
    )
    .await;
    assert_eq!(run.done["state"], "succeeded", "{}", run.done);
    w.apdu_count("sim:etc") - at_confirm
}

fn expect_code(e: (i64, String), code: ErrorCode, contains: &str) -> String {
    assert_eq!(e.0, i64::from(code.code()), "{e:?}");
    assert!(e.1.contains(contains), "{e:?} should say {contains}");
    e.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recharges_and_the_record_query_show_every_field() {
    let d = start(&format!("etc-query-{}", std::process::id())).await;
    let teller = d.login("teller", "teller123").await;
    let q = |extra: Value| {
        let mut p = json!({ "plate": PLATE, "plate_colour": 0 });
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let page = d.ok("etc.records.query", q(json!({})), Some(&teller)).await;
    assert_eq!(page["total"], 3);
    let ids: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [R50, R200, R_OLD], "newest first");
    let newest = &page["records"][0];
    for (field, value) in [
        ("card_number", json!(CARD)),
        ("plate", json!(PLATE)),
        ("plate_colour_label", json!("蓝色")),
        ("amount", json!("50.00")),
        ("balance_before", Value::Null),
        ("balance_after", Value::Null),
        ("status_label", json!("未圈存")),
    ] {
        assert_eq!(newest[field], value, "{field}: {newest}");
    }
    assert!(newest["recharged_at"].as_str().unwrap().ends_with("+08:00"));
    let old = &page["records"][2];
    assert_eq!(
        (
            old["balance_before"].clone(),
            old["amount"].clone(),
            old["balance_after"].clone(),
            old["status_label"].clone()
        ),
        (
            json!("0.00"),
            json!("100.00"),
            json!("100.00"),
            json!("已圈存")
        )
    );
    // A time range (whole China days) and paging.
    let ranged = d
        .ok(
            "etc.records.query",
            q(json!({"from": "2024-06-10", "to": "2024-06-15"})),
            Some(&teller),
        )
        .await;
    assert_eq!(ranged["total"], 1);
    assert_eq!(ranged["records"][0]["record_id"], R200);
    let second = d
        .ok(
            "etc.records.query",
            q(json!({"page": 2, "page_size": 1})),
            Some(&teller),
        )
        .await;
    assert_eq!(second["records"][0]["record_id"], R200);
    assert_eq!(second["total"], 3);

    // Bad queries change nothing and say what is wrong.
    expect_code(
        d.err(
            "etc.records.query",
            q(json!({"from": "2024-06-20", "to": "2024-06-01"})),
            Some(&teller),
        )
        .await,
        ErrorCode::InvalidParams,
        "晚于",
    );
    expect_code(
        d.err(
            "etc.records.query",
            q(json!({"from": "15/06/2024"})),
            Some(&teller),
        )
        .await,
        ErrorCode::InvalidParams,
        "格式不正确",
    );
    expect_code(
        d.err(
            "etc.records.query",
            json!({"plate": PLATE, "plate_colour": 7}),
            Some(&teller),
        )
        .await,
        ErrorCode::InvalidParams,
        "车牌颜色",
    );
    expect_code(
        d.err(
            "etc.records.query",
            json!({"plate": "京B99999", "plate_colour": 0}),
            Some(&teller),
        )
        .await,
        ErrorCode::HostNotFound,
        "未找到车辆",
    );

    // A recharge creates a 未圈存 record; bad amounts are refused and create nothing.
    let made = d
        .ok(
            "etc.recharge",
            json!({"plate": PLATE, "plate_colour": 0, "amount": "30.00"}),
            Some(&teller),
        )
        .await;
    assert_eq!(made["status"], "not_loaded");
    assert_eq!(made["amount"], "30.00");
    assert_eq!(made["channel"], "银行柜台");
    assert_eq!(made["history"][0]["operator"], "teller");
    for bad in [
        json!("-5"),
        json!("0"),
        json!("abc"),
        json!("1.234"),
        json!(10.5),
        json!("1e3"),
    ] {
        let (code, _) = d
            .err(
                "etc.recharge",
                json!({"plate": PLATE, "plate_colour": 0, "amount": bad}),
                Some(&teller),
            )
            .await;
        assert_eq!(code, i64::from(ErrorCode::InvalidParams.code()), "{bad}");
    }
    let kiosk = d.login("kiosk", "kiosk123").await;
    expect_code(
        d.err(
            "etc.recharge",
            json!({"plate": PLATE, "plate_colour": 0, "amount": "30.00"}),
            Some(&kiosk),
        )
        .await,
        ErrorCode::Forbidden,
        "",
    );
    let page = d.ok("etc.records.query", q(json!({})), Some(&teller)).await;
    assert_eq!(page["total"], 4, "only the good recharge was recorded");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_found_on_the_card_instead_of_loading_twice() {
    let (d, w, teller) = start_teller("etc-seed").await;

    // 圈存 of the 50.00 record, as the app does it: the question, then 圈存成功.
    let first = load(&d, &teller, R50, "seed-1").await;
    assert_eq!(first.done["state"], "succeeded", "{}", first.done);
    assert_eq!(
        first.prompts[0]["message"],
        "卡内余额：100.00元。圈存金额：50.00元。是否圈存？"
    );
    assert_eq!(first.done["result"]["message"], "圈存成功！");
    assert_eq!(first.done["result"]["balance_after"], "150.00");
    let r = record(&d, &teller, R50).await;
    assert_eq!(
        (
            r["status_label"].clone(),
            r["balance_before"].clone(),
            r["balance_after"].clone()
        ),
        (json!("已圈存"), json!("100.00"), json!("150.00"))
    );
    assert_eq!(balance(&w), 15_000);

    // A second load of the same record is refused and changes nothing.
    let again = load(&d, &teller, R50, "seed-2").await;
    assert_eq!(again.done["state"], "failed");
    assert!(
        again.done["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("已圈存"),
        "{}",
        again.done
    );
    assert!(
        again.prompts.is_empty(),
        "nothing is asked for a loaded record"
    );
    assert_eq!(balance(&w), 15_000);

    // Measure where CREDIT is, on a fresh recharge (the last APDU of the load).
    let made = d
        .ok(
            "etc.recharge",
            json!({"plate": PLATE, "plate_colour": 0, "amount": "1.00"}),
            Some(&teller),
        )
        .await;
    let credit_offset =
        apdus_after_confirm(&d, &teller, &w, made["record_id"].as_str().unwrap()).await;
    assert_eq!(balance(&w), 15_100);

    // The 200.00 record: the card is pulled right after it executed CREDIT.
    let lost = load_losing_credit(
        &d,
        &teller,
        &w,
        R200,
        "seed-3",
        credit_offset,
        FaultKind::RemoveAfterExec,
    )
    .await;
    assert_eq!(lost.done["state"], "failed", "{}", lost.done);
    assert!(
        lost.done["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("圈存结果未知"),
        "{}",
        lost.done
    );
    let in_hand = card_in_hand(&w);
    assert_eq!(
        in_hand.balance(),
        Some(35_100),
        "the card did take the credit"
    );
    assert_eq!(record(&d, &teller, R200).await["status_label"], "圈存中");

    // Staff ask for 修改圈存状态 without the card: a teller may not decide without proof.
    expect_code(
        d.err(
            "etc.records.mark_not_loaded",
            json!({"record_id": R200}),
            Some(&teller),
        )
        .await,
        ErrorCode::CardEvidenceRequired,
        "插入读卡器",
    );
    // With the card on the reader, cardd finds the load on the card and refuses.
    world(&w).insert_card("sim:etc", in_hand).unwrap();
    let refusal = d
        .call(
            "etc.records.mark_not_loaded",
            json!({"record_id": R200, "reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    let error = &refusal["error"];
    assert_eq!(error["code"], ErrorCode::LoadLanded.code(), "{refusal}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("卡片证实该笔圈存已写入卡内"), "{message}");
    assert!(message.contains("请勿重复圈存"), "{message}");
    let evidence = &error["data"]["detail"]["evidence"];
    assert_eq!(evidence["verdict"], "landed");
    assert_eq!(evidence["loads"][0]["state"], "committed");
    assert_eq!(evidence["card_log"]["amount"], "200.00");
    // The record is resolved as 已圈存 with the card's balances; the money is on the card once.
    let r = record(&d, &teller, R200).await;
    assert_eq!(
        (
            r["status_label"].clone(),
            r["balance_before"].clone(),
            r["balance_after"].clone()
        ),
        (json!("已圈存"), json!("151.00"), json!("351.00"))
    );
    assert_eq!(balance(&w), 35_100);
    assert_eq!(committed_fen(&d), 5_000 + 100 + 20_000);
    // And 二次圈存 of it is refused.
    let twice = load(&d, &teller, R200, "seed-4").await;
    assert_eq!(twice.done["state"], "failed");
    assert_eq!(balance(&w), 35_100);
    // The refusal is in the audit log, with who asked.
    let admin = d.login("admin", "admin123").await;
    let audit = d
        .ok("audit.list", json!({"limit": 500}), Some(&admin))
        .await;
    let asked: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "etc.records.mark_not_loaded" && a["outcome"] != "started")
        .collect();
    assert_eq!(asked.len(), 2, "{audit}");
    assert!(asked.iter().all(|a| a["operator"] == "teller"));
    assert_eq!(asked[1]["outcome"], "LoadLanded");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_and_full_cards_are_refused_and_change_nothing() {
    let (d, w, teller) = start_teller("etc-refusals").await;
    let masters = cardd_sim::demo::demo_masters();
    let demo_card = |adjust: fn(&mut cardd_sim::cards::EtcCardSpec)| -> SimCard {
        let mut spec = cardd_sim::demo::demo_etc_spec();
        adjust(&mut spec);
        cardd_sim::cards::EtcCard::issue(&spec, &masters)
            .unwrap()
            .into()
    };
    // (card on the reader, what the teller reads, whether the question was asked first)
    let cases: [(&str, SimCard, &str, bool); 3] = [
        (
            "another vehicle's card",
            cardd_sim::demo::demo_etc_card_sm4(),
            "卡号不符",
            false,
        ),
        (
            "expired",
            demo_card(|s| s.expiry_date = [0x20, 0x20, 0x01, 0x01]),
            "卡片已过期（有效期至 2020-01-01）",
            false,
        ),
        (
            "200.00 more would exceed its maximum of 150.00",
            demo_card(|s| s.max_balance_fen = 15_000),
            "余额上限",
            true,
        ),
    ];
    for (case, card, says, asked) in cases {
        world(&w).remove_card("sim:etc");
        world(&w).insert_card("sim:etc", card).unwrap();
        let run = load(&d, &teller, R200, case).await;
        assert_eq!(run.done["state"], "failed", "{case}");
        let message = run.done["failure"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{case}: {message}");
        assert_eq!(!run.prompts.is_empty(), asked, "{case}");
        let on_card = world(&w).card("sim:etc").and_then(|c| c.balance());
        assert_eq!(on_card, Some(10_000), "{case}: the card is unchanged");
    }

    for id in [R200, R50] {
        let r = record(&d, &teller, id).await;
        assert_eq!(r["status_label"], "未圈存", "{r}");
    }
    assert_eq!(committed_fen(&d), 0);
    assert!(no_open_loads(&d), "no load is left undecided");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_card_only_a_supervisor_may_and_the_reload_checks_the_card_first() {
    let (d, w, teller) = start_teller("etc-supervisor").await;
    let supervisor = d.login("supervisor", "super123").await;
    let credit_offset = apdus_after_confirm(&d, &teller, &w, R50).await;
    let start_balance = balance(&w);

    for (kind, landed) in [
        (FaultKind::RemoveAfterExec, true),
        (FaultKind::RemoveBeforeExec, false),
    ] {
        let made = d
            .ok(
                "etc.recharge",
                json!({"plate": PLATE, "plate_colour": 0, "amount": "10.00"}),
                Some(&teller),
            )
            .await;
        let id = made["record_id"].as_str().unwrap().to_owned();
        let before = world(&w).card("sim:etc").unwrap().balance().unwrap();
        let lost = load_losing_credit(
            &d,
            &teller,
            &w,
            &id,
            &format!("lost-{landed}"),
            credit_offset,
            kind.clone(),
        )
        .await;
        assert_eq!(lost.done["state"], "failed");
        // The customer leaves with the card.
        let in_hand = card_in_hand(&w);

        expect_code(
            d.err(
                "etc.records.mark_not_loaded",
                json!({"record_id": id}),
                Some(&teller),
            )
            .await,
            ErrorCode::CardEvidenceRequired,
            "只有主管",
        );
        // A supervisor may decide, with a reason: the same code as the teller's refusal,
        // with `reason_required` telling the console to ask for one and call again.
        let no_reason = d
            .call(
                "etc.records.mark_not_loaded",
                json!({"record_id": id, "reason": "  "}),
                Some(&supervisor),
            )
            .await;
        let no_reason = &no_reason["error"];
        assert_eq!(
            no_reason["data"]["detail"]["reason_required"], true,
            "{no_reason}"
        );
        expect_code(
            (
                no_reason["code"].as_i64().unwrap_or(0),
                no_reason["message"].as_str().unwrap_or("").to_owned(),
            ),
            ErrorCode::CardEvidenceRequired,
            "必须填写原因",
        );
        let marked = d
            .ok(
                "etc.records.mark_not_loaded",
                json!({"record_id": id, "reason": "客户称写卡失败"}),
                Some(&supervisor),
            )
            .await;
        assert_eq!(marked["message"], "修改圈存状态成功！请进行圈存操作");
        assert_eq!(marked["record"]["status_label"], "未圈存");
        assert_eq!(marked["evidence"]["verdict"], "unknown");

        // 二次圈存 when the customer is back: the card is read first.
        world(&w).insert_card("sim:etc", in_hand).unwrap();
        let reload = load(&d, &teller, &id, &format!("reload-{landed}")).await;
        assert_eq!(reload.done["state"], "succeeded", "{}", reload.done);
        assert_eq!(
            reload.done["result"]["already_on_card"]
                .as_bool()
                .unwrap_or(false),
            landed,
            "{}",
            reload.done
        );
        if landed {
            // The card settles the record before anything is asked: no 是否圈存？ with a
            // balance that already holds the money.
            assert!(
                reload.prompts.is_empty(),
                "nothing is asked when the money is on the card: {:?}",
                reload.prompts
            );
            assert!(
                reload.done["result"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("该笔充值已在卡内"),
                "{}",
                reload.done
            );
        } else {
            assert_eq!(reload.prompts.len(), 1, "{:?}", reload.prompts);
            assert_eq!(
                reload.prompts[0]["message"],
                format!(
                    "卡内余额：{}元。圈存金额：10.00元。是否圈存？",
                    cardd_api::Fen(i64::from(before)).to_yuan_string()
                )
            );
        }
        assert_eq!(
            balance(&w),
            before + 1_000,
            "landed={landed}: the money is on the card exactly once"
        );
        let r = record(&d, &teller, &id).await;
        assert_eq!(r["status_label"], "已圈存");
        assert_eq!(
            r["balance_after"],
            cardd_api::Fen(i64::from(before) + 1_000).to_yuan_string()
        );
    }
    assert_eq!(balance(&w) - start_balance, 2_000);
    assert!(no_open_loads(&d), "no load is left undecided");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_proving_a_load_did_not_land_allows_the_change() {
    let (d, w, teller) = start_teller("etc-notlanded").await;
    let credit_offset = apdus_after_confirm(&d, &teller, &w, R50).await;
    // The card leaves before CREDIT reaches it; the customer keeps it.
    let lost = load_losing_credit(
        &d,
        &teller,
        &w,
        R200,
        "lost",
        credit_offset,
        FaultKind::RemoveBeforeExec,
    )
    .await;
    assert_eq!(lost.done["state"], "failed");
    let in_hand = card_in_hand(&w);
    // Elsewhere, someone settled the record as 已圈存 on their word alone.
    let host = d.daemon().host.as_ref().unwrap();
    host.flag_reconciliation(R200, "other-system", "test")
        .unwrap();
    host.resolve_reconciliation(R200, "other-system", true, "以为已写卡")
        .unwrap();
    assert_eq!(record(&d, &teller, R200).await["status_label"], "已圈存");

    // With the card, the evidence proves the load did not land: the change is allowed.
    world(&w).insert_card("sim:etc", in_hand).unwrap();
    let before = balance(&w);
    let marked = d
        .ok(
            "etc.records.mark_not_loaded",
            json!({"record_id": R200, "reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    assert_eq!(
        marked["message"], "修改圈存状态成功！请进行圈存操作",
        "{marked}"
    );
    assert_eq!(marked["evidence"]["verdict"], "not_landed");
    assert!(marked["evidence"]["explanation"]
        .as_str()
        .unwrap()
        .contains("未写入卡内"));
    assert_eq!(marked["record"]["status_label"], "未圈存");
    let history = &marked["record"]["history"];
    let last = &history[history.as_array().unwrap().len() - 1];
    assert_eq!(
        (last["action_label"].clone(), last["operator"].clone()),
        (json!("修改圈存状态"), json!("teller"))
    );

    let reload = load(&d, &teller, R200, "reload").await;
    assert_eq!(reload.done["state"], "succeeded", "{}", reload.done);
    assert_eq!(balance(&w), before + 20_000);
    // Once: a second change is refused now that the card shows the money.
    expect_code(
        d.err(
            "etc.records.mark_not_loaded",
            json!({"record_id": R200, "reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await,
        ErrorCode::LoadLanded,
        "卡片证实",
    );

    // The demo's old record (loaded before cardd): no proof either way, so not a teller's call.
    expect_code(
        d.err(
            "etc.records.mark_not_loaded",
            json!({"record_id": R_OLD, "reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await,
        ErrorCode::CardEvidenceRequired,
        "需主管办理",
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_customer_loads_a_pending_recharge_without_an_operator() {
    let w = format!("etc-kiosk-{}", std::process::id());
    let d = start(&w).await;
    let kiosk = d.login("kiosk", "kiosk123").await;
    let listed = d.ok("flows.list", json!({}), Some(&kiosk)).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"etc.kiosk_load"), "{names:?}");
    assert!(
        !names.contains(&"etc.load"),
        "the counter flow is not the kiosk's"
    );

    // Two pending recharges: the customer picks the 200.00 one, then confirms.
    let run = run_flow(&d, &kiosk, "etc.kiosk_load", json!({}), "k1", |prompt| {
        if prompt["kind"] == "choose" {
            let choice = prompt["choices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c.as_str().unwrap().contains("200.00元"))
                .unwrap()
                .clone();
            return choice;
        }
        json!(true)
    })
    .await;
    assert_eq!(run.done["state"], "succeeded", "{}", run.done);
    assert_eq!(run.prompts.len(), 2);
    assert_eq!(run.prompts[0]["choices"].as_array().unwrap().len(), 2);
    assert!(run.prompts[0]["message"]
        .as_str()
        .unwrap()
        .contains("2 笔待圈存"));
    assert_eq!(
        run.prompts[1]["message"],
        "卡内余额：100.00元。圈存金额：200.00元。是否圈存？"
    );
    // The other recharge still waits: said, and the card is not sent away.
    assert_eq!(run.done["result"]["message"], "圈存成功！");
    assert_eq!(run.done["result"]["pending_left"], 1);
    assert_eq!(balance(&w), 30_000);

    // One left: straight to the question. Declining loads nothing.
    let declined = run_flow(&d, &kiosk, "etc.kiosk_load", json!({}), "k2", |_| {
        json!(false)
    })
    .await;
    assert_eq!(declined.prompts.len(), 1);
    assert_eq!(declined.done["result"]["status"], "cancelled");
    assert_eq!(balance(&w), 30_000);
    let second = run_flow(&d, &kiosk, "etc.kiosk_load", json!({}), "k3", |_| {
        json!(true)
    })
    .await;
    assert_eq!(second.done["result"]["balance_after"], "350.00");
    assert_eq!(second.done["result"]["message"], "圈存成功！请取回卡片");
    assert_eq!(second.done["result"]["pending_left"], 0);
    // None left.
    let none = run_flow(&d, &kiosk, "etc.kiosk_load", json!({}), "k4", |_| {
        json!(true)
    })
    .await;
    assert_eq!(none.done["result"]["status"], "none");
    assert_eq!(none.done["result"]["message"], "该卡没有待圈存的充值记录");
    assert_eq!(balance(&w), 35_000);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_reload_whose_money_is_on_the_card_says_so_without_asking() {
    let (d, w, teller) = start_teller("etc-kiosk-reload").await;
    let supervisor = d.login("supervisor", "super123").await;
    let kiosk = d.login("kiosk", "kiosk123").await;
    let credit_offset = apdus_after_confirm(&d, &teller, &w, R50).await;
    let made = d
        .ok(
            "etc.recharge",
            json!({"plate": PLATE, "plate_colour": 0, "amount": "10.00"}),
            Some(&teller),
        )
        .await;
    let id = made["record_id"].as_str().unwrap().to_owned();
    // The card executes CREDIT but the answer is lost; the customer leaves with the card and
    // staff set the record back to 未圈存.
    let lost = load_losing_credit(
        &d,
        &teller,
        &w,
        &id,
        "lost",
        credit_offset,
        FaultKind::RemoveAfterExec,
    )
    .await;
    assert_eq!(lost.done["state"], "failed");
    let in_hand = card_in_hand(&w);
    let on_card = in_hand.balance().unwrap();
    d.ok(
        "etc.records.mark_not_loaded",
        json!({"record_id": id, "reason": "客户称写卡失败"}),
        Some(&supervisor),
    )
    .await;
    world(&w).insert_card("sim:etc", in_hand).unwrap();

    // At the kiosk the customer picks that recharge: the card settles it before any question.
    let run = run_flow(
        &d,
        &kiosk,
        "etc.kiosk_load",
        json!({}),
        "k-reload",
        |prompt| {
            if prompt["kind"] == "choose" {
                return prompt["choices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c.as_str().unwrap().contains(id.as_str()))
                    .unwrap()
                    .clone();
            }
            json!(true)
        },
    )
    .await;
    assert_eq!(run.done["state"], "succeeded", "{}", run.done);
    assert!(
        run.prompts.iter().all(|p| p["kind"] == "choose"),
        "是否圈存？ is never asked for money already on the card: {:?}",
        run.prompts
    );
    assert_eq!(run.done["result"]["already_on_card"], true, "{}", run.done);
    assert_eq!(
        run.done["result"]["message"],
        "该笔充值已在卡内，无需再次圈存"
    );
    assert_eq!(
        run.done["result"]["pending_left"], 1,
        "the 200.00 still waits"
    );
    assert_eq!(balance(&w), on_card, "the card is credited nothing");
    assert_eq!(record(&d, &teller, &id).await["status_label"], "已圈存");
    // The other pending recharge is still offered, with its question.
    let next = run_flow(&d, &kiosk, "etc.kiosk_load", json!({}), "k-next", |_| {
        json!(false)
    })
    .await;
    assert_eq!(next.prompts.len(), 1, "{:?}", next.prompts);
    assert!(next.prompts[0]["message"]
        .as_str()
        .unwrap()
        .ends_with("圈存金额：200.00元。是否圈存？"));
    assert!(no_open_loads(&d));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_settles_a_record_awaiting_reconciliation_within_the_evidence() {
    let (d, w, teller) = start_teller("etc-resolve").await;
    let supervisor = d.login("supervisor", "super123").await;
    let first = load(&d, &teller, R50, "r1").await;
    assert_eq!(first.done["state"], "succeeded");
    let host = d.daemon().host.as_ref().unwrap();
    host.flag_reconciliation(R50, "other-system", "test")
        .unwrap();
    host.flag_reconciliation(R200, "other-system", "test")
        .unwrap();

    // Tellers may not; a reason is required; the card's evidence bounds the verdict.
    expect_code(
        d.err(
            "etc.records.resolve",
            json!({"record_id": R50, "loaded": false, "reason": "x"}),
            Some(&teller),
        )
        .await,
        ErrorCode::Forbidden,
        "",
    );
    expect_code(
        d.err(
            "etc.records.resolve",
            json!({"record_id": R50, "loaded": false, "reason": ""}),
            Some(&supervisor),
        )
        .await,
        ErrorCode::InvalidParams,
        "原因",
    );
    expect_code(
        d.err("etc.records.resolve", json!({"record_id": R50, "loaded": false, "reason": "客户称未到账", "reader_id": "sim:etc"}), Some(&supervisor)).await,
        ErrorCode::LoadLanded,
        "卡片证实",
    );
    // The evidence check itself put the record right: its load is on the card.
    let r = record(&d, &teller, R50).await;
    assert_eq!(r["status_label"], "已圈存");
    assert_eq!(r["balance_after"], "150.00");

    // R200 never reached the card and nothing proves either way: the supervisor decides.
    let evidence = d
        .ok(
            "etc.records.evidence",
            json!({"record_id": R200, "reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    assert_eq!(evidence["evidence"]["verdict"], "unknown");
    assert_eq!(evidence["evidence"]["card_checked"], true);
    assert_eq!(evidence["evidence"]["card_balance"], "150.00");
    let resolved = d
        .ok(
            "etc.records.resolve",
            json!({"record_id": R200, "loaded": false, "reason": "核对卡内余额，未写入"}),
            Some(&supervisor),
        )
        .await;
    assert_eq!(resolved["status_label"], "未圈存");
    let again = load(&d, &teller, R200, "r2").await;
    assert_eq!(again.done["state"], "succeeded", "{}", again.done);
    assert_eq!(balance(&w), 35_000);
    d.stop().await;
}

/// Waits (bounded) for the daemon to settle a load once its card is presented again.
async fn wait_load_resolved(d: &TestDaemon, token: &str, since: u64) -> Value {
    let mut cursor = since;
    for _ in 0..10 {
        let polled = d
            .ok(
                "events.poll",
                json!({"since": cursor, "wait_ms": 2000}),
                Some(token),
            )
            .await;
        cursor = polled["next_since"].as_u64().unwrap();
        if let Some(e) = polled["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "load_resolved")
        {
            return e.clone();
        }
    }
    panic!("no load_resolved event");
}

/// A teller whose CREDIT answer was lost retries with a new idempotency key, as tellers do:
/// the first answer says the outcome is unknown and what to do, the retry is refused without a
/// second CREDIT, and once the card is back the record reads 已圈存 with the money on the
/// card once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_credit_answer_is_unknown_and_a_retry_with_a_new_key_credits_nothing() {
    let (d, w, teller) = start_teller("etc-intent").await;
    let made = d
        .ok(
            "etc.recharge",
            json!({"plate": PLATE, "plate_colour": 0, "amount": "1.00"}),
            Some(&teller),
        )
        .await;
    let credit_offset =
        apdus_after_confirm(&d, &teller, &w, made["record_id"].as_str().unwrap()).await;
    assert_eq!(balance(&w), 10_100);

    // The card executes CREDIT for R50 and the answer is lost.
    let lost = load_losing_credit(
        &d,
        &teller,
        &w,
        R50,
        "intent-1",
        credit_offset,
        FaultKind::RemoveAfterExec,
    )
    .await;
    assert_eq!(lost.done["state"], "failed", "{}", lost.done);
    let message = lost.done["failure"]["message"].as_str().unwrap();
    assert!(message.contains("圈存结果未知"), "{message}");
    assert!(message.contains("切勿重复"), "{message}");
    assert!(!message.contains("失败"), "{message}");
    let r = record(&d, &teller, R50).await;
    assert_eq!(r["status_label"], "圈存中", "never back to 未圈存: {r}");
    let in_hand = card_in_hand(&w);
    assert_eq!(
        in_hand.balance(),
        Some(15_100),
        "the card did take the credit"
    );

    // The teller retries at once with a new key: refused, naming the record; nothing is sent.
    let retry = load(&d, &teller, R50, "intent-2").await;
    assert_eq!(retry.done["state"], "failed", "{}", retry.done);
    let message = retry.done["failure"]["message"].as_str().unwrap();
    assert!(message.contains(R50), "{message}");
    assert!(message.contains("切勿重复充值"), "{message}");
    assert!(retry.prompts.is_empty(), "nothing is asked");
    assert_eq!(committed_fen(&d), 100);

    // The card is back: the daemon settles the load from the card.
    let since = d
        .ok(
            "events.poll",
            json!({"since": 0, "wait_ms": 0}),
            Some(&teller),
        )
        .await["next_since"]
        .as_u64()
        .unwrap();
    world(&w).insert_card("sim:etc", in_hand).unwrap();
    let resolved = wait_load_resolved(&d, &teller, since).await;
    assert_eq!(resolved["outcome"], "landed", "{resolved}");
    let r = record(&d, &teller, R50).await;
    assert_eq!(
        (
            r["status_label"].clone(),
            r["balance_before"].clone(),
            r["balance_after"].clone()
        ),
        (json!("已圈存"), json!("101.00"), json!("151.00"))
    );
    // Another retry credits nothing: the money is on the card once.
    let again = load(&d, &teller, R50, "intent-3").await;
    assert_eq!(again.done["state"], "failed", "{}", again.done);
    assert_eq!(balance(&w), 15_100);
    assert_eq!(committed_fen(&d), 5_000 + 100);
    assert!(no_open_loads(&d));
    d.stop().await;
}

/// A load the card cannot decide goes to 待核对 (never back to 未圈存), and while it is open no
/// other record of the card is loaded: the refusal names the pending record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecidable_load_awaits_reconciliation_and_blocks_the_cards_other_records() {
    let (d, w, teller) = start_teller("etc-undecided").await;
    let made = d
        .ok(
            "etc.recharge",
            json!({"plate": PLATE, "plate_colour": 0, "amount": "1.00"}),
            Some(&teller),
        )
        .await;
    let credit_offset =
        apdus_after_confirm(&d, &teller, &w, made["record_id"].as_str().unwrap()).await;
    let lost = load_losing_credit(
        &d,
        &teller,
        &w,
        R50,
        "undecided-1",
        credit_offset,
        FaultKind::RemoveBeforeExec,
    )
    .await;
    assert_eq!(lost.done["state"], "failed", "{}", lost.done);
    assert_eq!(record(&d, &teller, R50).await["status_label"], "圈存中");
    // Meanwhile the card's online counter moved without our proof: nothing can be proven.
    let mut card = card_in_hand(&w);
    if let SimCard::Etc(etc) = &mut card {
        let atc = etc.online_atc();
        etc.purse_mut().set_online_atc(atc + 1);
    }
    let since = d
        .ok(
            "events.poll",
            json!({"since": 0, "wait_ms": 0}),
            Some(&teller),
        )
        .await["next_since"]
        .as_u64()
        .unwrap();
    world(&w).insert_card("sim:etc", card).unwrap();
    let resolved = wait_load_resolved(&d, &teller, since).await;
    assert_eq!(resolved["outcome"], "needs_reconciliation", "{resolved}");
    assert_eq!(record(&d, &teller, R50).await["status_label"], "待核对");

    // The card's other pending record is refused, naming R50; nothing is credited.
    let other = load(&d, &teller, R200, "undecided-2").await;
    assert_eq!(other.done["state"], "failed", "{}", other.done);
    let message = other.done["failure"]["message"].as_str().unwrap();
    assert!(message.contains(R50), "{message}");
    assert!(message.contains("切勿重复充值"), "{message}");
    assert_eq!(record(&d, &teller, R200).await["status_label"], "未圈存");
    assert_eq!(balance(&w), 10_100);
    assert_eq!(committed_fen(&d), 100);
    d.stop().await;
}

/// The card pulled at every APDU after the teller's confirmation of `etc.load`, before the
/// command executes and after it executed with the answer lost; the teller, told anything but
/// success, retries at once with a new idempotency key. Per intent (one paid record): the money
/// on the card equals the record's amount if and only if the record reads 已圈存, at most once,
/// and a record the card proves not loaded is 未圈存 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_removal_with_new_key_retries_pays_each_record_at_most_once() {
    let (d, w, teller) = start_teller("etc-intent-matrix").await;
    let offset = apdus_after_confirm(&d, &teller, &w, R50).await;
    let mut cases = 0;
    for k in 1..=offset {
        for kind in [FaultKind::RemoveBeforeExec, FaultKind::RemoveAfterExec] {
            let what = format!("n={k} {kind:?}");
            let made = d
                .ok(
                    "etc.recharge",
                    json!({"plate": PLATE, "plate_colour": 0, "amount": "1.00"}),
                    Some(&teller),
                )
                .await;
            let record_id = made["record_id"].as_str().unwrap().to_owned();
            let before = balance(&w);
            let first = load_losing_credit(
                &d,
                &teller,
                &w,
                &record_id,
                &format!("m-{k}-{kind:?}"),
                k,
                kind.clone(),
            )
            .await;
            let wd = world(&w);
            if wd.card("sim:etc").is_none() {
                if let Some(card) = wd.take_pocket("sim:etc") {
                    wd.insert_card("sim:etc", card).unwrap();
                }
            }
            if first.done["result"]["status"] != "ok" {
                load(&d, &teller, &record_id, &format!("m-{k}-{kind:?}-retry")).await;
            }
            for _ in 0..100 {
                if no_open_loads(&d) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(no_open_loads(&d), "{what}: the card settled every load");
            // Records follow the journal once the card has settled it (the same reader job
            // settles the record right after the journal).
            let mut rec = record(&d, &teller, &record_id).await;
            for _ in 0..100 {
                if rec["status"] != "loading" {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                rec = record(&d, &teller, &record_id).await;
            }
            let gained = balance(&w) - before;
            match rec["status"].as_str() {
                Some("loaded") => assert_eq!(
                    gained, 100,
                    "{what}: 已圈存 = the money on the card once: {rec}"
                ),
                Some("not_loaded") => {
                    assert_eq!(gained, 0, "{what}: 未圈存 = nothing on the card: {rec}")
                }
                other => panic!("{what}: the record is {other:?} after the card settled: {rec}"),
            }
            cases += 1;
        }
    }
    assert!(cases >= 4, "{cases}");
    d.stop().await;
}

/// Waits until `sim:etc` has been quiet for a moment (the daemon's own check of a newly
/// inserted card is done).
async fn etc_reader_quiet(w: &cardd_sim::SimWorld) {
    let mut last = w.apdu_count("sim:etc");
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let now = w.apdu_count("sim:etc");
        if now == last {
            return;
        }
        last = now;
    }
}

/// Puts the card a fault pulled back on the reader; true when there was one to put back.
fn reinsert(w: &cardd_sim::SimWorld) -> bool {
    if w.card("sim:etc").is_some() {
        return false;
    }
    match w.take_pocket("sim:etc") {
        Some(card) => {
            w.insert_card("sim:etc", card).unwrap();
            true
        }
        None => false,
    }
}

/// One kiosk customer's visit: runs `etc.kiosk_load` for `record_id` (picking it when asked,
/// confirming its amount, `amount` yuan).
async fn kiosk_visit(d: &TestDaemon, kiosk: &str, record_id: &str, amount: &str, key: &str) -> Run {
    run_flow(d, kiosk, "etc.kiosk_load", json!({}), key, |prompt| {
        if prompt["kind"] == "choose" {
            return prompt["choices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c.as_str().unwrap().contains(record_id))
                .unwrap_or_else(|| panic!("{record_id} is not offered: {prompt}"))
                .clone();
        }
        let message = prompt["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("圈存金额：{amount}元")),
            "{message}"
        );
        json!(true)
    })
    .await
}

/// The card pulled at every APDU of the kiosk's `etc.kiosk_load` (from the first read of the
/// card to CREDIT), before the command executes and after it executed with the answer lost. The
/// customer, told anything but success, puts the card back and tries again under a new
/// idempotency key, until the kiosk loads the record or says its money is on the card (or that
/// the card has nothing left to load). Per intent (one paid record): every answer that is not
/// success and says 失败 is a load the card did not take, an unknown outcome says so (never
/// 失败); once the card settled, the record reads 已圈存 with its money on the card exactly
/// once, one committed load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_card_removal_with_new_key_retries_pays_each_record_exactly_once() {
    let (d, w, teller) = start_teller("etc-kiosk-matrix").await;
    let kiosk = d.login("kiosk", "kiosk123").await;
    let wd = world(&w);
    // The demo's own pending records go first (at the counter), so each case has one record.
    assert_eq!(
        load(&d, &teller, R200, "pre").await.done["state"],
        "succeeded"
    );
    etc_reader_quiet(&wd).await;
    let before = wd.apdu_count("sim:etc");
    let clean = kiosk_visit(&d, &kiosk, R50, "50.00", "clean").await;
    assert_eq!(clean.done["result"]["status"], "ok", "{}", clean.done);
    let apdus = wd.apdu_count("sim:etc") - before;
    assert!(apdus >= 8, "the kiosk run sends {apdus} APDUs");
    let mut cases = 0;
    let (mut retried, mut unknown, mut failed) = (0, 0, 0);
    for n in 1..=apdus {
        for kind in [FaultKind::RemoveBeforeExec, FaultKind::RemoveAfterExec] {
            let what = format!("kiosk n={n} {kind:?}");
            let made = d
                .ok(
                    "etc.recharge",
                    json!({"plate": PLATE, "plate_colour": 0, "amount": "1.00"}),
                    Some(&teller),
                )
                .await;
            let record_id = made["record_id"].as_str().unwrap().to_owned();
            let start_balance = balance(&w);
            let start_committed = committed_fen(&d);
            let at = wd.apdu_count("sim:etc") + n;
            wd.set_fault_plan("sim:etc", FaultPlan::new().at(at, kind.clone()))
                .unwrap();
            let mut attempt = 0;
            loop {
                attempt += 1;
                assert!(attempt <= 5, "{what}: the customer never got an answer");
                let run =
                    kiosk_visit(&d, &kiosk, &record_id, "1.00", &format!("{what}-{attempt}")).await;
                let result = &run.done["result"];
                if run.done["state"] == "succeeded"
                    && matches!(result["status"].as_str(), Some("ok") | Some("none"))
                {
                    // Loaded now, or the kiosk says the money is on the card already.
                    if reinsert(&wd) {
                        etc_reader_quiet(&wd).await;
                    }
                    break;
                }
                let message = run.done["failure"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let open = !no_open_loads(&d);
                if open {
                    unknown += 1;
                    // The outcome is unknown until the card is back: never 失败.
                    assert!(
                        !message.contains("失败"),
                        "{what}: unknown shown as failed: {message}"
                    );
                    assert!(message.contains("切勿重复"), "{what}: {message}");
                } else if message.contains("失败") {
                    failed += 1;
                    assert_eq!(
                        record(&d, &teller, &record_id).await["status"],
                        "not_loaded",
                        "{what}: 失败 only for a load the card did not take: {message}"
                    );
                    assert_eq!(committed_fen(&d), start_committed, "{what}: {message}");
                }
                // The customer puts the card back and tries again with a new key.
                retried += 1;
                if reinsert(&wd) {
                    etc_reader_quiet(&wd).await;
                }
            }
            for _ in 0..100 {
                if no_open_loads(&d) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(no_open_loads(&d), "{what}: the card settled every load");
            let rec = record(&d, &teller, &record_id).await;
            assert_eq!(rec["status"], "loaded", "{what}: the record is paid: {rec}");
            assert_eq!(
                balance(&w) - start_balance,
                100,
                "{what}: the money is on the card exactly once: {rec}"
            );
            assert_eq!(
                committed_fen(&d) - start_committed,
                100,
                "{what}: one committed load"
            );
            cases += 1;
        }
    }
    println!("kiosk removal matrix: {apdus} APDUs x 2 = {cases} cases, {retried} retries ({unknown} unknown answers, {failed} failures the card proved)");
    assert!(retried >= cases, "every case made the customer retry");
    assert!(unknown > 0, "lost CREDIT answers were exercised");
    d.stop().await;
}

/// `GET /health`'s status.
async fn health(d: &TestDaemon) -> Value {
    let reply = d
        .raw(format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    reply.json()["status"].clone()
}

/// The journal's flush fails at every durable flush after the teller confirmed an `etc.load`
/// (skipping `k` of them), among them the flush of the load's outcome right after the card
/// answered CREDIT. That one is answered as unknown (卡片已响应圈存，但结果未能记录…切勿重复充值,
/// never 失败), the record is 圈存中 (never 未圈存), and the daemon fails closed: health says so
/// and money methods are refused. After a restart on the same data directory the customer
/// presents the card: the load is settled from the card once, the record reads 已圈存, the
/// money is on the card once, and a retry under a new key credits nothing. For every other
/// failed flush, the answer says 失败 only if nothing reached the card, and after the restart
/// the record is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_after_credit_is_unknown_fails_closed_and_settles_once_after_a_restart() {
    let (mut after_credit, mut refused_answers) = (0, 0);
    // Data directories of daemons whose run still waits for its refused answer.
    let mut kept = Vec::new();
    let mut k = 0;
    loop {
        assert!(k < 16, "the flushes of one load never ran out");
        let what = format!("flush {k} after the confirmation fails");
        let tmp = tempfile::tempdir().unwrap();
        let w = format!("etc-flush-{}-{k}", std::process::id());
        let config = on_dir(tmp.path(), &w);
        let d = TestDaemon::start_with(config.clone()).await;
        let wd = world(&w);
        let teller = d.login("teller", "teller123").await;
        etc_reader_quiet(&wd).await;
        // The teller confirms; from then on the k+1-th durable flush fails.
        let run = d
            .ok(
                "flows.start",
                json!({"flow": "etc.load", "params": {"record_id": R50}, "idempotency_key": "flush-1", "reader_id": "sim:etc"}),
                Some(&teller),
            )
            .await;
        let run_id = run["run_id"].as_str().unwrap().to_owned();
        let prompt = common::group::wait_prompt(&d, &teller, &run_id, 0).await;
        d.daemon().store.fail_flushes_for_test(k, 1);
        let answered = d
            .call(
                "flows.answer",
                json!({"run_id": run_id, "prompt_id": prompt["prompt_id"], "answer": true}),
                Some(&teller),
            )
            .await;
        let nothing_journaled = committed_fen(&d) == 0
            && d.daemon()
                .journal
                .as_ref()
                .unwrap()
                .list_open()
                .unwrap()
                .is_empty();
        // The confirmation could not be audited: nothing was done, the run still waits (until
        // its prompt times out), and the daemon failed closed. (Other writers, such as the
        // audit log's periodic summary, may take a flush first: then the failure lands later
        // and the run is followed like every other case below.)
        if answered.get("error").is_some() && nothing_journaled {
            assert_eq!(balance(&w), 10_000, "{what}: {answered}");
            assert_eq!(health(&d).await, "failed_closed", "{what}");
            refused_answers += 1;
            d.stop().await;
            kept.push(tmp);
            k += 1;
            continue;
        }
        let done = common::group::wait_ended(&d, &teller, &run_id).await;
        if d.daemon().store.failed_closed().is_none() {
            // Every flush of the load and its run succeeded: nothing left to break.
            assert_eq!(done["state"], "succeeded", "{what}: {done}");
            d.daemon().store.fail_flushes_for_test(0, 0);
            d.stop().await;
            break;
        }
        let run = Run {
            done,
            prompts: vec![prompt],
        };
        let gained = balance(&w) - 10_000;
        let message = run.done["failure"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status = record(&d, &teller, R50).await["status_label"].clone();
        if gained > 0 {
            assert_eq!(gained, 5_000, "{what}");
            assert!(
                !message.contains("失败"),
                "{what}: money on the card shown as failed: {message}"
            );
            assert_ne!(
                status, "未圈存",
                "{what}: money on the card, record not loaded"
            );
            if run.done["state"] == "failed" {
                // Unknown (the outcome could not be recorded), or loaded with the record left
                // behind: either way the teller reads not to load again.
                assert!(
                    (message.contains("圈存结果未知") || message.contains("圈存已成功"))
                        && message.contains("切勿重复充值"),
                    "{what}: {message}"
                );
            }
        }
        if !no_open_loads(&d) && run.done["state"] == "failed" && gained > 0 {
            after_credit += 1;
            assert!(
                message.contains("卡片已响应圈存，但结果未能记录，圈存结果未知")
                    && message.contains("切勿重复充值"),
                "{what}: {message}"
            );
            assert_eq!(status, "圈存中", "{what}: the record awaits the card");
        }
        // The daemon failed closed: health says so and money methods are refused.
        assert!(d.daemon().failed_closed(), "{what}");
        assert_eq!(health(&d).await, "failed_closed", "{what}");
        let failed_closed = i64::from(ErrorCode::FailedClosed.code());
        let (code, _) = d
            .err(
                "etc.recharge",
                json!({"plate": PLATE, "plate_colour": 0, "amount": "1.00"}),
                Some(&teller),
            )
            .await;
        assert_eq!(code, failed_closed, "{what}");
        let (code, _) = d
            .err(
                "flows.start",
                json!({"flow": "etc.load", "params": {"record_id": R50}, "idempotency_key": "flush-2", "reader_id": "sim:etc"}),
                Some(&teller),
            )
            .await;
        assert_eq!(code, failed_closed, "{what}");
        assert_eq!(
            balance(&w),
            10_000 + gained,
            "{what}: nothing more was credited"
        );

        // The customer leaves with the card; the daemon is restarted on the same data.
        let card = wd.remove_card("sim:etc").expect("the card");
        stop_and_release(d).await;
        let d = TestDaemon::start_again_with(config).await;
        let wd = world(&w);
        let teller = d.login("teller", "teller123").await;
        assert!(!d.daemon().failed_closed(), "{what}: a restart reopens");
        assert_eq!(health(&d).await, "ok", "{what}");
        let status = record(&d, &teller, R50).await["status_label"].clone();
        if gained > 0 {
            assert_ne!(status, "未圈存", "{what}: after the restart");
        }
        // The card is presented: its load is settled from the card.
        wd.insert_card("sim:etc", card).unwrap();
        etc_reader_quiet(&wd).await;
        for _ in 0..100 {
            if no_open_loads(&d) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(no_open_loads(&d), "{what}: the card settled its load");
        let rec = record(&d, &teller, R50).await;
        if gained > 0 {
            assert_eq!(rec["status_label"], "已圈存", "{what}: {rec}");
            assert_eq!(rec["balance_after"], "150.00", "{what}: {rec}");
        }
        // The teller retries with a new key: paid exactly once either way.
        let retry = load(&d, &teller, R50, "flush-3").await;
        if gained > 0 {
            assert_eq!(retry.done["state"], "failed", "{what}: {}", retry.done);
        } else {
            assert_eq!(retry.done["state"], "succeeded", "{what}: {}", retry.done);
        }
        assert_eq!(record(&d, &teller, R50).await["status_label"], "已圈存");
        assert_eq!(balance(&w), 15_000, "{what}: the money is on the card once");
        assert_eq!(committed_fen(&d), 5_000, "{what}: one committed load");
        // The card is not blocked: its other record loads.
        let other = load(&d, &teller, R200, "flush-4").await;
        assert_eq!(other.done["state"], "succeeded", "{what}: {}", other.done);
        assert_eq!(balance(&w), 35_000, "{what}");
        d.stop().await;
        k += 1;
    }
    println!("{k} flushes after the confirmation failed in turn: {refused_answers} refused the confirmation, {after_credit} came right after CREDIT");
    assert_eq!(
        after_credit, 1,
        "the flush right after CREDIT was reached once"
    );
}

/// The daemon's security module is the second line of defence of "no credit without funds":
/// asked directly for a MAC2 it refuses (no funded record named that load), and a journaled
/// load on the daemon's reader that names no record in a state to fund it (a 未圈存 record not
/// begun, a begun record of another amount, an unknown record or group order, the test mode
/// when it is off) is refused before INITIALIZE FOR LOAD: the card and the journal are
/// untouched and the teller reads why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_security_module_computes_no_mac2_without_a_funded_record() {
    use cardd_journal::{load_card, Funding, LoadError, LoadRequest};
    use cardd_purse::{CardKeyContext, InitLoadResponse, KeyScheme, LoadTerms, Purse, SamError};

    let name = format!("etc-funded-sam-{}", std::process::id());
    let w = name.clone();
    let d = TestDaemon::start_with(move |c| {
        c.flows.unfunded_test_loads = false;
        c.readers[0].options = json!({ "world": w });
    })
    .await;
    let before = balance(&name);

    let card = CardKeyContext {
        scheme: KeyScheme::Etc,
        algorithm: cardd_crypto::Algorithm::Tdes,
        issuer4: [0xC9, 0xC2, 0xCE, 0xF7],
        card8: [0, 0, 0, 0, 0, 0, 0, 1],
    };
    let init =
        InitLoadResponse::parse(&hex::decode("000003E800050100A1B2C3D455954E2A").unwrap()).unwrap();
    let terms = LoadTerms {
        amount: 20_000,
        terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
        date: cardd_crypto::bcd::date(2026, 12, 6),
        time: cardd_crypto::bcd::time(12, 0, 0),
    };
    let err = d.daemon().sam.load_mac2(&card, &init, &terms).unwrap_err();
    assert!(matches!(err, SamError::LoadNotAuthorized { .. }), "{err}");

    let host = d.daemon().host.clone().unwrap();
    host.begin_load(R50, "teller", "direct-begun").unwrap();
    let token = d.login("teller", "teller123").await;
    let holder = cardd::readers::Holder {
        operator: "teller".into(),
        session: token,
    };
    let record = |id: &str| Funding::EtcRecord {
        record_id: id.into(),
    };
    let cases = [
        ("direct-1", 20_000, record(R200), "未圈存"),
        ("direct-begun", 20_000, record(R50), "金额"),
        ("direct-2", 20_000, record("R20990101000001"), "不存在"),
        (
            "direct-3",
            20_000,
            Funding::GroupOrder {
                order_id: "GO20990101000001".into(),
            },
            "不存在",
        ),
        ("direct-4", 100, Funding::TestMode, "测试模式"),
    ];
    for (txn_id, amount_fen, funding, says) in cases {
        let daemon = d.daemon().clone();
        let result = d
            .daemon()
            .readers
            .run("sim:etc", &holder, "test load", move |reader| {
                let request = LoadRequest {
                    txn_id: txn_id.into(),
                    amount_fen,
                    terminal: daemon.config.terminal_id,
                    date: cardd_crypto::bcd::date(2026, 12, 6),
                    time: cardd_crypto::bcd::time(12, 0, 0),
                    etc_pin: daemon.config.etc_pin.clone(),
                    expected_card: Some(CARD.into()),
                    city_algorithm: cardd_crypto::Algorithm::Tdes,
                    funding,
                };
                load_card(
                    &mut Purse::new(reader),
                    daemon.sam.as_ref(),
                    daemon.journal.as_ref().unwrap(),
                    "sim:etc",
                    &request,
                )
            })
            .await
            .unwrap();
        let err = result.unwrap_err();
        assert!(
            matches!(&err, LoadError::Unfunded(SamError::LoadNotFunded { reason }) if reason.contains(says)),
            "{txn_id}: {err}"
        );
        let shown = cardd::errors::ApiError::from(cardd_etc::load_error(&err));
        assert_eq!(shown.code, ErrorCode::RecordStateConflict);
        assert!(shown.message.contains("卡片未被写入"), "{}", shown.message);
        assert_eq!(balance(&name), before, "{txn_id}: the card is untouched");
        assert!(
            d.daemon()
                .journal
                .as_ref()
                .unwrap()
                .for_card(CARD)
                .unwrap()
                .is_empty(),
            "{txn_id}: nothing journaled"
        );
    }
    d.stop().await;
}
