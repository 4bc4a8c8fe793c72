//! A session's PC/SC state: the context, the card handle and the calls made on them.
//!
//! Why separate from the reader (`reader`): everything here may block inside pcsc-lite, so it
//! is called only through the reader's `run`, which registers each call with the watchdog
//! ([`crate::watchdog`]) for its deadline. Keeping the blocking half in its own file makes it
//! easy to check that nothing on the reader's side calls pcsc without a deadline.

use std::ffi::{CStr, CString};
use std::time::Duration;

use crate::error::{card_lost, context_lost};
use crate::watchdog::Link;

/// A card connection: what connecting reported, and whether it holds the transaction lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    pub atr: Vec<u8>,
    pub protocol: Option<pcsc::Protocol>,
    /// The reader's card event counter when we connected (0 when pcsc-lite keeps none).
    pub event_count: u32,
    /// This handle holds the PC/SC transaction lock (it goes with the handle).
    pub locked: bool,
}

/// How the session connects.
#[derive(Debug, Clone)]
pub(crate) struct ConnectParams {
    pub reader: CString,
    pub share_mode: pcsc::ShareMode,
    pub protocols: pcsc::Protocols,
}

/// One reader's state as `SCardGetStatusChange` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The event state flags (without the counter).
    pub state: pcsc::State,
    /// The card event counter (upper 16 bits of the event state).
    pub count: u32,
    pub atr: Vec<u8>,
}

impl Snapshot {
    fn of(rs: &pcsc::ReaderState) -> Snapshot {
        Snapshot {
            state: rs.event_state(),
            count: rs.event_count(),
            atr: rs.atr().to_vec(),
        }
    }

    /// The state to pass back as "current" so pcsc-lite reports only later changes: the flags
    /// plus the event counter in the upper 16 bits.
    pub fn as_current(&self) -> pcsc::State {
        let counter = pcsc::ffi::DWORD::from(self.count & 0xFFFF) << 16;
        pcsc::State::from_bits_retain(self.state.bits() | counter)
    }

    pub fn present(&self) -> bool {
        self.state.contains(pcsc::State::PRESENT)
    }

    /// The reader itself is not usable (unknown to pcscd, or unavailable).
    pub fn reader_missing(&self) -> bool {
        self.state
            .intersects(pcsc::State::UNKNOWN | pcsc::State::UNAVAILABLE)
    }
}

/// The current state of `reader` (a zero-timeout `SCardGetStatusChange`).
pub(crate) fn snapshot(context: &pcsc::Context, reader: &CStr) -> Result<Snapshot, pcsc::Error> {
    let mut states = [pcsc::ReaderState::new(reader, pcsc::State::UNAWARE)];
    context.get_status_change(Duration::ZERO, &mut states)?;
    Ok(Snapshot::of(&states[0]))
}

/// Waits at most `timeout` for `reader` to differ from `current`; `None` when nothing changed.
pub(crate) fn wait_change(
    context: &pcsc::Context,
    reader: &CStr,
    current: pcsc::State,
    timeout: Duration,
) -> Result<Option<Snapshot>, pcsc::Error> {
    let mut states = [pcsc::ReaderState::new(reader, current)];
    match context.get_status_change(timeout, &mut states) {
        Ok(()) => Ok(Some(Snapshot::of(&states[0]))),
        Err(pcsc::Error::Timeout) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A connected card handle.
pub(crate) struct Connected {
    pub card: pcsc::Card,
    pub info: ConnInfo,
}

/// The PC/SC state of one reader session.
pub(crate) struct Session {
    /// The context and its connection to pcscd (which the watchdog may shut down).
    pub link: Link,
    pub context: pcsc::Context,
    pub params: ConnectParams,
    pub card: Option<Connected>,
    /// Receive buffer, sized for the largest extended-length response.
    pub buffer: Vec<u8>,
    /// How the handle is let go when the session ends: `true` resets the card (the default,
    /// so a card session with a verified PIN is not left open to other applications), `false`
    /// leaves it (for a session that overran while it waited for another holder, which must
    /// not reset the card under that holder).
    pub reset_on_exit: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        let disposition = if self.reset_on_exit {
            pcsc::Disposition::ResetCard
        } else {
            pcsc::Disposition::LeaveCard
        };
        self.disconnect(disposition);
    }
}

/// What one `SCardTransmit` gave.
#[derive(Debug)]
pub(crate) enum Transmitted {
    Response(Vec<u8>),
    /// The handle reported the card gone, reset or unpowered; the handle was dropped.
    CardLost(pcsc::Error),
    /// Some other failure (or a response without status bytes): the handle was dropped and
    /// whether the card left must be checked.
    Failed(Option<pcsc::Error>, usize),
}

impl Session {
    pub fn new(link: Link, params: ConnectParams) -> Session {
        Session {
            context: link.context.clone(),
            link,
            params,
            card: None,
            buffer: vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED],
            reset_on_exit: true,
        }
    }

    /// The connection, when connected.
    pub fn connected(&self) -> Option<&ConnInfo> {
        self.card.as_ref().map(|c| &c.info)
    }

    /// Connects when not connected; returns the connection.
    pub fn ensure_connected(&mut self) -> Result<ConnInfo, pcsc::Error> {
        if let Some(c) = &self.card {
            return Ok(c.info.clone());
        }
        let card = self.context.connect(
            &self.params.reader,
            self.params.share_mode,
            self.params.protocols,
        )?;
        let info = self.describe(&card)?;
        self.card = Some(Connected {
            card,
            info: info.clone(),
        });
        Ok(info)
    }

    /// Reads the ATR, protocol and event counter of a fresh or reconnected handle.
    fn describe(&self, card: &pcsc::Card) -> Result<ConnInfo, pcsc::Error> {
        let status = card.status2_owned()?;
        let count = snapshot(&self.context, &self.params.reader)
            .map(|s| s.count)
            .unwrap_or(0);
        Ok(ConnInfo {
            atr: status.atr().to_vec(),
            protocol: status.protocol2(),
            event_count: count,
            locked: false,
        })
    }

    /// Drops the handle with `disposition`; errors are ignored (the card may be gone).
    pub fn disconnect(&mut self, disposition: pcsc::Disposition) {
        if let Some(c) = self.card.take() {
            if let Err((card, _)) = c.card.disconnect(disposition) {
                // Dropping disconnects again, with a reset; nothing more can be done.
                drop(card);
            }
        }
    }

    /// Re-initialises the card with `init` (`UnpowerCard` = cold, `ResetCard` = warm); when the
    /// handle is stale (card pulled and re-inserted) or absent, connects afresh.
    pub fn reinitialise(&mut self, init: pcsc::Disposition) -> Result<ConnInfo, pcsc::Error> {
        if let Some(mut c) = self.card.take() {
            match c
                .card
                .reconnect(self.params.share_mode, self.params.protocols, init)
            {
                Ok(()) => match self.describe(&c.card) {
                    Ok(mut info) => {
                        // The lock belongs to the handle, which a reconnect keeps.
                        info.locked = c.info.locked;
                        c.info = info.clone();
                        self.card = Some(c);
                        return Ok(info);
                    }
                    Err(e) if context_lost(e) => {
                        return Err(e);
                    }
                    Err(_) => drop(c),
                },
                Err(e) if context_lost(e) => {
                    return Err(e);
                }
                Err(_) => {
                    // Stale handle: leave the card alone and connect afresh below.
                    let _ = c.card.disconnect(pcsc::Disposition::LeaveCard);
                }
            }
        }
        self.ensure_connected()
    }

    /// Sends one command on the connected handle.
    pub fn transmit(&mut self, command: &[u8]) -> Result<Transmitted, pcsc::Error> {
        let Some(c) = &self.card else {
            return Err(pcsc::Error::NoSmartcard);
        };
        let outcome = match c.card.transmit(command, &mut self.buffer) {
            Ok(response) if response.len() >= 2 => {
                return Ok(Transmitted::Response(response.to_vec()))
            }
            Ok(response) => Transmitted::Failed(None, response.len()),
            Err(e) if context_lost(e) => {
                self.card = None;
                return Err(e);
            }
            Err(e) if card_lost(e) => Transmitted::CardLost(e),
            Err(e) => Transmitted::Failed(Some(e), 0),
        };
        // The handle's card session is broken either way: reset it if the card is still there
        // (so no half-done session stays open) and connect afresh next time.
        self.disconnect(pcsc::Disposition::ResetCard);
        Ok(outcome)
    }

    /// After a failed command: did the card leave? Checks now, then waits at most `wait` for
    /// pcscd's next presence poll to notice (vpcd and many readers are polled every 400 ms).
    pub fn confirm_removal(&self, known_count: u32, wait: Duration) -> Result<bool, pcsc::Error> {
        let now = snapshot(&self.context, &self.params.reader)?;
        let gone = |s: &Snapshot| !s.present() || s.count != known_count;
        if gone(&now) {
            return Ok(true);
        }
        match wait_change(&self.context, &self.params.reader, now.as_current(), wait)? {
            Some(later) => Ok(gone(&later)),
            None => Ok(false),
        }
    }

    /// Takes the PC/SC transaction lock (`SCardBeginTransaction`) and keeps it after this call
    /// returns. The pcsc crate ties a transaction to a borrow of the card, which cannot outlive
    /// one call, so the guard is forgotten instead: the lock stays held by this handle until
    /// [`Session::end_transaction`] disconnects it (pcsc-lite releases every lock a handle holds
    /// when it disconnects).
    ///
    /// A flow starts with this call, so a handle left stale by an earlier removal or reset is
    /// replaced by a fresh connection once, instead of failing the flow before it began.
    pub fn begin_transaction(&mut self) -> Result<(), pcsc::Error> {
        let mut fresh = self.card.is_none();
        loop {
            self.ensure_connected()?;
            let Some(c) = &mut self.card else {
                return Err(pcsc::Error::NoSmartcard);
            };
            let result = c.card.transaction().map(std::mem::forget);
            if result.is_ok() {
                c.info.locked = true;
            }
            match result {
                Err(e) if card_lost(e) || context_lost(e) => {
                    self.disconnect(pcsc::Disposition::LeaveCard);
                    if fresh || context_lost(e) || e == pcsc::Error::NoSmartcard {
                        return Err(e);
                    }
                    fresh = true;
                }
                other => return other,
            }
        }
    }

    /// Releases the transaction lock by disconnecting with `LeaveCard` (the card keeps its
    /// state; the next command reconnects).
    pub fn end_transaction(&mut self) {
        self.disconnect(pcsc::Disposition::LeaveCard);
    }
}
