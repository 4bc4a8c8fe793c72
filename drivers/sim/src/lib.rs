//! `cardd-sim`: simulated card readers and cards, the `sim` driver of cardd.
//!
//! Money code cannot be tested against real cards at the speed and with the faults it needs,
//! so this crate gives cardd cards that behave like the real ones in `docs/card-protocol.md`
//! (ETC user cards, city one-cards, OBU ESAMs, with real MACs and TACs computed by
//! `cardd-crypto`) in readers that can lose a card mid-command, time out, garble a status
//! word, swap a card or be unplugged, all deterministically.
//!
//! * [`cards`]: the cards ([`SimCard`]), personalisation ([`EtcCard::issue`], ...), the purse;
//! * [`demo`]: the demo cards with fixed identities used by the daemon's default configuration;
//! * [`world`]: [`SimWorld`], the shared readers, slots and cards a test acts on;
//! * [`reader`]: [`SimFactory`] / [`SimReader`], the `cardd-reader` driver over a world;
//! * [`fault`]: [`FaultPlan`], faults at exact exchange numbers;
//! * [`driver`]: [`SIM_DRIVER`] and its options for the daemon's registry.
//!
//! ```
//! use std::time::Duration;
//! use cardd_reader::{CardChannel, CommandApdu, Reader, ReaderFactory, ReaderSelector};
//! use cardd_sim::{demo, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};
//!
//! let world = SimWorld::new();
//! world.add_reader(SimReaderConfig::new("etc", SimReaderKind::Contact).with_card(demo::demo_etc_card()))?;
//! let factory = SimFactory::new(world.clone());
//! let session = factory.open(&ReaderSelector::Id("sim:etc".into()))?;
//! let mut reader = Reader::new(session, Duration::from_secs(1));
//! reader.transmit(&CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01]))?;
//! let balance = reader.transmit(&CommandApdu::new(0x80, 0x5C, 0x00, 0x02).with_le(4))?;
//! assert_eq!(balance.data, 10_000u32.to_be_bytes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod cards;
pub mod demo;
pub mod driver;
pub mod fault;
pub mod reader;
mod t0;
pub mod world;

pub use cards::{
    CardKind, CityCard, CityCardSpec, EtcCard, EtcCardSpec, IssueError, IssuerMasters, LogRecord,
    ObuEsam, ObuMasters, ObuSpec, Proof, Purse, SimCard, VehicleInfo,
};
pub use driver::{
    forget_world, named_world, CardSource, SimDriver, SimOptions, SimReaderOptions, SIM_DRIVER,
};
pub use fault::{FaultKind, FaultPlan};
pub use reader::{SimFactory, SimHotplug, SimReader};
pub use world::{SimError, SimReaderConfig, SimReaderKind, SimSlot, SimWorld};

/// The driver's registered name.
pub const DRIVER_NAME: &str = "sim";
