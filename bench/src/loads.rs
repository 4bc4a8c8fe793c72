//! Throughput and scaling: durable loads per second with 1, 4, 16 and 64 simulated readers
//! working at once.
//!
//! Each reader is a thread that does what a daemon's reader worker does for `card.load`:
//! `load_card` on its own simulated ETC card (all APDUs, MAC1/MAC2/TAC, the intent durable
//! before CREDIT, the outcome durable before returning), all readers sharing one journal on
//! disk. Besides loads per second, each step prints what limits it: the share of wall time the
//! CPUs were busy, and how many durable writes each fsync round carried (group commit) and how
//! long a round took.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cardd_journal::{load_card, Journal, LoadRequest, Store};
use cardd_purse::{Purse, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{EtcCard, EtcCardSpec, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

use crate::report;

const READERS: &[usize] = &[1, 4, 16, 64];

pub fn run(seconds: f64) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut first = 0.0;
    for &n in READERS {
        let dir = tempfile::tempdir().context("temp dir")?;
        let store = Store::open(&dir.path().join("db"))?;
        let journal = Arc::new(Journal::open(&store)?);
        let sam = Arc::new(SoftSam::demo());
        let stop = Arc::new(AtomicBool::new(false));
        let loads = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let stats_before = store.flush_stats();
        let cpu_before = report::process_cpu();
        let started = Instant::now();
        for i in 0..n {
            let mut reader = sim_reader(i)?;
            let (journal, sam, stop, loads, failures) = (
                journal.clone(),
                sam.clone(),
                stop.clone(),
                loads.clone(),
                failures.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let request = LoadRequest {
                        txn_id: format!("r{i}-{k}"),
                        amount_fen: 1,
                        terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                        date: cardd_crypto::bcd::date(2026, 12, 5),
                        time: cardd_crypto::bcd::time(12, 0, 0),
                        etc_pin: "123456".into(),
                        expected_card: None,
                        city_algorithm: cardd_crypto::Algorithm::Tdes,
                        funding: cardd_journal::Funding::TestMode,
                    };
                    let mut purse = Purse::new(&mut reader);
                    match load_card(&mut purse, sam.as_ref(), &journal, "sim", &request) {
                        Ok(_) => loads.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("load failed: {e}");
                            }
                            0
                        }
                    };
                }
            }));
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = (report::process_cpu() - cpu_before).as_secs_f64();
        let stats = store.flush_stats().since(&stats_before);
        let done = loads.load(Ordering::Relaxed) as f64;
        let rate = done / wall;
        if n == 1 {
            first = rate;
        }
        let name = format!("loads.readers_{n}");
        report::figure(&format!("{name}.loads_per_s"), rate, "loads/s");
        report::ratio(&format!("{name}.speedup_vs_1_reader"), rate, first);
        report::figure(
            &format!("{name}.cpu_busy"),
            100.0 * cpu / wall / cores as f64,
            "% of all cores",
        );
        report::figure(
            &format!("{name}.durable_writes_per_fsync_round"),
            stats.requests as f64 / stats.rounds.max(1) as f64,
            "writes",
        );
        report::figure(
            &format!("{name}.fsync_round"),
            stats.busy.as_secs_f64() * 1e6 / stats.rounds.max(1) as f64,
            "us",
        );
        report::figure(
            &format!("{name}.fsync_busy"),
            100.0 * stats.busy.as_secs_f64() / wall,
            "% of wall time",
        );
        let failed = failures.load(Ordering::Relaxed);
        if failed > 0 {
            report::figure(&format!("{name}.failed"), failed as f64, "loads");
        }
    }
    Ok(())
}

/// A simulated contact reader holding ETC card number `i` (each reader its own card, as each
/// teller desk has its own customer).
fn sim_reader(i: usize) -> Result<Reader> {
    let spec = EtcCardSpec {
        internal_number: format!("18019{i:011}"),
        ..cardd_sim::demo::demo_etc_spec()
    };
    let card = EtcCard::issue(&spec, &cardd_sim::demo::demo_masters())
        .map_err(|e| anyhow::anyhow!("issuing card {i}: {e}"))?;
    let world = SimWorld::new();
    let id = format!("r{i}");
    world.add_reader(SimReaderConfig::new(&id, SimReaderKind::Contact).with_card(card.into()))?;
    let factory = SimFactory::new(world);
    let session = factory.open(&ReaderSelector::Id(format!("sim:{id}")))?;
    Ok(Reader::new(session, Duration::from_secs(5)))
}
