//! A real network partition between the sites and the issuer host (`processes`, with the host
//! inside a network namespace: [`FleetOptions::host_netns`]). The sites reach the host only
//! over the namespace's veth pair; the test drives the sites over their loopback, so cutting
//! the pair ([`crate::netns::Netns::cut`]) partitions site ↔ host and nothing else the test
//! needs. Packets are dropped, not refused: every call the site makes waits for its
//! `call_timeout_ms` (3 s in the fleet's configuration).
//!
//! One fleet, in order:
//! 1. a recharge paid at the host is loaded at S01, over the veth;
//! 2. a record R: the card is pulled at S01 right after its CREDIT; the outcome is unknown; R
//!    reads 圈存中 (`loading`) at S02;
//! 3. cut: at S01 a load of another paid record (the second demo card in the reader) is refused
//!    with 无法连接发卡方后台 within the call timeout, the card untouched; the card is still
//!    readable;
//! 4. still cut: the pulled card put back: S01 settles it from the card (the money once) and
//!    holds the confirmation in its outbox, which stays there while the cut lasts;
//! 5. restored: the outbox is delivered and R reads 已圈存 at S02;
//! 6. a normal load works again; money on the cards = booked authorisations = records 已圈存,
//!    none twice, no authorisation left open.
//!
//! Skipped (with a word on standard error) where network namespaces are unavailable: not root,
//! or no iproute2.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::netns::create_or_skip;
use crate::processes::{eventually, Fleet, FleetOptions, Site};

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
/// The second demo ETC card, its vehicle seeded at the host (green plate).
const OTHER_CARD: &str = cardd_sim::demo::DEMO_ETC_SM4_CARD_NUMBER;
const OTHER_PLATE: &str = cardd_sim::demo::DEMO_ETC_SM4_PLATE;
const OTHER_COLOUR: u16 = 11;
const UNREACHABLE: &str = "无法连接发卡方后台";
/// Longest a load refused for an unreachable host may take: the site's call timeout (3 s) a
/// few times over, well below a hung teller's patience.
const REFUSED_WITHIN: Duration = Duration::from_secs(20);
/// How long the outbox must keep the confirmation while cut: more than one delivery round
/// (every 5 s) with its call timeout.
const HELD_FOR: Duration = Duration::from_secs(9);

fn succeeded(run: &serde_json::Value) -> bool {
    run["state"] == "succeeded"
}

fn failure(run: &serde_json::Value) -> String {
    run["failure"]["message"].as_str().unwrap_or("").to_owned()
}

fn status(site: &Site, record_id: &str) -> Result<String> {
    Ok(site.record(record_id)?["status"]
        .as_str()
        .unwrap_or("")
        .to_owned())
}

fn outbox_pending(site: &Site) -> Result<serde_json::Value> {
    Ok(site.health()?["fleet"]["outbox_pending"].clone())
}

#[test]
fn a_site_cut_off_from_the_host_refuses_loads_holds_its_confirmation_and_delivers_it_after(
) -> Result<()> {
    let Some(netns) = create_or_skip("partition")? else {
        return Ok(());
    };
    let began = Instant::now();
    let mut fleet = Fleet::create_with(FleetOptions {
        host_netns: Some(netns),
        ..FleetOptions::default()
    })?;
    fleet.host.start()?;
    for site in &mut fleet.sites {
        site.start()?;
    }
    let start: Vec<i64> = fleet
        .sites
        .iter()
        .map(|s| s.balance_fen().map(|b| b.unwrap_or(0)))
        .collect::<Result<_, _>>()?;
    let (s01, s02) = (&fleet.sites[0], &fleet.sites[1]);
    let relay = fleet.relay.as_ref().context("the host's relay")?;
    eprintln!(
        "fleet up in {:?}: the host at {}, PostgreSQL through {}",
        began.elapsed(),
        fleet.host.addr,
        relay.addr()
    );

    // 1. Over the veth: paid at the host, loaded at S01, read at S02.
    let r1 = fleet.host.recharge("30.00")?;
    let run = s01.load(&r1, "s01-1")?;
    ensure!(succeeded(&run), "S01 load over the veth: {run}");
    ensure!(s01.balance_fen()? == Some(start[0] + 3_000));
    ensure!(status(s02, &r1)? == "loaded");

    // 2. R: the card pulled right after its CREDIT; the outcome unknown.
    let r = fleet.host.recharge("20.00")?;
    let before = s01.balance_fen()?.context("a card")?;
    s01.ok(
        "sim.pull_during_next_load",
        json!({"reader_id": "sim:etc", "before_write": false}),
        Some(&s01.admin),
    )?;
    let lost = s01.load(&r, "s01-pulled")?;
    ensure!(!succeeded(&lost), "{lost}");
    ensure!(status(s02, &r)? == "loading", "R at S02");
    let view = s01.ok("sim.readers", json!({}), Some(&s01.admin))?;
    let pulled = view["outside"]
        .as_array()
        .and_then(|o| o.iter().find(|c| c["pulled_mid_load"] == true))
        .and_then(|c| c["card"].as_str())
        .context("the pulled card on the table")?
        .to_owned();

    // 3. Cut. The reader is empty (the card was pulled): the second demo card goes in, with a
    //    record of its own paid before the cut.
    let other = fleet.host.recharge_for(OTHER_PLATE, OTHER_COLOUR, "5.00")?;
    fleet.host.netns()?.cut()?;
    s01.ok(
        "sim.insert",
        json!({"reader_id": "sim:etc", "card": "etc_sm4"}),
        Some(&s01.admin),
    )?;
    let other_before = s01.balance_fen()?.context("the second card")?;
    let t = Instant::now();
    let refused = s01.load(&other, "s01-cut")?;
    let refused_in = t.elapsed();
    eprintln!("cut: load refused in {refused_in:?}: {}", failure(&refused));
    ensure!(!succeeded(&refused), "{refused}");
    ensure!(failure(&refused).contains(UNREACHABLE), "{refused}");
    ensure!(
        refused_in < REFUSED_WITHIN,
        "refused within the call timeout, not after a long wait: {refused_in:?}"
    );
    ensure!(
        s01.balance_fen()? == Some(other_before),
        "the card is untouched"
    );
    let t = Instant::now();
    let summary = s01.ok(
        "card.summary",
        json!({"reader_id": "sim:etc"}),
        Some(&s01.teller),
    )?;
    eprintln!("cut: card.summary in {:?}", t.elapsed());
    ensure!(summary.to_string().contains(OTHER_CARD), "{summary}");
    s01.ok(
        "sim.remove",
        json!({"reader_id": "sim:etc"}),
        Some(&s01.admin),
    )?;

    // 4. Still cut: the pulled card back; settled from the card, the confirmation held.
    s01.ok(
        "sim.insert",
        json!({"reader_id": "sim:etc", "card": pulled}),
        Some(&s01.admin),
    )?;
    let t = Instant::now();
    eventually(Duration::from_secs(30), "the confirmation held", || {
        Ok(outbox_pending(s01)? == 1)
    })?;
    eprintln!("cut: settled and held in {:?}", t.elapsed());
    ensure!(
        s01.balance_fen()? == Some(before + 2_000),
        "the card took it once"
    );
    std::thread::sleep(HELD_FOR);
    ensure!(
        outbox_pending(s01)? == 1,
        "the confirmation cannot leave while cut"
    );
    ensure!(fleet.host.netns()?.is_cut());

    // 5. Restored: delivered, booked.
    fleet.host.netns()?.restore()?;
    let t = Instant::now();
    eventually(Duration::from_secs(30), "the outbox delivered", || {
        Ok(outbox_pending(s01)? == 0)
    })?;
    eprintln!("restored: outbox delivered in {:?}", t.elapsed());
    eventually(Duration::from_secs(10), "R booked", || {
        Ok(status(s02, &r)? == "loaded")
    })?;
    ensure!(s01.balance_fen()? == Some(before + 2_000), "still once");
    ensure!(status(s02, &other)? == "not_loaded", "the refused record");

    // 6. A normal load again; the books.
    let r6 = fleet.host.recharge("4.00")?;
    let run = s01.load(&r6, "s01-after")?;
    ensure!(succeeded(&run), "{run}");
    ensure!(s01.balance_fen()? == Some(before + 2_400));

    let db = std::sync::Arc::new(cardd_store_pg::Database::open(&fleet.pg.url())?);
    let clock = std::sync::Arc::new(cardd_journal::clock::SystemClock);
    let ledger = cardd_store_pg::PgLedger::new(db.clone(), clock.clone());
    let records = cardd_store_pg::PgHost::new(db, clock);
    let end: Vec<i64> = fleet
        .sites
        .iter()
        .map(|s| s.balance_fen().map(|b| b.unwrap_or(0)))
        .collect::<Result<_, _>>()?;
    let on_cards: i64 = end.iter().zip(&start).map(|(e, s)| e - s).sum();
    ensure!(on_cards == 5_400, "on the cards {on_cards}");
    let authorizations = ledger.authorizations_for_card(CARD)?;
    let booked: Vec<_> = authorizations
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Booked)
        .collect();
    let booked_fen: i64 = booked.iter().map(|a| a.amount_fen).sum();
    let open: Vec<_> = authorizations
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Authorized)
        .collect();
    let loaded_records: i64 = cardd_etc::IssuerHost::records_for_card(
        &records,
        CARD,
        Some(cardd_etc::RecordStatus::Loaded),
    )?
    .iter()
    .map(|r| r.amount_fen)
    .sum();
    ensure!(
        on_cards == booked_fen && booked_fen == loaded_records,
        "on the cards {on_cards}, booked {booked_fen}, records 已圈存 {loaded_records}"
    );
    ensure!(open.is_empty(), "authorisations left open: {open:?}");
    let mut funded: Vec<&str> = booked.iter().map(|a| a.funding_id.as_str()).collect();
    let n = funded.len();
    funded.sort_unstable();
    funded.dedup();
    ensure!(funded.len() == n, "a record booked twice");
    ensure!(
        ledger.authorizations_for_card(OTHER_CARD)?.is_empty(),
        "nothing authorised for the refused card"
    );
    eprintln!("partition scenario in {:?}", began.elapsed());
    Ok(())
}
