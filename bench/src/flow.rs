//! The flow engine: the 圈存 flow in Lua against the same sequence hand-written in Rust.
//!
//! Both run on the same daemon, reader, simulated card and journal. The Lua side is a run of
//! the flow engine: the run record made durable before the flow starts, a fresh sandboxed Lua
//! state, `card.info()` (SELECT, READ 0015, GET BALANCE, VERIFY PIN, a probing INITIALIZE),
//! progress events, `card.load()` (the journaled load: identify, PIN, INITIALIZE, MAC1,
//! intent durable, CREDIT, TAC, outcome durable) and the run's end made durable. It is
//! `scripts/card_load.lua` without the operator's confirmation (a person's think time is not
//! the engine's). The Rust side is the same card work on the reader's worker: `summary::read`
//! then `load_card` through the same journal, which is what a service written without a flow
//! engine would do. A third side adds to that Rust sequence what the flow engine adds around
//! the card work: a run record made durable before and after (the idempotent run a client can
//! retry), so the ratio against it is the cost of Lua and the engine alone.
//!
//! Each comparison runs twice: with the data directory on disk (where every durable write waits
//! for fsync) and on a tmpfs (where fsync is free), which separates the engine's CPU cost from
//! the disk's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cardd::flows::{RunState, StartParams};
use cardd::readers::Holder;
use cardd_journal::{load_card, LoadRequest};
use cardd_purse::Purse;
use cardd_script::{Limits, RunContext, Sandbox};
use serde_json::json;

use crate::client::BenchDaemon;
use crate::report::{self, Samples};

const READER_ID: &str = "sim:etc";
/// Interleaved rounds of each side.
const ROUNDS: usize = 5;

/// The shipped 圈存 flow.
const CARD_LOAD: &str = include_str!("../../scripts/card_load.lua");
/// Where it asks the operator to confirm; the benchmark's copy answers yes without asking.
const CONFIRM: &str = "ui.confirm(message)";

/// `scripts/card_load.lua` with the confirmation answered.
fn bench_flow() -> Result<String> {
    anyhow::ensure!(
        CARD_LOAD.matches(CONFIRM).count() == 1,
        "scripts/card_load.lua no longer asks `{CONFIRM}` once; update the flow benchmark"
    );
    Ok(CARD_LOAD.replace(CONFIRM, "true"))
}

/// A tmpfs, where fsync costs nothing.
const TMPFS: &str = "/dev/shm";

pub fn run(runtime: &tokio::runtime::Runtime, samples: usize) -> Result<()> {
    lua_state_cost(samples * 5)?;
    runtime.block_on(measure(samples, &std::env::temp_dir(), "disk"))?;
    if std::path::Path::new(TMPFS).is_dir() {
        runtime.block_on(measure(samples, std::path::Path::new(TMPFS), "tmpfs"))?;
    }
    Ok(())
}

/// What a fresh sandboxed Lua state costs (every run gets one).
fn lua_state_cost(n: usize) -> Result<()> {
    let limits = Limits::default();
    let mut s = Samples::default();
    for i in 0..n {
        let ctx = RunContext::new(format!("bench-{i}"));
        let started = Instant::now();
        let sandbox = Sandbox::new(&limits, &ctx).context("sandbox")?;
        s.push(started.elapsed());
        drop(sandbox);
    }
    s.print("flow.lua_state_create");
    Ok(())
}

async fn measure(samples: usize, base: &std::path::Path, place: &str) -> Result<()> {
    let source = bench_flow()?;
    let d = BenchDaemon::start_in(base, |config, dir| {
        let flows = dir.join("flows");
        let _ = std::fs::create_dir_all(&flows);
        let _ = std::fs::write(flows.join("card_load.lua"), source);
        config.flows.dir = Some(flows);
    })
    .await?;
    // `card.load` is the administrator's demo-keys test mode (no funded record behind it).
    let token = d.login("admin", "admin123").await?;
    let daemon = d.daemon().clone();
    let session = daemon
        .auth
        .authenticate(&token, Instant::now())
        .context("session")?;
    let holder = Holder {
        operator: session.username.clone(),
        session: token.clone(),
    };
    daemon.flows.as_ref().context("no flow engine")?;
    let mut key = 0u64;
    let lua = |key: &mut u64| {
        *key += 1;
        let params = StartParams {
            flow: "card.load".into(),
            params: json!({ "amount": "0.01" }),
            idempotency_key: format!("bench-{key}"),
            reader_id: Some(READER_ID.into()),
        };
        let daemon = daemon.clone();
        let session = session.clone();
        async move {
            let record = cardd::flows::start(&daemon, &session, params)
                .map_err(|e| anyhow::anyhow!("flows.start: {}", e.message))?;
            let engine = daemon.flows.as_ref().context("no flow engine")?;
            let done = engine
                .wait_finished(&record.run_id, Duration::from_secs(30))
                .await
                .map_err(|e| anyhow::anyhow!("flows.get: {}", e.message))?;
            if done.state != RunState::Succeeded {
                bail!("the flow ended {:?}: {:?}", done.state, done.failure);
            }
            Ok(())
        }
    };
    let runs = daemon.store.tree("bench_runs")?;
    let mut txn = 0u64;
    let rust = |txn: &mut u64, run_record: bool| {
        *txn += 1;
        let daemon = daemon.clone();
        let holder = holder.clone();
        let txn_id = format!("rust-{txn}");
        let runs = runs.clone();
        async move {
            // What the flow engine does around the card work: the run durable before...
            if run_record {
                runs.insert(txn_id.as_bytes(), b"running".as_slice())?;
                daemon.store.durable_flush()?;
            }
            let job_daemon = daemon.clone();
            let receipt = daemon
                .readers
                .run(READER_ID, &holder, move |reader| {
                    let d = &job_daemon;
                    let info =
                        cardd::summary::read(reader, &d.config.etc_pin, d.config.terminal_id)
                            .map_err(|e| anyhow::anyhow!("summary: {}", e.message))?;
                    let journal = d.journal.as_ref().context("journal")?;
                    let request = LoadRequest {
                        txn_id,
                        amount_fen: 1,
                        terminal: d.config.terminal_id,
                        date: cardd_crypto::bcd::date(2026, 12, 5),
                        time: cardd_crypto::bcd::time(12, 0, 0),
                        etc_pin: d.config.etc_pin.clone(),
                        expected_card: Some(info.card_number),
                        city_algorithm: cardd_crypto::Algorithm::Tdes,
                        funding: cardd_journal::Funding::TestMode,
                    };
                    let mut purse = Purse::new(reader);
                    load_card(&mut purse, d.sam.as_ref(), journal, READER_ID, &request)
                        .map_err(anyhow::Error::from)
                })
                .await
                .map_err(|e| anyhow::anyhow!("reader: {}", e.message))??;
            anyhow::ensure!(receipt.amount_fen == 1, "loaded {}", receipt.amount_fen);
            // ...and its result durable after.
            if run_record {
                runs.insert(receipt.txn_id.as_bytes(), receipt.tac.as_bytes())?;
                daemon.store.durable_flush()?;
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    for _ in 0..5 {
        lua(&mut key).await?;
        rust(&mut txn, false).await?;
        rust(&mut txn, true).await?;
    }
    let per_round = (samples / ROUNDS).max(1);
    let mut s_lua = Samples::default();
    let mut s_rust = Samples::default();
    let mut s_rust_run = Samples::default();
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            let started = Instant::now();
            lua(&mut key).await?;
            s_lua.push(started.elapsed());
        }
        for _ in 0..per_round {
            let started = Instant::now();
            rust(&mut txn, false).await?;
            s_rust.push(started.elapsed());
        }
        for _ in 0..per_round {
            let started = Instant::now();
            rust(&mut txn, true).await?;
            s_rust_run.push(started.elapsed());
        }
    }
    let p = format!("flow.{place}");
    report::figure(
        &format!("{p}.samples_per_side"),
        s_lua.len() as f64,
        "loads",
    );
    s_lua.print(&format!("{p}.lua_card_load"));
    s_rust.print(&format!("{p}.rust_card_load"));
    s_rust_run.print(&format!("{p}.rust_card_load_with_run_record"));
    report::ratio(
        &format!("{p}.lua_vs_rust.p50"),
        s_lua.median(),
        s_rust.median(),
    );
    report::ratio(
        &format!("{p}.lua_vs_rust.mean"),
        s_lua.mean(),
        s_rust.mean(),
    );
    report::ratio(
        &format!("{p}.lua_vs_rust_with_run_record.p50"),
        s_lua.median(),
        s_rust_run.median(),
    );
    report::ratio(
        &format!("{p}.lua_vs_rust_with_run_record.mean"),
        s_lua.mean(),
        s_rust_run.mean(),
    );
    report::figure(
        &format!("{p}.lua_overhead_vs_rust_with_run_record.p50"),
        s_lua.median() - s_rust_run.median(),
        "us",
    );
    d.stop().await;
    Ok(())
}
