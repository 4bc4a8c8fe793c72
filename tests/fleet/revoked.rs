//! A site whose certificate was re-issued (the old one revoked: a lost or leaked key) is refused
//! with its old certificate, at once and with nothing changed, and works again once it has the
//! new one.

use anyhow::{ensure, Context, Result};

use crate::processes::Fleet;

#[test]
fn a_site_with_a_revoked_certificate_is_refused_until_it_has_the_new_one() -> Result<()> {
    let mut fleet = Fleet::create()?;
    fleet.host.start()?;
    fleet.sites[1].start()?;
    let record = fleet.host.recharge("5.00")?;

    // Re-issued: the host records the new certificate; the site still has the old one.
    let ca_dir = fleet.root.path().join("ca");
    let site: cardd_fleet::SiteId = "S02".parse()?;
    cardd_fleet::FleetCa::open(&ca_dir)?.issue_site(&site, 30, true)?;
    let files = cardd_fleet::ca::site_files(&ca_dir, &site);
    fleet.host.cli(&[
        "sites",
        "enrol",
        "S02",
        "--cert",
        &files.cert.display().to_string(),
    ])?;
    let s02 = &fleet.sites[1];
    let before = s02.balance_fen()?.context("a card")?;
    let refused = s02.load(&record, "revoked-1")?;
    ensure!(refused["state"] == "failed", "{refused}");
    let message = refused["failure"]["message"].as_str().unwrap_or("");
    ensure!(message.contains("无法连接发卡方后台"), "{message}");
    ensure!(s02.balance_fen()? == Some(before), "the card is untouched");

    // The new certificate installed at the site: it works again.
    let etc = fleet.sites[1].dir.join("etc");
    std::fs::copy(&files.cert, etc.join("site.crt"))?;
    std::fs::copy(&files.key, etc.join("site.key"))?;
    fleet.sites[1].kill9();
    fleet.sites[1].start()?;
    let s02 = &fleet.sites[1];
    let loaded = s02.load(&record, "revoked-2")?;
    ensure!(loaded["state"] == "succeeded", "{loaded}");
    ensure!(s02.balance_fen()? == Some(before + 500), "once");
    Ok(())
}
