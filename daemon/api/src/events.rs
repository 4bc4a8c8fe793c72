//! `events.*`: reader, card and lease events, polled or subscribed to.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::NoParams;

/// Something that happened to a reader, a card or a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    ReaderAdded {
        reader_id: String,
        name: String,
        driver: String,
    },
    ReaderRemoved {
        reader_id: String,
    },
    CardInserted {
        reader_id: String,
        atr: String,
    },
    CardRemoved {
        reader_id: String,
    },
    LeaseTaken {
        reader_id: String,
        lease_id: String,
        holder: String,
        expires_in_ms: u64,
    },
    LeaseReleased {
        reader_id: String,
        lease_id: String,
        reason: LeaseEnd,
    },
    /// An interrupted load was decided from its card: `landed`, `not_landed` or
    /// `needs_reconciliation`.
    LoadResolved {
        reader_id: String,
        txn_id: String,
        card_number: String,
        outcome: String,
    },
    /// The subscription's session ended (`reason` says why): the last notification of an
    /// `events.subscribe` or `flows.subscribe` subscription, sent to it alone, with `seq` 0.
    SessionEnded {
        reason: crate::auth::SessionEnd,
    },
}

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEnd {
    Released,
    Expired,
    ReaderGone,
}

/// An event with its sequence number and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339 UTC.
    pub at: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a poll returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PollResult {
    pub events: Vec<Event>,
    /// Pass this as `since` in the next poll.
    pub next_since: u64,
    /// True when events between `since` and the first returned one were dropped from the buffer.
    pub gap: bool,
}

/// `events.poll`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    /// The `next_since` of the previous poll (0 for the start).
    #[serde(default)]
    pub since: u64,
    /// At most this many events (default 100, at most 256).
    pub limit: Option<usize>,
    /// Wait up to this long for the first event (default 0, at most 25000).
    pub wait_ms: Option<u64>,
}
crate::method!(
    /// Reader, card and lease events after `since`, waiting up to `wait_ms` for the first one.
    Poll, "events.poll", PollParams => PollResult
);
crate::subscription!(
    /// Reader, card and lease events as they happen (WebSocket only).
    Subscribe, "events.subscribe", "events.event", "events.unsubscribe", NoParams => Event
);
