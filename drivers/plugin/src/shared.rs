//! The state one plugin instance shares between the supervisor, the child's I/O threads, reader
//! sessions and hotplug watches, and the request path every caller goes through.
//!
//! * Callers (reader sessions, the factory, the supervisor's own `hello`, `list` and pings) go
//!   through [`Shared::call`]: every wait is bounded, and at most the plugin's declared
//!   `max_in_flight` requests are outstanding at once, so a plugin that handles one request at
//!   a time is never blamed for the queue in front of it. An answer that does not come within
//!   the request's timeout plus grace marks the run as hung; the supervisor then kills it.
//! * The child's stdout thread hands every line to [`Shared::handle_line`]: answers go to the
//!   waiting request by id, events to bounded event logs, and anything malformed is counted
//!   (too much of it also ends the run).
//!
//! Every child gets a new *run* number. A session belongs to the run (and to the appearance of
//! its reader) it was opened in; when either ends the session fails for good (`Gone`, which
//! the session words as `DriverCrashed` when the run was lost, see [`Shared::run_lost`]).
//! State lives behind one mutex with one condition variable that wakes the supervisor, event
//! waiters and request gates, so nothing polls.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cardd_reader::{Atr, Capabilities, CardEvent, HotplugEvent, ReaderInfo};
use serde_json::Value;

use crate::error::PluginError;
use crate::options::PluginOptions;
use crate::protocol::{
    event, truncate_chars, CardEventParams, HelloResult, Incoming, ReaderRemovedParams,
    RequestLine, WireError, WireReader, IDENTITY_CHARS_MAX, MESSAGE_BYTES_MAX, READERS_MAX,
};
use crate::{reader_id, DRIVER_NAME};

/// How a run ended.
#[derive(Debug)]
pub(crate) enum RunEnd {
    /// The driver instance is shutting down.
    Shutdown,
    /// The process exited or closed its stdout on its own.
    Exited,
    /// Killed for a reason (hang, misbehaviour, failed handshake).
    Failed(PluginError),
}

/// Card and hotplug events kept for waiters that have not read them yet.
pub const EVENTS_KEPT: usize = 256;
/// Malformed messages tolerated within [`MISBEHAVIOUR_WINDOW_MS`] before a restart.
pub const MISBEHAVIOUR_MAX: usize = 16;
/// The window over which malformed messages are counted.
pub const MISBEHAVIOUR_WINDOW_MS: u64 = 10_000;
/// Most requests awaiting an answer at once (`max_in_flight` ones plus unanswered `close`s);
/// a `close` beyond it is not sent.
pub const PENDING_MAX: usize = 256;
/// Longest wait honoured by event and hotplug waits.
pub const EVENT_WAIT_MAX: Duration = Duration::from_secs(86_400);
/// Bytes of a malformed line quoted in the log.
const PREVIEW_BYTES: usize = 80;

/// Counters over the life of a driver instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Processes started.
    pub starts: u64,
    /// Runs that ended because the process exited or closed its output on its own.
    pub crashes: u64,
    /// Requests (or pings) left unanswered past their timeout plus grace; each kills the run.
    pub hangs: u64,
    /// Runs killed for sending too many malformed messages.
    pub misbehaviour_restarts: u64,
    /// Runs that never completed `hello` + `list`.
    pub handshake_failures: u64,
    /// Malformed messages (not JSON, oversized, unknown id, bad event) seen.
    pub malformed_messages: u64,
    /// Liveness pings answered.
    pub pings: u64,
}

/// Where the plugin process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// Started, handshake not complete yet.
    Starting,
    /// Handshake done; readers are listed.
    Running,
    /// Lost; waiting for the backoff before the next start.
    Restarting,
    /// The driver instance was shut down.
    Stopped,
}

/// A snapshot for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    pub state: PluginState,
    /// What the plugin called itself in `hello`.
    pub plugin_name: Option<String>,
    pub plugin_version: Option<String>,
    /// The protocol version agreed.
    pub protocol: Option<String>,
    /// Optional protocol features the plugin declared in `hello`.
    pub features: Vec<String>,
    /// Readers listed now.
    pub readers: usize,
    /// Why the last run ended, or why the current start failed.
    pub last_error: Option<PluginError>,
    /// The wait before the next start while [`PluginState::Restarting`], else 0.
    pub backoff_ms: u64,
    /// Starts tried after the first (whether or not the program could be run).
    pub restarts: u64,
    pub stats: PluginStats,
}

/// A reader of the current run.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// The plugin's own id for it.
    pub plugin_id: String,
    pub info: ReaderInfo,
    /// Which appearance of the reader this is: a reader unplugged and plugged again is a new
    /// one, and sessions on the old one stay gone.
    pub appearance: u64,
}

/// Why a request did not get a usable answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The run the request belongs to is over (crash, hang, shutdown), or its reader left.
    Gone,
    /// No answer in time.
    Timeout,
    /// The plugin answered with an error.
    Remote(WireError),
    /// The plugin sent a line that is not a valid message while this request waited (see
    /// [`Shared::garbled`]); the request fails at once rather than at its timeout.
    Malformed(String),
    /// The request could not be sent (too large).
    Local(String),
}

/// Which run (and reader) a request is for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub run: u64,
    /// The plugin's reader id and its appearance, for session requests.
    pub reader: Option<(&'a str, u64)>,
}

/// An answer, or why a waiting request failed before its answer came.
#[derive(Debug)]
enum Failure {
    Remote(WireError),
    Malformed(String),
}

type Reply = Result<Value, Failure>;

fn reply_result(reply: Reply) -> Result<Value, CallError> {
    reply.map_err(|f| match f {
        Failure::Remote(e) => CallError::Remote(e),
        Failure::Malformed(what) => CallError::Malformed(what),
    })
}

#[derive(Debug)]
struct Pending {
    /// `None` for requests nobody waits for (`close` from a session's drop).
    reply: Option<SyncSender<Reply>>,
    /// Counted against `max_in_flight`.
    holds_slot: bool,
}

#[derive(Debug, Clone)]
struct CardEventEntry {
    reader: String,
    event: CardEvent,
}

#[derive(Debug, Clone)]
enum ReaderChange {
    Added(WireReader),
    Removed(String),
}

#[derive(Debug)]
struct EventLog<T> {
    next_seq: u64,
    items: VecDeque<(u64, T)>,
}

impl<T: Clone> EventLog<T> {
    fn new() -> Self {
        EventLog {
            next_seq: 0,
            items: VecDeque::new(),
        }
    }

    fn push(&mut self, item: T) {
        self.items.push_back((self.next_seq, item));
        self.next_seq += 1;
        while self.items.len() > EVENTS_KEPT {
            self.items.pop_front();
        }
    }

    /// The sequence number the next event will get.
    fn end(&self) -> u64 {
        self.next_seq
    }

    /// The first event at or after `cursor` that `matches`, advancing `cursor` past it (or to
    /// the end when there is none).
    fn take_next(&self, cursor: &mut u64, matches: impl Fn(&T) -> bool) -> Option<T> {
        let found = self
            .items
            .iter()
            .find(|(seq, item)| *seq >= *cursor && matches(item));
        match found {
            Some((seq, item)) => {
                *cursor = seq + 1;
                Some(item.clone())
            }
            None => {
                *cursor = self.next_seq;
                None
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Identity {
    name: String,
    version: String,
    protocol: String,
    features: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct State {
    run: u64,
    pub(crate) state: PluginState,
    /// Set by whoever notices the current run is broken; the supervisor ends the run.
    pub(crate) failing: Option<PluginError>,
    /// The current run's stdout reached its end.
    pub(crate) output_closed: bool,
    pub(crate) ready_since: Option<Instant>,
    pub(crate) readers: Vec<Listed>,
    /// Appearance number of the next reader added.
    next_appearance: u64,
    /// Reader changes seen between `hello` and the installed `list` answer.
    early_changes: Option<Vec<ReaderChange>>,
    pending: HashMap<u64, Pending>,
    /// Requests failed by a garbled line; a late answer to one is dropped quietly.
    abandoned: VecDeque<u64>,
    pub(crate) in_flight: usize,
    pub(crate) max_in_flight: usize,
    writer: Option<SyncSender<Vec<u8>>>,
    card_events: EventLog<CardEventEntry>,
    hotplug: EventLog<HotplugEvent>,
    atrs: HashMap<String, Atr>,
    misbehaviour: VecDeque<Instant>,
    pub(crate) last_activity: Instant,
    identity: Option<Identity>,
    pub(crate) last_error: Option<PluginError>,
    pub(crate) first_attempt: Option<Result<(), PluginError>>,
    pub(crate) stats: PluginStats,
    pub(crate) shutdown: bool,
    /// The wait before the next start, while the supervisor waits it out (else zero).
    pub(crate) backoff: Duration,
    /// An operator asked for a restart now: end the run, skip the backoff.
    pub(crate) restart_requested: bool,
    /// Starts tried, including those where the program could not be run at all.
    pub(crate) attempts: u64,
}

impl State {
    fn accepts(&self, target: Target<'_>) -> bool {
        self.run == target.run
            && !self.shutdown
            && self.failing.is_none()
            && !self.output_closed
            && matches!(self.state, PluginState::Starting | PluginState::Running)
            && target.reader.map_or(true, |(id, appearance)| {
                self.state == PluginState::Running
                    && self
                        .readers
                        .iter()
                        .any(|l| l.plugin_id == id && l.appearance == appearance)
            })
    }

    /// Drops every waiting request: their callers see [`CallError::Gone`] at once.
    fn drop_pending(&mut self) {
        self.pending.clear();
        self.abandoned.clear();
        self.in_flight = 0;
    }

    fn fail(&mut self, error: PluginError) {
        if self.failing.is_none() {
            self.failing = Some(error);
        }
    }
}

/// State shared by the supervisor, the child's I/O threads, sessions and watches.
pub(crate) struct Shared {
    pub options: PluginOptions,
    state: Mutex<State>,
    pub(crate) changed: Condvar,
    next_id: AtomicU64,
    next_session: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("plugin", &self.options.name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(options: PluginOptions) -> Self {
        Shared {
            options,
            state: Mutex::new(State {
                run: 0,
                state: PluginState::Starting,
                failing: None,
                output_closed: false,
                ready_since: None,
                readers: Vec::new(),
                next_appearance: 1,
                early_changes: None,
                pending: HashMap::new(),
                abandoned: VecDeque::new(),
                in_flight: 0,
                max_in_flight: 1,
                writer: None,
                card_events: EventLog::new(),
                hotplug: EventLog::new(),
                atrs: HashMap::new(),
                misbehaviour: VecDeque::new(),
                last_activity: Instant::now(),
                identity: None,
                last_error: None,
                first_attempt: None,
                stats: PluginStats::default(),
                shutdown: false,
                backoff: Duration::ZERO,
                restart_requested: false,
                attempts: 0,
            }),
            changed: Condvar::new(),
            next_id: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves state that is still consistent
        // enough to shut down or restart: keep going rather than poison every reader.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(p) => p.into_inner().0,
        }
    }

    fn name(&self) -> &str {
        &self.options.name
    }

    // ---- what sessions, the factory and watches use ----

    /// The readers of the current run (empty while the plugin is down).
    pub fn readers(&self) -> Vec<Listed> {
        self.lock().readers.clone()
    }

    /// The current run if the plugin is ready.
    pub fn ready_run(&self) -> Option<u64> {
        let st = self.lock();
        (st.state == PluginState::Running && st.failing.is_none() && !st.shutdown).then_some(st.run)
    }

    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn status(&self) -> PluginStatus {
        let st = self.lock();
        PluginStatus {
            state: st.state,
            plugin_name: st.identity.as_ref().map(|i| i.name.clone()),
            plugin_version: st.identity.as_ref().map(|i| i.version.clone()),
            protocol: st.identity.as_ref().map(|i| i.protocol.clone()),
            features: st
                .identity
                .as_ref()
                .map(|i| i.features.clone())
                .unwrap_or_default(),
            readers: st.readers.len(),
            last_error: st.last_error.clone(),
            backoff_ms: if st.state == PluginState::Restarting {
                st.backoff.as_millis() as u64
            } else {
                0
            },
            restarts: st.attempts.saturating_sub(1),
            stats: st.stats,
        }
    }

    /// The features the current (or last) run announced in `hello`.
    pub fn features(&self) -> Vec<String> {
        let st = self.lock();
        st.identity
            .as_ref()
            .map(|i| i.features.clone())
            .unwrap_or_default()
    }

    /// True when the run `run` was lost (crashed, hung, killed, restarted) rather than shut
    /// down: its sessions' requests failed because the program went, not the reader.
    pub fn run_lost(&self, run: u64) -> bool {
        let st = self.lock();
        !st.shutdown
            && (st.run != run
                || st.output_closed
                || st.failing.is_some()
                || st.state != PluginState::Running)
    }

    /// Ends the current run (if any) and starts the plugin again without waiting for the
    /// backoff.
    pub fn restart_now(&self, reason: &str) {
        let mut st = self.lock();
        if st.shutdown {
            return;
        }
        st.restart_requested = true;
        st.fail(PluginError::Restarted {
            plugin: self.options.name.clone(),
            reason: truncate_chars(reason, crate::protocol::ERROR_MESSAGE_CHARS_MAX),
        });
        st.drop_pending();
        drop(st);
        self.changed.notify_all();
    }

    /// Waits until the first start succeeded or failed, at most `timeout`.
    pub fn wait_first_attempt(&self, timeout: Duration) -> Option<Result<(), PluginError>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(outcome) = &st.first_attempt {
                return Some(outcome.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self.wait(st, left);
        }
    }

    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        st.drop_pending();
        drop(st);
        self.changed.notify_all();
    }

    /// Sends `method` and waits for its answer, all within `budget` (the request's timeout
    /// plus grace). The plugin is told the budget minus the grace as `timeout_ms`. An answer
    /// that does not come within the budget marks the run as hung.
    pub fn call(
        &self,
        target: Target<'_>,
        method: &'static str,
        params: Value,
        budget: Duration,
    ) -> Result<Value, CallError> {
        let deadline = Instant::now() + budget;
        let grace = self.options.grace();
        let (id, rx) = {
            let mut st = self.lock();
            loop {
                if !st.accepts(target) {
                    return Err(CallError::Gone);
                }
                if st.in_flight < st.max_in_flight {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Never sent: the queue in front of it was too long.
                    return Err(CallError::Timeout);
                }
                st = self.wait(st, left);
            }
            let plugin_timeout = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(grace);
            if plugin_timeout.is_zero() {
                return Err(CallError::Timeout);
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let line = encode_request(id, method, plugin_timeout, &params)?;
            let (tx, rx) = mpsc::sync_channel(1);
            let Some(writer) = st.writer.clone() else {
                return Err(CallError::Gone);
            };
            match writer.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Disconnected(_)) => return Err(CallError::Gone),
                Err(TrySendError::Full(_)) => {
                    st.fail(PluginError::Unresponsive {
                        plugin: self.name().to_owned(),
                        method: "(reading its input)".into(),
                        waited_ms: 0,
                    });
                    st.stats.hangs += 1;
                    drop(st);
                    self.changed.notify_all();
                    return Err(CallError::Timeout);
                }
            }
            st.pending.insert(
                id,
                Pending {
                    reply: Some(tx),
                    holds_slot: true,
                },
            );
            st.in_flight += 1;
            st.last_activity = Instant::now();
            (id, rx)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(reply) => reply_result(reply),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Gone),
            Err(RecvTimeoutError::Timeout) => {
                let mut st = self.lock();
                if st.pending.remove(&id).is_none() {
                    // Answered while we were timing out.
                    drop(st);
                    return match rx.try_recv() {
                        Ok(reply) => reply_result(reply),
                        Err(_) => Err(CallError::Gone),
                    };
                }
                st.in_flight = st.in_flight.saturating_sub(1);
                if st.run == target.run && st.failing.is_none() && !st.shutdown {
                    st.stats.hangs += 1;
                    st.fail(PluginError::Unresponsive {
                        plugin: self.name().to_owned(),
                        method: method.to_owned(),
                        waited_ms: budget.as_millis() as u64,
                    });
                }
                drop(st);
                self.changed.notify_all();
                Err(CallError::Timeout)
            }
        }
    }

    /// Sends `method` without waiting for (or counting) its answer: `close` from a drop,
    /// which must not block.
    pub fn send_and_forget(&self, target: Target<'_>, method: &'static str, params: Value) {
        let mut st = self.lock();
        if !st.accepts(target) || st.pending.len() >= PENDING_MAX {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(line) = encode_request(id, method, self.options.request_timeout(), &params) else {
            return;
        };
        let Some(writer) = st.writer.clone() else {
            return;
        };
        if writer.try_send(line).is_ok() {
            st.pending.insert(
                id,
                Pending {
                    reply: None,
                    holds_slot: false,
                },
            );
        }
    }

    /// The ATR of the powered card in `reader`, as last reported.
    pub fn atr(&self, run: u64, reader: &str) -> Option<Atr> {
        let st = self.lock();
        if st.run != run {
            return None;
        }
        st.atrs.get(reader).cloned()
    }

    pub fn set_atr(&self, run: u64, reader: &str, atr: Option<Atr>) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        match atr {
            Some(atr) => st.atrs.insert(reader.to_owned(), atr),
            None => st.atrs.remove(reader),
        };
    }

    /// The card-event cursor for a new session: events from now on.
    pub fn card_event_cursor(&self) -> u64 {
        self.lock().card_events.end()
    }

    /// The next card event of `reader` at or after `cursor`, waiting at most `timeout`.
    /// `Err(())` when the session's run is over or the reader left.
    #[allow(clippy::result_unit_err)]
    pub fn wait_card_event(
        &self,
        target: Target<'_>,
        cursor: &mut u64,
        timeout: Duration,
    ) -> Result<Option<CardEvent>, ()> {
        let reader = target.reader.map_or("", |(id, _)| id);
        let deadline = Instant::now() + timeout.min(EVENT_WAIT_MAX);
        let mut st = self.lock();
        loop {
            if !st.accepts(target) {
                return Err(());
            }
            if let Some(entry) = st.card_events.take_next(cursor, |e| e.reader == reader) {
                return Ok(Some(entry.event));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self.wait(st, left);
        }
    }

    pub fn hotplug_cursor(&self) -> u64 {
        self.lock().hotplug.end()
    }

    /// The next hotplug event at or after `cursor`, waiting at most `timeout`; `Err(())` once
    /// the driver instance is shut down.
    #[allow(clippy::result_unit_err)]
    pub fn wait_hotplug(
        &self,
        cursor: &mut u64,
        timeout: Duration,
    ) -> Result<Option<HotplugEvent>, ()> {
        let deadline = Instant::now() + timeout.min(EVENT_WAIT_MAX);
        let mut st = self.lock();
        loop {
            if let Some(event) = st.hotplug.take_next(cursor, |_| true) {
                return Ok(Some(event));
            }
            if st.shutdown {
                return Err(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self.wait(st, left);
        }
    }

    // ---- what the child's stdout thread uses ----

    pub(crate) fn handle_line(&self, run: u64, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let incoming: Incoming = match serde_json::from_slice(line) {
            Ok(incoming) => incoming,
            Err(e) => {
                return self.garbled(
                    run,
                    format!("not a protocol message ({e}): {}", preview(line)),
                )
            }
        };
        match (incoming.id, incoming.event) {
            (Some(id), None) => {
                let reply = match (incoming.error, incoming.result) {
                    (Some(error), _) => Err(Failure::Remote(error)),
                    (None, Some(result)) => Ok(result),
                    (None, None) => Ok(Value::Null),
                };
                self.on_response(run, id, reply);
            }
            (None, Some(name)) => {
                self.on_event(run, &name, incoming.params.unwrap_or(Value::Null));
            }
            _ => self.garbled(
                run,
                format!(
                    "neither a response (with id) nor an event: {}",
                    preview(line)
                ),
            ),
        }
    }

    fn on_response(&self, run: u64, id: u64, reply: Reply) {
        let mut st = self.lock();
        // After shutdown the pending requests were dropped; late answers are expected.
        if st.run != run || st.shutdown {
            return;
        }
        match st.pending.remove(&id) {
            Some(pending) => {
                if pending.holds_slot {
                    st.in_flight = st.in_flight.saturating_sub(1);
                }
                st.last_activity = Instant::now();
                if let Some(tx) = pending.reply {
                    // The caller may have given up an instant ago; that is fine.
                    let _ = tx.try_send(reply);
                }
                drop(st);
                self.changed.notify_all();
            }
            None => {
                if let Some(at) = st.abandoned.iter().position(|a| *a == id) {
                    // Its caller already failed on a garbled line: nothing to do.
                    st.abandoned.remove(at);
                    return;
                }
                drop(st);
                self.malformed(run, format!("an answer to unknown request id {id}"));
            }
        }
    }

    fn on_event(&self, run: u64, name: &str, params: Value) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        let problem = match name {
            event::CARD_INSERTED | event::CARD_REMOVED => {
                match serde_json::from_value::<CardEventParams>(params) {
                    Ok(p) => self.card_event(&mut st, name == event::CARD_INSERTED, p),
                    Err(e) => Some(format!("{name} event with bad params: {e}")),
                }
            }
            event::READER_ADDED => match serde_json::from_value::<WireReader>(params) {
                Ok(reader) => match reader.validate() {
                    Ok(()) => self.reader_change(&mut st, ReaderChange::Added(reader)),
                    Err(e) => Some(format!("reader_added: {e}")),
                },
                Err(e) => Some(format!("reader_added event with bad params: {e}")),
            },
            event::READER_REMOVED => match serde_json::from_value::<ReaderRemovedParams>(params) {
                Ok(p) => self.reader_change(&mut st, ReaderChange::Removed(p.reader)),
                Err(e) => Some(format!("reader_removed event with bad params: {e}")),
            },
            other => Some(format!(
                "unknown event {:?}",
                truncate_chars(other, PREVIEW_BYTES)
            )),
        };
        drop(st);
        self.changed.notify_all();
        if let Some(problem) = problem {
            self.malformed(run, problem);
        }
    }

    fn card_event(
        &self,
        st: &mut State,
        inserted: bool,
        params: CardEventParams,
    ) -> Option<String> {
        if st.state != PluginState::Running {
            // No session can exist yet; nothing to tell.
            return None;
        }
        if !st.readers.iter().any(|l| l.plugin_id == params.reader) {
            return Some(format!(
                "card event for unknown reader {:?}",
                truncate_chars(&params.reader, PREVIEW_BYTES)
            ));
        }
        let event = if inserted {
            let atr = match params.atr.as_deref().map(hex::decode).transpose() {
                Ok(atr) => Atr(atr.unwrap_or_default()),
                Err(e) => return Some(format!("card_inserted with a bad ATR: {e}")),
            };
            CardEvent::Inserted { atr }
        } else {
            CardEvent::Removed
        };
        // A card that just arrived or left is not powered.
        st.atrs.remove(&params.reader);
        st.card_events.push(CardEventEntry {
            reader: params.reader,
            event,
        });
        None
    }

    fn reader_change(&self, st: &mut State, change: ReaderChange) -> Option<String> {
        if let Some(early) = st.early_changes.as_mut() {
            early.push(change);
            return None;
        }
        if st.state != PluginState::Running {
            return None;
        }
        self.apply_change(st, change)
    }

    fn apply_change(&self, st: &mut State, change: ReaderChange) -> Option<String> {
        match change {
            ReaderChange::Added(reader) => {
                if st.readers.iter().any(|l| l.plugin_id == reader.id) {
                    return None;
                }
                if st.readers.len() >= READERS_MAX {
                    return Some(format!("more than {READERS_MAX} readers"));
                }
                let listed = self.listed(reader, st.next_appearance);
                st.next_appearance += 1;
                st.hotplug.push(HotplugEvent::Added {
                    reader: listed.info.clone(),
                });
                st.readers.push(listed);
            }
            ReaderChange::Removed(id) => {
                if let Some(at) = st.readers.iter().position(|l| l.plugin_id == id) {
                    let gone = st.readers.remove(at);
                    st.atrs.remove(&gone.plugin_id);
                    st.hotplug.push(HotplugEvent::Removed {
                        reader_id: gone.info.id,
                    });
                }
            }
        }
        None
    }

    fn listed(&self, reader: WireReader, appearance: u64) -> Listed {
        let info = ReaderInfo {
            id: reader_id(&self.options.name, &reader.id),
            name: if reader.name.is_empty() {
                reader.id.clone()
            } else {
                reader.name.clone()
            },
            driver: DRIVER_NAME.to_owned(),
            capabilities: Capabilities {
                contact: reader.capabilities.contact,
                contactless: reader.capabilities.contactless,
                events: reader.capabilities.events,
                psam_slots: 0,
                obu_channel: false,
                exclusive: false,
            },
        };
        Listed {
            plugin_id: reader.id,
            info,
            appearance,
        }
    }

    /// A line that is not a valid message (not JSON, not an object, neither a response nor an
    /// event, oversized). It may have been the answer to any request waiting now, so every
    /// one of them fails at once with [`CallError::Malformed`] instead of waiting out its
    /// timeout; their late answers, should they still come, are dropped quietly. It also
    /// counts as malformed.
    pub(crate) fn garbled(&self, run: u64, what: String) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        let waiting: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.reply.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            let Some(pending) = st.pending.remove(&id) else {
                continue;
            };
            if pending.holds_slot {
                st.in_flight = st.in_flight.saturating_sub(1);
            }
            if let Some(tx) = pending.reply {
                let _ = tx.try_send(Err(Failure::Malformed(what.clone())));
            }
            st.abandoned.push_back(id);
            while st.abandoned.len() > PENDING_MAX {
                st.abandoned.pop_front();
            }
        }
        drop(st);
        self.changed.notify_all();
        self.malformed(run, what);
    }

    /// Counts a malformed message; too many in the window end the run.
    pub(crate) fn malformed(&self, run: u64, what: String) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.stats.malformed_messages += 1;
        tracing::warn!(plugin = %self.options.name, "plugin sent a malformed message: {what}");
        let now = Instant::now();
        let window = Duration::from_millis(MISBEHAVIOUR_WINDOW_MS);
        st.misbehaviour.push_back(now);
        while st
            .misbehaviour
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            st.misbehaviour.pop_front();
        }
        if st.misbehaviour.len() > MISBEHAVIOUR_MAX && st.failing.is_none() {
            let count = st.misbehaviour.len();
            st.fail(PluginError::Misbehaving {
                plugin: self.options.name.clone(),
                count,
                window_ms: MISBEHAVIOUR_WINDOW_MS,
                last: what,
            });
            drop(st);
            self.changed.notify_all();
        }
    }

    pub(crate) fn output_closed(&self, run: u64) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.output_closed = true;
        st.drop_pending();
        drop(st);
        self.changed.notify_all();
    }

    // ---- what the supervisor uses ----

    pub(crate) fn begin_run(&self, writer: SyncSender<Vec<u8>>) -> u64 {
        let mut st = self.lock();
        st.run += 1;
        st.state = PluginState::Starting;
        st.failing = None;
        st.output_closed = false;
        st.ready_since = None;
        st.early_changes = None;
        st.drop_pending();
        st.max_in_flight = 1;
        st.writer = Some(writer);
        st.misbehaviour.clear();
        st.last_activity = Instant::now();
        st.backoff = Duration::ZERO;
        st.stats.starts += 1;
        st.run
    }

    pub(crate) fn set_identity(&self, run: u64, hello: &HelloResult, max_in_flight: usize) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.identity = Some(Identity {
            name: truncate_chars(&hello.name, IDENTITY_CHARS_MAX),
            version: truncate_chars(&hello.version, IDENTITY_CHARS_MAX),
            protocol: hello.protocol.clone(),
            features: hello.features(),
        });
        st.max_in_flight = max_in_flight;
        st.early_changes = Some(Vec::new());
        drop(st);
        self.changed.notify_all();
    }

    /// Installs the answer to `list`, then the reader changes that arrived meanwhile, and
    /// announces every reader.
    pub(crate) fn install_readers(&self, run: u64, readers: Vec<Value>) {
        let mut problems = Vec::new();
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.readers.clear();
        st.state = PluginState::Running;
        for value in readers {
            let reader = match serde_json::from_value::<WireReader>(value) {
                Ok(reader) => reader,
                Err(e) => {
                    problems.push(format!("list: a reader entry is malformed: {e}"));
                    continue;
                }
            };
            if let Err(e) = reader.validate() {
                problems.push(format!("list: {e}"));
                continue;
            }
            if let Some(p) = self.apply_change(&mut st, ReaderChange::Added(reader)) {
                problems.push(format!("list: {p}"));
            }
        }
        let early = st.early_changes.take().unwrap_or_default();
        for change in early {
            if let Some(p) = self.apply_change(&mut st, change) {
                problems.push(p);
            }
        }
        st.ready_since = Some(Instant::now());
        st.last_activity = Instant::now();
        if st.first_attempt.is_none() {
            st.first_attempt = Some(Ok(()));
        }
        drop(st);
        self.changed.notify_all();
        for problem in problems {
            self.malformed(run, problem);
        }
    }

    /// Ends the current run: its requests fail with `Gone`, its readers are announced gone.
    pub(crate) fn end_run(&self, run: u64) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.state = if st.shutdown {
            PluginState::Stopped
        } else {
            PluginState::Restarting
        };
        st.drop_pending();
        st.writer = None;
        st.early_changes = None;
        st.atrs.clear();
        for gone in std::mem::take(&mut st.readers) {
            st.hotplug.push(HotplugEvent::Removed {
                reader_id: gone.info.id,
            });
        }
        drop(st);
        self.changed.notify_all();
    }

    /// A start is being tried.
    pub(crate) fn attempt(&self) {
        self.lock().attempts += 1;
    }

    /// The program could not be run at all: the instance waits for its next try.
    pub(crate) fn spawn_failed(&self, error: PluginError) {
        let mut st = self.lock();
        st.stats.handshake_failures += 1;
        if !st.shutdown {
            st.state = PluginState::Restarting;
        }
        drop(st);
        self.record_failure(Some(error));
    }

    pub(crate) fn record_failure(&self, error: Option<PluginError>) {
        let mut st = self.lock();
        if let Some(error) = error {
            st.last_error = Some(error);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// The supervisor waits `delay` before the next start: shown in the status, and the end
    /// of a first start that failed.
    pub(crate) fn backing_off(&self, delay: Duration) {
        let mut st = self.lock();
        st.backoff = delay;
        if st.first_attempt.is_none() {
            if let Some(error) = st.last_error.clone() {
                st.first_attempt = Some(Err(error));
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    pub(crate) fn why_gone(&self) -> RunEnd {
        let st = self.lock();
        if st.shutdown {
            RunEnd::Shutdown
        } else if let Some(e) = st.failing.clone() {
            RunEnd::Failed(e)
        } else {
            RunEnd::Exited
        }
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }

    /// Waits out the backoff `delay` unless the instance is shut down first (true) or an
    /// operator asks for a restart now (false, at once).
    pub(crate) fn sleep_unless_shutdown(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut st = self.lock();
        loop {
            if st.shutdown {
                return true;
            }
            if st.restart_requested {
                st.restart_requested = false;
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.wait(st, left);
        }
    }

    /// After stdin was closed: waits up to `grace` for the child's output to end.
    pub(crate) fn wait_output_closed(&self, run: u64, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut st = self.lock();
        while !(st.run == run && st.output_closed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            st = self.wait(st, left);
        }
    }
}

fn encode_request(
    id: u64,
    method: &str,
    timeout: Duration,
    params: &Value,
) -> Result<Vec<u8>, CallError> {
    let request = RequestLine {
        id,
        method,
        timeout_ms: timeout.as_millis() as u64,
        params,
    };
    let mut line = serde_json::to_vec(&request)
        .map_err(|e| CallError::Local(format!("cannot encode {method}: {e}")))?;
    if line.len() > MESSAGE_BYTES_MAX {
        return Err(CallError::Local(format!(
            "{method} request is {} bytes, over the {MESSAGE_BYTES_MAX}-byte message limit",
            line.len()
        )));
    }
    line.push(b'\n');
    Ok(line)
}

fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(PREVIEW_BYTES)];
    let text = String::from_utf8_lossy(cut);
    if line.len() > PREVIEW_BYTES {
        format!("{text:?}… ({} bytes)", line.len())
    } else {
        format!("{text:?}")
    }
}
