//! The service: requests per second and latency percentiles of a small read method at a fixed
//! concurrency, over HTTP and WebSocket; events per second to many WebSocket subscribers.
//!
//! The daemon runs in this process on the embedded default (three simulated readers), with the
//! per-connection rate limit raised so the figures measure cardd, not its throttle. The method
//! is `readers.list` (token check, role check, the reader table, JSON out): what a teller page
//! polls. Clients and daemon share the machine's cores, as they do on a teller PC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use cardd::events::{EventKind, SUBSCRIBER_QUEUE_MAX};
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use serde_json::Value;

use crate::client::{self, BenchDaemon};
use crate::report::{self, Samples};

/// Clients calling at once.
const CONCURRENCY: usize = 16;
/// WebSocket subscribers to the event bus.
const SUBSCRIBERS: usize = 100;

pub fn run(runtime: &tokio::runtime::Runtime, seconds: f64) -> Result<()> {
    runtime.block_on(measure(seconds))
}

async fn measure(seconds: f64) -> Result<()> {
    let d = BenchDaemon::start(|_, _| {}).await?;
    let token = d.login("teller", "teller123").await?;
    let duration = Duration::from_secs_f64(seconds);

    // One connection per client.
    let mut http = Vec::new();
    let mut ws = Vec::new();
    for _ in 0..CONCURRENCY {
        http.push(client::http(d.addr(), &token)?);
        ws.push(client::ws(d.addr(), &token).await?);
    }
    for (transport, (rate, samples)) in [
        ("http", hammer(http, duration).await?),
        ("ws", hammer(ws, duration).await?),
    ] {
        let name = format!("service.{transport}.c{CONCURRENCY}");
        report::figure(&format!("{name}.readers_list"), rate, "req/s");
        samples.print(&format!("{name}.latency"));
    }

    events(&d, &token, duration).await?;
    d.stop().await;
    Ok(())
}

/// Each client calls `readers.list` in a loop for `duration`; returns the rate and latencies.
async fn hammer<C>(clients: Vec<C>, duration: Duration) -> Result<(f64, Samples)>
where
    C: ClientT + Send + Sync + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let mut s = Samples::default();
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let call = Instant::now();
                    let r: Result<Value, _> =
                        client.request("readers.list", ObjectParams::new()).await;
                    if r.is_err() {
                        break;
                    }
                    s.push(call.elapsed());
                }
                s
            })
        })
        .collect();
    let mut all = Samples::default();
    for t in tasks {
        all.extend(&t.await?);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, all))
}

/// Publishes events in bursts no larger than a subscriber's queue and waits until every
/// subscriber has received each burst, so nothing is dropped: the sustained delivery rate.
async fn events(d: &BenchDaemon, token: &str, duration: Duration) -> Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let ws = client::ws(d.addr(), token).await?;
        let mut sub: Subscription<Value> = ws
            .subscribe(
                "events.subscribe",
                ObjectParams::new(),
                "events.unsubscribe",
            )
            .await?;
        let (received, arrived) = (received.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Some(Ok(_)) = sub.next().await {
                received.fetch_add(1, Ordering::Relaxed);
                arrived.notify_one();
            }
        });
        clients.push(ws);
    }
    let burst = (SUBSCRIBER_QUEUE_MAX / 2) as u64;
    let bus = d.daemon().events.clone();
    let end = Instant::now() + duration;
    let started = Instant::now();
    let mut published = 0u64;
    let mut lost = false;
    while Instant::now() < end {
        for _ in 0..burst {
            bus.publish(EventKind::CardRemoved {
                reader_id: "sim:etc".into(),
            });
        }
        published += burst;
        let target = published * SUBSCRIBERS as u64;
        let wait_end = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::Relaxed) < target {
            if tokio::time::timeout_at(wait_end.into(), arrived.notified())
                .await
                .is_err()
            {
                lost = true;
                break;
            }
        }
        if lost {
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let delivered = received.load(Ordering::Relaxed) as f64;
    report::figure(
        "service.events.subscribers",
        SUBSCRIBERS as f64,
        "WebSocket clients",
    );
    report::figure("service.events.delivered", delivered / wall, "events/s");
    report::figure(
        "service.events.published",
        published as f64 / wall,
        "events/s (each to every subscriber)",
    );
    if lost {
        report::note(
            "service.events.warning",
            "some events did not arrive within 10 s",
        );
    }
    drop(clients);
    Ok(())
}
