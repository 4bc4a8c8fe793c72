//! `cardd-pcsc`: the PC/SC driver of cardd (pcsc-lite on Linux and macOS, WinSCard on
//! Windows), and a vpcd bridge that serves a simulated card to a real pcscd.
//!
//! Most counter readers in China are PC/SC readers, so this is the driver a real deployment
//! uses. It keeps the contract of `docs/driver-guide.md` on top of an API that does not:
//! pcsc-lite has no timeout on `SCardTransmit`, connects and transactions may wait forever for
//! another application, and pcscd can restart under us. Hence:
//!
//! * [`watchdog`]: a session's PC/SC calls run on the caller's thread, each registered with one
//!   process-wide watchdog thread for its deadline; a call that overruns gets `SCardCancel`,
//!   then its connection to pcscd shut down, and the context and handle are rebuilt on the
//!   next call;
//! * [`worker`]: the factory's and hotplug watch's own context threads, and the bound on PC/SC
//!   threads blocked in pcsc-lite;
//! * [`reader`]: [`PcscReader`], the session: lazy connect, T=0/T=1 transmit (the negotiated
//!   protocol is reported so the reader layer chains `61xx`/`6Cxx`), power and reset through
//!   reconnect/disconnect dispositions, presence and card events through
//!   `SCardGetStatusChange`, exclusive access through a PC/SC transaction;
//! * [`factory`]: [`PcscFactory`] (list and open readers, ids `pcsc:<reader name>`) and
//!   [`PcscHotplug`] (readers coming and going, through `\\?PnP?\Notification`);
//! * [`error`]: [`PcscError`] and the mapping of PC/SC codes onto `ReaderError` kinds;
//! * [`options`]: [`PcscOptions`], the driver's configuration table;
//! * `vpcd` (feature `vpcd`, off by default): `vpcd::VpcdBridge`, a `cardd_sim::SimCard`
//!   speaking vsmartcard's vpcd protocol, for end-to-end tests through the real pcsc-lite stack
//!   (also the `cardd-vpcd-bridge` binary).
//!
//! ```toml
//! [[readers]]
//! driver = "pcsc"
//! [readers.options]
//! readers = ["Virtual PCD 00 00"]   # optional name filters; absent = every reader
//! ```
#![forbid(unsafe_code)]

pub mod error;
pub mod factory;
pub mod options;
pub mod reader;
mod session;
mod stop;
mod stuck;
#[cfg(feature = "vpcd")]
pub mod vpcd;
pub mod watchdog;
pub mod worker;

use std::sync::Arc;

use cardd_reader::{Driver, DriverOptions, ReaderError, ReaderFactory};

pub use error::PcscError;
pub use factory::{reader_info, CardState, PcscFactory, PcscHotplug};
pub use options::{PcscOptions, ProtocolOption, ShareMode};
pub use reader::PcscReader;

/// The driver's registered name.
pub const DRIVER_NAME: &str = "pcsc";
/// Reader ids are this prefix followed by the PC/SC reader name.
pub const ID_PREFIX: &str = "pcsc:";

/// The driver descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct PcscDriver;

/// The descriptor the built-in registry registers.
pub static PCSC_DRIVER: PcscDriver = PcscDriver;

impl Driver for PcscDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn summary(&self) -> &'static str {
        "PC/SC smart card readers through pcscd (pcsc-lite) or WinSCard"
    }

    fn instantiate(&self, options: &DriverOptions) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
        let options: PcscOptions = options.parse()?;
        Ok(Arc::new(PcscFactory::new(options)?))
    }

    /// The options parse and validate; pcscd is not asked (check-config starts nothing).
    fn check(&self, options: &DriverOptions) -> Result<Vec<String>, ReaderError> {
        let options: PcscOptions = options.parse()?;
        options.validate().map_err(|detail| ReaderError::Config {
            driver: DRIVER_NAME.to_owned(),
            detail,
        })?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed_strictly_by_the_descriptor() {
        let ok = DriverOptions::new(
            DRIVER_NAME,
            serde_json::json!({"readers": ["Virtual PCD"], "share_mode": "exclusive"}),
        );
        let factory = PCSC_DRIVER.instantiate(&ok).unwrap();
        assert_eq!(factory.driver(), "pcsc");
        let typo = DriverOptions::new(DRIVER_NAME, serde_json::json!({"share": "shared"}));
        let err = PCSC_DRIVER.instantiate(&typo).unwrap_err();
        assert!(err.to_string().contains("unknown field `share`"), "{err}");
        let bad = DriverOptions::new(DRIVER_NAME, serde_json::json!({"protocols": []}));
        let err = PCSC_DRIVER.instantiate(&bad).unwrap_err();
        assert!(err.to_string().contains("protocols"), "{err}");
    }
}
