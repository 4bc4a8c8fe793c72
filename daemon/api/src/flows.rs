//! `flows.*`: runs of the configured Lua flows: starting, following, answering, cancelling.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::NoParams;
use crate::Role;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Waiting for the client to answer `prompt`.
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
    /// The daemon stopped while the run was in progress.
    Interrupted,
}

impl RunState {
    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Running | RunState::Waiting)
    }
}

/// A question the flow asks the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Prompt {
    pub prompt_id: u32,
    /// `confirm` (answer true/false) or `choose` (answer one of `choices`).
    pub kind: String,
    /// The text to show (zh-CN, as the flow wrote it).
    pub message: String,
    pub choices: Vec<String>,
}

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunEvent {
    pub seq: u64,
    pub at: String,
    /// `state`, `progress` (data `{done, total}` when the flow counts its work, e.g. a batch),
    /// `prompt`, `answer` (data `{answer, operator}`: what was answered and by whom), `log`,
    /// `load`.
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
}

impl RunEvent {
    /// The counted progress of a `progress` event whose flow counts its work (a batch):
    /// `{done, total}`; `None` for any other event, whatever its message says.
    pub fn progress(&self) -> Option<Progress> {
        if self.kind != "progress" {
            return None;
        }
        Progress::deserialize(&self.data).ok()
    }
}

/// The `data` of a `progress` event when the flow counts its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// Items done so far.
    pub done: u64,
    /// Items in all.
    pub total: u64,
}

/// Why a run failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunFailure {
    /// `flow_error`, `limit`, `cancelled`, `prompt_timeout`, `interrupted`, `engine`.
    pub kind: String,
    pub message: String,
}

/// What is known about one load of a run whose answer was lost, read from the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunLoad {
    pub txn_id: String,
    pub card_number: String,
    /// The load's amount, yuan.
    pub amount: String,
    /// `credited` (the money is on the card), `not_credited` (it is not), or `unknown` (the
    /// card must be presented again; never to be read as failed).
    pub outcome: String,
    /// The journal state: `intent`, `committed`, `not_applied` or `needs_reconciliation`.
    pub state: String,
    /// The card's balance after the load, yuan, for a credited load.
    pub balance_after: Option<String>,
    /// The card's verified TAC, for a credited load.
    pub tac: Option<String>,
    /// What it means and what to do next (zh-CN).
    pub message: String,
}

/// A run, as stored and as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunRecord {
    pub run_id: String,
    pub idempotency_key: String,
    pub operator: String,
    pub flow: String,
    pub version: String,
    pub params: serde_json::Value,
    pub reader_id: Option<String>,
    pub state: RunState,
    pub prompt: Option<Prompt>,
    pub result: Option<serde_json::Value>,
    pub failure: Option<RunFailure>,
    /// For a run interrupted by a restart: each load it started, with its outcome as the
    /// journal knows it when the run is read (a later settlement from the card shows here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loads: Vec<RunLoad>,
    pub events: Vec<RunEvent>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a flow definition looks like to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowInfo {
    pub name: String,
    pub version: String,
    pub title: String,
    pub description: Option<String>,
    pub roles: Vec<Role>,
    /// JSON Schema of the parameters.
    pub params: serde_json::Value,
}
/// An answer to a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Answer {
    Confirm(bool),
    Choice(String),
}

/// What `flows.start` asks for.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    pub flow: String,
    #[serde(default)]
    pub params: serde_json::Value,
    /// Chosen by the client, saved before sending, reused on every retry of this start.
    pub idempotency_key: String,
    /// The reader the flow works on, for flows that use a card.
    pub reader_id: Option<String>,
}

/// `flows.*` parameters naming a run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    pub run_id: String,
}
/// `flows.events`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunEventsParams {
    pub run_id: String,
    /// Return events with a larger sequence number (0 for all).
    #[serde(default)]
    pub since: u64,
    /// Wait up to this long for something new when there is nothing yet (at most 25000).
    pub wait_ms: Option<u64>,
}
/// `flows.answer`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerParams {
    pub run_id: String,
    pub prompt_id: u32,
    /// `true`/`false` for a confirmation, one of the choices for a choice.
    pub answer: Answer,
}
/// What `flows.events` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunEvents {
    pub state: RunState,
    pub prompt: Option<Prompt>,
    pub events: Vec<RunEvent>,
    pub next_since: u64,
}

crate::method!(
    /// The flows you may start, with their parameter schemas.
    List, "flows.list", NoParams => Vec<FlowInfo>
);
crate::method!(
    /// Start a run (or get the run an earlier start with the same idempotency key created).
    Start, "flows.start", StartParams => RunRecord
);
crate::method!(
    /// A run you may see.
    Get, "flows.get", RunParams => RunRecord
);
crate::method!(
    /// A run's events after `since`, waiting up to `wait_ms` when there is nothing new.
    Events, "flows.events", RunEventsParams => RunEvents
);
crate::method!(
    /// Answer the run's pending prompt.
    AnswerPrompt, "flows.answer", AnswerParams => RunRecord
);
crate::method!(
    /// Cancel a run.
    Cancel, "flows.cancel", RunParams => RunRecord
);
crate::subscription!(
    /// A run's events as they happen, until it finishes (WebSocket only).
    Subscribe, "flows.subscribe", "flows.event", "flows.unsubscribe", RunParams => RunEvent
);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: serde_json::Value) -> RunEvent {
        RunEvent {
            seq: 1,
            at: String::new(),
            kind: kind.into(),
            message: "3/10".into(),
            data,
        }
    }

    #[test]
    fn progress_is_read_from_the_structured_data_only() {
        let counted = event("progress", serde_json::json!({ "done": 1, "total": 3 }));
        assert_eq!(counted.progress(), Some(Progress { done: 1, total: 3 }));
        // A message alone, whatever its words, is no count.
        assert_eq!(event("progress", serde_json::json!({})).progress(), None);
        let text = event("progress", serde_json::json!({ "done": "1", "total": 3 }));
        assert_eq!(text.progress(), None);
        let log = event("log", serde_json::json!({ "done": 1, "total": 3 }));
        assert_eq!(log.progress(), None);
    }
}
