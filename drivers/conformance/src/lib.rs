//! The driver conformance kit: one suite that any reader driver (built-in or plugin) runs to
//! prove it keeps the contract of `cardd_reader` (see `docs/driver-guide.md`).
//!
//! A driver's test builds a [`Harness`]: the driver's factory, the id of a reader holding the
//! **conformance card**, and ways to pull and re-insert that card, to pull it during a command
//! and to keep the card silent. [`GuidedHarness`] is the harness for real hardware: it asks a
//! person to move the card and watches the reader until it sees the change. [`run`] then
//! checks, through `cardd_reader::Reader` exactly as the daemon uses a driver:
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
//! [`run`] returns a [`Report`] with one [`CheckResult`] per check, in [`CHECKS`] order: passed,
//! failed or skipped (by name, with the reason), with its duration. The first failure stops the
//! run; the checks after it are reported as skipped. `cardd conformance` prints the report as
//! text or JSON; the drivers' tests assert on it.
//!
//! [`stopped_waits_end`] is a separate check for drivers that can end their event waits from
//! another thread (`WaitStopper`): the waits a stopper ends return `Ok(None)`, promptly.
//!
//! The conformance card answers like the ETC user card of `docs/card-protocol.md` for these
//! commands: `00 A4 00 00 02 10 01` (select the ADF) → `9000`; `00 B0 95 00 00` (read 0015) →
//! 43 or 50 bytes and `9000`; instruction `0xEE` → `6D00`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

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
/// How often [`GuidedHarness`] asks the reader whether the card moved.
pub const GUIDED_POLL_MS: u64 = 200;
/// The default bound on one guided step (`cardd conformance --step-timeout-s`).
pub const STEP_TIMEOUT_S_DEFAULT: u64 = 60;
/// How long a stopped wait may take to return in [`stopped_waits_end`] (the waits themselves
/// are an hour long).
pub const STOPPED_WAIT_RETURN_MS: u64 = 30_000;

/// Whether a harness could arrange an optional situation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arranged {
    /// Arranged: the next command meets it.
    Yes,
    /// Cannot be arranged on this transport; the check is skipped with this reason.
    No(String),
}

/// What a driver's test (or `cardd conformance`) provides.
pub trait Harness {
    /// The driver's name, for messages.
    fn name(&self) -> String;
    /// The factory under test.
    fn factory(&self) -> Arc<dyn ReaderFactory>;
    /// The id of the reader holding the conformance card.
    fn reader_id(&self) -> String;
    /// Pulls the card out; returns once the transport can see it gone, or why it could not.
    fn remove_card(&mut self) -> Result<(), String>;
    /// Puts the card back; returns once the transport can see it, or why it could not.
    fn insert_card(&mut self) -> Result<(), String>;
    /// Arranges for the card to be pulled while the next command is in flight.
    fn remove_during_next_command(&mut self) -> Result<Arranged, String>;
    /// Arranges for the card to stay silent on the next command.
    fn silence_next_command(&mut self) -> Result<Arranged, String>;
    /// Undoes [`Harness::silence_next_command`] and leaves the card answering again (for
    /// transports where a silent card has to be reset by the harness).
    fn recover_after_silence(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The checks of [`run`], in order.
pub const CHECKS: [&str; 8] = [
    LISTING_AND_OPEN,
    PRESENCE_AND_ATR,
    ROUND_TRIPS,
    CHAINING,
    REMOVAL,
    REMOVAL_MID_COMMAND,
    BOUNDED_TIMEOUT,
    EVENTS,
];
pub const LISTING_AND_OPEN: &str = "listing and open";
pub const PRESENCE_AND_ATR: &str = "presence and ATR";
pub const ROUND_TRIPS: &str = "command round trips";
pub const CHAINING: &str = "chaining (Le = 00)";
pub const REMOVAL: &str = "card removal reported";
pub const REMOVAL_MID_COMMAND: &str = "removal during a command";
pub const BOUNDED_TIMEOUT: &str = "bounded timeout";
pub const EVENTS: &str = "card events in order";

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        })
    }
}

/// One check of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// One of [`CHECKS`].
    pub name: &'static str,
    pub outcome: Outcome,
    /// Why it failed or was skipped; empty when it passed.
    pub detail: String,
    pub duration_ms: u64,
}

/// A check that failed.
#[derive(Debug, thiserror::Error)]
#[error("{driver}: conformance check {check:?} failed: {detail}")]
pub struct Failure {
    pub driver: String,
    pub check: &'static str,
    pub detail: String,
}

/// What ran: one entry per check of [`CHECKS`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The harness's name for the driver.
    pub driver: String,
    pub reader: String,
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// True when no check failed.
    pub fn passed_all(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Failed)
    }

    /// The names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.with(Outcome::Passed).map(|c| c.name).collect()
    }

    /// The checks that were skipped, with the reason.
    pub fn skipped(&self) -> Vec<(&'static str, &str)> {
        self.with(Outcome::Skipped)
            .map(|c| (c.name, c.detail.as_str()))
            .collect()
    }

    /// The first failed check.
    pub fn failure(&self) -> Option<Failure> {
        self.with(Outcome::Failed).next().map(|c| Failure {
            driver: self.driver.clone(),
            check: c.name,
            detail: c.detail.clone(),
        })
    }

    /// The report, or its first failure.
    pub fn into_result(self) -> Result<Report, Failure> {
        match self.failure() {
            Some(failure) => Err(failure),
            None => Ok(self),
        }
    }

    fn with(&self, outcome: Outcome) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(move |c| c.outcome == outcome)
    }
}

impl fmt::Display for Report {
    /// One line per check, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance: {}, reader {}", self.driver, self.reader)?;
        for c in &self.checks {
            write!(
                f,
                "  {:<8} {:<26} {:>6} ms",
                c.outcome, c.name, c.duration_ms
            )?;
            if !c.detail.is_empty() {
                write!(f, "  {}", c.detail)?;
            }
            writeln!(f)?;
        }
        let count = |o| self.checks.iter().filter(|c| c.outcome == o).count();
        write!(
            f,
            "{}: {} passed, {} failed, {} skipped",
            if self.passed_all() { "PASS" } else { "FAIL" },
            count(Outcome::Passed),
            count(Outcome::Failed),
            count(Outcome::Skipped)
        )
    }
}

/// How a check ended when it did not fail.
enum Step {
    Passed,
    Skipped(String),
}

type CheckFn = fn(&mut Kit<'_>) -> Result<Step, String>;

struct Kit<'h> {
    harness: &'h mut dyn Harness,
    /// The session the checks share, opened by the presence check.
    reader: Option<Reader>,
}

impl Kit<'_> {
    fn open(&self) -> Result<Reader, String> {
        let id = self.harness.reader_id();
        let session = self
            .harness
            .factory()
            .open(&ReaderSelector::Id(id.clone()))
            .map_err(|e| format!("open({id}) failed: {e}"))?;
        Ok(Reader::new(session, Duration::from_millis(APDU_TIMEOUT_MS)))
    }

    fn reader(&mut self) -> Result<&mut Reader, String> {
        self.reader
            .as_mut()
            .ok_or_else(|| "no session: the presence check did not open one".to_owned())
    }
}

fn select_adf() -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01])
}

fn read_0015() -> CommandApdu {
    CommandApdu::new(0x00, 0xB0, 0x95, 0x00).with_le(256)
}

/// Runs the checks in [`CHECKS`] order; the first failure stops the run, and the checks after
/// it are reported as skipped.
pub fn run(harness: &mut dyn Harness) -> Report {
    let mut report = Report {
        driver: harness.name(),
        reader: harness.reader_id(),
        checks: Vec::with_capacity(CHECKS.len()),
    };
    let mut kit = Kit {
        harness,
        reader: None,
    };
    let checks: [(&'static str, CheckFn); 8] = [
        (LISTING_AND_OPEN, listing_and_open),
        (PRESENCE_AND_ATR, presence_and_atr),
        (ROUND_TRIPS, round_trips),
        (CHAINING, chaining),
        (REMOVAL, removal),
        (REMOVAL_MID_COMMAND, removal_mid_command),
        (BOUNDED_TIMEOUT, silent_card),
        (EVENTS, events),
    ];
    let mut failed: Option<&'static str> = None;
    for (name, check) in checks {
        if let Some(first) = failed {
            report.checks.push(CheckResult {
                name,
                outcome: Outcome::Skipped,
                detail: format!("not run: {first:?} failed"),
                duration_ms: 0,
            });
            continue;
        }
        let started = Instant::now();
        let (outcome, detail) = match check(&mut kit) {
            Ok(Step::Passed) => (Outcome::Passed, String::new()),
            Ok(Step::Skipped(why)) => (Outcome::Skipped, why),
            Err(detail) => {
                failed = Some(name);
                (Outcome::Failed, detail)
            }
        };
        report.checks.push(CheckResult {
            name,
            outcome,
            detail,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    report
}

fn listing_and_open(kit: &mut Kit<'_>) -> Result<Step, String> {
    let id = kit.harness.reader_id();
    let listed = kit
        .harness
        .factory()
        .list()
        .map_err(|e| format!("list() failed: {e}"))?;
    let info = listed
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| {
            format!(
                "{id} not in list(): {:?}",
                listed.iter().map(|r| &r.id).collect::<Vec<_>>()
            )
        })?
        .clone();
    let mut reader = kit.open()?;
    if reader.session().info() != &info {
        return Err(format!(
            "session info {:?} differs from the listing {:?}",
            reader.session().info(),
            info
        ));
    }
    let missing = kit
        .harness
        .factory()
        .open(&ReaderSelector::Id(format!("{id}-no-such-reader")));
    if !matches!(missing, Err(ReaderError::NotFound { .. })) {
        return Err("opening an unknown reader id must fail with NotFound".into());
    }
    Ok(Step::Passed)
}

fn presence_and_atr(kit: &mut Kit<'_>) -> Result<Step, String> {
    kit.reader = Some(kit.open()?);
    let reader = kit.reader()?;
    let presence = reader.session().presence().map_err(|e| e.to_string())?;
    if !presence.is_present() {
        return Err("the conformance card is not reported present: put it on the reader".into());
    }
    let atr = reader
        .session()
        .power_on()
        .map_err(|e| format!("power_on failed: {e}"))?;
    if atr.0.is_empty() {
        return Err("power_on returned an empty ATR".into());
    }
    Ok(Step::Passed)
}

fn round_trips(kit: &mut Kit<'_>) -> Result<Step, String> {
    let reader = kit.reader()?;
    let r = reader
        .transmit(&select_adf())
        .map_err(|e| format!("SELECT failed: {e}"))?;
    if r.sw != StatusWord::OK {
        return Err(format!("SELECT 1001 answered {}, expected 9000", r.sw));
    }
    let r = reader
        .transmit(&CommandApdu::new(0x00, 0xEE, 0x00, 0x00))
        .map_err(|e| format!("unknown instruction failed at transport level: {e}"))?;
    if r.sw != StatusWord::INS_NOT_SUPPORTED {
        return Err(format!(
            "unknown instruction answered {}, expected 6D00",
            r.sw
        ));
    }
    Ok(Step::Passed)
}

fn chaining(kit: &mut Kit<'_>) -> Result<Step, String> {
    let reader = kit.reader()?;
    reader.transmit(&select_adf()).map_err(|e| e.to_string())?;
    let r = reader
        .transmit(&read_0015())
        .map_err(|e| format!("READ BINARY failed: {e}"))?;
    if r.sw != StatusWord::OK || !(r.data.len() == 43 || r.data.len() == 50) {
        return Err(format!(
            "READ BINARY 0015 (00 B0 95 00 00) gave {} bytes and {}; expected the whole file, 43 or \
             50 bytes (an ETC user card's 0015), and 9000, in one answer or through 61xx/6Cxx",
            r.data.len(),
            r.sw
        ));
    }
    Ok(Step::Passed)
}

fn removal(kit: &mut Kit<'_>) -> Result<Step, String> {
    kit.harness.remove_card()?;
    let reader = kit.reader()?;
    let presence = reader.session().presence().map_err(|e| e.to_string())?;
    if presence != CardPresence::Absent {
        return Err(format!("presence after removal is {presence:?}"));
    }
    match reader.transmit(&select_adf()) {
        Err(e) if e.is_card_absent() => {}
        other => {
            return Err(format!(
                "a command without a card gave {other:?}, expected NoCard/CardRemoved"
            ))
        }
    }
    kit.harness.insert_card()?;
    let reader = kit.reader()?;
    let _ = reader.session().power_on();
    let r = reader
        .transmit(&select_adf())
        .map_err(|e| format!("after re-insertion: {e}"))?;
    if r.sw != StatusWord::OK {
        return Err(format!("after re-insertion SELECT answered {}", r.sw));
    }
    Ok(Step::Passed)
}

fn removal_mid_command(kit: &mut Kit<'_>) -> Result<Step, String> {
    if let Arranged::No(why) = kit.harness.remove_during_next_command()? {
        return Ok(Step::Skipped(why));
    }
    let reader = kit.reader()?;
    match reader.transmit(&select_adf()) {
        Err(e @ ReaderError::CardRemoved { .. }) if e.outcome_unknown() => {}
        other => return Err(format!("gave {other:?}, expected CardRemoved")),
    }
    kit.harness.insert_card()?;
    let reader = kit.reader()?;
    let _ = reader.session().power_on();
    reader
        .transmit(&select_adf())
        .map_err(|e| format!("after re-insertion: {e}"))?;
    Ok(Step::Passed)
}

fn silent_card(kit: &mut Kit<'_>) -> Result<Step, String> {
    if let Arranged::No(why) = kit.harness.silence_next_command()? {
        return Ok(Step::Skipped(why));
    }
    let reader = kit.reader()?;
    reader.set_apdu_timeout(Duration::from_millis(SILENT_TIMEOUT_MS));
    let started = Instant::now();
    let result = reader.transmit(&select_adf());
    let took = started.elapsed();
    reader.set_apdu_timeout(Duration::from_millis(APDU_TIMEOUT_MS));
    if !matches!(result, Err(ReaderError::Timeout { .. })) {
        return Err(format!("a silent card gave {result:?}, expected Timeout"));
    }
    if took > Duration::from_millis(SILENT_TIMEOUT_MS + TIMEOUT_GRACE_MS) {
        return Err(format!(
            "the timeout took {took:?} for a {SILENT_TIMEOUT_MS} ms bound"
        ));
    }
    kit.harness.recover_after_silence()?;
    let reader = kit.reader()?;
    let _ = reader.session().power_on();
    reader
        .transmit(&select_adf())
        .map_err(|e| format!("after the timeout the reader does not recover: {e}"))?;
    Ok(Step::Passed)
}

fn events(kit: &mut Kit<'_>) -> Result<Step, String> {
    let mut watcher = kit.open()?;
    if watcher.session().events().is_none() {
        return Ok(Step::Skipped("the driver reports no card events".into()));
    }
    let wait = Duration::from_millis(EVENT_WAIT_MS);
    let next = |watcher: &mut Reader| -> Result<Option<CardEvent>, String> {
        let events = watcher
            .session()
            .events()
            .ok_or_else(|| "events() went away".to_owned())?;
        events.wait_for_change(wait).map_err(|e| e.to_string())
    };
    kit.harness.remove_card()?;
    match next(&mut watcher)? {
        Some(CardEvent::Removed) => {}
        other => return Err(format!("after removal the first event was {other:?}")),
    }
    kit.harness.insert_card()?;
    match next(&mut watcher)? {
        Some(CardEvent::Inserted { .. }) => {}
        other => return Err(format!("after insertion the next event was {other:?}")),
    }
    Ok(Step::Passed)
}

/// The harness for real hardware: a person moves the card. Each step prints a prompt (zh-CN
/// first, then English) and polls the reader's presence until it sees the change, at most
/// `step_timeout`; a step that times out fails its check with a message saying so. It reads no
/// keyboard input, so it runs without a terminal. A card cannot be pulled by hand during one
/// command or made silent, so those checks are skipped, by name.
pub struct GuidedHarness {
    name: String,
    factory: Arc<dyn ReaderFactory>,
    reader_id: String,
    step_timeout: Duration,
    prompt: Box<dyn FnMut(&str) + Send>,
    watcher: Option<Box<dyn CardReader>>,
}

impl fmt::Debug for GuidedHarness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuidedHarness")
            .field("name", &self.name)
            .field("reader_id", &self.reader_id)
            .field("step_timeout", &self.step_timeout)
            .finish_non_exhaustive()
    }
}

/// The prompt asking a person to remove the card.
pub const PROMPT_REMOVE: &str = "请移走卡片";
/// The prompt asking a person to put the card back.
pub const PROMPT_INSERT: &str = "请放回卡片";

impl GuidedHarness {
    /// `prompt` shows a line to the person at the reader (the CLI writes it to stderr).
    pub fn new(
        name: impl Into<String>,
        factory: Arc<dyn ReaderFactory>,
        reader_id: impl Into<String>,
        step_timeout: Duration,
        prompt: Box<dyn FnMut(&str) + Send>,
    ) -> Self {
        GuidedHarness {
            name: name.into(),
            factory,
            reader_id: reader_id.into(),
            step_timeout,
            prompt,
            watcher: None,
        }
    }

    fn wait_for(&mut self, present: bool) -> Result<(), String> {
        let (zh, en) = if present {
            (PROMPT_INSERT, "put the card back on")
        } else {
            (PROMPT_REMOVE, "remove the card from")
        };
        let seconds = self.step_timeout.as_secs();
        (self.prompt)(&format!(
            "{zh} ({en} {}; waiting up to {seconds} s)",
            self.reader_id
        ));
        let deadline = Instant::now() + self.step_timeout;
        loop {
            if self.watcher.is_none() {
                self.watcher = self
                    .factory
                    .open(&ReaderSelector::Id(self.reader_id.clone()))
                    .ok();
            }
            if let Some(watcher) = self.watcher.as_mut() {
                match watcher.presence() {
                    Ok(p) if p.is_present() == present => return Ok(()),
                    Ok(_) => {}
                    // A reader that went away is reopened on the next round.
                    Err(_) => self.watcher = None,
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "step timed out: the reader did not see the card {} within {seconds} s \
                     ({zh}); run again and move the card when asked, or give a longer --step-timeout-s",
                    if present { "put back" } else { "removed" }
                ));
            }
            std::thread::sleep(Duration::from_millis(GUIDED_POLL_MS));
        }
    }
}

impl Harness for GuidedHarness {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.factory.clone()
    }
    fn reader_id(&self) -> String {
        self.reader_id.clone()
    }
    fn remove_card(&mut self) -> Result<(), String> {
        self.wait_for(false)
    }
    fn insert_card(&mut self) -> Result<(), String> {
        self.wait_for(true)
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        Ok(Arranged::No(
            "a card cannot be pulled by hand during one command; needs test hooks (simulated cards)"
                .into(),
        ))
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        Ok(Arranged::No(
            "a real card cannot be made silent on demand; needs test hooks (simulated cards)"
                .into(),
        ))
    }
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
