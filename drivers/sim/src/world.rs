//! The simulated world: readers, their slots, and the cards in them.
//!
//! Tests need to act on the hardware while the daemon holds a reader session: insert and pull
//! cards, schedule faults, count APDUs, recover a card that a fault pulled out. [`SimWorld`] is
//! a cheap-to-clone handle over that shared state (`Arc<Mutex<..>>` plus a `Condvar` that wakes
//! event and hotplug waiters, so nothing polls). Sessions ([`crate::SimReader`]) and the test
//! hold the same handle; with a state directory every slot is saved after every change.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cardd_reader::{
    Atr, Capabilities, CardEvent, CardPresence, HotplugEvent, ReaderError, ReaderInfo, WaitStopper,
};
use serde::{Deserialize, Serialize};

use crate::cards::SimCard;
use crate::fault::{garble, FaultKind, FaultPlan};
use crate::t0;

mod persist;

/// Command headers a simulated reader remembers ([`SimWorld::command_headers`]).
pub const COMMAND_LOG_MAX: usize = 4096;
/// Most readers one world holds.
pub const READERS_MAX: usize = 64;
/// Most cards a reader's pocket holds (the oldest is dropped past this).
pub const POCKET_CARDS_MAX: usize = 16;
/// Card and hotplug events kept for sessions that have not read them yet.
pub const EVENTS_KEPT: usize = 64;
/// Longest reader id.
pub const READER_ID_CHARS_MAX: usize = 64;
/// Longest wait honoured by event and hotplug waits.
pub const WAIT_MAX: Duration = Duration::from_secs(86_400);
/// Prefix of simulated reader ids in listings (`sim:etc`).
pub const READER_ID_PREFIX: &str = "sim:";

/// What kind of reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimReaderKind {
    /// A contact (ISO 7816-3) slot.
    #[default]
    Contact,
    /// A contactless (ISO 14443) field.
    Contactless,
    /// An OBU programmer: the main slot holds the OBU's ESAM, a second slot the ETC card
    /// inserted in the OBU, both reached through `ObuChannel`.
    ObuProgrammer,
}

/// A slot of a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimSlot {
    /// The reader's slot (the ESAM for an OBU programmer).
    Main,
    /// The ICC inside the OBU (OBU programmers only).
    Icc,
}

/// A reader to add to the world.
#[derive(Debug, Clone)]
pub struct SimReaderConfig {
    /// Unique id; listed as `sim:<id>`.
    pub id: String,
    pub name: String,
    pub kind: SimReaderKind,
    /// Emulate T=0 (`61xx` / `6Cxx`).
    pub t0: bool,
    /// The card in the main slot at start (a saved state in the state directory wins).
    pub card: Option<SimCard>,
    /// The card in the OBU's ICC slot at start (OBU programmers only).
    pub icc_card: Option<SimCard>,
}

impl SimReaderConfig {
    /// An empty reader of `kind`.
    pub fn new(id: impl Into<String>, kind: SimReaderKind) -> Self {
        let id = id.into();
        let name = format!("Simulated reader {id}");
        SimReaderConfig {
            id,
            name,
            kind,
            t0: false,
            card: None,
            icc_card: None,
        }
    }
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    pub fn with_card(mut self, card: SimCard) -> Self {
        self.card = Some(card);
        self
    }
    pub fn with_icc_card(mut self, card: SimCard) -> Self {
        self.icc_card = Some(card);
        self
    }
    pub fn with_t0(mut self, t0: bool) -> Self {
        self.t0 = t0;
        self
    }
}

/// What the world API can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("no simulated reader {0:?}")]
    UnknownReader(String),
    #[error("a simulated reader {0:?} already exists")]
    DuplicateReader(String),
    #[error("reader id {0:?} must be 1 to 64 characters")]
    BadReaderId(String),
    #[error("a simulated world holds at most {READERS_MAX} readers")]
    TooManyReaders,
    #[error("reader {reader:?} has no {slot:?} slot (only OBU programmers have an ICC slot)")]
    NoSuchSlot { reader: String, slot: SimSlot },
    #[error("the {slot:?} slot of reader {reader:?} already holds a card; remove it first")]
    SlotOccupied { reader: String, slot: SimSlot },
    #[error("simulated card state at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulated card state at {path} is not a valid card: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A bounded, sequence-numbered event queue read by several cursors.
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
    /// The first event at or after `cursor`, with its sequence number.
    fn next_from(&self, cursor: u64) -> Option<(u64, T)> {
        self.items.iter().find(|(seq, _)| *seq >= cursor).cloned()
    }
}

#[derive(Debug, Default)]
struct Slot {
    card: Option<SimCard>,
    powered: bool,
    t0_pending: Option<Vec<u8>>,
}

impl Slot {
    fn with(card: Option<SimCard>) -> Slot {
        let card = card.map(|mut c| {
            c.reset();
            c
        });
        Slot {
            card,
            powered: false,
            t0_pending: None,
        }
    }

    /// Runs one exchange; `None` without a card. An unpowered card is powered (reset) first.
    fn execute(&mut self, command: &[u8], t0: bool) -> Option<Vec<u8>> {
        let card = self.card.as_mut()?;
        if !self.powered {
            card.reset();
            self.powered = true;
            self.t0_pending = None;
        }
        Some(if t0 {
            t0::exchange(card, &mut self.t0_pending, command)
        } else {
            card.process(command)
        })
    }

    fn take(&mut self) -> Option<SimCard> {
        self.powered = false;
        self.t0_pending = None;
        self.card.take().map(|mut c| {
            c.reset();
            c
        })
    }
}

#[derive(Debug)]
struct ReaderState {
    id: String,
    name: String,
    kind: SimReaderKind,
    t0: bool,
    plugged: bool,
    main: Slot,
    icc: Option<Slot>,
    faults: FaultPlan,
    apdu_count: u64,
    /// The headers (CLA INS P1 P2) of the last [`COMMAND_LOG_MAX`] commands, oldest first.
    commands: VecDeque<[u8; 4]>,
    pocket: VecDeque<SimCard>,
    events: EventLog<CardEvent>,
}

impl ReaderState {
    fn full_id(&self) -> String {
        format!("{READER_ID_PREFIX}{}", self.id)
    }

    fn info(&self) -> ReaderInfo {
        let capabilities = Capabilities {
            contact: self.kind == SimReaderKind::Contact,
            contactless: self.kind == SimReaderKind::Contactless,
            psam_slots: 0,
            obu_channel: self.kind == SimReaderKind::ObuProgrammer,
            events: true,
            exclusive: false,
        };
        ReaderInfo {
            id: self.full_id(),
            name: self.name.clone(),
            driver: crate::DRIVER_NAME.to_owned(),
            capabilities,
        }
    }

    fn slot(&mut self, slot: SimSlot) -> Option<&mut Slot> {
        match slot {
            SimSlot::Main => Some(&mut self.main),
            SimSlot::Icc => self.icc.as_mut(),
        }
    }

    fn slot_or_unsupported(&mut self, slot: SimSlot) -> Result<&mut Slot, ReaderError> {
        let reader = self.full_id();
        self.slot(slot).ok_or(ReaderError::Unsupported {
            reader,
            what: "an ICC slot inside an OBU",
        })
    }

    fn no_card(&self) -> ReaderError {
        ReaderError::NoCard {
            reader: self.full_id(),
        }
    }

    /// Puts `card` in `slot` (reset, unpowered) and reports the insertion.
    fn put(&mut self, slot: SimSlot, card: SimCard) {
        let atr = Atr(card.atr());
        if let Some(s) = self.slot(slot) {
            *s = Slot::with(Some(card));
        }
        if slot == SimSlot::Main {
            self.events.push(CardEvent::Inserted { atr });
        }
    }

    /// Takes the card out of `slot` and reports the removal.
    fn take(&mut self, slot: SimSlot) -> Option<SimCard> {
        let card = self.slot(slot)?.take()?;
        if slot == SimSlot::Main {
            self.events.push(CardEvent::Removed);
        }
        Some(card)
    }

    fn pocket(&mut self, card: SimCard) {
        self.pocket.push_back(card);
        while self.pocket.len() > POCKET_CARDS_MAX {
            self.pocket.pop_front();
        }
    }

    /// One exchange with `fault` applied (all but `ReaderUnplug`, which the world handles).
    fn run(
        &mut self,
        slot: SimSlot,
        command: &[u8],
        timeout: Duration,
        fault: Option<FaultKind>,
    ) -> Result<Vec<u8>, ReaderError> {
        let reader = self.full_id();
        let timeout_error = || ReaderError::Timeout {
            reader: reader.clone(),
            timeout_ms: millis(timeout),
        };
        let has_card = self.slot_or_unsupported(slot)?.card.is_some();
        let after = match fault {
            Some(FaultKind::RemoveBeforeExec) => {
                let card = self.take(slot).ok_or_else(|| self.no_card())?;
                self.pocket(card);
                return Err(ReaderError::CardRemoved { reader });
            }
            Some(FaultKind::Timeout { executed: false }) if has_card => return Err(timeout_error()),
            Some(FaultKind::SwapCard(card)) => {
                if let Some(old) = self.take(slot) {
                    self.pocket(old);
                }
                self.put(slot, *card);
                None
            }
            other => other,
        };
        let t0 = self.t0;
        let mut response = self
            .slot_or_unsupported(slot)?
            .execute(command, t0)
            .ok_or_else(|| self.no_card())?;
        match after {
            Some(FaultKind::RemoveAfterExec) => {
                if let Some(card) = self.take(slot) {
                    self.pocket(card);
                }
                Err(ReaderError::CardRemoved { reader })
            }
            Some(FaultKind::Timeout { .. }) => Err(timeout_error()),
            Some(FaultKind::GarbledSw) => {
                garble(&mut response);
                Ok(response)
            }
            _ => Ok(response),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The id without the `sim:` listing prefix.
fn short_id(id: &str) -> &str {
    id.strip_prefix(READER_ID_PREFIX).unwrap_or(id)
}

#[derive(Debug)]
struct WorldState {
    readers: Vec<ReaderState>,
    hotplug: EventLog<HotplugEvent>,
    state_dir: Option<PathBuf>,
}

impl WorldState {
    fn reader_mut(&mut self, id: &str) -> Option<&mut ReaderState> {
        let id = short_id(id);
        self.readers.iter_mut().find(|r| r.id == id)
    }

    /// The reader a session talks to: gone when removed or unplugged.
    fn live_reader_mut(&mut self, id: &str) -> Result<&mut ReaderState, ReaderError> {
        let gone = ReaderError::ReaderGone {
            reader: format!("{READER_ID_PREFIX}{}", short_id(id)),
        };
        self.reader_mut(id).filter(|r| r.plugged).ok_or(gone)
    }

    /// Saves `slot` of reader `id` when the world has a state directory.
    fn persist(&mut self, id: &str, slot: SimSlot) -> Result<(), SimError> {
        let Some(dir) = self.state_dir.clone() else {
            return Ok(());
        };
        let Some(reader) = self.reader_mut(id) else {
            return Ok(());
        };
        let file = persist::slot_file(&dir, &reader.id, slot);
        if slot == SimSlot::Main {
            persist::save(
                &persist::pocket_file(&dir, &reader.id),
                reader.pocket.front(),
            )?;
        }
        match reader.slot(slot) {
            Some(s) => persist::save(&file, s.card.as_ref()),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<WorldState>,
    changed: Condvar,
}

/// A handle on the simulated world; clones share it.
#[derive(Debug, Clone)]
pub struct SimWorld {
    shared: Arc<Shared>,
}

impl Default for SimWorld {
    fn default() -> Self {
        SimWorld::new()
    }
}

impl SimWorld {
    /// An empty world that keeps cards in memory only.
    pub fn new() -> Self {
        let state = WorldState {
            readers: Vec::new(),
            hotplug: EventLog::new(),
            state_dir: None,
        };
        SimWorld {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        }
    }

    /// An empty world that saves every slot under `dir` (created if missing) after every
    /// change, and restores a reader's cards from there when the reader is added.
    pub fn with_state_dir(dir: impl Into<PathBuf>) -> Result<Self, SimError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| SimError::Io {
            path: dir.clone(),
            source,
        })?;
        let world = SimWorld::new();
        world.lock().state_dir = Some(dir);
        Ok(world)
    }

    /// The state directory, if any.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.lock().state_dir.clone()
    }

    fn lock(&self) -> MutexGuard<'_, WorldState> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.shared.changed.notify_all();
    }

    /// A stopper for waits that watch `stopped`: sets it, then wakes the waiters under the lock
    /// (a waiter checks the flag under the lock, so the wake-up cannot slip between its check
    /// and its wait).
    pub(crate) fn stopper(&self, stopped: Arc<AtomicBool>) -> WaitStopper {
        let world = self.clone();
        WaitStopper::new(move || {
            stopped.store(true, Ordering::SeqCst);
            let _state = world.lock();
            world.notify();
        })
    }

    /// Adds a reader (plugged in). With a state directory, saved slots replace the configured cards.
    pub fn add_reader(&self, config: SimReaderConfig) -> Result<(), SimError> {
        if config.id.is_empty() || config.id.chars().count() > READER_ID_CHARS_MAX {
            return Err(SimError::BadReaderId(config.id));
        }
        let mut state = self.lock();
        if state.reader_mut(&config.id).is_some() {
            return Err(SimError::DuplicateReader(config.id));
        }
        if state.readers.len() >= READERS_MAX {
            return Err(SimError::TooManyReaders);
        }
        let has_icc = config.kind == SimReaderKind::ObuProgrammer;
        let main = restore(&state.state_dir, &config.id, SimSlot::Main, config.card)?;
        let icc = if has_icc {
            Some(restore(
                &state.state_dir,
                &config.id,
                SimSlot::Icc,
                config.icc_card,
            )?)
        } else {
            None
        };
        let mut pocket = VecDeque::new();
        if let Some(dir) = &state.state_dir {
            if let Some(Some(card)) = persist::load(&persist::pocket_file(dir, &config.id))? {
                pocket.push_back(card);
            }
        }
        let reader = ReaderState {
            id: config.id,
            name: config.name,
            kind: config.kind,
            t0: config.t0,
            plugged: true,
            main: Slot::with(main),
            icc: icc.map(Slot::with),
            faults: FaultPlan::new(),
            apdu_count: 0,
            commands: VecDeque::new(),
            pocket,
            events: EventLog::new(),
        };
        let info = reader.info();
        let id = reader.id.clone();
        state.readers.push(reader);
        state.persist(&id, SimSlot::Main)?;
        if has_icc {
            state.persist(&id, SimSlot::Icc)?;
        }
        state.hotplug.push(HotplugEvent::Added { reader: info });
        drop(state);
        self.notify();
        Ok(())
    }

    /// Removes a reader for good (sessions on it get `ReaderGone`). Saved state stays on disk.
    pub fn remove_reader(&self, id: &str) -> Result<(), SimError> {
        let mut state = self.lock();
        let index = state
            .readers
            .iter()
            .position(|r| r.id == short_id(id))
            .ok_or_else(|| SimError::UnknownReader(id.to_owned()))?;
        let reader = state.readers.remove(index);
        if reader.plugged {
            state.hotplug.push(HotplugEvent::Removed {
                reader_id: reader.full_id(),
            });
        }
        drop(state);
        self.notify();
        Ok(())
    }

    /// Plugs an unplugged reader back in (after [`FaultKind::ReaderUnplug`]).
    pub fn replug_reader(&self, id: &str) -> Result<(), SimError> {
        let mut state = self.lock();
        let reader = state
            .reader_mut(id)
            .ok_or_else(|| SimError::UnknownReader(id.to_owned()))?;
        if !reader.plugged {
            reader.plugged = true;
            let info = reader.info();
            state.hotplug.push(HotplugEvent::Added { reader: info });
        }
        drop(state);
        self.notify();
        Ok(())
    }

    /// The plugged-in readers, in the order they were added.
    pub fn readers(&self) -> Vec<ReaderInfo> {
        self.lock()
            .readers
            .iter()
            .filter(|r| r.plugged)
            .map(ReaderState::info)
            .collect()
    }

    /// Puts `card` in the reader's main slot.
    pub fn insert_card(&self, reader: &str, card: SimCard) -> Result<(), SimError> {
        self.insert_card_in(reader, SimSlot::Main, card)
    }

    /// Puts `card` in `slot`; the slot must be empty.
    pub fn insert_card_in(
        &self,
        reader: &str,
        slot: SimSlot,
        card: SimCard,
    ) -> Result<(), SimError> {
        let mut state = self.lock();
        let r = state
            .reader_mut(reader)
            .ok_or_else(|| SimError::UnknownReader(reader.to_owned()))?;
        let occupied = r
            .slot(slot)
            .ok_or_else(|| SimError::NoSuchSlot {
                reader: reader.to_owned(),
                slot,
            })?
            .card
            .is_some();
        if occupied {
            return Err(SimError::SlotOccupied {
                reader: reader.to_owned(),
                slot,
            });
        }
        r.put(slot, card);
        let saved = state.persist(reader, slot);
        drop(state);
        self.notify();
        saved
    }

    /// Takes the card out of the main slot.
    pub fn remove_card(&self, reader: &str) -> Option<SimCard> {
        self.remove_card_from(reader, SimSlot::Main)
    }

    /// Takes the card out of `slot` (its volatile state is lost, as with a real card).
    /// A failure to save the now-empty slot is ignored here; the next exchange reports it.
    pub fn remove_card_from(&self, reader: &str, slot: SimSlot) -> Option<SimCard> {
        let mut state = self.lock();
        let card = state.reader_mut(reader)?.take(slot);
        let _ = state.persist(reader, slot);
        drop(state);
        self.notify();
        card
    }

    /// A copy of the card in the main slot.
    pub fn card(&self, reader: &str) -> Option<SimCard> {
        self.card_in(reader, SimSlot::Main)
    }

    /// A copy of the card in `slot`.
    pub fn card_in(&self, reader: &str, slot: SimSlot) -> Option<SimCard> {
        self.lock().reader_mut(reader)?.slot(slot)?.card.clone()
    }

    /// Runs `f` on the card in the main slot (then saves it); see [`SimWorld::with_card_mut_in`].
    pub fn with_card_mut<R>(&self, reader: &str, f: impl FnOnce(&mut SimCard) -> R) -> Option<R> {
        self.with_card_mut_in(reader, SimSlot::Main, f)
    }

    /// Runs `f` on the card in `slot` (then saves it). `f` runs under the world's lock: it
    /// must not call back into the world.
    pub fn with_card_mut_in<R>(
        &self,
        reader: &str,
        slot: SimSlot,
        f: impl FnOnce(&mut SimCard) -> R,
    ) -> Option<R> {
        let mut state = self.lock();
        let result = f(state.reader_mut(reader)?.slot(slot)?.card.as_mut()?);
        let _ = state.persist(reader, slot);
        Some(result)
    }

    /// Replaces the reader's fault plan.
    pub fn set_fault_plan(&self, reader: &str, plan: FaultPlan) -> Result<(), SimError> {
        let mut state = self.lock();
        let r = state
            .reader_mut(reader)
            .ok_or_else(|| SimError::UnknownReader(reader.to_owned()))?;
        r.faults = plan;
        Ok(())
    }

    /// Faults of the reader's plan that have not fired.
    pub fn pending_faults(&self, reader: &str) -> usize {
        self.lock()
            .reader_mut(reader)
            .map_or(0, |r| r.faults.pending())
    }

    /// Exchanges made on the reader so far (0 for an unknown reader). A fault planned at
    /// `apdu_count() + 1` hits the next exchange.
    pub fn apdu_count(&self, reader: &str) -> u64 {
        self.lock().reader_mut(reader).map_or(0, |r| r.apdu_count)
    }

    /// The headers (CLA INS P1 P2) of the commands the reader passed on, oldest first: at most
    /// the last [`COMMAND_LOG_MAX`]. What a test asserts a method sends.
    pub fn command_headers(&self, reader: &str) -> Vec<[u8; 4]> {
        self.lock()
            .reader_mut(reader)
            .map_or_else(Vec::new, |r| r.commands.iter().copied().collect())
    }

    /// Forgets the reader's command headers (before the exchanges a test looks at).
    pub fn clear_command_headers(&self, reader: &str) {
        if let Some(r) = self.lock().reader_mut(reader) {
            r.commands.clear();
        }
    }

    /// The oldest card a fault took out of the reader, to present it again.
    pub fn take_pocket(&self, reader: &str) -> Option<SimCard> {
        let mut state = self.lock();
        let card = state.reader_mut(reader)?.pocket.pop_front();
        let _ = state.persist(reader, SimSlot::Main);
        card
    }

    // ---- session side -------------------------------------------------------------------

    /// The reader's kind and whether it emulates T=0.
    pub(crate) fn reader_setup(&self, reader: &str) -> Option<(SimReaderKind, bool)> {
        self.lock().reader_mut(reader).map(|r| (r.kind, r.t0))
    }

    /// One raw exchange with `slot` of `reader`, faults applied.
    pub(crate) fn exchange(
        &self,
        reader: &str,
        slot: SimSlot,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        let mut state = self.lock();
        let r = state.live_reader_mut(reader)?;
        r.apdu_count += 1;
        if r.commands.len() == COMMAND_LOG_MAX {
            r.commands.pop_front();
        }
        let mut header = [0u8; 4];
        for (to, from) in header.iter_mut().zip(command) {
            *to = *from;
        }
        r.commands.push_back(header);
        let fault = r.faults.take_for(r.apdu_count, command);
        if matches!(fault, Some(FaultKind::ReaderUnplug)) {
            r.plugged = false;
            let reader_id = r.full_id();
            state.hotplug.push(HotplugEvent::Removed {
                reader_id: reader_id.clone(),
            });
            drop(state);
            self.notify();
            return Err(ReaderError::ReaderGone { reader: reader_id });
        }
        let full_id = r.full_id();
        let result = r.run(slot, command, timeout, fault);
        let saved = state.persist(reader, slot);
        drop(state);
        self.notify();
        saved.map_err(|e| ReaderError::driver(full_id, e))?;
        result
    }

    /// Powers the main slot's card (a cold reset) and returns its ATR.
    pub(crate) fn power_on(&self, reader: &str) -> Result<Atr, ReaderError> {
        let mut state = self.lock();
        let r = state.live_reader_mut(reader)?;
        let no_card = r.no_card();
        let slot = &mut r.main;
        let card = slot.card.as_mut().ok_or(no_card)?;
        card.reset();
        slot.powered = true;
        slot.t0_pending = None;
        Ok(Atr(card.atr()))
    }

    /// Powers the main slot's card down.
    pub(crate) fn power_off(&self, reader: &str) -> Result<(), ReaderError> {
        let mut state = self.lock();
        let slot = &mut state.live_reader_mut(reader)?.main;
        slot.powered = false;
        slot.t0_pending = None;
        if let Some(card) = slot.card.as_mut() {
            card.reset();
        }
        Ok(())
    }

    /// The ATR of the powered card in the main slot.
    pub(crate) fn atr(&self, reader: &str) -> Option<Atr> {
        let mut state = self.lock();
        let slot = &state.live_reader_mut(reader).ok()?.main;
        slot.card
            .as_ref()
            .filter(|_| slot.powered)
            .map(|c| Atr(c.atr()))
    }

    pub(crate) fn presence(&self, reader: &str) -> Result<CardPresence, ReaderError> {
        let mut state = self.lock();
        let slot = &state.live_reader_mut(reader)?.main;
        Ok(match &slot.card {
            None => CardPresence::Absent,
            Some(card) if slot.powered => CardPresence::Powered {
                atr: Atr(card.atr()),
            },
            Some(_) => CardPresence::Present,
        })
    }

    /// True when the reader reaches an OBU (an OBU programmer, or an ESAM in its slot).
    pub(crate) fn has_obu_channel(&self, reader: &str) -> bool {
        let mut state = self.lock();
        state.reader_mut(reader).is_some_and(|r| {
            r.kind == SimReaderKind::ObuProgrammer || matches!(r.main.card, Some(SimCard::Obu(_)))
        })
    }

    /// Sequence number the next card event of `reader` will get.
    pub(crate) fn card_event_cursor(&self, reader: &str) -> u64 {
        self.lock()
            .reader_mut(reader)
            .map_or(0, |r| r.events.next_seq)
    }

    /// Sequence number the next hotplug event will get.
    pub(crate) fn hotplug_cursor(&self) -> u64 {
        self.lock().hotplug.next_seq
    }

    /// The next card event of `reader` at or after `cursor`, waiting at most `timeout`.
    pub(crate) fn wait_card_event(
        &self,
        reader: &str,
        cursor: &mut u64,
        timeout: Duration,
        stopped: &AtomicBool,
    ) -> Result<Option<CardEvent>, ReaderError> {
        self.wait_for(timeout, stopped, |state| {
            let r = match state.live_reader_mut(reader) {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let (seq, event) = r.events.next_from(*cursor)?;
            *cursor = seq + 1;
            Some(Ok(event))
        })
    }

    /// The next hotplug event at or after `cursor`, waiting at most `timeout`.
    pub(crate) fn wait_hotplug(
        &self,
        cursor: &mut u64,
        timeout: Duration,
        stopped: &AtomicBool,
    ) -> Result<Option<HotplugEvent>, ReaderError> {
        self.wait_for(timeout, stopped, |state| {
            let (seq, event) = state.hotplug.next_from(*cursor)?;
            *cursor = seq + 1;
            Some(Ok(event))
        })
    }

    /// Waits on the condition variable until `check` yields, `timeout` passes or `stopped` is
    /// set ([`SimWorld::stopper`]).
    fn wait_for<T>(
        &self,
        timeout: Duration,
        stopped: &AtomicBool,
        mut check: impl FnMut(&mut WorldState) -> Option<Result<T, ReaderError>>,
    ) -> Result<Option<T>, ReaderError> {
        let deadline = Instant::now() + timeout.min(WAIT_MAX);
        let mut state = self.lock();
        loop {
            if stopped.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if let Some(result) = check(&mut state) {
                return result.map(Some);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The card a slot starts with: the saved one when the state directory has it, else `configured`.
fn restore(
    dir: &Option<PathBuf>,
    id: &str,
    slot: SimSlot,
    configured: Option<SimCard>,
) -> Result<Option<SimCard>, SimError> {
    let Some(dir) = dir else {
        return Ok(configured);
    };
    Ok(persist::load(&persist::slot_file(dir, id, slot))?.unwrap_or(configured))
}
