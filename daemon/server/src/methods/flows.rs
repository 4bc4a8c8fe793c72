//! `flows.*`: starting, following, answering and cancelling Lua business flows (the engine is
//! [`crate::flows`]).

use std::time::Duration;

use cardd_api::{ErrorCode, Role};
use jsonrpsee::{PendingSubscriptionSink, SubscriptionMessage};
use serde_json::Value;

use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::rpc::{
    audit_as_json, caller_of, parse_params, schema_of, session_end, session_ended_message, Access,
    AuditDetail, Caller, MethodSpec, Methods, NoParams, ALL_OPERATORS,
};
use crate::transport::guard::BearerToken;
use cardd_api::flows::{AnswerParams, RunEvents, RunEventsParams, RunParams};
use cardd_api::method::Subscription;
use jsonrpsee::types::ErrorObjectOwned;

audit_as_json!(RunParams, run_id);

audit_as_json!(RunEventsParams, run_id);

audit_as_json!(AnswerParams, run_id);

impl AuditDetail for crate::flows::StartParams {
    fn audit_detail(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.flow.clone())
    }
}

/// The run, if the caller may see it (its operator, a supervisor or an administrator).
fn visible_run(d: &Daemon, c: &Caller, run_id: &str) -> Result<crate::flows::RunRecord, ApiError> {
    let engine = d
        .flows
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::FlowNotFound, "no flows are configured"))?;
    let mut run = engine.get(run_id)?;
    crate::flows::attach_load_outcomes(&mut run, d.journal.as_deref());
    let s = c.session()?;
    if run.operator != s.username && !matches!(s.role, Role::Admin | Role::Supervisor) {
        return Err(ApiError::new(
            ErrorCode::RunNotFound,
            format!("no run {run_id:?} of yours"),
        ));
    }
    Ok(run)
}

/// Picks up edited flow files before the flows are listed or one is started
/// ([`crate::flows_reload`]).
fn reload_flows_if_due(d: &Daemon) {
    if let Some(flows) = d.flows.as_ref() {
        d.flows_checked.reload_if_due(flows);
    }
}

fn add_flow_methods(m: &mut Methods) {
    m.method::<cardd_api::flows::List, _, _>(
        "The flows you may start, with their parameter schemas.",
        ALL_OPERATORS,
        false,
        |d, c, _: NoParams| async move {
            let role = c.session()?.role;
            reload_flows_if_due(&d);
            let flows = d.flows.as_ref().map(|f| f.list()).unwrap_or_default();
            Ok::<Vec<crate::flows::FlowInfo>, ApiError>(
                flows
                    .into_iter()
                    .filter(|f| f.roles.contains(&role))
                    .collect(),
            )
        },
    );
    m.method::<cardd_api::flows::Start, _, _>(
        "Start a flow with a client-chosen idempotency key; re-sending the same start returns the same run.",
        ALL_OPERATORS,
        true,
        |d, c, p: crate::flows::StartParams| async move {
            let session = c.session()?.clone();
            reload_flows_if_due(&d);
            let engine = d.flows.as_ref().ok_or_else(|| {
                ApiError::new(ErrorCode::FlowNotFound, "no flows are configured")
            })?;
            crate::flows::start(engine, &session, p, d.journal.as_deref()).await
        },
    );
    m.method::<cardd_api::flows::Get, _, _>(
        "A run: state, pending question, result or failure, events.",
        ALL_OPERATORS,
        false,
        |d, c, p: RunParams| async move { visible_run(&d, &c, &p.run_id) },
    );
    m.method::<cardd_api::flows::Events, _, _>(
        "A run's events after `since`, waiting up to `wait_ms` for news (HTTP-only clients follow runs with it).",
        ALL_OPERATORS,
        false,
        |d, c, p: RunEventsParams| async move {
            let mut run = visible_run(&d, &c, &p.run_id)?;
            let fresh = |r: &crate::flows::RunRecord| r.events.iter().any(|e| e.seq > p.since) || r.state.is_finished();
            if !fresh(&run) {
                if let Some(engine) = d.flows.as_ref() {
                    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0).min(crate::events::POLL_WAIT_MS_MAX));
                    engine.wait_change(&p.run_id, wait).await;
                    run = engine.get(&p.run_id)?;
                }
            }
            let events: Vec<_> = run.events.into_iter().filter(|e| e.seq > p.since).collect();
            let next_since = events.last().map_or(p.since, |e| e.seq);
            Ok(RunEvents { state: run.state, prompt: run.prompt, events, next_since })
        },
    );
    m.method::<cardd_api::flows::AnswerPrompt, _, _>(
        "Answer the run's pending question (confirm or choose).",
        ALL_OPERATORS,
        true,
        |d, c, p: AnswerParams| async move {
            visible_run(&d, &c, &p.run_id)?;
            let engine = d
                .flows
                .as_ref()
                .ok_or_else(|| ApiError::new(ErrorCode::FlowNotFound, "no flows"))?;
            engine.answer(c.session()?, &p.run_id, p.prompt_id, p.answer)
        },
    );
    m.method::<cardd_api::flows::Cancel, _, _>(
        "Cancel a run in progress (a load already sent to the card is settled by the journal).",
        ALL_OPERATORS,
        true,
        |d, c, p: RunParams| async move {
            visible_run(&d, &c, &p.run_id)?;
            let engine = d
                .flows
                .as_ref()
                .ok_or_else(|| ApiError::new(ErrorCode::FlowNotFound, "no flows"))?;
            engine.cancel(&p.run_id)
        },
    );
}

/// Adds `flows.subscribe`.
pub fn add_subscription(m: &mut Methods) {
    m.specs.push(MethodSpec {
        name: <cardd_api::flows::Subscribe as Subscription>::NAME,
        summary: "WebSocket only: receive a run's events as `flows.event` notifications until it finishes; end with `flows.unsubscribe`.",
        access: Access::Operator,
        mutates: false,
        params: schema_of::<RunParams>(),
        result: schema_of::<crate::flows::RunEvent>(),
        subscription: Some((
            <cardd_api::flows::Subscribe as Subscription>::NOTIFICATION,
            <cardd_api::flows::Subscribe as Subscription>::UNSUBSCRIBE,
        )),
    });
    let registered = m.module.register_subscription(
        <cardd_api::flows::Subscribe as Subscription>::NAME,
        <cardd_api::flows::Subscribe as Subscription>::NOTIFICATION,
        <cardd_api::flows::Subscribe as Subscription>::UNSUBSCRIBE,
        |params, pending: PendingSubscriptionSink, daemon, ext| async move {
            let checked = caller_of(
                &daemon,
                &ext,
                Access::Operator,
                <cardd_api::flows::Subscribe as Subscription>::NAME,
            )
            .and_then(|c| parse_params::<RunParams>(&params).map(|p| (c, p)))
            .and_then(|(c, p)| visible_run(&daemon, &c, &p.run_id).map(|_| p.run_id));
            let run_id = match checked {
                Ok(run_id) => run_id,
                Err(e) => {
                    pending.reject(ErrorObjectOwned::from(e)).await;
                    return Ok(());
                }
            };
            let Some(engine) = daemon.flows.as_ref() else {
                return Ok(());
            };
            let token = ext
                .get::<BearerToken>()
                .map(|t| t.0.clone())
                .unwrap_or_default();
            let session_over = session_end(&daemon, &token);
            tokio::pin!(session_over);
            let sink = pending.accept().await?;
            let mut since = 0;
            loop {
                let run = engine.get(&run_id).map_err(|e| e.message)?;
                let fresh: Vec<&crate::flows::RunEvent> =
                    run.events.iter().filter(|e| e.seq > since).collect();
                for event in fresh {
                    let message =
                        SubscriptionMessage::from(serde_json::value::to_raw_value(event)?);
                    if sink.send(message).await.is_err() {
                        return Ok(());
                    }
                    since = event.seq;
                }
                if run.state.is_finished() {
                    return Ok(());
                }
                tokio::select! {
                    _ = sink.closed() => return Ok(()),
                    why = &mut session_over => {
                        let _ = sink.send(session_ended_message(why)?).await;
                        return Ok(());
                    }
                    _ = engine.wait_change(&run_id, Duration::from_secs(5)) => {}
                }
            }
        },
    );
    if let Err(e) = registered {
        panic!("flows.subscribe registered twice: {e}");
    }
}

/// Adds these methods.
pub fn add(m: &mut Methods) {
    add_flow_methods(m);
}
