//! The recent log lines, in memory: a bounded ring that a `tracing_subscriber` layer fills
//! beside the usual output, so the control socket's `logs` request (and through it
//! `cardd support-bundle`) can show what the daemon said lately without reading journald.
//!
//! Bounded by lines ([`LOG_RING_LINES_MAX`]) and bytes ([`LOG_RING_BYTES_MAX`]); the oldest
//! lines leave first and one line never exceeds [`LOG_LINE_BYTES_MAX`]. Each line is formatted
//! like the human format: time, level, span names, target, message and fields. The ring holds
//! what the log holds (the daemon never logs keys, passwords or tokens); card numbers are
//! masked when the lines leave in a support bundle.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Most lines the ring keeps.
pub const LOG_RING_LINES_MAX: usize = 2000;
/// Most bytes (of line text) the ring keeps.
pub const LOG_RING_BYTES_MAX: usize = 1024 * 1024;
/// Longest line kept, in bytes; a longer one is cut and marked `…`.
pub const LOG_LINE_BYTES_MAX: usize = 8 * 1024;

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
}

/// The ring of recent log lines. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct LogRing {
    ring: Arc<Mutex<Ring>>,
}

impl LogRing {
    /// An empty ring.
    pub fn new() -> LogRing {
        LogRing::default()
    }

    /// The layer that copies every event (that the subscriber's filter lets through) here.
    pub fn layer(&self) -> LogRingLayer {
        LogRingLayer { ring: self.clone() }
    }

    /// Adds a line, cut to [`LOG_LINE_BYTES_MAX`], dropping the oldest lines beyond the bounds.
    pub fn push(&self, mut line: String) {
        if line.len() > LOG_LINE_BYTES_MAX {
            let mut end = LOG_LINE_BYTES_MAX - '…'.len_utf8();
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push('…');
        }
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.bytes += line.len();
        ring.lines.push_back(line);
        while ring.lines.len() > LOG_RING_LINES_MAX || ring.bytes > LOG_RING_BYTES_MAX {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.len(),
                None => break,
            }
        }
        assert!(ring.lines.len() <= LOG_RING_LINES_MAX && ring.bytes <= LOG_RING_BYTES_MAX);
    }

    /// The lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.lines.iter().cloned().collect()
    }
}

/// See [`LogRing::layer`].
#[derive(Debug, Clone)]
pub struct LogRingLayer {
    ring: LogRing,
}

impl<S> Layer<S> for LogRingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = String::with_capacity(160);
        // Writing into a String cannot fail.
        let _ = write!(line, "{} {:>5} ", now_rfc3339(), meta.level());
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                line.push_str(span.name());
                line.push(':');
            }
            line.push(' ');
        }
        let _ = write!(line, "{}: ", meta.target());
        let mut fields = LineFields::default();
        event.record(&mut fields);
        line.push_str(&fields.message);
        line.push_str(&fields.rest);
        self.ring.push(line);
    }
}

/// The message and the other fields of an event, as the human format writes them.
#[derive(Debug, Default)]
struct LineFields {
    message: String,
    rest: String,
}

impl Visit for LineFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// The current UTC time as RFC 3339 with microseconds.
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    now.format(&format)
        .unwrap_or_else(|_| "0000-00-00T00:00:00.000000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_look_like_the_human_format_and_the_ring_is_bounded() {
        let ring = LogRing::new();
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("load");
            let _entered = span.enter();
            tracing::warn!(reader = "sim:etc", count = 3, "card \"pulled\"");
        });
        let lines = ring.lines();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(
            line.ends_with(
                " WARN load: cardd::log_ring::tests: card \"pulled\" reader=\"sim:etc\" count=3"
            ),
            "{line}"
        );
        assert!(
            line.starts_with("20") && line.as_bytes()[10] == b'T',
            "{line}"
        );

        for i in 0..LOG_RING_LINES_MAX + 10 {
            ring.push(format!("line {i}"));
        }
        let lines = ring.lines();
        assert_eq!(lines.len(), LOG_RING_LINES_MAX);
        assert_eq!(lines[0], "line 10", "the oldest leave first");

        let long = "长".repeat(LOG_LINE_BYTES_MAX);
        for _ in 0..LOG_RING_BYTES_MAX / LOG_LINE_BYTES_MAX + 5 {
            ring.push(long.clone());
        }
        let lines = ring.lines();
        assert!(lines
            .iter()
            .all(|l| l.len() <= LOG_LINE_BYTES_MAX && l.ends_with('…')));
        assert!(lines.iter().map(String::len).sum::<usize>() <= LOG_RING_BYTES_MAX);
    }
}
