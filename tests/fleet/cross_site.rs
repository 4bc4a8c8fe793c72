//! A card carried from one site process to another (the simulated card's state handed over by
//! the panel's `sim.carry` and `sim.bring`, as a customer carries the card to another counter):
//! pulled at S01 after the card took the credit, presented at S02, S02 settles it from the card
//! (the host books it from the TAC); pulled at S01 before the card took it, presented at S02,
//! S02 proves it did not land, the host releases the record, and S02 loads it once. Money on
//! the card = records 已圈存 = booked authorisations; none left open.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::processes::{eventually, Fleet, Site};

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;

/// The catalogue key of the pulled card on the site's table.
fn pulled_card(site: &Site) -> Result<String> {
    let view = site.ok("sim.readers", json!({}), Some(&site.admin))?;
    view["outside"]
        .as_array()
        .and_then(|o| o.iter().find(|c| c["pulled_mid_load"] == true))
        .and_then(|c| c["card"].as_str())
        .map(str::to_owned)
        .context("the pulled card on the table")
}

/// Carries card `key` from the table of `from` into `to`'s ETC reader.
fn carry(from: &Site, key: &str, to: &Site) -> Result<Value> {
    let carried = from.ok("sim.carry", json!({ "card": key }), Some(&from.admin))?;
    let card_json = carried["card_json"].as_str().context("card_json")?;
    Ok(to.ok(
        "sim.bring",
        json!({ "reader_id": "sim:etc", "card_json": card_json }),
        Some(&to.admin),
    )?)
}

fn status(site: &Site, record: &str) -> Result<String> {
    Ok(site.record(record)?["status"]
        .as_str()
        .unwrap_or("")
        .to_owned())
}

#[test]
fn a_card_pulled_at_one_site_process_is_settled_at_the_next() -> Result<()> {
    let mut fleet = Fleet::create()?;
    fleet.host.start()?;
    for site in &mut fleet.sites {
        site.start()?;
    }
    let (s01, s02) = (&fleet.sites[0], &fleet.sites[1]);
    // S02's own copy of the demo card leaves the site: one card of a number at a time.
    s02.ok(
        "sim.remove",
        json!({"reader_id": "sim:etc"}),
        Some(&s02.admin),
    )?;
    s02.ok("sim.carry", json!({"card": "etc"}), Some(&s02.admin))?;
    let start = s01.balance_fen()?.context("a card at S01")?;

    // Pulled after the card took the credit at S01.
    let r1 = fleet.host.recharge("30.00")?;
    s01.ok(
        "sim.pull_during_next_load",
        json!({"reader_id": "sim:etc", "before_write": false}),
        Some(&s01.admin),
    )?;
    let lost = s01.load(&r1, "s01-pulled-after")?;
    ensure!(lost["state"] == "failed", "{lost}");
    ensure!(status(s01, &r1)? == "loading");
    let key = pulled_card(s01)?;
    carry(s01, &key, s02)?;
    // Presented at S02: its recovery adopts S01's load from the host and the card decides.
    eventually(Duration::from_secs(30), "settled at S02", || {
        Ok(status(s02, &r1)? == "loaded")
    })?;
    ensure!(s02.balance_fen()? == Some(start + 3_000), "the money once");
    let again = s02.load(&r1, "s02-r1")?;
    ensure!(
        again["state"] != "succeeded" || again["result"]["already_on_card"] == true,
        "{again}"
    );
    ensure!(
        s02.balance_fen()? == Some(start + 3_000),
        "never twice: {again}"
    );

    // Back to S01; pulled before the card took the credit; presented at S02.
    s02.ok(
        "sim.remove",
        json!({"reader_id": "sim:etc"}),
        Some(&s02.admin),
    )?;
    carry(s02, "etc", s01)?;
    let r2 = fleet.host.recharge("10.00")?;
    s01.ok(
        "sim.pull_during_next_load",
        json!({"reader_id": "sim:etc", "before_write": true}),
        Some(&s01.admin),
    )?;
    let lost = s01.load(&r2, "s01-pulled-before")?;
    ensure!(lost["state"] == "failed", "{lost}");
    let key = pulled_card(s01)?;
    carry(s01, &key, s02)?;
    ensure!(
        s02.balance_fen()? == Some(start + 3_000),
        "the card did not take it"
    );
    // The teller at S02 loads the record: the card proves the first load did not land, the
    // host releases it, and S02 loads it once.
    let loaded = s02.load(&r2, "s02-r2")?;
    ensure!(loaded["state"] == "succeeded", "{loaded}");
    ensure!(s02.balance_fen()? == Some(start + 4_000), "once");
    ensure!(status(s01, &r2)? == "loaded");

    let db = std::sync::Arc::new(cardd_store_pg::Database::open(&fleet.pg.url())?);
    let ledger =
        cardd_store_pg::PgLedger::new(db, std::sync::Arc::new(cardd_journal::clock::SystemClock));
    let all = ledger.authorizations_for_card(CARD)?;
    let booked: i64 = all
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Booked)
        .map(|a| a.amount_fen)
        .sum();
    ensure!(booked == 4_000, "booked {booked}: {all:?}");
    ensure!(
        all.iter()
            .all(|a| a.state != cardd_store_pg::AuthorizationState::Authorized),
        "{all:?}"
    );
    Ok(())
}
