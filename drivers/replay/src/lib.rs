//! The `replay` driver: a recorded APDU trace (`cardd_reader::trace`) played back as a reader.
//!
//! `driver = "replay"` with `trace = "/path/to/trace.jsonl"` lists one reader, `replay:<name>`.
//! Each session opened on it plays one recorded session: the first open plays the first session
//! that appears in the trace, the second open the second, and so on (the daemon opens one
//! session per reader when the driver reports no card events, as this one does). Within a
//! session:
//!
//! * every command must match the recorded one: header and length always, and every byte the
//!   trace did not hide (`**`); a mismatch is an error naming the exchange's number in the
//!   trace, the context mark before it and both commands;
//! * the answer is the recorded response, hidden bytes as `00` (a MAC the trace hid does not
//!   verify: replay a load only from a trace recorded with `redact = false`, on a test card), or
//!   the recorded reader error (`timeout`, `card_removed`, `no_card`, ...), returned at once;
//! * a context mark from the daemon (`CardReader::trace_mark`: an API method or flow step
//!   starts) moves the replay to the first recorded segment with that mark not played yet, so
//!   what the daemon runs on its own may come before or after a client's call;
//! * power actions and presence changes are played in their recorded order around the
//!   exchanges; when none is recorded next, the last state stands;
//! * after the last recorded exchange, every command fails and says so.
//!
//! Commands to an OBU's ESAM or ICC and to PSAM slots are played the same way when the trace
//! holds them.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cardd_reader::trace::{TraceRecord, TRACE_BYTES_MAX_MAX};
use cardd_reader::{
    ApduTransport, Atr, Capabilities, CardPresence, CardReader, Driver, DriverOptions, ObuChannel,
    ObuTarget, Protocol, PsamSlots, ReaderError, ReaderFactory, ReaderInfo, ReaderSelector,
};
use serde::{Deserialize, Serialize};

/// The driver's name in configuration.
pub const DRIVER_NAME: &str = "replay";
/// Longest reader name accepted.
pub const NAME_CHARS_MAX: usize = 64;
/// The ATR a session answers when the trace recorded none.
const ATR_DEFAULT: [u8; 2] = [0x3B, 0x00];

/// What went wrong reading or playing a trace.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the trace {path}: {source}; check the replay driver's `trace` option")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the trace {path} is larger than {max} bytes; cut it to the part to replay")]
    TooLarge { path: PathBuf, max: u64 },
    #[error(
        "line {line} of the trace is not a trace record ({detail}); is it a cardd APDU trace?"
    )]
    Parse { line: usize, detail: String },
    #[error("exchange {n} of the trace{context}: the reader was sent {sent} where the trace recorded {recorded}; what is replayed no longer sends what was recorded")]
    Mismatch {
        n: u64,
        context: String,
        recorded: String,
        sent: String,
    },
    #[error("the trace's session {session} has no exchange left (it recorded {recorded}); the reader was sent {sent}")]
    Exhausted {
        session: usize,
        recorded: usize,
        sent: String,
    },
    #[error("exchange {n} of the trace failed when it was recorded: {detail}")]
    Recorded { n: u64, detail: String },
}

/// A recorded answer: the response, or the reader error.
#[derive(Debug, Clone)]
enum Outcome {
    Response(Vec<u8>),
    Error {
        kind: String,
        detail: String,
        timeout_ms: u64,
    },
}

/// One step of a recorded session.
#[derive(Debug, Clone)]
enum Step {
    Exchange {
        n: u64,
        context: Option<String>,
        to: String,
        /// The recorded command; `None` where the trace hid the byte.
        cmd: Vec<Option<u8>>,
        outcome: Outcome,
    },
    Power {
        action: String,
        atr: Option<Atr>,
        error: Option<(String, String)>,
    },
    Presence(CardPresence),
    /// A context mark: what started using the reader (an API method, a flow step).
    Mark(String),
}

/// A trace split into its sessions, in the order they appear.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    sessions: Vec<Vec<Step>>,
}

fn masked_bytes(text: &str, line: usize) -> Result<Vec<Option<u8>>, ReplayError> {
    let bad = |detail: &str| ReplayError::Parse {
        line,
        detail: format!("{detail}: {text:?}"),
    };
    if text.len() % 2 != 0 {
        return Err(bad("odd number of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| match &text[i..i + 2] {
            "**" => Ok(None),
            pair => u8::from_str_radix(pair, 16)
                .map(Some)
                .map_err(|_| bad("not hexadecimal")),
        })
        .collect()
}

fn atr_of(text: &Option<String>, line: usize) -> Result<Option<Atr>, ReplayError> {
    text.as_deref()
        .map(|t| {
            hex::decode(t).map(Atr).map_err(|e| ReplayError::Parse {
                line,
                detail: format!("ATR {t:?}: {e}"),
            })
        })
        .transpose()
}

fn show(cmd: &[Option<u8>]) -> String {
    cmd.iter()
        .map(|b| b.map_or("**".to_owned(), |b| format!("{b:02X}")))
        .collect()
}

impl Trace {
    /// Reads a trace file, at most [`TRACE_BYTES_MAX_MAX`] bytes.
    pub fn load(path: &Path) -> Result<Trace, ReplayError> {
        let read = |source| ReplayError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > TRACE_BYTES_MAX_MAX {
            return Err(ReplayError::TooLarge {
                path: path.to_owned(),
                max: TRACE_BYTES_MAX_MAX,
            });
        }
        Trace::parse(&std::fs::read_to_string(path).map_err(read)?)
    }

    /// Parses a trace's text (JSON lines).
    pub fn parse(text: &str) -> Result<Trace, ReplayError> {
        // Session numbers start again at every daemon start, which writes a header line.
        let mut ids: Vec<(usize, u64)> = Vec::new();
        let mut run = 0;
        let mut trace = Trace::default();
        let mut contexts: Vec<Option<String>> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let r = TraceRecord::parse(raw).map_err(|e| ReplayError::Parse {
                line,
                detail: e.to_string(),
            })?;
            if r.trace.is_some() {
                run += 1;
            }
            let Some(s) = r.s else { continue };
            let index = match ids.iter().position(|&id| id == (run, s)) {
                Some(index) => index,
                None => {
                    ids.push((run, s));
                    trace.sessions.push(Vec::new());
                    contexts.push(None);
                    ids.len() - 1
                }
            };
            let step = if let Some(mark) = r.mark {
                contexts[index] = Some(mark.clone());
                Step::Mark(mark)
            } else if r.is_exchange() {
                let outcome = match (&r.rsp, &r.err) {
                    (Some(rsp), _) => Outcome::Response(
                        masked_bytes(rsp, line)?
                            .into_iter()
                            .map(|b| b.unwrap_or(0))
                            .collect(),
                    ),
                    (None, Some(kind)) => Outcome::Error {
                        kind: kind.clone(),
                        detail: r.detail.clone().unwrap_or_default(),
                        timeout_ms: r.timeout_ms.unwrap_or(0),
                    },
                    (None, None) => {
                        return Err(ReplayError::Parse {
                            line,
                            detail: "an exchange with neither `rsp` nor `err`".into(),
                        })
                    }
                };
                Step::Exchange {
                    n: r.n.unwrap_or(0),
                    context: contexts[index].clone(),
                    to: r.to.clone().unwrap_or_else(|| "card".into()),
                    cmd: masked_bytes(r.cmd.as_deref().unwrap_or(""), line)?,
                    outcome,
                }
            } else if let Some(action) = r.power {
                Step::Power {
                    action,
                    atr: atr_of(&r.atr, line)?,
                    error: r.err.map(|k| (k, r.detail.unwrap_or_default())),
                }
            } else if let Some(presence) = r.presence {
                Step::Presence(match presence.as_str() {
                    "absent" => CardPresence::Absent,
                    "powered" => CardPresence::Powered {
                        atr: atr_of(&r.atr, line)?.unwrap_or(Atr(ATR_DEFAULT.to_vec())),
                    },
                    _ => CardPresence::Present,
                })
            } else {
                continue;
            };
            trace.sessions[index].push(step);
        }
        Ok(trace)
    }

    /// Sessions in the trace.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Exchanges recorded in all sessions.
    pub fn exchanges(&self) -> usize {
        self.sessions
            .iter()
            .flatten()
            .filter(|s| matches!(s, Step::Exchange { .. }))
            .count()
    }

    fn targets(&self) -> impl Iterator<Item = &str> {
        self.sessions.iter().flatten().filter_map(|s| match s {
            Step::Exchange { to, .. } => Some(to.as_str()),
            _ => None,
        })
    }
}

/// The driver's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayOptions {
    /// The trace file to play back.
    pub trace: PathBuf,
    /// The reader's name; its id is `replay:<name>`. Default: `trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ReplayOptions {
    fn name(&self) -> Result<String, ReaderError> {
        let name = self.name.clone().unwrap_or_else(|| "trace".into());
        if name.is_empty() || name.chars().count() > NAME_CHARS_MAX {
            return Err(ReaderError::Config {
                driver: DRIVER_NAME.into(),
                detail: format!("name must be 1 to {NAME_CHARS_MAX} characters"),
            });
        }
        Ok(name)
    }
}

/// The driver descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayDriver;

/// The descriptor the built-in registry registers.
pub static REPLAY_DRIVER: ReplayDriver = ReplayDriver;

fn config_error(e: ReplayError) -> ReaderError {
    ReaderError::Config {
        driver: DRIVER_NAME.into(),
        detail: e.to_string(),
    }
}

impl Driver for ReplayDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn summary(&self) -> &'static str {
        "plays a recorded APDU trace back as one reader (support cases, regression tests)"
    }

    fn instantiate(&self, options: &DriverOptions) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
        let options: ReplayOptions = options.parse()?;
        let trace = Trace::load(&options.trace).map_err(config_error)?;
        Ok(Arc::new(ReplayFactory::new(trace, &options.name()?)))
    }

    fn check(&self, options: &DriverOptions) -> Result<Vec<String>, ReaderError> {
        let options: ReplayOptions = options.parse()?;
        options.name()?;
        let trace = Trace::load(&options.trace).map_err(config_error)?;
        Ok(vec![format!(
            "the replay driver plays {} recorded exchanges back: for support cases and tests, \
             never a real counter",
            trace.exchanges()
        )])
    }
}

/// One reader playing a trace back.
#[derive(Debug)]
pub struct ReplayFactory {
    trace: Arc<Trace>,
    info: ReaderInfo,
    opened: std::sync::atomic::AtomicUsize,
}

impl ReplayFactory {
    /// A reader named `name` playing `trace`.
    pub fn new(trace: Trace, name: &str) -> ReplayFactory {
        let psam_slots = trace
            .targets()
            .filter_map(|t| t.strip_prefix("psam")?.parse::<u8>().ok())
            .map(|slot| slot.saturating_add(1))
            .max()
            .unwrap_or(0);
        let obu_channel = trace.targets().any(|t| t == "esam" || t == "icc");
        ReplayFactory {
            info: ReaderInfo {
                id: format!("{DRIVER_NAME}:{name}"),
                name: format!("Replay of {name}"),
                driver: DRIVER_NAME.into(),
                capabilities: Capabilities {
                    contact: true,
                    psam_slots,
                    obu_channel,
                    ..Capabilities::default()
                },
            },
            trace: Arc::new(trace),
            opened: Default::default(),
        }
    }
}

impl ReaderFactory for ReplayFactory {
    fn driver(&self) -> &str {
        DRIVER_NAME
    }

    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
        Ok(vec![self.info.clone()])
    }

    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
        if selector.pick(std::slice::from_ref(&self.info)).is_none() {
            return Err(ReaderError::NotFound {
                selector: selector.to_string(),
            });
        }
        let session = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Box::new(ReplaySession {
            trace: self.trace.clone(),
            session,
            pos: 0,
            presence: CardPresence::Present,
            info: self.info.clone(),
            played_marks: Vec::new(),
        }))
    }
}

/// One session playing one recorded session.
#[derive(Debug)]
pub struct ReplaySession {
    trace: Arc<Trace>,
    /// Which recorded session this plays (0-based).
    session: usize,
    pos: usize,
    presence: CardPresence,
    info: ReaderInfo,
    /// Positions of the marks already played.
    played_marks: Vec<usize>,
}

impl ReplaySession {
    fn steps(&self) -> &[Step] {
        self.trace
            .sessions
            .get(self.session)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn recorded_error(&self, n: u64, kind: &str, detail: &str, timeout_ms: u64) -> ReaderError {
        let reader = self.info.id.clone();
        match kind {
            "no_card" => ReaderError::NoCard { reader },
            "card_removed" => ReaderError::CardRemoved { reader },
            "timeout" => ReaderError::Timeout { reader, timeout_ms },
            "reader_gone" => ReaderError::ReaderGone { reader },
            "protocol" => ReaderError::Protocol {
                reader,
                detail: detail.to_owned(),
            },
            _ => ReaderError::driver(
                reader,
                ReplayError::Recorded {
                    n,
                    detail: detail.to_owned(),
                },
            ),
        }
    }

    /// Plays the next step if it is a power action of `actions`.
    fn power(&mut self, actions: &[&str]) -> Option<Result<Option<Atr>, ReaderError>> {
        let Some(Step::Power { action, atr, error }) = self.steps().get(self.pos).cloned() else {
            return None;
        };
        if !actions.contains(&action.as_str()) {
            return None;
        }
        self.pos += 1;
        Some(match error {
            Some((kind, detail)) => Err(self.recorded_error(0, &kind, &detail, 0)),
            None => {
                self.presence = match &atr {
                    Some(atr) => CardPresence::Powered { atr: atr.clone() },
                    None => CardPresence::Present,
                };
                Ok(atr)
            }
        })
    }

    fn powered(&mut self) -> Result<Atr, ReaderError> {
        match self.power(&["on", "reset"]) {
            Some(result) => Ok(result?.unwrap_or(Atr(ATR_DEFAULT.to_vec()))),
            None => match &self.presence {
                CardPresence::Absent => Err(ReaderError::NoCard {
                    reader: self.info.id.clone(),
                }),
                CardPresence::Powered { atr } => Ok(atr.clone()),
                CardPresence::Present => {
                    let atr = self.first_atr();
                    self.presence = CardPresence::Powered { atr: atr.clone() };
                    Ok(atr)
                }
            },
        }
    }

    fn first_atr(&self) -> Atr {
        self.steps()
            .iter()
            .find_map(|s| match s {
                Step::Power { atr: Some(atr), .. } => Some(atr.clone()),
                Step::Presence(CardPresence::Powered { atr }) => Some(atr.clone()),
                _ => None,
            })
            .unwrap_or(Atr(ATR_DEFAULT.to_vec()))
    }

    fn exchange(&mut self, to: &str, command: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let sent = hex::encode_upper(command);
        // Power and presence steps recorded before the exchange are played on the way.
        loop {
            match self.steps().get(self.pos).cloned() {
                Some(Step::Presence(p)) => {
                    self.presence = p;
                    self.pos += 1;
                }
                Some(Step::Power { .. }) => {
                    let _ = self.power(&["on", "off", "reset"]);
                }
                Some(Step::Mark(_)) => {
                    self.played_marks.push(self.pos);
                    self.pos += 1;
                }
                Some(Step::Exchange {
                    n,
                    context,
                    to: recorded_to,
                    cmd,
                    outcome,
                }) => {
                    let matches = recorded_to == to
                        && cmd.len() == command.len()
                        && cmd.iter().zip(command).enumerate().all(|(i, (r, s))| {
                            r.map_or(true, |r| r == *s) && (i >= 4 || r.is_some())
                        });
                    if !matches {
                        let label = |t: &str| {
                            if t == "card" {
                                String::new()
                            } else {
                                format!("{t}: ")
                            }
                        };
                        return Err(ReaderError::driver(
                            self.info.id.clone(),
                            ReplayError::Mismatch {
                                n,
                                context: context
                                    .map(|c| format!(" (after mark {c:?})"))
                                    .unwrap_or_default(),
                                recorded: format!("{}{}", label(&recorded_to), show(&cmd)),
                                sent: format!("{}{sent}", label(to)),
                            },
                        ));
                    }
                    self.pos += 1;
                    return match outcome {
                        Outcome::Response(bytes) => Ok(bytes),
                        Outcome::Error {
                            kind,
                            detail,
                            timeout_ms,
                        } => {
                            if kind == "card_removed" || kind == "no_card" {
                                self.presence = CardPresence::Absent;
                            }
                            Err(self.recorded_error(n, &kind, &detail, timeout_ms))
                        }
                    };
                }
                None => {
                    let recorded = self
                        .steps()
                        .iter()
                        .filter(|s| matches!(s, Step::Exchange { .. }))
                        .count();
                    return Err(ReaderError::driver(
                        self.info.id.clone(),
                        ReplayError::Exhausted {
                            session: self.session + 1,
                            recorded,
                            sent,
                        },
                    ));
                }
            }
        }
    }
}

impl ApduTransport for ReplaySession {
    fn transmit_raw(&mut self, command: &[u8], _timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        self.exchange("card", command)
    }

    fn protocol(&self) -> Protocol {
        Protocol::Other
    }
}

impl CardReader for ReplaySession {
    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        self.powered()
    }

    fn power_off(&mut self) -> Result<(), ReaderError> {
        if let Some(result) = self.power(&["off"]) {
            result?;
        } else if self.presence != CardPresence::Absent {
            self.presence = CardPresence::Present;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<Atr, ReaderError> {
        self.powered()
    }

    fn atr(&self) -> Option<Atr> {
        match &self.presence {
            CardPresence::Powered { atr } => Some(atr.clone()),
            _ => None,
        }
    }

    /// Jumps to the first recorded segment of `context` not played yet, wherever it is in the
    /// session: what a daemon runs on its own (the recovery check at start-up) may come before
    /// or after a client's call, and each plays its own recorded commands. Without such a
    /// segment, the session goes on where it is.
    fn trace_mark(&mut self, context: &str) {
        let found = self.steps().iter().enumerate().position(|(i, s)| {
            matches!(s, Step::Mark(m) if m == context) && !self.played_marks.contains(&i)
        });
        if let Some(i) = found {
            self.played_marks.push(i);
            self.pos = i + 1;
        }
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        if let Some(Step::Presence(p)) = self.steps().get(self.pos).cloned() {
            self.presence = p;
            self.pos += 1;
        }
        Ok(self.presence.clone())
    }

    fn psam(&mut self) -> Option<&mut dyn PsamSlots> {
        (self.info.capabilities.psam_slots > 0).then_some(self as &mut dyn PsamSlots)
    }

    fn obu(&mut self) -> Option<&mut dyn ObuChannel> {
        self.info
            .capabilities
            .obu_channel
            .then_some(self as &mut dyn ObuChannel)
    }
}

impl PsamSlots for ReplaySession {
    fn slot_count(&self) -> u8 {
        self.info.capabilities.psam_slots
    }

    fn psam_reset(&mut self, _slot: u8) -> Result<Atr, ReaderError> {
        Ok(Atr(ATR_DEFAULT.to_vec()))
    }

    fn psam_transmit(
        &mut self,
        slot: u8,
        command: &[u8],
        _timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        self.exchange(&format!("psam{slot}"), command)
    }
}

impl ObuChannel for ReplaySession {
    fn obu_transmit(
        &mut self,
        target: ObuTarget,
        command: &[u8],
        _timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        let to = match target {
            ObuTarget::Esam => "esam",
            ObuTarget::Icc => "icc",
        };
        self.exchange(to, command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"{"trace":"cardd-apdu-trace","v":1,"redacted":true,"bytes_max":4096}
{"s":1,"open":"pcsc:r"}
{"s":1,"presence":"powered","atr":"3B6800"}
{"s":1,"mark":"card.summary"}
{"n":1,"s":1,"to":"card","cmd":"00A40000021001","rsp":"9000","sw":"9000","us":10}
{"n":2,"s":1,"to":"card","cmd":"0020000003******","rsp":"9000","sw":"9000","hidden":["PIN"]}
{"n":3,"s":1,"to":"card","cmd":"805C000204","rsp":"000003E8****9000","sw":"9000"}
{"n":4,"s":1,"to":"card","cmd":"805C000204","err":"timeout","timeout_ms":500,"detail":"slow"}
{"s":1,"close":true}
"#;

    fn session() -> Box<dyn CardReader> {
        let factory = ReplayFactory::new(Trace::parse(TRACE).unwrap(), "t");
        assert_eq!(factory.list().unwrap()[0].id, "replay:t");
        factory.open(&ReaderSelector::Index(0)).unwrap()
    }

    fn send(r: &mut dyn CardReader, hex_cmd: &str) -> Result<String, ReaderError> {
        r.transmit_raw(&hex::decode(hex_cmd).unwrap(), Duration::from_secs(1))
            .map(hex::encode_upper)
    }

    #[test]
    fn answers_in_order_checks_visible_bytes_and_replays_errors() {
        let mut r = session();
        assert_eq!(
            r.presence().unwrap(),
            CardPresence::Powered {
                atr: Atr(vec![0x3B, 0x68, 0x00])
            }
        );
        assert_eq!(send(r.as_mut(), "00A40000021001").unwrap(), "9000");
        // Any PIN of the recorded length matches a hidden one.
        assert_eq!(send(r.as_mut(), "0020000003999999").unwrap(), "9000");
        assert_eq!(send(r.as_mut(), "805C000204").unwrap(), "000003E800009000");
        let e = send(r.as_mut(), "805C000204").unwrap_err();
        assert!(
            matches!(
                e,
                ReaderError::Timeout {
                    timeout_ms: 500,
                    ..
                }
            ),
            "{e}"
        );
        let e = send(r.as_mut(), "805C000204").unwrap_err().to_string();
        assert!(e.contains("no exchange left (it recorded 4)"), "{e}");
    }

    #[test]
    fn a_different_command_names_the_exchange_and_its_mark() {
        let mut r = session();
        send(r.as_mut(), "00A40000021001").unwrap();
        let e = send(r.as_mut(), "0020000002999999")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exchange 2 of the trace (after mark \"card.summary\")"),
            "{e}"
        );
        assert!(e.contains("recorded 0020000003******"), "{e}");
        // The header is always checked, even where the trace hid nothing else.
        let e = send(r.as_mut(), "0021000003123456")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exchange 2"), "{e}");
    }

    #[test]
    fn marks_align_segments_run_in_another_order() {
        let trace = r#"{"s":1,"mark":"recovery"}
{"n":1,"s":1,"cmd":"00A40000021001","rsp":"9000"}
{"s":1,"mark":"card.balance"}
{"n":2,"s":1,"cmd":"805C000204","rsp":"000000019000"}
{"s":1,"mark":"card.balance"}
{"n":3,"s":1,"cmd":"805C000204","rsp":"000000029000"}
"#;
        let factory = ReplayFactory::new(Trace::parse(trace).unwrap(), "t");
        let mut r = factory.open(&ReaderSelector::Index(0)).unwrap();
        r.trace_mark("card.balance");
        assert_eq!(send(r.as_mut(), "805C000204").unwrap(), "000000019000");
        r.trace_mark("recovery");
        assert_eq!(send(r.as_mut(), "00A40000021001").unwrap(), "9000");
        r.trace_mark("card.balance");
        assert_eq!(send(r.as_mut(), "805C000204").unwrap(), "000000029000");
    }

    #[test]
    fn each_daemon_start_in_a_file_is_its_own_sessions() {
        let text = format!("{TRACE}{TRACE}");
        let trace = Trace::parse(&text).unwrap();
        assert_eq!((trace.sessions(), trace.exchanges()), (2, 8));
    }

    #[test]
    fn a_broken_trace_says_which_line() {
        let e = Trace::parse("{\"s\":1}\nnot json\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2 of the trace"), "{e}");
        let e = Trace::parse("{\"n\":1,\"s\":1,\"cmd\":\"0A\",\"rsp\":\"9\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("odd number"), "{e}");
    }
}
