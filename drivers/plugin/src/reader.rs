//! The `cardd-reader` face of a plugin: [`PluginFactory`], [`PluginReader`], [`PluginHotplug`].
//!
//! The daemon opens a plugin's readers exactly as it opens PC/SC ones. A session is bound to
//! the plugin process (the *run*) it was opened in: if that process dies, hangs or is restarted
//! the session answers `DriverCrashed` from then on (the card's power state and selected files
//! died with the process, so carrying on silently would lie; and the reader itself is fine, so
//! `ReaderGone` would send the operator to the cable), and the reader comes back as a new
//! `HotplugEvent::Added` once the supervisor has restarted the plugin. A reply the session
//! cannot read is `DriverMalformed`. Only a reader the plugin reports removed is `ReaderGone`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cardd_reader::{
    ApduTransport, Atr, CardEvent, CardEvents, CardPresence, CardReader, HotplugEvent,
    HotplugWatch, Protocol, ReaderError, ReaderFactory, ReaderInfo, ReaderSelector, Supervised,
    SupervisedState, SupervisedStatus,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::PluginError;
use crate::options::{config_error, PluginOptions};
use crate::protocol::{
    feature, method, truncate_chars, AtrResult, Empty, ErrorCode, OpenResult, PresenceResult,
    TransmitResult, WireError, ERROR_MESSAGE_CHARS_MAX,
};
use crate::shared::{CallError, PluginState, PluginStatus, Shared, Target};
use crate::supervisor;
use crate::DRIVER_NAME;

/// Extra time [`PluginFactory::new`] allows the first start beyond the handshake timeouts.
pub const FIRST_START_SLACK_MS: u64 = 1_000;

/// One configured plugin: owns the supervisor thread (and through it the child process).
/// Dropping it stops the plugin: stdin is closed, and the process is killed if it has not
/// exited within [`supervisor::SHUTDOWN_GRACE_MS`].
#[derive(Debug)]
pub struct PluginFactory {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
}

impl PluginFactory {
    /// Validates `options`, starts the plugin and waits (bounded by the hello and request
    /// timeouts) for its first handshake so that [`ReaderFactory::list`] shows its readers
    /// right away. Only invalid options are an error: a plugin that cannot start (no such
    /// program, a protocol version mismatch, no `hello` in time, an early exit) takes only its
    /// own readers offline. The failure is logged with what to do, shows in [`Self::status`],
    /// and the supervisor keeps retrying with backoff; the readers appear through
    /// [`ReaderFactory::hotplug`] once it succeeds.
    pub fn new(options: PluginOptions) -> Result<Self, ReaderError> {
        options.validate()?;
        let first_start = Duration::from_millis(
            options.hello_timeout_ms
                + options.request_timeout_ms
                + 2 * options.request_timeout_grace_ms
                + FIRST_START_SLACK_MS,
        );
        let shared = Arc::new(Shared::new(options));
        let supervisor_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("plugin-{}", shared.options.name))
            .spawn(move || supervisor::supervise(supervisor_shared))
            .map_err(|e| config_error(format!("cannot start the supervisor thread: {e}")))?;
        let factory = PluginFactory {
            shared,
            supervisor: Some(handle),
        };
        match factory.shared.wait_first_attempt(first_start) {
            Some(Err(e)) if e.is_permanent() => {
                tracing::error!(plugin = %factory.shared.options.name, "plugin cannot start, its readers stay offline until this is fixed: {e}");
            }
            Some(Err(e)) => {
                tracing::warn!(plugin = %factory.shared.options.name, "plugin did not start; retrying with backoff: {e}");
            }
            Some(Ok(())) => {}
            None => tracing::warn!(
                plugin = %factory.shared.options.name,
                "plugin still starting after {} ms; its readers appear when it is ready",
                first_start.as_millis()
            ),
        }
        Ok(factory)
    }

    /// The instance name (the `<name>` in `plugin:<name>:<id>`).
    pub fn name(&self) -> &str {
        &self.shared.options.name
    }

    /// State, identity, last error and counters of the plugin process.
    pub fn status(&self) -> PluginStatus {
        self.shared.status()
    }

    /// The features the plugin announced in `hello` (empty before its first handshake).
    pub fn features(&self) -> Vec<String> {
        self.shared.features()
    }

    /// True when the plugin announced `feature` in `hello`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features().iter().any(|f| f == feature)
    }

    /// The plugin's own id for the cardd reader id `reader_id` (`plugin:<name>:<id>`), whether
    /// or not that reader is listed now.
    pub fn plugin_reader_id<'a>(&self, reader_id: &'a str) -> Option<&'a str> {
        reader_id
            .strip_prefix(DRIVER_NAME)?
            .strip_prefix(':')?
            .strip_prefix(self.name())?
            .strip_prefix(':')
    }

    /// Sends one test-hook request (`protocol::test_method`, PROTOCOL.md §12) to a plugin that
    /// announced `test_hooks`, and waits for its answer within the request timeout. For the
    /// conformance kit and tests only: it drives the plugin's simulated cards, never real ones.
    pub fn test_hook(&self, method: &'static str, params: Value) -> Result<Value, ReaderError> {
        let plugin = format!("{DRIVER_NAME}:{}", self.name());
        if !method.starts_with("test.") {
            return Err(config_error(format!("{method} is not a test hook")));
        }
        let run = self
            .shared
            .ready_run()
            .ok_or_else(|| ReaderError::ReaderGone {
                reader: plugin.clone(),
            })?;
        if !self.has_feature(feature::TEST_HOOKS) {
            return Err(ReaderError::Unsupported {
                reader: plugin,
                what: "test hooks (the plugin does not announce the test_hooks feature)",
            });
        }
        let timeout = self.shared.options.request_timeout();
        let budget = timeout + self.shared.options.grace();
        let target = Target { run, reader: None };
        match self.shared.call(target, method, params, budget) {
            Ok(value) => Ok(value),
            Err(CallError::Gone) => Err(ReaderError::ReaderGone { reader: plugin }),
            Err(CallError::Timeout) => Err(ReaderError::Timeout {
                reader: plugin,
                timeout_ms: timeout.as_millis() as u64,
            }),
            Err(CallError::Local(detail)) => Err(ReaderError::Protocol {
                reader: plugin,
                detail,
            }),
            Err(CallError::Malformed(detail)) => Err(ReaderError::DriverMalformed {
                reader: plugin,
                program: self.name().to_owned(),
                detail,
            }),
            Err(CallError::Remote(wire)) => {
                Err(remote_error(self.name(), plugin, method, timeout, wire))
            }
        }
    }

    /// Kills the plugin (if it runs) and starts it again at once, skipping the backoff.
    pub fn restart_now(&self, reason: &str) {
        tracing::warn!(plugin = %self.shared.options.name, "plugin restart requested: {reason}");
        self.shared.restart_now(reason);
    }
}

impl Supervised for PluginFactory {
    fn status(&self) -> SupervisedStatus {
        let status = self.shared.status();
        // A start that failed for a reason only a person can fix stays `failed` while it is
        // retried, rather than flickering between `backoff` and `starting`.
        let needs_a_person = status
            .last_error
            .as_ref()
            .is_some_and(PluginError::is_permanent);
        let state = match status.state {
            PluginState::Running => SupervisedState::Running,
            PluginState::Stopped => SupervisedState::Stopped,
            PluginState::Starting | PluginState::Restarting if needs_a_person => {
                SupervisedState::Failed
            }
            PluginState::Starting => SupervisedState::Starting,
            PluginState::Restarting => SupervisedState::Backoff,
        };
        SupervisedStatus {
            instance: self.shared.options.name.clone(),
            state,
            restarts: status.restarts,
            backoff_ms: status.backoff_ms,
            malformed_lines: status.stats.malformed_messages,
            last_error: status.last_error.as_ref().map(ToString::to_string),
            name: status.plugin_name,
            version: status.plugin_version,
            features: status.features,
            readers: status.readers,
        }
    }

    fn restart_now(&self, reason: &str) {
        PluginFactory::restart_now(self, reason);
    }
}

impl Drop for PluginFactory {
    fn drop(&mut self) {
        self.shared.shutdown();
        if let Some(handle) = self.supervisor.take() {
            // Bounded: the supervisor closes stdin, waits SHUTDOWN_GRACE_MS, then kills.
            if handle.join().is_err() {
                tracing::error!(plugin = %self.shared.options.name, "the plugin supervisor panicked");
            }
        }
    }
}

impl ReaderFactory for PluginFactory {
    fn driver(&self) -> &str {
        DRIVER_NAME
    }

    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
        Ok(self.shared.readers().into_iter().map(|l| l.info).collect())
    }

    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
        let listed = self.shared.readers();
        let infos: Vec<ReaderInfo> = listed.iter().map(|l| l.info.clone()).collect();
        let not_found = || ReaderError::NotFound {
            selector: selector.to_string(),
        };
        let info = selector.pick(&infos).ok_or_else(not_found)?;
        let entry = listed
            .iter()
            .find(|l| l.info.id == info.id)
            .ok_or_else(not_found)?;
        let run = self
            .shared
            .ready_run()
            .ok_or_else(|| ReaderError::ReaderGone {
                reader: info.id.clone(),
            })?;
        let mut session = PluginReader {
            shared: self.shared.clone(),
            info: info.clone(),
            plugin_reader: entry.plugin_id.clone(),
            appearance: entry.appearance,
            session: self.shared.next_session(),
            run,
            protocol: Protocol::Other,
            event_cursor: self.shared.card_event_cursor(),
            open: false,
        };
        let params = json!({"session": session.session, "reader": session.plugin_reader});
        let opened: OpenResult =
            session.request(method::OPEN, params, self.shared.options.request_timeout())?;
        session.open = true;
        session.protocol = match opened.protocol.as_deref() {
            None | Some("other") => Protocol::Other,
            Some("t0") => Protocol::T0,
            Some("t1") => Protocol::T1,
            Some("contactless") => Protocol::Contactless,
            Some(other) => {
                return Err(session.malformed(format!(
                    "an unknown transmission protocol {:?}",
                    truncate_chars(other, 32)
                )))
            }
        };
        Ok(Box::new(session))
    }

    fn hotplug(&self) -> Option<Box<dyn HotplugWatch>> {
        Some(Box::new(PluginHotplug {
            cursor: self.shared.hotplug_cursor(),
            shared: self.shared.clone(),
        }))
    }

    fn supervised(&self) -> Option<&dyn Supervised> {
        Some(self)
    }
}

/// A session on one reader of a plugin.
#[derive(Debug)]
pub struct PluginReader {
    shared: Arc<Shared>,
    info: ReaderInfo,
    /// The plugin's own id for the reader.
    plugin_reader: String,
    /// Which appearance of the reader the session was opened on.
    appearance: u64,
    /// cardd's number for this session, sent with every request.
    session: u64,
    /// The plugin process this session belongs to.
    run: u64,
    protocol: Protocol,
    event_cursor: u64,
    /// `open` succeeded, so `close` is owed.
    open: bool,
}

impl PluginReader {
    fn target(&self) -> Target<'_> {
        Target {
            run: self.run,
            reader: Some((&self.plugin_reader, self.appearance)),
        }
    }

    /// One request bounded by `timeout` plus the configured grace.
    fn request<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
        timeout: Duration,
    ) -> Result<T, ReaderError> {
        let budget = timeout + self.shared.options.grace();
        match self.shared.call(self.target(), method, params, budget) {
            // `null` and a missing result both mean "nothing to report".
            Ok(Value::Null) => self.decode(method, json!({})),
            Ok(value) => self.decode(method, value),
            Err(error) => Err(self.error(method, error, timeout)),
        }
    }

    fn session_params(&self) -> Value {
        json!({"session": self.session})
    }

    fn error(&self, method: &'static str, error: CallError, timeout: Duration) -> ReaderError {
        let reader = self.info.id.clone();
        match error {
            // The process went (crash, hang, restart), not the reader: say so.
            CallError::Gone if self.shared.run_lost(self.run) => ReaderError::DriverCrashed {
                reader,
                program: self.program(),
            },
            CallError::Gone => ReaderError::ReaderGone { reader },
            CallError::Malformed(detail) => ReaderError::DriverMalformed {
                reader,
                program: self.program(),
                detail,
            },
            CallError::Timeout => ReaderError::Timeout {
                reader,
                timeout_ms: timeout.as_millis() as u64,
            },
            CallError::Local(detail) => ReaderError::Protocol { reader, detail },
            CallError::Remote(wire) => {
                remote_error(&self.shared.options.name, reader, method, timeout, wire)
            }
        }
    }

    fn decode_atr(&self, hex_atr: &str) -> Result<Atr, ReaderError> {
        hex::decode(hex_atr)
            .map(Atr)
            .map_err(|e| self.malformed(format!("an ATR that is not hex: {e}")))
    }

    /// The plugin instance's name, as operators know it.
    fn program(&self) -> String {
        self.shared.options.name.clone()
    }

    /// An answer of the plugin's that breaks the protocol: the plugin's fault, not the card's.
    fn malformed(&self, detail: String) -> ReaderError {
        ReaderError::DriverMalformed {
            reader: self.info.id.clone(),
            program: self.program(),
            detail,
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        method: &'static str,
        value: Value,
    ) -> Result<T, ReaderError> {
        serde_json::from_value(value)
            .map_err(|e| self.malformed(format!("a malformed result to {method}: {e}")))
    }
}

/// Maps a plugin's `{code, message}` onto the `ReaderError` the layers above react to.
fn remote_error(
    plugin: &str,
    reader: String,
    method: &'static str,
    timeout: Duration,
    wire: WireError,
) -> ReaderError {
    let message = truncate_chars(&wire.message, ERROR_MESSAGE_CHARS_MAX);
    match ErrorCode::parse(&wire.code) {
        Some(ErrorCode::NoCard) => ReaderError::NoCard { reader },
        Some(ErrorCode::CardRemoved) => ReaderError::CardRemoved { reader },
        Some(ErrorCode::Timeout) => ReaderError::Timeout {
            reader,
            timeout_ms: timeout.as_millis() as u64,
        },
        Some(ErrorCode::ReaderGone) => ReaderError::ReaderGone { reader },
        Some(ErrorCode::Protocol) => ReaderError::Protocol {
            reader,
            detail: message,
        },
        Some(ErrorCode::NotFound) => ReaderError::NotFound {
            selector: format!("reader id {reader:?} ({message})"),
        },
        Some(ErrorCode::Busy) => ReaderError::Busy {
            reader,
            holder: if message.is_empty() {
                "another program".into()
            } else {
                message
            },
        },
        Some(ErrorCode::Unsupported) => ReaderError::Unsupported {
            reader,
            what: method,
        },
        Some(ErrorCode::UnsupportedVersion | ErrorCode::BadRequest | ErrorCode::Internal)
        | None => ReaderError::Driver {
            reader,
            source: Box::new(PluginError::Remote {
                plugin: plugin.to_owned(),
                method: method.to_owned(),
                code: truncate_chars(&wire.code, 64),
                message,
            }),
        },
    }
}

impl ApduTransport for PluginReader {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        let params = json!({"session": self.session, "apdu": hex::encode_upper(command)});
        let result: TransmitResult = self.request(method::TRANSMIT, params, timeout)?;
        let response = hex::decode(&result.response)
            .map_err(|e| self.malformed(format!("a response that is not hex: {e}")))?;
        if response.len() < 2 {
            return Err(self.malformed(format!(
                "a {}-byte response; SW1 SW2 are needed",
                response.len()
            )));
        }
        Ok(response)
    }

    fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl CardReader for PluginReader {
    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        let timeout = self.shared.options.request_timeout();
        let result: AtrResult = self.request(method::POWER_ON, self.session_params(), timeout)?;
        let atr = self.decode_atr(&result.atr)?;
        self.shared
            .set_atr(self.run, &self.plugin_reader, Some(atr.clone()));
        Ok(atr)
    }

    fn power_off(&mut self) -> Result<(), ReaderError> {
        let timeout = self.shared.options.request_timeout();
        let _: Empty = self.request(method::POWER_OFF, self.session_params(), timeout)?;
        self.shared.set_atr(self.run, &self.plugin_reader, None);
        Ok(())
    }

    fn reset(&mut self) -> Result<Atr, ReaderError> {
        let timeout = self.shared.options.request_timeout();
        let result: AtrResult = self.request(method::RESET, self.session_params(), timeout)?;
        let atr = self.decode_atr(&result.atr)?;
        self.shared
            .set_atr(self.run, &self.plugin_reader, Some(atr.clone()));
        Ok(atr)
    }

    fn atr(&self) -> Option<Atr> {
        self.shared.atr(self.run, &self.plugin_reader)
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        let timeout = self.shared.options.request_timeout();
        let result: PresenceResult =
            self.request(method::PRESENCE, self.session_params(), timeout)?;
        let presence = match result.state.as_str() {
            "absent" => CardPresence::Absent,
            "present" => CardPresence::Present,
            "powered" => {
                let atr = match result.atr.as_deref() {
                    Some(atr) => self.decode_atr(atr)?,
                    None => self.atr().unwrap_or_default(),
                };
                CardPresence::Powered { atr }
            }
            other => {
                return Err(self.malformed(format!(
                    "presence state {:?} is not absent, present or powered",
                    truncate_chars(other, 32)
                )))
            }
        };
        let atr = match &presence {
            CardPresence::Powered { atr } => Some(atr.clone()),
            _ => None,
        };
        self.shared.set_atr(self.run, &self.plugin_reader, atr);
        Ok(presence)
    }

    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        if self.info.capabilities.events {
            Some(self)
        } else {
            None
        }
    }
}

impl CardEvents for PluginReader {
    fn wait_for_change(&mut self, timeout: Duration) -> Result<Option<CardEvent>, ReaderError> {
        let target = Target {
            run: self.run,
            reader: Some((&self.plugin_reader, self.appearance)),
        };
        self.shared
            .wait_card_event(target, &mut self.event_cursor, timeout)
            .map_err(|()| ReaderError::ReaderGone {
                reader: self.info.id.clone(),
            })
    }
}

impl Drop for PluginReader {
    fn drop(&mut self) {
        if self.open {
            // Never blocks: queued if the plugin's run is still alive, answer not awaited.
            self.shared
                .send_and_forget(self.target(), method::CLOSE, self.session_params());
        }
    }
}

/// Reader add/remove notifications of one plugin instance (from the watch's creation on).
/// A plugin restart shows as `Removed` for each of its readers, then `Added` once it is back.
#[derive(Debug)]
pub struct PluginHotplug {
    shared: Arc<Shared>,
    cursor: u64,
}

impl HotplugWatch for PluginHotplug {
    fn wait(&mut self, timeout: Duration) -> Result<Option<HotplugEvent>, ReaderError> {
        self.shared
            .wait_hotplug(&mut self.cursor, timeout)
            .map_err(|()| ReaderError::ReaderGone {
                reader: format!("{DRIVER_NAME}:{}", self.shared.options.name),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(code: &str) -> WireError {
        WireError {
            code: code.into(),
            message: "detail".into(),
        }
    }

    #[test]
    fn error_codes_map_onto_reader_errors() {
        let t = Duration::from_millis(750);
        let map =
            |code: &str| remote_error("acme", "plugin:acme:r1".into(), "transmit", t, wire(code));
        assert!(matches!(map("no_card"), ReaderError::NoCard { .. }));
        let removed = map("card_removed");
        assert!(matches!(removed, ReaderError::CardRemoved { .. }) && removed.outcome_unknown());
        assert!(matches!(
            map("timeout"),
            ReaderError::Timeout {
                timeout_ms: 750,
                ..
            }
        ));
        assert!(matches!(map("reader_gone"), ReaderError::ReaderGone { .. }));
        assert!(matches!(map("protocol"), ReaderError::Protocol { .. }));
        assert!(matches!(map("not_found"), ReaderError::NotFound { .. }));
        assert!(matches!(map("busy"), ReaderError::Busy { .. }));
        assert!(matches!(
            map("unsupported"),
            ReaderError::Unsupported {
                what: "transmit",
                ..
            }
        ));
        for code in ["internal", "bad_request", "something_new"] {
            match map(code) {
                ReaderError::Driver { source, .. } => {
                    let plugin = source.downcast_ref::<PluginError>().unwrap();
                    assert!(plugin.to_string().contains(code), "{plugin}");
                }
                other => panic!("{code} gave {other:?}"),
            }
        }
    }
}
