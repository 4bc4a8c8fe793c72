//! The simulated driver passes the conformance kit, in plain and T=0 modes.

use std::sync::Arc;

use cardd_conformance::{run, stopped_waits_end, Arranged, Harness, CHECKS};
use cardd_reader::{ReaderFactory, ReaderSelector};
use cardd_sim::{FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

struct SimHarness {
    world: SimWorld,
    factory: Arc<SimFactory>,
    card: Option<cardd_sim::SimCard>,
}

impl SimHarness {
    fn new(t0: bool) -> Self {
        let world = SimWorld::new();
        world
            .add_reader(
                SimReaderConfig::new("c", SimReaderKind::Contact)
                    .with_card(cardd_sim::demo::demo_etc_card())
                    .with_t0(t0),
            )
            .unwrap();
        let factory = Arc::new(SimFactory::new(world.clone()));
        SimHarness {
            world,
            factory,
            card: None,
        }
    }

    fn next_apdu(&self) -> u64 {
        self.world.apdu_count("sim:c") + 1
    }
}

impl Harness for SimHarness {
    fn name(&self) -> String {
        "sim".into()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.factory.clone()
    }
    fn reader_id(&self) -> String {
        "sim:c".into()
    }
    fn remove_card(&mut self) -> Result<(), String> {
        self.card = self.world.remove_card("sim:c");
        Ok(())
    }
    fn insert_card(&mut self) -> Result<(), String> {
        let card = self
            .card
            .take()
            .or_else(|| self.world.take_pocket("sim:c"))
            .ok_or("no card to insert")?;
        self.world
            .insert_card("sim:c", card)
            .map_err(|e| e.to_string())
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        self.world
            .set_fault_plan(
                "sim:c",
                FaultPlan::new().at(self.next_apdu(), FaultKind::RemoveBeforeExec),
            )
            .map_err(|e| e.to_string())?;
        Ok(Arranged::Yes)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        self.world
            .set_fault_plan(
                "sim:c",
                FaultPlan::new().at(self.next_apdu(), FaultKind::Timeout { executed: false }),
            )
            .map_err(|e| e.to_string())?;
        Ok(Arranged::Yes)
    }
}

#[test]
fn the_simulated_driver_conforms() {
    for t0 in [false, true] {
        let report = run(&mut SimHarness::new(t0))
            .into_result()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.skipped().is_empty(), "{report:?}");
        assert_eq!(report.passed(), CHECKS, "{report:?}");
    }
}

#[test]
fn the_sim_driver_stops_its_waits_on_request() {
    let harness = SimHarness::new(false);
    let session = harness
        .factory
        .open(&ReaderSelector::Id("sim:c".into()))
        .expect("open");
    let watch = harness
        .factory
        .hotplug()
        .expect("the sim driver watches for readers");
    stopped_waits_end("sim", session, watch).unwrap_or_else(|e| panic!("{e}"));
}
