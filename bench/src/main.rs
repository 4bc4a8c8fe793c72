//! `cardd-bench`: what cardd costs next to the card itself and next to what users would use
//! instead, measured side by side in one run (`cargo xtask bench`, see docs/performance.md).
//!
//! Every figure is printed as `name: value unit`; every comparison is a ratio of two figures
//! measured in the same run, so a busy machine slows both sides alike. Sections:
//!
//! * `apdu`: GET BALANCE through cardd's JSON-RPC (HTTP and WebSocket) to a simulated card
//!   behind the real pcscd and vpcd, against the same APDU sent directly through PC/SC.
//! * `flow`: the 圈存 flow in Lua through the flow engine, against the same sequence written in
//!   Rust on the same reader, card and journal.
//! * `loads`: durable loads per second with 1, 4, 16 and 64 simulated readers at once.
//! * `service`: requests per second and latency percentiles of a small read method at fixed
//!   concurrency; events per second to many WebSocket subscribers.
//! * `footprint`: the `cardd` binary's start-up time, resident memory idle and under load, CPU
//!   while idle with readers attached.
//! * `host`: the fleet's issuer host (`cardd-host`, a real process, on PostgreSQL): authorized
//!   loads per second and latency with 1, 16 and 64 simulated sites, with one and two hosts,
//!   round trips and PostgreSQL transactions per load, against `pgbench -N` on the same cluster.
//! * `backup`: a live copy of one moment (`cardd backup`) and the closed copy of a restore, of
//!   a database of 300,000 records, against `cp -r`.
//!
//! Benchmarks print figures and assert nothing about time; the test suite asserts behaviour.

mod apdu;
mod backup;
mod client;
mod flow;
mod footprint;
mod host;
mod loads;
mod report;
mod service;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// What to run.
#[derive(Debug)]
struct Args {
    sections: Vec<String>,
    cardd: Option<PathBuf>,
    quick: bool,
}

const SECTIONS: &[&str] = &[
    "apdu",
    "flow",
    "loads",
    "service",
    "footprint",
    "host",
    "backup",
];

fn parse_args() -> Result<Args> {
    let mut args = Args {
        sections: Vec::new(),
        cardd: None,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cardd" => args.cardd = Some(it.next().context("--cardd needs a path")?.into()),
            "--quick" => args.quick = true,
            "--help" | "-h" => {
                println!(
                    "usage: cardd-bench [--quick] [--cardd PATH-TO-CARDD] [{}]...",
                    SECTIONS.join("|")
                );
                std::process::exit(0);
            }
            s if SECTIONS.contains(&s) => args.sections.push(s.to_owned()),
            other => bail!("unknown argument {other:?}; sections are {SECTIONS:?}"),
        }
    }
    if args.sections.is_empty() {
        args.sections = SECTIONS.iter().map(|s| (*s).to_owned()).collect();
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    report::machine();
    let scale = if args.quick { 5 } else { 1 };
    for section in &args.sections {
        let outcome = match section.as_str() {
            "apdu" => apdu::run(&runtime, 1_000 / scale),
            "flow" => flow::run(&runtime, 200 / scale),
            "loads" => loads::run(if args.quick { 1.0 } else { 3.0 }),
            "service" => service::run(&runtime, if args.quick { 1.0 } else { 3.0 }),
            "footprint" => footprint::run(
                &runtime,
                args.cardd.as_deref(),
                if args.quick { 3 } else { 10 },
            ),
            "host" => host::run(args.quick),
            "backup" => backup::run(300_000 / scale),
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            println!("{section}.error: {e:#}");
        }
    }
    Ok(())
}
