//! The back office (后台): web pages for the host's back-office operators (管理员, 审核员,
//! 主管), served on the loopback address of `[backoffice] listen` by `cardd-host serve`.
//!
//! Plain HTTP: `GET` serves the pages ([`assets`], compiled in), `POST /rpc` takes JSON-RPC 2.0
//! calls. In front of both, [`guard`] applies the site console's discipline (Host, Origin,
//! Content-Security-Policy); [`session`] keeps the logins (a token in a header, bounded per
//! user, ended when idle) and throttles failed logins per user name; [`error`] is the one
//! mapping of failures to JSON-RPC errors with zh-CN messages; [`pages`] holds the methods,
//! one module per page.
//!
//! **Invariants.**
//! * Only operators of the back-office roles log in; tellers, kiosks and group operators are
//!   refused with a message sending them to their site console.
//! * Every method is checked against the caller's role before it runs, and the caller is
//!   checked to be still enabled at the host.
//! * A method that changes something is recorded in the `host` audit chain (actor
//!   `后台:<user>`, outcome `started`) before it acts; when the record cannot be written the
//!   method does not run.
//! * Password checks (argon2) and every store call run on a thread of their own, never on
//!   the async threads (the stores block, and own a runtime of their own).
//! * Bounded: [`CONNECTIONS_MAX`] connections, [`BODY_BYTES_MAX`] per request, headers within
//!   [`HEADER_READ_TIMEOUT_MS`].

pub mod assets;
pub mod error;
pub mod guard;
pub mod pages;
pub mod session;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cardd_api::Role;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method as HttpMethod, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use error::BackOfficeError;
use guard::{Guard, RPC_PATH};
use pages::{Caller, Stores, BACK_OFFICE_ROLES};
use session::{Sessions, Throttle};

/// Most connections served at once (each runs at most one call, on a thread of its own).
pub const CONNECTIONS_MAX: usize = 64;
/// Largest request body, in bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Longest user name or password accepted at login, in characters.
const CREDENTIAL_CHARS_MAX: usize = 128;
/// Longest session token accepted, in bytes.
const TOKEN_BYTES_MAX: usize = 128;

/// The back office: its guard, sessions and stores.
pub struct BackOffice {
    guard: Guard,
    stores: Stores,
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
}

impl std::fmt::Debug for BackOffice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackOffice")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// Runs `work` on a thread of its own and waits for it without blocking the async threads.
async fn off_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> Result<T, BackOfficeError> + Send + 'static,
) -> Result<T, BackOfficeError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| BackOfficeError::Internal(format!("后台线程不足：{e}")))?;
    rx.await
        .map_err(|e| BackOfficeError::Internal(format!("后台处理中断：{e}")))?
}

#[derive(Deserialize)]
struct Call {
    jsonrpc: String,
    #[serde(default)]
    id: Value,
    method: String,
    #[serde(default)]
    params: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

/// The audit detail of a call: its params without passwords, long texts cut.
fn audit_detail(params: &Value) -> Value {
    match params {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k.contains("password") {
                        json!("<不记录>")
                    } else if k == "cert_pem" {
                        json!(format!("<{} 字节>", v.as_str().map_or(0, str::len)))
                    } else {
                        match v {
                            Value::String(s) if s.chars().count() > 200 => {
                                json!(s.chars().take(200).collect::<String>())
                            }
                            other => other.clone(),
                        }
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        _ => json!({}),
    }
}

/// What the call acts on, for the audit log's target.
fn audit_target(params: &Value) -> Option<String> {
    ["order_id", "topup_id", "username", "site_id"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
        .map(|s| s.chars().take(64).collect())
}

impl BackOffice {
    /// A back office answering on `listen` (the address it is bound to) over `stores`.
    pub fn new(listen: SocketAddr, stores: Stores) -> Arc<BackOffice> {
        Arc::new(BackOffice {
            guard: Guard::for_listen(listen),
            stores,
            sessions: Mutex::default(),
            throttle: Mutex::default(),
        })
    }

    /// Serves `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((socket, peer)) = accepted else {
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "back office: connection refused, {CONNECTIONS_MAX} open");
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let me = me.clone();
                    async move { Ok::<_, std::convert::Infallible>(me.answer(request).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                    .serve_connection(TokioIo::new(socket), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "back office connection ended");
                }
            });
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        if let Err(refusal) = self.guard.check(request.method(), &path, request.headers()) {
            tracing::warn!(?refusal, "back office: request refused");
            return reply(
                refusal.status(),
                "text/plain; charset=utf-8",
                Bytes::from(refusal.message()),
            );
        }
        if request.method() != HttpMethod::POST {
            return match assets::find(&path) {
                Some(a) => reply(
                    StatusCode::OK,
                    a.content_type,
                    Bytes::from_static(a.body.as_bytes()),
                ),
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    Bytes::from_static("没有这个页面".as_bytes()),
                ),
            };
        }
        debug_assert_eq!(path, RPC_PATH);
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| t.len() <= TOKEN_BYTES_MAX)
            .map(str::to_owned);
        let body = match Limited::new(request.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain; charset=utf-8",
                    Bytes::from(format!("请求过大（最多 {BODY_BYTES_MAX} 字节）")),
                )
            }
        };
        let response = self.call(token.as_deref(), &body).await;
        reply(
            StatusCode::OK,
            "application/json",
            Bytes::from(response.to_string()),
        )
    }

    /// One JSON-RPC call (the request's body) as `token`'s session: the response object.
    pub async fn call(&self, token: Option<&str>, body: &[u8]) -> Value {
        let call: Call = match serde_json::from_slice::<Value>(body) {
            Err(e) => return failure(Value::Null, &BackOfficeError::Parse(e.to_string())),
            Ok(v) => match serde_json::from_value(v) {
                Ok(c) => c,
                Err(e) => {
                    return failure(Value::Null, &BackOfficeError::InvalidRequest(e.to_string()))
                }
            },
        };
        if call.jsonrpc != "2.0" {
            return failure(
                call.id,
                &BackOfficeError::InvalidRequest("jsonrpc 须为 \"2.0\"".into()),
            );
        }
        let id = call.id.clone();
        match self.dispatch(token, call).await {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => {
                if e.is_refusal() {
                    tracing::info!(error = %e, "back office: call refused");
                } else {
                    tracing::error!(error = %e, "back office: call failed");
                }
                failure(id, &e)
            }
        }
    }

    async fn dispatch(&self, token: Option<&str>, call: Call) -> Result<Value, BackOfficeError> {
        match call.method.as_str() {
            "auth.login" => return self.login(call.params).await,
            "auth.logout" => {
                if let Some(t) = token {
                    self.sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .close(t);
                }
                return Ok(json!({ "logged_out": true }));
            }
            _ => {}
        }
        let method = pages::find(&call.method)
            .ok_or_else(|| BackOfficeError::NoMethod(call.method.clone()))?;
        let token = token.ok_or(BackOfficeError::NotLoggedIn)?;
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touch(token, Instant::now())
            .ok_or(BackOfficeError::SessionEnded)?;
        pages::authorize(method, session.role)?;
        let caller = Caller {
            username: session.username,
            display_name: session.display_name,
            role: session.role,
        };
        let stores = self.stores.clone();
        let params = call.params;
        let ends = method
            .ends_sessions_of
            .and_then(|k| params.get(k).and_then(Value::as_str).map(str::to_owned));
        let who = caller.username.clone();
        let result = off_thread("backoffice-call", move || {
            let me = stores
                .operators
                .get(&caller.username)
                .map_err(|e| match e {
                    cardd_store_pg::OperatorError::NotFound(_) => BackOfficeError::SessionEnded,
                    other => other.into(),
                })?;
            if me.disabled || me.role != caller.role {
                return Err(BackOfficeError::SessionEnded);
            }
            if method.changes {
                stores
                    .audit
                    .append(&cardd_store_pg::HostAuditEntry {
                        chain: cardd_store_pg::HOST_CHAIN.into(),
                        actor: caller.actor(),
                        action: method.name.into(),
                        target: audit_target(&params),
                        detail: audit_detail(&params),
                        outcome: "started".into(),
                    })
                    .map_err(|e| BackOfficeError::AuditFailed(e.to_string()))?;
            }
            (method.run)(&stores, &caller, params)
        })
        .await;
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match &result {
            Err(BackOfficeError::SessionEnded) => sessions.close_user(&who),
            Ok(_) => {
                if let Some(user) = ends {
                    sessions.close_user(&user);
                }
            }
            Err(_) => {}
        }
        result
    }

    async fn login(&self, params: Value) -> Result<Value, BackOfficeError> {
        let p: Login = pages::params(params)?;
        let username = p.username.trim().to_owned();
        if username.is_empty()
            || username.chars().count() > CREDENTIAL_CHARS_MAX
            || p.password.chars().count() > CREDENTIAL_CHARS_MAX
        {
            return Err(BackOfficeError::InvalidCredentials);
        }
        self.throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(&username, Instant::now())
            .map_err(|wait_minutes| BackOfficeError::Throttled {
                user: username.clone(),
                wait_minutes,
            })?;
        let operators = self.stores.operators.clone();
        let name = username.clone();
        let verified = off_thread("backoffice-login", move || {
            operators
                .verify(&name, &p.password)
                .map_err(BackOfficeError::from)
        })
        .await;
        let operator = match verified {
            Ok(o) => o,
            Err(e) => {
                if e == BackOfficeError::InvalidCredentials {
                    self.throttle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .failed(&username, Instant::now());
                }
                return Err(e);
            }
        };
        self.throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .succeeded(&username);
        if !BACK_OFFICE_ROLES.contains(&operator.role) {
            tracing::info!(user = %username, role = operator.role.as_str(), "back office: role refused");
            return Err(not_back_office(operator.role));
        }
        let token = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open(
                &operator.username,
                &operator.display_name,
                operator.role,
                Instant::now(),
            );
        tracing::info!(user = %operator.username, role = operator.role.as_str(), "back office: logged in");
        Ok(json!({
            "token": token,
            "username": operator.username,
            "display_name": operator.display_name,
            "role": operator.role.as_str(),
            "role_label": operator.role.label_zh(),
            "idle_ms": session::SESSION_IDLE_MS,
        }))
    }
}

/// The refusal of a role that has no back office.
pub fn not_back_office(role: Role) -> BackOfficeError {
    BackOfficeError::NotBackOfficeRole {
        role: role.label_zh(),
    }
}

fn failure(id: Value, e: &BackOfficeError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() })
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    guard::secure(headers);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_audit_log() {
        let d = audit_detail(&json!({
            "username": "a", "password": "secret-1", "old_password": "x", "new_password": "y",
            "cert_pem": "-----BEGIN CERTIFICATE-----",
        }));
        let text = d.to_string();
        for secret in ["secret-1", "\"x\"", "\"y\"", "BEGIN"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(
            audit_target(&json!({"order_id": "GO1", "username": "u"})).as_deref(),
            Some("GO1")
        );
    }

    #[test]
    fn tellers_kiosks_and_group_operators_are_sent_to_their_console() {
        for role in [Role::Teller, Role::Kiosk, Role::GroupOperator] {
            assert!(!BACK_OFFICE_ROLES.contains(&role));
            let m = not_back_office(role).to_string();
            assert!(m.contains(role.label_zh()) && m.contains("控制台"), "{m}");
        }
    }
}
