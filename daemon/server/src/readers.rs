//! The reader manager: drivers from configuration, one worker thread per reader, leases.
//!
//! Drivers are blocking (see `cardd_reader::reader`), so each reader gets:
//! * a **worker thread** that runs API clients' jobs from a bounded queue on the open session,
//!   one at a time, in order. A flow's card calls do not go through the queue: they run on the
//!   flow's own long-lived thread ([`ReaderManager::run_here`]), with no hand-off. The session
//!   sits behind a lock that each job or card call holds for its length, so a flow's APDUs never
//!   interleave with another client's;
//! * a **monitor thread** on a second session that waits on the driver's card events (no busy
//!   polling) and publishes card inserted/removed events;
//! * per driver instance, a **hotplug thread** when the driver reports readers coming and going.
//!
//! Monitor and hotplug threads wake only for events: when the driver can end a wait from
//! another thread (`WaitStopper`: the simulator, PC/SC), they wait long and are stopped when
//! their reader is detached or the daemon stops; otherwise they wake every few seconds to check.
//!
//! **Leases**: a client may hold a reader for a flow, for a bounded time. While a lease is held,
//! jobs from any other session are refused with the holder's name; an expired lease is released
//! (and announced) by a timer, and checked again lazily on every access.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cardd_api::ErrorCode;
use cardd_reader::trace::{Redaction, TraceOptions, TraceRecorder, TracedFactory};
use cardd_reader::{
    Capabilities, CardEvent, CardPresence, DriverOptions, DriverRegistry, HotplugEvent, Reader,
    ReaderFactory, ReaderInfo, ReaderSelector, SupervisedState, SupervisedStatus, WaitStopper,
};
use tokio::sync::oneshot;

use crate::config::{LimitsSection, ReaderInstance, TraceConfig};
use crate::errors::ApiError;
use crate::events::{EventBus, EventKind, LeaseEnd};
use crate::metrics::{MeteredReader, Metrics};

/// `factory` with its card traffic recorded as `trace` says, redacted by the purse layer's
/// table unless `redact = false`; lines that cannot be written are counted in `metrics`.
pub fn traced(
    factory: Arc<dyn ReaderFactory>,
    trace: &TraceConfig,
    metrics: &Arc<Metrics>,
) -> Arc<dyn ReaderFactory> {
    let redaction: Option<Arc<dyn Redaction>> = trace
        .redact
        .then(|| Arc::new(cardd_purse::PurseRedaction) as Arc<dyn Redaction>);
    tracing::info!(driver = factory.driver(), path = %trace.path.display(), redacted = trace.redact, "recording the card traffic of a driver instance");
    let (metrics, label) = (metrics.clone(), trace.path.display().to_string());
    let recorder = TraceRecorder::open(TraceOptions {
        path: trace.path.clone(),
        bytes_max: trace.bytes_max,
        redaction,
        on_failure: Some(Arc::new(move || metrics.trace_write_failed(&label))),
    });
    TracedFactory::wrap(factory, recorder)
}

/// How long a monitor thread waits for a card event before checking whether to stop.
const MONITOR_WAIT: Duration = Duration::from_secs(5);
/// How long a card monitor waits before watching again after its reader failed.
const MONITOR_RETRY: Duration = Duration::from_secs(1);
/// How long a hotplug thread waits for a reader event before checking whether to stop.
const HOTPLUG_WAIT: Duration = Duration::from_secs(5);
/// How long a monitor or hotplug thread waits in one go when its driver can end the wait from
/// another thread (a [`WaitStopper`]): it is woken when it must stop (reader detached, daemon
/// stopping), so this only bounds a stop that a driver's wait could miss; an hour, so that idle
/// readers cost no wake-ups worth counting (four an hour on the embedded default).
const STOPPABLE_WAIT: Duration = Duration::from_secs(3_600);

/// Who is asking: the operator and the session (a lease belongs to a session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub operator: String,
    pub session: String,
}

pub use cardd_api::readers::{
    CapabilitiesView, LeaseInfo, PluginState, PluginStatus, ReaderStatus,
};

/// A supervised driver program's status for the wire.
pub fn plugin_status(s: SupervisedStatus) -> PluginStatus {
    PluginStatus {
        instance: s.instance,
        state: match s.state {
            SupervisedState::Starting => PluginState::Starting,
            SupervisedState::Running => PluginState::Running,
            SupervisedState::Backoff => PluginState::Backoff,
            SupervisedState::Failed => PluginState::Failed,
            SupervisedState::Stopped => PluginState::Stopped,
        },
        restarts: s.restarts,
        backoff_ms: s.backoff_ms,
        malformed_lines: s.malformed_lines,
        last_error: s.last_error,
        name: s.name,
        version: s.version,
        features: s.features,
        readers: s.readers as u64,
    }
}

/// A driver's [`Capabilities`] for the wire.
pub fn capabilities_view(c: Capabilities) -> CapabilitiesView {
    CapabilitiesView {
        contact: c.contact,
        contactless: c.contactless,
        psam_slots: c.psam_slots,
        obu_channel: c.obu_channel,
        events: c.events,
        exclusive: c.exclusive,
    }
}

type Job = Box<dyn FnOnce(&mut Reader) + Send>;

struct Lease {
    id: String,
    holder: Holder,
    purpose: String,
    expires: Instant,
}

struct Slot {
    info: ReaderInfo,
    /// The driver instance the reader belongs to.
    factory: Arc<dyn ReaderFactory>,
    jobs: mpsc::SyncSender<Job>,
    /// The open session. The worker runs queued jobs on it; a flow's card calls use it
    /// directly on the flow's thread ([`ReaderManager::run_here`]). The lock keeps one user
    /// at a time, so a flow's commands never interleave with a job's.
    reader: Arc<Mutex<Reader>>,
    presence: Arc<Mutex<Option<String>>>,
    lease: Option<Lease>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// A monitor thread keeps `presence` current from the driver's card events.
    monitored: bool,
    /// Ends the monitor's wait when the reader is detached or the daemon stops.
    stoppers: Vec<WaitStopper>,
}

/// The manager. Cheap to share behind an `Arc`.
pub struct ReaderManager {
    slots: Mutex<HashMap<String, Slot>>,
    factories: Vec<Arc<dyn ReaderFactory>>,
    events: Arc<EventBus>,
    limits: LimitsSection,
    stop: Arc<AtomicBool>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Ends the hotplug threads' waits when the daemon stops.
    hotplug_stoppers: Mutex<Vec<WaitStopper>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ReaderManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderManager")
            .field("factories", &self.factories.len())
            .finish()
    }
}

impl ReaderManager {
    /// Instantiates every configured driver and starts a worker for each reader it lists.
    pub fn start(
        instances: &[ReaderInstance],
        registry: &DriverRegistry,
        limits: &LimitsSection,
        events: Arc<EventBus>,
    ) -> Result<Arc<ReaderManager>, ApiError> {
        let metrics = Arc::new(Metrics::new());
        ReaderManager::start_metered(instances, registry, limits, events, metrics)
    }

    /// [`ReaderManager::start`], reporting APDU latencies, failures and card removals to
    /// `metrics`.
    pub fn start_metered(
        instances: &[ReaderInstance],
        registry: &DriverRegistry,
        limits: &LimitsSection,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ReaderManager>, ApiError> {
        let mut factories = Vec::new();
        for (i, instance) in instances.iter().enumerate() {
            let options = DriverOptions::new(instance.driver.clone(), instance.options.clone());
            let factory = registry
                .instantiate(&instance.driver, &options)
                .map_err(|e| instance_error(i, instance, &e))?;
            factories.push(match &instance.trace {
                Some(trace) => traced(factory, trace, &metrics),
                None => factory,
            });
        }
        ReaderManager::start_factories(factories, limits, events, metrics)
    }

    /// Starts readers from driver instances already built (the embedded default builds its
    /// simulated ones itself, to keep their worlds for the 模拟读卡器 panel).
    pub fn start_factories(
        factories: Vec<Arc<dyn ReaderFactory>>,
        limits: &LimitsSection,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ReaderManager>, ApiError> {
        let manager = Arc::new(ReaderManager {
            slots: Mutex::new(HashMap::new()),
            factories,
            events,
            limits: limits.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            background: Mutex::new(Vec::new()),
            hotplug_stoppers: Mutex::new(Vec::new()),
            metrics,
        });
        for factory in &manager.factories {
            // A driver whose service is down (pcscd not running yet) does not stop the daemon:
            // its readers arrive through hotplug when the service comes up.
            let readers = match factory.list() {
                Ok(readers) => readers,
                Err(e) => {
                    tracing::warn!(driver = factory.driver(), error = %e, "the driver lists no readers for now");
                    Vec::new()
                }
            };
            for info in readers {
                if let Err(e) = manager.attach(factory.clone(), info.clone()) {
                    tracing::warn!(reader = %info.id, error = %e, "could not open a reader; it is retried when it reappears");
                }
            }
            if let Some(mut watch) = factory.hotplug() {
                let wait = match watch.stopper() {
                    Some(stopper) => {
                        lock(&manager.hotplug_stoppers).push(stopper);
                        STOPPABLE_WAIT
                    }
                    None => HOTPLUG_WAIT,
                };
                let weak = Arc::downgrade(&manager);
                let factory = factory.clone();
                let stop = manager.stop.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("hotplug-{}", factory.driver()))
                    .spawn(move || hotplug_loop(watch, factory, weak, stop, wait))
                    .map_err(|e| {
                        ApiError::internal(format!("cannot start a hotplug thread: {e}"))
                    })?;
                lock(&manager.background).push(handle);
            }
        }
        Ok(manager)
    }

    /// Opens a reader and starts its worker and monitor.
    fn attach(&self, factory: Arc<dyn ReaderFactory>, info: ReaderInfo) -> Result<(), ApiError> {
        let selector = ReaderSelector::Id(info.id.clone());
        let owner = factory.clone();
        let session = factory.open(&selector).map_err(ApiError::from)?;
        let session = MeteredReader::wrap(session, self.metrics.clone());
        let mut reader = Reader::new(session, Duration::from_millis(self.limits.apdu_timeout_ms));
        let atr = match reader.session().presence() {
            Ok(CardPresence::Powered { atr }) => Some(atr.to_string()),
            Ok(CardPresence::Present) => reader.session().power_on().ok().map(|a| a.to_string()),
            _ => None,
        };
        let presence = Arc::new(Mutex::new(atr));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<Job>(self.limits.reader_queue_max);
        let mut threads = Vec::new();
        let mut stoppers = Vec::new();
        let reader = Arc::new(Mutex::new(reader));
        let shared = reader.clone();
        let worker = std::thread::Builder::new()
            .name(format!("reader-{}", info.id))
            .spawn(move || {
                // Runs jobs until every sender is gone (the slot was dropped). A job that panics
                // loses its answer (the caller sees the reader stop during the command) but not
                // the worker: the reader keeps serving.
                while let Ok(job) = rx.recv() {
                    let mut reader = lock(&shared);
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut reader)));
                    if outcome.is_err() {
                        tracing::error!("a reader job panicked; the reader goes on");
                    }
                }
                let _ = lock(&shared).session().power_off();
            })
            .map_err(|e| ApiError::internal(format!("cannot start a reader thread: {e}")))?;
        threads.push(worker);
        if info.capabilities.events {
            if let Ok(mut monitor) = factory.open(&selector) {
                let stopper = monitor.events().and_then(|e| e.stopper());
                let wait = if stopper.is_some() {
                    STOPPABLE_WAIT
                } else {
                    MONITOR_WAIT
                };
                stoppers.extend(stopper);
                let (events, presence, stop, id) = (
                    self.events.clone(),
                    presence.clone(),
                    stop.clone(),
                    info.id.clone(),
                );
                let global_stop = self.stop.clone();
                let metrics = self.metrics.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("monitor-{}", info.id))
                    .spawn(move || loop {
                        if stop.load(Ordering::Relaxed) || global_stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Some(ev) = monitor.events() else { break };
                        match ev.wait_for_change(wait) {
                            Ok(Some(CardEvent::Inserted { atr })) => {
                                *lock(&presence) = Some(atr.to_string());
                                events.publish(EventKind::CardInserted {
                                    reader_id: id.clone(),
                                    atr: atr.to_string(),
                                });
                            }
                            Ok(Some(CardEvent::Removed)) => {
                                *lock(&presence) = None;
                                metrics.card_removed(&id);
                                events.publish(EventKind::CardRemoved {
                                    reader_id: id.clone(),
                                });
                            }
                            Ok(None) => {}
                            // The transport failed (the reader's service restarted): keep
                            // watching, after a pause, until the reader is detached.
                            Err(e) => {
                                tracing::warn!(reader = %id, error = %e, "card monitor: waiting for the reader to come back");
                                std::thread::sleep(MONITOR_RETRY);
                            }
                        }
                    })
                    .map_err(|e| {
                        ApiError::internal(format!("cannot start a monitor thread: {e}"))
                    })?;
                threads.push(handle);
            }
        }
        let monitored = threads.len() > 1;
        tracing::info!(reader = %info.id, driver = %info.driver, name = %info.name, "reader attached");
        let present = lock(&presence).clone();
        let (id, name, driver) = (info.id.clone(), info.name.clone(), info.driver.clone());
        lock(&self.slots).insert(
            info.id.clone(),
            Slot {
                info,
                factory: owner,
                jobs: tx,
                reader,
                presence,
                lease: None,
                stop,
                threads,
                monitored,
                stoppers,
            },
        );
        // Announced once the reader takes jobs, so whoever reacts to an event (the recovery
        // of interrupted loads does) finds it.
        self.events.publish(EventKind::ReaderAdded {
            reader_id: id.clone(),
            name,
            driver,
        });
        // A reader that arrives holding a card (plugged in with one, or back after its plugin
        // restarted) announces the card too: clients would otherwise wait for an insertion
        // that already happened, and an interrupted load on that card is settled now.
        if let Some(atr) = present {
            self.events
                .publish(EventKind::CardInserted { reader_id: id, atr });
        }
        Ok(())
    }

    /// Stops a reader's threads and forgets it.
    fn detach(&self, reader_id: &str) {
        let slot = lock(&self.slots).remove(reader_id);
        if let Some(slot) = slot {
            slot.stop.store(true, Ordering::Relaxed);
            for stopper in &slot.stoppers {
                stopper.stop();
            }
            if let Some(lease) = &slot.lease {
                self.events.publish(EventKind::LeaseReleased {
                    reader_id: reader_id.to_owned(),
                    lease_id: lease.id.clone(),
                    reason: LeaseEnd::ReaderGone,
                });
            }
            drop(slot.jobs);
            self.events.publish(EventKind::ReaderRemoved {
                reader_id: reader_id.to_owned(),
            });
            tracing::info!(reader = %reader_id, "reader detached");
        }
    }

    /// Every reader with its card presence and lease.
    pub fn list(&self) -> Vec<ReaderStatus> {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        let mut out: Vec<ReaderStatus> = slots
            .values_mut()
            .map(|slot| {
                self.expire(slot, now);
                let atr = lock(&slot.presence).clone();
                ReaderStatus {
                    id: slot.info.id.clone(),
                    name: slot.info.name.clone(),
                    driver: slot.info.driver.clone(),
                    capabilities: capabilities_view(slot.info.capabilities),
                    card_present: atr.is_some(),
                    atr,
                    lease: slot
                        .lease
                        .as_ref()
                        .map(|l| lease_info(&slot.info.id, l, now)),
                    plugin: slot.factory.supervised().map(|s| plugin_status(s.status())),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every configured reader plugin (supervised driver program) with its health, in
    /// configuration order, whether or not it has readers now.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.factories
            .iter()
            .filter_map(|f| f.supervised())
            .map(|s| plugin_status(s.status()))
            .collect()
    }

    /// Kills reader plugin `instance` and starts it again at once; `reason` goes to its log
    /// and status. Its readers are detached (leases end with `reader_gone`) and attached again
    /// when it is back.
    pub fn restart_plugin(&self, instance: &str, reason: &str) -> Result<PluginStatus, ApiError> {
        let plugin = self
            .factories
            .iter()
            .filter_map(|f| f.supervised())
            .find(|s| s.status().instance == instance)
            .ok_or_else(|| {
                let known: Vec<String> = self.plugins().into_iter().map(|p| p.instance).collect();
                ApiError::new(
                    ErrorCode::ReaderNotFound,
                    format!(
                        "no reader plugin named {instance:?}; configured plugins: {} (see readers.plugins)",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                )
            })?;
        plugin.restart_now(reason);
        Ok(plugin_status(plugin.status()))
    }

    /// The slot of `reader_id` if `holder` may use it now: it exists and no other session holds
    /// a lease on it (an expired lease is released first).
    fn usable<'a>(
        &self,
        slots: &'a mut HashMap<String, Slot>,
        reader_id: &str,
        holder: &Holder,
    ) -> Result<&'a mut Slot, ApiError> {
        let slot = slots
            .get_mut(reader_id)
            .ok_or_else(|| not_found(reader_id))?;
        self.expire(slot, Instant::now());
        if let Some(lease) = &slot.lease {
            if lease.holder.session != holder.session {
                return Err(busy(reader_id, &lease.holder.operator, &lease.purpose));
            }
        }
        Ok(slot)
    }

    /// Runs `job` on the reader's worker thread, after checking the lease and the queue bound.
    /// `context` names what uses the reader (an API method, a flow step): it is written into the
    /// reader's APDU trace, when one is recorded, before the job's first command.
    pub async fn run<R: Send + 'static>(
        &self,
        reader_id: &str,
        holder: &Holder,
        context: &str,
        job: impl FnOnce(&mut Reader) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let context = context.to_owned();
        let (tx, rx) = oneshot::channel();
        {
            let mut slots = lock(&self.slots);
            let slot = self.usable(&mut slots, reader_id, holder)?;
            let presence = slot.presence.clone();
            let monitored = slot.monitored;
            let wrapped: Job = Box::new(move |reader: &mut Reader| {
                reader.mark(&context);
                let result = job(reader);
                // Keep the cached presence honest when no event monitor runs (with one, the
                // monitor does, and the job saves a round trip to the reader).
                if !monitored {
                    update_presence(reader, &presence);
                }
                let _ = tx.send(result);
            });
            slot.jobs.try_send(wrapped).map_err(|e| match e {
                mpsc::TrySendError::Full(_) => ApiError::new(
                    ErrorCode::ReaderBusy,
                    format!(
                        "reader {reader_id} has {} commands queued already; retry shortly",
                        self.limits.reader_queue_max
                    ),
                ),
                mpsc::TrySendError::Disconnected(_) => ApiError::new(
                    ErrorCode::ReaderGone,
                    format!("reader {reader_id} has stopped"),
                ),
            })?;
        }
        rx.await.map_err(|_| {
            ApiError::new(
                ErrorCode::ReaderGone,
                format!("reader {reader_id} stopped during the command"),
            )
        })
    }

    /// Runs `job` on the reader from the calling thread, after the same lease check as
    /// [`ReaderManager::run`]: for a flow's card calls, which run on a long-lived flow thread
    /// and so need no hand-off to the reader's worker. Waits while the worker runs a queued job
    /// (the reader serves one user at a time). Blocking: never call it from an async thread.
    pub fn run_here<R>(
        &self,
        reader_id: &str,
        holder: &Holder,
        context: &str,
        job: impl FnOnce(&mut Reader) -> R,
    ) -> Result<R, ApiError> {
        let (reader, presence, monitored) = {
            let mut slots = lock(&self.slots);
            let slot = self.usable(&mut slots, reader_id, holder)?;
            (slot.reader.clone(), slot.presence.clone(), slot.monitored)
        };
        let mut reader = lock(&reader);
        reader.mark(context);
        let result = job(&mut reader);
        if !monitored {
            update_presence(&mut reader, &presence);
        }
        Ok(result)
    }

    /// Takes a lease on a reader for `holder`.
    pub fn lease(
        self: &Arc<Self>,
        reader_id: &str,
        holder: Holder,
        duration: Option<Duration>,
        purpose: &str,
    ) -> Result<LeaseInfo, ApiError> {
        let duration = self.lease_duration(duration)?;
        let now = Instant::now();
        let info = {
            let mut slots = lock(&self.slots);
            let slot = slots
                .get_mut(reader_id)
                .ok_or_else(|| not_found(reader_id))?;
            self.expire(slot, now);
            if let Some(existing) = &slot.lease {
                if existing.holder.session != holder.session {
                    return Err(busy(
                        reader_id,
                        &existing.holder.operator,
                        &existing.purpose,
                    ));
                }
            }
            let lease = Lease {
                id: new_id(),
                holder,
                purpose: purpose.chars().take(64).collect(),
                expires: now + duration,
            };
            let info = lease_info(reader_id, &lease, now);
            slot.lease = Some(lease);
            info
        };
        self.events.publish(EventKind::LeaseTaken {
            reader_id: reader_id.to_owned(),
            lease_id: info.lease_id.clone(),
            holder: info.holder.clone(),
            expires_in_ms: info.expires_in_ms,
        });
        self.schedule_expiry(reader_id, &info.lease_id, duration);
        Ok(info)
    }

    /// Extends a lease held by `holder`.
    pub fn renew(
        self: &Arc<Self>,
        lease_id: &str,
        holder: &Holder,
        duration: Option<Duration>,
    ) -> Result<LeaseInfo, ApiError> {
        let duration = self.lease_duration(duration)?;
        let now = Instant::now();
        let (reader_id, info) = {
            let mut slots = lock(&self.slots);
            let slot = self.slot_of_lease(&mut slots, lease_id, holder, now)?;
            let lease = slot
                .lease
                .as_mut()
                .ok_or_else(|| lease_not_found(lease_id))?;
            lease.expires = now + duration;
            let reader_id = slot.info.id.clone();
            let info = lease_info(&reader_id, lease, now);
            (reader_id, info)
        };
        self.schedule_expiry(&reader_id, lease_id, duration);
        Ok(info)
    }

    /// Releases a lease held by `holder`.
    pub fn release(&self, lease_id: &str, holder: &Holder) -> Result<(), ApiError> {
        let now = Instant::now();
        let reader_id = {
            let mut slots = lock(&self.slots);
            let slot = self.slot_of_lease(&mut slots, lease_id, holder, now)?;
            slot.lease = None;
            slot.info.id.clone()
        };
        self.events.publish(EventKind::LeaseReleased {
            reader_id,
            lease_id: lease_id.to_owned(),
            reason: LeaseEnd::Released,
        });
        Ok(())
    }

    /// Stops every thread; waits for the workers to finish their current job.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for stopper in lock(&self.hotplug_stoppers).iter() {
            stopper.stop();
        }
        let slots: Vec<Slot> = lock(&self.slots).drain().map(|(_, s)| s).collect();
        for slot in slots {
            slot.stop.store(true, Ordering::Relaxed);
            for stopper in &slot.stoppers {
                stopper.stop();
            }
            drop(slot.jobs);
            // The worker ends once its queue is empty; monitors are woken by their stoppers (or
            // end within MONITOR_WAIT when their driver has none) and are not waited for.
            if let Some(worker) = slot.threads.into_iter().next() {
                let _ = worker.join();
            }
        }
    }

    fn lease_duration(&self, requested: Option<Duration>) -> Result<Duration, ApiError> {
        let max = Duration::from_millis(self.limits.lease_ms_max);
        let d = requested.unwrap_or(Duration::from_millis(self.limits.lease_ms_default));
        if d.is_zero() || d > max {
            return Err(ApiError::invalid_params(format!(
                "a lease lasts between 1 ms and {} ms (limits.lease_ms_max)",
                self.limits.lease_ms_max
            )));
        }
        Ok(d)
    }

    fn slot_of_lease<'a>(
        &self,
        slots: &'a mut HashMap<String, Slot>,
        lease_id: &str,
        holder: &Holder,
        now: Instant,
    ) -> Result<&'a mut Slot, ApiError> {
        let slot = slots
            .values_mut()
            .find(|s| s.lease.as_ref().is_some_and(|l| l.id == lease_id))
            .ok_or_else(|| lease_not_found(lease_id))?;
        self.expire(slot, now);
        match &slot.lease {
            Some(l) if l.holder.session == holder.session => Ok(slot),
            Some(l) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "lease {lease_id} belongs to {}; only its holder may renew or release it",
                    l.holder.operator
                ),
            )),
            None => Err(lease_not_found(lease_id)),
        }
    }

    /// Ends the slot's lease if it has expired, announcing it.
    fn expire(&self, slot: &mut Slot, now: Instant) {
        if slot.lease.as_ref().is_some_and(|l| l.expires <= now) {
            if let Some(l) = slot.lease.take() {
                self.events.publish(EventKind::LeaseReleased {
                    reader_id: slot.info.id.clone(),
                    lease_id: l.id,
                    reason: LeaseEnd::Expired,
                });
            }
        }
    }

    /// Releases the lease when it expires, so its end is announced even if nobody asks.
    fn schedule_expiry(self: &Arc<Self>, reader_id: &str, lease_id: &str, after: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let (reader_id, lease_id) = (reader_id.to_owned(), lease_id.to_owned());
        runtime.spawn(async move {
            tokio::time::sleep(after + Duration::from_millis(1)).await;
            if let Some(manager) = weak.upgrade() {
                let mut slots = lock(&manager.slots);
                if let Some(slot) = slots.get_mut(&reader_id) {
                    if slot.lease.as_ref().is_some_and(|l| l.id == lease_id) {
                        manager.expire(slot, Instant::now());
                    }
                }
            }
        });
    }
}

/// Why driver instance `i` of the configuration could not be built.
pub fn instance_error(i: usize, instance: &ReaderInstance, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("readers[{i}] ({}): {e}", instance.driver),
    )
}

fn hotplug_loop(
    mut watch: Box<dyn cardd_reader::HotplugWatch>,
    factory: Arc<dyn ReaderFactory>,
    manager: std::sync::Weak<ReaderManager>,
    stop: Arc<AtomicBool>,
    wait: Duration,
) {
    while !stop.load(Ordering::Relaxed) {
        let event = match watch.wait(wait) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(driver = factory.driver(), error = %e, "hotplug watch failed; watching again shortly");
                std::thread::sleep(MONITOR_RETRY);
                continue;
            }
        };
        let Some(manager) = manager.upgrade() else {
            return;
        };
        match event {
            HotplugEvent::Added { reader } => {
                if let Err(e) = manager.attach(factory.clone(), reader) {
                    tracing::warn!(error = %e, "could not attach a new reader");
                }
            }
            HotplugEvent::Removed { reader_id } => manager.detach(&reader_id),
        }
    }
}

fn lease_info(reader_id: &str, lease: &Lease, now: Instant) -> LeaseInfo {
    LeaseInfo {
        lease_id: lease.id.clone(),
        reader_id: reader_id.to_owned(),
        holder: lease.holder.operator.clone(),
        purpose: lease.purpose.clone(),
        expires_in_ms: lease.expires.saturating_duration_since(now).as_millis() as u64,
    }
}

/// Keeps the cached presence honest when no event monitor runs (with one, the monitor does,
/// and a job saves a round trip to the reader).
fn update_presence(reader: &mut Reader, presence: &Mutex<Option<String>>) {
    if let Ok(p) = reader.session().presence() {
        let mut cached = lock(presence);
        match p {
            CardPresence::Absent => *cached = None,
            CardPresence::Powered { atr } => *cached = Some(atr.to_string()),
            CardPresence::Present => {}
        }
    }
}

fn not_found(reader_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ReaderNotFound,
        format!("no reader {reader_id:?}; call readers.list for the attached readers"),
    )
}

fn lease_not_found(lease_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::LeaseNotFound,
        format!("no lease {lease_id:?} (it may have expired)"),
    )
}

fn busy(reader_id: &str, operator: &str, purpose: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ReaderBusy,
        format!("reader {reader_id} is leased by {operator} ({purpose}); wait for it to be released or to expire"),
    )
    .with_detail(serde_json::json!({ "holder": operator, "purpose": purpose }))
}

fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> Arc<ReaderManager> {
        let instance = ReaderInstance {
            driver: "sim".into(),
            options: serde_json::json!({}),
            trace: None,
        };
        ReaderManager::start(
            &[instance],
            &cardd_drivers::registry(),
            &LimitsSection::default(),
            Arc::new(EventBus::new(64)),
        )
        .expect("sim readers start")
    }

    fn holder(session: &str) -> Holder {
        Holder {
            operator: session.into(),
            session: session.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_does_not_take_the_reader_down() {
        let m = manager();
        let h = holder("a");
        let lost = m
            .run("sim:etc", &h, "test", |_reader| -> u8 {
                panic!("a bug in a job")
            })
            .await;
        assert_eq!(lost.unwrap_err().code, ErrorCode::ReaderGone);
        let alive = m
            .run("sim:etc", &h, "test", |reader| {
                reader.session().info().id.clone()
            })
            .await;
        assert_eq!(alive.unwrap(), "sim:etc");
        m.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_belongs_to_its_session() {
        let m = manager();
        let lease = m
            .lease(
                "sim:city",
                holder("a"),
                Some(Duration::from_secs(60)),
                "test",
            )
            .unwrap();
        let busy = m
            .run("sim:city", &holder("b"), "test", |_| ())
            .await
            .unwrap_err();
        assert_eq!(busy.code, ErrorCode::ReaderBusy);
        m.run("sim:city", &holder("a"), "test", |_| ())
            .await
            .unwrap();
        assert_eq!(
            m.release(&lease.lease_id, &holder("b")).unwrap_err().code,
            ErrorCode::Forbidden
        );
        m.release(&lease.lease_id, &holder("a")).unwrap();
        m.run("sim:city", &holder("b"), "test", |_| ())
            .await
            .unwrap();
        m.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flow_thread_uses_its_reader_without_a_hand_off() {
        let m = manager();
        let lease = m
            .lease(
                "sim:etc",
                holder("a"),
                Some(Duration::from_secs(60)),
                "test",
            )
            .unwrap();
        let m2 = m.clone();
        let (caller, ran_on, refused) = tokio::task::spawn_blocking(move || {
            let caller = std::thread::current().id();
            let ran_on = m2
                .run_here("sim:etc", &holder("a"), "test", |reader| {
                    assert_eq!(reader.session().info().id, "sim:etc");
                    std::thread::current().id()
                })
                .unwrap();
            let refused = m2
                .run_here("sim:etc", &holder("b"), "test", |_| ())
                .unwrap_err();
            (caller, ran_on, refused)
        })
        .await
        .unwrap();
        assert_eq!(ran_on, caller, "the job ran on the calling thread");
        assert_eq!(refused.code, ErrorCode::ReaderBusy, "the lease still holds");
        // The worker still serves queued jobs on the same session, one user at a time.
        let queued = m
            .run("sim:etc", &holder("a"), "test", |_| {
                std::thread::current().id()
            })
            .await
            .unwrap();
        assert_ne!(queued, caller);
        m.release(&lease.lease_id, &holder("a")).unwrap();
        assert_eq!(
            m.run_here("nope", &holder("a"), "test", |_| ())
                .unwrap_err()
                .code,
            ErrorCode::ReaderNotFound
        );
        m.shutdown();
    }
}
