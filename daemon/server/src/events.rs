//! The event bus: reader and card events to WebSocket subscribers and to polling clients.
//!
//! Every event gets a sequence number. WebSocket subscribers receive events as they happen
//! (a bounded broadcast channel; a subscriber too slow to keep up is told how many it missed).
//! HTTP-only clients poll with the last sequence number they saw and may wait a bounded time for
//! the next event (long polling: no busy loop on either side). The last `events_buffered_max`
//! events are kept for polling; a poller that falls further behind is told there is a gap.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

/// Longest a poll may wait for a new event, in milliseconds.
pub const POLL_WAIT_MS_MAX: u64 = 25_000;
/// Most events one poll returns.
pub const POLL_EVENTS_MAX: usize = 256;
/// Capacity of the live broadcast channel per subscriber.
pub const SUBSCRIBER_QUEUE_MAX: usize = 256;

pub use cardd_api::events::{Event, EventKind, LeaseEnd, PollResult};

/// The bus.
#[derive(Debug)]
pub struct EventBus {
    live: broadcast::Sender<Event>,
    state: Mutex<Buffer>,
    changed: Notify,
    buffered_max: usize,
}

#[derive(Debug, Default)]
struct Buffer {
    events: VecDeque<Event>,
    last_seq: u64,
}

impl EventBus {
    pub fn new(buffered_max: usize) -> Self {
        let (live, _) = broadcast::channel(SUBSCRIBER_QUEUE_MAX);
        EventBus {
            live,
            state: Mutex::new(Buffer::default()),
            changed: Notify::new(),
            buffered_max: buffered_max.max(1),
        }
    }

    /// Records and broadcasts an event; returns its sequence number.
    pub fn publish(&self, kind: EventKind) -> u64 {
        let event = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.last_seq += 1;
            let event = Event {
                seq: state.last_seq,
                at: crate::audit::utc_now_rfc3339(),
                kind,
            };
            if state.events.len() >= self.buffered_max {
                state.events.pop_front();
            }
            state.events.push_back(event.clone());
            event
        };
        tracing::debug!(seq = event.seq, kind = ?event.kind, "event");
        let seq = event.seq;
        // No subscriber is not an error.
        let _ = self.live.send(event);
        self.changed.notify_waiters();
        seq
    }

    /// A live subscription (WebSocket).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Events after `since`, at most `limit`, without waiting.
    pub fn poll_now(&self, since: u64, limit: usize) -> PollResult {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let limit = limit.clamp(1, POLL_EVENTS_MAX);
        // A `since` from the future means the daemon restarted (sequence numbers start again):
        // start over and say there is a gap.
        let restarted = since > state.last_seq;
        let since = if restarted { 0 } else { since };
        let events: Vec<Event> = state
            .events
            .iter()
            .filter(|e| e.seq > since)
            .take(limit)
            .cloned()
            .collect();
        let first_kept = state
            .events
            .front()
            .map(|e| e.seq)
            .unwrap_or(state.last_seq + 1);
        let gap = restarted || (since + 1 < first_kept && since < state.last_seq);
        let next_since = events.last().map(|e| e.seq).unwrap_or(since);
        PollResult {
            events,
            next_since,
            gap,
        }
    }

    /// Like [`EventBus::poll_now`], but waits up to `wait` (capped at [`POLL_WAIT_MS_MAX`]) for
    /// the first event when there is none yet.
    pub async fn poll(&self, since: u64, limit: usize, wait: Duration) -> PollResult {
        let wait = wait.min(Duration::from_millis(POLL_WAIT_MS_MAX));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let result = self.poll_now(since, limit);
            if !result.events.is_empty() || tokio::time::Instant::now() >= deadline {
                return result;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.poll_now(since, limit);
            }
        }
    }

    /// The sequence number of the newest event.
    pub fn last_seq(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(id: &str) -> EventKind {
        EventKind::CardRemoved {
            reader_id: id.into(),
        }
    }

    #[test]
    fn poll_returns_events_after_since_and_reports_gaps() {
        let bus = EventBus::new(3);
        for i in 0..5 {
            bus.publish(removed(&format!("r{i}")));
        }
        let all = bus.poll_now(0, 10);
        assert_eq!(
            all.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(all.gap, "events 1 and 2 were dropped");
        let tail = bus.poll_now(4, 10);
        assert_eq!(tail.events.len(), 1);
        assert!(!tail.gap);
        assert_eq!(tail.next_since, 5);
        let none = bus.poll_now(5, 10);
        assert!(none.events.is_empty() && !none.gap);
        assert_eq!(none.next_since, 5);
        let after_restart = bus.poll_now(99, 10);
        assert!(after_restart.gap);
        assert_eq!(after_restart.events.len(), 3);
    }

    #[tokio::test]
    async fn long_poll_wakes_on_publish_and_times_out_otherwise() {
        let bus = std::sync::Arc::new(EventBus::new(16));
        let waiter = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.poll(0, 10, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        bus.publish(removed("r"));
        let got = waiter.await.unwrap();
        assert_eq!(got.events.len(), 1);

        let started = std::time::Instant::now();
        let empty = bus.poll(1, 10, Duration::from_millis(50)).await;
        assert!(empty.events.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn subscribers_receive_live_events() {
        let bus = EventBus::new(16);
        let mut rx = bus.subscribe();
        bus.publish(removed("x"));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.seq, 1);
        assert_eq!(serde_json::to_value(&e).unwrap()["type"], "card_removed");
    }
}
