//! Group recharge (集团充值) in a fleet of real processes: one group's quota, kept at the issuer
//! host, recharged from four sites at once (each a `cardd` with its own city one-card, driven
//! through the `group.recharge` flow as the web console drives it) until it runs out:
//! 1. the quota is never overdrawn and every site stops at the quota-exhausted refusal;
//! 2. money on the four cards = orders 充值成功 = booked authorisations, none open;
//! 3. the host killed: a site's recharge is refused at once (无法连接发卡方后台…), nothing
//!    changes; the host started again: the site reads the group again.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cardd_group::model::{OrderStatus, Period, Preset};
use cardd_group::GroupHost;
use serde_json::json;

use crate::processes::{city_card_number, Fleet, CITY_START_FEN};

const SITES: [&str; 4] = ["S01", "S02", "S03", "S04"];
/// The demo group G001's quota, in fen (500 yuan).
const QUOTA_FEN: i64 = 50_000;
/// Each recharge, in fen (30 yuan).
const AMOUNT_FEN: i64 = 3_000;

fn failure(run: &serde_json::Value) -> String {
    run["failure"]["message"].as_str().unwrap_or("").to_owned()
}

#[test]
fn one_group_s_quota_recharged_from_four_site_processes_at_once_is_never_overdrawn() -> Result<()> {
    let mut fleet = Fleet::with_sites(&SITES)?;
    fleet.host.start()?;
    for site in &mut fleet.sites {
        site.start()?;
    }
    let tokens: Vec<String> = fleet
        .sites
        .iter()
        .map(|s| s.group_login())
        .collect::<Result<_, _>>()?;

    // 1. Four sites at once, until the quota runs out.
    let barrier = Arc::new(Barrier::new(SITES.len()));
    let outcomes: Vec<(usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .sites
            .iter()
            .zip(&tokens)
            .map(|(site, token)| {
                let barrier = barrier.clone();
                scope.spawn(move || -> Result<(usize, String)> {
                    barrier.wait();
                    let mut done = 0;
                    for attempt in 0..=QUOTA_FEN / AMOUNT_FEN {
                        let run =
                            site.group_recharge(token, "30.00", &format!("{}-{attempt}", site.id))?;
                        if run["state"] == "succeeded" {
                            done += 1;
                        } else {
                            return Ok((done, failure(&run)));
                        }
                    }
                    anyhow::bail!("{}: never refused", site.id)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect::<Result<_>>()
    })?;
    let succeeded: usize = outcomes.iter().map(|(n, _)| n).sum();
    ensure!(
        succeeded == usize::try_from(QUOTA_FEN / AMOUNT_FEN)?,
        "every 30 yuan of the quota once: {outcomes:?}"
    );
    for (_, refusal) in &outcomes {
        ensure!(
            refusal.contains("集团可用额度不足：可用额度 20.00 元，充值金额 30.00 元"),
            "every refusal is the quota-exhausted one: {outcomes:?}"
        );
    }
    let info = fleet.sites[0].ok("group.info", json!({}), Some(&tokens[0]))?;
    ensure!(info["available_quota"] == "20.00", "{info}");

    // 2. Money on the cards = orders 充值成功 = booked authorisations; the ledger sums.
    let db = Arc::new(cardd_store_pg::Database::open(&fleet.pg.url())?);
    let clock = Arc::new(cardd_journal::clock::SystemClock);
    let ledger = cardd_store_pg::PgLedger::new(db.clone(), clock.clone());
    let groups = cardd_store_pg::PgGroupHost::new(db, clock);
    groups.verify()?;
    let group = groups.group("G001")?.context("G001")?;
    let left = QUOTA_FEN - AMOUNT_FEN * i64::try_from(succeeded)?;
    ensure!(group.available_fen == left, "{group:?}");
    let period = Period::preset(Preset::Last7Days, time::OffsetDateTime::now_utc());
    let orders = groups.orders("G001", &period)?;
    ensure!(orders.len() == succeeded, "{orders:?}");
    ensure!(orders.iter().all(|o| o.status == OrderStatus::Succeeded));
    let in_orders: i64 = orders.iter().map(|o| o.amount_fen).sum();
    let (mut on_cards, mut booked) = (0, 0);
    for (n, site) in fleet.sites.iter().enumerate() {
        let balance = site.card_balance_fen("sim:city")?;
        on_cards += balance - i64::from(CITY_START_FEN);
        let auths = ledger.authorizations_for_card(&city_card_number(n))?;
        ensure!(
            auths
                .iter()
                .all(|a| a.state == cardd_store_pg::AuthorizationState::Booked),
            "none left open: {auths:?}"
        );
        booked += auths.iter().map(|a| a.amount_fen).sum::<i64>();
    }
    ensure!(
        on_cards == in_orders && in_orders == booked,
        "on the cards {on_cards}, orders 充值成功 {in_orders}, booked {booked}"
    );

    // 3. The host killed: refused at once, nothing changes; back: the group reads again.
    fleet.host.kill9();
    let site = &fleet.sites[1];
    let before = site.card_balance_fen("sim:city")?;
    let t = Instant::now();
    let refused = site.group_recharge(&tokens[1], "10.00", "host-down")?;
    ensure!(refused["state"] != "succeeded", "{refused}");
    ensure!(
        failure(&refused).contains("无法连接发卡方后台"),
        "{refused}"
    );
    ensure!(
        t.elapsed() < Duration::from_secs(20),
        "refused at once: {:?}",
        t.elapsed()
    );
    ensure!(site.card_balance_fen("sim:city")? == before);
    ensure!(groups.group("G001")?.context("G001")?.available_fen == left);
    fleet.host.start()?;
    let info = site.ok("group.info", json!({}), Some(&tokens[1]))?;
    ensure!(info["available_quota"] == "20.00", "{info}");
    Ok(())
}
