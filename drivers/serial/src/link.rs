//! One open serial port to one programmer: a reader thread, request/reply matching, resends,
//! deadlines and card events.
//!
//! Why a thread: a programmer talks without being asked (card inserted, card removed) and a
//! port can vanish while nobody is sending, so one thread per port reads all the time, decodes
//! frames and files them: replies into an inbox the waiting command takes from, events into a
//! short history that sessions wait on. Commands take turns on the port; several
//! sessions on the same programmer share one `Link` (the factory hands out the same one), which
//! is what lets one session wait for card events while another sends APDUs.
//!
//! Bounds: every exchange ends by its deadline (the caller's timeout, resends included), resends
//! after a corrupted reply or a NAK are counted ([`LinkConfig::retries`]), the inbox and the event
//! history are capped, and the reader thread wakes every [`LINK_READ_SLICE_MS`] to see whether
//! the link was dropped (a wake-up of our own, not a poll of the device).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cardd_reader::{Atr, CardEvent, ReaderError};
use serialport::SerialPort;

use crate::error::SerialError;
use crate::frame::{Decoder, Frame, FrameError};
use crate::protocol::{
    code, next_seq, reply_code, DeviceInfo, IccState, Reply, Request, SlotStatus, Status,
    PROTOCOL_VERSION, RSCTL_EVENT, SEQ_MASK,
};

/// How often the reader thread wakes to check whether its link was dropped, in milliseconds.
pub const LINK_READ_SLICE_MS: u64 = 50;
/// Bytes read from the port at a time.
const READ_CHUNK_BYTES: usize = 512;
/// Most undelivered frames kept for the waiting command (older ones are dropped).
pub const INBOX_FRAMES_MAX: usize = 64;
/// Most card events kept for sessions that have not collected them yet.
pub const EVENTS_KEPT_MAX: usize = 64;

#[cfg(unix)]
pub(crate) type NativePort = serialport::TTYPort;
#[cfg(windows)]
pub(crate) type NativePort = serialport::COMPort;

/// How a link talks to its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkConfig {
    pub baud: u32,
    /// Timeout of HELLO, STATUS and power commands.
    pub command_timeout: Duration,
    /// Resends of one command after a corrupted reply or a NAK.
    pub retries: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the reader thread has filed.
#[derive(Debug, Default)]
struct Inbound {
    frames: VecDeque<Result<Frame, FrameError>>,
    /// Why the port is unusable, once it is.
    gone: Option<String>,
    events: VecDeque<CardEvent>,
    /// Events ever filed (the history holds the last [`EVENTS_KEPT_MAX`]).
    events_total: u64,
    /// The device's ICC change counter as last seen, to drop repeated news.
    last_changes: Option<u8>,
}

impl Inbound {
    /// Files the slot state a device reported (event or STATUS), making a card event when its
    /// change counter moved.
    fn note_slot(&mut self, slot: &SlotStatus) -> bool {
        let moved = self.last_changes.is_some_and(|c| c != slot.changes);
        self.last_changes = Some(slot.changes);
        if !moved {
            return false;
        }
        let event = match (slot.obu_present, slot.icc) {
            (false, _) | (true, IccState::Absent) => CardEvent::Removed,
            (true, _) => CardEvent::Inserted {
                atr: Atr(slot.atr.clone()),
            },
        };
        if self.events.len() >= EVENTS_KEPT_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.events_total += 1;
        true
    }
}

#[derive(Debug, Default)]
struct Shared {
    inbound: Mutex<Inbound>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn deliver(&self, decoded: Vec<Result<Frame, FrameError>>) {
        let mut inbound = lock(&self.inbound);
        for item in decoded {
            match item {
                Ok(frame) if frame.rsctl & RSCTL_EVENT != 0 && frame.cmd == code::EVENT => {
                    match SlotStatus::parse(&frame.data) {
                        Ok(slot) => {
                            inbound.note_slot(&slot);
                        }
                        Err(e) => tracing::debug!("ignoring a malformed event frame: {e}"),
                    }
                }
                other => {
                    if inbound.frames.len() >= INBOX_FRAMES_MAX {
                        inbound.frames.pop_front();
                    }
                    inbound.frames.push_back(other);
                }
            }
        }
        drop(inbound);
        self.changed.notify_all();
    }

    fn mark_gone(&self, reason: String) {
        let mut inbound = lock(&self.inbound);
        if inbound.gone.is_none() {
            inbound.gone = Some(reason);
        }
        drop(inbound);
        self.changed.notify_all();
    }
}

/// The port and the command sequence number, held for the length of one exchange.
#[derive(Debug)]
struct PortState {
    port: NativePort,
    seq: u8,
}

/// Turns for the port: one exchange at a time, and a session waits for its turn no longer
/// than its own deadline (a plain mutex would make it wait out another session's timeout).
#[derive(Debug, Default)]
struct Turn {
    busy: Mutex<bool>,
    freed: Condvar,
}

impl Turn {
    /// Waits until the port is free or `deadline` passes (`None`).
    fn take(&self, deadline: Instant) -> Option<TurnGuard<'_>> {
        let mut busy = lock(&self.busy);
        while *busy {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            busy = self
                .freed
                .wait_timeout(busy, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *busy = true;
        Some(TurnGuard(self))
    }
}

struct TurnGuard<'a>(&'a Turn);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.busy) = false;
        self.0.freed.notify_one();
    }
}

/// One open programmer.
#[derive(Debug)]
pub(crate) struct Link {
    reader_id: String,
    path: String,
    config: LinkConfig,
    turn: Turn,
    /// Only locked while holding a turn, so never contended.
    port: Mutex<PortState>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    info: DeviceInfo,
}

enum Next {
    Item(Result<Frame, FrameError>),
    Gone(String),
    Timeout,
}

impl Link {
    /// Opens `path`, starts the reader thread and shakes hands (HELLO, then STATUS to learn the
    /// ICC change counter).
    pub fn open(reader_id: &str, path: &str, config: LinkConfig) -> Result<Link, ReaderError> {
        let driver_error = |source: SerialError| ReaderError::driver(reader_id, source);
        let port = serialport::new(path, config.baud)
            .timeout(config.command_timeout)
            .open_native()
            .map_err(|source| open_error(reader_id, path, source))?;
        // Whatever the device said before we opened is stale.
        let _ = port.clear(serialport::ClearBuffer::Input);
        let mut reader = port.try_clone_native().map_err(|e| {
            driver_error(SerialError::Setup {
                path: path.to_owned(),
                detail: e.to_string(),
            })
        })?;
        reader
            .set_timeout(Duration::from_millis(LINK_READ_SLICE_MS))
            .map_err(|e| {
                driver_error(SerialError::Setup {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })
            })?;
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread_id = reader_id.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("cardd-serial {reader_id}"))
            .spawn(move || read_loop(reader, &thread_shared, &thread_id))
            .map_err(|e| {
                driver_error(SerialError::Setup {
                    path: path.to_owned(),
                    detail: format!("cannot start the reader thread: {e}"),
                })
            })?;
        let mut link = Link {
            reader_id: reader_id.to_owned(),
            path: path.to_owned(),
            config,
            turn: Turn::default(),
            port: Mutex::new(PortState {
                port,
                // The first command (HELLO) gets sequence number 0.
                seq: SEQ_MASK,
            }),
            shared,
            thread: Some(thread),
            info: DeviceInfo::default(),
        };
        let hello = link.exchange(
            &Request::Hello {
                version: PROTOCOL_VERSION,
            },
            config.command_timeout,
        )?;
        let info = DeviceInfo::parse(&hello.body).map_err(|e| link.protocol(e.to_string()))?;
        if hello.status != Status::Ok || info.version != PROTOCOL_VERSION {
            return Err(driver_error(SerialError::VersionMismatch {
                device: info.version,
                driver: PROTOCOL_VERSION,
            }));
        }
        link.info = info;
        let status = link.status(config.command_timeout)?;
        tracing::info!(
            reader = %link.reader_id,
            path = %link.path,
            serial_number = %link.info.serial_number,
            model = %link.info.model,
            firmware = %link.info.firmware,
            icc = ?status.icc,
            "OBU programmer opened"
        );
        Ok(link)
    }

    /// What the device said about itself at HELLO.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn config(&self) -> LinkConfig {
        self.config
    }

    /// True once the port failed; a gone link never comes back (open a new one).
    pub fn is_gone(&self) -> bool {
        lock(&self.shared.inbound).gone.is_some()
    }

    fn gone(&self) -> ReaderError {
        ReaderError::ReaderGone {
            reader: self.reader_id.clone(),
        }
    }

    fn protocol(&self, detail: String) -> ReaderError {
        ReaderError::Protocol {
            reader: self.reader_id.clone(),
            detail,
        }
    }

    /// Asks for the slot state and files it (a change the events missed becomes an event).
    pub fn status(&self, timeout: Duration) -> Result<SlotStatus, ReaderError> {
        let reply = self.exchange(&Request::Status, timeout)?;
        if reply.status != Status::Ok {
            return Err(ReaderError::driver(
                &self.reader_id,
                SerialError::Rejected {
                    command: code::STATUS,
                    status: reply.status,
                },
            ));
        }
        let slot = SlotStatus::parse(&reply.body).map_err(|e| self.protocol(e.to_string()))?;
        let moved = lock(&self.shared.inbound).note_slot(&slot);
        if moved {
            self.shared.changed.notify_all();
        }
        Ok(slot)
    }

    /// Sends `request` and returns its reply, resending after a corrupted reply or a NAK, all
    /// within `timeout`.
    pub fn exchange(&self, request: &Request, timeout: Duration) -> Result<Reply, ReaderError> {
        let deadline = Instant::now() + timeout;
        let Some(_turn) = self.turn.take(deadline) else {
            return Err(ReaderError::Busy {
                reader: self.reader_id.clone(),
                holder: format!(
                    "another session on this programmer (its command outlasted this one's {} ms)",
                    millis(timeout)
                ),
            });
        };
        let mut port = lock(&self.port);
        let seq = next_seq(port.seq);
        port.seq = seq;
        let bytes = request
            .to_frame(seq)
            .encode()
            .map_err(|e| self.protocol(format!("cannot send the command: {e}")))?;
        {
            let mut inbound = lock(&self.shared.inbound);
            if inbound.gone.is_some() {
                return Err(self.gone());
            }
            // Replies to earlier commands that timed out are of no use now.
            inbound.frames.clear();
        }
        self.send(&mut port, &bytes, deadline, timeout)?;
        let expected = reply_code(request.code());
        let mut resends = 0u32;
        loop {
            let resend_reason = match self.next_inbound(deadline) {
                Next::Gone(reason) => {
                    tracing::warn!(reader = %self.reader_id, path = %self.path, "programmer gone: {reason}");
                    return Err(self.gone());
                }
                Next::Timeout => {
                    return Err(ReaderError::Timeout {
                        reader: self.reader_id.clone(),
                        timeout_ms: millis(timeout),
                    })
                }
                Next::Item(Ok(frame)) if frame.rsctl == seq && frame.cmd == expected => {
                    return Reply::from_frame(&frame).map_err(|e| self.protocol(e.to_string()));
                }
                Next::Item(Ok(frame)) if frame.cmd == code::NAK => {
                    "the device received the command broken (NAK)".to_owned()
                }
                Next::Item(Ok(frame)) => {
                    tracing::debug!(
                        reader = %self.reader_id,
                        rsctl = frame.rsctl,
                        cmd = frame.cmd,
                        "ignoring a stale or unexpected frame"
                    );
                    continue;
                }
                Next::Item(Err(e)) => format!("a reply arrived broken ({e})"),
            };
            if resends >= self.config.retries {
                return Err(
                    self.protocol(format!("{resend_reason}; gave up after {resends} resends"))
                );
            }
            resends += 1;
            tracing::debug!(reader = %self.reader_id, seq, resends, "{resend_reason}; resending");
            // A resend is the identical frame: the device answers it from its memory if it
            // already executed the command, so nothing runs twice.
            self.send(&mut port, &bytes, deadline, timeout)?;
        }
    }

    fn send(
        &self,
        port: &mut PortState,
        bytes: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), ReaderError> {
        let timed_out = || ReaderError::Timeout {
            reader: self.reader_id.clone(),
            timeout_ms: millis(timeout),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        if let Err(e) = port.port.set_timeout(remaining) {
            tracing::debug!(reader = %self.reader_id, "cannot set the write timeout: {e}");
        }
        match port.port.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(timed_out()),
            Err(e) => {
                self.shared.mark_gone(format!("write failed: {e}"));
                tracing::warn!(reader = %self.reader_id, path = %self.path, "programmer gone: write failed: {e}");
                Err(self.gone())
            }
        }
    }

    fn next_inbound(&self, deadline: Instant) -> Next {
        let mut inbound = lock(&self.shared.inbound);
        loop {
            if let Some(item) = inbound.frames.pop_front() {
                return Next::Item(item);
            }
            if let Some(reason) = &inbound.gone {
                return Next::Gone(reason.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Timeout;
            }
            inbound = self
                .shared
                .changed
                .wait_timeout(inbound, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// The number of card events filed so far: a new session's starting point.
    pub fn event_cursor(&self) -> u64 {
        lock(&self.shared.inbound).events_total
    }

    /// The next card event after `cursor`, waiting at most `timeout` (`Ok(None)` when none
    /// came). A session that fell more than [`EVENTS_KEPT_MAX`] events behind skips to the
    /// oldest one kept.
    pub fn wait_event(
        &self,
        cursor: &mut u64,
        timeout: Duration,
    ) -> Result<Option<CardEvent>, ReaderError> {
        let deadline = Instant::now() + timeout;
        let mut inbound = lock(&self.shared.inbound);
        loop {
            if inbound.events_total > *cursor {
                let oldest = inbound.events_total - inbound.events.len() as u64;
                let at = (*cursor).max(oldest);
                let event = usize::try_from(at - oldest)
                    .ok()
                    .and_then(|i| inbound.events.get(i))
                    .cloned();
                *cursor = at + 1;
                if let Some(event) = event {
                    return Ok(Some(event));
                }
                continue;
            }
            if inbound.gone.is_some() {
                return Err(self.gone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            inbound = self
                .shared
                .changed
                .wait_timeout(inbound, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Closing the port (serialport's own drop) clears TIOCEXCL, so the next session can
        // open the tty even while another process (the simulated programmer) holds it open.
    }
}

/// The reader thread: decode everything, file it, stop on request or when the port fails.
fn read_loop(mut port: NativePort, shared: &Shared, reader_id: &str) {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; READ_CHUNK_BYTES];
    let failure = loop {
        if shared.stop.load(Ordering::Acquire) {
            break None;
        }
        match port.read(&mut buf) {
            Ok(0) => break Some("the port reported end of file".to_owned()),
            Ok(n) => {
                let decoded = decoder.feed(buf.get(..n).unwrap_or_default());
                if !decoded.is_empty() {
                    shared.deliver(decoded);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => break Some(format!("read failed: {e}")),
        }
    };
    if let Some(reason) = failure {
        tracing::debug!(reader = %reader_id, skipped = decoder.skipped_bytes(), "reader thread ends: {reason}");
        shared.mark_gone(reason);
    }
}

/// Maps a failure to open the port onto the reader layer's words.
fn open_error(reader_id: &str, path: &str, source: serialport::Error) -> ReaderError {
    match source.kind() {
        serialport::ErrorKind::NoDevice => ReaderError::Busy {
            reader: reader_id.to_owned(),
            holder: format!("another process ({path} is open exclusively or locked)"),
        },
        serialport::ErrorKind::Io(std::io::ErrorKind::NotFound) => ReaderError::NotFound {
            selector: format!("serial port {path}"),
        },
        _ => ReaderError::driver(
            reader_id,
            SerialError::Open {
                path: path.to_owned(),
                source,
            },
        ),
    }
}
