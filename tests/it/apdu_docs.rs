//! `docs/apdus.md`, written from a recorded trace: every API method and flow step that uses a
//! card reader is driven on the embedded default's simulated readers with the APDU trace
//! recorder on, and the document lists, per method or step and card, the commands the trace
//! holds (the context marks the daemon writes say which is which). The test fails when the
//! committed document differs; `UPDATE_DOCS=1` rewrites it. So the list cannot go stale.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use cardd::config::TraceConfig;
use cardd_reader::trace::{TraceRecord, TRACE_BYTES_MAX_DEFAULT};
use common::group::{group_login, run_recharge};
use common::TestDaemon;
use serde_json::json;

/// The demo's 未圈存 records of card …0001: 50.00 yuan and 200.00 yuan.
const R50: &str = "R20240620000001";
const R200: &str = "R20240615000001";
const READERS: [&str; 3] = ["sim:etc", "sim:city", "sim:obu"];

/// Waits until start-up recovery has read every card and the readers are quiet.
async fn quiet(world: &cardd_sim::SimWorld) {
    let give_up = Instant::now() + Duration::from_secs(60);
    let count = || READERS.map(|r| world.apdu_count(r));
    let mut last = count();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = count();
        if now == last && now.iter().all(|&n| n > 0) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "the readers never settled: {now:?}"
        );
        last = now;
    }
}

/// The name of a command of docs/card-protocol.md.
fn command_name(h: &[u8]) -> String {
    match (h[0], h[1], h[2]) {
        (_, 0xA4, _) => "SELECT".into(),
        (_, 0xB0, _) => "READ BINARY".into(),
        (_, 0xB2, _) => "READ RECORD".into(),
        (_, 0x20, _) => "VERIFY PIN".into(),
        (_, 0x84, _) => "GET CHALLENGE".into(),
        (0x04, 0xD6, _) => "UPDATE BINARY (secure messaging)".into(),
        (_, 0x5C, _) => "GET BALANCE".into(),
        (_, 0x50, 0x00) => "INITIALIZE FOR LOAD".into(),
        (_, 0x50, 0x01) => "INITIALIZE FOR PURCHASE".into(),
        (_, 0x50, 0x03) => "INITIALIZE FOR CAPP PURCHASE".into(),
        (_, 0x52, _) => "CREDIT FOR LOAD".into(),
        (_, 0x54, _) => "DEBIT FOR PURCHASE".into(),
        (_, 0xDC, _) => "UPDATE CAPP DATA CACHE".into(),
        (_, 0x5A, _) => "GET TRANSACTION PROVE".into(),
        (_, 0xF6, _) => "GET CHIP ID".into(),
        (_, 0xB4, _) => "READ ENCRYPTED".into(),
        (_, 0xC0, _) => "GET RESPONSE".into(),
        (_, ins, _) => format!("INS {ins:02X}"),
    }
}

/// What the command carries: its data (shown when it names a file or application, described
/// otherwise) and Le.
fn command_data(cmd: &str, hidden_what: &[String]) -> String {
    let bytes: Vec<&str> = (0..cmd.len() / 2).map(|i| &cmd[i * 2..i * 2 + 2]).collect();
    let byte = |i: usize| u8::from_str_radix(bytes[i], 16).unwrap_or(0);
    let (ins, p1, p2) = (byte(1), byte(2), byte(3));
    let body = &bytes[4..];
    let (data, le): (&[&str], Option<&str>) = match body {
        [] => (&[], None),
        [le] => (&[], Some(le)),
        [lc, rest @ ..] => {
            let n = usize::from(u8::from_str_radix(lc, 16).unwrap_or(0));
            (&rest[..n.min(rest.len())], rest.get(n).copied())
        }
    };
    let hidden = data.iter().filter(|b| **b == "**").count();
    let mut out = match ins {
        0xA4 => data.concat(),
        0xB0 if p1 & 0x80 != 0 => format!("SFI {:02X}, offset {p2}", p1 & 0x1F),
        0xB0 => format!("offset {}", u16::from_be_bytes([p1, p2])),
        0xB2 => format!("record {p1}, SFI {:02X}", p2 >> 3),
        0x20 => format!("PIN ({} bytes)", data.len()),
        0x50 => "key index, amount(4), terminal(6)".into(),
        0x52 => "date(4), time(3), MAC2(4)".into(),
        0x5A => "ATC(2)".into(),
        0xD6 => format!(
            "{} bytes of file data, MAC(4)",
            data.len().saturating_sub(4)
        ),
        0xB4 => "random(8), key id, key version".into(),
        _ if data.is_empty() => String::new(),
        _ => format!("{} bytes", data.len()),
    };
    if hidden > 0 {
        let _ = write!(out, "; *hidden*: {}", hidden_what.join(", "));
    }
    if let Some(le) = le {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "Le {le}");
    }
    out
}

fn answer(r: &TraceRecord) -> String {
    match (&r.sw, &r.err) {
        (Some(sw), _) => {
            let data = r
                .rsp
                .as_deref()
                .map_or(0, |h| h.len() / 2)
                .saturating_sub(2);
            let mut out = if data > 0 {
                format!("{data} bytes, {sw}")
            } else {
                sw.clone()
            };
            if !r.rsp_hidden.is_empty() {
                let _ = write!(out, "; *hidden*: {}", r.rsp_hidden.join(", "));
            }
            out
        }
        (None, Some(err)) => format!("reader error: {err}"),
        _ => String::new(),
    }
}

/// What the card on each simulated reader is.
fn card_of(reader: &str) -> &str {
    match reader {
        "sim:etc" => "ETC user card",
        "sim:city" => "city one-card",
        "sim:obu" => "OBU (ESAM)",
        other => other,
    }
}

/// Whether a context mark belongs to a part of the document.
type Belongs = fn(&str) -> bool;

/// The document: per context mark and reader, the first run's exchanges.
fn render(trace: &str) -> String {
    let mut readers: BTreeMap<u64, String> = BTreeMap::new();
    let mut current: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut done: BTreeSet<(String, String)> = BTreeSet::new();
    let mut sections: BTreeMap<(String, String), Vec<TraceRecord>> = BTreeMap::new();
    for line in trace.lines() {
        let r = TraceRecord::parse(line).expect("a trace record");
        let Some(s) = r.s else { continue };
        if let Some(id) = &r.open {
            readers.insert(s, id.clone());
        }
        let reader = readers.get(&s).cloned().unwrap_or_default();
        if let Some(mark) = &r.mark {
            if let Some(previous) = current.remove(&s) {
                done.insert(previous);
            }
            let key = (mark.clone(), reader);
            if !done.contains(&key) {
                sections.entry(key.clone()).or_default();
                current.insert(s, key);
            }
            continue;
        }
        if r.is_exchange() {
            if let Some(key) = current.get(&s) {
                sections.entry(key.clone()).or_default().push(r);
            }
        }
    }
    let mut out = String::from(
        "# The APDUs each API method and flow step sends\n\n\
         Generated by `tests/it/apdu_docs.rs` from an APDU trace (docs/traces.md) of the embedded \
         default's simulated readers; `cargo xtask test` checks it is current, \
         `UPDATE_DOCS=1 cargo test -p cardd-tests --test it -- apdu_docs` rewrites it.\n\n\
         Each table is the first time the method or step ran on that card in the recorded \
         session: header (CLA INS P1 P2), the command of [card-protocol.md](card-protocol.md), \
         what its data carries (file and application names are shown, values that change from \
         run to run are described) and the card's answer. What the trace recorder hides by \
         default (PINs, MACs, TACs, key material) is marked *hidden*. `GET RESPONSE` appears \
         only where the card uses T=0 chaining; the reader layer sends it.\n\n\
         Not run here: the OBU programmer's serial framing (drivers/serial/PROTOCOL.md); \
         `reader.transmit` (administrators' raw APDU, sends what it is given); and the card \
         check of `journal.propose_lost_card` / `journal.confirm_lost_card`, which runs only \
         while a load is unsettled and, with its card on a reader, identifies the card, \
         presents the configured PIN to an ETC card and reads the load's counters and proof \
         (`cardd_journal::card_view_of`). 二次圈存 (after 修改圈存状态) is the same `etc.load` \
         flow as 圈存 and sends the same commands.\n",
    );
    let groups: [(&str, Belongs); 3] = [
        ("API methods", |m| {
            !m.starts_with("flow ") && !m.starts_with("recovery")
        }),
        ("Flow steps", |m| m.starts_with("flow ")),
        ("The daemon's own card checks", |m| {
            m.starts_with("recovery")
        }),
    ];
    for (title, belongs) in groups {
        let _ = write!(out, "\n## {title}\n");
        for ((mark, reader), records) in &sections {
            if !belongs(mark) || records.is_empty() {
                continue;
            }
            let _ = write!(
                out,
                "\n### `{mark}` — {} (`{reader}`)\n\n| # | to | CLA INS P1 P2 | command | data | answer |\n|---|---|---|---|---|---|\n",
                card_of(reader)
            );
            for (i, r) in records.iter().enumerate() {
                let cmd = r.cmd.as_deref().unwrap_or("");
                let header: Vec<u8> = (0..4)
                    .filter_map(|j| u8::from_str_radix(cmd.get(j * 2..j * 2 + 2)?, 16).ok())
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | `{}` | {} | {} | {} |",
                    i + 1,
                    r.to.as_deref().unwrap_or("card"),
                    header
                        .iter()
                        .map(|b| format!("{b:02X}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    command_name(&header),
                    command_data(cmd, &r.hidden),
                    answer(r),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apdu_list_is_generated_from_a_recorded_trace() {
    let w = format!("apdu-docs-{}", std::process::id());
    let traces = tempfile::tempdir().expect("temp dir");
    let path = traces.path().join("trace.jsonl");
    let (name, trace_path) = (w.clone(), path.clone());
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": name });
        c.readers[0].trace = Some(TraceConfig {
            path: trace_path,
            bytes_max: TRACE_BYTES_MAX_DEFAULT,
            redact: true,
        });
    })
    .await;
    let world = cardd_sim::named_world(&w).expect("the daemon's world");
    quiet(&world).await;
    let teller = d.login("teller", "teller123").await;

    // Reads.
    for reader in ["sim:etc", "sim:city"] {
        d.ok(
            "card.summary",
            json!({ "reader_id": reader }),
            Some(&teller),
        )
        .await;
        d.ok(
            "card.balance",
            json!({ "reader_id": reader }),
            Some(&teller),
        )
        .await;
    }
    d.ok(
        "card.summary",
        json!({ "reader_id": "sim:etc", "online_counter": true }),
        Some(&teller),
    )
    .await;
    // 圈存 of a recharge record, and the card evidence of another.
    let start = json!({"flow": "etc.load", "params": {"record_id": R50}, "idempotency_key": "docs-1", "reader_id": "sim:etc"});
    let run = d.drive(&teller, start, |_| json!(true)).await.done;
    assert_eq!(run["state"], "succeeded", "{run}");
    d.ok(
        "etc.records.evidence",
        json!({"record_id": R200, "reader_id": "sim:etc"}),
        Some(&teller),
    )
    .await;
    // 集团充值.
    let op = group_login(&d, "G001", "group1", "group123").await;
    let run = run_recharge(&d, &op, json!({"amount": "10.00"}), "docs-2").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let order_id = run["result"]["order_id"]
        .as_str()
        .expect("order id")
        .to_owned();
    let auditor = d.login("auditor", "audit123").await;
    d.ok(
        "group.audit.evidence",
        json!({"order_id": order_id, "reader_id": "sim:city"}),
        Some(&auditor),
    )
    .await;
    // OBU发行.
    crate::obu_issue::put_obu(
        &world,
        crate::obu_issue::factory_obu(cardd_sim::demo::DEMO_OBU_CONTRACT_SERIAL),
    );
    let start = json!({"flow": "obu.issue", "params": crate::obu_issue::demo_params(), "idempotency_key": "docs-3", "reader_id": "sim:obu"});
    let run = d.drive(&teller, start, |_| json!(true)).await.done;
    assert_eq!(run["state"], "succeeded", "{run}");
    d.stop().await;

    let trace = std::fs::read_to_string(&path).expect("the trace");
    let doc = render(&trace);
    // What the list must show: reads present no PIN and start no load.
    for read in [
        "`card.summary` — ETC",
        "`card.balance` — ETC",
        "`card.summary` — city",
    ] {
        let section = doc
            .split("\n### ")
            .find(|s| s.starts_with(read))
            .expect(read);
        assert!(
            !section.contains("VERIFY PIN") && !section.contains("INITIALIZE"),
            "{section}"
        );
    }
    assert!(doc.contains("`card.summary online_counter`"), "{doc}");
    assert!(doc.contains("CREDIT FOR LOAD"), "{doc}");
    assert!(doc.contains("UPDATE BINARY (secure messaging)"), "{doc}");
    assert!(
        !trace.contains(&hex::encode_upper("123456")),
        "a PIN in the trace"
    );

    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/apdus.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&committed, &doc).expect("write docs/apdus.md");
    }
    let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        on_disk == doc,
        "docs/apdus.md is stale: run UPDATE_DOCS=1 cargo test -p cardd-tests --test it -- apdu_docs"
    );
}
