//! Backup and restore keep every card credit exactly-once.
//!
//! A backup is made while the daemon runs; a recharge record is loaded after it; the backup is
//! restored (refused without `--force`, since the data directory is newer), and the daemon
//! starts in restored mode. The restored data shows the record as 未圈存 again, but before
//! anything is loaded the card's own log is read: the load made after the backup is found, the
//! record is set to 已圈存 and nothing is credited. A record the backup and the card agree was
//! never loaded loads normally.

use crate::common;

use common::{on_dir, stop_and_release, TestDaemon};
use serde_json::{json, Value};

/// The demo's 未圈存 records of card …0001: 50.00 yuan and 200.00 yuan.
const R50: &str = "R20240620000001";
const R200: &str = "R20240615000001";

fn world(name: &str) -> cardd_sim::SimWorld {
    cardd_sim::named_world(name).unwrap()
}

fn balance(world_name: &str) -> u32 {
    world(world_name)
        .card("sim:etc")
        .and_then(|c| c.balance())
        .unwrap()
}

async fn load(d: &TestDaemon, token: &str, record_id: &str, key: &str) -> Value {
    let start = json!({"flow": "etc.load", "params": {"record_id": record_id}, "idempotency_key": key, "reader_id": "sim:etc"});
    d.drive(token, start, |_| json!(true)).await.done
}

async fn record(d: &TestDaemon, token: &str, id: &str) -> Value {
    d.ok("etc.records.get", json!({ "record_id": id }), Some(token))
        .await
}

/// Restores, retrying while the stopped daemon's database lock is still held (bounded).
fn restore(
    data: &std::path::Path,
    backup: &std::path::Path,
    force: bool,
) -> Result<cardd::restore::RestoreReport, cardd::backup::BackupError> {
    let mut tries = 0;
    loop {
        match cardd::restore::restore(data, backup, force, false) {
            Err(e) if tries < 250 && e.to_string().contains("lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_taken_before_a_load_never_loads_it_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let w = format!("restore-{}", std::process::id());
    let config = on_dir(tmp.path(), &w);
    let d = TestDaemon::start_with(config.clone()).await;
    let teller = d.login("teller", "teller123").await;
    let start_balance = balance(&w);

    // A backup while the daemon runs, before the load.
    let backup = tmp.path().join("backup-1");
    let manifest = cardd::backup::make_backup(&d.daemon().store, &backup, 2).unwrap();
    assert_eq!(manifest.kind, "cardd-backup");
    assert_eq!(manifest.journal.transactions, 0);
    assert!(manifest.audit.records > 0, "{manifest:?}");
    // A second backup into the same place is refused and changes nothing.
    assert!(cardd::backup::make_backup(&d.daemon().store, &backup, 2).is_err());

    let done = load(&d, &teller, R50, "before-restore").await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(balance(&w), start_balance + 5_000);
    assert_eq!(record(&d, &teller, R50).await["status"], "loaded");
    stop_and_release(d).await;

    // The data directory is newer than the backup: refused without --force, nothing changed.
    let data = tmp.path().join("data");
    let e = restore(&data, &backup, false).unwrap_err();
    assert!(
        matches!(e, cardd::backup::BackupError::CurrentIsNewer { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("--force"), "{e}");
    // Not a backup at all: refused.
    assert!(restore(&data, tmp.path(), true).is_err());

    let report = restore(&data, &backup, true).unwrap();
    assert!(report.forced);
    assert!(report.suspects >= 2, "{report:?}");
    let kept = report
        .replaced_to
        .clone()
        .expect("the replaced data is kept");
    assert!(kept.join("store").is_dir());

    let d = TestDaemon::start_again_with(config.clone()).await;
    let teller = d.login("teller", "teller123").await;
    let supervisor = d.login("supervisor", "super123").await;
    let health = d
        .raw(format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await
        .json();
    assert!(
        health["restored"]["backup_created_at"].is_string(),
        "{health}"
    );
    // The backup shows R50 as 未圈存 again.
    assert_eq!(record(&d, &teller, R50).await["status"], "not_loaded");

    // Presenting the card: its log shows the load made after the backup. Nothing is credited.
    let done = load(&d, &teller, R50, "after-restore").await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["already_on_card"], true, "{done}");
    assert_eq!(balance(&w), start_balance + 5_000, "loaded once, not twice");
    assert_eq!(record(&d, &teller, R50).await["status"], "loaded");
    // And never again, under any key.
    let again = load(&d, &teller, R50, "after-restore-2").await;
    assert_ne!(again["state"], "succeeded", "{again}");
    assert_eq!(balance(&w), start_balance + 5_000);

    // A record the card proves was never loaded loads normally.
    let done = load(&d, &teller, R200, "r200").await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["already_on_card"], Value::Null, "{done}");
    assert_eq!(balance(&w), start_balance + 25_000);

    let restored = d.ok("journal.restored", json!({}), Some(&supervisor)).await;
    assert_eq!(restored["restored"], true, "{restored}");
    assert_eq!(restored["forced"], true);
    let found = restored["loaded_since_backup"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{restored}");
    assert_eq!(found[0]["record_id"], R50);
    assert_eq!(found[0]["amount"], "50.00");
    let waiting = restored["waiting"].as_array().unwrap();
    assert!(
        waiting
            .iter()
            .all(|s| s["record_id"] != R50 && s["record_id"] != R200),
        "{restored}"
    );
    // A teller may not read or clear it.
    d.err("journal.restored", json!({}), Some(&teller)).await;
    d.err(
        "journal.restored_clear",
        json!({"card_number": "x", "record_id": R50, "reason": "看过了"}),
        Some(&teller),
    )
    .await;
    // The restore is in the audit chain, which continues from the backup's.
    let audit = d.daemon().audit.list(None, 500).unwrap();
    assert!(
        audit.iter().any(|r| r.action == "data.restore"),
        "the restore is audited"
    );
    d.daemon().audit.verify_chain().unwrap();
    stop_and_release(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_over_an_older_or_empty_directory_needs_no_force_and_still_checks_cards() {
    let tmp = tempfile::tempdir().unwrap();
    let w = format!("restore-empty-{}", std::process::id());
    let config = on_dir(tmp.path(), &w);
    let d = TestDaemon::start_with(config.clone()).await;
    let backup = tmp.path().join("nightly");
    cardd::backup::make_backup(&d.daemon().store, &backup, 2).unwrap();
    stop_and_release(d).await;
    // The disk was lost: a new, empty data directory.
    let data = tmp.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    let report = restore(&data, &backup, false).unwrap();
    assert!(!report.forced);
    assert!(report.replaced_to.is_none(), "{report:?}");
    assert!(report.suspects >= 2);
    let d = TestDaemon::start_again_with(config).await;
    let supervisor = d.login("supervisor", "super123").await;
    let restored = d.ok("journal.restored", json!({}), Some(&supervisor)).await;
    assert_eq!(restored["restored"], true);
    assert_eq!(restored["forced"], false);
    assert!(!restored["waiting"].as_array().unwrap().is_empty());
    stop_and_release(d).await;
}
