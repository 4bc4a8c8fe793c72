//! The table of JSON-RPC error codes, defined once.
//!
//! Every error a client can see has a code here with a meaning and what to do about it; the
//! daemon maps its errors onto these in one place, and `docs/errors.md` is generated from this
//! table (a test fails when the committed copy is stale).
//!
//! The codes -32005 to -32009 are the JSON-RPC server's own (batches, subscriptions, sizes,
//! connections) and keep jsonrpsee's numbers; cardd's own codes start at -32040, clear of them.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal, $http:literal, $action:literal;)*) => {
        /// A JSON-RPC error code of cardd's API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum ErrorCode { $($(#[doc = $doc])* $name,)* }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The numeric JSON-RPC code.
            pub const fn code(self) -> i32 {
                match self { $(ErrorCode::$name => $code,)* }
            }

            /// The HTTP status used when the error is answered before JSON-RPC dispatch.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$name => $http,)* }
            }

            /// What the client should do next.
            pub fn action(self) -> &'static str {
                match self { $(ErrorCode::$name => $action,)* }
            }

            /// The meaning of the code (its doc comment).
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$name => concat!($($doc),*).trim_ascii(),)* }
            }

            /// The code's symbolic name.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$name => stringify!($name),)* }
            }

            /// Looks a numeric code up.
            pub fn from_code(code: i32) -> Option<ErrorCode> {
                ErrorCode::ALL.iter().copied().find(|c| c.code() == code)
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON.
    ParseError = -32700, 400, "Send a well-formed JSON-RPC 2.0 request.";
    /// The JSON is not a valid JSON-RPC 2.0 request.
    InvalidRequest = -32600, 400, "Send one JSON-RPC 2.0 request object per call.";
    /// No such method.
    MethodNotFound = -32601, 404, "Call rpc.discover for the list of methods.";
    /// The parameters are missing, of the wrong type, or out of range.
    InvalidParams = -32602, 400, "Correct the parameters named in the message and retry.";
    /// A bug or an unexpected failure inside cardd.
    Internal = -32603, 500, "Retry once; if it persists, send the daemon log to support.";
    /// A batch (a JSON array of requests) was sent; cardd accepts one request per call.
    BatchesNotSupported = -32005, 400, "Send the requests one at a time.";
    /// The WebSocket connection already holds the most subscriptions allowed.
    TooManySubscriptions = -32006, 429, "Unsubscribe from something first (limits.subscriptions_per_connection_max).";
    /// The request is larger than the configured limit (on HTTP the answer is status 413).
    RequestTooLarge = -32007, 413, "Send a smaller request (limits.request_body_bytes_max).";
    /// The response would be larger than the configured limit.
    ResponseTooLarge = -32008, 500, "Ask for less (a smaller page or limit).";
    /// The daemon has as many connections as it allows (in all, or unauthenticated ones from this client process).
    ServerBusy = -32009, 503, "Close idle connections, log in, or retry shortly (limits.connections_max, limits.unauthenticated_connections_max, limits.unauthenticated_connections_per_process_max).";
    /// A subscription method (`*.subscribe`, `*.unsubscribe`) was called over HTTP, which cannot carry notifications.
    WebSocketRequired = -32010, 400, "Subscribe over a WebSocket at / with ?token=<token>; over HTTP poll instead (events.poll, flows.events).";
    /// No valid session token was presented, or the session expired after inactivity.
    Unauthenticated = -32040, 401, "Log in again (auth.login) and send the new token.";
    /// The operator's role does not allow this method.
    Forbidden = -32041, 403, "Ask an operator with the required role to do it.";
    /// Login failed: the user name or the password is wrong (cardd does not say which).
    InvalidCredentials = -32042, 401, "Check the user name and password and try again.";
    /// Too many failed logins for this user name or login source: the next attempt must wait a
    /// short, capped delay (never a lock-out).
    TooManyAttempts = -32043, 429, "Wait the seconds the message names, then log in again.";
    /// The request's Host or Origin is not on the allow-list.
    OriginNotAllowed = -32044, 403, "Open the page from an allowed origin, or add the origin to server.allowed_origins.";
    /// The client sends requests faster than its connection's limit.
    RateLimited = -32045, 429, "Slow down and retry after a second.";
    /// The password change was refused (wrong old password, confirmation mismatch, or too short).
    PasswordRejected = -32046, 400, "Follow the message: re-type the confirmation or choose another password.";
    /// No reader with that id.
    ReaderNotFound = -32050, 404, "Call readers.list for the attached readers.";
    /// The reader is leased by another client, or its queue is full.
    ReaderBusy = -32051, 409, "Wait for the holder shown in the message to finish, or until its lease expires.";
    /// The reader has no card.
    NoCard = -32052, 409, "Insert the card and retry.";
    /// The card was removed during a command; its outcome is unknown.
    CardRemoved = -32053, 409, "Put the card back; cardd checks its state before anything else happens.";
    /// The card or reader did not answer in time.
    ReaderTimeout = -32054, 504, "Check the card is seated and retry.";
    /// The reader is gone (unplugged or its driver stopped).
    ReaderGone = -32055, 503, "Reconnect the reader; it is picked up again automatically.";
    /// The card answered with an error status word.
    CardError = -32056, 422, "Read the message: it says what the card refused and why.";
    /// The card is of a kind this method does not handle.
    UnsupportedCard = -32057, 422, "Use a card of the kind the method names.";
    /// No such lease, or it expired.
    LeaseNotFound = -32058, 404, "Take a new lease with readers.lease.";
    /// The reader lacks a capability the method needs.
    Unsupported = -32059, 422, "Use a reader with the capability named in the message.";
    /// The reader's driver program (a vendor plugin) ended unexpectedly or stopped answering; cardd is restarting it. A command in flight may or may not have reached the card.
    ReaderDriverCrashed = -32064, 503, "Wait a few seconds for the reader to come back, then retry (a load re-reads the card first); if it repeats, send the daemon log to the plugin's vendor.";
    /// The reader's driver program (a vendor plugin) sent a reply that is not a valid message. A command in flight may or may not have reached the card.
    ReaderDriverMalformed = -32065, 502, "Retry (a load re-reads the card first); if it repeats, send the daemon log to the plugin's vendor.";
    /// No such operator.
    OperatorNotFound = -32060, 404, "Check the user name.";
    /// The operator already exists.
    OperatorExists = -32061, 409, "Choose another user name.";
    /// No flow with that name (or no flows are configured).
    FlowNotFound = -32070, 404, "Call flows.list for the flows you may start.";
    /// No run with that id.
    RunNotFound = -32071, 404, "Check the run id returned by flows.start.";
    /// The idempotency key was already used for a run with other parameters.
    IdempotencyConflict = -32072, 409, "Use a new idempotency key for a new operation; reuse a key only to retry the same start.";
    /// The run is not waiting for that answer.
    NoPendingPrompt = -32073, 409, "Fetch the run (flows.get) and answer its current prompt, if any.";
    /// The issuer host has no such vehicle or recharge record.
    HostNotFound = -32100, 404, "Check the plate number, the plate colour or the record id.";
    /// The recharge record's 圈存 status does not allow this change.
    RecordStateConflict = -32101, 409, "Read the message: it names the record's status and what to do next.";
    /// The card (or the journal's verified TAC) proves the load landed: the record is not set back to 未圈存.
    LoadLanded = -32102, 409, "Do not load again: the money is on the card and the record now says 已圈存.";
    /// Nothing proves whether the load landed and the caller may not decide without proof.
    CardEvidenceRequired = -32103, 409, "Put the record's card on a reader and retry, or ask a supervisor to decide with a reason.";
    /// The card cannot take this load: another vehicle's card, expired or not yet valid, or over its maximum balance.
    CardNotEligible = -32104, 422, "Use the vehicle's own valid card; for the maximum balance, load a smaller amount or spend first.";
    /// The card did not answer the credit: whether the money landed is unknown until the card is read again.
    LoadOutcomeUnknown = -32105, 409, "Put the same card back on the reader: cardd reads it and settles the load; do not load it again.";
    /// The card has a load whose outcome is not settled yet (结果待确认 / 圈存中 / 待核对): no new credit to that card, for any record or group, until it is settled.
    CardIntentPending = -32106, 409, "Put the card back on a reader: cardd settles the pending load named in the message from the card first; do not recharge it again.";
    /// The daemon refuses state-changing methods because an integrity check failed.
    FailedClosed = -32090, 503, "Do not retry; an administrator must inspect the data directory (see the log).";
    /// 用户和密码错误: the operator does not belong to that group (a group operator sees and acts on their own group only), or the record is not theirs.
    GroupAccessDenied = -32110, 403, "Log in as an operator of that group (group.login); a group operator sees only their own group's data.";
    /// The recharge breaks the group recharge rules: a multiple of 10 yuan, at least 10 yuan, at most 1000 yuan on the card afterwards.
    RechargeRefused = -32111, 422, "Choose another amount as the message says.";
    /// The group's available quota does not cover the recharge.
    QuotaInsufficient = -32112, 409, "Recharge less, or top up the quota (group.topup) and wait for the audit.";
    /// No such group, order, top-up or batch.
    GroupRecordNotFound = -32113, 404, "Check the id; the group queries list the records.";
    /// The order, top-up or card is not in a state that allows this (already refunded, not paid yet, a recharge still in progress).
    GroupStateConflict = -32114, 409, "Fetch the record again and act on its current status.";
    /// The bank declined the transfer; no money moved.
    PaymentDeclined = -32115, 402, "Check the account and send the transfer again.";
    /// The bank did not answer in time: whether the transfer was paid is unknown.
    PaymentUnknown = -32116, 504, "Do not pay again: ask again with group.topup_status until the bank's answer is known.";
    /// What the card and the journal show does not allow this audit decision (the load landed, or is not settled yet).
    EvidenceConflict = -32117, 409, "Read the evidence (group.audit.evidence); present the card if the load is unsettled, then decide by what it shows.";
    /// A query or export covers too long a period or too many rows.
    QueryTooLarge = -32118, 413, "Choose a shorter period.";
    /// The site could not reach the central issuer host (fleet mode): nothing was changed there
    /// by this call, or its answer was lost.
    IssuerHostUnreachable = -32119, 503, "Retry shortly; reads the site can answer still work. If it persists, check the site's link to the host (fleet.host_addr) and the host itself.";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_documented() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert!(
                !code.meaning().is_empty() && !code.action().is_empty(),
                "{code:?}"
            );
            assert_eq!(ErrorCode::from_code(code.code()), Some(*code));
        }
    }
}
