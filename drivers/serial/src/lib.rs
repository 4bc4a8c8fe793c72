//! `cardd-serial`: the driver for OBU programmers on a serial port (`driver = "serial"`).
//!
//! An OBU programmer (发行器) sits between the issuing PC and an OBU: it reaches the OBU's
//! embedded secure module (ESAM), where issuance writes the system and vehicle files, and the
//! ETC user card inserted in the OBU. Real programmers speak vendor protocols over USB-serial
//! bridges in the `FF FF | RSCTL | CMD | data | BCC | FF` framing of the Wanji RSU family;
//! their payloads are not public, so this crate defines and implements a transparent-APDU
//! protocol in that framing (`PROTOCOL.md`) and maps it onto the reader trait of
//! `cardd-reader`:
//!
//! * [`frame`]: encoding and a resynchronising streaming decoder (pure, no I/O, never panics);
//! * [`protocol`]: the messages: HELLO, STATUS, POWER ON/OFF, APDU, EVENT, NAK, status codes;
//! * [`driver`]: [`SERIAL_DRIVER`], its options ([`SerialOptions`]: only configured devices,
//!   by path or by USB VID + PID + serial number), [`SerialFactory`] and [`SerialReader`]
//!   (`transmit_raw` → the ETC card, `obu()` → ESAM and ETC card, presence, card events);
//! * `simulator` (Unix, feature `simulator`, off by default): `SimProgrammer`, a programmer on
//!   a pseudo-terminal holding `cardd_sim` cards, with fault injection, for this crate's tests
//!   and the daemon's.
//!
//! The serial link itself (reader thread, sequence numbers, resends, deadlines) is private
//! (`link`).
#![forbid(unsafe_code)]

pub mod driver;
pub mod error;
pub mod frame;
mod link;
pub mod protocol;
#[cfg(all(unix, feature = "simulator"))]
pub mod simulator;

pub use driver::{
    match_usb, DeviceOptions, SerialDriver, SerialFactory, SerialOptions, SerialReader, UsbMatch,
    BAUD_DEFAULT, COMMAND_TIMEOUT_MS_DEFAULT, RETRIES_DEFAULT, SERIAL_DRIVER,
};
pub use error::SerialError;
pub use frame::{Decoder, Frame, FrameError, FRAME_BYTES_MAX, FRAME_DATA_BYTES_MAX};
pub use link::{EVENTS_KEPT_MAX, INBOX_FRAMES_MAX, LINK_READ_SLICE_MS};
pub use protocol::{DeviceInfo, Status, Target, PROTOCOL_VERSION};
#[cfg(all(unix, feature = "simulator"))]
pub use simulator::{SimProgrammer, SimProgrammerConfig, SimProgrammerError, SimStats};

/// The driver's registered name.
pub const DRIVER_NAME: &str = "serial";
