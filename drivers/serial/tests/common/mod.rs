//! Shared set-up for the pty tests: a simulated programmer and the `serial` driver on its path,
//! built through the driver registry's entry point exactly as the daemon builds it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cardd_reader::{CommandApdu, Driver, DriverOptions, Reader, ReaderFactory, ReaderSelector};
use cardd_serial::{SimProgrammer, SimProgrammerConfig, SERIAL_DRIVER};

/// The reader id the tests configure.
pub const READER_ID: &str = "serial:obu";
/// APDU timeout of the tests' readers.
pub const APDU_TIMEOUT: Duration = Duration::from_secs(2);

/// A driver instance with one device, `obu`, at `path`, plus extra option keys.
pub fn factory_with(path: &str, extra: serde_json::Value) -> Arc<dyn ReaderFactory> {
    let mut options = serde_json::json!({
        "devices": [{"id": "obu", "name": "Test programmer", "path": path}],
    });
    if let (Some(o), Some(e)) = (options.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    SERIAL_DRIVER
        .instantiate(&DriverOptions::new("serial", options))
        .unwrap_or_else(|e| panic!("instantiate: {e}"))
}

pub fn factory(path: &str) -> Arc<dyn ReaderFactory> {
    factory_with(path, serde_json::json!({}))
}

pub fn open(factory: &Arc<dyn ReaderFactory>) -> Reader {
    let session = factory
        .open(&ReaderSelector::Id(READER_ID.into()))
        .unwrap_or_else(|e| panic!("open: {e}"));
    Reader::new(session, APDU_TIMEOUT)
}

/// The demo programmer (demo OBU, demo ETC card in the slot), its factory and an open reader.
pub fn demo() -> (SimProgrammer, Arc<dyn ReaderFactory>, Reader) {
    start(SimProgrammerConfig::demo())
}

pub fn start(config: SimProgrammerConfig) -> (SimProgrammer, Arc<dyn ReaderFactory>, Reader) {
    let sim = SimProgrammer::with_config(config).unwrap_or_else(|e| panic!("sim: {e}"));
    let factory = factory(sim.path());
    let reader = open(&factory);
    (sim, factory, reader)
}

pub fn apdu(hex_text: &str) -> CommandApdu {
    let bytes =
        hex::decode(hex_text.replace(' ', "")).unwrap_or_else(|e| panic!("{hex_text}: {e}"));
    CommandApdu::parse(&bytes).unwrap_or_else(|e| panic!("{hex_text}: {e}"))
}
