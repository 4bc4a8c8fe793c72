//! A simulated OBU programmer on a pseudo-terminal, with fault injection.
//!
//! Why: the serial driver's hard parts (resynchronising after noise, resending after a broken
//! reply without running an APDU twice, bounded timeouts, a device unplugged mid-session, a
//! card pulled mid-command) can only be tested against a device that misbehaves on demand.
//! [`SimProgrammer`] opens a pty pair (`TTYPort::pair`), serves the programmer protocol of
//! [`crate::protocol`] on the master side in a thread, and leaves the slave's path for the
//! driver to open exactly like a real `/dev/ttyUSB0`. Behind it sit `cardd_sim` cards: an OBU
//! ESAM and, optionally, an ETC card in the OBU's ICC slot. The daemon's tests can use it too.
//!
//! Behaviour (the device side of `PROTOCOL.md`):
//! * broken frames get a NAK; a repeat of the last executed frame gets the remembered reply;
//! * the ICC is powered on insertion and on its first APDU after a power-off;
//! * every ICC insertion or removal bumps the change counter and sends an EVENT frame;
//! * faults are one-shot (`corrupt_next_reply(ies)`, `inject_garbage`, `nak_next_command`,
//!   `delay_next_reply`, `esam_error_next_command`, `remove_card_during_next_command`) or a
//!   mode (`go_silent` until `wake`);
//!   [`SimProgrammer::disappear`] closes the device for good (the driver sees its port hang up).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use cardd_sim::SimCard;
use serialport::{SerialPort, TTYPort};

use crate::frame::{encode_with_bcc, Decoder, Frame, FrameError};
use crate::protocol::{
    code, reply_code, DeviceInfo, IccState, ProtocolError, Reply, Request, SlotStatus, Status,
    Target, PROTOCOL_VERSION, RSCTL_NAK,
};

/// How often the serving thread wakes to see whether it should stop, in milliseconds.
pub const SIM_READ_SLICE_MS: u64 = 20;
/// How long a write to the pty may block before the simulated device drops it, in milliseconds.
pub const SIM_WRITE_TIMEOUT_MS: u64 = 500;
/// Most garbage bytes queued by [`SimProgrammer::inject_garbage`].
pub const SIM_GARBAGE_BYTES_MAX: usize = 4_096;

/// Why a simulated programmer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimProgrammerError {
    #[error("cannot create a pseudo-terminal pair: {0}")]
    Pty(#[source] serialport::Error),
    #[error("the pseudo-terminal has no slave path")]
    NoPath,
    #[error("cannot start the simulated programmer's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the device identity does not fit the protocol: {0}")]
    Identity(#[source] ProtocolError),
}

/// What the simulated programmer is and holds.
#[derive(Debug, Clone)]
pub struct SimProgrammerConfig {
    pub serial_number: String,
    pub model: String,
    pub firmware: String,
    /// The OBU's ESAM; `None` is a programmer with no OBU connected.
    pub esam: Option<SimCard>,
    /// The ETC card in the OBU's ICC slot.
    pub icc: Option<SimCard>,
}

impl SimProgrammerConfig {
    /// A programmer with an OBU whose ESAM is `esam` and an empty ICC slot.
    pub fn new(esam: SimCard) -> Self {
        SimProgrammerConfig {
            serial_number: "CDDSIM-0001".into(),
            model: "cardd simulated OBU programmer".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            esam: Some(esam),
            icc: None,
        }
    }

    /// Puts `card` in the ICC slot.
    pub fn with_icc(mut self, card: SimCard) -> Self {
        self.icc = Some(card);
        self
    }

    /// The demo OBU (`cardd_sim::demo::demo_obu`) with the demo ETC card in its slot.
    pub fn demo() -> Self {
        SimProgrammerConfig::new(cardd_sim::demo::demo_obu())
            .with_icc(cardd_sim::demo::demo_etc_card())
    }
}

/// What the simulated device has seen and done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Well-formed frames received.
    pub frames_received: u64,
    /// Broken frames received (each was NAKed).
    pub bad_frames_received: u64,
    /// APDUs that reached a card (ESAM or ICC). Replays do not count.
    pub apdus_executed: u64,
    /// Retransmitted commands answered from memory.
    pub replays: u64,
    /// Frames dropped while silent.
    pub frames_ignored: u64,
    /// Unsolicited EVENT frames sent.
    pub events_sent: u64,
}

#[derive(Debug, Default)]
struct Faults {
    /// Replies still to send with a wrong BCC.
    corrupt_replies: u32,
    garbage: Vec<u8>,
    nak_next_command: bool,
    delay_next_reply: Option<Duration>,
    silent: bool,
    /// `Some(executed)`: pull the ICC during the next ICC APDU, after (`true`) or before it ran.
    remove_during_next: Option<bool>,
    esam_error_next: bool,
}

#[derive(Debug)]
struct SimState {
    esam: Option<SimCard>,
    icc: Option<SimCard>,
    icc_powered: bool,
    /// A card pulled mid-command, waiting to be put back.
    pocket: Option<SimCard>,
    changes: u8,
    faults: Faults,
    /// The last executed command frame and its (uncorrupted) reply frame.
    last: Option<(Frame, Frame)>,
    stats: SimStats,
}

impl SimState {
    fn slot_status(&self) -> SlotStatus {
        let (icc, atr) = match &self.icc {
            None => (IccState::Absent, Vec::new()),
            Some(_) if !self.icc_powered => (IccState::Present, Vec::new()),
            Some(card) => (IccState::Powered, card.atr()),
        };
        SlotStatus {
            obu_present: self.esam.is_some(),
            icc,
            changes: self.changes,
            atr,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<SimState>,
    /// The master side for writing; `None` once the device disappeared. Lock order: state,
    /// then writer.
    writer: Mutex<Option<TTYPort>>,
    stop: AtomicBool,
    info: DeviceInfo,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// Writes `frame` after any queued garbage, with a broken BCC when asked to.
    fn send(&self, state: &mut SimState, frame: &Frame) {
        let bcc = if state.faults.corrupt_replies > 0 {
            state.faults.corrupt_replies -= 1;
            frame.bcc() ^ 0x01
        } else {
            frame.bcc()
        };
        let mut bytes = std::mem::take(&mut state.faults.garbage);
        match encode_with_bcc(frame.rsctl, frame.cmd, &frame.data, bcc) {
            Ok(encoded) => bytes.extend_from_slice(&encoded),
            Err(e) => {
                tracing::warn!("simulated programmer cannot encode a reply: {e}");
                return;
            }
        }
        if let Some(port) = lock(&self.writer).as_mut() {
            if let Err(e) = port.write_all(&bytes) {
                tracing::debug!("simulated programmer: write failed: {e}");
            }
        }
    }

    fn send_event(&self, state: &mut SimState) {
        if state.faults.silent {
            return;
        }
        state.stats.events_sent += 1;
        let frame = state.slot_status().to_event_frame();
        self.send(state, &frame);
    }

    fn handle(&self, item: Result<Frame, FrameError>) {
        let mut state = lock(&self.state);
        if state.faults.silent {
            state.stats.frames_ignored += 1;
            return;
        }
        let frame = match item {
            Ok(frame) => frame,
            Err(_) => {
                state.stats.bad_frames_received += 1;
                self.send(&mut state, &Reply::nak().to_frame(RSCTL_NAK));
                return;
            }
        };
        state.stats.frames_received += 1;
        if std::mem::take(&mut state.faults.nak_next_command) {
            self.send(&mut state, &Reply::nak().to_frame(RSCTL_NAK));
            return;
        }
        if frame.cmd != code::HELLO {
            if let Some((request, reply)) = &state.last {
                if *request == frame {
                    let reply = reply.clone();
                    state.stats.replays += 1;
                    self.send(&mut state, &reply);
                    return;
                }
            }
        }
        let reply = self.execute(&mut state, &frame).to_frame(frame.rsctl);
        state.last = (frame.cmd != code::HELLO).then(|| (frame, reply.clone()));
        if let Some(delay) = state.faults.delay_next_reply.take() {
            drop(state);
            std::thread::sleep(delay);
            state = lock(&self.state);
        }
        self.send(&mut state, &reply);
    }

    fn execute(&self, state: &mut SimState, frame: &Frame) -> Reply {
        let code = reply_code(frame.cmd);
        let reply = |status, body: Vec<u8>| Reply::new(code, status, body);
        let request = match Request::from_frame(frame) {
            Ok(r) => r,
            Err(ProtocolError::UnknownCommand(_)) => return reply(Status::UnknownCommand, vec![]),
            Err(_) => return reply(Status::BadParameter, vec![]),
        };
        match request {
            Request::Hello { version } => {
                let body = self.info.encode().unwrap_or_default();
                let status = if version == PROTOCOL_VERSION {
                    Status::Ok
                } else {
                    Status::BadParameter
                };
                reply(status, body)
            }
            Request::Status => reply(Status::Ok, state.slot_status().encode()),
            Request::PowerOn(Target::Icc) => match state.icc.as_mut() {
                None => reply(Status::NoCard, vec![]),
                Some(card) => {
                    card.reset();
                    let atr = card.atr();
                    state.icc_powered = true;
                    reply(Status::Ok, atr)
                }
            },
            Request::PowerOn(Target::Esam) => {
                if std::mem::take(&mut state.faults.esam_error_next) {
                    return reply(Status::EsamError, vec![]);
                }
                match state.esam.as_mut() {
                    None => reply(Status::NoCard, vec![]),
                    Some(esam) => {
                        esam.reset();
                        reply(Status::Ok, esam.atr())
                    }
                }
            }
            Request::PowerOff(target) => {
                let card = match target {
                    Target::Icc => {
                        state.icc_powered = false;
                        state.icc.as_mut()
                    }
                    Target::Esam => state.esam.as_mut(),
                };
                if let Some(card) = card {
                    card.reset();
                }
                reply(Status::Ok, vec![])
            }
            Request::Apdu {
                target: Target::Esam,
                apdu,
            } => {
                if std::mem::take(&mut state.faults.esam_error_next) {
                    return reply(Status::EsamError, vec![]);
                }
                match state.esam.as_mut() {
                    None => reply(Status::NoCard, vec![]),
                    Some(esam) => {
                        let response = esam.process(&apdu);
                        state.stats.apdus_executed += 1;
                        reply(Status::Ok, response)
                    }
                }
            }
            Request::Apdu {
                target: Target::Icc,
                apdu,
            } => {
                if state.icc.is_none() {
                    return reply(Status::NoCard, vec![]);
                }
                if !state.icc_powered {
                    if let Some(card) = state.icc.as_mut() {
                        card.reset();
                    }
                    state.icc_powered = true;
                }
                if let Some(executed) = state.faults.remove_during_next.take() {
                    if executed {
                        if let Some(card) = state.icc.as_mut() {
                            let _ = card.process(&apdu);
                            state.stats.apdus_executed += 1;
                        }
                    }
                    if let Some(mut card) = state.icc.take() {
                        card.reset();
                        state.pocket = Some(card);
                    }
                    state.icc_powered = false;
                    state.changes = state.changes.wrapping_add(1);
                    self.send_event(state);
                    return reply(Status::CardRemoved, vec![]);
                }
                match state.icc.as_mut() {
                    Some(card) => {
                        let response = card.process(&apdu);
                        state.stats.apdus_executed += 1;
                        reply(Status::Ok, response)
                    }
                    None => reply(Status::NoCard, vec![]),
                }
            }
        }
    }
}

/// The serving thread: decode what the host sends, answer it, stop when told.
fn serve(mut port: TTYPort, inner: &Inner) {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    let slice = Duration::from_millis(SIM_READ_SLICE_MS);
    while !inner.stop.load(Ordering::Acquire) {
        match port.read(&mut buf) {
            Ok(0) => std::thread::sleep(slice),
            Ok(n) => {
                for item in decoder.feed(buf.get(..n).unwrap_or_default()) {
                    inner.handle(item);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            // No slave open (cannot happen while we hold one) or a transient error: do not spin.
            Err(_) => std::thread::sleep(slice),
        }
    }
}

/// A simulated OBU programmer on the master side of a pty; open [`SimProgrammer::path`] with the
/// serial driver. Dropping it is [`SimProgrammer::disappear`].
#[derive(Debug)]
pub struct SimProgrammer {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    path: String,
    /// Held open so the slave exists between driver sessions (Linux hangs a pty up when its
    /// last slave closes); never read.
    keepalive: Option<TTYPort>,
}

impl SimProgrammer {
    /// Starts a programmer with `esam` in its OBU and `icc` in the OBU's slot.
    pub fn start(esam: SimCard, icc: Option<SimCard>) -> Result<SimProgrammer, SimProgrammerError> {
        let mut config = SimProgrammerConfig::new(esam);
        config.icc = icc;
        SimProgrammer::with_config(config)
    }

    /// Starts a programmer as `config` describes.
    pub fn with_config(config: SimProgrammerConfig) -> Result<SimProgrammer, SimProgrammerError> {
        let info = DeviceInfo {
            version: PROTOCOL_VERSION,
            serial_number: config.serial_number,
            model: config.model,
            firmware: config.firmware,
        };
        info.encode().map_err(SimProgrammerError::Identity)?;
        let (mut master, slave) = TTYPort::pair().map_err(SimProgrammerError::Pty)?;
        let path = slave.name().ok_or(SimProgrammerError::NoPath)?;
        let mut reader = master.try_clone_native().map_err(SimProgrammerError::Pty)?;
        reader
            .set_timeout(Duration::from_millis(SIM_READ_SLICE_MS))
            .map_err(SimProgrammerError::Pty)?;
        master
            .set_timeout(Duration::from_millis(SIM_WRITE_TIMEOUT_MS))
            .map_err(SimProgrammerError::Pty)?;
        let icc_powered = config.icc.is_some();
        let inner = Arc::new(Inner {
            state: Mutex::new(SimState {
                esam: config.esam,
                icc: config.icc,
                icc_powered,
                pocket: None,
                changes: 0,
                faults: Faults::default(),
                last: None,
                stats: SimStats::default(),
            }),
            writer: Mutex::new(Some(master)),
            stop: AtomicBool::new(false),
            info,
        });
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("cardd-serial sim programmer".into())
            .spawn(move || serve(reader, &thread_inner))
            .map_err(SimProgrammerError::Thread)?;
        Ok(SimProgrammer {
            inner,
            thread: Some(thread),
            path,
            keepalive: Some(slave),
        })
    }

    /// The device path to configure the driver with (`/dev/pts/N`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What HELLO reports.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// Counters of what the device saw and did.
    pub fn stats(&self) -> SimStats {
        lock(&self.inner.state).stats
    }

    /// Runs `f` on the ESAM (inspect it, queue randomness); `None` when no OBU is connected.
    /// `f` runs with the device locked: it must not call this programmer's methods.
    pub fn with_esam<R>(&self, f: impl FnOnce(Option<&mut SimCard>) -> R) -> R {
        f(lock(&self.inner.state).esam.as_mut())
    }

    /// Runs `f` on the card in the ICC slot, if any (with the device locked, as `with_esam`).
    pub fn with_icc<R>(&self, f: impl FnOnce(Option<&mut SimCard>) -> R) -> R {
        f(lock(&self.inner.state).icc.as_mut())
    }

    /// Pulls the ETC card out of the OBU (an EVENT frame follows). `None` when the slot was empty.
    pub fn remove_card(&self) -> Option<SimCard> {
        let mut state = lock(&self.inner.state);
        let mut card = state.icc.take()?;
        card.reset();
        state.icc_powered = false;
        state.changes = state.changes.wrapping_add(1);
        self.inner.send_event(&mut state);
        Some(card)
    }

    /// Puts `card` in the OBU's slot, powered (an EVENT frame with its ATR follows). Gives the
    /// card back when the slot is taken.
    pub fn insert_card(&self, mut card: SimCard) -> Result<(), Box<SimCard>> {
        let mut state = lock(&self.inner.state);
        if state.icc.is_some() {
            return Err(Box::new(card));
        }
        card.reset();
        state.icc = Some(card);
        state.icc_powered = true;
        state.changes = state.changes.wrapping_add(1);
        self.inner.send_event(&mut state);
        Ok(())
    }

    /// The card pulled by [`SimProgrammer::remove_card_during_next_command`], once pulled.
    pub fn take_pocket(&self) -> Option<SimCard> {
        lock(&self.inner.state).pocket.take()
    }

    /// Pulls the ICC during the next APDU sent to it; the reply is "card removed". With
    /// `executed` the card ran the APDU before leaving (its effect happened), else it did not.
    /// The card goes to the pocket ([`SimProgrammer::take_pocket`]).
    pub fn remove_card_during_next_command(&self, executed: bool) {
        lock(&self.inner.state).faults.remove_during_next = Some(executed);
    }

    /// Sends the next reply (or replay, or event) with a wrong BCC.
    pub fn corrupt_next_reply(&self) {
        self.corrupt_next_replies(1);
    }

    /// Sends the next `count` frames (replies, replays, events) with a wrong BCC.
    pub fn corrupt_next_replies(&self, count: u32) {
        lock(&self.inner.state).faults.corrupt_replies = count;
    }

    /// Answers the next well-formed command with a NAK as if it had arrived broken (it is not
    /// executed).
    pub fn nak_next_command(&self) {
        lock(&self.inner.state).faults.nak_next_command = true;
    }

    /// Executes the next command at once but holds its reply back for `delay` (a slow card, or
    /// a reply that arrives after the host gave up).
    pub fn delay_next_reply(&self, delay: Duration) {
        lock(&self.inner.state).faults.delay_next_reply = Some(delay);
    }

    /// Sends `bytes` just before the next frame (at most [`SIM_GARBAGE_BYTES_MAX`] queued).
    pub fn inject_garbage(&self, bytes: &[u8]) {
        let mut state = lock(&self.inner.state);
        let room = SIM_GARBAGE_BYTES_MAX.saturating_sub(state.faults.garbage.len());
        let take = bytes.len().min(room);
        state
            .faults
            .garbage
            .extend_from_slice(bytes.get(..take).unwrap_or_default());
    }

    /// Answers the next ESAM command (APDU or power-on) with "ESAM error".
    pub fn esam_error_next_command(&self) {
        lock(&self.inner.state).faults.esam_error_next = true;
    }

    /// Stops answering anything (frames are read and dropped, no events) until [`SimProgrammer::wake`].
    pub fn go_silent(&self) {
        lock(&self.inner.state).faults.silent = true;
    }

    /// Ends [`SimProgrammer::go_silent`].
    pub fn wake(&self) {
        lock(&self.inner.state).faults.silent = false;
    }

    /// Whether the device was made to disappear.
    pub fn is_gone(&self) -> bool {
        lock(&self.inner.writer).is_none()
    }

    /// Closes the device end for good, as unplugging a USB programmer does: the driver's port
    /// hangs up and the pty's path vanishes. Returns once every descriptor is closed.
    pub fn disappear(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        lock(&self.inner.writer).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.keepalive.take();
    }
}

impl Drop for SimProgrammer {
    fn drop(&mut self) {
        self.disappear();
    }
}
