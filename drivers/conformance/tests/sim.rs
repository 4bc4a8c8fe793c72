//! The simulated driver passes the conformance kit, in plain and T=0 modes; the guided harness
//! (for real hardware) waits for the card to move and fails a step nobody performs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_conformance::{
    run, stopped_waits_end, Arranged, GuidedHarness, Harness, Outcome, Report, BOUNDED_TIMEOUT,
    CHAINING, CHECKS, EVENTS, LISTING_AND_OPEN, PRESENCE_AND_ATR, PROMPT_INSERT, PROMPT_REMOVE,
    REMOVAL, REMOVAL_MID_COMMAND, ROUND_TRIPS,
};
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

/// The guided harness on a simulated reader, with the "person" played by the prompt: it moves
/// the card when asked (or, for the timeout case, does nothing).
fn guided(world: &SimWorld, person_moves_the_card: bool, step_timeout_ms: u64) -> Report {
    let factory = Arc::new(SimFactory::new(world.clone()));
    let hands = world.clone();
    let mut pocket = None;
    let prompts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = prompts.clone();
    let prompt = move |line: &str| {
        seen.lock().unwrap().push(line.to_owned());
        if !person_moves_the_card {
            return;
        }
        if line.starts_with(PROMPT_REMOVE) {
            pocket = hands.remove_card("sim:c");
        } else if line.starts_with(PROMPT_INSERT) {
            let card = pocket.take().expect("the card was removed first");
            hands.insert_card("sim:c", card).unwrap();
        }
    };
    let mut harness = GuidedHarness::new(
        "sim (guided)",
        factory,
        "sim:c",
        Duration::from_millis(step_timeout_ms),
        Box::new(prompt),
    );
    let report = run(&mut harness);
    let prompts = prompts.lock().unwrap();
    assert!(
        prompts.iter().all(|p| p.contains("sim:c")),
        "each prompt names the reader: {prompts:?}"
    );
    report
}

#[test]
fn guided_steps_wait_for_the_card_to_move_and_skip_what_a_person_cannot_arrange() {
    let world = SimHarness::new(false).world;
    let report = guided(&world, true, 30_000);
    let outcomes: Vec<(&str, Outcome)> =
        report.checks.iter().map(|c| (c.name, c.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (LISTING_AND_OPEN, Outcome::Passed),
            (PRESENCE_AND_ATR, Outcome::Passed),
            (ROUND_TRIPS, Outcome::Passed),
            (CHAINING, Outcome::Passed),
            (REMOVAL, Outcome::Passed),
            (REMOVAL_MID_COMMAND, Outcome::Skipped),
            (BOUNDED_TIMEOUT, Outcome::Skipped),
            (EVENTS, Outcome::Passed),
        ],
        "{report}"
    );
    assert!(report.passed_all());
    for (_, why) in report.skipped() {
        assert!(why.contains("test hooks"), "{why}");
    }
}

#[test]
fn a_guided_step_nobody_performs_times_out_and_fails_its_check() {
    let world = SimHarness::new(false).world;
    let started = Instant::now();
    let report = guided(&world, false, 300);
    assert!(started.elapsed() < Duration::from_secs(30));
    let failure = report.failure().expect("a failure");
    assert_eq!(failure.check, REMOVAL, "{report}");
    assert!(failure.detail.contains("step timed out"), "{failure}");
    assert!(failure.detail.contains(PROMPT_REMOVE), "{failure}");
    let removal = &report.checks[4];
    assert!(removal.duration_ms >= 300, "{removal:?}");
    assert!(!report.passed_all());
    // The text report names the failed check and what was not run.
    let text = report.to_string();
    assert!(text.contains("FAILED   card removal reported"), "{text}");
    assert!(
        text.contains("FAIL: 4 passed, 1 failed, 3 skipped"),
        "{text}"
    );
}
