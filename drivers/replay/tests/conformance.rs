//! The replay driver passes the conformance kit by playing back the kit's own run on the
//! simulated driver (in plain and T=0 modes), recorded with the trace recorder: the pulled card,
//! the card pulled mid-command and the silent card are in the trace, so the replay harness only
//! says yes. Card events are not replayed (the driver reports none), so that check is skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cardd_conformance::{run, Arranged, Harness};
use cardd_reader::trace::{TraceOptions, TraceRecorder, TracedFactory, TRACE_BYTES_MAX_DEFAULT};
use cardd_reader::{CardChannel, CommandApdu, Reader, ReaderError, ReaderFactory, ReaderSelector};
use cardd_replay::{ReplayFactory, Trace};
use cardd_sim::{FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

struct SimHarness {
    world: SimWorld,
    factory: Arc<dyn ReaderFactory>,
    card: Option<cardd_sim::SimCard>,
}

impl SimHarness {
    fn recorded(t0: bool, path: PathBuf) -> Self {
        let world = SimWorld::new();
        world
            .add_reader(
                SimReaderConfig::new("c", SimReaderKind::Contact)
                    .with_card(cardd_sim::demo::demo_etc_card())
                    .with_t0(t0),
            )
            .unwrap();
        let recorder = TraceRecorder::open(TraceOptions {
            path,
            bytes_max: TRACE_BYTES_MAX_DEFAULT,
            redaction: None,
            on_failure: None,
        });
        let factory = TracedFactory::wrap(Arc::new(SimFactory::new(world.clone())), recorder);
        SimHarness {
            world,
            factory,
            card: None,
        }
    }

    fn at_next_apdu(&self, kind: FaultKind) -> Result<Arranged, String> {
        let next = self.world.apdu_count("sim:c") + 1;
        self.world
            .set_fault_plan("sim:c", FaultPlan::new().at(next, kind))
            .map_err(|e| e.to_string())?;
        Ok(Arranged::Yes)
    }
}

impl Harness for SimHarness {
    fn name(&self) -> String {
        "sim (recorded)".into()
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
        self.at_next_apdu(FaultKind::RemoveBeforeExec)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        self.at_next_apdu(FaultKind::Timeout { executed: false })
    }
}

/// Plays a trace back; what the harness would do to the card is already in it.
struct ReplayHarness(Arc<ReplayFactory>);

impl Harness for ReplayHarness {
    fn name(&self) -> String {
        "replay".into()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.0.clone()
    }
    fn reader_id(&self) -> String {
        "replay:kit".into()
    }
    fn remove_card(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn insert_card(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        Ok(Arranged::Yes)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        Ok(Arranged::Yes)
    }
}

fn temp_trace(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cardd-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("trace.jsonl")
}

#[test]
fn a_recorded_conformance_run_replays_through_the_kit() {
    for t0 in [false, true] {
        let path = temp_trace(&format!("kit-{t0}"));
        let mut recorded = SimHarness::recorded(t0, path.clone());
        let report = run(&mut recorded)
            .into_result()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.passed().len(), 8, "{report:?}");
        drop(recorded);

        let trace = Trace::load(&path).unwrap();
        assert!(trace.exchanges() > 8, "{}", trace.exchanges());
        let mut replay = ReplayHarness(Arc::new(ReplayFactory::new(trace, "kit")));
        let report = run(&mut replay)
            .into_result()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.passed().len(), 7, "{report:?}");
        assert_eq!(
            report.skipped(),
            [("card events in order", "the driver reports no card events")]
        );
    }
}

#[test]
fn a_replay_refuses_a_command_the_trace_did_not_record() {
    let path = temp_trace("differs");
    let mut recorded = SimHarness::recorded(false, path.clone());
    run(&mut recorded)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    let factory = ReplayFactory::new(Trace::load(&path).unwrap(), "kit");
    // The kit's first session opened the reader and sent nothing; the second one did the work.
    let _first = factory.open(&ReaderSelector::Index(0)).unwrap();
    let mut reader = Reader::new(
        factory.open(&ReaderSelector::Index(0)).unwrap(),
        Duration::from_secs(1),
    );
    reader.session().presence().unwrap();
    reader.session().power_on().unwrap();
    let select_mf = CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x3F, 0x00]);
    let err = reader.transmit(&select_mf).unwrap_err();
    assert!(matches!(err, ReaderError::Driver { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("exchange 1 of the trace")
            && text.contains("was sent 00A40000023F00 where the trace recorded 00A40000021001"),
        "{text}"
    );
}
