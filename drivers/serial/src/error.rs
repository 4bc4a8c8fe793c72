//! The driver's own errors, carried as the source of `ReaderError::Driver`.
//!
//! Everything the reader layer has a word for (no card, card removed, timeout, reader gone,
//! broken framing) is reported as that `ReaderError` variant; what is specific to a serial OBU
//! programmer lands here so that callers can `downcast_ref::<SerialError>()` it.

use crate::protocol::Status;

/// Failures specific to the serial driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SerialError {
    /// The port could not be opened (permissions, wrong path, not a tty).
    #[error("cannot open serial port {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: serialport::Error,
    },
    /// The port opened but its reader thread could not be set up.
    #[error("cannot set up serial port {path}: {detail}")]
    Setup { path: String, detail: String },
    /// The device speaks another version of the programmer protocol.
    #[error("the device speaks programmer protocol version {device}, this driver speaks {driver}")]
    VersionMismatch { device: u8, driver: u8 },
    /// The OBU's ESAM failed (device status `03`): the OBU is faulty or badly connected.
    #[error("the OBU's ESAM did not answer (device status 03); check the OBU and its connection to the programmer")]
    Esam,
    /// The device refused a command (unknown command, bad parameter).
    #[error("the device refused command {command:02X} with status {status:?}")]
    Rejected { command: u8, status: Status },
}
