//! The issuer host and its sites as real processes (`processes`): what the fleet promises,
//! end to end, under a host and a database that die.
//!
//! One fleet runs the scenarios in order (each starts from what the last left):
//! 1. a recharge paid at the host is loaded at site S02 and read 已圈存 at site S01;
//! 2. the same 未圈存 record loaded from both sites at the same moment: one credit;
//! 3. a site disabled at the host is refused at once (无法连接发卡方后台…), nothing changes, and
//!    loads again once enabled;
//! 4. the host killed (SIGKILL): loads refused at once, reads of the card still work; the host
//!    started again: loads work;
//! 5. a card pulled after CREDIT while the host holds the authorisation; the host killed; the
//!    card presented again: the site settles it from the card and holds the confirmation in
//!    its outbox; the host started again: the outbox is delivered and the record is 已圈存;
//! 6. PostgreSQL killed and restarted under the host: loads refused meanwhile, then work;
//! 7. at the end, money on the cards = committed authorisations = records 已圈存, none twice,
//!    no authorisation left open;
//! 8. the host's audit log holds the sites' load steps and record changes and its own
//!    commands, every chain intact; no site's data or configuration directory holds a load,
//!    purchase or TAC master key.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::keysearch::find_key_material;
use crate::processes::{eventually, Fleet, Site};

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
const UNREACHABLE: &str = "无法连接发卡方后台";

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

#[test]
fn a_fleet_of_real_processes_loads_each_payment_once_and_keeps_no_key_at_a_site() -> Result<()> {
    let mut fleet = Fleet::create()?;
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

    // 1. Paid at the host, loaded at S02, read at S01.
    let r1 = fleet.host.recharge("50.00")?;
    let run = s02.load(&r1, "s02-1")?;
    ensure!(succeeded(&run), "S02 load: {run}");
    ensure!(s02.balance_fen()? == Some(start[1] + 5_000));
    let seen = s01.record(&r1)?;
    ensure!(seen["status_label"] == "已圈存", "S01 reads {seen}");

    // 2. The same record from both sites at once: one credit.
    for round in 0..2 {
        let record = fleet.host.recharge("10.00")?;
        let before: Vec<i64> = [s01, s02]
            .iter()
            .map(|s| s.balance_fen().map(|b| b.unwrap_or(0)))
            .collect::<Result<_, _>>()?;
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let runs: Vec<serde_json::Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = [s01, s02]
                .into_iter()
                .map(|site| {
                    let (barrier, record) = (barrier.clone(), record.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        site.load(&record, &format!("{}-race-{round}", site.id))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect::<Result<_, _>>()
        })?;
        let wins = runs.iter().filter(|r| succeeded(r)).count();
        ensure!(wins == 1, "round {round}: {runs:?}");
        let after: Vec<i64> = [s01, s02]
            .iter()
            .map(|s| s.balance_fen().map(|b| b.unwrap_or(0)))
            .collect::<Result<_, _>>()?;
        ensure!(
            after[0] - before[0] + after[1] - before[1] == 1_000,
            "round {round}: the money once, {before:?} → {after:?}"
        );
        ensure!(status(s01, &record)? == "loaded");
    }

    // 3. A disabled site is refused at once; enabled again, it loads.
    let r3 = fleet.host.recharge("5.00")?;
    fleet.host.cli(&["sites", "disable", "S02"])?;
    let before = s02.balance_fen()?;
    let refused = s02.load(&r3, "s02-disabled")?;
    ensure!(!succeeded(&refused), "{refused}");
    ensure!(failure(&refused).contains(UNREACHABLE), "{refused}");
    ensure!(s02.balance_fen()? == before, "the card is untouched");
    ensure!(status(s01, &r3)? == "not_loaded");
    fleet.host.cli(&["sites", "enable", "S02"])?;
    let run = s02.load(&r3, "s02-enabled")?;
    ensure!(succeeded(&run), "{run}");

    // Each site reports to the host (alive, outbox length): the back office's "last spoke".
    eventually(Duration::from_secs(30), "both sites reported", || {
        let list = fleet.host.cli(&["sites", "list"])?;
        Ok(["S01", "S02"].iter().all(|id| {
            list.lines().any(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                cols.first() == Some(id)
                    && cols.get(4).is_some_and(|t| *t != "never")
                    && cols.get(5) == Some(&"0")
            })
        }))
    })?;

    // 4. The host killed: refused at once, the card still readable; started again: loads.
    let r4 = fleet.host.recharge("5.00")?;
    fleet.host.kill9();
    let before = s01.balance_fen()?;
    let t = std::time::Instant::now();
    let refused = s01.load(&r4, "s01-host-down")?;
    ensure!(!succeeded(&refused), "{refused}");
    ensure!(failure(&refused).contains(UNREACHABLE), "{refused}");
    ensure!(
        t.elapsed() < Duration::from_secs(20),
        "refused at once, not after a long wait: {:?}",
        t.elapsed()
    );
    ensure!(s01.balance_fen()? == before);
    let summary = s01.ok(
        "card.summary",
        json!({"reader_id": "sim:etc"}),
        Some(&s01.teller),
    )?;
    ensure!(summary.to_string().contains(CARD), "{summary}");
    fleet.host.start()?;
    let run = s01.load(&r4, "s01-host-back")?;
    ensure!(succeeded(&run), "{run}");

    // 5. Pulled after CREDIT; the host killed before the TAC reached it; settled from the card
    //    with the confirmation held; delivered when the host is back.
    let r5 = fleet.host.recharge("20.00")?;
    let before = s01.balance_fen()?.context("a card")?;
    s01.ok(
        "sim.pull_during_next_load",
        json!({"reader_id": "sim:etc", "before_write": false}),
        Some(&s01.admin),
    )?;
    let lost = s01.load(&r5, "s01-pulled")?;
    ensure!(!succeeded(&lost), "{lost}");
    ensure!(status(s01, &r5)? == "loading");
    fleet.host.kill9();
    let view = s01.ok("sim.readers", json!({}), Some(&s01.admin))?;
    let card = view["outside"]
        .as_array()
        .and_then(|o| o.iter().find(|c| c["pulled_mid_load"] == true))
        .and_then(|c| c["card"].as_str())
        .context("the pulled card on the table")?
        .to_owned();
    s01.ok(
        "sim.insert",
        json!({"reader_id": "sim:etc", "card": card}),
        Some(&s01.admin),
    )?;
    eventually(Duration::from_secs(30), "the confirmation held", || {
        Ok(s01.health()?["fleet"]["outbox_pending"] == 1)
    })?;
    ensure!(
        s01.balance_fen()? == Some(before + 2_000),
        "the card took it once"
    );
    fleet.host.start()?;
    eventually(Duration::from_secs(30), "the outbox delivered", || {
        Ok(s01.health()?["fleet"]["outbox_pending"] == 0)
    })?;
    eventually(Duration::from_secs(10), "the record booked", || {
        Ok(status(s02, &r5)? == "loaded")
    })?;

    // 6. PostgreSQL killed under the host: refused meanwhile; restarted: loads.
    let r6 = fleet.host.recharge("3.00")?;
    let before = s02.balance_fen()?;
    fleet.pg.kill().map_err(|e| anyhow::anyhow!("{e}"))?;
    let refused = s02.load(&r6, "s02-pg-down")?;
    ensure!(!succeeded(&refused), "{refused}");
    ensure!(s02.balance_fen()? == before, "the card is untouched");
    fleet.pg.restart().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut loaded = false;
    for attempt in 0..10 {
        let run = s02.load(&r6, &format!("s02-pg-back-{attempt}"))?;
        if succeeded(&run) {
            loaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(loaded, "a load after PostgreSQL came back");

    // 7. Money on the cards = committed authorisations = records 已圈存; none open.
    let db = Arc::new(cardd_store_pg::Database::open(&fleet.pg.url())?);
    let clock = Arc::new(cardd_journal::clock::SystemClock);
    let ledger = cardd_store_pg::PgLedger::new(db.clone(), clock.clone());
    let records = cardd_store_pg::PgHost::new(db, clock);
    let end: Vec<i64> = fleet
        .sites
        .iter()
        .map(|s| s.balance_fen().map(|b| b.unwrap_or(0)))
        .collect::<Result<_, _>>()?;
    let on_cards: i64 = end.iter().zip(&start).map(|(e, s)| e - s).sum();
    let authorizations = ledger.authorizations_for_card(CARD)?;
    let booked: i64 = authorizations
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Booked)
        .map(|a| a.amount_fen)
        .sum();
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
        on_cards == booked && booked == loaded_records,
        "on the cards {on_cards}, booked {booked}, records 已圈存 {loaded_records}"
    );
    ensure!(open.is_empty(), "authorisations left open: {open:?}");
    let mut funded: Vec<&str> = authorizations
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Booked)
        .map(|a| a.funding_id.as_str())
        .collect();
    let n = funded.len();
    funded.sort_unstable();
    funded.dedup();
    ensure!(funded.len() == n, "a record booked twice");

    // The host's audit log: every site's load steps and record changes and the host's own
    // commands, each chain intact.
    let verified = fleet.host.cli(&["audit", "verify"])?;
    ensure!(verified.contains("audit log intact"), "{verified}");
    for (chain, action) in [
        ("S01", "host.authorize"),
        ("S02", "host.confirm"),
        ("S02", "records.change_record"),
        ("host", "records.recharge"),
        ("host", "sites.disable"),
    ] {
        let listed = fleet
            .host
            .cli(&["audit", "list", "--chain", chain, "--limit", "1000"])?;
        ensure!(listed.contains(action), "{chain} has no {action}: {listed}");
    }

    // 8. No master key at a site.
    let keys: Vec<Vec<u8>> = [
        cardd_crypto::demo::MASTER_LOAD_KEY,
        cardd_crypto::demo::MASTER_PURCHASE_KEY,
        cardd_crypto::demo::MASTER_TAC_KEY,
    ]
    .iter()
    .map(|k| hex::decode(k).expect("hex"))
    .collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for site in &mut fleet.sites {
        site.kill9();
        let hits = find_key_material(&site.dir, &keys)?;
        ensure!(hits.is_empty(), "{}: key material found: {hits:?}", site.id);
        let config = std::fs::read_to_string(&site.config)?;
        ensure!(!config.contains("[keys]"), "{}: a keys section", site.id);
    }
    // The check itself finds the keys where they are: the host's key file format.
    let planted = fleet.root.path().join("planted");
    std::fs::create_dir_all(&planted)?;
    std::fs::write(
        planted.join("keys.toml"),
        format!("load = \"{}\"\n", cardd_crypto::demo::MASTER_LOAD_KEY),
    )?;
    ensure!(!find_key_material(&planted, &keys)?.is_empty());
    Ok(())
}
