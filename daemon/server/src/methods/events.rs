//! `events.*`: reader and card events, by long poll or WebSocket subscription; a
//! subscription ends with `session_ended` when its session does.

use std::time::Duration;

use jsonrpsee::{PendingSubscriptionSink, SubscriptionMessage};

use crate::errors::ApiError;
use crate::events::{Event, PollResult};
use crate::rpc::{
    audit_as_json, caller_of, schema_of, session_end, session_ended_message, Access, AuditDetail,
    MethodSpec, Methods, NoParams, ALL_OPERATORS,
};
use crate::transport::guard::BearerToken;
use cardd_api::events::PollParams;
use cardd_api::method::Subscription;
use jsonrpsee::types::ErrorObjectOwned;

audit_as_json!(PollParams);

/// Adds `events.subscribe`.
pub fn add_subscription(m: &mut Methods) {
    m.specs.push(MethodSpec {
        name: <cardd_api::events::Subscribe as Subscription>::NAME,
        summary: "WebSocket only: receive reader, card and lease events as `events.event` notifications; end with `events.unsubscribe`.",
        access: Access::Operator,
        mutates: false,
        params: schema_of::<NoParams>(),
        result: schema_of::<Event>(),
        subscription: Some((
            <cardd_api::events::Subscribe as Subscription>::NOTIFICATION,
            <cardd_api::events::Subscribe as Subscription>::UNSUBSCRIBE,
        )),
    });
    let registered = m.module.register_subscription(
        <cardd_api::events::Subscribe as Subscription>::NAME,
        <cardd_api::events::Subscribe as Subscription>::NOTIFICATION,
        <cardd_api::events::Subscribe as Subscription>::UNSUBSCRIBE,
        |_params, pending: PendingSubscriptionSink, daemon, ext| async move {
            if let Err(e) = caller_of(
                &daemon,
                &ext,
                Access::Operator,
                <cardd_api::events::Subscribe as Subscription>::NAME,
            ) {
                pending.reject(ErrorObjectOwned::from(e)).await;
                return Ok(());
            }
            let token = ext.get::<BearerToken>().map(|t| t.0.clone()).unwrap_or_default();
            let session_over = session_end(&daemon, &token);
            tokio::pin!(session_over);
            let mut rx = daemon.events.subscribe();
            let sink = pending.accept().await?;
            loop {
                tokio::select! {
                    _ = sink.closed() => return Ok(()),
                    why = &mut session_over => {
                        let _ = sink.send(session_ended_message(why)?).await;
                        return Ok(());
                    }
                    received = rx.recv() => match received {
                        Ok(event) => {
                            let message = SubscriptionMessage::from(serde_json::value::to_raw_value(&event)?);
                            if sink.send(message).await.is_err() {
                                return Ok(());
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "a subscriber fell behind; it should re-sync with events.poll");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
        },
    );
    if let Err(e) = registered {
        panic!("events.subscribe registered twice: {e}");
    }
}

/// Adds these methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::events::Poll, _, _>(
        "Reader, card and lease events after `since`, waiting up to `wait_ms` for the first one (for HTTP-only clients).",
        ALL_OPERATORS,
        false,
        |d, _, p: PollParams| async move {
            Ok::<PollResult, ApiError>(
                d.events.poll(p.since, p.limit.unwrap_or(100), Duration::from_millis(p.wait_ms.unwrap_or(0))).await,
            )
        },
    );
}
