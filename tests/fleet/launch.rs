//! The demo fleet exactly as `cargo xtask fleet` starts it (`cardd_fleet_launch::Fleet::launch`:
//! its own throw-away PostgreSQL, the host with its back office, sites S01 and S02, the demo
//! operators), on free ports: one recharge paid at the host, loaded at S02's kiosk with the card
//! inserted through the 模拟读卡器 panel, booked 已圈存 at the host; then the fleet stopped in
//! order, with no process and no file left.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cardd_fleet_launch::{Fleet, Ports, DEMO_SITES};
use serde_json::json;

use crate::processes::{bin_dir, eventually};

#[test]
fn the_demo_fleet_loads_a_recharge_paid_at_the_host_at_s02s_kiosk() -> Result<()> {
    let t = Instant::now();
    let mut fleet = Fleet::launch(&bin_dir(), &Ports::free(DEMO_SITES.len())?)?;
    eprintln!("launch: the whole fleet up in {:?}", fleet.started_in);
    let ids: Vec<&str> = fleet.sites.iter().map(|s| s.id.as_str()).collect();
    ensure!(ids == DEMO_SITES, "{ids:?}");
    let config = std::fs::read_to_string(&fleet.host.config)?;
    let backoffice = fleet.host.backoffice.context("a back office")?;
    ensure!(
        config.contains(&format!("[backoffice]\nlisten = \"{backoffice}\"")),
        "{config}"
    );

    // Paid at the host.
    let record = fleet.host.recharge("50.00")?;
    ensure!(fleet.host.record_status(&record)?.as_deref() == Some("未圈存"));

    // At S02's kiosk: the customer takes the card out and puts it in (the table lists the
    // cards outside in the order they came out), then loads.
    fleet.sites[1].log_in()?;
    let s02 = &fleet.sites[1];
    let kiosk = s02.login_as("kiosk")?;
    let before = s02.balance_fen()?.context("the demo card in sim:etc")?;
    s02.ok("sim.remove", json!({"reader_id": "sim:etc"}), Some(&kiosk))?;
    ensure!(s02.balance_fen()?.is_none(), "the card is out");
    let view = s02.ok("sim.readers", json!({}), Some(&kiosk))?;
    let card = view["outside"]
        .as_array()
        .and_then(|o| o.last())
        .and_then(|c| c["card"].as_str())
        .with_context(|| format!("the card on the table: {view}"))?
        .to_owned();
    s02.ok(
        "sim.insert",
        json!({"reader_id": "sim:etc", "card": card}),
        Some(&kiosk),
    )?;
    let run = s02.kiosk_load(&kiosk, &record, "launch-kiosk-1")?;
    ensure!(run["state"] == "succeeded", "{run}");
    let after = s02.balance_fen()?;
    ensure!(
        after == Some(before + 5_000),
        "the card took 50.00 once: {before} → {after:?}; {run}"
    );

    // 已圈存 at the host, and at the other site too (it reads the host).
    eventually(Duration::from_secs(10), "已圈存 at the host", || {
        Ok(fleet.host.record_status(&record)?.as_deref() == Some("已圈存"))
    })?;
    fleet.sites[0].log_in()?;
    let at_s01 = fleet.sites[0].record(&record)?;
    ensure!(at_s01["status"] == "loaded", "{at_s01}");

    // Stopped in order: nothing left.
    let pids: Vec<u32> = fleet
        .sites
        .iter()
        .filter_map(|s| s.proc.as_ref())
        .chain(fleet.host.proc.as_ref())
        .filter_map(|p| p.id())
        .collect();
    ensure!(pids.len() == 3, "{pids:?}");
    let root = fleet.root.path().to_owned();
    let stopping = Instant::now();
    fleet.stop()?;
    eprintln!(
        "launch: stopped in {:?}; the whole test {:?}",
        stopping.elapsed(),
        t.elapsed()
    );
    for pid in pids {
        ensure!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is left"
        );
    }
    ensure!(!root.exists(), "{} is left", root.display());
    Ok(())
}
