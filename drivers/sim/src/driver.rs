//! The `sim` driver as the daemon's registry sees it, and its configuration.
//!
//! `driver = "sim"` with no options gives a ready demo: an ETC card reader with the demo ETC
//! card, a city card reader with the demo city card, and an OBU programmer with the demo OBU
//! (its ICC slot empty, so the demo ETC card exists once). Options can describe other readers
//! and cards, and a `state_dir` makes the cards outlive the daemon.

use std::path::PathBuf;
use std::sync::Arc;

use cardd_reader::{Driver, DriverOptions, ReaderError, ReaderFactory};
use serde::{Deserialize, Serialize};

use crate::cards::SimCard;
use crate::demo;
use crate::reader::SimFactory;
use crate::world::{SimReaderConfig, SimReaderKind, SimWorld};
use crate::DRIVER_NAME;

/// The driver descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimDriver;

/// The descriptor the built-in registry registers.
pub static SIM_DRIVER: SimDriver = SimDriver;

impl Driver for SimDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn summary(&self) -> &'static str {
        "simulated readers holding ETC user cards, city one-cards and OBU ESAMs, with fault injection (tests and demos)"
    }

    fn instantiate(&self, options: &DriverOptions) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
        let options: SimOptions = options.parse()?;
        Ok(Arc::new(options.build()?))
    }

    /// The options parse and every reader's card is described correctly; no state directory
    /// is created.
    fn check(&self, options: &DriverOptions) -> Result<Vec<String>, ReaderError> {
        let options: SimOptions = options.parse()?;
        for reader in options
            .readers
            .clone()
            .unwrap_or_else(SimOptions::default_readers)
        {
            reader.to_config()?;
        }
        Ok(vec![
            "the sim driver serves simulated readers and cards: for demos and tests, never a \
             real counter"
                .into(),
        ])
    }
}

/// The driver's configuration table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimOptions {
    /// The readers; absent means [`SimOptions::default_readers`], `[]` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<Vec<SimReaderOptions>>,
    /// Where each slot's card is saved after every change and restored from at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Publishes the world under this name in the process ([`named_world`]), so a test harness
    /// or a demo control can insert and remove cards in a running daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
}

/// Most worlds published by name in one process.
pub const NAMED_WORLDS_MAX: usize = 64;

fn named_worlds() -> &'static std::sync::Mutex<std::collections::HashMap<String, SimWorld>> {
    static WORLDS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, SimWorld>>,
    > = std::sync::OnceLock::new();
    WORLDS.get_or_init(Default::default)
}

/// The world a `sim` driver instance published with `world = "name"`, if any.
pub fn named_world(name: &str) -> Option<SimWorld> {
    named_worlds()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned()
}

/// Forgets the world published as `name`, so that it counts no more against
/// [`NAMED_WORLDS_MAX`] (a test harness done with a daemon); whoever holds the world keeps it.
pub fn forget_world(name: &str) {
    named_worlds()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
}

/// One configured reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimReaderOptions {
    /// Listed as `sim:<id>`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: SimReaderKind,
    /// The card in the reader (for an OBU programmer: the ESAM).
    #[serde(default)]
    pub card: CardSource,
    /// OBU programmers only: the ETC card inserted in the OBU.
    #[serde(default)]
    pub icc_card: CardSource,
    /// Emulate T=0 (`61xx` / `6Cxx`).
    #[serde(default)]
    pub t0: bool,
}

/// Where a configured card comes from: `"demo-etc"`, `"demo-etc-sm4"`, `"demo-city"`,
/// `"demo-obu"`, `"none"`, or `{ "json_file": "path" }` (a [`SimCard::to_json`] file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardSource {
    #[serde(rename = "demo-etc")]
    DemoEtc,
    #[serde(rename = "demo-etc-sm4")]
    DemoEtcSm4,
    #[serde(rename = "demo-city")]
    DemoCity,
    #[serde(rename = "demo-obu")]
    DemoObu,
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "json_file")]
    JsonFile(PathBuf),
}

impl CardSource {
    /// The card this source names.
    pub fn load(&self) -> Result<Option<SimCard>, ReaderError> {
        Ok(Some(match self {
            CardSource::DemoEtc => demo::demo_etc_card(),
            CardSource::DemoEtcSm4 => demo::demo_etc_card_sm4(),
            CardSource::DemoCity => demo::demo_city_card(),
            CardSource::DemoObu => demo::demo_obu(),
            CardSource::None => return Ok(None),
            CardSource::JsonFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    config_error(format!("reading card file {}: {e}", path.display()))
                })?;
                SimCard::from_json(&text).map_err(|e| {
                    config_error(format!("card file {} is not a card: {e}", path.display()))
                })?
            }
        }))
    }
}

fn config_error(detail: String) -> ReaderError {
    ReaderError::Config {
        driver: DRIVER_NAME.to_owned(),
        detail,
    }
}

impl SimOptions {
    /// The readers of an empty configuration: `etc` (contact, demo ETC card), `city`
    /// (contactless, demo city card), `obu` (OBU programmer, demo OBU, empty ICC slot).
    pub fn default_readers() -> Vec<SimReaderOptions> {
        let reader = |id: &str, name: &str, kind, card| SimReaderOptions {
            id: id.into(),
            name: Some(name.into()),
            kind,
            card,
            icc_card: CardSource::None,
            t0: false,
        };
        vec![
            reader(
                "etc",
                "模拟 ETC 读卡器",
                SimReaderKind::Contact,
                CardSource::DemoEtc,
            ),
            reader(
                "city",
                "模拟城市一卡通读卡器",
                SimReaderKind::Contactless,
                CardSource::DemoCity,
            ),
            reader(
                "obu",
                "模拟 OBU 发行器",
                SimReaderKind::ObuProgrammer,
                CardSource::DemoObu,
            ),
        ]
    }

    /// Builds the world and a factory serving it.
    pub fn build(&self) -> Result<SimFactory, ReaderError> {
        let world = match &self.state_dir {
            Some(dir) => SimWorld::with_state_dir(dir).map_err(|e| config_error(e.to_string()))?,
            None => SimWorld::new(),
        };
        let readers = self
            .readers
            .clone()
            .unwrap_or_else(SimOptions::default_readers);
        for reader in readers {
            world
                .add_reader(reader.to_config()?)
                .map_err(|e| config_error(e.to_string()))?;
        }
        if let Some(name) = &self.world {
            let mut worlds = named_worlds().lock().unwrap_or_else(|p| p.into_inner());
            if worlds.len() >= NAMED_WORLDS_MAX && !worlds.contains_key(name) {
                return Err(config_error(format!(
                    "at most {NAMED_WORLDS_MAX} named worlds per process"
                )));
            }
            worlds.insert(name.clone(), world.clone());
        }
        Ok(SimFactory::new(world))
    }
}

impl SimReaderOptions {
    fn to_config(&self) -> Result<SimReaderConfig, ReaderError> {
        if self.kind != SimReaderKind::ObuProgrammer && self.icc_card != CardSource::None {
            return Err(config_error(format!(
                "reader {:?}: only an obu_programmer has an icc_card",
                self.id
            )));
        }
        let mut config = SimReaderConfig::new(self.id.clone(), self.kind).with_t0(self.t0);
        if let Some(name) = &self.name {
            config = config.with_name(name.clone());
        }
        config.card = self.card.load()?;
        config.icc_card = self.icc_card.load()?;
        Ok(config)
    }
}
