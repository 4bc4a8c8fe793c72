//! [`PcscReader`]: one session on one PC/SC reader, the `CardReader` the daemon holds.
//!
//! Why it is shaped this way: every PC/SC call runs on the thread that calls the session (the
//! daemon's reader worker), so a command costs no thread hop, and is registered with the
//! process-wide watchdog ([`crate::watchdog`]) for its deadline, so nothing blocks past its
//! bound even when pcsc-lite would wait forever. The session connects lazily (it exists without
//! a card; the first command or `power_on` connects), keeps no card state of its own beyond the
//! handle's ATR and protocol, and rebuilds its context and handle after anything that leaves
//! them in doubt: a call that overran, pcscd restarting (`SCARD_E_NO_SERVICE`, reported as
//! `ReaderGone` until pcscd is back), or a card that was pulled or reset.

use std::collections::VecDeque;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_reader::{
    ApduTransport, Atr, CardEvent, CardEvents, CardPresence, CardReader, ExclusiveAccess, Protocol,
    ReaderError, ReaderInfo, WaitStopper,
};

use crate::error::{context_lost, driver, map, PcscError};
use crate::options::PcscOptions;
use crate::session::{
    snapshot, wait_change, ConnInfo, ConnectParams, Session, Snapshot, Transmitted,
};
use crate::stop::WaitStop;
use crate::stuck::{CallError, ESTABLISH_TIMEOUT_MS};
use crate::watchdog;

/// Bound on quick calls to pcscd (status, disconnect, list).
pub const CONTROL_CALL_TIMEOUT_MS: u64 = 3_000;
/// Extra time granted to calls that carry their own timeout (event waits), for the round trip.
pub const CALL_GRACE_MS: u64 = 500;
/// After a failed command, how long to wait for pcscd to notice a removal (vpcd and many
/// readers are polled every 400 ms).
pub const REMOVAL_CONFIRM_MS: u64 = 1_000;
/// Most card events queued in a session between two waits.
pub const PENDING_EVENTS_MAX: usize = 8;

/// A session on one PC/SC reader.
pub struct PcscReader {
    info: ReaderInfo,
    params: ConnectParams,
    options: Arc<PcscOptions>,
    /// The context and card handle; `None` until the first call, and after anything that left
    /// them in doubt.
    session: Option<Session>,
    last_protocol: Option<pcsc::Protocol>,
    /// The reader state the next event wait compares against (flags + event counter).
    baseline: Option<Snapshot>,
    pending: VecDeque<CardEvent>,
    /// Ends event waits from another thread ([`CardEvents::stopper`]).
    wait_stop: WaitStop,
}

impl std::fmt::Debug for PcscReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscReader")
            .field("id", &self.info.id)
            .field("connected", &self.connected().is_some())
            .field("in_transaction", &self.in_transaction())
            .finish()
    }
}

impl PcscReader {
    pub(crate) fn new(
        info: ReaderInfo,
        reader: CString,
        options: Arc<PcscOptions>,
        baseline: Option<Snapshot>,
    ) -> PcscReader {
        PcscReader {
            params: ConnectParams {
                reader,
                share_mode: options.share_mode.to_pcsc(),
                protocols: options.pcsc_protocols(),
            },
            info,
            options,
            session: None,
            last_protocol: None,
            baseline,
            pending: VecDeque::new(),
            wait_stop: WaitStop::default(),
        }
    }

    fn id(&self) -> &str {
        &self.info.id
    }

    /// The session's PC/SC state, with a freshly established context when there is none.
    fn session(&mut self) -> Result<&mut Session, ReaderError> {
        if self.session.is_none() {
            let link = watchdog::establish(Duration::from_millis(ESTABLISH_TIMEOUT_MS))
                .map_err(|e| self.call_error("SCardEstablishContext", e, None))?;
            self.session = Some(Session::new(link, self.params.clone()));
        }
        match &mut self.session {
            Some(s) => Ok(s),
            None => Err(ReaderError::ReaderGone {
                reader: self.info.id.clone(),
            }),
        }
    }

    /// Forgets the context and handle (the card is let go with a reset); the next call
    /// establishes fresh ones.
    fn drop_session(&mut self) {
        self.release_session(Duration::from_millis(CONTROL_CALL_TIMEOUT_MS));
    }

    /// Lets the handle and context go (`SCardDisconnect`, then `SCardReleaseContext` once the
    /// watchdog's registration lets go of its clone), under the watchdog like any call: pcscd
    /// may hang, and dropping a session must not hang the thread that drops it.
    fn release_session(&mut self, timeout: Duration) {
        if let Some(s) = self.session.take() {
            let guard = watchdog::arm(&s.link, "SCardDisconnect", timeout);
            drop(s);
            guard.disarm();
        }
    }

    fn call_error(
        &self,
        operation: &'static str,
        e: CallError,
        timeout: Option<Duration>,
    ) -> ReaderError {
        match e {
            CallError::Stuck => match timeout {
                Some(t) => ReaderError::Timeout {
                    reader: self.id().to_owned(),
                    timeout_ms: t.as_millis() as u64,
                },
                None => ReaderError::ReaderGone {
                    reader: self.id().to_owned(),
                },
            },
            CallError::Failed(e) => driver(self.id(), e),
            CallError::Establish(e) => map(self.id(), operation, e),
        }
    }

    /// Runs `f` on this thread, registered with the watchdog for `timeout`. An overrun is
    /// `Timeout` and rebuilds the context; a lost context is `ReaderGone`.
    fn run<R>(
        &mut self,
        operation: &'static str,
        timeout: Duration,
        f: impl FnOnce(&mut Session) -> Result<R, pcsc::Error>,
    ) -> Result<R, ReaderError> {
        let session = self.session()?;
        let guard = watchdog::arm(&session.link, operation, timeout);
        // A panic inside pcsc (debug builds panic on unknown status codes) may leave the
        // session inconsistent: it is dropped and rebuilt.
        let result = catch_unwind(AssertUnwindSafe(|| f(session)));
        let outcome = guard.disarm();
        match result {
            _ if outcome.overran => {
                tracing::warn!(reader = %self.info.id, operation, timeout_ms = timeout.as_millis() as u64, forced = outcome.forced, "PC/SC call overran; rebuilding the session's context");
                // Only a command in flight leaves the card in doubt; a wait for another holder
                // must not reset the card under it. The context is in doubt too, so letting it
                // go gets no time of its own: at most the watchdog's grace.
                if let Some(s) = &mut self.session {
                    s.reset_on_exit = operation == "SCardTransmit";
                }
                self.release_session(Duration::ZERO);
                Err(self.call_error(operation, CallError::Stuck, Some(timeout)))
            }
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                if context_lost(e) {
                    tracing::info!(reader = %self.info.id, error = %e, "PC/SC context lost; re-establishing on the next call");
                    self.drop_session();
                }
                Err(map(self.id(), operation, e))
            }
            Err(_) => {
                self.drop_session();
                Err(driver(self.id(), PcscError::Panicked { operation }))
            }
        }
    }

    fn connected(&self) -> Option<&ConnInfo> {
        self.session.as_ref().and_then(Session::connected)
    }

    /// Whether this session's handle holds the PC/SC transaction lock (a lost handle lost it).
    fn in_transaction(&self) -> bool {
        self.connected().is_some_and(|c| c.locked)
    }

    fn note_connection(&mut self, info: &ConnInfo) -> Atr {
        self.last_protocol = info.protocol;
        Atr(info.atr.clone())
    }

    fn ensure_connected(&mut self) -> Result<ConnInfo, ReaderError> {
        if let Some(info) = self.connected() {
            return Ok(info.clone());
        }
        let info = self.run(
            "SCardConnect",
            self.options.connect_timeout(),
            Session::ensure_connected,
        )?;
        self.note_connection(&info);
        Ok(info)
    }

    fn reinitialise(&mut self, init: pcsc::Disposition) -> Result<Atr, ReaderError> {
        let info = self.run("SCardReconnect", self.options.connect_timeout(), move |s| {
            s.reinitialise(init)
        })?;
        Ok(self.note_connection(&info))
    }

    fn snapshot_now(&mut self) -> Result<Snapshot, ReaderError> {
        let snap = self.run(
            "SCardGetStatusChange",
            Duration::from_millis(CONTROL_CALL_TIMEOUT_MS),
            |s| snapshot(&s.context, &s.params.reader),
        )?;
        if snap.reader_missing() {
            self.drop_session();
            return Err(ReaderError::ReaderGone {
                reader: self.id().to_owned(),
            });
        }
        Ok(snap)
    }

    /// After a failed command: `CardRemoved` when the card left, else `failure`.
    fn removal_or(&mut self, known_count: u32, failure: ReaderError) -> ReaderError {
        let wait = Duration::from_millis(REMOVAL_CONFIRM_MS);
        let confirm = self.run(
            "SCardGetStatusChange",
            wait + Duration::from_millis(CONTROL_CALL_TIMEOUT_MS),
            move |s| s.confirm_removal(known_count, wait),
        );
        match confirm {
            Ok(true) => ReaderError::CardRemoved {
                reader: self.id().to_owned(),
            },
            Ok(false) => failure,
            Err(e) => e,
        }
    }
}

impl Drop for PcscReader {
    fn drop(&mut self) {
        self.release_session(Duration::from_millis(CONTROL_CALL_TIMEOUT_MS));
    }
}

impl ApduTransport for PcscReader {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        if command.len() > pcsc::MAX_BUFFER_SIZE_EXTENDED {
            return Err(ReaderError::Protocol {
                reader: self.id().to_owned(),
                detail: format!(
                    "a command of {} bytes exceeds PC/SC's {} bytes",
                    command.len(),
                    pcsc::MAX_BUFFER_SIZE_EXTENDED
                ),
            });
        }
        let info = self.ensure_connected()?;
        let bytes = command.to_vec();
        let outcome = self.run("SCardTransmit", timeout, move |s| s.transmit(&bytes))?;
        match outcome {
            Transmitted::Response(response) => Ok(response),
            // The handle had a card: whatever the code (removed, reset, unpowered, no card),
            // that card's session ended around this command, so its outcome is unknown.
            Transmitted::CardLost(e) => {
                tracing::debug!(reader = %self.info.id, error = %e, "card lost during a command");
                Err(ReaderError::CardRemoved {
                    reader: self.id().to_owned(),
                })
            }
            Transmitted::Failed(Some(e), _) => {
                let failure = map(self.id(), "SCardTransmit", e);
                Err(self.removal_or(info.event_count, failure))
            }
            Transmitted::Failed(None, len) => {
                let failure = driver(self.id(), PcscError::ShortResponse { len });
                Err(self.removal_or(info.event_count, failure))
            }
        }
    }

    fn protocol(&self) -> Protocol {
        let negotiated = self
            .connected()
            .and_then(|c| c.protocol)
            .or(self.last_protocol);
        match negotiated {
            Some(pcsc::Protocol::T0) => Protocol::T0,
            Some(pcsc::Protocol::RAW) => Protocol::Other,
            Some(pcsc::Protocol::T1) | None if self.info.capabilities.contactless => {
                Protocol::Contactless
            }
            Some(pcsc::Protocol::T1) | None => Protocol::T1,
        }
    }
}

impl CardReader for PcscReader {
    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    /// Cold reset: reconnects with `SCARD_UNPOWER_CARD` (or connects, when not connected).
    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        if self.connected().is_none() {
            let info = self.ensure_connected()?;
            return Ok(Atr(info.atr));
        }
        self.reinitialise(pcsc::Disposition::UnpowerCard)
    }

    /// Disconnects with `SCARD_UNPOWER_CARD`; harmless without a card or a connection.
    fn power_off(&mut self) -> Result<(), ReaderError> {
        if self.connected().is_none() {
            return Ok(());
        }
        self.run("SCardDisconnect", self.options.connect_timeout(), |s| {
            s.disconnect(pcsc::Disposition::UnpowerCard);
            Ok(())
        })
    }

    /// Warm reset: reconnects with `SCARD_RESET_CARD`.
    fn reset(&mut self) -> Result<Atr, ReaderError> {
        if self.connected().is_none() {
            let info = self.ensure_connected()?;
            return Ok(Atr(info.atr));
        }
        self.reinitialise(pcsc::Disposition::ResetCard)
    }

    fn atr(&self) -> Option<Atr> {
        self.connected().map(|c| Atr(c.atr.clone()))
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        let snap = self.snapshot_now()?;
        if !snap.present() {
            return Ok(CardPresence::Absent);
        }
        match self.connected() {
            Some(c) if c.event_count == snap.count && !c.atr.is_empty() => {
                Ok(CardPresence::Powered {
                    atr: Atr(c.atr.clone()),
                })
            }
            _ => Ok(CardPresence::Present),
        }
    }

    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        Some(self)
    }

    fn exclusive(&mut self) -> Option<&mut dyn ExclusiveAccess> {
        Some(self)
    }
}

/// The events between two reader states: a presence flip, or (same presence, counter moved)
/// a card swapped between two waits. A card that came and went between two waits leaves no
/// event (the reader is empty either way).
pub(crate) fn events_between(before: &Snapshot, after: &Snapshot) -> Vec<CardEvent> {
    let inserted = || CardEvent::Inserted {
        atr: Atr(after.atr.clone()),
    };
    match (before.present(), after.present()) {
        (true, false) => vec![CardEvent::Removed],
        (false, true) => vec![inserted()],
        (true, true) if after.count != before.count => vec![CardEvent::Removed, inserted()],
        _ => Vec::new(),
    }
}

impl CardEvents for PcscReader {
    fn stopper(&mut self) -> Option<WaitStopper> {
        Some(self.wait_stop.stopper())
    }

    fn wait_for_change(&mut self, timeout: Duration) -> Result<Option<CardEvent>, ReaderError> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Some(event));
        }
        let deadline = Instant::now() + timeout;
        let mut baseline = match self.baseline.clone() {
            Some(b) => b,
            None => {
                let now = self.snapshot_now()?;
                self.baseline = Some(now.clone());
                now
            }
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            let context = self.session()?.context.clone();
            if self.wait_stop.arm(context) {
                return Ok(None);
            }
            let current = baseline.as_current();
            let changed = self.run(
                "SCardGetStatusChange",
                remaining + Duration::from_millis(CALL_GRACE_MS),
                move |s| wait_change(&s.context, &s.params.reader, current, remaining),
            );
            // A stopped wait ends quietly, whatever SCardCancel made the call return.
            if self.wait_stop.stopped() {
                return Ok(None);
            }
            let changed = changed?;
            let Some(after) = changed else {
                return Ok(None);
            };
            if after.reader_missing() {
                self.drop_session();
                return Err(ReaderError::ReaderGone {
                    reader: self.id().to_owned(),
                });
            }
            let events = events_between(&baseline, &after);
            self.baseline = Some(after.clone());
            baseline = after;
            // Other flags (in use, exclusive, mute) also wake the wait: go on waiting.
            self.pending
                .extend(events.into_iter().take(PENDING_EVENTS_MAX));
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
        }
    }
}

impl ExclusiveAccess for PcscReader {
    /// `SCardBeginTransaction`, bounded: pcsc-lite retries every 100 ms for as long as another
    /// application holds the card, so a wait past `timeout` abandons the attempt and reports
    /// `Busy`.
    fn begin(&mut self, timeout: Duration) -> Result<(), ReaderError> {
        if self.in_transaction() {
            return Ok(());
        }
        // Connecting is inside the bound: pcsc-lite's SCardConnect also waits for the holder.
        let result = self.run("SCardBeginTransaction", timeout, |s| {
            s.begin_transaction()?;
            s.ensure_connected()
        });
        if let Ok(info) = &result {
            self.note_connection(info);
        }
        match result.map(|_| ()) {
            Ok(()) => Ok(()),
            Err(ReaderError::Timeout { timeout_ms, .. }) => Err(ReaderError::Busy {
                reader: self.id().to_owned(),
                holder: format!(
                    "another PC/SC application (its transaction outlasted {timeout_ms} ms)"
                ),
            }),
            Err(e) => Err(e),
        }
    }

    /// Releases the lock by disconnecting with `SCARD_LEAVE_CARD` (the card keeps its state;
    /// the next command reconnects). Harmless when not held.
    fn end(&mut self) -> Result<(), ReaderError> {
        if !self.in_transaction() {
            return Ok(());
        }
        self.run("SCardDisconnect", self.options.connect_timeout(), |s| {
            s.end_transaction();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(present: bool, count: u32) -> Snapshot {
        Snapshot {
            state: if present {
                pcsc::State::PRESENT
            } else {
                pcsc::State::EMPTY
            },
            count,
            atr: if present { vec![0x3B, 0x00] } else { vec![] },
        }
    }

    #[test]
    fn presence_flips_and_swaps_become_events_in_order() {
        assert_eq!(
            events_between(&snap(true, 1), &snap(false, 2)),
            [CardEvent::Removed]
        );
        assert_eq!(
            events_between(&snap(false, 2), &snap(true, 3)),
            [CardEvent::Inserted {
                atr: Atr(vec![0x3B, 0x00])
            }]
        );
        assert_eq!(
            events_between(&snap(true, 3), &snap(true, 5)),
            [
                CardEvent::Removed,
                CardEvent::Inserted {
                    atr: Atr(vec![0x3B, 0x00])
                }
            ]
        );
        assert!(events_between(&snap(true, 3), &snap(true, 3)).is_empty());
        assert!(events_between(&snap(false, 3), &snap(false, 5)).is_empty());
    }

    #[test]
    fn the_current_state_carries_the_event_counter() {
        let s = Snapshot {
            state: pcsc::State::PRESENT | pcsc::State::INUSE,
            count: 7,
            atr: vec![],
        };
        let raw = s.as_current().bits();
        assert_eq!(raw >> 16, 7);
        assert_eq!(
            raw & 0xFFFF,
            (pcsc::State::PRESENT | pcsc::State::INUSE).bits()
        );
    }
}
