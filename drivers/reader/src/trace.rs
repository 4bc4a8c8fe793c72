//! The APDU trace recorder: every exchange of a reader, one JSON line each, to a file.
//!
//! A [`TracedFactory`] wraps a driver instance; every session it opens is a [`TracingReader`]
//! that writes, through a shared [`TraceRecorder`], each raw exchange (command, response,
//! status word or reader error, elapsed µs, UTC timestamp), power and presence changes, card
//! events, session open/close and context marks ([`CardReader::trace_mark`]: the daemon names
//! the API method or flow step about to use the reader). It sits below the reader layer's
//! chaining, so GET RESPONSE and `6Cxx` re-sends appear as the card saw them.
//!
//! **Redaction.** What must not reach a file (PINs, MACs, key material) is hidden by a
//! [`Redaction`] the caller injects: this crate knows no card protocol. Hidden bytes are written
//! as `**`, so lengths survive and a replay can still check everything else. Only an explicit
//! `None` turns redaction off.
//!
//! **Bounds.** A trace file grows to at most `bytes_max`; the line that would pass it first
//! rotates the file once, to `<path>.1` (replacing an older one), and the trace goes on in a
//! fresh file: at most twice `bytes_max` on disk.
//!
//! **Failures never fail a card command.** A trace that cannot be written is logged once and
//! counted ([`TraceRecorder::write_failures`]); the exchange goes on.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::ReaderError;
use crate::reader::{
    ApduTransport, Atr, CardEvent, CardEvents, CardPresence, CardReader, ExclusiveAccess,
    HotplugWatch, ObuChannel, ObuTarget, Protocol, PsamSlots, ReaderFactory, ReaderInfo,
    ReaderSelector, WaitStopper,
};

/// The trace format's name, in every file's first line.
pub const TRACE_FORMAT: &str = "cardd-apdu-trace";
/// The trace format's version.
pub const TRACE_VERSION: u32 = 1;
/// A trace file's size bound when configuration names none (16 MiB, some 60,000 exchanges).
pub const TRACE_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// The smallest size bound accepted.
pub const TRACE_BYTES_MAX_MIN: u64 = 4_096;
/// The largest size bound accepted (and the most a replay reads).
pub const TRACE_BYTES_MAX_MAX: u64 = 1024 * 1024 * 1024;
/// Longest context mark kept; longer marks are cut.
pub const TRACE_MARK_CHARS_MAX: usize = 200;

/// Bytes of a command's data field or a response's data to hide, and what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hide {
    /// First hidden byte, counted from the start of the data field.
    pub start: usize,
    /// Number of hidden bytes (cut at the end of the data).
    pub len: usize,
    /// What is hidden (`PIN`, `MAC1`, ...), written to the trace.
    pub what: &'static str,
}

impl Hide {
    /// The whole data field.
    pub fn all(what: &'static str) -> Hide {
        Hide {
            start: 0,
            len: usize::MAX,
            what,
        }
    }
}

/// What to hide from a trace, by command. Card protocols (the purse layer) provide it.
pub trait Redaction: Send + Sync + fmt::Debug {
    /// Parts of the data field of the command with this header (CLA INS P1 P2) to hide.
    fn command(&self, header: [u8; 4], data: &[u8]) -> Vec<Hide>;
    /// Parts of the response data of the command with this header to hide.
    fn response(&self, header: [u8; 4], data: &[u8]) -> Vec<Hide>;
}

/// Called on every line a recorder could not write (for a metric).
pub type FailureHook = Arc<dyn Fn() + Send + Sync>;

/// Where and how a reader's traffic is recorded.
#[derive(Clone)]
pub struct TraceOptions {
    /// The trace file (JSON lines), created if missing (with its directory) and appended to.
    pub path: PathBuf,
    /// Size at which the file rotates once to `<path>.1`.
    pub bytes_max: u64,
    /// What to hide; `None` records everything (test cards only).
    pub redaction: Option<Arc<dyn Redaction>>,
    /// Told of every line that could not be written.
    pub on_failure: Option<FailureHook>,
}

impl fmt::Debug for TraceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceOptions")
            .field("path", &self.path)
            .field("bytes_max", &self.bytes_max)
            .field("redaction", &self.redaction)
            .finish_non_exhaustive()
    }
}

/// One line of a trace. Which fields are present says what it is: a header (`trace`), a session
/// opening or closing (`open`, `close`), a context mark (`mark`), an exchange (`n`), a power
/// action (`power`), a presence change (`presence`) or a card event (`card`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// Whether the recorder hides PINs, MACs and keys (header only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<bool>,
    /// The size bound (header only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_max: Option<u64>,
    /// Exchange number, from 1, across the recorder's sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// UTC time (RFC 3339) the line's event started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Session number, from 1 (each open of a reader is one session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s: Option<u64>,
    /// A session opened on this reader id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// The session closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<bool>,
    /// What starts using the reader: an API method or a flow step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
    /// Where an exchange went: `card`, `esam`, `icc` (inside an OBU) or `psam<n>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The command, hex, hidden bytes as `**`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// The whole response (data and status word), hex, hidden bytes as `**`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsp: Option<String>,
    /// The status word, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sw: Option<String>,
    /// The reader error instead of a response: `no_card`, `card_removed`, `timeout`,
    /// `reader_gone`, `protocol` or `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    /// The error's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A timeout's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What was hidden in the command (`PIN`, `MAC2`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    /// What was hidden in the response (`MAC1`, `TAC`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rsp_hidden: Vec<String>,
    /// How long the exchange took, in µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub us: Option<u64>,
    /// A power action: `on`, `off` or `reset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// An ATR, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub atr: Option<String>,
    /// The card's presence when it changed: `absent`, `present` or `powered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
    /// A card event: `inserted` or `removed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
}

impl TraceRecord {
    /// Whether this line is an exchange.
    pub fn is_exchange(&self) -> bool {
        self.n.is_some() && self.cmd.is_some()
    }

    /// Parses one line of a trace.
    pub fn parse(line: &str) -> Result<TraceRecord, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The name of a reader error in a trace (`err`), and its text.
pub fn error_kind(error: &ReaderError) -> &'static str {
    match error {
        ReaderError::NoCard { .. } => "no_card",
        ReaderError::CardRemoved { .. } => "card_removed",
        ReaderError::Timeout { .. } => "timeout",
        ReaderError::ReaderGone { .. } => "reader_gone",
        ReaderError::Protocol { .. } => "protocol",
        _ => "other",
    }
}

/// Hex with the hidden bytes as `**`; `hidden` holds (start, len) spans of `bytes`.
fn masked_hex(bytes: &[u8], hidden: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for (i, b) in bytes.iter().enumerate() {
        if hidden.iter().any(|&(s, l)| i >= s && i - s < l) {
            out.push_str("**");
        } else {
            let _ = write!(out, "{b:02X}");
        }
    }
    out
}

/// Where the data field of raw command bytes starts, and its length.
fn command_data(cmd: &[u8]) -> Option<(usize, usize)> {
    match cmd.get(4..)? {
        [lc, rest @ ..] if *lc != 0 && rest.len() >= usize::from(*lc) => {
            Some((5, usize::from(*lc)))
        }
        [0, b1, b2, rest @ ..] if !rest.is_empty() => {
            let nc = usize::from(u16::from_be_bytes([*b1, *b2]));
            (nc > 0 && rest.len() >= nc).then_some((7, nc))
        }
        _ => None,
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct FileState {
    file: Option<File>,
    written: u64,
}

/// Writes one reader instance's trace; shared by its sessions.
pub struct TraceRecorder {
    path: PathBuf,
    bytes_max: u64,
    redaction: Option<Arc<dyn Redaction>>,
    on_failure: Option<FailureHook>,
    state: Mutex<FileState>,
    sessions: AtomicU64,
    exchanges: AtomicU64,
    write_failures: AtomicU64,
    failure_logged: AtomicBool,
}

impl fmt::Debug for TraceRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceRecorder")
            .field("path", &self.path)
            .field("bytes_max", &self.bytes_max)
            .field("redacted", &self.redaction.is_some())
            .finish()
    }
}

impl TraceRecorder {
    /// A recorder writing to `options.path`. Never fails: a file that cannot be opened is
    /// logged, counted and tried again at the next line.
    pub fn open(options: TraceOptions) -> Arc<TraceRecorder> {
        let recorder = Arc::new(TraceRecorder {
            bytes_max: options
                .bytes_max
                .clamp(TRACE_BYTES_MAX_MIN, TRACE_BYTES_MAX_MAX),
            path: options.path,
            redaction: options.redaction,
            on_failure: options.on_failure,
            state: Mutex::new(FileState {
                file: None,
                written: 0,
            }),
            sessions: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            failure_logged: AtomicBool::new(false),
        });
        recorder.write(&recorder.header());
        recorder
    }

    /// The trace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines that could not be written.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    fn header(&self) -> TraceRecord {
        TraceRecord {
            trace: Some(TRACE_FORMAT.into()),
            v: Some(TRACE_VERSION),
            at: Some(now_rfc3339()),
            redacted: Some(self.redaction.is_some()),
            bytes_max: Some(self.bytes_max),
            ..TraceRecord::default()
        }
    }

    /// Writes a context mark: what starts using the reader now, in `session` (or in none).
    pub fn mark(&self, session: Option<u64>, context: &str) {
        let mark: String = context.chars().take(TRACE_MARK_CHARS_MAX).collect();
        self.write(&TraceRecord {
            at: Some(now_rfc3339()),
            s: session,
            mark: Some(mark),
            ..TraceRecord::default()
        });
    }

    fn write(&self, record: &TraceRecord) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = self.write_locked(&mut state, line.as_bytes(), record.trace.is_some()) {
            state.file = None;
            self.write_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(hook) = &self.on_failure {
                hook();
            }
            if !self.failure_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %self.path.display(), error = %e, "the APDU trace cannot be written; card commands go on, later failures are only counted");
            }
        }
    }

    fn write_locked(
        &self,
        state: &mut FileState,
        line: &[u8],
        is_header: bool,
    ) -> std::io::Result<()> {
        if state.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            state.written = file.metadata()?.len();
            state.file = Some(file);
        }
        if !is_header && state.written + line.len() as u64 > self.bytes_max {
            state.file = None;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, PathBuf::from(rotated))?;
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            let mut header = serde_json::to_string(&self.header()).unwrap_or_default();
            header.push('\n');
            file.write_all(header.as_bytes())?;
            state.written = header.len() as u64;
            state.file = Some(file);
        }
        if let Some(file) = state.file.as_mut() {
            file.write_all(line)?;
            state.written += line.len() as u64;
        }
        Ok(())
    }

    fn hides(&self, header: [u8; 4], data: &[u8], command: bool) -> Vec<Hide> {
        match &self.redaction {
            None => Vec::new(),
            Some(r) if command => r.command(header, data),
            Some(r) => r.response(header, data),
        }
    }

    /// Records one exchange; `chained` carries the header of the command whose response the
    /// card is sending over GET RESPONSE.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &self,
        session: u64,
        to: &str,
        cmd: &[u8],
        result: &Result<Vec<u8>, ReaderError>,
        at: String,
        elapsed: Duration,
        chained: &mut Option<[u8; 4]>,
    ) {
        let mut record = TraceRecord {
            n: Some(self.exchanges.fetch_add(1, Ordering::Relaxed) + 1),
            at: Some(at),
            s: Some(session),
            to: Some(to.to_owned()),
            us: Some(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)),
            ..TraceRecord::default()
        };
        let header: [u8; 4] = match cmd.get(..4) {
            Some(h) => [h[0], h[1], h[2], h[3]],
            None => [0; 4],
        };
        let is_get_response = header[1] == 0xC0;
        let mut spans = Vec::new();
        if let Some((start, len)) = command_data(cmd) {
            for hide in self.hides(header, &cmd[start..start + len], true) {
                spans.push((
                    start + hide.start,
                    hide.len.min(len.saturating_sub(hide.start)),
                ));
                record.hidden.push(hide.what.to_owned());
            }
        }
        record.cmd = Some(masked_hex(cmd, &spans));
        match result {
            Ok(rsp) => {
                let data_len = rsp.len().saturating_sub(2);
                let data = &rsp[..data_len];
                let mut spans = Vec::new();
                // The rest of a response comes over GET RESPONSE after `61xx`: it is hidden by
                // the rule of the command that started the chain.
                let rule = match (is_get_response, *chained) {
                    (true, Some(first)) => first,
                    _ => header,
                };
                let hides = self.hides(rule, data, false);
                for hide in &hides {
                    spans.push((
                        hide.start,
                        hide.len.min(data_len.saturating_sub(hide.start)),
                    ));
                    record.rsp_hidden.push(hide.what.to_owned());
                }
                let sw = rsp.get(data_len..).filter(|sw| sw.len() == 2);
                *chained = match sw {
                    Some([0x61, _]) => Some(rule),
                    _ => None,
                };
                record.rsp = Some(masked_hex(rsp, &spans));
                record.sw = sw.map(hex::encode_upper);
            }
            Err(e) => {
                *chained = None;
                record.err = Some(error_kind(e).to_owned());
                record.detail = Some(e.to_string());
                if let ReaderError::Timeout { timeout_ms, .. } = e {
                    record.timeout_ms = Some(*timeout_ms);
                }
            }
        }
        self.write(&record);
    }
}

/// A driver instance whose sessions are all recorded.
#[derive(Debug)]
pub struct TracedFactory {
    inner: Arc<dyn ReaderFactory>,
    recorder: Arc<TraceRecorder>,
}

impl TracedFactory {
    /// Records every session `inner` opens with `recorder`.
    pub fn wrap(
        inner: Arc<dyn ReaderFactory>,
        recorder: Arc<TraceRecorder>,
    ) -> Arc<dyn ReaderFactory> {
        Arc::new(TracedFactory { inner, recorder })
    }
}

impl ReaderFactory for TracedFactory {
    fn driver(&self) -> &str {
        self.inner.driver()
    }

    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
        self.inner.list()
    }

    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
        let session = self.inner.open(selector)?;
        Ok(TracingReader::wrap(session, self.recorder.clone()))
    }

    fn hotplug(&self) -> Option<Box<dyn HotplugWatch>> {
        self.inner.hotplug()
    }
}

/// A reader session whose traffic is recorded; everything passes through unchanged.
#[derive(Debug)]
pub struct TracingReader {
    inner: Box<dyn CardReader>,
    recorder: Arc<TraceRecorder>,
    session: u64,
    last_presence: Option<&'static str>,
    chained: Option<[u8; 4]>,
    psam_slots: u8,
}

impl TracingReader {
    /// Records `inner`'s traffic with `recorder`.
    pub fn wrap(inner: Box<dyn CardReader>, recorder: Arc<TraceRecorder>) -> Box<dyn CardReader> {
        let session = recorder.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        recorder.write(&TraceRecord {
            at: Some(now_rfc3339()),
            s: Some(session),
            open: Some(inner.info().id.clone()),
            ..TraceRecord::default()
        });
        let psam_slots = inner.info().capabilities.psam_slots;
        Box::new(TracingReader {
            inner,
            recorder,
            session,
            last_presence: None,
            chained: None,
            psam_slots,
        })
    }

    fn line(&self) -> TraceRecord {
        TraceRecord {
            at: Some(now_rfc3339()),
            s: Some(self.session),
            ..TraceRecord::default()
        }
    }

    fn power(&self, action: &str, result: Result<Option<&Atr>, &ReaderError>) {
        let mut record = self.line();
        record.power = Some(action.to_owned());
        match result {
            Ok(atr) => record.atr = atr.map(|a| a.to_string()),
            Err(e) => {
                record.err = Some(error_kind(e).to_owned());
                record.detail = Some(e.to_string());
            }
        }
        self.recorder.write(&record);
    }

    fn exchange(
        &mut self,
        to: &str,
        cmd: &[u8],
        send: impl FnOnce(&mut dyn CardReader) -> Result<Vec<u8>, ReaderError>,
    ) -> Result<Vec<u8>, ReaderError> {
        let (at, started) = (now_rfc3339(), Instant::now());
        let result = send(self.inner.as_mut());
        self.recorder.exchange(
            self.session,
            to,
            cmd,
            &result,
            at,
            started.elapsed(),
            &mut self.chained,
        );
        result
    }
}

impl Drop for TracingReader {
    fn drop(&mut self) {
        let mut record = self.line();
        record.close = Some(true);
        self.recorder.write(&record);
    }
}

impl ApduTransport for TracingReader {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        self.exchange("card", command, |r| r.transmit_raw(command, timeout))
    }

    fn protocol(&self) -> Protocol {
        self.inner.protocol()
    }
}

impl CardReader for TracingReader {
    fn info(&self) -> &ReaderInfo {
        self.inner.info()
    }

    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        let result = self.inner.power_on();
        self.power("on", result.as_ref().map(Some));
        result
    }

    fn power_off(&mut self) -> Result<(), ReaderError> {
        let result = self.inner.power_off();
        self.power("off", result.as_ref().map(|_| None));
        result
    }

    fn reset(&mut self) -> Result<Atr, ReaderError> {
        let result = self.inner.reset();
        self.power("reset", result.as_ref().map(Some));
        result
    }

    fn atr(&self) -> Option<Atr> {
        self.inner.atr()
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        let result = self.inner.presence();
        if let Ok(presence) = &result {
            let (name, atr) = match presence {
                CardPresence::Absent => ("absent", None),
                CardPresence::Present => ("present", None),
                CardPresence::Powered { atr } => ("powered", Some(atr.to_string())),
            };
            if self.last_presence != Some(name) {
                self.last_presence = Some(name);
                let mut record = self.line();
                record.presence = Some(name.to_owned());
                record.atr = atr;
                self.recorder.write(&record);
            }
        }
        result
    }

    fn is_contact(&self) -> bool {
        self.inner.is_contact()
    }

    fn is_contactless(&self) -> bool {
        self.inner.is_contactless()
    }

    fn psam(&mut self) -> Option<&mut dyn PsamSlots> {
        self.inner.psam()?;
        Some(self)
    }

    fn obu(&mut self) -> Option<&mut dyn ObuChannel> {
        self.inner.obu()?;
        Some(self)
    }

    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        self.inner.events()?;
        Some(self)
    }

    fn exclusive(&mut self) -> Option<&mut dyn ExclusiveAccess> {
        self.inner.exclusive()
    }

    fn trace_mark(&mut self, context: &str) {
        self.recorder.mark(Some(self.session), context);
    }
}

fn unsupported(reader: &dyn CardReader, what: &'static str) -> ReaderError {
    ReaderError::Unsupported {
        reader: reader.info().id.clone(),
        what,
    }
}

impl PsamSlots for TracingReader {
    fn slot_count(&self) -> u8 {
        self.psam_slots
    }

    fn psam_reset(&mut self, slot: u8) -> Result<Atr, ReaderError> {
        let result = match self.inner.psam() {
            Some(p) => p.psam_reset(slot),
            None => Err(unsupported(self.inner.as_ref(), "PSAM slots")),
        };
        self.power(&format!("psam{slot} reset"), result.as_ref().map(Some));
        result
    }

    fn psam_transmit(
        &mut self,
        slot: u8,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        self.exchange(&format!("psam{slot}"), command, |r| match r.psam() {
            Some(p) => p.psam_transmit(slot, command, timeout),
            None => Err(unsupported(r, "PSAM slots")),
        })
    }
}

impl ObuChannel for TracingReader {
    fn obu_transmit(
        &mut self,
        target: ObuTarget,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        let to = match target {
            ObuTarget::Esam => "esam",
            ObuTarget::Icc => "icc",
        };
        self.exchange(to, command, |r| match r.obu() {
            Some(o) => o.obu_transmit(target, command, timeout),
            None => Err(unsupported(r, "an OBU channel")),
        })
    }
}

impl CardEvents for TracingReader {
    fn wait_for_change(&mut self, timeout: Duration) -> Result<Option<CardEvent>, ReaderError> {
        let result = match self.inner.events() {
            Some(e) => e.wait_for_change(timeout),
            None => Err(unsupported(self.inner.as_ref(), "card events")),
        };
        if let Ok(Some(event)) = &result {
            let mut record = self.line();
            match event {
                CardEvent::Inserted { atr } => {
                    record.card = Some("inserted".into());
                    record.atr = Some(atr.to_string());
                }
                CardEvent::Removed => record.card = Some("removed".into()),
            }
            self.recorder.write(&record);
        }
        result
    }

    fn stopper(&mut self) -> Option<WaitStopper> {
        self.inner.events()?.stopper()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Capabilities;

    /// Hides a VERIFY's data and the last four bytes of an `80 50` response.
    #[derive(Debug)]
    struct TestRedaction;
    impl Redaction for TestRedaction {
        fn command(&self, header: [u8; 4], _data: &[u8]) -> Vec<Hide> {
            match header {
                [0x00, 0x20, ..] => vec![Hide::all("PIN")],
                _ => vec![],
            }
        }
        fn response(&self, header: [u8; 4], data: &[u8]) -> Vec<Hide> {
            match header {
                [0x80, 0x50, ..] if data.len() >= 4 => vec![Hide {
                    start: data.len() - 4,
                    len: 4,
                    what: "MAC1",
                }],
                _ => vec![],
            }
        }
    }

    #[derive(Debug)]
    struct Echo {
        info: ReaderInfo,
        replies: Vec<Result<Vec<u8>, ReaderError>>,
    }
    impl ApduTransport for Echo {
        fn transmit_raw(&mut self, _: &[u8], _: Duration) -> Result<Vec<u8>, ReaderError> {
            self.replies.remove(0)
        }
        fn protocol(&self) -> Protocol {
            Protocol::T0
        }
    }
    impl CardReader for Echo {
        fn info(&self) -> &ReaderInfo {
            &self.info
        }
        fn power_on(&mut self) -> Result<Atr, ReaderError> {
            Ok(Atr(vec![0x3B, 0x00]))
        }
        fn power_off(&mut self) -> Result<(), ReaderError> {
            Ok(())
        }
        fn reset(&mut self) -> Result<Atr, ReaderError> {
            self.power_on()
        }
        fn atr(&self) -> Option<Atr> {
            None
        }
        fn presence(&mut self) -> Result<CardPresence, ReaderError> {
            Ok(CardPresence::Present)
        }
    }

    fn echo(replies: Vec<Result<&str, ReaderError>>) -> Box<dyn CardReader> {
        Box::new(Echo {
            info: ReaderInfo {
                id: "test:1".into(),
                name: "test".into(),
                driver: "test".into(),
                capabilities: Capabilities::default(),
            },
            replies: replies
                .into_iter()
                .map(|r| r.map(|h| hex::decode(h).unwrap()))
                .collect(),
        })
    }

    fn lines(path: &Path) -> Vec<TraceRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| TraceRecord::parse(l).unwrap())
            .collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cardd-trace-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("trace.jsonl")
    }

    #[test]
    fn exchanges_marks_and_errors_are_written_with_pins_and_macs_hidden() {
        let path = temp("redact");
        let recorder = TraceRecorder::open(TraceOptions {
            path: path.clone(),
            bytes_max: TRACE_BYTES_MAX_DEFAULT,
            redaction: Some(Arc::new(TestRedaction)),
            on_failure: None,
        });
        {
            let mut reader = TracingReader::wrap(
                echo(vec![
                    Ok("9000"),
                    Ok("6110"),
                    Ok("000000640001000011223344556677889000"),
                    Err(ReaderError::Timeout {
                        reader: "test:1".into(),
                        timeout_ms: 50,
                    }),
                ]),
                recorder.clone(),
            );
            reader.trace_mark("card.summary");
            let t = Duration::from_millis(50);
            reader
                .transmit_raw(&hex::decode("0020000003123456").unwrap(), t)
                .unwrap();
            reader
                .transmit_raw(&hex::decode("805000020B0100000064112233445566").unwrap(), t)
                .unwrap();
            reader
                .transmit_raw(&hex::decode("00C0000010").unwrap(), t)
                .unwrap();
            reader
                .transmit_raw(&hex::decode("805C000204").unwrap(), t)
                .unwrap_err();
        }
        let l = lines(&path);
        assert_eq!(l[0].trace.as_deref(), Some(TRACE_FORMAT));
        assert_eq!(l[0].redacted, Some(true));
        assert_eq!(l[1].open.as_deref(), Some("test:1"));
        assert_eq!(l[2].mark.as_deref(), Some("card.summary"));
        assert_eq!(l[3].cmd.as_deref(), Some("0020000003******"));
        assert_eq!(l[3].hidden, ["PIN"]);
        assert_eq!(l[3].sw.as_deref(), Some("9000"));
        assert_eq!(l[4].rsp.as_deref(), Some("6110"));
        // The rest of the response comes over GET RESPONSE: hidden as a whole.
        assert_eq!(
            l[5].rsp.as_deref(),
            Some("000000640001000011223344********9000")
        );
        assert_eq!(l[5].rsp_hidden, ["MAC1"]);
        assert!(l[5].hidden.is_empty());
        assert_eq!(l[6].err.as_deref(), Some("timeout"));
        assert_eq!(l[6].timeout_ms, Some(50));
        assert_eq!(l[6].n, Some(4));
        assert_eq!(l[7].close, Some(true));
        assert_eq!(recorder.write_failures(), 0);
    }

    #[test]
    fn the_file_rotates_once_at_its_bound_and_write_failures_are_counted() {
        let path = temp("rotate");
        let recorder = TraceRecorder::open(TraceOptions {
            path: path.clone(),
            bytes_max: TRACE_BYTES_MAX_MIN,
            redaction: None,
            on_failure: None,
        });
        for i in 0..200 {
            recorder.mark(None, &format!("step {i}"));
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= TRACE_BYTES_MAX_MIN, "{len}");
        let rotated = PathBuf::from(format!("{}.1", path.display()));
        assert!(std::fs::metadata(&rotated).unwrap().len() <= TRACE_BYTES_MAX_MIN);
        let current = lines(&path);
        assert_eq!(current[0].trace.as_deref(), Some(TRACE_FORMAT));
        assert_eq!(current.last().unwrap().mark.as_deref(), Some("step 199"));

        // A trace whose directory is a file cannot be written.
        let counted = Arc::new(AtomicU64::new(0));
        let told = counted.clone();
        let blocker = path.with_file_name("a-file");
        std::fs::write(&blocker, b"").unwrap();
        let broken = TraceRecorder::open(TraceOptions {
            path: blocker.join("trace.jsonl"),
            bytes_max: TRACE_BYTES_MAX_MIN,
            redaction: None,
            on_failure: Some(Arc::new(move || {
                told.fetch_add(1, Ordering::Relaxed);
            })),
        });
        let mut reader = TracingReader::wrap(echo(vec![Ok("9000")]), broken.clone());
        let rsp = reader
            .transmit_raw(&[0x00, 0xA4, 0x00, 0x00], Duration::from_millis(5))
            .unwrap();
        assert_eq!(rsp, [0x90, 0x00]);
        assert!(broken.write_failures() >= 3, "{}", broken.write_failures());
        assert_eq!(counted.load(Ordering::Relaxed), broken.write_failures());
    }
}
