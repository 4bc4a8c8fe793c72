//! The JSON-RPC methods: registration, access checks, audit.
//!
//! Every method is declared once with [`Methods::add`]: its name, a one-line summary, who may
//! call it ([`Access`]), whether it changes state (then it is audited), its parameter and result
//! types (their JSON Schemas feed the OpenRPC document) and its handler. The helper resolves the
//! caller's session from the bearer token, checks the role, parses and validates parameters,
//! runs the handler, appends the audit record and maps errors through [`crate::errors`].
//! Parameters are always named (a JSON object); unknown parameter names are refused.

pub mod openrpc;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_api::{ErrorCode, Method, Role};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{Extensions, RpcModule, SubscriptionMessage};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::AuditEntry;
use crate::auth::{Session, SessionEnd};
use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::events::Event;
use crate::readers::Holder;
use crate::transport::guard::BearerToken;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who passed the HTTP guard (Host and Origin checks).
    Public,
    /// Any logged-in operator.
    Operator,
    /// Logged-in operators with one of these roles.
    Roles(&'static [Role]),
}

impl Access {
    /// Who may call, in words (for the OpenRPC document).
    pub fn describe(self) -> String {
        match self {
            Access::Public => "public".into(),
            Access::Operator => "any logged-in operator".into(),
            Access::Roles(roles) => roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A method as the OpenRPC document describes it.
#[derive(Debug, Clone)]
pub struct MethodSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub mutates: bool,
    pub params: Value,
    pub result: Value,
    /// For a subscription: its notification and unsubscribe methods.
    pub subscription: Option<(&'static str, &'static str)>,
}

/// What a handler knows about its caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: Option<Session>,
    /// Where the call came from, for login throttling and audit ([`crate::auth::login_source`]:
    /// the peer address without its port, and browser page (its Origin) or program).
    pub peer: String,
    /// The method called, for the context marks of a reader's APDU trace.
    pub method: &'static str,
}

impl Caller {
    /// The session, for handlers of non-public methods (the helper guarantees it is there).
    pub fn session(&self) -> Result<&Session, ApiError> {
        self.session.as_ref().ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthenticated, "未登录或登录已超时，请重新登录")
        })
    }

    pub fn holder(&self) -> Result<Holder, ApiError> {
        let s = self.session()?;
        Ok(Holder {
            operator: s.username.clone(),
            session: s.token.clone(),
        })
    }
}

/// What the audit log keeps of a method's parameters (never secrets).
pub trait AuditDetail {
    /// What the audit log keeps of these parameters.
    fn audit_detail(&self) -> Value;
    /// What the action was done to, for the audit record.
    fn audit_target(&self) -> Option<String> {
        None
    }
}

/// The method registry being built.
pub struct Methods {
    pub(crate) module: RpcModule<Arc<Daemon>>,
    pub(crate) specs: Vec<MethodSpec>,
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Methods")
            .field("count", &self.specs.len())
            .finish()
    }
}

pub(crate) fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

/// Parses named parameters; absent parameters are an empty object.
pub(crate) fn parse_params<P: DeserializeOwned>(params: &Params<'_>) -> Result<P, ApiError> {
    let value: Value = match params.as_str() {
        None => json!({}),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| ApiError::invalid_params(e.to_string()))?
        }
    };
    if !value.is_object() {
        return Err(ApiError::invalid_params(
            "parameters must be a JSON object of named parameters",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid_params(format!("invalid parameters: {e}")))
}

/// Where a call came from ([`crate::auth::login_source`]).
pub(crate) fn source_of(ext: &Extensions) -> String {
    crate::auth::login_source(
        ext.get::<crate::transport::connections::ConnectionInfo>()
            .map(|c| c.peer)
            .or_else(|| ext.get::<crate::auth::PeerAddr>().map(|p| p.0)),
        ext.get::<crate::transport::guard::ClientOrigin>()
            .map(|o| o.0.as_str()),
    )
}

pub(crate) fn caller_of(
    daemon: &Daemon,
    ext: &Extensions,
    access: Access,
    method: &'static str,
) -> Result<Caller, ApiError> {
    let peer = source_of(ext);
    let token = ext.get::<BearerToken>().map(|t| t.0.clone());
    let session = match (&token, access) {
        (_, Access::Public) => token
            .as_deref()
            .and_then(|t| daemon.auth.authenticate(t, Instant::now()).ok()),
        (None, _) => {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "未登录：请先登录（auth.login），并在 Authorization: Bearer 头中带上令牌",
            ))
        }
        (Some(t), _) => Some(daemon.auth.authenticate(t, Instant::now())?),
    };
    if let (Access::Roles(roles), Some(s)) = (access, &session) {
        if !roles.contains(&s.role) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{}（{}）无权执行此操作；需要以下角色之一：{}",
                    s.username,
                    s.role.label_zh(),
                    roles
                        .iter()
                        .map(|r| r.label_zh())
                        .collect::<Vec<_>>()
                        .join("、")
                ),
            ));
        }
    }
    Ok(Caller {
        session,
        peer,
        method,
    })
}

impl Methods {
    /// An empty registry whose handlers get `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Methods {
            module: RpcModule::new(daemon),
            specs: Vec::new(),
        }
    }

    /// Declares and registers one method.
    /// Adds the method `M` of the contract (`cardd_api`): its name, params and result types are
    /// the contract's, so a handler cannot drift from what clients compile against.
    pub fn method<M, F, Fut>(
        &mut self,
        summary: &'static str,
        access: Access,
        mutates: bool,
        handler: F,
    ) where
        M: Method,
        M::Params: AuditDetail + Send + 'static,
        M::Result: Send + 'static,
        F: Fn(Arc<Daemon>, Caller, M::Params) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, ApiError>> + Send + 'static,
    {
        self.add(M::NAME, summary, access, mutates, handler)
    }

    fn add<P, R, F, Fut>(
        &mut self,
        name: &'static str,
        summary: &'static str,
        access: Access,
        mutates: bool,
        handler: F,
    ) where
        P: DeserializeOwned + JsonSchema + AuditDetail + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(Arc<Daemon>, Caller, P) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    {
        self.specs.push(MethodSpec {
            name,
            summary,
            access,
            mutates,
            params: schema_of::<P>(),
            result: schema_of::<R>(),
            subscription: None,
        });
        let registered = self
            .module
            .register_async_method(name, move |params, daemon, ext| {
                let handler = handler.clone();
                async move {
                    let started = Instant::now();
                    let result = call(&daemon, &params, &ext, name, access, mutates, handler).await;
                    let outcome = match &result {
                        Ok(_) => "ok",
                        Err(e) => e.code.name(),
                    };
                    daemon.metrics.rpc(name, outcome, started.elapsed());
                    result.map_err(ErrorObjectOwned::from)
                }
            });
        if let Err(e) = registered {
            panic!("method {name} registered twice: {e}");
        }
    }

    /// The specs, for the OpenRPC document.
    pub fn specs(&self) -> &[MethodSpec] {
        &self.specs
    }
}

async fn call<P, R, F, Fut>(
    daemon: &Arc<Daemon>,
    params: &Params<'static>,
    ext: &Extensions,
    name: &'static str,
    access: Access,
    mutates: bool,
    handler: F,
) -> Result<Value, ApiError>
where
    P: DeserializeOwned + AuditDetail,
    R: Serialize,
    F: Fn(Arc<Daemon>, Caller, P) -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
{
    if daemon.failed_closed() && mutates && !SELF_AUDITED.contains(&name) && name != "auth.logout" {
        return Err(ApiError::new(ErrorCode::FailedClosed, "cardd has stopped state-changing methods after an integrity check failed; see the daemon log"));
    }
    // A state-changing call is audited before it acts and again with its result; one refused
    // before it could act (no session, wrong role, bad parameters) is audited as refused.
    // `auth.login` audits itself: a success as one record, failures counted per source and
    // interval, so a guessing loop cannot flood the log.
    let mutates = mutates && !SELF_AUDITED.contains(&name);
    let refused = |e: ApiError| -> ApiError {
        if mutates {
            if e.code == ErrorCode::Unauthenticated {
                // Nobody to attribute it to, and free to repeat from fresh connections: counted
                // per source and interval instead of one durable record each.
                let source = source_of(ext);
                daemon.audit_refusals(daemon.refusals.refused(
                    &source,
                    name,
                    None,
                    e.code.name(),
                    Instant::now(),
                ));
                return e;
            }
            let entry = AuditEntry {
                operator: None,
                role: None,
                action: name.to_owned(),
                target: None,
                detail: bounded_detail(json!({ "refused": e.message })),
                outcome: e.code.name().to_owned(),
            };
            if let Err(audit) = daemon.audit.append(entry) {
                tracing::error!(method = name, error = %audit, "could not audit a refused call");
            }
        }
        e
    };
    let caller = caller_of(daemon, ext, access, name).map_err(refused)?;
    let parsed: P = parse_params(params).map_err(refused)?;
    let audited = if mutates {
        let session = caller.session.clone();
        let target = parsed
            .audit_target()
            .map(|t| t.chars().take(AUDIT_TARGET_CHARS_MAX).collect::<String>());
        let entry = AuditEntry {
            operator: session.as_ref().map(|s| s.username.clone()),
            role: session.as_ref().map(|s| s.role),
            action: name.to_owned(),
            target: target.clone(),
            detail: bounded_detail(parsed.audit_detail()),
            outcome: AUDIT_STARTED.to_owned(),
        };
        // No audit record, no action.
        let started = daemon.audit.append(entry).map_err(|e| {
            ApiError::internal(format!(
                "could not write the audit log, nothing was done: {e}"
            ))
        })?;
        Some((started.seq, target, session))
    } else {
        None
    };
    let result = handler(daemon.clone(), caller, parsed).await;
    if let Some((started_seq, target, session)) = audited {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code.name().to_owned(),
        };
        let detail = match &result {
            Ok(_) => json!({ "started_seq": started_seq }),
            Err(e) => bounded_detail(json!({ "started_seq": started_seq, "error": e.message })),
        };
        let entry = AuditEntry {
            operator: session.as_ref().map(|s| s.username.clone()),
            role: session.as_ref().map(|s| s.role),
            action: name.to_owned(),
            target,
            detail,
            outcome,
        };
        daemon
            .audit
            .append(entry)
            .map_err(|e| ApiError::internal(format!("could not write the audit log: {e}")))?;
    }
    let value = result?;
    serde_json::to_value(value)
        .map_err(|e| ApiError::internal(format!("could not encode the result: {e}")))
}

/// Runs `work` (which hashes or verifies a password) on a blocking thread holding one of the
/// few hashing slots, so a burst of logins neither blocks the async threads (`/health`,
/// reader events) nor queues without bound: with no slot free within the configured wait the
/// call is refused as busy.
pub(crate) async fn hashing<T: Send + 'static>(
    d: &Arc<Daemon>,
    work: impl FnOnce(&Daemon) -> Result<T, crate::auth::AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = d.auth.hashing_permit().await?;
    let daemon = d.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&daemon)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the password check stopped: {e}")))?
    .map_err(ApiError::from)
}

/// Logins audit themselves (`methods::auth::login`): a success as one record, failures counted
/// per source and interval, so a password-guessing loop cannot flood the audit log.
const SELF_AUDITED: [&str; 2] = ["auth.login", "group.login"];

/// The outcome of the record written before a state-changing method acts.
pub const AUDIT_STARTED: &str = "started";

/// Largest `detail` kept as it is, in bytes of JSON; a larger one is truncated (never a reason
/// to act without an audit record).
pub const AUDIT_DETAIL_BYTES_MAX: usize = 8 * 1024;

/// What of an oversized detail is kept, in characters of its JSON.
pub const AUDIT_DETAIL_HEAD_CHARS: usize = 1024;

/// Longest audit target kept, in characters.
pub const AUDIT_TARGET_CHARS_MAX: usize = 256;

/// `detail` as the audit log keeps it: as it is when small and shallow enough, else a marked
/// prefix of its JSON with its full size.
pub fn bounded_detail(detail: Value) -> Value {
    let text = detail.to_string();
    let deep = depth_of(&detail) > crate::audit::AUDIT_DETAIL_DEPTH_MAX;
    if text.len() <= AUDIT_DETAIL_BYTES_MAX && !deep {
        return detail;
    }
    json!({
        "truncated": true,
        "bytes": text.len(),
        "head": text.chars().take(AUDIT_DETAIL_HEAD_CHARS).collect::<String>(),
    })
}

fn depth_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Implements [`AuditDetail`] by keeping the parameters as they are (types without secrets).
macro_rules! audit_as_json {
    ($t:ty $(, $target:ident)?) => {
        impl AuditDetail for $t {
            fn audit_detail(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
            }
            $(fn audit_target(&self) -> Option<String> {
                Some(self.$target.clone())
            })?
        }
    };
}

pub(crate) use audit_as_json;

pub use cardd_api::{Done, NoParams};
audit_as_json!(NoParams);

/// Every logged-in operator.
pub(crate) const ALL_OPERATORS: Access = Access::Operator;
/// Administrators only.
pub(crate) const ADMIN: Access = Access::Roles(&[Role::Admin]);
/// Those who read the audit log.
pub(crate) const AUDIT_READERS: Access =
    Access::Roles(&[Role::Admin, Role::Auditor, Role::Supervisor]);

/// Resolves when the session of `token` ends, with why. Every end but idle expiry is announced
/// by [`crate::auth::Auth`]; expiry is found by looking again when the session would expire.
pub(crate) async fn session_end(daemon: &Daemon, token: &str) -> SessionEnd {
    let mut ends = daemon.auth.session_ends();
    loop {
        let Some(session) = daemon.auth.peek(token, Instant::now()) else {
            return SessionEnd::IdleTimeout;
        };
        let expires = session.last_seen + daemon.auth.config().session_idle_timeout;
        let expires = tokio::time::Instant::from_std(expires) + Duration::from_millis(1);
        tokio::select! {
            ended = ends.recv() => match ended {
                Ok((ended, why)) if ended == token => return why,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return SessionEnd::LoggedOut,
            },
            _ = tokio::time::sleep_until(expires) => {}
        }
    }
}

/// The last notification of a subscription whose session ended.
pub(crate) fn session_ended_message(
    why: SessionEnd,
) -> Result<SubscriptionMessage, serde_json::Error> {
    let event = Event {
        seq: 0,
        at: crate::audit::utc_now_rfc3339(),
        kind: crate::events::EventKind::SessionEnded { reason: why },
    };
    Ok(SubscriptionMessage::from(serde_json::value::to_raw_value(
        &event,
    )?))
}

impl Methods {
    /// The module with every method added so far and `rpc.discover` (this API's OpenRPC
    /// document, generated from the specs), with the specs.
    pub fn finish(self) -> (RpcModule<Arc<Daemon>>, Vec<MethodSpec>) {
        let mut m = self;
        m.specs.push(MethodSpec {
            name: "rpc.discover",
            summary: "This API's OpenRPC document.",
            access: Access::Public,
            mutates: false,
            params: schema_of::<NoParams>(),
            result: json!({ "type": "object", "description": "OpenRPC 1.2 document" }),
            subscription: None,
        });
        let specs = m.specs.clone();
        let document = openrpc::document(&specs);
        if let Err(e) = m
            .module
            .register_method("rpc.discover", move |_, _, _| document.clone())
        {
            panic!("rpc.discover registered twice: {e}");
        }
        (m.module, specs)
    }
}
