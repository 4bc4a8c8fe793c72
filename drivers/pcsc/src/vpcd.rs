//! A bridge that serves a simulated card ([`cardd_sim::SimCard`]) to vsmartcard's `vpcd`, so a
//! real `pcscd` sees a real-looking card in its `Virtual PCD 00 00` reader.
//!
//! Why: the PC/SC driver has to be tested against the real pcsc-lite stack (its error codes,
//! its event handling, its locking), not against a mock of it. vpcd is an IFD handler that
//! listens on TCP (port 35963 for its first slot); whatever connects is "the card". This module
//! is that card: it connects, answers vpcd's control codes and runs every command APDU through
//! a `SimCard`. A test drives it as a person drives a card: [`VpcdBridge::insert`] connects,
//! [`VpcdBridge::remove`] disconnects, and [`VpcdBridge::fault_on`] arranges a removal in the
//! middle of a command (before or after the card executed it) or a card that never answers.
//! [`VpcdBridge::card`] returns the card's state afterwards, which is the ground truth for
//! money tests.
//!
//! The wire protocol, both directions: a 2-byte big-endian length, then that many bytes. From
//! vpcd, a 1-byte message is a control code (`00` power off, `01` power on, `02` reset, `04` send
//! the ATR; only `04` is answered); anything longer is a command APDU, answered with the
//! response APDU. vpcd asks for the ATR on every presence poll of pcscd (about every 400 ms), so
//! a connected bridge sees a steady trickle of `04`.
//!
//! Latency: vpcd writes the length and the payload as two segments. Without `TCP_NODELAY` on
//! our side and `TCP_QUICKACK` re-armed before every read, Nagle's algorithm and delayed ACKs
//! cost about 40 ms per APDU; with both, a round trip through pcscd costs well under a
//! millisecond.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cardd_sim::SimCard;

/// The TCP port of vpcd's first slot (`Virtual PCD 00 00`), 0x8C7B; the second slot is +1.
pub const VPCD_PORT_DEFAULT: u16 = 35_963;
/// Most bytes one vpcd message may carry (its length prefix is 16 bits).
pub const VPCD_MESSAGE_BYTES_MAX: usize = 0xFFFF;
/// How long [`VpcdBridge::insert`] waits for vpcd to ask for the ATR (it polls every ~400 ms).
pub const INSERT_WAIT_MS: u64 = 5_000;
/// How long connecting to vpcd may take.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// How long [`VpcdBridge::remove`] waits for the serving thread to finish.
pub const REMOVE_WAIT_MS: u64 = 2_000;
/// Shortest time a removed card stays out before [`VpcdBridge::insert`] puts it back: more
/// than two of pcscd's 400 ms presence polls. A card back within one poll is never seen to
/// leave by pcscd's event thread, and after a removal during a command (which pcscd records
/// directly as "absent") pcscd would then keep the reader empty for good. No hand is faster.
pub const OUT_MS_MIN: u64 = 1_000;
/// Most vpcd slots whose last removal time is remembered.
const SLOTS_TRACKED_MAX: usize = 64;

const CTRL_POWER_OFF: u8 = 0x00;
const CTRL_POWER_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_ATR: u8 = 0x04;

/// What the bridge can do to a command instead of answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeFault {
    /// Drop the connection when the command arrives, before the card sees it (the card left
    /// the reader just before the command reached it: nothing changed on the card).
    RemoveBeforeExec,
    /// Let the card execute the command, then drop the connection without answering (the card
    /// left after doing the work but before its answer got out: the change is on the card).
    RemoveAfterExec,
    /// Read the command and never answer (a silent card). [`VpcdBridge::remove`] ends it.
    Hold,
}

/// Which command a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApduMatch {
    /// The next command APDU, whatever it is.
    Next,
    /// The next command APDU with this instruction byte (e.g. `0x52`, CREDIT FOR LOAD).
    Ins(u8),
}

impl ApduMatch {
    fn matches(self, apdu: &[u8]) -> bool {
        match self {
            ApduMatch::Next => true,
            ApduMatch::Ins(ins) => apdu.get(1) == Some(&ins),
        }
    }
}

/// What went wrong in the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpcdError {
    /// Connecting to vpcd failed: pcscd is not running, or vpcd is not configured.
    #[error("cannot connect to vpcd at {addr}: {source} (is pcscd running with vsmartcard-vpcd installed?)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// vpcd accepted the connection but did not ask for the ATR in time.
    #[error("vpcd at {addr} did not ask for the card's ATR within {waited_ms} ms (another card already in that slot?)")]
    NotSeen { addr: SocketAddr, waited_ms: u64 },
    /// The socket could not be configured or the serving thread could not start.
    #[error("vpcd bridge I/O: {0}")]
    Io(#[from] io::Error),
    /// The card's state could not be saved.
    #[error("saving the card to {path}: {detail}")]
    Save { path: PathBuf, detail: String },
}

/// What a test or the binary can see of the bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Command APDUs received (answered or not).
    pub apdus: u64,
    /// ATR requests (`04`) received: vpcd's presence polls plus power-ups.
    pub atr_requests: u64,
    /// Power on, power off and reset control codes received.
    pub power_events: u64,
    /// A command is being held unanswered ([`BridgeFault::Hold`]).
    pub holding: bool,
    /// The connection to vpcd is up.
    pub connected: bool,
    /// Why the last connection ended, when it ended on its own.
    pub last_end: Option<String>,
}

struct State {
    card: SimCard,
    fault: Option<(ApduMatch, BridgeFault)>,
    stats: BridgeStats,
    state_file: Option<PathBuf>,
    save_error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Connection {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

/// A simulated card that connects to vpcd. Dropping the bridge removes the card.
pub struct VpcdBridge {
    addr: SocketAddr,
    shared: Arc<Shared>,
    connection: Option<Connection>,
}

impl std::fmt::Debug for VpcdBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpcdBridge")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl VpcdBridge {
    /// A bridge holding `card`, for vpcd's first slot on this machine; not inserted yet.
    pub fn new(card: SimCard) -> Self {
        VpcdBridge {
            addr: SocketAddr::from(([127, 0, 0, 1], VPCD_PORT_DEFAULT)),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    card,
                    fault: None,
                    stats: BridgeStats::default(),
                    state_file: None,
                    save_error: None,
                }),
                changed: Condvar::new(),
            }),
            connection: None,
        }
    }

    /// Connects to another vpcd address (another slot: port + 1).
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Saves the card as JSON to `path` after every command, so it outlives the process.
    pub fn with_state_file(self, path: impl Into<PathBuf>) -> Self {
        self.shared.lock().state_file = Some(path.into());
        self
    }

    /// The vpcd address this bridge connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Inserts the card: connects to vpcd and returns once vpcd has asked for the ATR (vpcd
    /// accepted the card at pcscd's presence poll; pcscd's event thread registers it right
    /// after: `PcscFactory::wait_for_card` with the event counter tells when). A card removed
    /// from this slot less than [`OUT_MS_MIN`] ago is first kept out for the rest of that time.
    /// A card already inserted is left as it is.
    pub fn insert(&mut self) -> Result<(), VpcdError> {
        self.reap_ended();
        if self.connection.is_some() {
            return Ok(());
        }
        if let Some(since) = left_at(self.addr) {
            let out_min = Duration::from_millis(OUT_MS_MIN);
            std::thread::sleep(out_min.saturating_sub(since.elapsed()));
        }
        let stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(CONNECT_TIMEOUT_MS))
                .map_err(|source| VpcdError::Connect {
                    addr: self.addr,
                    source,
                })?;
        stream.set_nodelay(true)?;
        let reader = stream.try_clone()?;
        let atr_requests_before = {
            let mut state = self.shared.lock();
            state.stats.connected = true;
            state.stats.holding = false;
            state.stats.last_end = None;
            state.card.reset();
            state.stats.atr_requests
        };
        let shared = self.shared.clone();
        let addr = self.addr;
        let thread = std::thread::Builder::new()
            .name("vpcd-bridge".into())
            .spawn(move || serve(reader, addr, &shared))?;
        self.connection = Some(Connection { stream, thread });
        let seen = self.wait_for(Duration::from_millis(INSERT_WAIT_MS), |s| {
            s.stats.atr_requests > atr_requests_before || !s.stats.connected
        });
        let connected = self.shared.lock().stats.connected;
        if !seen || !connected {
            self.remove();
            return Err(VpcdError::NotSeen {
                addr: self.addr,
                waited_ms: INSERT_WAIT_MS,
            });
        }
        Ok(())
    }

    /// Removes the card: closes the connection (vpcd reports the card gone at its next poll or
    /// at once to a command in flight) and waits for the serving thread. Harmless when out.
    pub fn remove(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.stream.shutdown(Shutdown::Both);
            let deadline = Instant::now() + Duration::from_millis(REMOVE_WAIT_MS);
            while !connection.thread.is_finished() && Instant::now() < deadline {
                let state = self.shared.lock();
                let _ = self
                    .shared
                    .changed
                    .wait_timeout(state, Duration::from_millis(20));
            }
            if connection.thread.is_finished() {
                let _ = connection.thread.join();
            }
        }
        let mut state = self.shared.lock();
        if state.stats.connected {
            note_left(self.addr);
        }
        state.stats.connected = false;
        state.stats.holding = false;
        self.shared.changed.notify_all();
    }

    /// Whether the card is connected to vpcd now (a fault may have removed it).
    pub fn is_inserted(&self) -> bool {
        self.shared.lock().stats.connected
    }

    /// Arranges `fault` for the next command that `when` matches (replacing any earlier plan).
    /// A `RemoveBeforeExec`/`RemoveAfterExec` fault leaves the card out: [`insert`] it again.
    ///
    /// [`insert`]: VpcdBridge::insert
    pub fn fault_on(&self, when: ApduMatch, fault: BridgeFault) {
        self.shared.lock().fault = Some((when, fault));
    }

    /// Cancels a planned fault that has not fired.
    pub fn clear_fault(&self) {
        self.shared.lock().fault = None;
    }

    /// Whether a planned fault is still waiting for its command.
    pub fn fault_pending(&self) -> bool {
        self.shared.lock().fault.is_some()
    }

    /// A copy of the card as it is now: the ground truth after a test.
    pub fn card(&self) -> SimCard {
        self.shared.lock().card.clone()
    }

    /// Replaces the card (e.g. with a fresh one); takes effect for the next command.
    pub fn set_card(&self, card: SimCard) {
        self.shared.lock().card = card;
    }

    /// Counters and connection state.
    pub fn stats(&self) -> BridgeStats {
        self.shared.lock().stats.clone()
    }

    /// The last error saving the card, if any.
    pub fn save_error(&self) -> Option<String> {
        self.shared.lock().save_error.clone()
    }

    /// Waits until the connection has ended (after a removal fault fired, or vpcd closed it),
    /// at most `timeout`; returns whether it ended.
    pub fn wait_until_out(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| !s.stats.connected)
    }

    /// Waits until a command is held unanswered, at most `timeout`.
    pub fn wait_until_holding(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.stats.holding)
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Forgets a connection whose thread ended by itself (a removal fault, vpcd closing).
    fn reap_ended(&mut self) {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.thread.is_finished())
        {
            if let Some(c) = self.connection.take() {
                let _ = c.thread.join();
            }
        }
    }
}

impl Drop for VpcdBridge {
    fn drop(&mut self) {
        self.remove();
    }
}

/// When a card last left each vpcd slot, process-wide: the slot, not one bridge, is what
/// pcscd polls, so a new bridge on a slot waits for [`OUT_MS_MIN`] after the previous one's
/// card left too.
fn slots_left() -> MutexGuard<'static, BTreeMap<SocketAddr, Instant>> {
    static LEFT: OnceLock<Mutex<BTreeMap<SocketAddr, Instant>>> = OnceLock::new();
    LEFT.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn note_left(addr: SocketAddr) {
    let mut left = slots_left();
    // One entry per slot used; a process uses a handful, but keep the map bounded anyway.
    if left.len() >= SLOTS_TRACKED_MAX && !left.contains_key(&addr) {
        left.clear();
    }
    left.insert(addr, Instant::now());
}

fn left_at(addr: SocketAddr) -> Option<Instant> {
    slots_left().get(&addr).copied()
}

/// Serves one connection until it ends; records why.
fn serve(stream: TcpStream, addr: SocketAddr, shared: &Shared) {
    let end = match serve_messages(&stream, shared) {
        Ok(reason) => reason,
        Err(e) => format!("connection error: {e}"),
    };
    let _ = stream.shutdown(Shutdown::Both);
    note_left(addr);
    let mut state = shared.lock();
    state.stats.connected = false;
    state.stats.holding = false;
    state.stats.last_end = Some(end);
    shared.changed.notify_all();
}

/// What to do after a command arrived.
enum Step {
    Answer(Vec<u8>),
    /// Control codes other than "send the ATR" get no answer.
    Nothing,
    Drop(&'static str),
    Hold,
}

fn serve_messages(stream: &TcpStream, shared: &Shared) -> io::Result<String> {
    let socket = socket2::SockRef::from(stream);
    let mut stream = stream;
    let mut payload = Vec::with_capacity(512);
    loop {
        // Quick-ACK mode decays after a few segments: re-arm it before every read, or the
        // second segment of each vpcd message waits for a delayed ACK (~40 ms).
        socket.set_tcp_quickack(true)?;
        let mut length = [0u8; 2];
        if !read_exact_or_eof(&mut stream, &mut length)? {
            return Ok("vpcd closed the connection".into());
        }
        let length = usize::from(u16::from_be_bytes(length));
        payload.clear();
        payload.resize(length, 0);
        socket.set_tcp_quickack(true)?;
        if !read_exact_or_eof(&mut stream, &mut payload)? {
            return Ok("vpcd closed the connection mid-message".into());
        }
        let step = handle(&payload, shared);
        match step {
            Step::Answer(bytes) => {
                if bytes.len() > VPCD_MESSAGE_BYTES_MAX {
                    return Ok(format!(
                        "an answer of {} bytes does not fit a vpcd message",
                        bytes.len()
                    ));
                }
                let mut frame = Vec::with_capacity(bytes.len() + 2);
                frame.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                frame.extend_from_slice(&bytes);
                stream.write_all(&frame)?;
            }
            Step::Nothing => {}
            Step::Drop(why) => return Ok(why.into()),
            Step::Hold => {
                // Nothing more arrives until we answer; wait for remove() to close the socket.
                let mut scratch = [0u8; 64];
                while stream.read(&mut scratch)? != 0 {}
                return Ok("removed while holding a command".into());
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the peer closed first.
fn read_exact_or_eof(stream: &mut &TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    match stream.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs one message from vpcd against the card.
fn handle(payload: &[u8], shared: &Shared) -> Step {
    let mut state = shared.lock();
    let step = match payload {
        [] => Step::Nothing,
        [CTRL_ATR] => {
            state.stats.atr_requests += 1;
            Step::Answer(state.card.atr())
        }
        [CTRL_POWER_OFF] | [CTRL_POWER_ON] | [CTRL_RESET] => {
            // A power cycle or reset makes the card forget its volatile state; vpcd expects
            // no answer (it asks for the ATR separately).
            state.stats.power_events += 1;
            state.card.reset();
            Step::Nothing
        }
        [code] => {
            tracing::debug!(code, "vpcd sent an unknown control code; ignored");
            Step::Nothing
        }
        apdu => {
            state.stats.apdus += 1;
            let fault = match state.fault {
                Some((when, fault)) if when.matches(apdu) => {
                    state.fault = None;
                    Some(fault)
                }
                _ => None,
            };
            match fault {
                Some(BridgeFault::RemoveBeforeExec) => {
                    Step::Drop("removed before the card saw the command")
                }
                Some(BridgeFault::RemoveAfterExec) => {
                    let _ = state.card.process(apdu);
                    save(&mut state);
                    Step::Drop("removed after the card executed the command")
                }
                Some(BridgeFault::Hold) => {
                    state.stats.holding = true;
                    Step::Hold
                }
                None => {
                    let response = state.card.process(apdu);
                    save(&mut state);
                    Step::Answer(response)
                }
            }
        }
    };
    shared.changed.notify_all();
    step
}

/// Saves the card when a state file is configured; records (does not raise) a failure.
fn save(state: &mut State) {
    if let Some(path) = state.state_file.clone() {
        state.save_error = save_card(&state.card, &path).err().map(|e| e.to_string());
    }
}

/// Writes `card` as JSON to `path` atomically (a temporary file renamed over it).
pub fn save_card(card: &SimCard, path: &Path) -> Result<(), VpcdError> {
    let save_error = |detail: String| VpcdError::Save {
        path: path.to_owned(),
        detail,
    };
    let json = card.to_json().map_err(|e| save_error(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, json).map_err(|e| save_error(e.to_string()))?;
    fs::rename(&tmp, path).map_err(|e| save_error(e.to_string()))
}
