//! [`PcscFactory`]: lists the PC/SC readers this configuration serves and opens sessions on
//! them; [`PcscHotplug`]: reports readers coming and going.
//!
//! Why the factory keeps a worker of its own: `list` and `open` talk to pcscd, which may hang or
//! restart like any daemon, and the factory must stay bounded and recover by itself. It holds
//! one long-lived context on a worker thread (see [`crate::worker`]), re-established after
//! pcscd restarts; it holds no session state.
//!
//! Hotplug waits on pcsc-lite's `\\?PnP?\Notification` pseudo-reader, then lists the readers
//! and compares with what it last saw, so several readers arriving together (the race of
//! pcsc-lite issue #190) still give one event each. While pcscd is down the watch reports every
//! reader it knew as removed and retries the connection every [`SERVICE_RETRY_MS`]; when pcscd
//! is back it reports them added again, so the daemon re-attaches them.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cardd_reader::{
    Capabilities, CardReader, HotplugEvent, HotplugWatch, ReaderError, ReaderFactory, ReaderInfo,
    ReaderSelector, WaitStopper,
};

use crate::error::{context_lost, driver, map, PcscError};
use crate::options::PcscOptions;
use crate::reader::{PcscReader, CALL_GRACE_MS, CONTROL_CALL_TIMEOUT_MS};
use crate::session::{snapshot, wait_change, Snapshot};
use crate::stop::WaitStop;
use crate::worker::{CallError, Worker};
use crate::{DRIVER_NAME, ID_PREFIX};

/// How often a hotplug watch retries while pcscd is not reachable.
pub const SERVICE_RETRY_MS: u64 = 500;
/// Most readers one listing may hold (pcsc-lite 1.9 serves at most 16).
pub const READERS_MAX: usize = 256;
/// Most hotplug events queued between two waits.
pub const PENDING_HOTPLUG_MAX: usize = 2 * READERS_MAX;

/// The name pcscd reports for "whatever pcscd is" in errors not tied to one reader.
const SERVICE: &str = "pcscd (the PC/SC service)";

/// A configured `pcsc` driver instance.
pub struct PcscFactory {
    options: Arc<PcscOptions>,
    worker: Mutex<Option<Worker<pcsc::Context>>>,
}

impl std::fmt::Debug for PcscFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscFactory")
            .field("options", &self.options)
            .finish()
    }
}

/// The reader listing entry for a PC/SC reader name.
pub fn reader_info(name: &str) -> ReaderInfo {
    // PC/SC does not say whether a slot is contact or contactless; readers name their
    // contactless slots "PICC" or "Contactless" by convention.
    let contactless = name.contains("PICC") || name.contains("Contactless");
    ReaderInfo {
        id: format!("{ID_PREFIX}{name}"),
        name: name.to_owned(),
        driver: DRIVER_NAME.to_owned(),
        capabilities: Capabilities {
            contact: !contactless,
            contactless,
            psam_slots: 0,
            obu_channel: false,
            events: true,
            exclusive: true,
        },
    }
}

impl PcscFactory {
    /// A factory with validated `options`.
    pub fn new(options: PcscOptions) -> Result<PcscFactory, ReaderError> {
        options.validate().map_err(|detail| ReaderError::Config {
            driver: DRIVER_NAME.to_owned(),
            detail,
        })?;
        Ok(PcscFactory {
            options: Arc::new(options),
            worker: Mutex::new(None),
        })
    }

    pub fn options(&self) -> &PcscOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, Option<Worker<pcsc::Context>>> {
        self.worker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the factory's context, bounded by `timeout`; rebuilds the context after it
    /// was lost or a call overran.
    fn run<R: Send + 'static>(
        &self,
        operation: &'static str,
        timeout: Duration,
        f: impl FnOnce(&mut pcsc::Context) -> Result<R, pcsc::Error> + Send + 'static,
    ) -> Result<R, ReaderError> {
        let mut slot = self.lock();
        if slot.is_none() {
            *slot = Some(
                Worker::spawn("factory", |context| context)
                    .map_err(|e| service_error("SCardEstablishContext", e))?,
            );
        }
        let Some(worker) = slot.as_ref() else {
            return Err(ReaderError::ReaderGone {
                reader: SERVICE.into(),
            });
        };
        match worker.call(operation, timeout, f) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                if context_lost(e) {
                    *slot = None;
                }
                Err(map(SERVICE, operation, e))
            }
            Err(CallError::Stuck) => {
                if let Some(w) = slot.take() {
                    w.abandon();
                }
                Err(ReaderError::Timeout {
                    reader: SERVICE.into(),
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
            Err(e) => {
                *slot = None;
                Err(service_error(operation, e))
            }
        }
    }

    /// Every reader pcscd reports, unfiltered (for diagnostics and tests).
    pub fn all_reader_names(&self) -> Result<Vec<String>, ReaderError> {
        self.run(
            "SCardListReaders",
            Duration::from_millis(CONTROL_CALL_TIMEOUT_MS),
            |context| list_names(context),
        )
    }

    /// The card state of `reader_id` as pcscd reports it now.
    pub fn card_state(&self, reader_id: &str) -> Result<CardState, ReaderError> {
        let name = reader_cname(reader_id)?;
        let snap = self.run(
            "SCardGetStatusChange",
            Duration::from_millis(CONTROL_CALL_TIMEOUT_MS),
            move |context| snapshot(context, &name),
        )?;
        if snap.reader_missing() {
            return Err(ReaderError::ReaderGone {
                reader: reader_id.to_owned(),
            });
        }
        Ok(CardState::of(&snap))
    }

    /// Waits at most `timeout` (plus a bounded grace) until the reader `reader_id` holds a card
    /// (`present`) or is empty (`!present`) and, with `newer_than`, its event counter has moved
    /// past that value; returns the state reached, or `None` when the time ran out. It waits on
    /// pcscd's own notification, on a context of its own (it does not hold up `list` or
    /// `open`).
    ///
    /// For test harnesses and tools that must know pcscd has seen a change before going on.
    /// The counter matters: pcscd's event thread is what counts insertions and removals, while
    /// a failed command can mark the reader empty before that thread has polled; a card put
    /// back before the thread noticed it leave is never seen to come back.
    pub fn wait_for_card(
        &self,
        reader_id: &str,
        present: bool,
        newer_than: Option<u32>,
        timeout: Duration,
    ) -> Result<Option<CardState>, ReaderError> {
        let name = reader_cname(reader_id)?;
        let worker = Worker::spawn("wait", |context| context)
            .map_err(|e| service_error("SCardEstablishContext", e))?;
        let deadline = Instant::now() + timeout;
        let mut current = pcsc::State::UNAWARE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let reader = name.clone();
            let seen = match worker.call(
                "SCardGetStatusChange",
                remaining + Duration::from_millis(CALL_GRACE_MS),
                move |context| wait_change(context, &reader, current, remaining),
            ) {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => return Err(map(reader_id, "SCardGetStatusChange", e)),
                Err(CallError::Stuck) => {
                    worker.abandon();
                    return Err(ReaderError::Timeout {
                        reader: reader_id.to_owned(),
                        timeout_ms: (timeout.as_millis() as u64).saturating_add(CALL_GRACE_MS),
                    });
                }
                Err(e) => return Err(service_error("SCardGetStatusChange", e)),
            };
            let Some(s) = seen else {
                return Ok(None);
            };
            if s.reader_missing() {
                return Err(ReaderError::ReaderGone {
                    reader: reader_id.to_owned(),
                });
            }
            let state = CardState::of(&s);
            let counted = match newer_than {
                Some(n) => state.events != n,
                None => true,
            };
            if state.present == present && counted && !s.state.contains(pcsc::State::MUTE) {
                return Ok(Some(state));
            }
            current = s.as_current();
            if remaining.is_zero() {
                return Ok(None);
            }
        }
    }

    fn baseline(&self, name: &CString) -> Option<Snapshot> {
        let reader = name.clone();
        self.run(
            "SCardGetStatusChange",
            Duration::from_millis(CONTROL_CALL_TIMEOUT_MS),
            move |context| snapshot(context, &reader),
        )
        .ok()
    }
}

/// A reader's card state as pcscd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardState {
    /// A card is in the reader.
    pub present: bool,
    /// pcscd's count of card insertions and removals in this reader (16 bits, wraps).
    pub events: u32,
}

impl CardState {
    fn of(s: &Snapshot) -> CardState {
        CardState {
            present: s.present(),
            events: s.count,
        }
    }
}

/// The PC/SC name of `reader_id` (`pcsc:` prefix optional).
fn reader_cname(reader_id: &str) -> Result<CString, ReaderError> {
    let name = reader_id.strip_prefix(ID_PREFIX).unwrap_or(reader_id);
    CString::new(name).map_err(|_| driver(reader_id, PcscError::BadReaderName(name.to_owned())))
}

fn service_error(operation: &'static str, e: CallError) -> ReaderError {
    match e {
        CallError::Establish(e) => map(SERVICE, operation, e),
        CallError::Stuck => ReaderError::Timeout {
            reader: SERVICE.into(),
            timeout_ms: crate::worker::ESTABLISH_TIMEOUT_MS,
        },
        CallError::Failed(e) => driver(SERVICE, e),
    }
}

/// The reader names pcscd reports, without the PnP pseudo-reader, at most [`READERS_MAX`].
fn list_names(context: &pcsc::Context) -> Result<Vec<String>, pcsc::Error> {
    let names = context.list_readers_owned()?;
    let pnp = pcsc::PNP_NOTIFICATION();
    Ok(names
        .iter()
        .filter(|n| n.as_c_str() != pnp)
        .map(|n| n.to_string_lossy().into_owned())
        .take(READERS_MAX)
        .collect())
}

impl ReaderFactory for PcscFactory {
    fn driver(&self) -> &str {
        DRIVER_NAME
    }

    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
        Ok(self
            .all_reader_names()?
            .iter()
            .filter(|n| self.options.serves(n))
            .map(|n| reader_info(n))
            .collect())
    }

    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
        let readers = self.list()?;
        let info = selector
            .pick(&readers)
            .ok_or_else(|| ReaderError::NotFound {
                selector: selector.to_string(),
            })?
            .clone();
        let name = CString::new(info.name.clone())
            .map_err(|_| driver(&info.id, PcscError::BadReaderName(info.name.clone())))?;
        // The event baseline is taken now, so a change between open and the first wait is
        // still reported.
        let baseline = self.baseline(&name);
        Ok(Box::new(PcscReader::new(
            info,
            name,
            self.options.clone(),
            baseline,
        )))
    }

    fn hotplug(&self) -> Option<Box<dyn HotplugWatch>> {
        let known = self
            .list()
            .ok()
            .map(|readers| readers.into_iter().map(|r| r.name).collect());
        Some(Box::new(PcscHotplug {
            options: self.options.clone(),
            worker: None,
            pnp: None,
            known,
            pending: VecDeque::new(),
            wait_stop: WaitStop::default(),
        }))
    }
}

/// Reader add/remove notification for one `pcsc` driver instance.
pub struct PcscHotplug {
    options: Arc<PcscOptions>,
    worker: Option<Worker<pcsc::Context>>,
    /// The PnP pseudo-reader's last state (newer pcsc-lite keeps the reader count in its high
    /// word); `None` on a fresh context, whose first pass lists at once instead of waiting.
    pnp: Option<pcsc::State>,
    /// The served readers last seen; `None` until one listing succeeded.
    known: Option<BTreeSet<String>>,
    pending: VecDeque<HotplugEvent>,
    /// Ends waits from another thread ([`HotplugWatch::stopper`]).
    wait_stop: WaitStop,
}

impl std::fmt::Debug for PcscHotplug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscHotplug")
            .field("known", &self.known)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// What one hotplug wait on the worker found.
struct PnpSeen {
    state: pcsc::State,
    names: Vec<String>,
}

impl PcscHotplug {
    /// Records a new listing and queues the differences as events.
    fn update(&mut self, names: Vec<String>) {
        let now: BTreeSet<String> = names
            .into_iter()
            .filter(|n| self.options.serves(n))
            .collect();
        let mut events = Vec::new();
        if let Some(before) = &self.known {
            events.extend(before.difference(&now).map(|gone| HotplugEvent::Removed {
                reader_id: format!("{ID_PREFIX}{gone}"),
            }));
            events.extend(now.difference(before).map(|new| HotplugEvent::Added {
                reader: reader_info(new),
            }));
        }
        for event in events {
            self.queue(event);
        }
        self.known = Some(now);
    }

    fn queue(&mut self, event: HotplugEvent) {
        if self.pending.len() < PENDING_HOTPLUG_MAX {
            self.pending.push_back(event);
        }
    }

    /// pcscd is not reachable: every reader it served is gone.
    fn service_lost(&mut self) {
        self.worker = None;
        self.pnp = None;
        self.update(Vec::new());
    }
}

impl HotplugWatch for PcscHotplug {
    fn stopper(&mut self) -> Option<WaitStopper> {
        Some(self.wait_stop.stopper())
    }

    fn wait(&mut self, timeout: Duration) -> Result<Option<HotplugEvent>, ReaderError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || self.wait_stop.stopped() {
                return Ok(None);
            }
            if self.worker.is_none() {
                match Worker::spawn("hotplug", |context| context) {
                    Ok(w) => self.worker = Some(w),
                    Err(_) => {
                        self.service_lost();
                        if self.pending.is_empty() {
                            // Not a busy loop: pcscd is down, so retry at a bounded pace.
                            std::thread::sleep(
                                remaining.min(Duration::from_millis(SERVICE_RETRY_MS)),
                            );
                        }
                        continue;
                    }
                }
            }
            let Some(worker) = &self.worker else {
                continue;
            };
            if self.wait_stop.arm(worker.context()) {
                return Ok(None);
            }
            let pnp = self.pnp;
            let seen = worker.call(
                "SCardGetStatusChange",
                remaining + Duration::from_millis(CONTROL_CALL_TIMEOUT_MS),
                move |context| pnp_wait(context, pnp, remaining),
            );
            // A stopped wait ends quietly, whatever SCardCancel made the call return.
            if self.wait_stop.stopped() {
                return Ok(None);
            }
            match seen {
                Ok(Ok(seen)) => {
                    self.pnp = Some(seen.state);
                    self.update(seen.names);
                }
                Ok(Err(e)) if context_lost(e) || e == pcsc::Error::CommError => {
                    tracing::info!(error = %e, "pcscd went away; reporting its readers as removed");
                    self.service_lost();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "PC/SC hotplug wait failed; retrying");
                    self.worker = None;
                    self.pnp = None;
                    std::thread::sleep(remaining.min(Duration::from_millis(SERVICE_RETRY_MS)));
                }
                Err(CallError::Stuck) => {
                    if let Some(w) = self.worker.take() {
                        w.abandon();
                    }
                    self.pnp = None;
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "PC/SC hotplug worker failed; retrying");
                    self.worker = None;
                    self.pnp = None;
                    std::thread::sleep(remaining.min(Duration::from_millis(SERVICE_RETRY_MS)));
                }
            }
        }
    }
}

/// Waits on the PnP pseudo-reader for at most `timeout`, then lists the readers. On a fresh
/// context (`current` is `None`) it lists at once: pcsc-lite 1.9 compares the reader count with
/// the count when the wait began, so readers that appeared before the wait (pcscd restarting)
/// would otherwise show only at the timeout. Changes between two waits are caught the same way,
/// by listing after every wait and comparing with the last listing.
fn pnp_wait(
    context: &mut pcsc::Context,
    current: Option<pcsc::State>,
    timeout: Duration,
) -> Result<PnpSeen, pcsc::Error> {
    let pnp: &CStr = pcsc::PNP_NOTIFICATION();
    let (since, wait) = match current {
        Some(state) => (state, timeout),
        None => (pcsc::State::UNAWARE, Duration::ZERO),
    };
    let mut states = [pcsc::ReaderState::new(pnp, since)];
    let state = match context.get_status_change(wait, &mut states) {
        Ok(()) => {
            let s = &states[0];
            if s.event_state().contains(pcsc::State::UNKNOWN) && current.is_some() {
                // A pcsc-lite without PnP support: the wait returns at once, so sleep instead
                // (a slow poll, the only option there).
                std::thread::sleep(timeout);
            }
            let counter = pcsc::ffi::DWORD::from(s.event_count() & 0xFFFF) << 16;
            pcsc::State::from_bits_retain(s.event_state().bits() | counter)
        }
        Err(pcsc::Error::Timeout) => since,
        Err(e) => return Err(e),
    };
    Ok(PnpSeen {
        state,
        names: list_names(context)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_entries_are_prefixed_and_contactless_slots_recognised() {
        let contact = reader_info("Virtual PCD 00 00");
        assert_eq!(contact.id, "pcsc:Virtual PCD 00 00");
        assert_eq!(contact.driver, "pcsc");
        assert!(contact.capabilities.contact && !contact.capabilities.contactless);
        assert!(contact.capabilities.events && contact.capabilities.exclusive);
        let picc = reader_info("ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00");
        assert!(picc.capabilities.contactless && !picc.capabilities.contact);
    }

    #[test]
    fn hotplug_diffs_listings_into_events() {
        let mut watch = PcscHotplug {
            options: Arc::new(PcscOptions {
                readers: vec!["Virtual".into()],
                ..PcscOptions::default()
            }),
            worker: None,
            pnp: None,
            known: Some(["Virtual PCD 00 00".to_string()].into()),
            pending: VecDeque::new(),
            wait_stop: WaitStop::default(),
        };
        watch.update(vec![
            "Virtual PCD 00 01".into(),
            "Other reader 00 00".into(),
        ]);
        assert_eq!(
            watch.pending.iter().cloned().collect::<Vec<_>>(),
            [
                HotplugEvent::Removed {
                    reader_id: "pcsc:Virtual PCD 00 00".into()
                },
                HotplugEvent::Added {
                    reader: reader_info("Virtual PCD 00 01")
                },
            ]
        );
        watch.pending.clear();
        watch.service_lost();
        assert_eq!(
            watch.pending.iter().cloned().collect::<Vec<_>>(),
            [HotplugEvent::Removed {
                reader_id: "pcsc:Virtual PCD 00 01".into()
            }]
        );
    }
}
