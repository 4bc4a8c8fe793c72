//! The wire protocol `cardd-plugin/1`, as Rust types.
//!
//! `PROTOCOL.md` next to this crate is the specification vendors read; this module is the one
//! place where cardd's side of it is written down, so the two can be compared line by line.
//! Everything a plugin sends is untrusted: lines are read with a hard size bound
//! ([`MESSAGE_BYTES_MAX`]) and every field is checked before it reaches a session, so a buggy
//! or hostile plugin can make its own readers fail but cannot make cardd panic or grow without
//! bound.

use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build of cardd speaks.
pub const PROTOCOL_VERSION: &str = "cardd-plugin/1";
/// Every version cardd offers in `hello`, preferred first.
pub const SUPPORTED_VERSIONS: &[&str] = &[PROTOCOL_VERSION];
/// Longest message (one line, without its newline) either side may send. A full extended APDU
/// (65 535 data bytes) is about 131 KiB of hex, so this leaves room for the JSON around it.
pub const MESSAGE_BYTES_MAX: usize = 262_144;
/// Longest error message kept from a plugin (longer ones are cut).
pub const ERROR_MESSAGE_CHARS_MAX: usize = 512;
/// Longest reader id a plugin may use.
pub const READER_ID_BYTES_MAX: usize = 128;
/// Longest reader name a plugin may use.
pub const READER_NAME_BYTES_MAX: usize = 256;
/// Most readers one plugin may list.
pub const READERS_MAX: usize = 64;
/// Most requests a plugin may ask to have outstanding at once (`max_in_flight` in `hello`).
pub const IN_FLIGHT_MAX: usize = 64;
/// Longest plugin name or version string kept from `hello`.
pub const IDENTITY_CHARS_MAX: usize = 64;
/// Most features kept from a plugin's `hello` answer (later entries are ignored).
pub const FEATURES_MAX: usize = 32;
/// Longest feature name; longer entries are ignored.
pub const FEATURE_CHARS_MAX: usize = 64;

/// Optional parts of the protocol, announced by name in `hello` (`features`). Optional methods
/// are announced as features, not as a new major version: a side sends a feature's methods only
/// when the other side announced it. Unknown feature names are ignored.
pub mod feature {
    /// The plugin serves the `test.*` methods for its simulated cards (PROTOCOL.md §12).
    pub const TEST_HOOKS: &str = "test_hooks";
}

/// The features cardd announces in `hello`: what it can use.
pub const HOST_FEATURES: &[&str] = &[feature::TEST_HOOKS];

/// The test-hook methods of feature [`feature::TEST_HOOKS`] (PROTOCOL.md §12). cardd sends
/// them only to a plugin that announced the feature, and only from the conformance kit and
/// tests: the daemon never sends them in normal operation.
pub mod test_method {
    /// `{"reader"}`: pull the simulated card (the plugin sends `card_removed` first).
    pub const REMOVE_CARD: &str = "test.remove_card";
    /// `{"reader"}`: put the simulated card back (the plugin sends `card_inserted` first).
    pub const INSERT_CARD: &str = "test.insert_card";
    /// `{"reader"}`: the next `transmit` on the reader pulls the card and answers `card_removed`.
    pub const REMOVE_DURING_NEXT: &str = "test.remove_during_next";
    /// `{"reader"}`: the card does not answer the next `transmit` on the reader; the plugin
    /// answers `timeout` once the request's `timeout_ms` has passed.
    pub const SILENCE_NEXT: &str = "test.silence_next";
    /// `{"method"?}`: the plugin stops answering at its next request (of `method`, if given).
    pub const HANG_NEXT: &str = "test.hang_next";
    /// `{"method"?}`: the plugin exits at its next request (of `method`, if given).
    pub const CRASH_NEXT: &str = "test.crash_next";
    /// `{"reader"}`: the reader is unplugged (`reader_removed`).
    pub const REMOVE_READER: &str = "test.remove_reader";
    /// `{"reader"}`: the reader is plugged back (`reader_added`).
    pub const ADD_READER: &str = "test.add_reader";
    /// `{"lines"?}`: the plugin writes that many malformed lines on stdout (default 10) before
    /// its answer.
    pub const GARBAGE: &str = "test.garbage";
}

/// Request method names.
pub mod method {
    pub const HELLO: &str = "hello";
    pub const LIST: &str = "list";
    pub const OPEN: &str = "open";
    pub const CLOSE: &str = "close";
    pub const TRANSMIT: &str = "transmit";
    pub const POWER_ON: &str = "power_on";
    pub const POWER_OFF: &str = "power_off";
    pub const RESET: &str = "reset";
    pub const PRESENCE: &str = "presence";
    pub const PING: &str = "ping";
}

/// Unsolicited event names.
pub mod event {
    pub const CARD_INSERTED: &str = "card_inserted";
    pub const CARD_REMOVED: &str = "card_removed";
    pub const READER_ADDED: &str = "reader_added";
    pub const READER_REMOVED: &str = "reader_removed";
}

/// The error codes a plugin answers with, and what they become in cardd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `no_card` → `ReaderError::NoCard`.
    NoCard,
    /// `card_removed` → `ReaderError::CardRemoved` (outcome unknown).
    CardRemoved,
    /// `timeout` → `ReaderError::Timeout` (outcome unknown).
    Timeout,
    /// `reader_gone` → `ReaderError::ReaderGone`.
    ReaderGone,
    /// `protocol` → `ReaderError::Protocol` (the reader or card broke its framing).
    Protocol,
    /// `not_found` → `ReaderError::NotFound` (open of an unknown reader).
    NotFound,
    /// `busy` → `ReaderError::Busy` (another program holds the reader).
    Busy,
    /// `unsupported` → `ReaderError::Unsupported`.
    Unsupported,
    /// `unsupported_version` (only in answer to `hello`) → a version-mismatch error.
    UnsupportedVersion,
    /// `bad_request`: the plugin did not understand the request → `ReaderError::Driver`.
    BadRequest,
    /// `internal`: anything else that went wrong inside the plugin → `ReaderError::Driver`.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::NoCard,
        ErrorCode::CardRemoved,
        ErrorCode::Timeout,
        ErrorCode::ReaderGone,
        ErrorCode::Protocol,
        ErrorCode::NotFound,
        ErrorCode::Busy,
        ErrorCode::Unsupported,
        ErrorCode::UnsupportedVersion,
        ErrorCode::BadRequest,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoCard => "no_card",
            ErrorCode::CardRemoved => "card_removed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ReaderGone => "reader_gone",
            ErrorCode::Protocol => "protocol",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Busy => "busy",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code named `text`, if it is one of ours.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// One request line from cardd.
#[derive(Debug, Serialize)]
pub(crate) struct RequestLine<'a> {
    pub id: u64,
    pub method: &'a str,
    pub timeout_ms: u64,
    pub params: &'a Value,
}

/// One line from a plugin, before it is known to be a response or an event. Unknown fields
/// are ignored so that later protocol revisions can add some.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Incoming {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<WireError>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
}

/// An error answer: `{"code": "no_card", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct HelloParams<'a> {
    pub protocols: &'a [&'a str],
    pub host: &'a str,
    pub host_version: &'a str,
    /// What cardd supports ([`HOST_FEATURES`]).
    pub features: &'a [&'a str],
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
pub(crate) struct HelloResult {
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default = "one")]
    pub max_in_flight: usize,
    /// What the plugin supports; absent means none. Anything but an array of strings counts as
    /// none: a feature list is never a reason to refuse a plugin.
    #[serde(default)]
    pub features: Value,
}

impl HelloResult {
    /// The plugin's feature names: strings of 1 to [`FEATURE_CHARS_MAX`] characters, at most
    /// [`FEATURES_MAX`] of them, without repeats.
    pub fn features(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in self.features.as_array().into_iter().flatten() {
            let Some(name) = name.as_str() else { continue };
            if name.is_empty()
                || name.chars().count() > FEATURE_CHARS_MAX
                || name.chars().any(char::is_control)
                || out.iter().any(|f| f == name)
            {
                continue;
            }
            if out.len() == FEATURES_MAX {
                break;
            }
            out.push(name.to_owned());
        }
        out
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListResult {
    pub readers: Vec<Value>,
}

/// A reader as a plugin describes it (in `list` and `reader_added`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct WireReader {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub capabilities: WireCapabilities,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct WireCapabilities {
    #[serde(default)]
    pub contact: bool,
    #[serde(default)]
    pub contactless: bool,
    #[serde(default)]
    pub events: bool,
}

impl WireReader {
    /// Checks the fields a plugin controls; the reason when they are unusable.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > READER_ID_BYTES_MAX {
            return Err(format!(
                "reader id must be 1 to {READER_ID_BYTES_MAX} bytes, got {}",
                self.id.len()
            ));
        }
        if self.id.chars().any(char::is_control) {
            return Err(format!(
                "reader id {:?} contains control characters",
                self.id
            ));
        }
        if self.name.len() > READER_NAME_BYTES_MAX || self.name.chars().any(char::is_control) {
            return Err(format!(
                "reader {:?}: the name must be at most {READER_NAME_BYTES_MAX} bytes without control characters",
                self.id
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct OpenResult {
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TransmitResult {
    pub response: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AtrResult {
    pub atr: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PresenceResult {
    pub state: String,
    #[serde(default)]
    pub atr: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CardEventParams {
    pub reader: String,
    #[serde(default)]
    pub atr: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReaderRemovedParams {
    pub reader: String,
}

/// An empty answer (`{}`); unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Empty {}

/// Cuts `text` to at most `max` characters, marking the cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// What [`read_line_bounded`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// A complete line is in the buffer (without its `\n` or `\r\n`).
    Line,
    /// A line longer than the bound was read and thrown away.
    Oversized { bytes: usize },
    /// End of the stream.
    Eof,
}

/// Reads one `\n`-terminated line of at most `max` bytes into `line`. A longer line is
/// consumed and discarded without being buffered (memory stays bounded by `max` plus the
/// reader's buffer), and reported as [`LineRead::Oversized`].
pub(crate) fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    line.clear();
    let mut discarded: Option<usize> = None;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match discarded {
                Some(bytes) => LineRead::Oversized { bytes },
                None if line.is_empty() => LineRead::Eof,
                None => LineRead::Line,
            });
        }
        let newline = buf.iter().position(|b| *b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        match discarded.as_mut() {
            Some(bytes) => *bytes = bytes.saturating_add(chunk.len()),
            None if line.len() + chunk.len() > max => {
                discarded = Some(line.len() + chunk.len());
                line.clear();
            }
            None => line.extend_from_slice(chunk),
        }
        let used = chunk.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            if let Some(bytes) = discarded {
                return Ok(LineRead::Oversized { bytes });
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(LineRead::Line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn lines(input: &[u8], max: usize, cap: usize) -> Vec<Result<String, usize>> {
        let mut reader = BufReader::with_capacity(cap, Cursor::new(input.to_vec()));
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line_bounded(&mut reader, &mut line, max).unwrap() {
                LineRead::Line => out.push(Ok(String::from_utf8_lossy(&line).into_owned())),
                LineRead::Oversized { bytes } => out.push(Err(bytes)),
                LineRead::Eof => return out,
            }
        }
    }

    #[test]
    fn bounded_lines_are_split_and_oversized_ones_skipped_whatever_the_buffer_size() {
        let input = b"short\r\n0123456789abcdef\nok\n\nlast";
        for cap in [1, 3, 7, 64] {
            assert_eq!(
                lines(input, 10, cap),
                [
                    Ok("short".into()),
                    Err(16),
                    Ok("ok".into()),
                    Ok(String::new()),
                    Ok("last".into())
                ],
                "buffer of {cap} bytes"
            );
        }
        assert_eq!(lines(b"0123456789abc", 10, 4), [Err(13)]);
        assert!(lines(b"", 10, 4).is_empty());
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NO_CARD"), None);
    }

    #[test]
    fn features_are_optional_and_unknown_shapes_are_ignored() {
        let hello = |text: &str| -> Vec<String> {
            serde_json::from_str::<HelloResult>(text)
                .unwrap()
                .features()
        };
        assert!(hello(r#"{"protocol":"cardd-plugin/1"}"#).is_empty());
        assert!(hello(r#"{"protocol":"cardd-plugin/1","features":"test_hooks"}"#).is_empty());
        assert_eq!(
            hello(
                r#"{"protocol":"cardd-plugin/1","features":["test_hooks",7,"","test_hooks","later"]}"#
            ),
            ["test_hooks", "later"]
        );
        let many: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let text = serde_json::json!({"protocol": "cardd-plugin/1", "features": many}).to_string();
        assert_eq!(hello(&text).len(), FEATURES_MAX);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("卡卡卡", 2), "卡卡…");
        assert_eq!(truncate_chars("ab", 2), "ab");
    }
}
