//! `backup`: what a backup and a restore cost. A database of `records` keys of a journal
//! record's size (600 bytes) in three trees is copied live ([`Store::copy_to`]: the copy of one
//! moment `cardd backup` makes) and then closed ([`cardd_journal::copy::copy_closed`]: what
//! `cardd restore` does), against a plain `cp -r` of the same files.

use std::time::Instant;

use anyhow::{ensure, Result};
use cardd_journal::Store;

use crate::report::{figure, note, ratio};

/// Bytes of a value: about a journal record (session, plan, state, checksum) as JSON.
const VALUE_BYTES: usize = 600;

pub fn run(records: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("db");
    let store = Store::open(&source)?;
    let value = vec![b'x'; VALUE_BYTES];
    for (n, tree) in ["journal", "records", "audit"].iter().enumerate() {
        let tree = store.tree(tree)?;
        for i in 0..records / 3 {
            tree.insert(format!("k/{n}/{i:09}").as_bytes(), value.as_slice())?;
        }
    }
    store.durable_flush()?;
    note(
        "backup.records",
        &format!("{records} keys of {VALUE_BYTES} bytes"),
    );

    let started = Instant::now();
    let stats = store.copy_to(&dir.path().join("backup"), &[])?;
    let live_s = started.elapsed().as_secs_f64();
    ensure!(stats.trees.values().sum::<u64>() >= records as u64 / 3 * 3);
    figure("backup.live_copy", live_s * 1000.0, "ms");
    figure(
        "backup.live_copy_rate",
        stats.bytes as f64 / live_s / 1e6,
        "MB/s",
    );
    figure("backup.attempts", f64::from(stats.attempts), "attempts");
    drop(store);

    let started = Instant::now();
    let bytes = cardd_journal::copy::copy_closed(
        &dir.path().join("backup"),
        &dir.path().join("restoring"),
    )?;
    let closed_s = started.elapsed().as_secs_f64();
    figure("backup.restore_copy", closed_s * 1000.0, "ms");
    figure("backup.files_bytes", bytes as f64 / 1e6, "MB");

    let started = Instant::now();
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.path().join("backup"))
        .arg(dir.path().join("cp"))
        .status()?;
    ensure!(cp.success(), "cp -r");
    let cp_s = started.elapsed().as_secs_f64();
    figure("backup.cp_r", cp_s * 1000.0, "ms");
    ratio("backup.restore_copy_vs_cp_r", closed_s, cp_s);
    Ok(())
}
