//! The flow engine: the funded 圈存 flow in Lua against the same sequence hand-written in Rust.
//!
//! Both run on the same daemon, reader, simulated card and journal, and both load a paid ETC
//! recharge record (充值记录, created before each timed run: a credit is always backed by a
//! funded record). The Lua side is a run of the flow engine on `scripts/etc_load.lua`: the run
//! record written and the flow started at once, the record made durable by a flush round beside
//! the flow's first steps (`flows.start` answers after it), a fresh sandboxed Lua state, the record from the
//! issuer host, `card.info()` (SELECT, READ 0015, GET BALANCE: no PIN, no load started),
//! `card.settle_record` (the card checked against the record), progress events,
//! `card.load_record()` (the record 圈存中, the security module's funding check, the journaled
//! load: identify, PIN, INITIALIZE, MAC1, intent durable, CREDIT, TAC, outcome durable, the
//! record 已圈存) and the run's end made durable, without the operator's confirmation (a
//! person's think time is not the engine's). The Rust side is the same sequence without Lua:
//! the record from the issuer host, then on the reader's worker `summary::read` and
//! `EtcService::settle_record` and `EtcService::load_record` in one job (the flow makes these
//! as three card calls), through the same journal and host, which is what a service written without a
//! flow engine would do. A third side adds to that
//! Rust sequence what the flow engine adds around the card work, with the same durability and
//! the same waits: a run record written before the card work and made durable by a flush round
//! on a blocking thread beside it (waited for before the result counts), and its end written
//! and made durable after (the idempotent run a client can retry), so the ratio against it is
//! the cost of Lua and the engine alone.
//!
//! Each comparison runs twice: with the data directory on disk (where every durable write waits
//! for fsync) and on a tmpfs (where fsync is free), which separates the engine's CPU cost from
//! the disk's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cardd::flows::{RunState, StartParams};
use cardd::readers::Holder;
use cardd_script::{run_flow, FlowDefinition, Limits, LogModule, RunContext, Sandbox};
use serde_json::json;

use crate::client::BenchDaemon;
use crate::report::{self, Samples};

const READER_ID: &str = "sim:etc";
/// Interleaved rounds of each side.
const ROUNDS: usize = 5;

/// The shipped 圈存 flow of a recharge record.
const ETC_LOAD: &str = include_str!("../../scripts/etc_load.lua");
/// Where it asks the operator to confirm; the benchmark's copy answers yes without asking.
const CONFIRM: &str = "ui.confirm(message)";
/// Each run loads a new paid record of this amount onto the demo ETC card.
const RECORD_FEN: i64 = 1;

/// `scripts/etc_load.lua` with the confirmation answered.
fn bench_flow() -> Result<String> {
    anyhow::ensure!(
        ETC_LOAD.matches(CONFIRM).count() == 1,
        "scripts/etc_load.lua no longer asks `{CONFIRM}` once; update the flow benchmark"
    );
    Ok(ETC_LOAD.replace(CONFIRM, "true"))
}

/// A paid 未圈存 record for the demo ETC card (what the teller's 充值 creates).
fn paid_record(daemon: &cardd::server::Daemon, operator: &str) -> Result<String> {
    let host = daemon.host.as_deref().context("issuer host")?;
    let record = host
        .recharge(
            cardd_store::demo::DEMO_ETC_PLATE,
            cardd_store::demo::DEMO_ETC_COLOUR,
            RECORD_FEN,
            operator,
            "银行柜台",
        )
        .map_err(|e| anyhow::anyhow!("recharge: {e}"))?;
    Ok(record.record_id)
}

/// A tmpfs, where fsync costs nothing.
const TMPFS: &str = "/dev/shm";

pub fn run(runtime: &tokio::runtime::Runtime, samples: usize) -> Result<()> {
    // On a long-lived flow thread, where the daemon runs flows.
    let threads = cardd_script::FlowThreads::new("bench-flow", 1);
    let (done, finished) = std::sync::mpsc::channel();
    threads
        .spawn(move || {
            let _ = done.send(lua_state_cost(samples * 5));
        })
        .context("a flow thread")?;
    finished.recv().context("the flow thread answered")??;
    runtime.block_on(measure(samples, &std::env::temp_dir(), "disk"))?;
    if std::path::Path::new(TMPFS).is_dir() {
        runtime.block_on(measure(samples, std::path::Path::new(TMPFS), "tmpfs"))?;
    }
    Ok(())
}

/// The engine's own cost per run, in parts: building a sandboxed state, compiling the flow from
/// text (what every run did before flows were compiled once), loading its bytecode (what a run
/// does when no state was built ahead), and a whole run of a flow that returns at once, with a
/// state built ahead of it and with one built during the run (state, bind, module
/// registration, the watchdog's watch, the result), on a long-lived flow thread as in the daemon. The daemon adds its run record and its API
/// modules on top; the end-to-end figures below include both.
fn lua_state_cost(n: usize) -> Result<()> {
    let limits = Limits::default();
    let source = bench_flow()?;
    let def = FlowDefinition::from_source("etc_load.lua", &source).context("etc_load.lua")?;
    let mut create = Samples::default();
    let mut compile = Samples::default();
    let mut load = Samples::default();
    for i in 0..n {
        let ctx = RunContext::new(format!("bench-{i}"));
        let started = Instant::now();
        let sandbox = Sandbox::new(&limits, &ctx).context("sandbox")?;
        create.push(started.elapsed());
        let started = Instant::now();
        sandbox.load("etc_load.lua", &source).context("compile")?;
        compile.push(started.elapsed());
        drop(sandbox);
        let sandbox = Sandbox::new(&limits, &ctx).context("sandbox")?;
        let started = Instant::now();
        def.load_into(&sandbox).context("load")?;
        load.push(started.elapsed());
    }
    create.print("flow.lua_state_create");
    compile.print("flow.lua_compile_text");
    load.print("flow.lua_load_bytecode");

    let empty = FlowDefinition::from_source(
        "empty.lua",
        "return { name = \"bench.empty\", version = \"1.0.0\", title = \"空\", \
         role = {\"teller\"}, params = {}, run = function(ctx, params) return {} end }",
    )
    .context("empty flow")?;
    let empty = std::sync::Arc::new(empty);
    let log = LogModule::new();
    let run_empty = |def: &std::sync::Arc<FlowDefinition>, i: usize| -> Result<Duration> {
        let params = def.validate_params(&json!({})).context("params")?;
        let ctx = RunContext::new(format!("empty-{i}"));
        let started = Instant::now();
        run_flow(def.clone(), params, &[&log], limits.clone(), ctx).context("empty run")?;
        Ok(started.elapsed())
    };
    let mut prebuilt = Samples::default();
    let mut built = Samples::default();
    run_empty(&empty, 0)?;
    for i in 0..n {
        // A state built ahead, as between a teller's loads.
        let give_up = Instant::now() + Duration::from_secs(10);
        while empty.ready_states() == 0 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_micros(200));
        }
        prebuilt.push(run_empty(&empty, i)?);
        // A version's first run: nothing built ahead.
        let fresh = std::sync::Arc::new(
            FlowDefinition::from_source("empty.lua", empty.source()).context("empty flow")?,
        );
        built.push(run_empty(&fresh, i)?);
    }
    prebuilt.print("flow.lua_empty_run_prebuilt_state");
    built.print("flow.lua_empty_run_state_built_in_run");
    Ok(())
}

async fn measure(samples: usize, base: &std::path::Path, place: &str) -> Result<()> {
    let source = bench_flow()?;
    let d = BenchDaemon::start_in(base, |config, dir| {
        let flows = dir.join("flows");
        let _ = std::fs::create_dir_all(&flows);
        let _ = std::fs::write(flows.join("etc_load.lua"), source);
        let _ = std::fs::write(flows.join("bench_calls.lua"), CARD_CALLS);
        config.flows.dir = Some(flows);
    })
    .await?;
    let token = d.login("teller", "teller123").await?;
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
    // Each run's record is paid before the clock starts.
    let lua = |key: &mut u64, record_id: String| {
        *key += 1;
        let params = StartParams {
            flow: "etc.load".into(),
            params: json!({ "record_id": record_id }),
            idempotency_key: format!("bench-{key}"),
            reader_id: Some(READER_ID.into()),
        };
        let daemon = daemon.clone();
        let session = session.clone();
        async move { run_to_success(&daemon, &session, params).await }
    };
    let runs = daemon.store.tree("bench_runs")?;
    let mut txn = 0u64;
    let rust = |txn: &mut u64, run_record: bool, record_id: String| {
        *txn += 1;
        let daemon = daemon.clone();
        let holder = holder.clone();
        let txn_id = format!("rust-{txn}");
        let runs = runs.clone();
        async move {
            // What the flow engine does around the card work: the run written before, and made
            // durable by a round beside the card work (the first intent's round may cover it)...
            let start_durable = if run_record {
                runs.insert(txn_id.as_bytes(), b"running".as_slice())?;
                let mark = daemon.store.write_mark();
                let store = daemon.store.clone();
                Some(tokio::task::spawn_blocking(move || {
                    store.wait_durable(mark)
                }))
            } else {
                None
            };
            // The flow's steps, in its order: the record from the issuer host, the card read,
            // the card settled against the record, the journaled load.
            let host = daemon.host.clone().context("the issuer host")?;
            let record = host
                .record(&record_id)
                .map_err(|e| anyhow::anyhow!("record: {e}"))?;
            anyhow::ensure!(record.is_some(), "no record {record_id}");
            // One job on the reader's worker (the flow makes three card calls; one job is the
            // cheapest a Rust service can do).
            let job_daemon = daemon.clone();
            let loaded = daemon
                .readers
                .run(READER_ID, &holder, "bench", move |reader| {
                    let d = &job_daemon;
                    cardd::summary::read(
                        reader,
                        d.config.terminal_id,
                        cardd::summary::Counters::None,
                    )
                    .map_err(|e| anyhow::anyhow!("summary: {}", e.message))?;
                    let etc = d.etc.as_ref().context("the ETC service")?;
                    let settled = etc
                        .settle_record(reader, &record_id, "teller")
                        .map_err(|e| anyhow::anyhow!("settle_record: {e}"))?;
                    anyhow::ensure!(!settled.already_on_card, "already on the card");
                    etc.load_record(reader, READER_ID, &record_id, "teller", &txn_id)
                        .map_err(|e| anyhow::anyhow!("load_record: {e}"))
                })
                .await
                .map_err(|e| anyhow::anyhow!("reader: {}", e.message))??;
            let receipt = loaded.receipt.context("the record was not loaded")?;
            anyhow::ensure!(
                i64::from(receipt.amount_fen) == RECORD_FEN,
                "loaded {}",
                receipt.amount_fen
            );
            if let Some(start_durable) = start_durable {
                start_durable.await??;
            }
            // ...and its result durable after.
            if run_record {
                runs.insert(receipt.txn_id.as_bytes(), receipt.tac.as_bytes())?;
                daemon.store.durable_flush()?;
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    let operator = session.username.clone();
    let paid = || paid_record(&daemon, &operator);
    for _ in 0..5 {
        lua(&mut key, paid()?).await?;
        rust(&mut txn, false, paid()?).await?;
        rust(&mut txn, true, paid()?).await?;
    }
    let per_round = (samples / ROUNDS).max(1);
    let mut s_lua = Samples::default();
    let mut s_rust = Samples::default();
    let mut s_rust_run = Samples::default();
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            let record_id = paid()?;
            let started = Instant::now();
            lua(&mut key, record_id).await?;
            s_lua.push(started.elapsed());
        }
        for _ in 0..per_round {
            let record_id = paid()?;
            let started = Instant::now();
            rust(&mut txn, false, record_id).await?;
            s_rust.push(started.elapsed());
        }
        for _ in 0..per_round {
            let record_id = paid()?;
            let started = Instant::now();
            rust(&mut txn, true, record_id).await?;
            s_rust_run.push(started.elapsed());
        }
    }
    let p = format!("flow.{place}");
    report::figure(
        &format!("{p}.samples_per_side"),
        s_lua.len() as f64,
        "loads",
    );
    s_lua.print(&format!("{p}.lua_etc_load"));
    s_rust.print(&format!("{p}.rust_etc_load"));
    s_rust_run.print(&format!("{p}.rust_etc_load_with_run_record"));
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
    if place == "tmpfs" {
        card_call_cost(&daemon, &session, &holder, samples).await?;
    }
    d.stop().await;
    Ok(())
}

/// Starts a run as a client would and waits until it has succeeded.
async fn run_to_success(
    daemon: &std::sync::Arc<cardd::daemon::Daemon>,
    session: &cardd::auth::Session,
    params: StartParams,
) -> Result<()> {
    let engine = daemon.flows.as_ref().context("no flow engine")?;
    let record = cardd::flows::start(engine, session, params, daemon.journal.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("flows.start: {}", e.message))?;
    let done = engine
        .wait_finished(&record.run_id, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("flows.get: {}", e.message))?;
    if done.state != RunState::Succeeded {
        bail!("the flow ended {:?}: {:?}", done.state, done.failure);
    }
    Ok(())
}

/// A flow that reads the balance `n` times, for the cost of one card call from Lua.
const CARD_CALLS: &str = "return { name = \"bench.calls\", version = \"1.0.0\", title = \"读余额\", \
    role = {\"teller\"}, params = { n = { type = \"integer\", required = true, min = 1, max = 1000, \
    label = \"次数\" } }, run = function(ctx, params) for i = 1, params.n do card.balance() end \
    return {} end }";
/// Card calls in the long run of [`CARD_CALLS`].
const CALLS: u64 = 41;

/// The cost of one card call (SELECT + GET BALANCE) from Lua, against the same job from Rust:
/// the call through the `card` module on the flow's thread (argument checks, the reader's lock,
/// the trace mark, the result into Lua) against `ReaderManager::run` from an async task (the
/// hand-off to the reader's worker and back). Per call = (run of 41 calls − run of 1 call) / 40,
/// so the run's own costs cancel out.
async fn card_call_cost(
    daemon: &std::sync::Arc<cardd::daemon::Daemon>,
    session: &cardd::auth::Session,
    holder: &Holder,
    samples: usize,
) -> Result<()> {
    let mut key = 0u64;
    let mut run = |n: u64| {
        key += 1;
        let params = StartParams {
            flow: "bench.calls".into(),
            params: json!({ "n": n }),
            idempotency_key: format!("calls-{key}"),
            reader_id: Some(READER_ID.into()),
        };
        async move {
            let started = Instant::now();
            run_to_success(daemon, session, params).await?;
            Ok::<Duration, anyhow::Error>(started.elapsed())
        }
    };
    let rounds = (samples / 4).max(5);
    let mut short = Samples::default();
    let mut long = Samples::default();
    let mut rust = Samples::default();
    run(1).await?;
    for _ in 0..rounds {
        short.push(run(1).await?);
        long.push(run(CALLS).await?);
        let started = Instant::now();
        for _ in 0..CALLS - 1 {
            daemon
                .readers
                .run(READER_ID, holder, "bench", |reader| {
                    let mut purse = cardd_purse::Purse::new(reader);
                    purse.select_etc_adf()?;
                    purse.balance()
                })
                .await
                .map_err(|e| anyhow::anyhow!("reader: {}", e.message))?
                .context("balance")?;
        }
        rust.push(started.elapsed());
    }
    let per_call = |total: f64| total / (CALLS - 1) as f64;
    let lua_call = per_call(long.median() - short.median());
    let rust_call = per_call(rust.median());
    // The engine's fixed cost per run in the daemon: a run with one card call (start, the run
    // record and its flush round beside the flow, the state, modules, the call, the end made
    // durable, the waiter woken) less the same call through the reader's worker.
    report::figure("flow.daemon_run_one_card_call.p50", short.median(), "us");
    report::figure(
        "flow.daemon_run_fixed_cost.p50",
        short.median() - rust_call,
        "us",
    );
    report::figure("flow.lua_card_call.p50", lua_call, "us");
    report::figure("flow.rust_card_call_via_reader_worker.p50", rust_call, "us");
    report::ratio("flow.lua_card_call_vs_rust.p50", lua_call, rust_call);
    Ok(())
}
