//! The JSON-RPC methods: registration, access checks, audit.
//!
//! Every method is declared once with [`Methods::add`]: its name, a one-line summary, who may
//! call it ([`Access`]), whether it changes state (then it is audited), its parameter and result
//! types (their JSON Schemas feed the OpenRPC document) and its handler. The helper resolves the
//! caller's session from the bearer token, checks the role, parses and validates parameters,
//! runs the handler, appends the audit record and maps errors through [`crate::errors`].
//! Parameters are always named (a JSON object); unknown parameter names are refused.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_api::{ErrorCode, Role};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{Extensions, PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::AuditEntry;
use crate::auth::{NewOperator, Operator, Session, SessionEnd};
use crate::errors::ApiError;
use crate::events::{Event, PollResult};
use crate::guard::BearerToken;
use crate::readers::{Holder, ReaderStatus};
use crate::server::Daemon;

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
    pub subscription: bool,
}

/// What a handler knows about its caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: Option<Session>,
    /// Where the call came from, for login throttling and audit ([`crate::auth::login_source`]:
    /// the peer address without its port, and browser page (its Origin) or program).
    pub peer: String,
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
    module: RpcModule<Arc<Daemon>>,
    specs: Vec<MethodSpec>,
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Methods")
            .field("count", &self.specs.len())
            .finish()
    }
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

/// Parses named parameters; absent parameters are an empty object.
fn parse_params<P: DeserializeOwned>(params: &Params<'_>) -> Result<P, ApiError> {
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
fn source_of(ext: &Extensions) -> String {
    crate::auth::login_source(
        ext.get::<crate::connections::ConnectionInfo>()
            .map(|c| c.peer)
            .or_else(|| ext.get::<crate::auth::PeerAddr>().map(|p| p.0)),
        ext.get::<crate::guard::ClientOrigin>()
            .map(|o| o.0.as_str()),
    )
}

fn caller_of(daemon: &Daemon, ext: &Extensions, access: Access) -> Result<Caller, ApiError> {
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
    Ok(Caller { session, peer })
}

impl Methods {
    fn new(daemon: Arc<Daemon>) -> Self {
        Methods {
            module: RpcModule::new(daemon),
            specs: Vec::new(),
        }
    }

    /// Declares and registers one method.
    pub fn add<P, R, F, Fut>(
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
            subscription: false,
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
    if daemon.failed_closed() && mutates && name != "auth.login" && name != "auth.logout" {
        return Err(ApiError::new(ErrorCode::FailedClosed, "cardd has stopped state-changing methods after an integrity check failed; see the daemon log"));
    }
    // A state-changing call is audited before it acts and again with its result; one refused
    // before it could act (no session, wrong role, bad parameters) is audited as refused.
    // `auth.login` audits itself: a success as one record, failures counted per source and
    // interval, so a guessing loop cannot flood the log.
    let mutates = mutates && name != "auth.login";
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
    let caller = caller_of(daemon, ext, access).map_err(refused)?;
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
async fn hashing<T: Send + 'static>(
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

// ---------------------------------------------------------------------------------------------
// Parameter and result types.

/// Implements [`AuditDetail`] by keeping the parameters as they are (types without secrets).
macro_rules! audit_as_json {
    ($t:ty $(, $target:ident)?) => {
        impl AuditDetail for $t {
            fn audit_detail(&self) -> Value {
                serde_json::to_value(self).unwrap_or(Value::Null)
            }
            $(fn audit_target(&self) -> Option<String> {
                Some(self.$target.clone())
            })?
        }
    };
}

pub(crate) use audit_as_json;

pub use cardd_api::audit::{AuditListParams, AuditVerifyResult};
pub use cardd_api::auth::{ChangePasswordParams, LoginParams, LoginResult, SessionView, WhoAmI};
pub use cardd_api::events::PollParams;
pub use cardd_api::flows::{AnswerParams, RunEvents, RunEventsParams, RunParams};
pub use cardd_api::operators::{ResetPasswordParams, SetDisabledParams, SetRoleParams};
pub use cardd_api::reader::{TransmitParams, TransmitResult};
pub use cardd_api::readers::{LeaseParams, ReaderParams, ReleaseParams, RenewParams};
pub use cardd_api::system::Version;
pub use cardd_api::{Done, NoParams};
audit_as_json!(NoParams);

impl AuditDetail for LoginParams {
    fn audit_detail(&self) -> Value {
        Value::Null
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.chars().take(64).collect())
    }
}

/// An operator's display name (姓名) as people read it, for views that name who acted; the
/// daemon's own actions are 系统's, and an unknown user name is shown as it is.
pub(crate) fn operator_name(d: &Daemon, username: &str) -> String {
    if username == "cardd" {
        return "系统".into();
    }
    d.auth
        .get_operator(username)
        .map(|o| o.display_name)
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| username.to_owned())
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        SessionView {
            username: s.username.clone(),
            display_name: s.display_name.clone(),
            role: s.role,
            role_label: s.role.label_zh().into(),
            group_id: s.group_id.clone(),
        }
    }
}

impl AuditDetail for ChangePasswordParams {
    fn audit_detail(&self) -> Value {
        Value::Null
    }
}

impl AuditDetail for NewOperator {
    fn audit_detail(&self) -> Value {
        json!({ "username": self.username, "display_name": self.display_name, "role": self.role, "group_id": self.group_id })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.clone())
    }
}

audit_as_json!(SetDisabledParams, username);

audit_as_json!(SetRoleParams, username);

impl AuditDetail for ResetPasswordParams {
    fn audit_detail(&self) -> Value {
        json!({ "username": self.username })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.username.clone())
    }
}

audit_as_json!(AuditListParams);

audit_as_json!(ReaderParams, reader_id);

audit_as_json!(LeaseParams, reader_id);

audit_as_json!(RenewParams);

audit_as_json!(ReleaseParams);

audit_as_json!(TransmitParams, reader_id);

audit_as_json!(PollParams);

// ---------------------------------------------------------------------------------------------
// The methods.

const ALL_OPERATORS: Access = Access::Operator;
const ADMIN: Access = Access::Roles(&[Role::Admin]);
const AUDIT_READERS: Access = Access::Roles(&[Role::Admin, Role::Auditor, Role::Supervisor]);

/// Builds the module with every method; returns it with the specs for OpenRPC.
pub fn build(daemon: Arc<Daemon>) -> (RpcModule<Arc<Daemon>>, Vec<MethodSpec>) {
    // The 模拟读卡器 panel exists on the embedded default only; elsewhere its methods do not.
    let has_sim_panel = daemon.sim_panel.is_some();
    let mut m = Methods::new(daemon);

    m.add(
        "system.version",
        "The daemon's name and version.",
        Access::Public,
        false,
        |_, _, _: NoParams| async {
            Ok(Version {
                name: "cardd".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                api_version: crate::openrpc::API_VERSION.into(),
            })
        },
    );

    m.add(
        "system.vocabulary",
        "Every code clients show with its zh-CN label: roles, plate colours, order and top-up statuses, query periods.",
        ALL_OPERATORS,
        false,
        |_, _, _: NoParams| async { Ok(cardd_api::vocab::Vocabulary::current()) },
    );

    // Audited here, not by the generic path (see `call`): a success is one record, failures are
    // counted into one record per source and interval (`RefusalDigest`).
    m.add(
        "auth.login",
        "Log in with user name and password; returns a bearer token.",
        Access::Public,
        true,
        |d, c, p: LoginParams| async move {
            let source = c.peer.clone();
            let username: String = p.username.chars().take(64).collect();
            let attempt = {
                let d = d.clone();
                let source = source.clone();
                async move {
                    d.auth
                        .check_login_allowed(&p.username, &source, Instant::now())?;
                    hashing(&d, move |d| {
                        d.auth
                            .login(&p.username, &p.password, &source, Instant::now())
                    })
                    .await
                }
            };
            let session = match attempt.await {
                Ok(session) => session,
                Err(e) => {
                    let audit = d.clone();
                    let (code, user) = (e.code.name().to_owned(), username.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        let entries = audit.refusals.refused(
                            &source,
                            "auth.login",
                            Some(&user),
                            &code,
                            Instant::now(),
                        );
                        audit.audit_refusals(entries);
                    })
                    .await;
                    return Err(e);
                }
            };
            let entry = AuditEntry {
                operator: Some(session.username.clone()),
                role: Some(session.role),
                action: "auth.login".into(),
                target: Some(username),
                detail: json!({ "source": source }),
                outcome: "ok".into(),
            };
            let record = {
                let d = d.clone();
                tokio::task::spawn_blocking(move || d.audit.append(entry)).await
            };
            if !matches!(record, Ok(Ok(_))) {
                // No audit record, no session.
                d.auth.logout(&session.token);
                return Err(ApiError::internal(
                    "could not write the audit log, the login was not completed",
                ));
            }
            tracing::info!(operator = %session.username, role = session.role.as_str(), "login");
            Ok(LoginResult {
                token: session.token.clone(),
                operator: SessionView::from(&session),
                idle_timeout_s: d.config.auth.session_idle_timeout_s,
            })
        },
    );

    m.add(
        "auth.logout",
        "End the current session.",
        ALL_OPERATORS,
        true,
        |d, c, _: NoParams| async move {
            d.auth.logout(&c.session()?.token);
            Ok(Done {
                ok: true,
                message: "已退出登录".into(),
            })
        },
    );

    m.add(
        "auth.whoami",
        "The logged-in operator, with the rule a new password must follow.",
        ALL_OPERATORS,
        false,
        |d, c, _: NoParams| async move {
            Ok(WhoAmI {
                operator: SessionView::from(c.session()?),
                idle_timeout_s: d.config.auth.session_idle_timeout_s,
                password_chars_min: d.auth.password_chars_min(),
                password_chars_max: crate::auth::PASSWORD_CHARS_MAX,
            })
        },
    );

    m.add(
        "auth.change_password",
        "Change the logged-in operator's password (原密码, 新密码, 确认密码); other sessions end.",
        ALL_OPERATORS,
        true,
        |d, c, p: ChangePasswordParams| async move {
            let token = c.session()?.token.clone();
            hashing(&d, move |d| {
                d.auth.change_password(
                    &token,
                    &p.old_password,
                    &p.new_password,
                    &p.confirm_password,
                    Instant::now(),
                )
            })
            .await?;
            Ok(Done {
                ok: true,
                message: "密码已修改".into(),
            })
        },
    );

    m.add(
        "operators.list",
        "All operators.",
        ADMIN,
        false,
        |d, _, _: NoParams| async move { Ok::<Vec<Operator>, ApiError>(d.auth.list_operators()?) },
    );

    m.add(
        "operators.create",
        "Create an operator with a role (and a group for group operators).",
        ADMIN,
        true,
        |d, _, p: NewOperator| async move { hashing(&d, move |d| d.auth.create_operator(p)).await },
    );

    m.add("operators.set_disabled", "Disable or re-enable an operator; a disabled operator cannot log in.", ADMIN, true, |d, _, p: SetDisabledParams| async move {
        Ok(d.auth.set_disabled(&p.username, p.disabled)?)
    });

    m.add(
        "operators.set_role",
        "Change an operator's role (and group, for group operators); their sessions end.",
        ADMIN,
        true,
        |d, _, p: SetRoleParams| async move {
            Ok(d.auth.set_role(&p.username, p.role, p.group_id)?)
        },
    );

    m.add(
        "operators.reset_password",
        "Set an operator's password (their sessions end).",
        ADMIN,
        true,
        |d, _, p: ResetPasswordParams| async move {
            hashing(&d, move |d| {
                d.auth.reset_password(&p.username, &p.new_password)
            })
            .await?;
            Ok(Done {
                ok: true,
                message: "密码已重置".into(),
            })
        },
    );

    m.add(
        "audit.list",
        "Audit records, oldest first, after a sequence number.",
        AUDIT_READERS,
        false,
        |d, _, p: AuditListParams| async move {
            d.audit
                .list(p.after_seq, p.limit.unwrap_or(100))
                .map_err(|e| ApiError::new(e.code(), e.to_string()))
        },
    );

    m.add(
        "audit.verify",
        "Verify the audit log's hash chain.",
        AUDIT_READERS,
        false,
        |d, _, _: NoParams| async move {
            let records = d
                .audit
                .verify_chain()
                .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
            Ok(AuditVerifyResult {
                records,
                chain_ok: true,
            })
        },
    );

    m.add(
        "readers.list",
        "Readers with driver, capabilities, card presence and lease.",
        ALL_OPERATORS,
        false,
        |d, _, _: NoParams| async move { Ok::<Vec<ReaderStatus>, ApiError>(d.readers.list()) },
    );

    m.add(
        "readers.lease",
        "Hold a reader for a flow, for a bounded time; others find it busy.",
        ALL_OPERATORS,
        true,
        |d, c, p: LeaseParams| async move {
            let holder = c.holder()?;
            let purpose = p.purpose.unwrap_or_else(|| "业务办理".into());
            d.readers.lease(
                &p.reader_id,
                holder,
                p.duration_ms.map(Duration::from_millis),
                &purpose,
            )
        },
    );

    m.add(
        "readers.renew",
        "Extend a lease you hold.",
        ALL_OPERATORS,
        true,
        |d, c, p: RenewParams| async move {
            d.readers.renew(
                &p.lease_id,
                &c.holder()?,
                p.duration_ms.map(Duration::from_millis),
            )
        },
    );

    m.add(
        "readers.release",
        "Release a lease you hold.",
        ALL_OPERATORS,
        true,
        |d, c, p: ReleaseParams| async move {
            d.readers.release(&p.lease_id, &c.holder()?)?;
            Ok(Done {
                ok: true,
                message: "读卡器已释放".into(),
            })
        },
    );

    m.add(
        "card.summary",
        "Read the card in a reader: type, card number, plate, balance, counters, validity.",
        ALL_OPERATORS,
        false,
        |d, c, p: ReaderParams| async move {
            let holder = c.holder()?;
            let pin = d.config.etc_pin.clone();
            let terminal = d.config.terminal_id;
            d.readers
                .run(&p.reader_id, &holder, move |reader| {
                    crate::summary::read(reader, &pin, terminal)
                })
                .await?
        },
    );

    m.add(
        "card.balance",
        "Read the purse balance of the card in a reader (one GET BALANCE while the application is selected).",
        ALL_OPERATORS,
        false,
        |d, c, p: ReaderParams| async move {
            d.readers
                .run(&p.reader_id, &c.holder()?, crate::summary::balance)
                .await?
        },
    );

    m.add(
        "reader.transmit",
        "Send one raw APDU (administrators only; audited).",
        ADMIN,
        true,
        |d, c, p: TransmitParams| async move {
            let bytes = hex::decode(p.apdu.trim())
                .map_err(|_| ApiError::invalid_params("apdu must be hexadecimal"))?;
            let command = cardd_reader::CommandApdu::parse(&bytes)
                .map_err(|e| ApiError::invalid_params(e.to_string()))?;
            let response = d
                .readers
                .run(&p.reader_id, &c.holder()?, move |reader| {
                    use cardd_reader::CardChannel;
                    reader.transmit(&command)
                })
                .await??;
            Ok(TransmitResult {
                data: hex::encode_upper(&response.data),
                sw: format!("{:04X}", response.sw.0),
                sw_meaning: response.sw.description().into(),
            })
        },
    );

    m.add(
        "events.poll",
        "Reader, card and lease events after `since`, waiting up to `wait_ms` for the first one (for HTTP-only clients).",
        ALL_OPERATORS,
        false,
        |d, _, p: PollParams| async move {
            Ok::<PollResult, ApiError>(
                d.events.poll(p.since, p.limit.unwrap_or(100), Duration::from_millis(p.wait_ms.unwrap_or(0))).await,
            )
        },
    );

    add_flow_methods(&mut m);
    crate::etc_rpc::add_methods(&mut m);
    crate::journal_rpc::add_methods(&mut m);
    crate::group_rpc::add_group_methods(&mut m);
    if has_sim_panel {
        crate::sim_panel::add_methods(&mut m);
    }
    add_run_subscription(&mut m);
    add_event_subscription(&mut m);

    m.specs.push(MethodSpec {
        name: "rpc.discover",
        summary: "This API's OpenRPC document.",
        access: Access::Public,
        mutates: false,
        params: schema_of::<NoParams>(),
        result: json!({ "type": "object", "description": "OpenRPC 1.2 document" }),
        subscription: false,
    });
    let specs = m.specs.clone();
    let document = crate::openrpc::document(&specs);
    if let Err(e) = m
        .module
        .register_method("rpc.discover", move |_, _, _| document.clone())
    {
        panic!("rpc.discover registered twice: {e}");
    }
    (m.module, specs)
}

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

fn add_flow_methods(m: &mut Methods) {
    m.add(
        "flows.list",
        "The flows you may start, with their parameter schemas.",
        ALL_OPERATORS,
        false,
        |d, c, _: NoParams| async move {
            let role = c.session()?.role;
            let flows = d.flows.as_ref().map(|f| f.list()).unwrap_or_default();
            Ok::<Vec<crate::flows::FlowInfo>, ApiError>(
                flows
                    .into_iter()
                    .filter(|f| f.roles.contains(&role))
                    .collect(),
            )
        },
    );
    m.add(
        "flows.start",
        "Start a flow with a client-chosen idempotency key; re-sending the same start returns the same run.",
        ALL_OPERATORS,
        true,
        |d, c, p: crate::flows::StartParams| async move {
            let session = c.session()?.clone();
            crate::flows::start(&d, &session, p)
        },
    );
    m.add(
        "flows.get",
        "A run: state, pending question, result or failure, events.",
        ALL_OPERATORS,
        false,
        |d, c, p: RunParams| async move { visible_run(&d, &c, &p.run_id) },
    );
    m.add(
        "flows.events",
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
    m.add(
        "flows.answer",
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
    m.add(
        "flows.cancel",
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

/// Resolves when the session of `token` ends, with why. Every end but idle expiry is announced
/// by [`crate::auth::Auth`]; expiry is found by looking again when the session would expire.
async fn session_end(daemon: &Daemon, token: &str) -> SessionEnd {
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
fn session_ended_message(why: SessionEnd) -> Result<SubscriptionMessage, serde_json::Error> {
    let event = Event {
        seq: 0,
        at: crate::audit::utc_now_rfc3339(),
        kind: crate::events::EventKind::SessionEnded { reason: why },
    };
    Ok(SubscriptionMessage::from(serde_json::value::to_raw_value(
        &event,
    )?))
}

fn add_run_subscription(m: &mut Methods) {
    m.specs.push(MethodSpec {
        name: "flows.subscribe",
        summary: "WebSocket only: receive a run's events as `flows.event` notifications until it finishes; end with `flows.unsubscribe`.",
        access: Access::Operator,
        mutates: false,
        params: schema_of::<RunParams>(),
        result: schema_of::<crate::flows::RunEvent>(),
        subscription: true,
    });
    let registered = m.module.register_subscription(
        "flows.subscribe",
        "flows.event",
        "flows.unsubscribe",
        |params, pending: PendingSubscriptionSink, daemon, ext| async move {
            let checked = caller_of(&daemon, &ext, Access::Operator)
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

fn add_event_subscription(m: &mut Methods) {
    m.specs.push(MethodSpec {
        name: "events.subscribe",
        summary: "WebSocket only: receive reader, card and lease events as `events.event` notifications; end with `events.unsubscribe`.",
        access: Access::Operator,
        mutates: false,
        params: schema_of::<NoParams>(),
        result: schema_of::<Event>(),
        subscription: true,
    });
    let registered = m.module.register_subscription(
        "events.subscribe",
        "events.event",
        "events.unsubscribe",
        |_params, pending: PendingSubscriptionSink, daemon, ext| async move {
            if let Err(e) = caller_of(&daemon, &ext, Access::Operator) {
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
