//! Automatic recovery in the running daemon: a load whose CREDIT answer was lost leaves an open
//! intent; when the card is presented again, the daemon reads it, decides from its counters and
//! transaction proof, records the outcome and announces it, without anyone asking.

use crate::common;

use std::time::Duration;

use cardd_crypto::{bcd, Algorithm};
use cardd_journal::{load_card, LoadError, LoadRequest, TxnState};
use cardd_purse::{Purse, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{FaultKind, FaultPlan, SimFactory};
use common::TestDaemon;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_load_is_resolved_when_its_card_returns() {
    for (kind, expected) in [
        (FaultKind::RemoveAfterExec, "landed"),
        (FaultKind::RemoveBeforeExec, "not_landed"),
    ] {
        let world_name = format!("recovery-{}-{expected}", std::process::id());
        let name = world_name.clone();
        let d =
            TestDaemon::start_with(move |c| c.readers[0].options = json!({ "world": name })).await;
        let world = cardd_sim::named_world(&world_name).unwrap();
        let teller = d.login("teller", "teller123").await;
        let since = d.ok("events.poll", json!({}), Some(&teller)).await["next_since"]
            .as_u64()
            .unwrap();

        // A load through the daemon's journal whose CREDIT is interrupted by a pulled card.
        let daemon = d.daemon().clone();
        let w = world.clone();
        let err = tokio::task::spawn_blocking(move || {
            let session = SimFactory::new(w.clone())
                .open(&ReaderSelector::Id("sim:etc".into()))
                .unwrap();
            let mut reader = Reader::new(session, Duration::from_secs(5));
            let credit = w.apdu_count("sim:etc") + 5;
            w.set_fault_plan("sim:etc", FaultPlan::new().at(credit, kind))
                .unwrap();
            let request = LoadRequest {
                txn_id: "interrupted".into(),
                amount_fen: 4_000,
                terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                date: bcd::date(2026, 11, 22),
                time: bcd::time(11, 0, 0),
                etc_pin: "123456".into(),
                expected_card: None,
                city_algorithm: Algorithm::Tdes,
                funding: cardd_journal::Funding::TestMode,
            };
            let journal = daemon.journal.as_ref().unwrap();
            load_card(
                &mut Purse::new(&mut reader),
                &SoftSam::demo(),
                journal,
                "sim:etc",
                &request,
            )
            .unwrap_err()
        })
        .await
        .unwrap();
        assert!(matches!(err, LoadError::OutcomeUnknown { .. }), "{err}");
        let journal = d.daemon().journal.as_ref().unwrap();
        assert_eq!(
            journal.get("interrupted").unwrap().unwrap().state,
            TxnState::Intent
        );

        // The teller puts the card back; the daemon resolves the load by itself.
        let card = world.take_pocket("sim:etc").unwrap();
        world.insert_card("sim:etc", card).unwrap();
        let mut resolved = None;
        let mut cursor = since;
        for _ in 0..10 {
            let polled = d
                .ok(
                    "events.poll",
                    json!({"since": cursor, "wait_ms": 2000}),
                    Some(&teller),
                )
                .await;
            cursor = polled["next_since"].as_u64().unwrap();
            if let Some(e) = polled["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "load_resolved")
            {
                resolved = Some(e.clone());
                break;
            }
        }
        let resolved = resolved.expect("a load_resolved event");
        assert_eq!(resolved["outcome"], expected);
        assert_eq!(resolved["txn_id"], "interrupted");
        let state = journal.get("interrupted").unwrap().unwrap().state;
        let balance = world.card("sim:etc").unwrap().balance().unwrap();
        if expected == "landed" {
            assert!(matches!(state, TxnState::Committed { .. }), "{state:?}");
            assert_eq!(balance, 10_000 + 4_000);
        } else {
            assert!(matches!(state, TxnState::NotApplied { .. }), "{state:?}");
            assert_eq!(balance, 10_000);
        }
        assert!(journal.list_open().unwrap().is_empty());
        d.stop().await;
    }
}
