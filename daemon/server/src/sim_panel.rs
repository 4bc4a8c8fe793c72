//! The 模拟读卡器 panel of the embedded default (`cardd --demo`, [`Config::demo`] only): insert,
//! remove and swap the demo cards in the simulated readers, and pull a card in the middle of its
//! next load, so a newcomer can try the kiosk from its idle screen and watch cardd settle a card
//! pulled mid-load when it is put back.
//!
//! Nothing outside the daemon can touch the simulated world of the embedded default, so the
//! daemon builds its simulated readers itself ([`instantiate`]) and keeps their worlds here.
//! The set of cards is fixed ([`CATALOGUE`]: the demo ETC cards, the city card, the OBU): a card
//! is either in a reader or outside, on the panel's table; nothing creates or changes a card.
//! With any other configuration there is no panel and the `sim.*` methods are not registered
//! at all ([`add_methods`] is called only when the daemon has a panel).
//!
//! [`Config::demo`]: crate::config::Config::demo

use std::sync::{Arc, Mutex, MutexGuard};

use cardd_reader::{DriverOptions, DriverRegistry, ReaderFactory};
use cardd_sim::{demo, FaultKind, FaultPlan, SimCard, SimFactory, SimOptions, SimWorld};

use crate::config::ReaderInstance;
use crate::errors::ApiError;
use crate::metrics::Metrics;
use crate::readers::{instance_error, traced};

/// CREDIT FOR LOAD (`80 52`): the command after which "圈存中拔卡" pulls the card.
const CREDIT_FOR_LOAD: (u8, u8) = (0x80, 0x52);

/// One card of the fixed demo set.
#[derive(Debug)]
struct DemoCard {
    /// The card's name on the wire.
    key: &'static str,
    /// What the panel calls it.
    label: &'static str,
    make: fn() -> SimCard,
    /// An OBU's ESAM: goes into an OBU programmer, and only it does.
    obu: bool,
}

/// Every card the panel knows, and the only ones it moves.
const CATALOGUE: &[DemoCard] = &[
    DemoCard {
        key: "etc",
        label: "ETC 用户卡（陕A12345）",
        make: demo::demo_etc_card,
        obu: false,
    },
    DemoCard {
        key: "etc_sm4",
        label: "ETC 用户卡（陕AD12345）",
        make: demo::demo_etc_card_sm4,
        obu: false,
    },
    DemoCard {
        key: "city",
        label: "城市一卡通",
        make: demo::demo_city_card,
        obu: false,
    },
    DemoCard {
        key: "obu",
        label: "OBU 电子标签",
        make: demo::demo_obu,
        obu: true,
    },
];

/// What the panel refuses, in the words the person at the panel reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimPanelError {
    #[error("没有模拟读卡器 {0}")]
    UnknownReader(String),
    #[error("没有演示卡片 {0}（可选：etc、etc_sm4、city、obu）")]
    UnknownCard(String),
    #[error("{0}不在读卡器外，请先从读卡器中取出")]
    CardNotOutside(&'static str),
    #[error("读卡器 {0} 中已有卡片，请先取出或选择更换卡片")]
    ReaderOccupied(String),
    #[error("读卡器 {0} 中没有卡片")]
    ReaderEmpty(String),
    #[error("{card}不能放入读卡器 {reader}（OBU 电子标签只放入 OBU 发行器，卡片只放入读卡器）")]
    WrongReader { card: &'static str, reader: String },
    #[error("卡片数据无效：{0}")]
    CardData(String),
    #[error("{0}已在本机，不能再放入一张：请先取出并带走本机的这张卡")]
    AlreadyHere(&'static str),
    #[error("模拟读卡器出错：{0}")]
    Sim(#[from] cardd_sim::SimError),
}

impl SimPanelError {
    /// The JSON-RPC code of this refusal (the conversion to [`ApiError`] is the usual one).
    pub fn code(&self) -> cardd_api::ErrorCode {
        match self {
            SimPanelError::UnknownReader(_) => cardd_api::ErrorCode::ReaderNotFound,
            SimPanelError::Sim(_) => cardd_api::ErrorCode::Internal,
            _ => cardd_api::ErrorCode::InvalidParams,
        }
    }
}

// Beside its type rather than in `errors`, so that `errors` stays below every module it maps.
impl From<SimPanelError> for ApiError {
    fn from(e: SimPanelError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

pub use cardd_api::sim::{
    SimCardParams, SimCardView, SimPullParams, SimReaderParams, SimReaderView, SimView,
};

#[derive(Debug, Default)]
struct Table {
    /// Demo cards outside every reader, in the order they came out.
    outside: Vec<SimCard>,
    /// Keys of the cards pulled mid-load and not inserted since.
    pulled: Vec<&'static str>,
}

/// The simulated worlds of the embedded default and the cards outside their readers.
#[derive(Debug)]
pub struct SimPanel {
    worlds: Vec<SimWorld>,
    /// `(key, card number)` of every catalogue card.
    numbers: Vec<(&'static str, String)>,
    table: Mutex<Table>,
}

/// Driver instances, in configuration order.
pub type Factories = Vec<Arc<dyn ReaderFactory>>;

/// Builds the configured readers' drivers. With `demo`, simulated readers are built here and
/// their worlds kept for the panel; otherwise every driver comes from the registry and there
/// is no panel.
pub fn instantiate(
    instances: &[ReaderInstance],
    registry: &DriverRegistry,
    demo: bool,
    metrics: &Arc<Metrics>,
) -> Result<(Factories, Option<SimPanel>), ApiError> {
    let mut factories: Factories = Vec::new();
    let mut worlds = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let options = DriverOptions::new(instance.driver.clone(), instance.options.clone());
        let factory: Arc<dyn ReaderFactory> = if demo && instance.driver == cardd_sim::DRIVER_NAME {
            let factory: SimFactory = options
                .parse::<SimOptions>()
                .and_then(|o| o.build())
                .map_err(|e| instance_error(i, instance, &e))?;
            worlds.push(factory.world().clone());
            Arc::new(factory)
        } else {
            registry
                .instantiate(&instance.driver, &options)
                .map_err(|e| instance_error(i, instance, &e))?
        };
        factories.push(match &instance.trace {
            Some(trace) => traced(factory, trace, metrics),
            None => factory,
        });
    }
    let panel = demo.then(|| SimPanel::new(worlds));
    Ok((factories, panel))
}

fn yuan(fen: u32) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

impl SimPanel {
    /// A panel over `worlds`; the catalogue cards no reader holds start outside.
    pub fn new(worlds: Vec<SimWorld>) -> SimPanel {
        let numbers = CATALOGUE
            .iter()
            .map(|c| (c.key, (c.make)().card_number()))
            .collect();
        let panel = SimPanel {
            worlds,
            numbers,
            table: Mutex::new(Table::default()),
        };
        let inside: Vec<&'static str> = panel
            .slots()
            .iter()
            .filter_map(|(world, id)| world.card(id))
            .filter_map(|card| panel.key_of(&card))
            .collect();
        let outside = CATALOGUE
            .iter()
            .filter(|c| !inside.contains(&c.key))
            .map(|c| (c.make)())
            .collect();
        panel.lock().outside = outside;
        panel
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every reader of every world, with its world.
    fn slots(&self) -> Vec<(&SimWorld, String)> {
        self.worlds
            .iter()
            .flat_map(|w| w.readers().into_iter().map(move |r| (w, r.id)))
            .collect()
    }

    fn world_of(&self, reader_id: &str) -> Result<&SimWorld, SimPanelError> {
        self.slots()
            .into_iter()
            .find(|(_, id)| id == reader_id)
            .map(|(w, _)| w)
            .ok_or_else(|| SimPanelError::UnknownReader(reader_id.chars().take(64).collect()))
    }

    /// Whether the reader is an OBU programmer (it takes the OBU and nothing else).
    fn is_obu_programmer(world: &SimWorld, reader_id: &str) -> bool {
        world
            .readers()
            .into_iter()
            .find(|r| r.id == reader_id)
            .is_some_and(|r| r.capabilities.obu_channel)
    }

    fn key_of(&self, card: &SimCard) -> Option<&'static str> {
        let number = card.card_number();
        self.numbers
            .iter()
            .find(|(_, n)| *n == number)
            .map(|(k, _)| *k)
    }

    fn entry(key: &str) -> Result<&'static DemoCard, SimPanelError> {
        CATALOGUE
            .iter()
            .find(|c| c.key == key)
            .ok_or_else(|| SimPanelError::UnknownCard(key.chars().take(16).collect()))
    }

    /// Puts a card on the table (once per key).
    fn put_outside(&self, table: &mut Table, card: SimCard) {
        if let Some(key) = self.key_of(&card) {
            table.outside.retain(|c| self.key_of(c) != Some(key));
            table.outside.push(card);
        }
    }

    /// Cards a fault pulled out of a reader (圈存中拔卡) come to the table, marked as pulled.
    fn collect_pulled(&self, table: &mut Table) {
        for (world, id) in self.slots() {
            while let Some(card) = world.take_pocket(&id) {
                if let Some(key) = self.key_of(&card) {
                    if !table.pulled.contains(&key) {
                        table.pulled.push(key);
                    }
                    self.put_outside(table, card);
                }
            }
        }
    }

    fn card_view(&self, table: &Table, card: &SimCard) -> Option<SimCardView> {
        let key = self.key_of(card)?;
        let entry = SimPanel::entry(key).ok()?;
        Some(SimCardView {
            card: key.into(),
            label: entry.label.into(),
            card_number: card.card_number(),
            balance: card.balance().map(yuan),
            pulled_mid_load: table.pulled.contains(&key),
        })
    }

    fn view(&self, table: &Table) -> SimView {
        let readers = self
            .slots()
            .into_iter()
            .map(|(world, id)| {
                let info = world.readers().into_iter().find(|r| r.id == id);
                let obu = info.as_ref().is_some_and(|i| i.capabilities.obu_channel);
                let label = match info.map(|i| i.capabilities) {
                    Some(c) if c.obu_channel => "OBU 发行器",
                    Some(c) if c.contactless => "非接触读卡器",
                    _ => "接触式读卡器",
                };
                SimReaderView {
                    card: world.card(&id).and_then(|c| self.card_view(table, &c)),
                    pull_armed: world.pending_faults(&id) > 0,
                    accepts: CATALOGUE
                        .iter()
                        .filter(|c| c.obu == obu)
                        .map(|c| c.key.into())
                        .collect(),
                    label: label.into(),
                    reader_id: id,
                }
            })
            .collect();
        let outside = table
            .outside
            .iter()
            .filter_map(|c| self.card_view(table, c))
            .collect();
        SimView { readers, outside }
    }

    /// The readers and the cards outside them.
    pub fn state(&self) -> SimView {
        let mut table = self.lock();
        self.collect_pulled(&mut table);
        self.view(&table)
    }

    /// Puts the card `key` from the table into the empty reader.
    pub fn insert(&self, reader_id: &str, key: &str) -> Result<SimView, SimPanelError> {
        let world = self.world_of(reader_id)?;
        let entry = SimPanel::entry(key)?;
        SimPanel::check_fits(world, reader_id, entry)?;
        let mut table = self.lock();
        self.collect_pulled(&mut table);
        if world.card(reader_id).is_some() {
            return Err(SimPanelError::ReaderOccupied(reader_id.to_owned()));
        }
        self.insert_locked(&mut table, world, reader_id, entry)?;
        Ok(self.view(&table))
    }

    fn check_fits(
        world: &SimWorld,
        reader_id: &str,
        entry: &DemoCard,
    ) -> Result<(), SimPanelError> {
        if SimPanel::is_obu_programmer(world, reader_id) == entry.obu {
            Ok(())
        } else {
            Err(SimPanelError::WrongReader {
                card: entry.label,
                reader: reader_id.to_owned(),
            })
        }
    }

    fn insert_locked(
        &self,
        table: &mut Table,
        world: &SimWorld,
        reader_id: &str,
        entry: &DemoCard,
    ) -> Result<(), SimPanelError> {
        let index = table
            .outside
            .iter()
            .position(|c| self.key_of(c) == Some(entry.key))
            .ok_or(SimPanelError::CardNotOutside(entry.label))?;
        let card = table.outside.remove(index);
        if let Err(e) = world.insert_card(reader_id, card.clone()) {
            table.outside.insert(index, card);
            return Err(e.into());
        }
        table.pulled.retain(|k| *k != entry.key);
        Ok(())
    }

    /// Takes the card `key` from the table away from this site: its state as JSON, for another
    /// site's [`SimPanel::bring`].
    pub fn carry(&self, key: &str) -> Result<(String, SimView), SimPanelError> {
        let entry = SimPanel::entry(key)?;
        let mut table = self.lock();
        self.collect_pulled(&mut table);
        let index = table
            .outside
            .iter()
            .position(|c| self.key_of(c) == Some(entry.key))
            .ok_or(SimPanelError::CardNotOutside(entry.label))?;
        let json = table.outside[index]
            .to_json()
            .map_err(|e| SimPanelError::CardData(e.to_string()))?;
        table.outside.remove(index);
        table.pulled.retain(|k| *k != entry.key);
        Ok((json, self.view(&table)))
    }

    /// Puts a card carried from another site ([`SimPanel::carry`]) into the empty reader. Only
    /// a demo card, and only one card of a number at this site.
    pub fn bring(&self, reader_id: &str, card_json: &str) -> Result<SimView, SimPanelError> {
        if card_json.len() > cardd_api::sim::CARRIED_CARD_BYTES_MAX {
            return Err(SimPanelError::CardData(format!(
                "超过 {} 字节",
                cardd_api::sim::CARRIED_CARD_BYTES_MAX
            )));
        }
        let world = self.world_of(reader_id)?;
        let card =
            SimCard::from_json(card_json).map_err(|e| SimPanelError::CardData(e.to_string()))?;
        let key = self
            .key_of(&card)
            .ok_or_else(|| SimPanelError::CardData("不是演示卡片".into()))?;
        let entry = SimPanel::entry(key)?;
        SimPanel::check_fits(world, reader_id, entry)?;
        let mut table = self.lock();
        self.collect_pulled(&mut table);
        if world.card(reader_id).is_some() {
            return Err(SimPanelError::ReaderOccupied(reader_id.to_owned()));
        }
        let here = table.outside.iter().any(|c| self.key_of(c) == Some(key))
            || self
                .slots()
                .into_iter()
                .any(|(w, id)| w.card(&id).is_some_and(|c| self.key_of(&c) == Some(key)));
        if here {
            return Err(SimPanelError::AlreadyHere(entry.label));
        }
        world.insert_card(reader_id, card)?;
        Ok(self.view(&table))
    }

    /// Takes the reader's card out to the table; a pull armed on the reader is disarmed.
    pub fn remove(&self, reader_id: &str) -> Result<SimView, SimPanelError> {
        let world = self.world_of(reader_id)?;
        let mut table = self.lock();
        self.collect_pulled(&mut table);
        let card = world
            .remove_card(reader_id)
            .ok_or_else(|| SimPanelError::ReaderEmpty(reader_id.to_owned()))?;
        world.set_fault_plan(reader_id, FaultPlan::new())?;
        self.put_outside(&mut table, card);
        Ok(self.view(&table))
    }

    /// Takes the reader's card (if any) out to the table and puts the card `key` in.
    pub fn swap(&self, reader_id: &str, key: &str) -> Result<SimView, SimPanelError> {
        let world = self.world_of(reader_id)?;
        let entry = SimPanel::entry(key)?;
        SimPanel::check_fits(world, reader_id, entry)?;
        let mut table = self.lock();
        self.collect_pulled(&mut table);
        if !table.outside.iter().any(|c| self.key_of(c) == Some(key)) {
            return Err(SimPanelError::CardNotOutside(entry.label));
        }
        if let Some(card) = world.remove_card(reader_id) {
            world.set_fault_plan(reader_id, FaultPlan::new())?;
            self.put_outside(&mut table, card);
        }
        self.insert_locked(&mut table, world, reader_id, entry)?;
        Ok(self.view(&table))
    }

    /// The reader's card will leave at the next CREDIT FOR LOAD: right after it executes (the
    /// card is credited, its answer is lost) or, with `before_write`, just before it reaches the
    /// card (nothing is written: a 写卡失败). Either way the load's outcome is unknown until the
    /// card is put back and cardd reads it.
    pub fn pull_during_next_load(
        &self,
        reader_id: &str,
        before_write: bool,
    ) -> Result<SimView, SimPanelError> {
        let world = self.world_of(reader_id)?;
        let table = self.lock();
        let (cla, ins) = CREDIT_FOR_LOAD;
        let kind = if before_write {
            FaultKind::RemoveBeforeExec
        } else {
            FaultKind::RemoveAfterExec
        };
        world.set_fault_plan(reader_id, FaultPlan::new().on_command(cla, ins, kind))?;
        Ok(self.view(&table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_panel() -> (SimWorld, SimPanel) {
        let factory = SimOptions::default().build().expect("the demo world");
        let world = factory.world().clone();
        (world.clone(), SimPanel::new(vec![world]))
    }

    #[test]
    fn the_demo_cards_move_between_readers_and_the_table() {
        let (world, panel) = demo_panel();
        let start = panel.state();
        assert_eq!(start.readers.len(), 3);
        let outside: Vec<&str> = start.outside.iter().map(|c| c.card.as_str()).collect();
        assert_eq!(
            outside,
            ["etc_sm4"],
            "only the second ETC card starts outside"
        );

        let after = panel.remove("sim:etc").expect("remove");
        assert!(after.readers[0].card.is_none());
        assert!(world.card("sim:etc").is_none());
        assert!(matches!(
            panel.remove("sim:etc"),
            Err(SimPanelError::ReaderEmpty(_))
        ));
        assert!(matches!(
            panel.insert("sim:city", "etc"),
            Err(SimPanelError::ReaderOccupied(_))
        ));
        assert!(matches!(
            panel.insert("sim:etc", "city"),
            Err(SimPanelError::CardNotOutside(_))
        ));
        assert!(matches!(
            panel.swap("sim:obu", "etc_sm4"),
            Err(SimPanelError::WrongReader { .. })
        ));
        assert!(matches!(
            panel.insert("sim:etc", "forged"),
            Err(SimPanelError::UnknownCard(_))
        ));
        assert!(matches!(
            panel.insert("sim:nowhere", "etc"),
            Err(SimPanelError::UnknownReader(_))
        ));

        panel.insert("sim:etc", "etc_sm4").expect("insert");
        let swapped = panel.swap("sim:etc", "etc").expect("swap");
        let card = swapped.readers[0].card.as_ref().expect("a card");
        assert_eq!(card.card_number, demo::DEMO_ETC_CARD_NUMBER);
        assert_eq!(card.balance.as_deref(), Some("100.00"));
        let outside: Vec<&str> = swapped.outside.iter().map(|c| c.card.as_str()).collect();
        assert_eq!(outside, ["etc_sm4"], "nothing duplicated, nothing lost");
    }

    #[test]
    fn a_pull_waits_for_the_credit_and_the_card_comes_back_to_the_table() {
        for before_write in [false, true] {
            a_pull_waits_for_the_credit(before_write);
        }
    }

    fn a_pull_waits_for_the_credit(before_write: bool) {
        let (world, panel) = demo_panel();
        assert!(
            panel
                .pull_during_next_load("sim:etc", before_write)
                .expect("arm")
                .readers[0]
                .pull_armed
        );
        let factory = SimFactory::new(world.clone());
        let mut session = factory
            .open(&cardd_reader::ReaderSelector::Id("sim:etc".into()))
            .expect("open");
        let timeout = std::time::Duration::from_secs(1);
        // Another command leaves the card where it is.
        let select = [0x00, 0xA4, 0x00, 0x00, 0x02, 0x10, 0x01];
        session.transmit_raw(&select, timeout).expect("select");
        assert!(panel.state().readers[0].card.is_some());
        // The card executes CREDIT FOR LOAD (refused here: no load was initialised), then leaves.
        let credit = [
            0x80, 0x52, 0x00, 0x00, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x04,
        ];
        assert!(session.transmit_raw(&credit, timeout).is_err());
        let state = panel.state();
        assert!(state.readers[0].card.is_none());
        assert!(!state.readers[0].pull_armed, "the pull fired once");
        let pulled = state
            .outside
            .iter()
            .find(|c| c.card == "etc")
            .expect("on the table");
        assert!(pulled.pulled_mid_load);
        let back = panel.insert("sim:etc", "etc").expect("put back");
        assert!(back.readers[0].card.is_some());
        assert!(back.outside.iter().all(|c| !c.pulled_mid_load));
    }
}
