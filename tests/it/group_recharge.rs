//! Group recharge (集团充值) end to end over JSON-RPC on the embedded default: group login,
//! quota top-up through the sandbox bank and its audit, recharges of city one-cards by the
//! `group.recharge` flow, a failed load and its refund audit, the queries' statistics and both
//! exports against the ledger; every bad input refused with nothing changed; another group's
//! data refused with the seed's 用户和密码错误; batch recharge card by card.

use crate::common;

use std::io::Read;

use cardd_api::ErrorCode;
use common::group::*;
use common::TestDaemon;
use serde_json::{json, Value};

fn code(c: ErrorCode) -> i64 {
    i64::from(c.code())
}

fn fen(yuan: &str) -> i64 {
    cardd_api::Fen::parse_yuan(yuan).unwrap().0
}

/// Sums an export's amount column (yuan text) in fen.
fn column_fen(rows: &[Vec<String>], col: usize) -> i64 {
    rows.iter().map(|r| fen(&r[col])).sum()
}

/// A cell of an XLSX sheet: its text (a number as written) and whether it is a number.
#[derive(Debug, Clone, Default, PartialEq)]
struct XlsxCell {
    text: String,
    number: bool,
    /// The cell's style index (`s="…"`), when it has one.
    style: Option<usize>,
}

/// The cells of the first sheet of an XLSX file (shared strings resolved), row by row.
fn xlsx_cells(bytes: &[u8]) -> Vec<Vec<XlsxCell>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut read = |name: &str| {
        let mut text = String::new();
        zip.by_name(name)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let shared = read("xl/sharedStrings.xml");
    let sheet = read("xl/worksheets/sheet1.xml");
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    };
    let strings: Vec<String> = shared
        .split("<si>")
        .skip(1)
        .map(|si| {
            let t = si.split_once("<t").unwrap().1;
            let t = t.split_once('>').unwrap().1;
            unescape(t.split_once("</t>").unwrap().0)
        })
        .collect();
    sheet
        .split("<row ")
        .skip(1)
        .map(|row| {
            // Empty cells are not written: place each cell by its column letters.
            let mut cells = Vec::new();
            for c in row.split("<c ").skip(1) {
                let attributes = c.split_once('>').unwrap().0;
                let attribute = |name: &str| {
                    attributes
                        .split_once(&format!("{name}=\""))
                        .map(|(_, v)| v.split_once('"').unwrap().0.to_owned())
                };
                let reference = attribute("r").unwrap();
                let col = reference
                    .bytes()
                    .take_while(u8::is_ascii_uppercase)
                    .fold(0usize, |n, b| n * 26 + usize::from(b - b'A' + 1))
                    - 1;
                let Some((_, v)) = c.split_once("<v>") else {
                    continue;
                };
                let v = v.split_once("</v>").unwrap().0;
                let shared_string = attribute("t").as_deref() == Some("s");
                cells.resize(col + 1, XlsxCell::default());
                cells[col] = XlsxCell {
                    text: if shared_string {
                        strings[v.parse::<usize>().unwrap()].clone()
                    } else {
                        v.to_owned()
                    },
                    number: attribute("t").is_none(),
                    style: attribute("s").map(|s| s.parse().unwrap()),
                };
            }
            cells
        })
        .collect()
}

/// The texts of the first sheet of an XLSX file, row by row.
fn xlsx_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    xlsx_cells(bytes)
        .into_iter()
        .map(|row| row.into_iter().map(|c| c.text).collect())
        .collect()
}

/// The number format (`formatCode`) of each cell style of an XLSX file, by style index.
fn xlsx_style_formats(bytes: &[u8]) -> Vec<String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut styles = String::new();
    zip.by_name("xl/styles.xml")
        .unwrap()
        .read_to_string(&mut styles)
        .unwrap();
    let attribute = |tag: &str, name: &str| {
        tag.split_once(&format!("{name}=\""))
            .map(|(_, v)| v.split_once('"').unwrap().0.to_owned())
    };
    let custom: Vec<(String, String)> = styles
        .split("<numFmt ")
        .skip(1)
        .map(|t| {
            (
                attribute(t, "numFmtId").unwrap(),
                attribute(t, "formatCode").unwrap(),
            )
        })
        .collect();
    let xfs = styles.split_once("<cellXfs").unwrap().1;
    let xfs = xfs.split_once("</cellXfs>").unwrap().0;
    xfs.split("<xf ")
        .skip(1)
        .map(|xf| {
            let id = attribute(xf, "numFmtId").unwrap_or_default();
            match (id.as_str(), custom.iter().find(|(i, _)| *i == id)) {
                (_, Some((_, code))) => code.clone(),
                ("2", None) => "0.00".to_owned(),
                _ => "General".to_owned(),
            }
        })
        .collect()
}

/// A statistic's count and amount (`<name>_count`, `<name>_amount`).
fn stat(stats: &Value, name: &str) -> (u64, String) {
    (
        stats[format!("{name}_count")].as_u64().unwrap(),
        stats[format!("{name}_amount")].as_str().unwrap().to_owned(),
    )
}

fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "CSV starts with a BOM");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&bytes[3..]);
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// The exported file of the last 7 days, and the number of rows the daemon says it holds.
async fn export_file(d: &TestDaemon, method: &str, token: &str, format: &str) -> (Vec<u8>, u64) {
    use base64::Engine;
    let r = d
        .ok(
            method,
            json!({"preset": "last_7_days", "format": format}),
            Some(token),
        )
        .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["data_base64"].as_str().unwrap())
        .unwrap();
    (bytes, r["rows"].as_u64().unwrap())
}

/// A time as the exports write it: `2026-12-06 14:02:14`.
fn is_export_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

async fn export(d: &TestDaemon, method: &str, token: &str, format: &str) -> Vec<Vec<String>> {
    let (bytes, count) = export_file(d, method, token, format).await;
    let rows = if format == "csv" {
        csv_rows(&bytes)
    } else {
        xlsx_rows(&bytes)
    };
    assert_eq!(count as usize, rows.len() - 1);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_up_audit_recharge_fail_refund_query_and_export_match_the_ledger() {
    let world_name = format!("group-e2e-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let world = cardd_sim::named_world(&world_name).unwrap();

    // 集团充值登录: an operator of another group gets the seed's message.
    let (c, message) = d
        .err(
            "group.login",
            json!({"group_id": "G002", "username": "group1", "password": "group123"}),
            None,
        )
        .await;
    assert_eq!(
        (c, message.as_str()),
        (code(ErrorCode::InvalidCredentials), "用户和密码错误")
    );
    let (c, _) = d
        .err(
            "group.login",
            json!({"group_id": "G001", "username": "teller", "password": "teller123"}),
            None,
        )
        .await;
    assert_eq!(c, code(ErrorCode::InvalidCredentials));
    let op = group_login(&d, "G001", "group1", "group123").await;
    let auditor = d.login("auditor", "audit123").await;
    let info = d.ok("group.info", json!({}), Some(&op)).await;
    assert_eq!(info["group_name"], "郑州示例科技有限公司");
    assert_eq!(info["terminal_no"], "ZZ0001");
    assert_eq!(info["available_quota"], "500.00");
    assert_eq!(info["operator_name"], "集团操作员张三");

    // 额度充值: bad amounts change nothing.
    for bad in ["10.5", "0", "-10", "abc", "1.001"] {
        let (c, m) = d
            .err(
                "group.topup",
                json!({"amount": bad, "remark": "x"}),
                Some(&op),
            )
            .await;
        assert_eq!(c, code(ErrorCode::InvalidParams), "{bad}: {m}");
    }
    let topups = d.ok("group.topups", json!({}), Some(&op)).await;
    assert_eq!(
        topups["rows"].as_array().unwrap().len(),
        0,
        "no top-up was recorded"
    );
    let paid = d
        .ok(
            "group.topup",
            json!({"amount": "1000", "remark": "六月员工卡额度"}),
            Some(&op),
        )
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert!(paid["bank_serial"].as_str().unwrap().starts_with("SB"));
    assert_eq!(
        (
            paid["amount"].as_str(),
            paid["group_name"].as_str(),
            paid["operator"].as_str()
        ),
        (
            Some("1000.00"),
            Some("郑州示例科技有限公司"),
            Some("group1")
        )
    );
    assert_eq!(
        quota(&d, &op).await,
        "500.00",
        "the quota grows only after the audit"
    );
    // The bank declines, or does not answer: errors that name the top-up to ask about again.
    let declined = d
        .call(
            "group.topup",
            json!({"amount": "300", "remark": "SANDBOX-FAIL"}),
            Some(&op),
        )
        .await;
    assert_eq!(
        declined["error"]["code"],
        code(ErrorCode::PaymentDeclined),
        "{declined}"
    );
    assert_eq!(declined["error"]["data"]["detail"]["status"], "failed");
    let late = d
        .call(
            "group.topup",
            json!({"amount": "200", "remark": "SANDBOX-LATE"}),
            Some(&op),
        )
        .await;
    assert_eq!(
        late["error"]["code"],
        code(ErrorCode::PaymentUnknown),
        "{late}"
    );
    let late = &late["error"]["data"]["detail"];
    let late = d
        .ok(
            "group.topup_status",
            json!({"topup_id": late["topup_id"]}),
            Some(&op),
        )
        .await;
    assert_eq!(
        late["status"], "paid",
        "asking the bank again finds the payment"
    );
    // The group operator cannot audit; the auditor approves once.
    let (c, _) = d
        .err(
            "group.audit.topup",
            json!({"topup_id": paid["topup_id"], "approve": true, "reason": "到账"}),
            Some(&op),
        )
        .await;
    assert_eq!(c, code(ErrorCode::Forbidden));
    let pending = d.ok("group.audit.pending", json!({}), Some(&auditor)).await;
    assert_eq!(pending["topups"].as_array().unwrap().len(), 2);
    d.ok(
        "group.audit.topup",
        json!({"topup_id": paid["topup_id"], "approve": true, "reason": "已到账"}),
        Some(&auditor),
    )
    .await;
    d.ok(
        "group.audit.topup",
        json!({"topup_id": late["topup_id"], "approve": false, "reason": "款项退回"}),
        Some(&auditor),
    )
    .await;
    let (c, _) = d
        .err(
            "group.audit.topup",
            json!({"topup_id": paid["topup_id"], "approve": true, "reason": "again"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::GroupStateConflict),
        "a transfer is approved once"
    );
    assert_eq!(quota(&d, &op).await, "1500.00");

    // Three cards recharged by the flow (the demo card holds 50.00).
    let cards = [
        "61010000000000000001",
        "61010000000000000002",
        "61010000000000000003",
    ];
    let amounts = ["100.00", "20.00", "30.00"];
    let mut orders = Vec::new();
    for (i, (card, amount)) in cards.iter().zip(amounts).enumerate() {
        if i > 0 {
            world.remove_card("sim:city");
            world
                .insert_card("sim:city", city_card(card, 10_000 * i as u32))
                .unwrap();
        }
        let done = run_recharge(&d, &op, json!({"amount": amount}), &format!("e2e-{i}")).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let r = &done["result"];
        assert_eq!(
            (r["card_number"].as_str(), r["amount"].as_str()),
            (Some(*card), Some(amount))
        );
        orders.push(r.clone());
    }
    let first = &orders[0];
    assert_eq!(
        (
            first["balance_before"].as_str(),
            first["balance_after"].as_str(),
            first["quota_before"].as_str(),
            first["quota_after"].as_str()
        ),
        (
            Some("50.00"),
            Some("150.00"),
            Some("1500.00"),
            Some("1400.00")
        )
    );
    assert!(first["order_id"].as_str().unwrap().starts_with("GO"));
    assert_eq!(quota(&d, &op).await, "1350.00");
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 23_000);

    // A failed load: the card leaves the reader just before CREDIT FOR LOAD.
    let card_d = "61010000000000000004";
    world.remove_card("sim:city");
    world.insert_card("sim:city", city_card(card_d, 0)).unwrap();
    // Two clean recharges of this card first: the second tells how many exchanges one takes
    // (CREDIT FOR LOAD is the last of them).
    // (The daemon's own check of a newly inserted card may add exchanges to one of them: the
    // smaller count is the recharge's.)
    settle_apdus(&world).await;
    let mut counts = Vec::new();
    let mut probe = Value::Null;
    for key in ["e2e-warm", "e2e-probe"] {
        let before = world.apdu_count("sim:city");
        probe = run_recharge(&d, &op, json!({"amount": "10.00"}), key).await;
        assert_eq!(probe["state"], "succeeded");
        counts.push(world.apdu_count("sim:city") - before);
    }
    let apdus_per_recharge = counts.into_iter().min().unwrap();
    let at = world.apdu_count("sim:city") + apdus_per_recharge;
    world
        .set_fault_plan(
            "sim:city",
            cardd_sim::FaultPlan::new().at(at, cardd_sim::FaultKind::RemoveBeforeExec),
        )
        .unwrap();
    let failed = run_recharge(&d, &op, json!({"amount": "40.00"}), "e2e-fail").await;
    // CREDIT never reached the card, but nothing could prove that while the card was away:
    // the outcome is unknown (结果待确认), never 充值失败.
    assert_eq!(failed["state"], "succeeded", "{failed}");
    assert_eq!(failed["result"]["status"], "unknown", "{failed}");
    let message = failed["result"]["message"].as_str().unwrap();
    assert!(
        message.contains("结果待确认")
            && message.contains("切勿重复充值")
            && !message.contains("失败"),
        "{message}"
    );
    assert_eq!(
        quota(&d, &op).await,
        "1290.00",
        "the reservation stays until the card settles it"
    );
    let order_id = failed["result"]["order_id"].as_str().unwrap().to_owned();
    let svc = d.daemon().group.as_ref().unwrap();
    assert_eq!(
        svc.host.order(&order_id).unwrap().unwrap().status,
        cardd_group::model::OrderStatus::Pending
    );
    let (c, m) = d
        .err(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "未到卡"}),
            Some(&auditor),
        )
        .await;
    assert!(
        c == code(ErrorCode::GroupStateConflict) || c == code(ErrorCode::EvidenceConflict),
        "a pending order is not refundable: {c} {m}"
    );
    // The card comes back: the journal settles the load from the card (it did not land), and
    // only now is the order 充值失败（待退款）.
    let card = world.take_pocket("sim:city").unwrap();
    world.insert_card("sim:city", card).unwrap();
    let ev = wait_verdict(&d, &auditor, &order_id, "not_landed").await;
    assert_eq!(ev["journal_state"], "not_applied");
    for _ in 0..100 {
        if svc.host.order(&order_id).unwrap().unwrap().status
            == cardd_group::model::OrderStatus::Failed
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        single_failed_order(&d, &auditor).await["order"]["order_id"],
        order_id
    );
    // The card itself, read on the reader: no proof of the failed load, a proof of the last
    // successful one.
    let on_card = |order_id: Value| {
        let d = &d;
        let auditor = auditor.clone();
        async move {
            d.ok(
                "group.audit.evidence",
                json!({"order_id": order_id, "reader_id": "sim:city"}),
                Some(&auditor),
            )
            .await["card"]
                .clone()
        }
    };
    let card = on_card(json!(order_id)).await;
    assert_eq!(card["proof_of_this_load"], false, "{card}");
    assert_eq!(card["card_number"], card_d);
    let card = on_card(probe["result"]["order_id"].clone()).await;
    assert_eq!(card["proof_of_this_load"], true, "{card}");
    let (c, _) = d
        .err(
            "group.audit.evidence",
            json!({"order_id": orders[0]["order_id"], "reader_id": "sim:city"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::InvalidParams),
        "another card on the reader"
    );
    let (c, _) = d
        .err(
            "group.audit.resolve",
            json!({"order_id": order_id, "reason": "x"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::EvidenceConflict),
        "a load that did not land is not a success"
    );
    let (c, _) = d
        .err(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "x"}),
            Some(&op),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::Forbidden),
        "group operators do not audit"
    );
    d.ok(
        "group.audit.refund",
        json!({"order_id": order_id, "reason": "卡片证明未圈存"}),
        Some(&auditor),
    )
    .await;
    let (c, _) = d
        .err(
            "group.audit.refund",
            json!({"order_id": order_id, "reason": "again"}),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        c,
        code(ErrorCode::GroupStateConflict),
        "never refunded twice"
    );
    assert_eq!(quota(&d, &op).await, "1330.00");
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 2_000);

    // 充值查询 and 额度充值查询: statistics and both exports match the ledger exactly.
    let ledger = d.ok("group.ledger", json!({}), Some(&op)).await;
    let ledger = ledger.as_array().unwrap();
    let sum = |kind: &str| -> i64 {
        ledger
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["amount_fen"].as_i64().unwrap())
            .sum()
    };
    let available = fen(&quota(&d, &op).await);
    // The ledger's decimal yuan and its fen agree, and its last running balance is the quota.
    for e in ledger {
        let text = e["amount"].as_str().unwrap();
        let signed = match text.strip_prefix('-') {
            Some(t) => -fen(t),
            None => fen(text),
        };
        assert_eq!(signed, e["amount_fen"].as_i64().unwrap());
    }
    assert_eq!(
        fen(ledger.last().unwrap()["balance_after"].as_str().unwrap()),
        available
    );
    assert_eq!(
        ledger
            .iter()
            .map(|e| e["amount_fen"].as_i64().unwrap())
            .sum::<i64>(),
        available
    );
    let q = d
        .ok("group.orders", json!({"preset": "last_7_days"}), Some(&op))
        .await;
    assert_eq!(q["period"]["label"], "最近7天");
    // 操作员 is the person's name wherever people read it; the user name stays as the id.
    assert_eq!(q["rows"][0]["operator"], "group1", "{q}");
    assert_eq!(q["rows"][0]["operator_name"], "集团操作员张三", "{q}");
    let stats = &q["stats"];
    assert_eq!(stat(stats, "success"), (5, "170.00".to_owned()));
    assert_eq!(stat(stats, "failure"), (1, "40.00".to_owned()));
    assert_eq!(stats["refunded_amount"], "40.00");
    assert_eq!(
        -sum("reserve"),
        fen("210.00"),
        "every order reserved its amount once"
    );
    assert_eq!(sum("refund"), fen("40.00"));
    let rows = q["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for format in ["csv", "xlsx"] {
        let file = export(&d, "group.orders.export", &op, format).await;
        assert_eq!(file[0][0], "订单编号");
        assert_eq!(file[0][3], "充值金额");
        assert_eq!(
            file.len(),
            rows.len() + 1,
            "{format}: exactly the rows queried"
        );
        let header_len = file[0].len();
        for (line, row) in file[1..].iter().zip(rows) {
            assert_eq!(
                line[0],
                row["order_id"].as_str().unwrap(),
                "{format}: same rows, same order"
            );
            // The card number stays text (in the CSV behind a tab), every digit intact.
            let card = row["card_number"].as_str().unwrap();
            let expected_card = if format == "csv" {
                format!("\t{card}")
            } else {
                card.to_owned()
            };
            assert_eq!(line[1], expected_card, "{format}: the card number");
            assert!(is_export_time(&line[9]), "{format}: the time {:?}", line[9]);
            assert_eq!(line[7], row["status_label"].as_str().unwrap());
            assert!(line.len() <= header_len);
        }
        assert_eq!(
            column_fen(&file[1..], 3),
            -sum("reserve"),
            "{format}: amounts = ledger reservations"
        );
        let ok_rows: Vec<Vec<String>> = file[1..]
            .iter()
            .filter(|r| r[7] == "充值成功")
            .cloned()
            .collect();
        assert_eq!(
            column_fen(&ok_rows, 3),
            fen(stats["success_amount"].as_str().unwrap())
        );
    }
    // The XLSX holds amounts as numbers shown with two decimals, card numbers as text.
    let (xlsx, _) = export_file(&d, "group.orders.export", &op, "xlsx").await;
    let formats = xlsx_style_formats(&xlsx);
    let cells = xlsx_cells(&xlsx);
    for (line, row) in cells[1..].iter().zip(rows) {
        let card = &line[1];
        assert!(!card.number, "the card number is text: {card:?}");
        assert_eq!(card.text, row["card_number"].as_str().unwrap());
        let amount = &line[3];
        assert!(amount.number, "the amount is a number: {amount:?}");
        assert_eq!(
            fen(&amount.text),
            fen(row["amount"].as_str().unwrap()),
            "the amount's value"
        );
        assert_eq!(formats[amount.style.unwrap()], "0.00", "two decimals");
        assert!(!line[9].number && is_export_time(&line[9].text));
    }
    let t = d
        .ok("group.topups", json!({"preset": "last_month"}), Some(&op))
        .await;
    let tstats = &t["stats"];
    assert_eq!(stat(tstats, "transfer_success"), (2, "1200.00".to_owned()));
    assert_eq!(stat(tstats, "audited"), (1, "1000.00".to_owned()));
    assert_eq!(
        fen(tstats["audited_amount"].as_str().unwrap()) + fen("500.00"),
        sum("top_up"),
        "approved top-ups = ledger (plus the demo opening quota)"
    );
    for format in ["csv", "xlsx"] {
        let file = export(&d, "group.topups.export", &op, format).await;
        assert_eq!(file[0][..3], ["订单编号", "转账金额", "银行返回流水号"]);
        assert_eq!(file.len(), 4, "{format}: three transfers this week");
        let approved: Vec<Vec<String>> = file[1..]
            .iter()
            .filter(|r| r[4] == "审核通过")
            .cloned()
            .collect();
        assert_eq!(column_fen(&approved, 1), fen("1000.00"));
    }
    // Presets and dates.
    for preset in ["last_month", "last_3_months", "last_6_months"] {
        let q = d
            .ok("group.orders", json!({"preset": preset}), Some(&op))
            .await;
        assert_eq!(q["rows"].as_array().unwrap().len(), 6, "{preset}");
    }
    let old = d
        .ok(
            "group.orders",
            json!({"start_date": "2024-01-01", "end_date": "2024-06-30"}),
            Some(&op),
        )
        .await;
    assert_eq!(old["rows"], json!([]));
    // One date: a start alone is from that day until now; an end alone is up to that day.
    let today = time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .date();
    let since = d
        .ok(
            "group.orders",
            json!({"start_date": today.to_string()}),
            Some(&op),
        )
        .await;
    assert_eq!(since["period"]["start_date"], today.to_string());
    assert_eq!(since["period"]["end_date"], today.to_string());
    assert_eq!(
        since["rows"], q["rows"],
        "today's orders, from the start date"
    );
    assert_eq!(since["stats"], q["stats"]);
    let yesterday = today.previous_day().unwrap().to_string();
    let until = d
        .ok("group.orders", json!({"end_date": yesterday}), Some(&op))
        .await;
    assert_eq!(until["period"]["end_date"], yesterday);
    assert_eq!(until["rows"], json!([]), "nothing up to yesterday");
    let tomorrow = today.next_day().unwrap().to_string();
    let (c, m) = d
        .err("group.orders", json!({"start_date": tomorrow}), Some(&op))
        .await;
    assert_eq!(c, code(ErrorCode::InvalidParams));
    assert!(m.contains("晚于今天"), "{m}");
    let (_, m) = d
        .err(
            "group.orders",
            json!({"start_date": "2024-06-30", "end_date": "2024-06-01"}),
            Some(&op),
        )
        .await;
    assert!(
        m.contains("开始日期 2024-06-30 晚于结束日期 2024-06-01"),
        "{m}"
    );
    for bad in [
        json!({"start_date": "2024-06-30", "end_date": "2024-06-01"}),
        json!({"start_date": "2024/06/01", "end_date": "2024-06-30"}),
        json!({"preset": "last_7_days", "start_date": "2024-06-01", "end_date": "2024-06-02"}),
        json!({"preset": "yesterday"}),
    ] {
        assert_eq!(
            d.err("group.orders", bad.clone(), Some(&op)).await.0,
            code(ErrorCode::InvalidParams),
            "{bad}"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_amounts_and_another_groups_data_are_refused_with_nothing_changed() {
    let world_name = format!("group-bad-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let admin = d.login("admin", "admin123").await;
    d.ok("operators.create", json!({"username": "group2", "display_name": "集团操作员李四", "role": "group_operator", "group_id": "G002", "password": "group456"}), Some(&admin))
        .await;
    let other = group_login(&d, "G002", "group2", "group456").await;
    let snapshot = |d: &TestDaemon| {
        let svc = d.daemon().group.as_ref().unwrap();
        (
            svc.host.groups().unwrap(),
            svc.host.ledger("G001", 0, 100).unwrap().len(),
        )
    };
    let before = snapshot(&d);
    let balance = || world.card("sim:city").unwrap().balance().unwrap();

    // Refused before any Lua runs.
    for (i, bad) in [
        json!("-10"),
        json!("0"),
        json!(10.5),
        json!("abc"),
        json!("10.001"),
    ]
    .iter()
    .enumerate()
    {
        let start = json!({"flow": "group.recharge", "params": {"amount": bad}, "idempotency_key": format!("bad-p{i}"), "reader_id": "sim:city"});
        let (c, m) = d.err("flows.start", start, Some(&op)).await;
        assert_eq!(c, code(ErrorCode::InvalidParams), "{bad}: {m}");
    }
    // Refused by the flow's rules (the card holds 50.00; the quota is 500.00).
    for (amount, expected) in [
        ("9", "充值金额不能小于10元"),
        ("15", "充值金额必须是10元的整数倍"),
        ("960", "充值后卡内金额不能超过1000元"),
    ] {
        let done = run_recharge(&d, &op, json!({"amount": amount}), &format!("bad-{amount}")).await;
        assert_eq!(done["state"], "failed", "{done}");
        let m = done["failure"]["message"].as_str().unwrap();
        assert!(m.contains(expected), "{amount}: {m}");
    }
    world.remove_card("sim:city");
    world
        .insert_card("sim:city", city_card("61010000000000000009", 0))
        .unwrap();
    let done = run_recharge(&d, &op, json!({"amount": "510"}), "bad-quota").await;
    assert!(
        done["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("集团可用额度不足"),
        "{done}"
    );
    // Again in Rust, for a flow that skips the checks.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raw.lua"), RAW_FLOW).unwrap();
    let d2_world = format!("group-raw-{}", std::process::id());
    let d2 = start_group_daemon(&d2_world, {
        let dir = dir.path().to_path_buf();
        move |c| c.flows.dir = Some(dir)
    })
    .await;
    let op2 = group_login(&d2, "G001", "group1", "group123").await;
    for (amount, expected) in [
        (900, "不能小于10元"),
        (1_500, "10元的整数倍"),
        (96_000, "不能超过1000元"),
        (60_000, "额度不足"),
    ] {
        let run = d2.ok("flows.start", json!({"flow": "test.raw_group", "params": {"amount": amount}, "idempotency_key": format!("raw-{amount}"), "reader_id": "sim:city"}), Some(&op2)).await;
        let done = wait_run(&d2, &op2, run["run_id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "failed");
        assert!(
            done["failure"]["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{amount}: {done}"
        );
    }
    let svc2 = d2.daemon().group.as_ref().unwrap();
    assert_eq!(
        svc2.host.group("G001").unwrap().unwrap().available_fen,
        50_000
    );
    assert_eq!(
        cardd_sim::named_world(&d2_world)
            .unwrap()
            .card("sim:city")
            .unwrap()
            .balance()
            .unwrap(),
        5_000
    );
    d2.stop().await;

    // Another group's data: 用户和密码错误-style refusals.
    let denied = code(ErrorCode::GroupAccessDenied);
    for (method, params) in [
        ("group.info", json!({"group_id": "G002"})),
        ("group.orders", json!({"group_id": "G002"})),
        (
            "group.topups",
            json!({"group_id": "G002", "preset": "last_month"}),
        ),
        ("group.ledger", json!({"group_id": "G002"})),
        (
            "group.orders.export",
            json!({"group_id": "G002", "format": "csv"}),
        ),
        (
            "group.topup_status",
            json!({"topup_id": "GT20240601000002"}),
        ),
        (
            "group.topup_status",
            json!({"topup_id": "GT20991231000001"}),
        ),
        ("group.batch.get", json!({"batch_id": "GB20991231000001"})),
    ] {
        let (c, m) = d.err(method, params.clone(), Some(&op)).await;
        assert_eq!(c, denied, "{method} {params}: {m}");
        assert!(m.starts_with("用户和密码错误"), "{m}");
    }
    // G002's operator sees only G002, and the other way round.
    let batch = d
        .ok(
            "group.batch.create",
            json!({"items": [{"card_number": "61010000000000000001", "amount": "10"}]}),
            Some(&op),
        )
        .await;
    let (c, _) = d
        .err(
            "group.batch.get",
            json!({"batch_id": batch["batch_id"]}),
            Some(&other),
        )
        .await;
    assert_eq!(c, denied);
    let start = json!({"flow": "group.batch_recharge", "params": {"batch_id": batch["batch_id"]}, "idempotency_key": "steal-1", "reader_id": "sim:city"});
    let run = d.ok("flows.start", start, Some(&other)).await;
    let done = wait_run(&d, &other, run["run_id"].as_str().unwrap()).await;
    assert_eq!(
        done["state"], "failed",
        "another group's batch cannot be run: {done}"
    );
    assert_eq!(
        d.ok("group.info", json!({}), Some(&other)).await["group_id"],
        "G002"
    );
    // Bad batch items.
    for items in [
        json!([]),
        json!([{"card_number": "61010000000000000001", "amount": "15"}]),
        json!([{"card_number": "123", "amount": "10"}]),
    ] {
        assert_eq!(
            d.err("group.batch.create", json!({"items": items}), Some(&op))
                .await
                .0,
            code(ErrorCode::InvalidParams)
        );
    }
    let mut after = snapshot(&d);
    after
        .0
        .iter_mut()
        .zip(&before.0)
        .for_each(|(a, b)| a.updated_at = b.updated_at);
    assert_eq!(after, before, "no quota moved, no ledger entry");
    assert_eq!(balance(), 0, "no card was loaded");
    d.stop().await;
}

const RAW_FLOW: &str = r#"
return {
  name = "test.raw_group", version = "1.0.0", title = "raw", role = { "group_operator" },
  params = { amount = { type = "integer", min = 1, max = 1000000 } },
  run = function(ctx, params) return group.recharge({ amount = params.amount }) end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_recharge_pauses_for_each_card_resumes_and_reports_per_card() {
    let world_name = format!("group-batch-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let cards = [
        "61010000000000000011",
        "61010000000000000012",
        "61010000000000000013",
    ];
    let batch = d
        .ok(
            "group.batch.create",
            json!({"items": [
                {"card_number": cards[0], "amount": "10"},
                {"card_number": cards[1], "amount": "20"},
                {"card_number": cards[2], "amount": "990"},
            ]}),
            Some(&op),
        )
        .await;
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(batch["pending"], 3);
    world.remove_card("sim:city");
    let start = |key: &str| json!({"flow": "group.batch_recharge", "params": {"batch_id": batch_id}, "idempotency_key": key, "reader_id": "sim:city"});
    // First run: the second card, then pause.
    let run = d.ok("flows.start", start("batch-1"), Some(&op)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let prompt = wait_prompt(&d, &op, &run_id, 0).await;
    assert!(
        prompt["message"].as_str().unwrap().contains(cards[0]),
        "{prompt}"
    );
    world
        .insert_card("sim:city", city_card(cards[1], 0))
        .unwrap();
    answer(&d, &op, &run_id, &prompt, json!("已放好")).await;
    let after = prompt["prompt_id"].as_u64().unwrap();
    let prompt = wait_prompt(&d, &op, &run_id, after).await;
    answer(&d, &op, &run_id, &prompt, json!("暂停")).await;
    let done = wait_run(&d, &op, &run_id).await;
    assert_eq!(done["result"]["status"], "paused", "{done}");
    let events = d
        .ok("flows.events", json!({"run_id": run_id}), Some(&op))
        .await;
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "progress" && e["message"].as_str().unwrap().contains("充值成功")));
    // The batch's progress is structured, besides its message: `{done, total}`.
    let counts: Vec<Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "progress" && !e["data"]["total"].is_null())
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(
        counts,
        [
            json!({"done": 0, "total": 3}),
            json!({"done": 1, "total": 3})
        ],
        "{events}"
    );
    // Second run resumes: the first card, then the third (990 + 20.00 already = over 1000).
    let run = d.ok("flows.start", start("batch-2"), Some(&op)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let mut last = 0;
    for (card, balance) in [(cards[0], 0), (cards[2], 2_000)] {
        let prompt = wait_prompt(&d, &op, &run_id, last).await;
        last = prompt["prompt_id"].as_u64().unwrap();
        assert!(
            prompt["message"].as_str().unwrap().contains(card),
            "{prompt}"
        );
        world.remove_card("sim:city");
        world
            .insert_card("sim:city", city_card(card, balance))
            .unwrap();
        answer(&d, &op, &run_id, &prompt, json!("已放好")).await;
    }
    // The third card is refused by the rules and is not offered again.
    let done = wait_run(&d, &op, &run_id).await;
    let report = &done["result"]["report"];
    assert_eq!(done["result"]["status"], "paused", "{done}");
    let statuses: Vec<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "pending"], "{report}");
    let refused = done["result"]["refused"][0]["message"].as_str().unwrap();
    assert!(
        refused.starts_with("充值后卡内金额不能超过1000元"),
        "{refused}"
    );
    assert_eq!(report["items"][1]["balance_after"], "20.00");
    let got = d
        .ok("group.batch.get", json!({"batch_id": batch_id}), Some(&op))
        .await;
    assert_eq!(
        (got["succeeded"].as_u64(), got["pending"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(quota(&d, &op).await, "470.00");
    d.stop().await;
}

/// The single failed order waiting for the auditor, with its evidence.
async fn single_failed_order(d: &TestDaemon, auditor: &str) -> Value {
    let pending = d.ok("group.audit.pending", json!({}), Some(auditor)).await;
    let orders = pending["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{pending}");
    orders[0].clone()
}

async fn wait_verdict(d: &TestDaemon, auditor: &str, order_id: &str, verdict: &str) -> Value {
    for _ in 0..50 {
        let ev = d
            .ok(
                "group.audit.evidence",
                json!({"order_id": order_id}),
                Some(auditor),
            )
            .await;
        if ev["verdict"] == verdict {
            return ev;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("order {order_id} never reached {verdict}");
}

/// The card pulled at every APDU of the `group.recharge` flow, before and after the command
/// executes: the journal settles the load from the card, the order follows it, the auditor
/// refunds exactly what did not land, and quota, ledger, orders and card agree after each case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_removal_at_every_apdu_of_a_group_recharge_reconciles() {
    let world = format!("group-removal-{}", std::process::id());
    let (cases, refunds, resolutions) =
        common::matrix::removal_matrix(&common::matrix::GROUP_RECHARGE, &world).await;
    assert!(cases >= 16, "{cases}");
    assert!(
        refunds > 0,
        "refunds of loads the card proved did not land were exercised"
    );
    assert_eq!(
        resolutions, 0,
        "no order is ever 充值失败 while its money is on the card: unknown outcomes wait for the card"
    );
}

/// The seed's 修改密码 and 超时 for group operators: 原密码/新密码/确认密码, 密码已修改, the old
/// password then fails with 用户和密码错误; a session idle past the timeout must log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_operators_change_password_and_log_in_again_after_a_timeout() {
    let world = format!("group-auth-{}", std::process::id());
    let d = start_group_daemon(&world, |c| c.auth.session_idle_timeout_s = 1).await;
    let op = group_login(&d, "G001", "group1", "group123").await;
    let (c, m) = d
        .err("auth.change_password", json!({"old_password": "wrong", "new_password": "abc123", "confirm_password": "abc123"}), Some(&op))
        .await;
    assert_eq!(c, code(ErrorCode::PasswordRejected), "{m}");
    let (c, m) = d
        .err("auth.change_password", json!({"old_password": "group123", "new_password": "abc123", "confirm_password": "abc124"}), Some(&op))
        .await;
    assert_eq!(c, code(ErrorCode::PasswordRejected), "{m}");
    let changed = d
        .ok("auth.change_password", json!({"old_password": "group123", "new_password": "新密码abc123", "confirm_password": "新密码abc123"}), Some(&op))
        .await;
    assert_eq!(changed["message"], "密码已修改");
    let (c, m) = d
        .err(
            "group.login",
            json!({"group_id": "G001", "username": "group1", "password": "group123"}),
            None,
        )
        .await;
    assert_eq!(
        (c, m.as_str()),
        (code(ErrorCode::InvalidCredentials), "用户和密码错误")
    );
    let op = group_login(&d, "G001", "group1", "新密码abc123").await;
    d.ok("group.info", json!({}), Some(&op)).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (c, m) = d.err("group.info", json!({}), Some(&op)).await;
    assert_eq!(c, code(ErrorCode::Unauthenticated));
    assert!(m.contains("重新登录"), "{m}");
    let op = group_login(&d, "G001", "group1", "新密码abc123").await;
    assert_eq!(quota(&d, &op).await, "500.00");
    d.stop().await;
}

/// One batch worked on two readers at once: each run recharges the card on its own reader, no
/// card is recharged twice, and the report has both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_on_two_readers_at_once() {
    let world_name = format!("group-two-{}", std::process::id());
    let d = start_group_daemon(&world_name, |c| {
        c.readers[0].options["readers"] = json!([
            {"id": "city", "kind": "contactless", "card": "none"},
            {"id": "city2", "kind": "contactless", "card": "none"},
        ]);
    })
    .await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let cards = ["61010000000000000021", "61010000000000000022"];
    let batch = d
        .ok(
            "group.batch.create",
            json!({"items": [
                {"card_number": cards[0], "amount": "30"},
                {"card_number": cards[1], "amount": "40"},
            ]}),
            Some(&op),
        )
        .await;
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    let mut runs = Vec::new();
    for (reader, card) in [("sim:city", cards[0]), ("sim:city2", cards[1])] {
        world.insert_card(reader, city_card(card, 0)).unwrap();
        let start = json!({"flow": "group.batch_recharge", "params": {"batch_id": batch_id}, "idempotency_key": format!("two-{reader}"), "reader_id": reader});
        let run = d.ok("flows.start", start, Some(&op)).await;
        runs.push(run["run_id"].as_str().unwrap().to_owned());
    }
    // Both runs ask; both cards are on their readers.
    let prompts = [
        wait_prompt(&d, &op, &runs[0], 0).await,
        wait_prompt(&d, &op, &runs[1], 0).await,
    ];
    for (run_id, prompt) in runs.iter().zip(&prompts) {
        answer(&d, &op, run_id, prompt, json!("已放好")).await;
    }
    // Whichever run is left asking for a card the other one did is told to pause.
    for (run_id, prompt) in runs.iter().zip(&prompts) {
        let after = prompt["prompt_id"].as_u64().unwrap();
        loop {
            let run = d
                .ok("flows.get", json!({"run_id": run_id}), Some(&op))
                .await;
            if !matches!(run["state"].as_str(), Some("running") | Some("waiting")) {
                break;
            }
            if run["state"] == "waiting" && run["prompt"]["prompt_id"].as_u64() > Some(after) {
                answer(&d, &op, run_id, &run["prompt"], json!("暂停")).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let report = d
        .ok("group.batch.get", json!({"batch_id": batch_id}), Some(&op))
        .await;
    assert_eq!(
        (report["succeeded"].as_u64(), report["pending"].as_u64()),
        (Some(2), Some(0)),
        "{report}"
    );
    assert_eq!(world.card("sim:city").unwrap().balance().unwrap(), 3_000);
    assert_eq!(world.card("sim:city2").unwrap().balance().unwrap(), 4_000);
    assert_eq!(quota(&d, &op).await, "430.00");
    d.stop().await;
}

/// The rules and the vocabulary come from the daemon, once: `group.rules` gives the figures the
/// flows and `group.recharge` use (and the presets as label and fen), `system.vocabulary` the
/// labels the daemon itself writes on its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_and_the_vocabulary_come_from_the_daemon() {
    let world_name = format!("group-rules-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let op = group_login(&d, "G001", "group1", "group123").await;
    let rules = d.ok("group.rules", json!({}), Some(&op)).await;
    assert_eq!(rules["step_fen"], 1_000, "{rules}");
    assert_eq!(rules["min_fen"], 1_000, "{rules}");
    assert_eq!(rules["card_balance_max_fen"], 100_000, "{rules}");
    assert_eq!(rules["card_balance_max_yuan"], "1000", "{rules}");
    assert_eq!(
        rules["presets"][0],
        json!({"label": "10元", "fen": 1_000, "amount": "10.00"})
    );
    let info = d.ok("group.info", json!({}), Some(&op)).await;
    let amounts: Vec<Value> = rules["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount"].clone())
        .collect();
    assert_eq!(info["amount_presets"], json!(amounts));

    let words = d.ok("system.vocabulary", json!({}), Some(&op)).await;
    let label = |list: &str, code: &str| {
        words[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["code"] == code)
            .map(|t| t["label"].clone())
    };
    assert_eq!(label("roles", "group_operator"), Some(json!("集团操作员")));
    assert_eq!(
        label("order_statuses", "pending"),
        Some(json!("结果待确认"))
    );
    assert_eq!(
        label("topup_statuses", "paid"),
        Some(json!("转账成功（待审核）"))
    );
    assert_eq!(
        words["query_periods"][0],
        json!({"code": "last_7_days", "label": "最近7天"})
    );
    assert_eq!(
        words["plate_colours"][0],
        json!({"code": 0, "label": "蓝色"})
    );
    // The query page's period label is the vocabulary's.
    let q = d
        .ok("group.orders", json!({"preset": "last_month"}), Some(&op))
        .await;
    assert_eq!(
        Some(q["period"]["label"].clone()),
        label("query_periods", "last_month")
    );
    d.stop().await;
}

/// The amount picked from the page's buttons (10元 … 100元) instead of typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amount_can_be_picked_from_the_presets() {
    let world_name = format!("group-pick-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let op = group_login(&d, "G001", "group1", "group123").await;
    let start = json!({"flow": "group.recharge", "params": {}, "idempotency_key": "pick-1", "reader_id": "sim:city"});
    let run = d.ok("flows.start", start, Some(&op)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let prompt = wait_prompt(&d, &op, &run_id, 0).await;
    assert_eq!(prompt["message"], "请选择充值金额");
    assert_eq!(
        prompt["choices"],
        json!(["10元", "20元", "30元", "50元", "100元"])
    );
    answer(&d, &op, &run_id, &prompt, json!("50元")).await;
    let done = run_to_end(&d, &op, &run_id).await;
    assert_eq!(done["result"]["amount"], "50.00", "{done}");
    assert_eq!(done["result"]["balance_after"], "100.00");
    d.stop().await;
}

/// A batch left in the middle by a daemon that stopped goes on where it stopped when the flow
/// is started again on the restarted daemon: the card already recharged is not asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resumes_after_the_daemon_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let world_name = format!("group-restart-{}", std::process::id());
    let config = {
        let (dir, world) = (tmp.path().to_path_buf(), world_name.clone());
        move |c: &mut cardd::config::Config| {
            c.data_dir = dir.join("data");
            c.readers[0].options = json!({ "world": world, "state_dir": dir.join("cards") });
        }
    };
    let cards = ["61010000000000000031", "61010000000000000032"];
    let d = TestDaemon::start_with(config.clone()).await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let batch = d
        .ok(
            "group.batch.create",
            json!({"items": [
                {"card_number": cards[0], "amount": "10"},
                {"card_number": cards[1], "amount": "20"},
            ]}),
            Some(&op),
        )
        .await;
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    let start = |key: &str| json!({"flow": "group.batch_recharge", "params": {"batch_id": batch_id}, "idempotency_key": key, "reader_id": "sim:city"});
    world.remove_card("sim:city");
    world
        .insert_card("sim:city", city_card(cards[0], 0))
        .unwrap();
    let run = d.ok("flows.start", start("r-1"), Some(&op)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let prompt = wait_prompt(&d, &op, &run_id, 0).await;
    answer(&d, &op, &run_id, &prompt, json!("已放好")).await;
    let next = wait_prompt(&d, &op, &run_id, prompt["prompt_id"].as_u64().unwrap()).await;
    assert!(
        next["message"].as_str().unwrap().contains(cards[1]),
        "{next}"
    );
    // The operator walks away; the daemon is stopped and started again.
    d.ok("flows.cancel", json!({"run_id": run_id}), Some(&op))
        .await;
    // Cancelled: wait for it to end without answering its question again.
    let ended = wait_ended(&d, &op, &run_id).await;
    assert_ne!(ended["state"], "succeeded");
    let gone = std::sync::Arc::downgrade(d.daemon());
    d.stop().await;
    // The database is free once the last holder of the daemon (the ending flow thread) let go.
    for _ in 0..250 {
        if gone.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone.upgrade().is_none(), "the stopped daemon is released");

    // sled lets go of its file lock once its background flusher has stopped.
    let d = TestDaemon::start_again_with(config).await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let report = d
        .ok("group.batch.get", json!({"batch_id": batch_id}), Some(&op))
        .await;
    assert_eq!(
        (report["succeeded"].as_u64(), report["pending"].as_u64()),
        (Some(1), Some(1))
    );
    let run = d.ok("flows.start", start("r-2"), Some(&op)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let prompt = wait_prompt(&d, &op, &run_id, 0).await;
    assert!(
        prompt["message"].as_str().unwrap().contains(cards[1]),
        "{prompt}"
    );
    world.remove_card("sim:city");
    world
        .insert_card("sim:city", city_card(cards[1], 0))
        .unwrap();
    answer(&d, &op, &run_id, &prompt, json!("已放好")).await;
    let done = run_to_end(&d, &op, &run_id).await;
    assert_eq!(done["result"]["status"], "done", "{done}");
    assert_eq!(done["result"]["report"]["succeeded"], 2);
    assert_eq!(quota(&d, &op).await, "470.00");
    d.stop().await;
}

/// The batch operator's desk: the cards in hand and the one on `sim:city`.
struct Desk {
    world: cardd_sim::SimWorld,
    hand: std::collections::HashMap<String, cardd_sim::SimCard>,
    on_reader: Option<String>,
}

impl Desk {
    /// Picks up a card the reader dropped (pulled mid-command).
    fn pick_up(&mut self) {
        if self.world.card("sim:city").is_none() {
            if let Some(card) = self.world.take_pocket("sim:city") {
                self.hand.insert(card.card_number(), card);
            }
            self.on_reader = None;
        }
    }

    /// Puts `card_number` on the reader (taking off the card there) and waits until the
    /// daemon's own check of the inserted card is done.
    async fn present(&mut self, card_number: &str) {
        self.pick_up();
        if self.on_reader.as_deref() == Some(card_number) {
            return;
        }
        if let Some(card) = self.world.remove_card("sim:city") {
            self.hand.insert(card.card_number(), card);
        }
        let card = self.hand.remove(card_number).expect("the card in hand");
        self.world.insert_card("sim:city", card).unwrap();
        self.on_reader = Some(card_number.to_owned());
        settle_apdus(&self.world).await;
    }

    /// The card's balance, wherever it is.
    fn balance(&mut self, card_number: &str) -> i64 {
        self.pick_up();
        let card = match self.on_reader.as_deref() {
            Some(n) if n == card_number => self.world.card("sim:city").unwrap(),
            _ => self.hand.get(card_number).unwrap().clone(),
        };
        i64::from(card.balance().unwrap())
    }
}

/// The run's next question after prompt `after`, or `None` once it ended.
async fn next_prompt(d: &TestDaemon, token: &str, run_id: &str, after: u64) -> Option<Value> {
    for _ in 0..1_500 {
        let run = d
            .ok("flows.get", json!({"run_id": run_id}), Some(token))
            .await;
        if run["state"] == "waiting" && run["prompt"]["prompt_id"].as_u64() > Some(after) {
            return Some(run["prompt"].clone());
        }
        if !matches!(run["state"].as_str(), Some("running") | Some("waiting")) {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("run {run_id} neither asked nor ended");
}

/// Runs `group.batch_recharge` on `batch_id` as an operator would: each card asked for is put
/// on the reader and 已放好 answered. `fault` = (card, n, kind): the first time that card is on
/// the reader, it is pulled at its n-th APDU after the answer. Returns the finished run and the
/// number of APDUs the first card sent between its first 已放好 and the next question.
async fn run_batch(
    d: &TestDaemon,
    op: &str,
    desk: &mut Desk,
    batch_id: &str,
    key: &str,
    mut fault: Option<(&str, u64, cardd_sim::FaultKind)>,
) -> (Value, u64) {
    let start = json!({"flow": "group.batch_recharge", "params": {"batch_id": batch_id}, "idempotency_key": key, "reader_id": "sim:city"});
    let run = d.ok("flows.start", start, Some(op)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let (mut after, mut first_apdus, mut counted_from) = (0, 0, None);
    while let Some(prompt) = next_prompt(d, op, &run_id, after).await {
        if let Some(from) = counted_from.take() {
            first_apdus = desk.world.apdu_count("sim:city") - from;
        }
        after = prompt["prompt_id"].as_u64().unwrap();
        assert!(after <= 20, "the batch keeps asking: {prompt}");
        let message = prompt["message"].as_str().unwrap().to_owned();
        let wanted = message
            .split_once("请将卡号 ")
            .and_then(|(_, rest)| rest.split_once(' '))
            .map(|(card, _)| card.to_owned())
            .unwrap_or_else(|| panic!("{prompt}"));
        desk.present(&wanted).await;
        let count = desk.world.apdu_count("sim:city");
        if after == 1 {
            counted_from = Some(count);
        }
        if let Some((_, n, kind)) = fault.take_if(|(card, _, _)| *card == wanted) {
            desk.world
                .set_fault_plan("sim:city", cardd_sim::FaultPlan::new().at(count + n, kind))
                .unwrap();
        }
        answer(d, op, &run_id, &prompt, json!("已放好")).await;
    }
    desk.pick_up();
    let done = d.ok("flows.get", json!({"run_id": run_id}), Some(op)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    (done, first_apdus)
}

/// The orders of `card_number` (this test gives every case its own cards).
fn orders_of(d: &TestDaemon, card_number: &str) -> Vec<cardd_group::model::RechargeOrder> {
    let svc = d.daemon().group.as_ref().unwrap();
    let period = cardd_group::model::Period::preset(
        cardd_group::model::Preset::Last7Days,
        time::OffsetDateTime::now_utc(),
    );
    svc.host
        .orders("G001", &period)
        .unwrap()
        .into_iter()
        .filter(|o| o.card_number == card_number)
        .collect()
}

fn available_fen(d: &TestDaemon) -> i64 {
    let svc = d.daemon().group.as_ref().unwrap();
    svc.host.group("G001").unwrap().unwrap().available_fen
}

fn load_committed(d: &TestDaemon, txn_id: &str) -> bool {
    let txn = d.daemon().journal.as_ref().unwrap().get(txn_id).unwrap();
    matches!(
        txn.map(|t| t.state),
        Some(cardd_journal::TxnState::Committed { .. })
    )
}

/// The progress lines a run showed for `card_number`'s recharge.
async fn progress_for(d: &TestDaemon, op: &str, run: &Value, card_number: &str) -> Vec<String> {
    let events = d
        .ok("flows.events", json!({"run_id": run["run_id"]}), Some(op))
        .await;
    let prefix = format!("卡号 {card_number}：");
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "progress")
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// A batch over two cards, the first pulled at every APDU of its recharge (from the operator's
/// 已放好 to the next question), before the command executes and after it executed with the
/// answer lost. The operator answers the batch's questions as a person would, presents again a
/// card whose result is 结果待确认, runs the batch again (new key) for a card not yet tried and
/// puts a card whose order failed into a new batch, until every card is recharged. Per item:
/// the money on each card is its amount exactly once and equals its succeeded orders; 充值失败
/// is shown only for an order the card proved it did not take (a refundable order never has
/// its money on the card); the quota spent is succeeded + refundable, the auditor refunds
/// exactly the failed orders, and then the quota is charged once per card and the ledger sums
/// to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_removal_at_every_apdu_of_a_batch_item_pays_each_item_once() {
    use cardd_group::model::{OrderStatus, PaymentOutcome};
    let world_name = format!("group-batch-matrix-{}", std::process::id());
    let d = start_group_daemon(&world_name, |_| {}).await;
    let world = cardd_sim::named_world(&world_name).unwrap();
    let op = group_login(&d, "G001", "group1", "group123").await;
    let auditor = d.login("auditor", "audit123").await;
    // Enough quota for every case (the demo's is 500.00).
    let svc = d.daemon().group.as_ref().unwrap();
    let topup = svc
        .host
        .create_topup("G001", "group1", 200_000, "批量充值测试")
        .unwrap();
    svc.host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: "T1".into(),
            },
        )
        .unwrap();
    svc.host
        .audit_topup(&topup.topup_id, "auditor", true, "到账")
        .unwrap();
    settle_apdus(&world).await;
    world.remove_card("sim:city");
    let mut desk = Desk {
        world: world.clone(),
        hand: Default::default(),
        on_reader: None,
    };
    let mut serial = 0u32;
    let mut new_cards = |desk: &mut Desk| -> [String; 2] {
        [0, 1].map(|_| {
            serial += 1;
            let number = format!("61010000000000{:06}", 500 + serial);
            desk.hand.insert(number.clone(), city_card(&number, 0));
            number
        })
    };
    let create = |cards: &[(String, &str)]| {
        let items: Vec<Value> = cards
            .iter()
            .map(|(c, a)| json!({"card_number": c, "amount": a}))
            .collect();
        json!({ "items": items })
    };

    // A clean batch: how many APDUs the first card's recharge sends.
    let cards = new_cards(&mut desk);
    let batch = d
        .ok(
            "group.batch.create",
            create(&[(cards[0].clone(), "10"), (cards[1].clone(), "20")]),
            Some(&op),
        )
        .await;
    let (done, apdus) = run_batch(
        &d,
        &op,
        &mut desk,
        batch["batch_id"].as_str().unwrap(),
        "clean",
        None,
    )
    .await;
    assert_eq!(done["result"]["report"]["succeeded"], 2, "{done}");
    assert!(apdus >= 8, "the first card's recharge sends {apdus} APDUs");

    let (mut cases, mut follow_ups, mut refunds, mut unknown_shown) = (0, 0, 0, 0);
    for n in 1..=apdus {
        for kind in [
            cardd_sim::FaultKind::RemoveBeforeExec,
            cardd_sim::FaultKind::RemoveAfterExec,
        ] {
            let what = format!("batch item n={n} {kind:?}");
            let cards = new_cards(&mut desk);
            let amounts = [1_000i64, 2_000];
            let quota_start = available_fen(&d);
            let batch = d
                .ok(
                    "group.batch.create",
                    create(&[(cards[0].clone(), "10"), (cards[1].clone(), "20")]),
                    Some(&op),
                )
                .await;
            let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
            let (done, _) = run_batch(
                &d,
                &op,
                &mut desk,
                &batch_id,
                &format!("{what}-1"),
                Some((cards[0].as_str(), n, kind.clone())),
            )
            .await;
            // What the operator was told about the pulled card matches its order.
            for line in progress_for(&d, &op, &done, &cards[0]).await {
                let orders = orders_of(&d, &cards[0]);
                let order = orders.first();
                if line.contains("失败") && !line.contains("读卡失败") {
                    let order = order.unwrap_or_else(|| panic!("{what}: {line}"));
                    if line.contains("充值失败") {
                        assert_eq!(order.status, OrderStatus::Failed, "{what}: {line}");
                    }
                    assert!(
                        !load_committed(&d, &order.txn_id),
                        "{what}: failed with the money on the card: {line}"
                    );
                }
                if line.contains("待确认") {
                    unknown_shown += 1;
                    assert!(!line.contains("失败"), "{what}: {line}");
                    assert!(line.contains("切勿重复充值"), "{what}: {line}");
                    assert_eq!(
                        order.map(|o| o.status),
                        Some(OrderStatus::Pending),
                        "{what}: {line}"
                    );
                }
            }
            // The operator follows up until every card of the batch is recharged.
            let mut rounds = 0;
            loop {
                let mut all_done = true;
                for (i, card) in cards.iter().enumerate() {
                    let orders = orders_of(&d, card);
                    if orders.iter().any(|o| o.status == OrderStatus::Succeeded) {
                        continue;
                    }
                    all_done = false;
                    rounds += 1;
                    follow_ups += 1;
                    assert!(
                        rounds <= 6,
                        "{what}: the operator never finishes: {orders:?}"
                    );
                    if let Some(open) = orders
                        .iter()
                        .find(|o| matches!(o.status, OrderStatus::Pending | OrderStatus::Reserved))
                    {
                        // 结果待确认: the card is presented again and settles it.
                        desk.present(card).await;
                        for _ in 0..100 {
                            cardd::methods::group::reconcile(d.daemon()).unwrap();
                            let now = svc.host.order(&open.order_id).unwrap().unwrap().status;
                            if !matches!(now, OrderStatus::Pending | OrderStatus::Reserved) {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    } else if orders.is_empty() {
                        // Not tried yet: the same batch again, with a new key.
                        let (again, _) = run_batch(
                            &d,
                            &op,
                            &mut desk,
                            &batch_id,
                            &format!("{what}-r{rounds}"),
                            None,
                        )
                        .await;
                        assert_ne!(again["result"]["status"], "failed", "{what}: {again}");
                    } else {
                        // Failed (refundable): a new batch for that card.
                        let amount = if i == 0 { "10" } else { "20" };
                        let retry = d
                            .ok(
                                "group.batch.create",
                                create(&[(card.clone(), amount)]),
                                Some(&op),
                            )
                            .await;
                        run_batch(
                            &d,
                            &op,
                            &mut desk,
                            retry["batch_id"].as_str().unwrap(),
                            &format!("{what}-n{rounds}"),
                            None,
                        )
                        .await;
                    }
                }
                if all_done {
                    break;
                }
            }
            cardd::methods::group::reconcile(d.daemon()).unwrap();
            // Per item: the money on the card is the amount once, and the succeeded orders.
            let mut spent_before_refunds = 0;
            for (card, amount) in cards.iter().zip(amounts) {
                let orders = orders_of(&d, card);
                let succeeded: i64 = orders
                    .iter()
                    .filter(|o| o.status == OrderStatus::Succeeded)
                    .map(|o| o.amount_fen)
                    .sum();
                assert_eq!(
                    desk.balance(card),
                    amount,
                    "{what}: {card} paid exactly once: {orders:?}"
                );
                assert_eq!(
                    succeeded, amount,
                    "{what}: {card}'s succeeded orders: {orders:?}"
                );
                for order in &orders {
                    match order.status {
                        OrderStatus::Succeeded => {
                            assert!(load_committed(&d, &order.txn_id), "{what}: {order:?}")
                        }
                        OrderStatus::Failed => assert!(
                            !load_committed(&d, &order.txn_id),
                            "{what}: refundable with its money on the card: {order:?}"
                        ),
                        other => panic!("{what}: {} left {other:?}", order.order_id),
                    }
                    spent_before_refunds += order.amount_fen;
                }
            }
            assert_eq!(
                quota_start - available_fen(&d),
                spent_before_refunds,
                "{what}: quota spent = succeeded + refundable"
            );
            // The auditor refunds exactly the failed orders: the card proves they did not land.
            let pending = d.ok("group.audit.pending", json!({}), Some(&auditor)).await;
            for ev in pending["orders"].as_array().unwrap() {
                assert_eq!(ev["verdict"], "not_landed", "{what}: {ev}");
                d.ok(
                    "group.audit.refund",
                    json!({"order_id": ev["order"]["order_id"], "reason": "按卡片证据处理"}),
                    Some(&auditor),
                )
                .await;
                refunds += 1;
            }
            assert_eq!(
                quota_start - available_fen(&d),
                amounts.iter().sum::<i64>(),
                "{what}: the quota is charged once per card"
            );
            cases += 1;
        }
    }
    let ledger: i64 = svc
        .host
        .ledger("G001", 0, 100_000)
        .unwrap()
        .iter()
        .map(|e| e.amount_fen)
        .sum();
    assert_eq!(ledger, available_fen(&d), "the ledger sums to the quota");
    println!("batch item removal matrix: {apdus} APDUs x 2 = {cases} cases; {follow_ups} follow-ups, {refunds} refunds, {unknown_shown} 结果待确认 shown");
    assert!(follow_ups > 0, "the operator had to follow up");
    assert!(
        unknown_shown > 0 && refunds > 0,
        "unknown and refunded outcomes were exercised"
    );
    d.stop().await;
}
