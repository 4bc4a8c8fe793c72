//! `cardd-host` killed (SIGKILL, at its named crash points: before and after each of its two
//! commits) in the middle of a real site's load, then started again: after the card is
//! presented again and the outbox drained, the money on the card equals the record's amount
//! once, the record is 已圈存, and the host holds no authorisation open. Needs the host built
//! with its `crashpoints` feature (`cargo xtask test` builds it so); without it the host does
//! not die and the test says so.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::processes::{eventually, Fleet};

use cardd_host::service::HOST_CRASH_POINTS as CRASH_POINTS;

#[test]
fn the_host_killed_at_every_step_of_a_load_loses_nothing_and_loads_nothing_twice() -> Result<()> {
    let mut fleet = Fleet::create()?;
    fleet.host.start()?;
    fleet.sites[0].start()?;
    for (i, point) in CRASH_POINTS.iter().enumerate() {
        let amount_fen = 100 * (i as i64 + 1);
        let record = fleet.host.recharge(&format!("{}.00", amount_fen / 100))?;
        fleet.host.kill9();
        fleet.host.start_with(&[("CARDD_CRASH_AT", point)])?;
        let site = &fleet.sites[0];
        let before = site.balance_fen()?.context("a card")?;
        let first = site.load(&record, &format!("crash-{i}"))?;
        ensure!(
            fleet.host.exited(),
            "{point}: the host did not die (built without its crashpoints feature?): {first}"
        );
        fleet.host.start()?;
        let site = &fleet.sites[0];
        // The site's outbox (a confirmation the host never answered) is delivered.
        eventually(Duration::from_secs(30), "the outbox delivered", || {
            Ok(site.health()?["fleet"]["outbox_pending"] == 0)
        })?;
        // The teller tries again (a new attempt): the card decides what the first one did.
        let again = site.load(&record, &format!("crash-{i}-again"))?;
        let status = site.record(&record)?["status"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        ensure!(
            status == "loaded",
            "{point}: record {status}; first {first}; again {again}"
        );
        ensure!(
            site.balance_fen()? == Some(before + amount_fen),
            "{point}: the card has {:?}, expected {} once; first {first}; again {again}",
            site.balance_fen()?,
            before + amount_fen
        );
    }
    // No authorisation left open; the card took exactly the booked loads.
    let db = std::sync::Arc::new(cardd_store_pg::Database::open(&fleet.pg.url())?);
    let ledger =
        cardd_store_pg::PgLedger::new(db, std::sync::Arc::new(cardd_journal::clock::SystemClock));
    let all = ledger.authorizations_for_card(cardd_sim::demo::DEMO_ETC_CARD_NUMBER)?;
    let open: Vec<_> = all
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Authorized)
        .collect();
    ensure!(open.is_empty(), "open authorisations: {open:?}");
    let booked: i64 = all
        .iter()
        .filter(|a| a.state == cardd_store_pg::AuthorizationState::Booked)
        .map(|a| a.amount_fen)
        .sum();
    ensure!(booked == 100 + 200 + 300 + 400, "booked {booked}: {all:?}");
    Ok(())
}
