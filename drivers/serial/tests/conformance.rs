//! The serial driver passes the driver conformance kit, with the demo ETC card in the OBU's
//! ICC slot of a simulated programmer as the conformance card.

mod common;

use std::sync::Arc;

use cardd_conformance::{run, Arranged, Harness, CHECKS};
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
    fn remove_card(&mut self) -> Result<(), String> {
        self.card = self.sim.remove_card();
        Ok(())
    }
    fn insert_card(&mut self) -> Result<(), String> {
        let card = self
            .card
            .take()
            .or_else(|| self.sim.take_pocket())
            .ok_or("no card to insert")?;
        self.sim
            .insert_card(card)
            .map_err(|_| "the ICC slot is already taken".to_owned())
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        self.sim.remove_card_during_next_command(false);
        Ok(Arranged::Yes)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        self.sim.go_silent();
        Ok(Arranged::Yes)
    }
    fn recover_after_silence(&mut self) -> Result<(), String> {
        self.sim.wake();
        Ok(())
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
    let report = run(&mut harness)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert!(report.skipped().is_empty(), "{report:?}");
    assert_eq!(report.passed(), CHECKS, "{report:?}");
}
