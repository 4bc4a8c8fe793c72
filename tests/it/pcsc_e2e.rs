//! The PC/SC driver end to end against the REAL stack: pcscd (pcsc-lite) with vsmartcard's vpcd
//! reader, and a simulated card connected to vpcd by `cardd_pcsc::vpcd::VpcdBridge`.
//!
//! Why: a mock of PC/SC would only repeat what the driver's author believes pcsc-lite does.
//! These tests load money onto a card through pcscd, pull the card in the middle of CREDIT FOR
//! LOAD and let the card's own state decide whether the load landed, run the driver
//! conformance kit, and read the card through the daemon's JSON-RPC API with
//! `[[readers]] driver = "pcsc"`. The bridge's copy of the card is the ground truth.
//!
//! A load and a JSON-RPC read are recorded with the APDU trace recorder and played back
//! through the replay driver, which must give the same answers.
//!
//! They need pcscd running with vpcd configured (`cargo xtask test` installs the packages and
//! starts pcscd); without it they fail and say so, they never skip. The one vpcd slot
//! (`Virtual PCD 00 00`) is shared, so every test holds [`RIG`] for its whole run.

use crate::common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cardd_conformance::{Arranged, Harness};
use cardd_crypto::bcd;
use cardd_pcsc::vpcd::{ApduMatch, BridgeFault, VpcdBridge};
use cardd_pcsc::{PcscFactory, PcscOptions};
use cardd_purse::{
    decide_interrupted_load, CardKeyContext, LoadOutcome, LoadPlan, LoadSession, Pin, Purse,
    PurseError, SoftSam, TransactionType,
};
use cardd_reader::trace::{TraceOptions, TraceRecorder, TracedFactory, TRACE_BYTES_MAX_DEFAULT};
use cardd_reader::{
    CardChannel, CardEvent, CommandApdu, Protocol, Reader, ReaderError, ReaderFactory,
    ReaderSelector, StatusWord,
};
use cardd_replay::{ReplayFactory, Trace};
use cardd_sim::SimCard;
use serde_json::json;

/// The vpcd slot the bridge connects to (TCP port 35963).
const READER: &str = "Virtual PCD 00 00";
const READER_ID: &str = "pcsc:Virtual PCD 00 00";
const PCSCD_MISSING: &str = "pcscd with vsmartcard-vpcd is not running: run `cargo xtask test`";
/// How long pcscd may take to notice a card coming or going (it polls vpcd every 400 ms).
const SEEN_WAIT: Duration = Duration::from_secs(5);
const APDU_TIMEOUT: Duration = Duration::from_secs(5);
const TERMINAL: [u8; 6] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
/// CREDIT FOR LOAD's instruction byte.
const INS_CREDIT: u8 = 0x52;
/// GET BALANCE round trips timed for the latency figure.
const LATENCY_SAMPLES: usize = 500;

/// Serialises the tests: they share one vpcd slot.
static RIG: Mutex<()> = Mutex::new(());

/// The failure message when the rig is not there: these tests never skip.
fn missing(detail: impl std::fmt::Display) -> String {
    let hint = if std::env::var_os("CARDD_PCSCD").is_some() {
        " (CARDD_PCSCD is set, so xtask started pcscd, yet it does not serve vpcd's reader)"
    } else {
        ""
    };
    format!("{PCSCD_MISSING}{hint}: {detail}")
}

/// The vpcd slot and the card a test inserts and removes. Every change waits until pcscd's
/// event thread has counted it: a failed command can mark the reader empty before that thread
/// polls, and a card put back before the thread saw it leave is never seen to come back.
struct Rig {
    _serial: MutexGuard<'static, ()>,
    factory: Arc<PcscFactory>,
    bridge: VpcdBridge,
    /// pcscd's card event counter at the last change it registered.
    events: u32,
    /// Whether that change was the card coming in.
    counted_in: bool,
}

/// Takes the rig and checks that pcscd serves the vpcd reader with no card in it.
fn rig(card: SimCard) -> Rig {
    let serial = RIG.lock().unwrap_or_else(|p| p.into_inner());
    let factory = PcscFactory::new(PcscOptions {
        readers: vec![READER.into()],
        ..PcscOptions::default()
    })
    .expect("valid options");
    match factory.all_reader_names() {
        Ok(names) if names.iter().any(|n| n == READER) => {}
        Ok(names) => panic!(
            "{}",
            missing(format!("pcscd lists {names:?}, not {READER:?}"))
        ),
        Err(e) => panic!("{}", missing(e)),
    }
    let state = factory
        .wait_for_card(READER_ID, false, None, SEEN_WAIT)
        .expect("reader state")
        .unwrap_or_else(|| {
            panic!("a card is already in {READER} (is a cardd-vpcd-bridge running?); stop it first")
        });
    Rig {
        _serial: serial,
        factory: Arc::new(factory),
        bridge: VpcdBridge::new(card),
        events: state.events,
        counted_in: false,
    }
}

impl Rig {
    /// Puts the card in; returns once pcscd has registered it. A card that a fault pulled
    /// out is first waited out until pcscd has counted it gone.
    fn insert(&mut self) {
        if self.counted_in {
            self.seen(false, "leave");
        }
        self.bridge
            .insert()
            .unwrap_or_else(|e| panic!("{}", missing(e)));
        self.seen(true, "come into");
    }

    /// Pulls the card out; returns once pcscd has registered it.
    fn remove(&mut self) {
        self.bridge.remove();
        if self.counted_in {
            self.seen(false, "leave");
        }
    }

    /// Waits until pcscd has counted the card as `present` (an event after the last one).
    fn seen(&mut self, present: bool, what: &str) {
        let state = self
            .factory
            .wait_for_card(READER_ID, present, Some(self.events), SEEN_WAIT)
            .expect("reader state")
            .unwrap_or_else(|| {
                panic!(
                    "pcscd did not see the card {what} {READER} (event counter still {}, now {:?})",
                    self.events,
                    self.factory.card_state(READER_ID)
                )
            });
        self.events = state.events;
        self.counted_in = present;
    }

    fn open(&self) -> Reader {
        open(&self.factory)
    }
}

fn open(factory: &PcscFactory) -> Reader {
    let session = factory
        .open(&ReaderSelector::Id(READER_ID.into()))
        .expect("open the vpcd reader");
    Reader::new(session, APDU_TIMEOUT)
}

/// Selects, verifies the PIN and prepares a load of `amount` (MAC1 checked, MAC2 computed).
fn prepare_load(purse: &mut Purse<'_>, sam: &SoftSam, amount: u32) -> LoadSession {
    purse.select_etc_adf().expect("select the ETC application");
    let info = purse.read_etc_issue_info().expect("read 0015");
    purse
        .verify_pin(
            "test card",
            &Pin::ascii("123456").expect("pin"),
            &cardd_purse::MemoryPinRefusals::default(),
        )
        .expect("verify PIN");
    let plan = LoadPlan::new(
        CardKeyContext::etc(&info),
        amount,
        TERMINAL,
        bcd::date(2026, 11, 22),
        bcd::time(10, 0, 0),
    );
    let init = purse.init_load_for(&plan).expect("INITIALIZE FOR LOAD");
    LoadSession::start(plan, init, sam).expect("MAC1 verifies")
}

fn select_adf() -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01])
}

#[test]
fn pcscd_lists_the_virtual_reader() {
    let rig = rig(cardd_sim::demo::demo_etc_card());
    let listed = rig.factory.list().expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, READER_ID);
    assert_eq!(listed[0].name, READER);
    assert_eq!(listed[0].driver, "pcsc");
    assert!(listed[0].capabilities.events && listed[0].capabilities.exclusive);
    let unfiltered = PcscFactory::new(PcscOptions::default())
        .expect("options")
        .list()
        .expect("list");
    assert!(
        unfiltered.iter().any(|r| r.id == "pcsc:Virtual PCD 00 01"),
        "{unfiltered:?}"
    );
    // vpcd's readers are static: a hotplug wait ends empty, within its bound.
    let mut watch = rig
        .factory
        .hotplug()
        .expect("the pcsc driver watches for readers");
    let started = Instant::now();
    assert_eq!(watch.wait(Duration::from_millis(300)).expect("wait"), None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // No card: the session exists, commands say NoCard.
    let mut reader = rig.open();
    let err = reader.transmit(&select_adf()).unwrap_err();
    assert!(matches!(err, ReaderError::NoCard { .. }), "{err:?}");
}

#[test]
fn a_full_load_through_pcsc_lands_on_the_card_with_a_valid_tac() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    let sam = SoftSam::demo();
    rig.insert();
    let mut reader = rig.open();
    let atr = reader.session().power_on().expect("power on");
    assert_eq!(atr.0, cardd_sim::cards::ETC_ATR);
    // The simulated ETC card's ATR offers only T=0; the driver reports what pcscd negotiated.
    assert_eq!(reader.session().protocol(), Protocol::T0);

    let mut purse = Purse::new(&mut reader);
    let load = prepare_load(&mut purse, &sam, 12_345);
    let tac = purse.credit_for(&load).expect("CREDIT FOR LOAD");
    load.verify_tac(&sam, tac).expect("TAC verifies");
    assert_eq!(purse.balance().expect("balance"), 10_000 + 12_345);
    let proof = purse
        .prove(TransactionType::EpLoad, load.atc_after().expect("atc"))
        .expect("GET TRANSACTION PROOF")
        .expect("a proof");
    assert_eq!((proof.mac, proof.tac), (load.mac2, tac));

    let card = rig.bridge.card();
    assert_eq!(card.balance(), Some(10_000 + 12_345));
    assert_eq!(card.online_atc(), Some(1));
    assert_eq!(card.log().len(), 1, "one load in the card's log");

    // Round-trip time of GET BALANCE through PC/SC -> pcscd -> vpcd -> bridge -> card.
    let get_balance = CommandApdu::new(0x80, 0x5C, 0x00, 0x02).with_le(4);
    let apdus_before = rig.bridge.stats().apdus;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let r = reader.transmit(&get_balance).expect("GET BALANCE");
        samples.push(started.elapsed());
        assert_eq!(r.sw, StatusWord::OK);
    }
    assert_eq!(
        rig.bridge.stats().apdus - apdus_before,
        LATENCY_SAMPLES as u64,
        "every GET BALANCE reached the card"
    );
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / LATENCY_SAMPLES as u32;
    println!(
        "GET BALANCE round trip through PC/SC over {LATENCY_SAMPLES} runs: min {:?}, median {:?}, mean {mean:?}, p99 {:?}, max {:?}",
        samples[0],
        samples[LATENCY_SAMPLES / 2],
        samples[LATENCY_SAMPLES * 99 / 100],
        samples[LATENCY_SAMPLES - 1],
    );
    rig.remove();
}

/// What a load and its proof left on the card: ATR, TAC, balance after, the proof's MAC and TAC.
type LoadSeen = (Vec<u8>, [u8; 4], u32, [u8; 4], [u8; 4]);

/// Powers the card up, loads 123.45 yuan, reads the balance and the load's proof.
fn load_and_prove(factory: &dyn ReaderFactory, sam: &SoftSam) -> LoadSeen {
    let session = factory
        .open(&ReaderSelector::Index(0))
        .expect("open the reader");
    let mut reader = Reader::new(session, APDU_TIMEOUT);
    let atr = reader.session().power_on().expect("power on");
    let mut purse = Purse::new(&mut reader);
    let load = prepare_load(&mut purse, sam, 12_345);
    let tac = purse.credit_for(&load).expect("CREDIT FOR LOAD");
    load.verify_tac(sam, tac).expect("TAC verifies");
    let balance = purse.balance().expect("balance");
    let proof = purse
        .prove(TransactionType::EpLoad, load.atc_after().expect("atc"))
        .expect("GET TRANSACTION PROVE")
        .expect("a proof");
    (atr.0, tac, balance, proof.mac, proof.tac)
}

#[test]
fn a_load_recorded_through_pcsc_replays_through_the_replay_driver() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    let sam = SoftSam::demo();
    rig.insert();
    let dir = tempfile::tempdir().expect("temp dir");
    let (clear_path, redacted_path) = (
        dir.path().join("clear.jsonl"),
        dir.path().join("redacted.jsonl"),
    );
    let recorder = |path: &std::path::Path, redaction: Option<Arc<dyn cardd_reader::Redaction>>| {
        TraceRecorder::open(TraceOptions {
            path: path.to_owned(),
            bytes_max: TRACE_BYTES_MAX_DEFAULT,
            redaction,
            on_failure: None,
        })
    };
    // Two recorders on the same traffic: as the daemon records by default, and in the clear.
    let redacted = recorder(&redacted_path, Some(Arc::new(cardd_purse::PurseRedaction)));
    let clear = recorder(&clear_path, None);
    let pcsc: Arc<dyn ReaderFactory> = rig.factory.clone();
    let traced = TracedFactory::wrap(TracedFactory::wrap(pcsc, redacted.clone()), clear.clone());
    let recorded = load_and_prove(traced.as_ref(), &sam);
    assert_eq!(recorded.2, 10_000 + 12_345);
    assert_eq!(rig.bridge.card().balance(), Some(10_000 + 12_345));
    rig.remove();
    assert_eq!((redacted.write_failures(), clear.write_failures()), (0, 0));

    // The redacted trace keeps no PIN, MAC or TAC; the clear one has them.
    let redacted_text = std::fs::read_to_string(&redacted_path).expect("redacted trace");
    let clear_text = std::fs::read_to_string(&clear_path).expect("clear trace");
    let pin = hex::encode_upper("123456");
    let (tac, mac) = (hex::encode_upper(recorded.1), hex::encode_upper(recorded.3));
    for secret in [&pin, &tac, &mac] {
        assert!(
            !redacted_text.contains(secret.as_str()),
            "{secret} in {redacted_text}"
        );
        assert!(
            clear_text.contains(secret.as_str()),
            "{secret} not in the clear trace"
        );
    }
    for hidden in [
        "\"hidden\":[\"PIN\"]",
        "\"rsp_hidden\":[\"MAC1\"]",
        "\"hidden\":[\"MAC2\"]",
        "\"rsp_hidden\":[\"TAC\"]",
        "\"rsp_hidden\":[\"MAC, TAC\"]",
    ] {
        assert!(
            redacted_text.contains(hidden),
            "{hidden} not hidden in {redacted_text}"
        );
    }

    // Played back, the clear trace answers the same load the same way: same MAC2 (the card's
    // recorded random), same TAC, balance and proof; the card in the slot is not touched.
    let trace = Trace::load(&clear_path).expect("the trace parses");
    assert_eq!(
        trace.exchanges(),
        7,
        "SELECT, READ BINARY, VERIFY, INITIALIZE, CREDIT, GET BALANCE, PROVE"
    );
    let replay = ReplayFactory::new(trace, "pcsc");
    assert_eq!(load_and_prove(&replay, &sam), recorded);
    assert_eq!(rig.bridge.card().balance(), Some(10_000 + 12_345));

    // A client that sends something else is told which recorded exchange differs.
    let replay = ReplayFactory::new(Trace::load(&clear_path).expect("the trace parses"), "pcsc");
    let session = replay
        .open(&ReaderSelector::Index(0))
        .expect("open the replay");
    let mut reader = Reader::new(session, APDU_TIMEOUT);
    reader.session().power_on().expect("power on");
    let err = Purse::new(&mut reader).select_mf().unwrap_err().to_string();
    assert!(
        err.contains("exchange 1 of the trace") && err.contains("00A40000021001"),
        "{err}"
    );
}

#[test]
fn a_card_pulled_during_credit_is_decided_from_the_card_itself() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    let sam = SoftSam::demo();
    for (fault, expected, balance) in [
        (
            BridgeFault::RemoveAfterExec,
            LoadOutcome::Landed,
            10_000 + 2_000,
        ),
        (
            BridgeFault::RemoveBeforeExec,
            LoadOutcome::NotLanded,
            10_000,
        ),
    ] {
        rig.bridge.set_card(cardd_sim::demo::demo_etc_card());
        rig.insert();
        let mut reader = rig.open();
        let load = {
            let mut purse = Purse::new(&mut reader);
            prepare_load(&mut purse, &sam, 2_000)
        };
        // The card leaves when CREDIT FOR LOAD reaches it.
        rig.bridge.fault_on(ApduMatch::Ins(INS_CREDIT), fault);
        let err = Purse::new(&mut reader).credit_for(&load).unwrap_err();
        assert!(
            matches!(err, PurseError::Reader(ReaderError::CardRemoved { .. })),
            "{fault:?}: {err:?}"
        );
        assert!(err.outcome_unknown(), "{err}");
        assert!(!rig.bridge.fault_pending(), "the fault fired on CREDIT");
        rig.seen(false, "leave");

        // The teller puts the card back; the card's own state decides.
        rig.insert();
        reader
            .session()
            .power_on()
            .expect("power on after re-insertion");
        let mut purse = Purse::new(&mut reader);
        purse.select_etc_adf().expect("select");
        purse
            .verify_pin(
                "test card",
                &Pin::ascii("123456").expect("pin"),
                &cardd_purse::MemoryPinRefusals::default(),
            )
            .expect("verify PIN");
        let seen = purse.observe_load(&load).expect("read the card's counters");
        assert_eq!(decide_interrupted_load(&load, seen), expected, "{fault:?}");
        assert_eq!(rig.bridge.card().balance(), Some(balance), "{fault:?}");
        assert_eq!(purse.balance().expect("balance"), balance, "{fault:?}");
        rig.remove();
    }
}

#[test]
fn card_events_and_exclusive_access_through_pcscd() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    let mut watcher = rig
        .factory
        .open(&ReaderSelector::Id(READER_ID.into()))
        .expect("open");
    let mut next = |timeout: Duration| {
        watcher
            .events()
            .expect("the pcsc driver reports card events")
            .wait_for_change(timeout)
            .expect("wait for a card event")
    };
    rig.insert();
    assert_eq!(
        next(SEEN_WAIT),
        Some(CardEvent::Inserted {
            atr: cardd_reader::Atr(cardd_sim::cards::ETC_ATR.to_vec())
        })
    );
    let started = Instant::now();
    assert_eq!(
        next(Duration::from_millis(300)),
        None,
        "no event without a change"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "bounded wait");

    // Two sessions: a PC/SC transaction keeps the second out, within its bound.
    let mut first = rig.open();
    let mut second = rig.open();
    first
        .session()
        .exclusive()
        .expect("exclusive access")
        .begin(Duration::from_secs(2))
        .expect("begin");
    let started = Instant::now();
    let busy = second
        .session()
        .exclusive()
        .expect("exclusive access")
        .begin(Duration::from_millis(300));
    assert!(matches!(busy, Err(ReaderError::Busy { .. })), "{busy:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        first.transmit(&select_adf()).expect("holder works").sw,
        StatusWord::OK
    );
    first.session().exclusive().expect("ea").end().expect("end");
    second
        .session()
        .exclusive()
        .expect("ea")
        .begin(Duration::from_secs(2))
        .expect("free after the holder ended");
    assert_eq!(
        second.transmit(&select_adf()).expect("select").sw,
        StatusWord::OK
    );
    second
        .session()
        .exclusive()
        .expect("ea")
        .end()
        .expect("end");
    drop((first, second));

    rig.remove();
    assert_eq!(next(SEEN_WAIT), Some(CardEvent::Removed));
}

/// The conformance kit's view of the vpcd rig.
struct VpcdHarness {
    rig: Rig,
}

impl Harness for VpcdHarness {
    fn name(&self) -> String {
        "pcsc (pcscd + vpcd)".into()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.rig.factory.clone()
    }
    fn reader_id(&self) -> String {
        READER_ID.into()
    }
    fn remove_card(&mut self) -> Result<(), String> {
        self.rig.remove();
        Ok(())
    }
    fn insert_card(&mut self) -> Result<(), String> {
        self.rig.insert();
        Ok(())
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        self.rig
            .bridge
            .fault_on(ApduMatch::Next, BridgeFault::RemoveBeforeExec);
        Ok(Arranged::Yes)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        self.rig.bridge.fault_on(ApduMatch::Next, BridgeFault::Hold);
        Ok(Arranged::Yes)
    }
    fn recover_after_silence(&mut self) -> Result<(), String> {
        // vpcd waits for the held answer with no timeout; pulling the card ends that wait.
        self.remove_card()?;
        self.insert_card()
    }
}

#[test]
fn the_pcsc_driver_passes_the_conformance_kit() {
    let mut harness = VpcdHarness {
        rig: rig(cardd_sim::demo::demo_etc_card()),
    };
    harness.rig.insert();
    let report = cardd_conformance::run(&mut harness)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert!(report.skipped().is_empty(), "{report:?}");
    assert_eq!(report.passed(), cardd_conformance::CHECKS, "{report:?}");
    assert_eq!(
        cardd_pcsc::worker::stuck_workers(),
        0,
        "no PC/SC call is left blocked once the silent card was pulled"
    );
    harness.rig.remove();
}

/// The APDU timeout of the silent-card tests.
const SILENT: Duration = Duration::from_millis(500);
/// What a bounded call may take beyond its timeout in these tests: the watchdog's grace after
/// `SCardCancel`, and a generous margin for a loaded machine.
const OVERRUN_MAX: Duration = Duration::from_millis(cardd_pcsc::watchdog::CANCEL_GRACE_MS + 1_000);

/// The names of this process's threads (Linux truncates them to 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// A card that never answers: `SCardCancel` does not end `SCardTransmit`, so the watchdog shuts
/// the context's connection to pcscd down after its grace. The command is `Timeout` within its
/// bound plus that grace; the next call (a connect on a fresh context, which pcscd holds while
/// vpcd still waits for the card) is bounded by `connect_timeout_ms` the same way; once the card
/// is back the same session works again.
#[test]
fn a_silent_card_times_out_and_the_session_recovers_on_a_fresh_context() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    rig.insert();
    let connect_timeout = Duration::from_millis(1_000);
    let factory = PcscFactory::new(PcscOptions {
        readers: vec![READER.into()],
        connect_timeout_ms: connect_timeout.as_millis() as u64,
        ..PcscOptions::default()
    })
    .expect("valid options");
    let mut reader = open(&factory);
    reader.transmit(&select_adf()).expect("the card answers");

    rig.bridge.fault_on(ApduMatch::Next, BridgeFault::Hold);
    reader.set_apdu_timeout(SILENT);
    let forced = cardd_pcsc::watchdog::calls_forced_total();
    let started = Instant::now();
    let result = reader.transmit(&select_adf());
    let took = started.elapsed();
    assert!(
        matches!(result, Err(ReaderError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        took >= SILENT && took < SILENT + OVERRUN_MAX,
        "took {took:?}"
    );
    assert!(rig.bridge.stats().holding, "the card is still silent");
    assert!(
        cardd_pcsc::watchdog::calls_forced_total() > forced,
        "SCardCancel does not end SCardTransmit: the connection was shut down"
    );

    let started = Instant::now();
    let result = reader.transmit(&select_adf());
    let took = started.elapsed();
    assert!(
        matches!(result, Err(ReaderError::Timeout { .. })),
        "a connect while pcscd waits for the silent card: {result:?}"
    );
    assert!(took < connect_timeout + OVERRUN_MAX, "took {took:?}");

    reinsert_and_check(&mut rig, &mut reader);
    assert!(cardd_pcsc::watchdog::calls_in_flight().is_empty());
    assert_eq!(cardd_pcsc::worker::stuck_workers(), 0);
    rig.remove();
}

/// Pulls the held card and presents it again: the same session must work again, on a fresh
/// context.
fn reinsert_and_check(rig: &mut Rig, reader: &mut Reader) {
    rig.remove();
    rig.insert();
    reader.set_apdu_timeout(APDU_TIMEOUT);
    let _ = reader.session().power_on();
    reader
        .transmit(&select_adf())
        .expect("the session works again once the card is back");
}

/// A session's PC/SC calls run on the thread that calls it: while a command waits for a silent
/// card, the watchdog lists it on the caller's thread, and the driver has no thread of its own
/// for the session.
#[test]
fn a_sessions_pcsc_calls_run_on_the_callers_thread() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    rig.insert();
    let mut reader = rig.open();
    reader.transmit(&select_adf()).expect("the card answers");
    rig.bridge.fault_on(ApduMatch::Next, BridgeFault::Hold);
    let caller = std::thread::Builder::new()
        .name("reader-probe".into())
        .spawn(move || {
            reader.set_apdu_timeout(Duration::from_secs(2));
            let result = reader.transmit(&select_adf());
            (reader, result)
        })
        .expect("spawn");
    let probe = caller.thread().id();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut in_flight = Vec::new();
    while Instant::now() < deadline {
        in_flight = cardd_pcsc::watchdog::calls_in_flight();
        if !in_flight.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(in_flight, [("SCardTransmit", probe)]);
    let names = thread_names();
    assert!(names.iter().any(|n| n == "reader-probe"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("pcsc-Virtual")),
        "no per-session PC/SC thread: {names:?}"
    );
    let (mut reader, result) = caller.join().expect("the caller");
    assert!(
        matches!(result, Err(ReaderError::Timeout { .. })),
        "{result:?}"
    );
    reinsert_and_check(&mut rig, &mut reader);
    rig.remove();
}

/// Starts a daemon on `toml` (with the demo operators), logs in as a teller and returns
/// `card.summary` of `reader_id` and what `readers.list` says of it.
async fn summary_through_a_daemon(
    toml: &str,
    reader_id: &str,
) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[data]\ndir = {:?}\n{toml}",
        dir.path().join("data").display().to_string()
    );
    let mut config = cardd::config::Config::from_toml(&toml, "pcsc_e2e.toml").expect("config");
    // The demo operators (teller/teller123) are seeded only for the embedded default.
    config.demo = true;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let running = cardd::server::start(config, listener)
        .await
        .expect("the daemon starts");
    let d = common::TestDaemon::started(running, dir);
    let teller = d.login("teller", "teller123").await;
    let readers = d.ok("readers.list", json!({}), Some(&teller)).await;
    let listed = readers
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["id"] == reader_id)
        .unwrap_or_else(|| panic!("{reader_id} not in readers.list: {readers}"))
        .clone();
    let summary = d
        .ok(
            "card.summary",
            json!({"reader_id": reader_id}),
            Some(&teller),
        )
        .await;
    d.stop().await;
    (summary, listed)
}

#[test]
fn the_daemon_serves_the_vpcd_reader_over_json_rpc() {
    let mut rig = rig(cardd_sim::demo::demo_etc_card());
    rig.insert();
    let traces = tempfile::tempdir().expect("temp dir");
    let trace = traces.path().join("vpcd.jsonl");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The daemon on the vpcd reader, its card traffic recorded (redacted, the default).
    let pcsc = format!(
        "[[readers]]\ndriver = \"pcsc\"\n[readers.options]\nreaders = [\"{READER}\"]\n\
         [readers.trace]\npath = {:?}\n",
        trace.display().to_string()
    );
    let (summary, vpcd) = runtime.block_on(summary_through_a_daemon(&pcsc, READER_ID));
    assert_eq!(vpcd["driver"], "pcsc");
    assert_eq!(vpcd["card_present"], true, "{vpcd}");
    assert_eq!(summary["kind"], "etc", "{summary}");
    assert_eq!(
        summary["card_number"],
        cardd_sim::demo::DEMO_ETC_CARD_NUMBER
    );
    assert_eq!(summary["plate"], cardd_sim::demo::DEMO_ETC_PLATE);
    assert_eq!(summary["balance"], "100.00");
    assert_eq!(
        rig.bridge.card().balance(),
        Some(10_000),
        "reading changes no money"
    );
    rig.remove();

    // The trace, played back by a daemon on the replay driver, reads the same card.
    let text = std::fs::read_to_string(&trace).expect("the trace");
    assert!(text.contains("\"mark\":\"card.summary\""), "{text}");
    let replay = format!(
        "[[readers]]\ndriver = \"replay\"\n[readers.options]\ntrace = {:?}\nname = \"vpcd\"\n",
        trace.display().to_string()
    );
    let (replayed, listed) = runtime.block_on(summary_through_a_daemon(&replay, "replay:vpcd"));
    assert_eq!(listed["card_present"], true, "{listed}");
    assert_eq!(replayed, summary);
}

#[test]
fn the_pcsc_driver_stops_its_waits_on_request() {
    let rig = rig(cardd_sim::demo::demo_etc_card());
    let session = rig
        .factory
        .open(&ReaderSelector::Id(READER_ID.into()))
        .expect("open the vpcd reader");
    let watch = rig.factory.hotplug().expect("pcsc watches for readers");
    cardd_conformance::stopped_waits_end("pcsc", session, watch).unwrap_or_else(|e| panic!("{e}"));
}
