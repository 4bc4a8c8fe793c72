//! Reads that cannot hurt a card: the APDUs each read method sends, recorded by the simulated
//! reader. A plain `card.summary`, `card.balance` and the flows' `card.info()` present no PIN
//! (VERIFY, `00 20`) and start no load (INITIALIZE FOR LOAD, `80 50`); the online counter is
//! read only on explicit request (`online_counter`), which does both.

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
