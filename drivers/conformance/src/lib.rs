//! The driver conformance kit: one suite that any reader driver (built-in or plugin) runs to
//! prove it keeps the contract of `cardd_reader` (see `docs/driver-guide.md`).
//!
//! A driver's test builds a [`Harness`]: the driver's factory, the id of a reader holding the
//! **conformance card**, and ways to pull and re-insert that card, to pull it during a command
//! and to keep the card silent. [`run`] then checks, through `cardd_reader::Reader` exactly as
//! the daemon uses a driver:
//!
//! 1. the factory lists the reader and opens it; the listing and the session agree;
//! 2. the card is present and powers up with an ATR;
//! 3. commands round-trip (`SELECT` answers `9000`, an unknown instruction `6D00`);
//! 4. chaining works: `READ BINARY` of 0015 with `Le = 00` returns the whole file whatever the
//!    transport's protocol (T=0 `61xx`/`6Cxx` are handled by the reader layer);
//! 5. a pulled card is reported: presence says absent and a command fails with `NoCard` or
//!    `CardRemoved`, not a generic error; a re-inserted card works again;
//! 6. a card pulled during a command gives `CardRemoved` (outcome unknown), when the harness can
//!    arrange it;
//! 7. a silent card gives `Timeout` within the timeout plus a bounded grace, when the harness
//!    can arrange it, and the reader works again afterwards;
//! 8. drivers with card events report removal then insertion, in that order, without polling.
//!
//! [`stopped_waits_end`] is a separate check for drivers that can end their event waits from
//! another thread (`WaitStopper`): the waits a stopper ends return `Ok(None)`, promptly.
//!
//! The conformance card answers like the ETC user card of `docs/card-protocol.md` for these
//! commands: `00 A4 00 00 02 10 01` (select the ADF) → `9000`; `00 B0 95 00 00` (read 0015) →
//! 43 or 50 bytes and `9000`; instruction `0xEE` → `6D00`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_reader::{
    CardChannel, CardEvent, CardPresence, CardReader, CommandApdu, HotplugWatch, Reader,
    ReaderError, ReaderFactory, ReaderSelector, StatusWord,
};

/// How long a driver may overrun a timeout before the kit calls it unbounded.
pub const TIMEOUT_GRACE_MS: u64 = 1_500;
/// The APDU timeout the kit uses for ordinary commands.
pub const APDU_TIMEOUT_MS: u64 = 5_000;
/// The short timeout used for the silent-card check.
pub const SILENT_TIMEOUT_MS: u64 = 500;
/// How long the kit waits for a card event.
pub const EVENT_WAIT_MS: u64 = 5_000;
/// How long a stopped wait may take to return in [`stopped_waits_end`] (the waits themselves
/// are an hour long).
pub const STOPPED_WAIT_RETURN_MS: u64 = 30_000;

/// What a driver's test provides.
pub trait Harness {
    /// The driver's name, for messages.
    fn name(&self) -> String;
    /// The factory under test.
    fn factory(&self) -> Arc<dyn ReaderFactory>;
    /// The id of the reader holding the conformance card.
    fn reader_id(&self) -> String;
    /// Pulls the card out; returns once the transport can see it gone.
    fn remove_card(&mut self);
    /// Puts the card back; returns once the transport can see it.
    fn insert_card(&mut self);
    /// Arranges for the card to be pulled while the next command is in flight. `false` when the
    /// transport cannot do that (the check is then reported as skipped, by name).
    fn remove_during_next_command(&mut self) -> bool;
    /// Arranges for the card to stay silent on the next command. `false` when the transport
    /// cannot do that.
    fn silence_next_command(&mut self) -> bool;
    /// Undoes [`Harness::silence_next_command`] and leaves the card answering again (for
    /// transports where a silent card has to be reset by the harness).
    fn recover_after_silence(&mut self) {}
}

/// A check that failed.
#[derive(Debug, thiserror::Error)]
#[error("{driver}: conformance check {check:?} failed: {detail}")]
pub struct Failure {
    pub driver: String,
    pub check: &'static str,
    pub detail: String,
}

/// What ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub passed: Vec<&'static str>,
    /// Checks the harness could not arrange, with the reason.
    pub skipped: Vec<(&'static str, &'static str)>,
}

struct Kit<'h> {
    harness: &'h mut dyn Harness,
    report: Report,
}

impl Kit<'_> {
    fn fail(&self, check: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            driver: self.harness.name(),
            check,
            detail: detail.into(),
        }
    }

    fn open(&self, check: &'static str) -> Result<Reader, Failure> {
        let id = self.harness.reader_id();
        let session = self
            .harness
            .factory()
            .open(&ReaderSelector::Id(id.clone()))
            .map_err(|e| self.fail(check, format!("open({id}) failed: {e}")))?;
        Ok(Reader::new(session, Duration::from_millis(APDU_TIMEOUT_MS)))
    }
}

fn select_adf() -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01])
}

fn read_0015() -> CommandApdu {
    CommandApdu::new(0x00, 0xB0, 0x95, 0x00).with_le(256)
}

/// Runs every check; the first failure stops the run.
pub fn run(harness: &mut dyn Harness) -> Result<Report, Failure> {
    let mut kit = Kit {
        harness,
        report: Report::default(),
    };
    listing_and_open(&mut kit)?;
    let mut reader = kit.open("open")?;
    presence_and_atr(&mut kit, &mut reader)?;
    round_trips(&mut kit, &mut reader)?;
    chaining(&mut kit, &mut reader)?;
    removal(&mut kit, &mut reader)?;
    removal_mid_command(&mut kit, &mut reader)?;
    silent_card(&mut kit, &mut reader)?;
    events(&mut kit)?;
    Ok(kit.report)
}

fn listing_and_open(kit: &mut Kit<'_>) -> Result<(), Failure> {
    const CHECK: &str = "listing and open";
    let id = kit.harness.reader_id();
    let listed = kit
        .harness
        .factory()
        .list()
        .map_err(|e| kit.fail(CHECK, format!("list() failed: {e}")))?;
    let info = listed
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| {
            kit.fail(
                CHECK,
                format!(
                    "{id} not in list(): {:?}",
                    listed.iter().map(|r| &r.id).collect::<Vec<_>>()
                ),
            )
        })?
        .clone();
    let mut reader = kit.open(CHECK)?;
    if reader.session().info() != &info {
        return Err(kit.fail(
            CHECK,
            format!(
                "session info {:?} differs from the listing {:?}",
                reader.session().info(),
                info
            ),
        ));
    }
    let missing = kit
        .harness
        .factory()
        .open(&ReaderSelector::Id(format!("{id}-no-such-reader")));
    if !matches!(missing, Err(ReaderError::NotFound { .. })) {
        return Err(kit.fail(
            CHECK,
            "opening an unknown reader id must fail with NotFound",
        ));
    }
    kit.report.passed.push(CHECK);
    Ok(())
}

fn presence_and_atr(kit: &mut Kit<'_>, reader: &mut Reader) -> Result<(), Failure> {
    const CHECK: &str = "presence and ATR";
    let presence = reader
        .session()
        .presence()
        .map_err(|e| kit.fail(CHECK, e.to_string()))?;
    if !presence.is_present() {
        return Err(kit.fail(CHECK, "the conformance card is not reported present"));
    }
    let atr = reader
        .session()
        .power_on()
        .map_err(|e| kit.fail(CHECK, format!("power_on failed: {e}")))?;
    if atr.0.is_empty() {
        return Err(kit.fail(CHECK, "power_on returned an empty ATR"));
    }
    kit.report.passed.push(CHECK);
    Ok(())
}

fn round_trips(kit: &mut Kit<'_>, reader: &mut Reader) -> Result<(), Failure> {
    const CHECK: &str = "command round trips";
    let r = reader
        .transmit(&select_adf())
        .map_err(|e| kit.fail(CHECK, format!("SELECT failed: {e}")))?;
    if r.sw != StatusWord::OK {
        return Err(kit.fail(CHECK, format!("SELECT answered {}", r.sw)));
    }
    let r = reader
        .transmit(&CommandApdu::new(0x00, 0xEE, 0x00, 0x00))
        .map_err(|e| {
            kit.fail(
                CHECK,
                format!("unknown instruction failed at transport level: {e}"),
            )
        })?;
    if r.sw != StatusWord::INS_NOT_SUPPORTED {
        return Err(kit.fail(
            CHECK,
            format!("unknown instruction answered {}, expected 6D00", r.sw),
        ));
    }
    kit.report.passed.push(CHECK);
    Ok(())
}

fn chaining(kit: &mut Kit<'_>, reader: &mut Reader) -> Result<(), Failure> {
    const CHECK: &str = "chaining (Le = 00)";
    reader
        .transmit(&select_adf())
        .map_err(|e| kit.fail(CHECK, e.to_string()))?;
    let r = reader
        .transmit(&read_0015())
        .map_err(|e| kit.fail(CHECK, format!("READ BINARY failed: {e}")))?;
    if r.sw != StatusWord::OK || !(r.data.len() == 43 || r.data.len() == 50) {
        return Err(kit.fail(
            CHECK,
            format!("READ BINARY 0015 gave {} bytes and {}", r.data.len(), r.sw),
        ));
    }
    kit.report.passed.push(CHECK);
    Ok(())
}

fn removal(kit: &mut Kit<'_>, reader: &mut Reader) -> Result<(), Failure> {
    const CHECK: &str = "card removal reported";
    kit.harness.remove_card();
    let presence = reader
        .session()
        .presence()
        .map_err(|e| kit.fail(CHECK, e.to_string()))?;
    if presence != CardPresence::Absent {
        return Err(kit.fail(CHECK, format!("presence after removal is {presence:?}")));
    }
    match reader.transmit(&select_adf()) {
        Err(e) if e.is_card_absent() => {}
        other => {
            return Err(kit.fail(
                CHECK,
                format!("a command without a card gave {other:?}, expected NoCard/CardRemoved"),
            ))
        }
    }
    kit.harness.insert_card();
    let _ = reader.session().power_on();
    let r = reader
        .transmit(&select_adf())
        .map_err(|e| kit.fail(CHECK, format!("after re-insertion: {e}")))?;
    if r.sw != StatusWord::OK {
        return Err(kit.fail(
            CHECK,
            format!("after re-insertion SELECT answered {}", r.sw),
        ));
    }
    kit.report.passed.push(CHECK);
    Ok(())
}

fn removal_mid_command(kit: &mut Kit<'_>, reader: &mut Reader) -> Result<(), Failure> {
    const CHECK: &str = "removal during a command";
    if !kit.harness.remove_during_next_command() {
        kit.report
            .skipped
            .push((CHECK, "the harness cannot pull the card mid-command"));
        return Ok(());
    }
    match reader.transmit(&select_adf()) {
        Err(e @ ReaderError::CardRemoved { .. }) if e.outcome_unknown() => {}
        other => return Err(kit.fail(CHECK, format!("gave {other:?}, expected CardRemoved"))),
    }
    kit.harness.insert_card();
    let _ = reader.session().power_on();
    reader
        .transmit(&select_adf())
        .map_err(|e| kit.fail(CHECK, format!("after re-insertion: {e}")))?;
    kit.report.passed.push(CHECK);
    Ok(())
}

fn silent_card(kit: &mut Kit<'_>, reader: &mut Reader) -> Result<(), Failure> {
    const CHECK: &str = "bounded timeout";
    if !kit.harness.silence_next_command() {
        kit.report
            .skipped
            .push((CHECK, "the harness cannot make the card silent"));
        return Ok(());
    }
    reader.set_apdu_timeout(Duration::from_millis(SILENT_TIMEOUT_MS));
    let started = Instant::now();
    let result = reader.transmit(&select_adf());
    let took = started.elapsed();
    reader.set_apdu_timeout(Duration::from_millis(APDU_TIMEOUT_MS));
    if !matches!(result, Err(ReaderError::Timeout { .. })) {
        return Err(kit.fail(
            CHECK,
            format!("a silent card gave {result:?}, expected Timeout"),
        ));
    }
    if took > Duration::from_millis(SILENT_TIMEOUT_MS + TIMEOUT_GRACE_MS) {
        return Err(kit.fail(
            CHECK,
            format!("the timeout took {took:?} for a {SILENT_TIMEOUT_MS} ms bound"),
        ));
    }
    kit.harness.recover_after_silence();
    let _ = reader.session().power_on();
    reader.transmit(&select_adf()).map_err(|e| {
        kit.fail(
            CHECK,
            format!("after the timeout the reader does not recover: {e}"),
        )
    })?;
    kit.report.passed.push(CHECK);
    Ok(())
}

fn events(kit: &mut Kit<'_>) -> Result<(), Failure> {
    const CHECK: &str = "card events in order";
    let mut watcher = kit.open(CHECK)?;
    if watcher.session().events().is_none() {
        kit.report
            .skipped
            .push((CHECK, "the driver reports no card events"));
        return Ok(());
    }
    let wait = Duration::from_millis(EVENT_WAIT_MS);
    let next = |kit: &Kit<'_>, watcher: &mut Reader| -> Result<Option<CardEvent>, Failure> {
        let events = watcher
            .session()
            .events()
            .ok_or_else(|| kit.fail(CHECK, "events() went away"))?;
        events
            .wait_for_change(wait)
            .map_err(|e| kit.fail(CHECK, e.to_string()))
    };
    kit.harness.remove_card();
    match next(kit, &mut watcher)? {
        Some(CardEvent::Removed) => {}
        other => {
            return Err(kit.fail(
                CHECK,
                format!("after removal the first event was {other:?}"),
            ))
        }
    }
    kit.harness.insert_card();
    match next(kit, &mut watcher)? {
        Some(CardEvent::Inserted { .. }) => {}
        other => {
            return Err(kit.fail(
                CHECK,
                format!("after insertion the next event was {other:?}"),
            ))
        }
    }
    kit.report.passed.push(CHECK);
    Ok(())
}

/// Checks that the driver's stoppers end a card-event wait on `session` and a hotplug wait on
/// `watch`, each an hour long, and that both waits return `Ok(None)`. Not part of [`run`]:
/// drivers whose waits end only at their timeout have no stoppers.
pub fn stopped_waits_end(
    driver: &str,
    mut session: Box<dyn CardReader>,
    mut watch: Box<dyn HotplugWatch>,
) -> Result<(), Failure> {
    const CHECK: &str = "stopped waits end";
    const LONG: Duration = Duration::from_secs(3_600);
    let fail = |detail: String| Failure {
        driver: driver.to_owned(),
        check: CHECK,
        detail,
    };
    let card_stopper = session
        .events()
        .and_then(|e| e.stopper())
        .ok_or_else(|| fail("the session's card events have no stopper".into()))?;
    let hotplug_stopper = watch
        .stopper()
        .ok_or_else(|| fail("the hotplug watch has no stopper".into()))?;
    let (done, results) = std::sync::mpsc::channel::<(&str, String)>();
    let card_done = done.clone();
    std::thread::spawn(move || {
        let outcome = session.events().map(|e| e.wait_for_change(LONG));
        let _ = card_done.send(("card event wait", format!("{outcome:?}")));
    });
    std::thread::spawn(move || {
        let outcome = watch.wait(LONG);
        let _ = done.send(("hotplug wait", format!("{:?}", Some(outcome))));
    });
    // Give both waits time to block in the driver, so the stop has to end them (a stop that
    // comes first is covered too: the wait then returns at once).
    std::thread::sleep(Duration::from_millis(200));
    card_stopper.stop();
    hotplug_stopper.stop();
    for _ in 0..2 {
        let (which, outcome) = results
            .recv_timeout(Duration::from_millis(STOPPED_WAIT_RETURN_MS))
            .map_err(|_| {
                fail(format!(
                    "a stopped wait did not return within {STOPPED_WAIT_RETURN_MS} ms"
                ))
            })?;
        if outcome != "Some(Ok(None))" {
            return Err(fail(format!("the stopped {which} returned {outcome}")));
        }
    }
    Ok(())
}
