//! The two driver traits: a stateless [`ReaderFactory`] and a live [`CardReader`] session.
//!
//! The split follows probe-rs: a factory lists and opens readers and holds no session state; a
//! reader is one open session on one slot. Capabilities that only some readers have (a PSAM
//! slot, a channel to an OBU, insert/remove events, exclusive access) are default methods that
//! return `None`, so a driver implements only what its hardware does.
//!
//! The traits are blocking on purpose: every real transport here (pcsc-lite, a serial port, a
//! plugin's pipe) is blocking, and bounding each call with an explicit timeout is simpler to get
//! right than cancellation. The daemon runs each reader session's jobs on a worker thread, and a
//! flow's card calls on the flow's thread, one user at a time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ReaderError;

/// An Answer To Reset.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Atr(pub Vec<u8>);

impl fmt::Debug for Atr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Atr({})", hex::encode_upper(&self.0))
    }
}

impl fmt::Display for Atr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(&self.0))
    }
}

/// The transmission protocol negotiated with the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Character protocol: the reader layer must run `61xx`/`6Cxx` chaining.
    T0,
    /// Block protocol.
    T1,
    /// ISO 14443-4 contactless.
    Contactless,
    /// Whatever a non-ISO transport (an OBU programmer's frames, a plugin) carries.
    Other,
}

/// What a reader can do, for listings made without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Has a contact (ISO 7816-3) slot.
    pub contact: bool,
    /// Has a contactless (ISO 14443) field.
    pub contactless: bool,
    /// Number of PSAM slots.
    pub psam_slots: u8,
    /// Reaches an OBU's ESAM and the ETC card inside it.
    pub obu_channel: bool,
    /// Reports card insertion and removal without polling.
    pub events: bool,
    /// Can lock the card for one client for the length of a flow.
    pub exclusive: bool,
}

/// A reader as a factory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderInfo {
    /// Stable identifier, unique across drivers, e.g. `sim:etc` or `pcsc:Virtual PCD 00 00`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The driver that serves it.
    pub driver: String,
    pub capabilities: Capabilities,
}

/// How configuration or a client names the reader it wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderSelector {
    /// Exactly this [`ReaderInfo::id`].
    Id(String),
    /// The first reader whose name contains this text.
    NameContains(String),
    /// The n-th reader of the factory's listing.
    Index(usize),
}

impl ReaderSelector {
    /// Picks the reader this selector names from a listing.
    pub fn pick<'a>(&self, readers: &'a [ReaderInfo]) -> Option<&'a ReaderInfo> {
        match self {
            ReaderSelector::Id(id) => readers.iter().find(|r| &r.id == id),
            ReaderSelector::NameContains(text) => {
                readers.iter().find(|r| r.name.contains(text.as_str()))
            }
            ReaderSelector::Index(i) => readers.get(*i),
        }
    }
}

impl fmt::Display for ReaderSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReaderSelector::Id(id) => write!(f, "reader id {id:?}"),
            ReaderSelector::NameContains(t) => write!(f, "a reader named like {t:?}"),
            ReaderSelector::Index(i) => write!(f, "reader number {i}"),
        }
    }
}

/// Whether a card is in the reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CardPresence {
    Absent,
    /// Present but not powered.
    Present,
    /// Present and powered, with its ATR.
    Powered {
        atr: Atr,
    },
}

impl CardPresence {
    pub fn is_present(&self) -> bool {
        !matches!(self, CardPresence::Absent)
    }
}

/// One raw exchange: command bytes out, response bytes (data + SW) back. No chaining.
pub trait ApduTransport {
    /// Sends one command and waits at most `timeout` for the response. A driver returns
    /// [`ReaderError::Timeout`] when the time is up and [`ReaderError::CardRemoved`] when the
    /// card leaves mid-command; it never blocks past `timeout` plus a bounded grace.
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError>;

    /// The protocol in use; `T0` makes the reader layer run `61xx`/`6Cxx` chaining.
    fn protocol(&self) -> Protocol;
}

/// A live session on one reader slot.
pub trait CardReader: ApduTransport + Send + fmt::Debug {
    /// What the factory listed for this reader.
    fn info(&self) -> &ReaderInfo;

    /// Cold-resets (powers up) the card and returns its ATR.
    fn power_on(&mut self) -> Result<Atr, ReaderError>;

    /// Powers the card down. Harmless with no card.
    fn power_off(&mut self) -> Result<(), ReaderError>;

    /// Warm-resets the card (after a card-side reset, or to abandon a half-done session).
    fn reset(&mut self) -> Result<Atr, ReaderError>;

    /// The ATR of the powered card, if any.
    fn atr(&self) -> Option<Atr>;

    /// Whether a card is there now.
    fn presence(&mut self) -> Result<CardPresence, ReaderError>;

    /// The card has a contact interface in this reader.
    fn is_contact(&self) -> bool {
        self.info().capabilities.contact
    }

    /// The card is reached contactlessly.
    fn is_contactless(&self) -> bool {
        self.info().capabilities.contactless
    }

    /// PSAM slots, for readers that have them.
    fn psam(&mut self) -> Option<&mut dyn PsamSlots> {
        None
    }

    /// The channel into an OBU (ESAM and the ETC card inside it), for OBU programmers.
    fn obu(&mut self) -> Option<&mut dyn ObuChannel> {
        None
    }

    /// Card insert/remove events without polling, for readers that report them.
    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        None
    }

    /// Exclusive access for the length of a flow, for readers shared between processes.
    fn exclusive(&mut self) -> Option<&mut dyn ExclusiveAccess> {
        None
    }

    /// Notes in the reader's APDU trace what starts using the reader now (an API method, a
    /// flow step). Only the trace recorder (`trace::TracingReader`) and wrappers that pass
    /// calls on implement it; drivers keep the default, which does nothing.
    fn trace_mark(&mut self, context: &str) {
        let _ = context;
    }
}

/// PSAM slots of a reader (security modules used by terminals).
pub trait PsamSlots {
    /// Number of slots.
    fn slot_count(&self) -> u8;
    /// Resets the PSAM in `slot` and returns its ATR.
    fn psam_reset(&mut self, slot: u8) -> Result<Atr, ReaderError>;
    /// Sends one raw command to the PSAM in `slot`.
    fn psam_transmit(
        &mut self,
        slot: u8,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError>;
}

/// Which chip inside an OBU a command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObuTarget {
    /// The OBU's embedded secure module (system and vehicle information).
    Esam,
    /// The ETC user card inserted in the OBU.
    Icc,
}

/// A transparent APDU channel into an OBU.
pub trait ObuChannel {
    /// Sends one raw command to `target` inside the OBU.
    fn obu_transmit(
        &mut self,
        target: ObuTarget,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError>;
}

/// A card insertion or removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum CardEvent {
    Inserted { atr: Atr },
    Removed,
}

/// Insert/remove notification for one reader.
pub trait CardEvents {
    /// Blocks until the card state changes or `timeout` passes (`Ok(None)`). Drivers wait on the
    /// transport's own notification (no busy polling).
    fn wait_for_change(&mut self, timeout: Duration) -> Result<Option<CardEvent>, ReaderError>;

    /// A handle that ends this session's waits from another thread: after
    /// [`WaitStopper::stop`], the wait in progress and every later one return `Ok(None)`. With
    /// one, a watcher can wait long and still stop at once; `None` (the default): waits end
    /// only at their timeout.
    fn stopper(&mut self) -> Option<WaitStopper> {
        None
    }
}

/// Ends a driver's blocking waits ([`CardEvents::stopper`], [`HotplugWatch::stopper`]) from
/// another thread, without blocking the caller.
#[derive(Clone)]
pub struct WaitStopper(Arc<dyn Fn() + Send + Sync>);

impl WaitStopper {
    /// A stopper that runs `stop` (which must not block) when asked.
    pub fn new(stop: impl Fn() + Send + Sync + 'static) -> WaitStopper {
        WaitStopper(Arc::new(stop))
    }

    /// Ends the wait in progress and every later one.
    pub fn stop(&self) {
        (self.0)()
    }
}

impl fmt::Debug for WaitStopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitStopper")
    }
}

/// Exclusive use of a shared reader for a sequence of commands.
pub trait ExclusiveAccess {
    /// Takes the lock, waiting at most `timeout` for another holder to release it.
    fn begin(&mut self, timeout: Duration) -> Result<(), ReaderError>;
    /// Releases the lock. Harmless when not held.
    fn end(&mut self) -> Result<(), ReaderError>;
}

/// A reader appearing or disappearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum HotplugEvent {
    Added { reader: ReaderInfo },
    Removed { reader_id: String },
}

/// Reader hotplug notification for one driver instance.
pub trait HotplugWatch: Send + fmt::Debug {
    /// Blocks until a reader is added or removed, or `timeout` passes (`Ok(None)`).
    fn wait(&mut self, timeout: Duration) -> Result<Option<HotplugEvent>, ReaderError>;

    /// See [`CardEvents::stopper`].
    fn stopper(&mut self) -> Option<WaitStopper> {
        None
    }
}

/// A configured driver instance: lists its readers and opens sessions. Holds no session state.
pub trait ReaderFactory: Send + Sync + fmt::Debug {
    /// The driver's registered name.
    fn driver(&self) -> &str;

    /// The readers attached now.
    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError>;

    /// Opens a session on the selected reader. A card need not be present.
    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError>;

    /// A watch for readers being added and removed, for drivers that support hotplug.
    fn hotplug(&self) -> Option<Box<dyn HotplugWatch>> {
        None
    }

    /// The supervised driver program behind this instance's readers, for drivers that run
    /// one (the plugin driver); `None` for drivers that live in the daemon's process.
    fn supervised(&self) -> Option<&dyn Supervised> {
        None
    }
}

/// Where a supervised driver program is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisedState {
    /// Started; its handshake is not complete yet.
    Starting,
    /// Up; its readers are listed.
    Running,
    /// Lost; waiting out a backoff before the next start.
    Backoff,
    /// The last start failed for a reason only a person can fix (a missing program, a
    /// protocol version mismatch); still retried, at the backoff, in case it is fixed.
    Failed,
    /// The instance was shut down.
    Stopped,
}

impl SupervisedState {
    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisedState::Starting => "starting",
            SupervisedState::Running => "running",
            SupervisedState::Backoff => "backoff",
            SupervisedState::Failed => "failed",
            SupervisedState::Stopped => "stopped",
        }
    }
}

/// A snapshot of a supervised driver program, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisedStatus {
    /// The configured instance name (the `<name>` in the readers' ids).
    pub instance: String,
    pub state: SupervisedState,
    /// Restarts after the first start (crashes, hangs, failed starts, operator restarts).
    pub restarts: u64,
    /// The wait before the next start while in `backoff` or `failed`, else 0.
    pub backoff_ms: u64,
    /// Lines the program sent that were not valid messages, over the instance's life.
    pub malformed_lines: u64,
    /// Why the last run ended or the last start failed, with what to do next.
    pub last_error: Option<String>,
    /// What the program called itself in its handshake.
    pub name: Option<String>,
    pub version: Option<String>,
    /// Optional protocol features the program declared in its handshake.
    pub features: Vec<String>,
    /// Readers listed now.
    pub readers: usize,
}

/// A driver program supervised by cardd (see [`ReaderFactory::supervised`]).
pub trait Supervised: Send + Sync {
    /// State, counters and last error now.
    fn status(&self) -> SupervisedStatus;

    /// Kills the program (if it runs) and starts it again at once, without waiting for the
    /// backoff; `reason` goes to the log and to `last_error`. Its readers are announced
    /// removed, then added when it is back.
    fn restart_now(&self, reason: &str);
}
