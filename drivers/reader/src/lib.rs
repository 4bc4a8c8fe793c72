//! The reader layer of cardd: how the daemon talks to a card, whatever carries the bytes.
//!
//! This crate holds the contract and nothing that implements it (no driver lives here):
//!
//! * [`apdu`]: a typed ISO 7816-4 APDU model (cases 1 to 4, short and extended) and status words;
//! * [`reader`]: the stateless [`ReaderFactory`] (`list`, `open`) and the live [`CardReader`]
//!   session (`transmit_raw`, power, reset, ATR, presence) with optional capabilities;
//! * [`channel`]: [`Reader`], the one place where T=0 chaining (`61xx` GET RESPONSE, `6Cxx`
//!   re-send) and the per-reader APDU timeout are handled for every driver;
//! * [`registry`]: instantiating drivers by name from configuration;
//! * [`trace`]: the opt-in APDU trace recorder (one JSON line per exchange, redacted, bounded);
//! * [`error`]: errors that say what happened and what to do next.
//!
//! **Architecture invariant:** drivers move bytes. Nothing here knows about purses, money or keys.
#![forbid(unsafe_code)]

pub mod apdu;
pub mod channel;
pub mod error;
pub mod reader;
pub mod registry;
pub mod trace;

pub use apdu::{ApduCase, ApduError, CommandApdu, ResponseApdu, StatusWord};
pub use channel::{transmit_chained, CardChannel, ObuTransport, Reader, CHAIN_STEPS_MAX};
pub use error::{DriverError, ReaderError};
pub use reader::{
    ApduTransport, Atr, Capabilities, CardEvent, CardEvents, CardPresence, CardReader,
    ExclusiveAccess, HotplugEvent, HotplugWatch, ObuChannel, ObuTarget, Protocol, PsamSlots,
    ReaderFactory, ReaderInfo, ReaderSelector, Supervised, SupervisedState, SupervisedStatus,
    WaitStopper,
};
pub use registry::{Driver, DriverOptions, DriverRegistry};
pub use trace::{
    Hide, Redaction, TraceOptions, TraceRecord, TraceRecorder, TracedFactory, TracingReader,
};
