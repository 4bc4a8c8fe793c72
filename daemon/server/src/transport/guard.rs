//! The HTTP guard in front of JSON-RPC, and the per-connection rate limit behind it.
//!
//! cardd listens on loopback, and any page the operator's browser opens can reach that port:
//! a page from another site may POST to it (CORS only hides the answer), may open a WebSocket
//! (browsers send no preflight for those), and may re-point its own DNS name at 127.0.0.1 (DNS
//! rebinding). jsonrpsee checks none of this, so [`GuardLayer`] does, before jsonrpsee reads a
//! byte of the body:
//! - the `Host` must be one of the daemon's own addresses, which defeats DNS rebinding;
//! - an `Origin`, on plain HTTP and on the WebSocket upgrade alike, must be on the allow-list;
//! - a WebSocket upgrade must carry the token of a live session (`?token=` or `Authorization`),
//!   with or without an `Origin`: a socket is held open for a long time, so only a logged-in
//!   operator may hold one;
//! - CORS and Private Network Access preflights are answered for allowed origins only, naming
//!   the origin, never `*`.
//!
//! It also lifts the session token out of the request into [`BearerToken`], so methods find it in
//! their `Extensions` whatever the transport, answers `GET /health` and serves the web UI's files
//! ([`crate::transport::web`]) to requests that passed the Host and Origin checks. Every refusal is a
//! JSON-RPC error object with a code from [`ErrorCode`], and a `warn` log line naming the header.
//!
//! [`RateLimitLayer`] is jsonrpsee RPC middleware: a token bucket per connection that counts every
//! call, every notification and every entry of a batch.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use cardd_api::ErrorCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, MethodResponse, Notification, Request, ResponseFuture,
    RpcServiceT,
};
use jsonrpsee::server::types::{ErrorObject, ErrorObjectOwned};
use jsonrpsee::server::{ws, ConnectionId, HttpBody, HttpRequest, HttpResponse};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Offending header values are cut to this many characters in the log.
const OFFENDING_CHARS_MAX: usize = 100;
/// Longest session token accepted; longer ones are refused as malformed.
const TOKEN_BYTES_MAX: usize = 1024;
/// Buckets kept for connections before idle ones are dropped (see [`Buckets::make_room`]).
const BUCKETS_MAX: usize = 4096;

const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

/// `127.0.0.1:P`, `localhost:P` and `[::1]:P`: the `Host` values of a loopback daemon on port `P`.
pub fn loopback_hosts(port: u16) -> Vec<String> {
    vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// `http://127.0.0.1:P`, `http://localhost:P` and `http://[::1]:P`: the daemon's own origins.
pub fn default_origins(port: u16) -> Vec<String> {
    loopback_hosts(port)
        .into_iter()
        .map(|host| format!("http://{host}"))
        .collect()
}

/// The session token a request carried (`Authorization: Bearer`, or `?token=` on a WebSocket
/// upgrade), found by methods in their `Extensions`. The guard only checks its shape; whether it
/// names a live session is for the caller to decide.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(pub String);

impl fmt::Debug for BearerToken {
    /// Never prints the token: it is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<{} bytes>)", self.0.len())
    }
}

/// How a call reached the daemon, found by RPC middleware in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A plain HTTP POST: calls only, no notifications.
    Http,
    /// A WebSocket: calls and subscriptions.
    WebSocket,
}

/// Deepest nesting of arrays and objects in a call's parameters; deeper ones are refused as
/// invalid parameters before any method sees them.
pub const PARAMS_DEPTH_MAX: usize = 32;

/// RPC middleware refusing, with documented codes, calls whose shape no method can take: a
/// subscription over HTTP (`WebSocketRequired`) and parameters nested deeper than
/// [`PARAMS_DEPTH_MAX`] (`InvalidParams`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallShapeLayer;

impl<S> Layer<S> for CallShapeLayer {
    type Service = CallShape<S>;

    fn layer(&self, inner: S) -> CallShape<S> {
        CallShape { inner }
    }
}

/// The service made by [`CallShapeLayer`].
#[derive(Debug, Clone)]
pub struct CallShape<S> {
    inner: S,
}

impl<S> RpcServiceT for CallShape<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        match shape_refusal(&request) {
            None => ResponseFuture::future(self.inner.call(request)),
            Some(refusal) => ResponseFuture::ready(
                MethodResponse::error(request.id, ErrorObjectOwned::from(refusal))
                    .with_extensions(request.extensions),
            ),
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.inner.notification(notification)
    }
}

fn shape_refusal(request: &Request<'_>) -> Option<crate::errors::ApiError> {
    let method = request.method_name();
    let over_http = request.extensions().get::<Transport>() == Some(&Transport::Http);
    if over_http && (method.ends_with(".subscribe") || method.ends_with(".unsubscribe")) {
        return Some(crate::errors::websocket_required(method));
    }
    let params = request.params.as_ref().map_or("", |p| p.get());
    (json_depth(params) > PARAMS_DEPTH_MAX)
        .then(|| crate::errors::nested_too_deep(PARAMS_DEPTH_MAX))
}

/// Deepest nesting of arrays and objects in JSON text (strings skipped).
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The allowed `Origin` a request came from, as sent, found by methods in their `Extensions`
/// (absent for callers that send no `Origin`: not a browser page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOrigin(pub String);

/// What the guard lets through.
pub struct GuardConfig {
    /// `Host` values (`host:port`) the daemon answers to, compared ignoring ASCII case.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) whose pages may call the daemon, compared ignoring ASCII
    /// case. `null` is refused even when listed.
    pub allowed_origins: Vec<String>,
    /// Builds the body of `GET /health`.
    pub health: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// Builds the body of `GET /metrics` (OpenMetrics text); `None`: not served.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Whether a token names a live session. A WebSocket upgrade needs one; a request carrying
    /// one marks its connection authenticated ([`crate::transport::connections`]).
    pub session_is_live: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardConfig")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

/// Tower layer putting [`Guard`] in front of jsonrpsee's HTTP service
/// (`Server::builder().set_http_middleware(ServiceBuilder::new().layer(GuardLayer::new(..)))`).
#[derive(Debug, Clone)]
pub struct GuardLayer {
    config: Arc<GuardConfig>,
}

impl GuardLayer {
    /// A guard enforcing `config`.
    pub fn new(config: Arc<GuardConfig>) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`GuardLayer`]: answers or refuses what it can, forwards the rest to `S`.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    config: Arc<GuardConfig>,
}

impl<S, B> Service<HttpRequest<B>> for Guard<S>
where
    S: Service<HttpRequest<B>, Response = HttpResponse>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: HttpRequest<B>) -> Self::Future {
        match inspect(&self.config, &mut request) {
            Verdict::Answer(response) => Box::pin(std::future::ready(Ok(response))),
            Verdict::Forward(origin) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let mut response = response.await.map_err(Into::into)?;
                    if let Some(origin) = origin {
                        allow_origin(response.headers_mut(), origin);
                    }
                    Ok(response)
                })
            }
        }
    }
}

/// What the guard does with a request.
enum Verdict {
    /// Answer it here: a refusal, a preflight, `/health`.
    Answer(HttpResponse),
    /// Pass it to jsonrpsee; the response is marked readable by this (allowed) origin, if any.
    Forward(Option<HeaderValue>),
}

/// The checks, in order: Host, Origin, preflight, then route and token.
fn inspect<B>(config: &GuardConfig, request: &mut HttpRequest<B>) -> Verdict {
    if let Err(refusal) = check_host(config, request) {
        return Verdict::Answer(refusal.into_response());
    }
    let origin = match check_origin(config, request.headers()) {
        Ok(origin) => origin,
        Err(refusal) => return Verdict::Answer(refusal.into_response()),
    };
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Verdict::Answer(preflight(origin, request.headers()));
    }
    match route(config, request) {
        None => {
            if let Some(origin) = &origin {
                let origin = ClientOrigin(String::from_utf8_lossy(origin.as_bytes()).into_owned());
                request.extensions_mut().insert(origin);
            }
            Verdict::Forward(origin)
        }
        Some(mut response) => {
            if let Some(origin) = origin {
                allow_origin(response.headers_mut(), origin);
            }
            Verdict::Answer(response)
        }
    }
}

/// Every `Host` the request names (the header and, in absolute form or HTTP/2, the URI authority)
/// must be on the allow-list, and it must name one. This is what defeats DNS rebinding.
fn check_host<B>(config: &GuardConfig, request: &HttpRequest<B>) -> Result<(), Refusal> {
    let mut headers = request.headers().get_all(header::HOST).iter();
    let header = headers.next();
    if let Some(second) = headers.next() {
        return Err(host_refusal("several Host headers", second.as_bytes()));
    }
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().as_bytes());
    if header.is_none() && authority.is_none() {
        return Err(host_refusal("no Host header", b""));
    }
    let named = header
        .map(HeaderValue::as_bytes)
        .into_iter()
        .chain(authority);
    for host in named {
        if !config
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(host))
        {
            return Err(host_refusal("a Host that is not this daemon", host));
        }
    }
    Ok(())
}

fn host_refusal(what: &str, offending: &[u8]) -> Refusal {
    let message = format!(
        "The request has {what} ({:?}); open cardd by one of its own addresses \
         (127.0.0.1, localhost or [::1] with its port), or add the name to server.allowed_hosts.",
        truncated(offending)
    );
    Refusal::new(ErrorCode::OriginNotAllowed, message, "Host", offending)
}

/// No `Origin` is fine (not a browser, or a same-origin GET); one that is present must be listed.
fn check_origin(config: &GuardConfig, headers: &HeaderMap) -> Result<Option<HeaderValue>, Refusal> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(None);
    };
    if let Some(second) = origins.next() {
        return Err(origin_refusal(
            "Several Origin headers were sent",
            second.as_bytes(),
        ));
    }
    let value = origin.as_bytes();
    if value.eq_ignore_ascii_case(b"null") {
        let what =
            "Origin null (a sandboxed frame, a file:// page or a redirect) cannot be trusted";
        return Err(origin_refusal(what, value));
    }
    if config
        .allowed_origins
        .iter()
        .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(value))
    {
        Ok(Some(origin.clone()))
    } else {
        let what = format!("Origin {:?} is not allowed to call cardd", truncated(value));
        Err(origin_refusal(&what, value))
    }
}

fn origin_refusal(what: &str, offending: &[u8]) -> Refusal {
    let message = format!("{what}. {}", ErrorCode::OriginNotAllowed.action());
    Refusal::new(ErrorCode::OriginNotAllowed, message, "Origin", offending)
}

/// The CORS (and Private Network Access) preflight: allowed for an allowed origin only; a foreign
/// origin never gets here, [`check_origin`] refused it without any `Access-Control-*` header.
fn preflight(origin: Option<HeaderValue>, request_headers: &HeaderMap) -> HttpResponse {
    let Some(origin) = origin else {
        let message =
            "A CORS preflight must carry an Origin header; only browsers send preflights.";
        return Refusal::new(ErrorCode::OriginNotAllowed, message.into(), "Origin", b"")
            .into_response();
    };
    let mut response = empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    allow_origin(headers, origin);
    let allow = [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, GET, OPTIONS"),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "content-type, authorization",
        ),
        (header::ACCESS_CONTROL_MAX_AGE, "600"),
    ];
    for (name, value) in allow {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let private_network = request_headers.get(REQUEST_PRIVATE_NETWORK);
    if private_network.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true")) {
        headers.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
    }
    response
}

/// Marks a response readable by `origin` (already checked to be allowed). No credentials header:
/// tokens travel in `Authorization`, never in cookies.
fn allow_origin(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Routes by method and path; `None` forwards to jsonrpsee (after lifting the token into the
/// request's extensions), `Some` is the answer.
fn route<B>(config: &GuardConfig, request: &mut HttpRequest<B>) -> Option<HttpResponse> {
    // The same test jsonrpsee uses to decide to upgrade, whatever the method.
    let upgrade = ws::is_upgrade_request(request);
    let (method, path) = (request.method(), request.uri().path());
    if upgrade {
        if path != "/" {
            return Some(not_found(path));
        }
        if method != Method::GET {
            return Some(method_not_allowed(method));
        }
    } else {
        match *method {
            Method::GET if path == "/metrics" && config.metrics.is_some() => {
                return Some(metrics(config))
            }
            Method::GET if path == "/health" => return Some(health(config)),
            Method::GET => {
                let host = request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok());
                return Some(
                    crate::transport::web::asset(path, host).unwrap_or_else(|| not_found(path)),
                );
            }
            Method::POST if path == "/" => {}
            Method::POST => return Some(not_found(path)),
            _ => return Some(method_not_allowed(method)),
        }
    }
    let token = match bearer_token(request, upgrade) {
        Ok(token) => token,
        Err(refusal) => return Some(refusal.into_response()),
    };
    let live = token
        .as_ref()
        .is_some_and(|token| (config.session_is_live)(&token.0));
    if upgrade && !live {
        let message = if token.is_none() {
            "A WebSocket needs a live session: log in over HTTP (auth.login), then connect with \
             ?token=<token> or an Authorization: Bearer <token> header."
        } else {
            "The WebSocket's token names no live session (logged out, expired or never issued): \
             log in again (auth.login) and connect with the new token."
        };
        let refusal = Refusal::new(ErrorCode::Unauthenticated, message.into(), "token", b"");
        return Some(refusal.into_response());
    }
    if live {
        if let Some(connection) = request
            .extensions()
            .get::<crate::transport::connections::ConnectionInfo>()
        {
            connection.mark_authenticated();
        }
    }
    if let Some(token) = token {
        request.extensions_mut().insert(token);
    }
    request.extensions_mut().insert(if upgrade {
        Transport::WebSocket
    } else {
        Transport::Http
    });
    None
}

fn health(config: &GuardConfig) -> HttpResponse {
    json_response(StatusCode::OK, &(config.health)())
}

fn metrics(config: &GuardConfig) -> HttpResponse {
    let body = config.metrics.as_ref().map(|m| m()).unwrap_or_default();
    let mut response = HttpResponse::new(HttpBody::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

fn not_found(path: &str) -> HttpResponse {
    let message = format!(
        "Nothing is served at {:?}; JSON-RPC is POST / or a WebSocket at /, health is GET /health, \
         the teller console GET / and the kiosk screen GET /kiosk.",
        truncated(path.as_bytes())
    );
    Refusal::new(ErrorCode::MethodNotFound, message, "path", path.as_bytes()).into_response()
}

/// 405, which no error code maps to: the code is `InvalidRequest`, the status 405.
fn method_not_allowed(method: &Method) -> HttpResponse {
    let message = format!(
        "HTTP method {:?} is not supported here; send JSON-RPC as POST / or over a WebSocket at /.",
        truncated(method.as_str().as_bytes())
    );
    let mut refusal = Refusal::new(
        ErrorCode::InvalidRequest,
        message,
        "method",
        method.as_str().as_bytes(),
    );
    refusal.status = StatusCode::METHOD_NOT_ALLOWED;
    let mut response = refusal.into_response();
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response
}

/// The token of `Authorization: Bearer <token>`, or on a WebSocket upgrade (where browsers cannot
/// set headers) of `?token=<token>`. A malformed one is refused rather than ignored, so a client
/// bug shows up here and not as a puzzling "not logged in" later.
fn bearer_token<B>(
    request: &HttpRequest<B>,
    upgrade: bool,
) -> Result<Option<BearerToken>, Refusal> {
    let mut headers = request.headers().get_all(header::AUTHORIZATION).iter();
    match (headers.next(), headers.next()) {
        (Some(_), Some(_)) => Err(token_refusal("several Authorization headers were sent")),
        (Some(value), None) => parse_bearer(value)
            .map(Some)
            .ok_or_else(|| token_refusal("the Authorization header is not `Bearer <token>`")),
        (None, _) if upgrade => query_token(request.uri().query().unwrap_or("")),
        (None, _) => Ok(None),
    }
}

fn parse_bearer(value: &HeaderValue) -> Option<BearerToken> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && is_token(token))
        .then(|| BearerToken(token.to_owned()))
}

fn query_token(query: &str) -> Result<Option<BearerToken>, Refusal> {
    let Some(raw) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
    else {
        return Ok(None);
    };
    match percent_decode(raw) {
        Some(token) if is_token(&token) => Ok(Some(BearerToken(token))),
        _ => Err(token_refusal("the token= parameter is empty or malformed")),
    }
}

fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= TOKEN_BYTES_MAX
        && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Decodes `%XX` escapes; `None` when an escape is broken or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
            let hex = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Refuses a malformed token. The log names the problem but never the value: it is a credential.
fn token_refusal(what: &str) -> Refusal {
    let message = format!(
        "The session token is malformed: {what}. {}",
        ErrorCode::Unauthenticated.action()
    );
    Refusal::new(
        ErrorCode::Unauthenticated,
        message,
        "Authorization",
        b"<withheld>",
    )
}

/// Why the guard refuses a request; becomes a JSON-RPC error response with `id: null` and a
/// `warn` log line naming the offending header and its value.
struct Refusal {
    status: StatusCode,
    code: ErrorCode,
    /// What is wrong and what to do, for the client.
    message: String,
    /// The header (or part of the request) at fault.
    header: &'static str,
    /// Its value, cut to [`OFFENDING_CHARS_MAX`] characters; never a credential.
    offending: String,
}

impl Refusal {
    /// A refusal with the HTTP status the error table gives `code`.
    fn new(code: ErrorCode, message: String, header: &'static str, offending: &[u8]) -> Self {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN);
        Self {
            status,
            code,
            message,
            header,
            offending: truncated(offending),
        }
    }

    fn into_response(self) -> HttpResponse {
        let Refusal {
            status,
            code,
            message,
            header,
            offending,
        } = self;
        tracing::warn!(
            status = status.as_u16(),
            code = code.code(),
            header,
            offending = ?offending,
            "refused an HTTP request: {message}"
        );
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "error": { "code": code.code(), "message": message },
            "id": null,
        });
        json_response(status, &body)
    }
}

fn truncated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(OFFENDING_CHARS_MAX).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::empty());
    *response.status_mut() = status;
    response
}

/// jsonrpsee RPC middleware limiting each connection to `requests_per_second`, with bursts of up
/// to `burst` (`RpcServiceBuilder::new().layer(RateLimitLayer::new(..))`).
///
/// Every call, every notification and every entry of a batch takes a token. The buckets are keyed
/// by jsonrpsee's [`ConnectionId`], not kept in the service: jsonrpsee builds one service per
/// WebSocket connection but one per HTTP *request*, so a bucket in the service would never limit
/// a keep-alive HTTP connection. Build one layer per server (connection ids are per server).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    requests_per_second: u32,
    burst: u32,
    buckets: Arc<Mutex<Buckets>>,
}

impl RateLimitLayer {
    /// A limit of `requests_per_second` sustained and `burst` at once, per connection; both ≥ 1.
    pub fn new(requests_per_second: u32, burst: u32) -> Self {
        assert!(
            requests_per_second >= 1,
            "a rate limit of 0 requests per second refuses everything"
        );
        assert!(burst >= 1, "a burst of 0 refuses everything");
        Self {
            requests_per_second,
            burst,
            buckets: Arc::default(),
        }
    }

    /// Takes up to `wanted` tokens from the connection's bucket; returns how many it got.
    fn take(&self, connection: Option<ConnectionId>, wanted: u32) -> u32 {
        let now = Instant::now();
        let (granted, newly_limited) = {
            let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            let (rate, burst) = (self.requests_per_second, self.burst);
            buckets.make_room(connection, now, rate, burst);
            let bucket = buckets
                .by_connection
                .entry(connection)
                .or_insert_with(|| TokenBucket::full(burst, now));
            bucket.take(wanted, now, rate, burst)
        };
        if newly_limited {
            tracing::warn!(
                connection = ?connection.map(|id| id.0),
                requests_per_second = self.requests_per_second,
                burst = self.burst,
                "a connection exceeds its request rate; refusing its excess requests"
            );
        }
        granted
    }

    fn refusal(&self) -> ErrorObjectOwned {
        let message = format!(
            "This connection sent requests faster than {} per second (bursts of {}). {}",
            self.requests_per_second,
            self.burst,
            ErrorCode::RateLimited.action()
        );
        ErrorObject::owned(ErrorCode::RateLimited.code(), message, None::<()>)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limit: self.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limit: RateLimitLayer,
}

impl<S> RpcServiceT for RateLimit<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        if self.limit.take(connection_of(request.extensions()), 1) == 1 {
            ResponseFuture::future(self.inner.call(request))
        } else {
            let response = MethodResponse::error(request.id, self.limit.refusal());
            ResponseFuture::ready(response.with_extensions(request.extensions))
        }
    }

    /// Each entry takes a token; calls beyond the limit are answered with the rate-limit error in
    /// their place in the batch, notifications beyond it are dropped (they get no answer anyway).
    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let entries = batch.iter().filter(|entry| entry.is_ok()).count();
        let connection = batch
            .iter()
            .find_map(|entry| entry.as_ref().ok())
            .and_then(|entry| connection_of(entry.extensions()));
        let wanted = u32::try_from(entries).unwrap_or(u32::MAX);
        let mut granted = self.limit.take(connection, wanted);
        if granted == wanted {
            return ResponseFuture::future(self.inner.batch(batch));
        }
        let mut kept = Vec::with_capacity(entries);
        for entry in batch {
            match entry {
                Ok(_) if granted > 0 => {
                    granted -= 1;
                    kept.push(entry);
                }
                Ok(BatchEntry::Call(request)) => {
                    kept.push(Err(BatchEntryErr::new(request.id, self.limit.refusal())));
                }
                Ok(BatchEntry::Notification(_)) => {}
                Err(_) => kept.push(entry),
            }
        }
        if kept.is_empty() {
            return ResponseFuture::ready(MethodResponse::notification());
        }
        ResponseFuture::future(self.inner.batch(Batch::from(kept)))
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        if self.limit.take(connection_of(notification.extensions()), 1) == 1 {
            ResponseFuture::future(self.inner.notification(notification))
        } else {
            ResponseFuture::ready(
                MethodResponse::notification().with_extensions(notification.extensions),
            )
        }
    }
}

/// jsonrpsee puts the connection's id into every request's extensions. Requests without one (the
/// middleware used outside jsonrpsee's server) share a single bucket.
fn connection_of(extensions: &http::Extensions) -> Option<ConnectionId> {
    extensions.get::<ConnectionId>().copied()
}

/// The buckets of the connections seen lately.
#[derive(Debug, Default)]
struct Buckets {
    by_connection: HashMap<Option<ConnectionId>, TokenBucket>,
}

impl Buckets {
    /// Bounds the map before a new connection's bucket goes in. A bucket that has refilled is the
    /// same as no bucket, so those go first (closed connections end up there); if the map is still
    /// full, everything goes: that only forgives debts a client could as well escape by opening a
    /// new connection.
    fn make_room(&mut self, connection: Option<ConnectionId>, now: Instant, rate: u32, burst: u32) {
        if self.by_connection.len() < BUCKETS_MAX || self.by_connection.contains_key(&connection) {
            return;
        }
        self.by_connection
            .retain(|_, bucket| !bucket.is_full(now, rate, burst));
        if self.by_connection.len() >= BUCKETS_MAX {
            self.by_connection.clear();
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
    /// Whether the last request was refused, so the warning is logged once per episode.
    limited: bool,
}

impl TokenBucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            refilled_at: now,
            limited: false,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.refilled_at = now;
    }

    fn is_full(&self, now: Instant, rate: u32, burst: u32) -> bool {
        let mut bucket = *self;
        bucket.refill(now, rate, burst);
        bucket.tokens >= f64::from(burst)
    }

    /// Takes up to `wanted` whole tokens; returns how many, and whether this starts a refusal episode.
    fn take(&mut self, wanted: u32, now: Instant, rate: u32, burst: u32) -> (u32, bool) {
        self.refill(now, rate, burst);
        // `tokens` is within 0..=burst, so the cast cannot truncate.
        let granted = (self.tokens.floor() as u32).min(wanted);
        self.tokens -= f64::from(granted);
        debug_assert!(self.tokens >= 0.0 && self.tokens <= f64::from(burst));
        let refused = granted < wanted;
        let newly_limited = refused && !self.limited;
        self.limited = refused;
        (granted, newly_limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonrpsee::core::client::{ClientT, Error as ClientError};
    use jsonrpsee::core::params::BatchRequestBuilder;
    use jsonrpsee::rpc_params;
    use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
    use jsonrpsee::server::{RpcModule, Server, ServerHandle};
    use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    const EVIL: &str = "https://evil.example";

    /// A jsonrpsee server behind the guard and the rate limit, with one method, `ping`, that
    /// answers the [`BearerToken`] it finds in its extensions.
    struct Daemon {
        addr: SocketAddr,
        _handle: ServerHandle,
    }

    impl Daemon {
        async fn start(requests_per_second: u32, burst: u32) -> Daemon {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let config = GuardConfig {
                allowed_hosts: loopback_hosts(addr.port()),
                allowed_origins: default_origins(addr.port()),
                health: Arc::new(|| serde_json::json!({ "status": "ok", "readers": 0 })),
                metrics: None,
                session_is_live: Arc::new(|token| !token.starts_with("dead")),
            };
            let server = Server::builder()
                .set_http_middleware(
                    tower::ServiceBuilder::new().layer(GuardLayer::new(Arc::new(config))),
                )
                .set_rpc_middleware(
                    RpcServiceBuilder::new().layer(RateLimitLayer::new(requests_per_second, burst)),
                )
                .build_from_tcp(listener)
                .unwrap();
            let mut module = RpcModule::new(());
            module
                .register_method("ping", |_, _, extensions| {
                    extensions.get::<BearerToken>().map(|token| token.0.clone())
                })
                .unwrap();
            module
                .register_method("origin", |_, _, extensions| {
                    extensions
                        .get::<ClientOrigin>()
                        .map(|origin| origin.0.clone())
                })
                .unwrap();
            Daemon {
                addr,
                _handle: server.start(module),
            }
        }

        /// Generous limits, for the tests that are not about them.
        async fn unlimited() -> Daemon {
            Daemon::start(10_000, 10_000).await
        }

        fn host(&self) -> String {
            format!("127.0.0.1:{}", self.addr.port())
        }

        fn origin(&self) -> String {
            format!("http://localhost:{}", self.addr.port())
        }

        async fn send(&self, request: &str) -> Reply {
            let mut stream = TcpStream::connect(self.addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            read_reply(&mut stream).await
        }

        /// `POST /` of `body` with the given extra headers, `Connection: close`.
        async fn post(&self, headers: &[(&str, &str)], body: &str) -> Reply {
            let mut all = vec![
                ("Host", self.host()),
                ("Content-Type", "application/json".to_owned()),
            ];
            all.extend(
                headers
                    .iter()
                    .map(|(name, value)| (*name, value.to_string())),
            );
            self.send(&request("POST", "/", &all, body)).await
        }

        async fn upgrade(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
            let mut all = vec![
                ("Host", self.host()),
                ("Connection", "Upgrade".to_owned()),
                ("Upgrade", "websocket".to_owned()),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
                ("Sec-WebSocket-Version", "13".to_owned()),
            ];
            all.extend(
                headers
                    .iter()
                    .map(|(name, value)| (*name, value.to_string())),
            );
            self.send(&request("GET", target, &all, "")).await
        }

        async fn ws(&self, query: &str) -> WsClient {
            WsClientBuilder::default()
                .build(format!("ws://{}/{query}", self.host()))
                .await
                .unwrap()
        }
    }

    fn request(method: &str, target: &str, headers: &[(&str, String)], body: &str) -> String {
        let mut text = format!("{method} {target} HTTP/1.1\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        let upgrade = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
        if !upgrade {
            text.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                body.len()
            ));
        }
        text.push_str("\r\n");
        text.push_str(body);
        text
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
        }

        /// The JSON-RPC error code of a refusal, after checking the refusal's shape.
        fn refusal_code(&self) -> i64 {
            assert_eq!(
                self.header("content-type"),
                Some("application/json"),
                "{self:?}"
            );
            let body = self.json();
            assert_eq!(body["jsonrpc"], "2.0", "{self:?}");
            assert_eq!(body["id"], serde_json::Value::Null, "{self:?}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.len() > 20),
                "{self:?}"
            );
            body["error"]["code"].as_i64().unwrap()
        }

        fn has_no_cors(&self) -> bool {
            !self
                .headers
                .iter()
                .any(|(name, _)| name.starts_with("access-control-"))
        }
    }

    /// Reads one HTTP/1.1 response: status line, headers, and a body framed by Content-Length,
    /// chunked, or the end of the stream; a 101 or 204 has none.
    async fn read_reply(stream: &mut TcpStream) -> Reply {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        if status == 101 || status == 204 {
            return reply;
        }
        if let Some(length) = reply.header("content-length") {
            let mut body = vec![0; length.parse().unwrap()];
            reader.read_exact(&mut body).await.unwrap();
            reply.body = String::from_utf8(body).unwrap();
        } else if reply.header("transfer-encoding") == Some("chunked") {
            loop {
                line.clear();
                reader.read_line(&mut line).await.unwrap();
                let size = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                reply
                    .body
                    .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
            }
        } else {
            reader.read_to_string(&mut reply.body).await.unwrap();
        }
        reply
    }

    fn rate_limited(result: Result<Option<String>, ClientError>) -> bool {
        matches!(result, Err(ClientError::Call(e)) if e.code() == ErrorCode::RateLimited.code())
    }

    #[tokio::test]
    async fn allowed_host_is_answered() {
        let daemon = Daemon::unlimited().await;
        let reply = daemon.post(&[], PING).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["result"], serde_json::Value::Null);
        assert!(reply.has_no_cors(), "{reply:?}");

        let upper = format!("LOCALHOST:{}", daemon.addr.port());
        let reply = daemon
            .send(&request(
                "POST",
                "/",
                &[("Host", upper), ("Content-Type", "application/json".into())],
                PING,
            ))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    #[tokio::test]
    async fn forged_host_is_refused() {
        let daemon = Daemon::unlimited().await;
        let json = ("Content-Type", "application/json".to_owned());
        for host in [
            "evil.example".to_owned(),
            format!("evil.example:{}", daemon.addr.port()),
            "127.0.0.1".to_owned(),
        ] {
            let reply = daemon
                .send(&request("POST", "/", &[("Host", host), json.clone()], PING))
                .await;
            assert_eq!(reply.status, 403, "{reply:?}");
            assert_eq!(
                reply.refusal_code(),
                i64::from(ErrorCode::OriginNotAllowed.code())
            );
        }
        // The absolute form names a host of its own, which must be allowed too.
        let target = "http://evil.example/";
        let reply = daemon
            .send(&request(
                "POST",
                target,
                &[("Host", daemon.host()), json.clone()],
                PING,
            ))
            .await;
        assert_eq!(reply.status, 403, "{reply:?}");
        let reply = daemon.send(&request("POST", "/", &[json], PING)).await;
        assert_eq!(reply.status, 403, "a request without Host: {reply:?}");
    }

    #[tokio::test]
    async fn foreign_origin_post_is_refused() {
        let daemon = Daemon::unlimited().await;
        let lookalike = format!("http://localhost:{}", daemon.addr.port() ^ 1);
        for origin in [EVIL, "null", &lookalike, &format!("{}/", daemon.origin())] {
            let reply = daemon.post(&[("Origin", origin)], PING).await;
            assert_eq!(reply.status, 403, "{origin}: {reply:?}");
            assert_eq!(
                reply.refusal_code(),
                i64::from(ErrorCode::OriginNotAllowed.code())
            );
            assert!(reply.has_no_cors(), "{reply:?}");
        }
    }

    #[tokio::test]
    async fn allowed_origin_post_is_answered_for_that_origin() {
        let daemon = Daemon::unlimited().await;
        let origin = daemon.origin();
        let reply = daemon
            .post(
                &[("Origin", &origin), ("Authorization", "Bearer s3cret")],
                PING,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.json()["result"],
            "s3cret",
            "the token reaches the method over HTTP"
        );
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(origin.as_str())
        );
        assert_eq!(reply.header("vary"), Some("Origin"));
        assert_eq!(reply.header("access-control-allow-credentials"), None);
        assert!(
            !reply.headers.iter().any(|(_, value)| value.contains('*')),
            "{reply:?}"
        );

        let call = r#"{"jsonrpc":"2.0","id":1,"method":"origin"}"#;
        let reply = daemon.post(&[("Origin", &origin)], call).await;
        assert_eq!(
            reply.json()["result"],
            origin.as_str(),
            "the origin reaches the method"
        );
        let reply = daemon.post(&[], call).await;
        assert_eq!(
            reply.json()["result"],
            serde_json::Value::Null,
            "no Origin, no ClientOrigin"
        );

        let upper = origin.to_ascii_uppercase();
        let reply = daemon.post(&[("Origin", &upper)], PING).await;
        assert_eq!(
            reply.status, 200,
            "scheme and host compare ignoring case: {reply:?}"
        );
    }

    #[tokio::test]
    async fn malformed_authorization_is_refused() {
        let daemon = Daemon::unlimited().await;
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "s3cret"] {
            let reply = daemon.post(&[("Authorization", value)], PING).await;
            assert_eq!(reply.status, 401, "{value:?}: {reply:?}");
            assert_eq!(
                reply.refusal_code(),
                i64::from(ErrorCode::Unauthenticated.code())
            );
            assert!(
                !reply.body.contains("dXNlcjpwYXNz"),
                "the credential is not echoed: {reply:?}"
            );
        }
    }

    #[tokio::test]
    async fn preflight_from_an_allowed_origin() {
        let daemon = Daemon::unlimited().await;
        let origin = daemon.origin();
        let preflight = |private_network: bool| {
            let mut headers = vec![
                ("Host", daemon.host()),
                ("Origin", origin.clone()),
                ("Access-Control-Request-Method", "POST".to_owned()),
                (
                    "Access-Control-Request-Headers",
                    "content-type, authorization".to_owned(),
                ),
            ];
            if private_network {
                headers.push(("Access-Control-Request-Private-Network", "true".to_owned()));
            }
            request("OPTIONS", "/", &headers, "")
        };
        for private_network in [false, true] {
            let reply = daemon.send(&preflight(private_network)).await;
            assert_eq!(reply.status, 204, "{reply:?}");
            assert_eq!(
                reply.header("access-control-allow-origin"),
                Some(origin.as_str())
            );
            assert_eq!(
                reply.header("access-control-allow-methods"),
                Some("POST, GET, OPTIONS")
            );
            assert_eq!(
                reply.header("access-control-allow-headers"),
                Some("content-type, authorization")
            );
            assert_eq!(reply.header("access-control-max-age"), Some("600"));
            assert_eq!(reply.header("vary"), Some("Origin"));
            let expected = private_network.then_some("true");
            assert_eq!(
                reply.header("access-control-allow-private-network"),
                expected,
                "{reply:?}"
            );
            assert_eq!(reply.header("access-control-allow-credentials"), None);
        }
    }

    #[tokio::test]
    async fn preflight_from_a_foreign_origin_gets_no_cors_headers() {
        let daemon = Daemon::unlimited().await;
        let headers = [
            ("Host", daemon.host()),
            ("Origin", EVIL.to_owned()),
            ("Access-Control-Request-Method", "POST".to_owned()),
            ("Access-Control-Request-Private-Network", "true".to_owned()),
        ];
        let reply = daemon.send(&request("OPTIONS", "/", &headers, "")).await;
        assert_eq!(reply.status, 403, "{reply:?}");
        assert_eq!(
            reply.refusal_code(),
            i64::from(ErrorCode::OriginNotAllowed.code())
        );
        assert!(reply.has_no_cors(), "{reply:?}");
    }

    #[tokio::test]
    async fn text_plain_post_is_refused_by_jsonrpsee() {
        let daemon = Daemon::unlimited().await;
        let headers = [
            ("Host", daemon.host()),
            ("Content-Type", "text/plain".to_owned()),
        ];
        let reply = daemon.send(&request("POST", "/", &headers, PING)).await;
        assert_eq!(reply.status, 415, "{reply:?}");
    }

    #[tokio::test]
    async fn websocket_upgrade_checks_origin_and_token() {
        let daemon = Daemon::unlimited().await;
        let origin = daemon.origin();

        let reply = daemon.upgrade("/", &[("Origin", EVIL)]).await;
        assert_eq!(reply.status, 403, "foreign origin: {reply:?}");
        assert_eq!(
            reply.refusal_code(),
            i64::from(ErrorCode::OriginNotAllowed.code())
        );

        for (target, headers) in [
            ("/", vec![]),
            ("/", vec![("Origin", origin.as_str())]),
            ("/?token=dead1", vec![]),
            ("/?token=dead2", vec![("Origin", origin.as_str())]),
            ("/", vec![("Authorization", "Bearer dead3")]),
        ] {
            let reply = daemon.upgrade(target, &headers).await;
            assert_eq!(
                reply.status, 401,
                "no live session, {target} {headers:?}: {reply:?}"
            );
            assert_eq!(
                reply.refusal_code(),
                i64::from(ErrorCode::Unauthenticated.code())
            );
        }

        let reply = daemon.upgrade("/?token=abc", &[("Origin", &origin)]).await;
        assert_eq!(reply.status, 101, "allowed origin and a session: {reply:?}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(origin.as_str())
        );

        let reply = daemon.upgrade("/?token=abc", &[]).await;
        assert_eq!(reply.status, 101, "token, no origin: {reply:?}");
        let reply = daemon
            .upgrade("/", &[("Authorization", "Bearer abc")])
            .await;
        assert_eq!(reply.status, 101, "token header, no origin: {reply:?}");

        let reply = daemon.upgrade("/?token=", &[]).await;
        assert_eq!(reply.status, 401, "empty token: {reply:?}");
        let reply = daemon.upgrade("/elsewhere?token=abc", &[]).await;
        assert_eq!(reply.status, 404, "{reply:?}");
    }

    #[tokio::test]
    async fn websocket_token_reaches_the_method() {
        let daemon = Daemon::unlimited().await;
        let client = daemon.ws("?token=a%62c").await;
        let token: Option<String> = client.request("ping", rpc_params![]).await.unwrap();
        assert_eq!(token.as_deref(), Some("abc"));
    }

    #[tokio::test]
    async fn health_needs_no_token() {
        let daemon = Daemon::unlimited().await;
        let reply = daemon
            .send(&request("GET", "/health", &[("Host", daemon.host())], ""))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.json(),
            serde_json::json!({ "status": "ok", "readers": 0 })
        );

        let reply = daemon
            .send(&request(
                "GET",
                "/health",
                &[("Host", "evil.example".into())],
                "",
            ))
            .await;
        assert_eq!(reply.status, 403, "Host is checked first: {reply:?}");
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let daemon = Daemon::unlimited().await;
        for (method, target, status, code) in [
            ("GET", "/nope", 404, ErrorCode::MethodNotFound),
            ("GET", "/web/nope.js", 404, ErrorCode::MethodNotFound),
            ("POST", "/nope", 404, ErrorCode::MethodNotFound),
            ("PUT", "/", 405, ErrorCode::InvalidRequest),
            ("DELETE", "/health", 405, ErrorCode::InvalidRequest),
            ("OPTIONS", "/", 405, ErrorCode::InvalidRequest),
        ] {
            let headers = [
                ("Host", daemon.host()),
                ("Content-Type", "application/json".to_owned()),
            ];
            let reply = daemon.send(&request(method, target, &headers, "")).await;
            assert_eq!(reply.status, status, "{method} {target}: {reply:?}");
            assert_eq!(
                reply.refusal_code(),
                i64::from(code.code()),
                "{method} {target}"
            );
        }
    }

    #[tokio::test]
    async fn rate_limit_trips_on_a_websocket_and_recovers() {
        // Two tokens a second: the burst of three is spent long before the next token is due.
        let daemon = Daemon::start(2, 3).await;
        let client = daemon.ws("?token=abc").await;
        let other = daemon.ws("?token=def").await;
        for _ in 0..3 {
            assert_eq!(
                client.request("ping", rpc_params![]).await.ok(),
                Some(Some("abc".to_owned()))
            );
        }
        assert!(rate_limited(client.request("ping", rpc_params![]).await));

        let answer: Option<String> = other.request("ping", rpc_params![]).await.unwrap();
        assert_eq!(
            answer.as_deref(),
            Some("def"),
            "another connection has its own bucket"
        );

        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(client
            .request::<Option<String>, _>("ping", rpc_params![])
            .await
            .is_ok());
        assert!(rate_limited(client.request("ping", rpc_params![]).await));
    }

    #[tokio::test]
    async fn batches_and_notifications_take_tokens() {
        let daemon = Daemon::start(1, 3).await;
        let client = daemon.ws("?token=abc").await;
        client.notification("ping", rpc_params![]).await.unwrap();
        let mut batch = BatchRequestBuilder::new();
        for _ in 0..4 {
            batch.insert("ping", rpc_params![]).unwrap();
        }
        let answers = client.batch_request::<Option<String>>(batch).await.unwrap();
        let limited = answers
            .iter()
            .filter(|a| matches!(a, Err(e) if e.code() == ErrorCode::RateLimited.code()))
            .count();
        assert_eq!(
            (answers.num_successful_calls(), limited),
            (2, 2),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn rate_limit_holds_across_requests_of_one_http_connection() {
        let daemon = Daemon::start(1, 2).await;
        let mut stream = TcpStream::connect(daemon.addr).await.unwrap();
        let keep_alive = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{PING}",
            daemon.host(),
            PING.len()
        );
        let mut codes = Vec::new();
        for _ in 0..3 {
            stream.write_all(keep_alive.as_bytes()).await.unwrap();
            let reply = read_reply(&mut stream).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            codes.push(reply.json()["error"]["code"].as_i64());
        }
        assert_eq!(
            codes,
            [None, None, Some(i64::from(ErrorCode::RateLimited.code()))]
        );
        let reply = daemon.post(&[], PING).await;
        assert_eq!(
            reply.json()["result"],
            serde_json::Value::Null,
            "a new connection: {reply:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_refills_at_the_rate_up_to_the_burst() {
        let (rate, burst) = (2, 5);
        let mut bucket = TokenBucket::full(burst, Instant::now());
        assert_eq!(bucket.take(4, Instant::now(), rate, burst), (4, false));
        assert_eq!(
            bucket.take(3, Instant::now(), rate, burst),
            (1, true),
            "one left"
        );
        assert_eq!(
            bucket.take(1, Instant::now(), rate, burst),
            (0, false),
            "warned once"
        );
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(bucket.take(1, Instant::now(), rate, burst).0, 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(bucket.take(1, Instant::now(), rate, burst), (1, false));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(bucket.is_full(Instant::now(), rate, burst));
        assert_eq!(
            bucket.take(9, Instant::now(), rate, burst),
            (5, true),
            "capped at the burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_make_room_for_new_connections() {
        let limit = RateLimitLayer::new(1, 1);
        for id in 0..BUCKETS_MAX {
            assert_eq!(limit.take(Some(ConnectionId(id)), 1), 1);
        }
        assert_eq!(limit.take(Some(ConnectionId(0)), 1), 0, "still in debt");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.take(Some(ConnectionId(BUCKETS_MAX)), 1), 1);
        let buckets = limit.buckets.lock().unwrap();
        assert_eq!(
            buckets.by_connection.len(),
            1,
            "the refilled buckets were dropped"
        );
    }

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(""), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(r#"{"a":"[[[[\"{{"}"#), 1);
        assert_eq!(json_depth(&"[".repeat(100)), 100);
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("a%2Fb%3d"), Some("a/b=".to_owned()));
        assert_eq!(percent_decode("%+f"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(
            truncated("é".repeat(150).as_bytes()).chars().count(),
            OFFENDING_CHARS_MAX + 1
        );
        assert_eq!(
            format!("{:?}", BearerToken("s3cret".into())),
            "BearerToken(<6 bytes>)"
        );
        assert_eq!(default_origins(7420)[2], "http://[::1]:7420");
        for code in [
            ErrorCode::OriginNotAllowed,
            ErrorCode::Unauthenticated,
            ErrorCode::MethodNotFound,
        ] {
            assert!(StatusCode::from_u16(code.http_status()).is_ok());
        }
    }
}
