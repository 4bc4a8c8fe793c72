//! Reads that cannot hurt a card: the APDUs each read method sends, recorded by the simulated
//! reader. A plain `card.summary`, `card.balance` and the flows' `card.info()` present no PIN
//! (VERIFY, `00 20`) and start no load (INITIALIZE FOR LOAD, `80 50`); the online counter is
//! read only on explicit request (`online_counter`), which does both. `etc.records.evidence`
//! reads the card's files, balance and log. A PIN a card refused is never presented to that
//! card again (`cardd_purse::pin`).

use crate::common;

use common::TestDaemon;
use serde_json::json;

const VERIFY: [u8; 2] = [0x00, 0x20];
const INITIALIZE: [u8; 2] = [0x80, 0x50];

fn world(name: &str) -> cardd_sim::SimWorld {
    cardd_sim::named_world(name).unwrap()
}

/// The CLA INS pairs the reader passed on since the last look, and forgets them.
fn sent(world: &cardd_sim::SimWorld, reader: &str) -> Vec<[u8; 2]> {
    let headers = world.command_headers(reader);
    world.clear_command_headers(reader);
    headers.iter().map(|h| [h[0], h[1]]).collect()
}

fn hex(pairs: &[[u8; 2]]) -> String {
    pairs
        .iter()
        .map(|p| format!("{:02X}{:02X}", p[0], p[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_present_no_pin_and_start_no_load() {
    let w = format!("card-reads-{}", std::process::id());
    let name = w.clone();
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": name });
    })
    .await;
    let teller = d.login("teller", "teller123").await;
    let world = world(&w);

    for reader in ["sim:etc", "sim:city"] {
        sent(&world, reader);
        let summary = d
            .ok(
                "card.summary",
                json!({ "reader_id": reader }),
                Some(&teller),
            )
            .await;
        let apdus = sent(&world, reader);
        println!("card.summary on {reader}: {}", hex(&apdus));
        assert!(!apdus.is_empty());
        assert!(
            !apdus.contains(&VERIFY) && !apdus.contains(&INITIALIZE),
            "card.summary on {reader} sent {}",
            hex(&apdus)
        );
        assert!(summary["online_atc"].is_null(), "{summary}");
        assert!(summary["balance"].is_string(), "{summary}");

        d.ok(
            "card.balance",
            json!({ "reader_id": reader }),
            Some(&teller),
        )
        .await;
        let apdus = sent(&world, reader);
        println!("card.balance on {reader}: {}", hex(&apdus));
        assert!(
            apdus.iter().all(|a| a[1] == 0x5C || a[1] == 0xA4),
            "card.balance sends GET BALANCE (and SELECT when needed) only: {}",
            hex(&apdus)
        );
    }

    // The evidence about a record, read from its card (no load open for the card): the card's
    // files, balance and log only.
    let evidence = d
        .ok(
            "etc.records.evidence",
            json!({ "record_id": "R20240620000001", "reader_id": "sim:etc" }),
            Some(&teller),
        )
        .await;
    assert_eq!(evidence["evidence"]["card_checked"], true, "{evidence}");
    let apdus = sent(&world, "sim:etc");
    println!("etc.records.evidence on sim:etc: {}", hex(&apdus));
    assert!(
        apdus
            .iter()
            .all(|a| matches!(a[1], 0xA4 | 0xB0 | 0xB2 | 0x5C)),
        "etc.records.evidence sends SELECT, READ BINARY, READ RECORD and GET BALANCE only: {}",
        hex(&apdus)
    );

    // The online counter, asked for: the PIN and a probing INITIALIZE, nothing written.
    let before = world.card("sim:etc").unwrap().balance();
    let summary = d
        .ok(
            "card.summary",
            json!({ "reader_id": "sim:etc", "online_counter": true }),
            Some(&teller),
        )
        .await;
    let apdus = sent(&world, "sim:etc");
    println!("card.summary online_counter on sim:etc: {}", hex(&apdus));
    assert!(apdus.contains(&VERIFY) && apdus.contains(&INITIALIZE));
    assert!(summary["online_atc"].is_u64(), "{summary}");
    assert_eq!(world.card("sim:etc").unwrap().balance(), before);
    d.stop().await;
}

/// A PIN a card refused is never presented to that card again, by any path and across a
/// restart; the operator is told; a corrected PIN is presented once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_a_card_refused_is_never_presented_to_it_again() {
    let w = format!("card-reads-pin-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let base = common::on_dir(dir.path(), &w);
    let wrong = {
        let base = base.clone();
        move |c: &mut cardd::config::Config| {
            base(c);
            c.etc_pin = "999999".into();
        }
    };
    let verifies = |world: &cardd_sim::SimWorld| {
        sent(world, "sim:etc")
            .iter()
            .filter(|a| **a == VERIFY)
            .count()
    };
    let online = json!({ "reader_id": "sim:etc", "online_counter": true });
    let load = |key: &str| {
        json!({"flow": "etc.load", "params": {"record_id": "R20240620000001"},
               "idempotency_key": key, "reader_id": "sim:etc"})
    };

    let d = TestDaemon::start_with(wrong.clone()).await;
    let teller = d.login("teller", "teller123").await;
    let world = world(&w);
    let balance = world.card("sim:etc").unwrap().balance();
    sent(&world, "sim:etc");

    // The first explicit request presents the wrong PIN once: the card refuses, the teller is
    // told, and the refusal is recorded.
    let s = d.ok("card.summary", online.clone(), Some(&teller)).await;
    assert_eq!(verifies(&world), 1);
    assert!(s["online_atc"].is_null(), "{s}");
    assert!(s["notes"].to_string().contains("不会再自动提交"), "{s}");
    // Asked again: no VERIFY reaches the card.
    let s = d.ok("card.summary", online.clone(), Some(&teller)).await;
    assert_eq!(verifies(&world), 0);
    assert!(s["notes"].to_string().contains("曾拒绝"), "{s}");
    // A load refuses before the card sees the PIN; nothing is written.
    let run = d.drive(&teller, load("pin-1"), |_| json!(true)).await;
    assert_eq!(run.done["state"], "failed", "{}", run.done);
    assert!(
        run.done.to_string().contains("曾拒绝配置的 PIN"),
        "{}",
        run.done
    );
    assert_eq!(verifies(&world), 0);
    assert_eq!(world.card("sim:etc").unwrap().balance(), balance);
    common::stop_and_release(d).await;

    // The record is durable: a restarted daemon does not present the PIN either.
    let d = TestDaemon::start_with(wrong).await;
    let teller = d.login("teller", "teller123").await;
    let world = crate::card_reads::world(&w);
    sent(&world, "sim:etc");
    let s = d.ok("card.summary", online.clone(), Some(&teller)).await;
    assert!(s["notes"].to_string().contains("曾拒绝"), "{s}");
    assert_eq!(verifies(&world), 0);
    common::stop_and_release(d).await;

    // The PIN corrected in the configuration is a different PIN: presented, and the load lands.
    let d = TestDaemon::start_with(base).await;
    let teller = d.login("teller", "teller123").await;
    let world = crate::card_reads::world(&w);
    sent(&world, "sim:etc");
    let run = d.drive(&teller, load("pin-2"), |_| json!(true)).await;
    assert_eq!(run.done["state"], "succeeded", "{}", run.done);
    assert_eq!(verifies(&world), 1);
    assert_eq!(
        world.card("sim:etc").unwrap().balance().unwrap(),
        balance.unwrap() + 5_000
    );
    d.stop().await;
}
