//! Prometheus metrics: what the daemon did and how long it took, at `GET /metrics`.
//!
//! Why: a teller PC's cardd is judged by the seconds a customer waits at the counter, and most
//! of them belong to the card. These series show where time goes and what fails without
//! reading logs: per-reader APDU latency and failures (timeouts, cards removed mid-command,
//! readers gone), card removals, reader plugins' health (state, restarts, backoff, malformed
//! lines), flow outcomes and durations, journal flush latency (every
//! money step waits for one), and JSON-RPC request counts and latencies per method.
//!
//! The text is OpenMetrics (which Prometheus scrapes), rendered by the `prometheus-client`
//! crate. `GET /metrics` sits behind the same Host and Origin checks as everything else on the
//! loopback listener and needs no token: it holds counts and durations only (reader ids, flow
//! and method names), no operator, card number or amount, so a scraper needs no operator
//! account. Label values come from configuration and the method catalogue, never from clients,
//! so the number of series is bounded.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cardd_api::readers::{PluginState, PluginStatus};

use cardd_reader::{
    ApduTransport, Atr, CardEvents, CardPresence, CardReader, ExclusiveAccess, ObuChannel,
    Protocol, PsamSlots, ReaderError, ReaderInfo,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 10 µs to ~5 s, doubling: an APDU over a fast PC/SC stack up to a slow card's timeout.
fn apdu_buckets() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 20))
}

/// 50 µs to ~3 min, doubling: a JSON-RPC call, from a memory read to a long poll.
fn rpc_buckets() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 22))
}

/// 1 ms to ~9 min, doubling: a flow, from a quick read to one waiting for a teller's answer.
fn flow_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1e-3, 2.0, 20))
}

/// 50 µs to ~13 s, doubling: one journal flush round (sled flush plus fsyncs).
fn flush_buckets() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 19))
}

/// The daemon's metrics. Cheap to share behind an `Arc`; every update is lock-free or takes a
/// read lock on the series map.
pub struct Metrics {
    registry: Registry,
    apdu_seconds: HistogramFamily<Labels1>,
    apdu_failures: Family<Labels2, Counter>,
    card_removals: Family<Labels1, Counter>,
    flow_runs: Family<Labels2, Counter>,
    flow_seconds: HistogramFamily<Labels1>,
    journal_flush_seconds: Histogram,
    rpc_requests: Family<Labels2, Counter>,
    rpc_seconds: HistogramFamily<Labels1>,
    plugin_state: Family<Labels2, Gauge>,
    plugin_restarts: Family<Labels1, Counter>,
    plugin_malformed_lines: Family<Labels1, Counter>,
    plugin_backoff_seconds: Family<Labels1, Gauge<f64, AtomicU64>>,
    plugin_readers: Family<Labels1, Gauge>,
    /// Serialises [`Metrics::plugins`] so counters advance by each delta once.
    plugins_seen: Mutex<()>,
    trace_write_failures: Family<Labels1, Counter>,
}

/// Every [`PluginState`] with its label value.
const PLUGIN_STATES: [(PluginState, &str); 5] = [
    (PluginState::Starting, "starting"),
    (PluginState::Running, "running"),
    (PluginState::Backoff, "backoff"),
    (PluginState::Failed, "failed"),
    (PluginState::Stopped, "stopped"),
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut r = Register(&mut registry);
        Metrics {
            apdu_seconds: r.histograms(
                "cardd_apdu_duration_seconds",
                "Time from sending a command APDU to its response, per reader (driver round trip, T=0 chaining steps counted one by one)",
                apdu_buckets,
            ),
            apdu_failures: r.counters(
                "cardd_apdu_failures",
                "Command APDUs that got no response, per reader and kind (timeout, card_removed, no_card, reader_gone, driver_crashed, driver_malformed, other)",
            ),
            card_removals: r.counters(
                "cardd_card_removals",
                "Cards taken out of a reader (card events from the reader's monitor)",
            ),
            flow_runs: r.counters(
                "cardd_flow_runs",
                "Flow runs that ended, per flow and outcome (succeeded, failed, cancelled)",
            ),
            flow_seconds: r.histograms(
                "cardd_flow_duration_seconds",
                "Time from a run's start to its end, per flow (prompts waiting for a person included)",
                flow_buckets,
            ),
            journal_flush_seconds: r.histogram(
                "cardd_journal_flush_duration_seconds",
                "One durable flush round of the database (sled flush plus fsync); concurrent writers share rounds",
                flush_buckets(),
            ),
            rpc_requests: r.counters(
                "cardd_rpc_requests",
                "JSON-RPC calls answered, per method and outcome (ok, or the error code's name)",
            ),
            rpc_seconds: r.histograms(
                "cardd_rpc_duration_seconds",
                "Time to answer a JSON-RPC call, per method (session check, work, audit)",
                rpc_buckets,
            ),
            plugin_state: r.family(
                "cardd_plugin_state",
                "Reader plugins by state: 1 for the state each instance is in now, 0 for the others (starting, running, backoff, failed, stopped)",
            ),
            plugin_restarts: r.counters(
                "cardd_plugin_restarts",
                "Reader plugin starts after the first, per instance (crashes, hangs, failed starts, restarts asked for)",
            ),
            plugin_malformed_lines: r.counters(
                "cardd_plugin_malformed_lines",
                "Lines a reader plugin sent that were not valid protocol messages, per instance",
            ),
            plugin_backoff_seconds: r.family(
                "cardd_plugin_backoff_seconds",
                "The wait before a reader plugin's next start while it is down, per instance (0 while it runs)",
            ),
            plugin_readers: r.family(
                "cardd_plugin_readers",
                "Readers a reader plugin lists now, per instance",
            ),
            plugins_seen: Mutex::new(()),
            trace_write_failures: r.counters(
                "cardd_trace_write_failures",
                "Lines an APDU trace recorder could not write, per trace file (card commands go on; the first failure is logged)",
            ),
            registry,
        }
    }

    /// Brings the reader plugin series up to date with `plugins` (called before rendering).
    pub fn plugins(&self, plugins: &[PluginStatus]) {
        let _one_at_a_time = self.plugins_seen.lock().unwrap_or_else(|p| p.into_inner());
        for p in plugins {
            let instance = [("instance", p.instance.clone())];
            for (state, name) in PLUGIN_STATES {
                self.plugin_state
                    .get_or_create(&[("instance", p.instance.clone()), ("state", name.to_owned())])
                    .set(i64::from(p.state == state));
            }
            let restarts = self.plugin_restarts.get_or_create(&instance);
            restarts.inc_by(p.restarts.saturating_sub(restarts.get()));
            let malformed = self.plugin_malformed_lines.get_or_create(&instance);
            malformed.inc_by(p.malformed_lines.saturating_sub(malformed.get()));
            self.plugin_backoff_seconds
                .get_or_create(&instance)
                .set(p.backoff_ms as f64 / 1000.0);
            self.plugin_readers
                .get_or_create(&instance)
                .set(i64::try_from(p.readers).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One APDU exchange on `reader`.
    pub fn apdu(&self, reader: &str, took: Duration, error: Option<&ReaderError>) {
        self.apdu_seconds
            .get_or_create(&[("reader", reader.to_owned())])
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            let kind = match e {
                ReaderError::Timeout { .. } => "timeout",
                ReaderError::CardRemoved { .. } => "card_removed",
                ReaderError::NoCard { .. } => "no_card",
                ReaderError::ReaderGone { .. } => "reader_gone",
                ReaderError::DriverCrashed { .. } => "driver_crashed",
                ReaderError::DriverMalformed { .. } => "driver_malformed",
                _ => "other",
            };
            self.apdu_failures
                .get_or_create(&[("reader", reader.to_owned()), ("kind", kind.to_owned())])
                .inc();
        }
    }

    /// A card left `reader`.
    pub fn card_removed(&self, reader: &str) {
        self.card_removals
            .get_or_create(&[("reader", reader.to_owned())])
            .inc();
    }

    /// A flow run ended with `outcome` after `took`.
    pub fn flow_finished(&self, flow: &str, outcome: &str, took: Duration) {
        self.flow_runs
            .get_or_create(&[("flow", flow.to_owned()), ("outcome", outcome.to_owned())])
            .inc();
        self.flow_seconds
            .get_or_create(&[("flow", flow.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// One journal flush round.
    pub fn journal_flush(&self, took: Duration) {
        self.journal_flush_seconds.observe(took.as_secs_f64());
    }

    /// A line of the APDU trace `trace` could not be written.
    pub fn trace_write_failed(&self, trace: &str) {
        self.trace_write_failures
            .get_or_create(&[("trace", trace.to_owned())])
            .inc();
    }

    /// A JSON-RPC call of `method` answered with `outcome` (`ok` or an error code's name).
    pub fn rpc(&self, method: &str, outcome: &str, took: Duration) {
        self.rpc_requests
            .get_or_create(&[
                ("method", method.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.rpc_seconds
            .get_or_create(&[("method", method.to_owned())])
            .observe(took.as_secs_f64());
    }
}

/// Registers series (each once, by name) while [`Metrics::new`] builds them.
struct Register<'a>(&'a mut Registry);

impl Register<'_> {
    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        buckets: fn() -> Histogram,
    ) -> HistogramFamily<Labels1> {
        let family = HistogramFamily::<Labels1>::new_with_constructor(buckets);
        self.0.register(name, help, family.clone());
        family
    }

    fn counters<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
    ) -> Family<[(&'static str, String); N], Counter> {
        let family = Family::<[(&'static str, String); N], Counter>::default();
        self.0.register(name, help, family.clone());
        family
    }

    fn family<L, M>(&mut self, name: &str, help: &str) -> Family<L, M>
    where
        Family<L, M>: prometheus_client::registry::Metric + Clone + Default,
    {
        let family = Family::<L, M>::default();
        self.0.register(name, help, family.clone());
        family
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: Histogram) -> Histogram {
        self.0.register(name, help, histogram.clone());
        histogram
    }
}

/// A reader session that reports every APDU exchange to [`Metrics`]; everything else passes
/// straight through. Wraps the worker's session in the reader manager.
#[derive(Debug)]
pub struct MeteredReader {
    inner: Box<dyn CardReader>,
    metrics: Arc<Metrics>,
}

impl MeteredReader {
    pub fn wrap(inner: Box<dyn CardReader>, metrics: Arc<Metrics>) -> Box<dyn CardReader> {
        Box::new(MeteredReader { inner, metrics })
    }
}

impl ApduTransport for MeteredReader {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        let started = Instant::now();
        let result = self.inner.transmit_raw(command, timeout);
        self.metrics.apdu(
            &self.inner.info().id,
            started.elapsed(),
            result.as_ref().err(),
        );
        result
    }

    fn protocol(&self) -> Protocol {
        self.inner.protocol()
    }
}

impl CardReader for MeteredReader {
    fn info(&self) -> &ReaderInfo {
        self.inner.info()
    }

    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        self.inner.power_on()
    }

    fn power_off(&mut self) -> Result<(), ReaderError> {
        self.inner.power_off()
    }

    fn reset(&mut self) -> Result<Atr, ReaderError> {
        self.inner.reset()
    }

    fn atr(&self) -> Option<Atr> {
        self.inner.atr()
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        self.inner.presence()
    }

    fn is_contact(&self) -> bool {
        self.inner.is_contact()
    }

    fn is_contactless(&self) -> bool {
        self.inner.is_contactless()
    }

    fn psam(&mut self) -> Option<&mut dyn PsamSlots> {
        self.inner.psam()
    }

    fn obu(&mut self) -> Option<&mut dyn ObuChannel> {
        self.inner.obu()
    }

    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        self.inner.events()
    }

    fn exclusive(&mut self) -> Option<&mut dyn ExclusiveAccess> {
        self.inner.exclusive()
    }

    fn trace_mark(&mut self, context: &str) {
        self.inner.trace_mark(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_appear_with_their_labels_after_activity() {
        let m = Metrics::new();
        m.apdu("sim:etc", Duration::from_micros(120), None);
        m.apdu(
            "sim:etc",
            Duration::from_millis(5),
            Some(&ReaderError::Timeout {
                reader: "sim:etc".into(),
                timeout_ms: 5,
            }),
        );
        m.card_removed("sim:etc");
        m.flow_finished("card.load", "succeeded", Duration::from_millis(30));
        m.journal_flush(Duration::from_millis(2));
        m.rpc("card.summary", "ok", Duration::from_micros(900));
        let mut acme = PluginStatus {
            instance: "acme".into(),
            state: PluginState::Backoff,
            restarts: 2,
            backoff_ms: 400,
            malformed_lines: 3,
            last_error: Some("plugin acme exited unexpectedly".into()),
            name: None,
            version: None,
            features: Vec::new(),
            readers: 0,
        };
        m.plugins(&[acme.clone()]);
        // Counters advance by the difference only, however often the status is read.
        acme.restarts = 3;
        m.plugins(&[acme.clone()]);
        m.plugins(&[acme]);
        m.trace_write_failed("/t/r.jsonl");
        let text = m.render();
        for needle in [
            r#"cardd_apdu_duration_seconds_count{reader="sim:etc"} 2"#,
            r#"cardd_apdu_failures_total{reader="sim:etc",kind="timeout"} 1"#,
            r#"cardd_card_removals_total{reader="sim:etc"} 1"#,
            r#"cardd_flow_runs_total{flow="card.load",outcome="succeeded"} 1"#,
            r#"cardd_flow_duration_seconds_count{flow="card.load"} 1"#,
            "cardd_journal_flush_duration_seconds_count 1",
            r#"cardd_rpc_requests_total{method="card.summary",outcome="ok"} 1"#,
            r#"cardd_rpc_duration_seconds_count{method="card.summary"} 1"#,
            r#"cardd_plugin_state{instance="acme",state="backoff"} 1"#,
            r#"cardd_plugin_state{instance="acme",state="running"} 0"#,
            r#"cardd_plugin_restarts_total{instance="acme"} 3"#,
            r#"cardd_plugin_malformed_lines_total{instance="acme"} 3"#,
            r#"cardd_plugin_backoff_seconds{instance="acme"} 0.4"#,
            r#"cardd_plugin_readers{instance="acme"} 0"#,
            r#"cardd_trace_write_failures_total{trace="/t/r.jsonl"} 1"#,
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
