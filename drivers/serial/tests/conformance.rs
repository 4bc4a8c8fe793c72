//! The serial driver passes the driver conformance kit, with the demo ETC card in the OBU's
//! ICC slot of a simulated programmer as the conformance card.

mod common;

use std::sync::Arc;

use cardd_conformance::{run, Harness};
use cardd_reader::ReaderFactory;
use cardd_serial::{SimProgrammer, SimProgrammerConfig};
use cardd_sim::SimCard;

struct SerialHarness {
    sim: SimProgrammer,
    factory: Arc<dyn ReaderFactory>,
    card: Option<SimCard>,
}

impl Harness for SerialHarness {
    fn name(&self) -> String {
        "serial".into()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.factory.clone()
    }
    fn reader_id(&self) -> String {
        common::READER_ID.into()
    }
    fn remove_card(&mut self) {
        self.card = self.sim.remove_card();
    }
    fn insert_card(&mut self) {
        let card = self
            .card
            .take()
            .or_else(|| self.sim.take_pocket())
            .expect("a card to insert");
        if self.sim.insert_card(card).is_err() {
            panic!("the ICC slot is already taken");
        }
    }
    fn remove_during_next_command(&mut self) -> bool {
        self.sim.remove_card_during_next_command(false);
        true
    }
    fn silence_next_command(&mut self) -> bool {
        self.sim.go_silent();
        true
    }
    fn recover_after_silence(&mut self) {
        self.sim.wake();
    }
}

#[test]
fn the_serial_driver_conforms() {
    let sim = SimProgrammer::with_config(SimProgrammerConfig::demo()).unwrap();
    let factory = common::factory(sim.path());
    let mut harness = SerialHarness {
        sim,
        factory,
        card: None,
    };
    let report = run(&mut harness).unwrap_or_else(|e| panic!("{e}"));
    println!("conformance report: {report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.passed.len(), 8, "{report:?}");
}
