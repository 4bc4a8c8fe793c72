//! The simulated reader driver: [`SimFactory`] (`ReaderFactory`) and [`SimReader`] (`CardReader`).
//!
//! This is the `cardd-reader` face of a [`SimWorld`]: the daemon opens simulated readers
//! exactly as it opens PC/SC ones, so every layer above the driver runs unchanged against
//! simulated cards. Sessions hold no card state of their own; everything lives in the world,
//! which is what lets a test pull a card out from under a session.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use cardd_reader::{
    ApduTransport, Atr, CardEvent, CardEvents, CardPresence, CardReader, HotplugEvent,
    HotplugWatch, ObuChannel, ObuTarget, Protocol, ReaderError, ReaderFactory, ReaderInfo,
    ReaderSelector, WaitStopper,
};

use crate::world::{SimReaderKind, SimSlot, SimWorld};
use crate::DRIVER_NAME;

/// A driver instance over one world.
#[derive(Debug, Clone)]
pub struct SimFactory {
    world: SimWorld,
}

impl SimFactory {
    /// A factory serving the readers of `world` (keep a clone of `world` to act on them).
    pub fn new(world: SimWorld) -> Self {
        SimFactory { world }
    }

    /// The world this factory serves.
    pub fn world(&self) -> &SimWorld {
        &self.world
    }
}

impl ReaderFactory for SimFactory {
    fn driver(&self) -> &str {
        DRIVER_NAME
    }

    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
        Ok(self.world.readers())
    }

    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
        let readers = self.world.readers();
        let info = selector
            .pick(&readers)
            .ok_or_else(|| ReaderError::NotFound {
                selector: selector.to_string(),
            })?;
        Ok(Box::new(SimReader::new(self.world.clone(), info.clone())))
    }

    fn hotplug(&self) -> Option<Box<dyn HotplugWatch>> {
        Some(Box::new(SimHotplug::new(self.world.clone())))
    }
}

/// A session on one simulated reader.
#[derive(Debug)]
pub struct SimReader {
    world: SimWorld,
    info: ReaderInfo,
    protocol: Protocol,
    event_cursor: u64,
    /// Set by this session's [`WaitStopper`]: its event waits end.
    stopped: Arc<AtomicBool>,
}

impl SimReader {
    fn new(world: SimWorld, info: ReaderInfo) -> Self {
        let event_cursor = world.card_event_cursor(&info.id);
        let protocol = protocol_of(&world, &info);
        SimReader {
            world,
            info,
            protocol,
            event_cursor,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// T0 when emulated, else what the reader kind carries.
fn protocol_of(world: &SimWorld, info: &ReaderInfo) -> Protocol {
    match world.reader_setup(&info.id) {
        Some((_, true)) => Protocol::T0,
        Some((SimReaderKind::Contactless, false)) => Protocol::Contactless,
        Some((SimReaderKind::ObuProgrammer, false)) => Protocol::Other,
        _ => Protocol::T1,
    }
}

impl ApduTransport for SimReader {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        self.world
            .exchange(&self.info.id, SimSlot::Main, command, timeout)
    }

    fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl CardReader for SimReader {
    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        self.world.power_on(&self.info.id)
    }

    fn power_off(&mut self) -> Result<(), ReaderError> {
        self.world.power_off(&self.info.id)
    }

    fn reset(&mut self) -> Result<Atr, ReaderError> {
        self.world.power_on(&self.info.id)
    }

    fn atr(&self) -> Option<Atr> {
        self.world.atr(&self.info.id)
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        self.world.presence(&self.info.id)
    }

    fn obu(&mut self) -> Option<&mut dyn ObuChannel> {
        if self.world.has_obu_channel(&self.info.id) {
            Some(self)
        } else {
            None
        }
    }

    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        Some(self)
    }
}

impl ObuChannel for SimReader {
    fn obu_transmit(
        &mut self,
        target: ObuTarget,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        let slot = match target {
            ObuTarget::Esam => SimSlot::Main,
            ObuTarget::Icc => SimSlot::Icc,
        };
        self.world.exchange(&self.info.id, slot, command, timeout)
    }
}

impl CardEvents for SimReader {
    fn wait_for_change(&mut self, timeout: Duration) -> Result<Option<CardEvent>, ReaderError> {
        self.world.wait_card_event(
            &self.info.id,
            &mut self.event_cursor,
            timeout,
            &self.stopped,
        )
    }

    fn stopper(&mut self) -> Option<WaitStopper> {
        Some(self.world.stopper(self.stopped.clone()))
    }
}

/// Reader add/remove notifications of one world (events after the watch was made).
#[derive(Debug)]
pub struct SimHotplug {
    world: SimWorld,
    cursor: u64,
    stopped: Arc<AtomicBool>,
}

impl SimHotplug {
    /// A watch reporting changes from now on.
    pub fn new(world: SimWorld) -> Self {
        let cursor = world.hotplug_cursor();
        SimHotplug {
            world,
            cursor,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl HotplugWatch for SimHotplug {
    fn wait(&mut self, timeout: Duration) -> Result<Option<HotplugEvent>, ReaderError> {
        self.world
            .wait_hotplug(&mut self.cursor, timeout, &self.stopped)
    }

    fn stopper(&mut self) -> Option<WaitStopper> {
        Some(self.world.stopper(self.stopped.clone()))
    }
}
