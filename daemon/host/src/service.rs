//! The host's load service on the network: HTTPS with mutual TLS, one site per client
//! certificate, the two load methods of [`crate::wire`].
//!
//! Every connection is a TLS 1.3 handshake that requires a client certificate of the fleet CA
//! (`cardd_fleet::host_server_config`); then the site is admitted through the host's
//! [`SiteDirectory`] (known, enabled, presenting the certificate issued to it last), before any
//! request is read. A refused site's connection is closed without an answer. Requests are
//! JSON-RPC over `POST /`, bounded in size; the authority's work (store and keys, both
//! blocking) runs off the async threads.
//!
//! **Connections are kept** (HTTP/1.1 keep-alive), bounded: at most
//! [`REQUESTS_PER_CONNECTION_MAX`] requests (the last answer says `Connection: close`) and
//! [`IDLE_CONNECTION_TIMEOUT_S`] without a request. **Every request is admitted again**, so a
//! site disabled (or re-issued) at the host, by any process, is refused at its very next
//! request on a connection opened before: the load steps check the caller in their own
//! serializable transaction when the authority's log keeps the directory
//! (`AuthorizationLog::admits_callers`; `cardd_store_pg::PgLedger` does, at no extra
//! transaction) and are refused as loads; every other request asks the directory first and
//! is answered with [`CODE_SITE_REFUSED`], after which its connection is closed. Besides the load methods the service serves the
//! record methods (`records.*`, the recharge records) and the group methods (`groups.*`:
//! groups, quotas, orders, top-ups, batches), each store call on a thread of its own, and the
//! operator methods (`operators.verify`, `operators.status`: the fleet's operators, whose
//! passwords are checked here and never leave the host), and the sites' reports
//! (`sites.report`: alive, and what waits in their outboxes).

use std::sync::Arc;
use std::time::Duration;

use cardd_authority::{Authority, AuthorizeRequest, Caller, ConfirmRequest};
use cardd_fleet::{SiteDirectory, SiteId, SitePeer};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use cardd_etc::IssuerHost;
use cardd_group::GroupHost;
use cardd_hostlink::groups::{group_refusal, serve_group_call};
use cardd_hostlink::records::{record_refusal, serve_record_call};
use cardd_hostlink::wire::{
    GroupCall, OpenLoadsParams, RecordCall, SiteReport, StatusAnswer, StatusParams, VerifyParams,
    CODE_GROUPS, CODE_OPERATORS, CODE_RECORDS, CODE_SITES, GROUPS_PREFIX, OPEN_LOADS,
    OPERATORS_STATUS, OPERATORS_VERIFY, RECORDS_PREFIX, SITES_REPORT,
};
use cardd_journal::crash::crash_point;

use crate::wire::{
    Refusal, Request, Response, RpcError, AUTHORIZE, BODY_BYTES_MAX, CODE_BAD_REQUEST,
    CODE_NO_METHOD, CODE_REFUSED, CONFIRM,
};

/// The host's crash points (`CARDD_CRASH_AT`, with the `crashpoints` feature only), in the order
/// a load passes them: the host killed before and after each of its two commits. The fleet's
/// kill test walks this list.
pub const HOST_CRASH_POINTS: &[&str] = &[
    "host.authorize.before",
    "host.authorize.after_commit",
    "host.confirm.before",
    "host.confirm.after_commit",
];

/// How long a client has to complete the TLS handshake and the directory check, in seconds.
pub const HANDSHAKE_TIMEOUT_S: u64 = 10;

/// Most connections served at once.
pub const CONNECTIONS_MAX: usize = 256;

/// Most requests served on one connection (the last answer closes it).
pub const REQUESTS_PER_CONNECTION_MAX: u64 = 10_000;

/// How long a connection may stay without a request before the host closes it, in seconds
/// (longer than a site keeps an idle connection, `cardd_hostlink::link::IDLE_TIMEOUT_S`, so
/// a site rarely sends on a connection the host is closing).
pub const IDLE_CONNECTION_TIMEOUT_S: u64 = 60;

pub use cardd_hostlink::wire::CODE_SITE_REFUSED;

/// What the service needs.
pub struct HostService {
    pub tls: Arc<rustls::ServerConfig>,
    pub directory: Arc<dyn SiteDirectory>,
    pub authority: Arc<Authority>,
    /// The recharge records the sites read and change (`records.*`).
    pub records: Arc<dyn IssuerHost>,
    /// The groups, quotas, orders and top-ups the sites read and change (`groups.*`).
    pub groups: Arc<dyn GroupHost>,
    /// The fleet's operators (`operators.verify`, `operators.status`; `None`: not served, for
    /// tests of other things).
    pub operators: Option<Arc<cardd_store_pg::PgOperators>>,
    /// Where every change a site asks of the records and groups is recorded before it is made
    /// (`None`: not recorded, for tests of other things).
    pub audit: Option<Arc<cardd_store_pg::PgAudit>>,
    /// Where the sites' reports (`sites.report`: alive, outbox length) are kept (`None`: not
    /// kept, for tests of other things).
    pub reports: Option<Arc<cardd_store_pg::PgSites>>,
}

impl std::fmt::Debug for HostService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostService")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl HostService {
    /// Serves `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = TlsAcceptor::from(self.tls.clone());
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
                tracing::warn!(%peer, "connection refused: {CONNECTIONS_MAX} connections open");
                continue;
            };
            let (me, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let _slot = slot;
                me.connection(acceptor, socket, peer).await;
            });
        }
    }

    async fn connection(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        socket: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
    ) {
        let admitted = tokio::time::timeout(Duration::from_secs(HANDSHAKE_TIMEOUT_S), async {
            let tls = acceptor.accept(socket).await.map_err(|e| e.to_string())?;
            let peer =
                SitePeer::of(tls.get_ref().1.peer_certificates()).map_err(|e| e.to_string())?;
            let entry = self
                .directory
                .site(&peer.site_id)
                .await
                .map_err(|e| e.to_string())?;
            peer.clone().admit(entry).map_err(|e| e.to_string())?;
            Ok::<_, String>((tls, peer))
        })
        .await;
        let (tls, site_peer) = match admitted {
            Ok(Ok(admitted)) => admitted,
            Ok(Err(why)) => {
                tracing::warn!(%peer, %why, "site refused");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "site refused: no handshake in time");
                return;
            }
        };
        let peer_site = Arc::new(site_peer);
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let in_flight = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let idle_since = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        let me = self.clone();
        let (flight, idle) = (in_flight.clone(), idle_since.clone());
        let service = hyper::service::service_fn(move |request| {
            let (me, site, served, flight, idle) = (
                me.clone(),
                peer_site.clone(),
                served.clone(),
                flight.clone(),
                idle.clone(),
            );
            async move {
                flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let (mut response, keep) = me.answer(&site, request).await;
                if !keep || n >= REQUESTS_PER_CONNECTION_MAX {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                *idle.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let idle_for = Duration::from_secs(IDLE_CONNECTION_TIMEOUT_S);
        let mut closing = false;
        loop {
            let last = *idle_since.lock().unwrap_or_else(|p| p.into_inner());
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(last + idle_for), if !closing => {
                    let now_idle = in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
                        && *idle_since.lock().unwrap_or_else(|p| p.into_inner()) + idle_for
                            <= tokio::time::Instant::now();
                    if now_idle {
                        // Closes the connection once no request is in flight.
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    } else if in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                        // A request still running is activity: look again an idle time later.
                        *idle_since.lock().unwrap_or_else(|p| p.into_inner()) =
                            tokio::time::Instant::now();
                    }
                }
            }
        }
    }

    /// Whether the directory still admits `peer` (enabled, with the certificate it presented).
    async fn readmit(&self, peer: &SitePeer) -> Result<(), cardd_fleet::AccessError> {
        let entry = self.directory.site(&peer.site_id).await?;
        peer.clone().admit(entry).map(|_| ())
    }

    /// The answer to a request of the connection's `peer`, and whether the connection may
    /// serve another one: the site is admitted again before anything is done (see the
    /// module's doc).
    async fn answer(
        &self,
        peer: &SitePeer,
        request: HttpRequest<Incoming>,
    ) -> (HttpResponse<Full<Bytes>>, bool) {
        if request.method() != Method::POST {
            return (reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()), true);
        }
        let body = match Limited::new(request.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return (reply(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new()), false),
        };
        let head: Request<serde_json::Value> = match serde_json::from_slice(&body) {
            Ok(head) => head,
            Err(e) => {
                return (
                    json(&error::<()>(0, CODE_BAD_REQUEST, e.to_string(), None)),
                    true,
                );
            }
        };
        let load_step = matches!(head.method.as_str(), AUTHORIZE | CONFIRM);
        if !(load_step && self.authority.admits_callers()) {
            if let Err(why) = self.readmit(peer).await {
                tracing::warn!(site = %peer.site_id, %why, "request refused: the site is no longer admitted");
                return (
                    json(&error::<()>(
                        head.id,
                        CODE_SITE_REFUSED,
                        why.to_string(),
                        None,
                    )),
                    false,
                );
            }
        }
        (self.dispatch(peer, head).await, true)
    }

    /// Runs an admitted request.
    async fn dispatch(
        &self,
        peer: &SitePeer,
        head: Request<serde_json::Value>,
    ) -> HttpResponse<Full<Bytes>> {
        let authority = self.authority.clone();
        let site = peer.site_id.clone();
        let certificate = peer.fingerprint.to_string();
        match head.method.as_str() {
            AUTHORIZE => {
                call(head, move |p: AuthorizeRequest| {
                    tracing::info!(site = %site, txn = %p.txn_id, "load authorisation asked");
                    crash_point(HOST_CRASH_POINTS[0]);
                    let caller = Caller {
                        site: site.as_str(),
                        certificate: Some(&certificate),
                    };
                    let answer = authority.authorize_by(&caller, &p);
                    crash_point(HOST_CRASH_POINTS[1]);
                    answer
                })
                .await
            }
            CONFIRM => {
                call(head, move |p: ConfirmRequest| {
                    crash_point(HOST_CRASH_POINTS[2]);
                    let caller = Caller {
                        site: site.as_str(),
                        certificate: Some(&certificate),
                    };
                    let answer = authority.confirm_by(&caller, &p);
                    crash_point(HOST_CRASH_POINTS[3]);
                    answer
                })
                .await
            }
            OPEN_LOADS => {
                call(head, move |p: OpenLoadsParams| {
                    authority.open_loads(&p.card_number)
                })
                .await
            }
            other if other.starts_with(RECORDS_PREFIX) => {
                let call = match RecordCall::join(other, head.params) {
                    Ok(call) => call,
                    Err(e) => {
                        return json(&error::<()>(
                            head.id,
                            CODE_BAD_REQUEST,
                            format!("{other}: {e}"),
                            None,
                        ))
                    }
                };
                let store = self.records.clone();
                let audited = self.audit_first(&site, record_audit(&site, &call));
                store_call(head.id, site, "host-records", move || {
                    audited().map_err(|message| {
                        let e = cardd_etc::HostError::Database(message);
                        (false, CODE_RECORDS, e.to_string(), record_refusal(&e))
                    })?;
                    serve_record_call(store.as_ref(), call).map_err(|e| {
                        (
                            e.is_refusal(),
                            CODE_RECORDS,
                            e.to_string(),
                            record_refusal(&e),
                        )
                    })
                })
                .await
            }
            other if other.starts_with(GROUPS_PREFIX) => {
                let call = match GroupCall::join(other, head.params) {
                    Ok(call) => call,
                    Err(e) => {
                        return json(&error::<()>(
                            head.id,
                            CODE_BAD_REQUEST,
                            format!("{other}: {e}"),
                            None,
                        ))
                    }
                };
                let store = self.groups.clone();
                let audited = self.audit_first(&site, group_audit(&site, &call));
                store_call(head.id, site, "host-groups", move || {
                    audited().map_err(|message| {
                        let e = cardd_group::GroupError::Storage(message);
                        (false, CODE_GROUPS, e.to_string(), group_refusal(&e))
                    })?;
                    serve_group_call(store.as_ref(), call).map_err(|e| {
                        (
                            e.is_refusal(),
                            CODE_GROUPS,
                            e.to_string(),
                            group_refusal(&e),
                        )
                    })
                })
                .await
            }
            OPERATORS_VERIFY | OPERATORS_STATUS => self.operators_call(head, site).await,
            SITES_REPORT => {
                let params: SiteReport = match serde_json::from_value(head.params) {
                    Ok(p) => p,
                    Err(e) => {
                        return json(&error::<()>(head.id, CODE_BAD_REQUEST, e.to_string(), None))
                    }
                };
                let Some(sites) = self.reports.clone() else {
                    return json(&Response {
                        jsonrpc: "2.0".into(),
                        id: head.id,
                        result: Some(serde_json::json!({})),
                        error: None,
                    });
                };
                let who = site.clone();
                store_call(head.id, site, "host-sites", move || {
                    sites.report(&who, params.outbox_pending).map_err(|e| {
                        let message = e.to_string();
                        let refusal = Refusal::Other {
                            message: message.clone(),
                        };
                        (false, CODE_SITES, message, refusal)
                    })?;
                    Ok(serde_json::json!({}))
                })
                .await
            }
            other => json(&error::<()>(
                head.id,
                CODE_NO_METHOD,
                format!("no method {other:?}: the host serves {AUTHORIZE} and {CONFIRM}"),
                None,
            )),
        }
    }
}

impl HostService {
    /// `operators.verify` and `operators.status`, on a thread of their own (a password is
    /// verified there, not on the async threads).
    async fn operators_call(
        &self,
        head: Request<serde_json::Value>,
        site: SiteId,
    ) -> HttpResponse<Full<Bytes>> {
        let Some(operators) = self.operators.clone() else {
            return json(&error::<()>(
                head.id,
                CODE_NO_METHOD,
                format!("{}: this host keeps no operators", head.method),
                None,
            ));
        };
        let (id, method) = (head.id, head.method.clone());
        if method == OPERATORS_VERIFY {
            let params: VerifyParams = match serde_json::from_value(head.params) {
                Ok(p) => p,
                Err(e) => return json(&error::<()>(id, CODE_BAD_REQUEST, e.to_string(), None)),
            };
            let who = site.clone();
            store_call(id, site, "host-operators", move || {
                let operator = operators
                    .verify(&params.username, &params.password)
                    .map_err(operator_failure)?;
                tracing::info!(site = %who, operator = %operator.username, "operator verified");
                encode_answer(operator)
            })
            .await
        } else {
            let params: StatusParams = match serde_json::from_value(head.params) {
                Ok(p) => p,
                Err(e) => return json(&error::<()>(id, CODE_BAD_REQUEST, e.to_string(), None)),
            };
            store_call(id, site, "host-operators", move || {
                let status = operators
                    .status(&params.usernames)
                    .map_err(operator_failure)?;
                encode_answer(StatusAnswer {
                    disabled: status.disabled,
                    gone: status.gone,
                })
            })
            .await
        }
    }

    /// What records `entry` (if the call changes something) before the call acts, on the
    /// call's own thread; an entry that cannot be recorded stops the call.
    fn audit_first(
        &self,
        site: &SiteId,
        entry: Option<cardd_store_pg::HostAuditEntry>,
    ) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let (audit, site) = (self.audit.clone(), site.clone());
        move || {
            let (Some(audit), Some(entry)) = (audit, entry) else {
                return Ok(());
            };
            audit.append(&entry).map(|_| ()).map_err(|e| {
                tracing::error!(site = %site, error = %e, "a change could not be audited");
                format!("发卡方后台无法记录审计日志，未作修改：{e}")
            })
        }
    }
}

/// An audit entry of a site's change.
fn audit_entry(
    site: &SiteId,
    action: &str,
    operator: &str,
    target: &str,
    detail: serde_json::Value,
) -> cardd_store_pg::HostAuditEntry {
    cardd_store_pg::HostAuditEntry {
        chain: site.as_str().to_owned(),
        actor: format!("{site}/{}", operator.chars().take(64).collect::<String>()),
        action: action.chars().take(64).collect(),
        target: Some(target.chars().take(64).collect()),
        detail,
        outcome: "started".into(),
    }
}

/// The audit entry of a record method that changes something (`None` for reads).
fn record_audit(site: &SiteId, call: &RecordCall) -> Option<cardd_store_pg::HostAuditEntry> {
    Some(match call {
        RecordCall::UpsertVehicle { vehicle, operator } => audit_entry(
            site,
            "records.upsert_vehicle",
            operator,
            &vehicle.plate,
            serde_json::json!({ "plate_colour": vehicle.plate_colour, "cards": vehicle.card_numbers }),
        ),
        RecordCall::Recharge {
            plate,
            colour,
            amount_fen,
            operator,
            channel,
        } => audit_entry(
            site,
            "records.recharge",
            operator,
            plate,
            serde_json::json!({ "plate_colour": colour, "amount_fen": amount_fen, "channel": channel }),
        ),
        RecordCall::ChangeRecord { record_id, change } => audit_entry(
            site,
            "records.change_record",
            &change.operator,
            record_id,
            serde_json::json!({
                "action": change.action,
                "txn_id": change.txn_id,
                "reason": change.reason,
                "balances": change.balances,
                "loaded": change.loaded,
            }),
        ),
        _ => return None,
    })
}

/// The group methods that only read.
const GROUP_READS: &[&str] = &[
    "groups.group",
    "groups.groups",
    "groups.ledger",
    "groups.order",
    "groups.orders",
    "groups.orders_in",
    "groups.topup",
    "groups.topups",
    "groups.topups_in",
    "groups.batch",
];

/// The audit entry of a group method that changes something (`None` for reads): the method
/// and its params (never a password: group methods carry none), bounded by the log.
fn group_audit(site: &SiteId, call: &GroupCall) -> Option<cardd_store_pg::HostAuditEntry> {
    let (method, params) = call.split();
    if GROUP_READS.contains(&method.as_str()) {
        return None;
    }
    let operator = params
        .get("operator")
        .or_else(|| params.get("auditor"))
        .and_then(|o| o.as_str())
        .unwrap_or("")
        .to_owned();
    let target = ["order_id", "topup_id", "group_id", "batch_id"]
        .iter()
        .find_map(|k| params.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let mut detail = params;
    if detail.to_string().len() > cardd_store_pg::audit::AUDIT_DETAIL_BYTES_MAX {
        detail = serde_json::json!({ "truncated": true });
    }
    Some(audit_entry(site, &method, &operator, &target, detail))
}

/// An operator store's failure as the service answers it.
fn operator_failure(e: cardd_store_pg::OperatorError) -> StoreFailure {
    (
        e.is_refusal(),
        CODE_OPERATORS,
        e.to_string(),
        Refusal::Record {
            code: e.code().code(),
            refusal: e.is_refusal(),
            message: e.to_string(),
        },
    )
}

/// An answer as JSON, or the failure to encode it.
fn encode_answer<T: Serialize>(answer: T) -> Result<serde_json::Value, StoreFailure> {
    serde_json::to_value(answer)
        .map_err(|e| operator_failure(cardd_store_pg::OperatorError::Internal(e.to_string())))
}

/// A store's failure as the service answers it: whether it is a refusal, the JSON-RPC code,
/// the message and the refusal data.
type StoreFailure = (bool, i64, String, Refusal);

/// Runs one record or group method off the async threads (on a thread named `thread`) and
/// answers its result or the store's refusal.
async fn store_call(
    id: u64,
    site: SiteId,
    thread: &str,
    work: impl FnOnce() -> Result<serde_json::Value, StoreFailure> + Send + 'static,
) -> HttpResponse<Full<Bytes>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let _ = tx.send(work());
        });
    if let Err(e) = spawned {
        return json(&error::<()>(
            id,
            -32603,
            format!("the host is out of threads: {e}"),
            None,
        ));
    }
    match rx.await {
        Ok(Ok(result)) => json(&Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }),
        Ok(Err((is_refusal, code, message, refusal))) => {
            if !is_refusal {
                tracing::error!(site = %site, error = %message, "a store method failed");
            }
            json(&error::<()>(id, code, message, Some(refusal)))
        }
        Err(e) => json(&error::<()>(
            id,
            -32603,
            format!("the host failed: {e}"),
            None,
        )),
    }
}

/// Runs one method off the async threads and answers its result or refusal.
async fn call<P, R>(
    head: Request<serde_json::Value>,
    work: impl FnOnce(P) -> Result<R, cardd_purse::SamError> + Send + 'static,
) -> HttpResponse<Full<Bytes>>
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    let id = head.id;
    let params: P = match serde_json::from_value(head.params) {
        Ok(p) => p,
        Err(e) => return json(&error::<R>(id, CODE_BAD_REQUEST, e.to_string(), None)),
    };
    // The store and the keys block; a runtime's threads (async or blocking pool) must not call
    // a store that owns a runtime itself, so the work runs on a thread of its own.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("host-call".into())
        .spawn(move || {
            let _ = tx.send(work(params));
        });
    if let Err(e) = spawned {
        return json(&error::<R>(
            id,
            -32603,
            format!("the host is out of threads: {e}"),
            None,
        ));
    }
    match rx.await {
        Ok(Ok(result)) => json(&Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }),
        Ok(Err(refused)) => json(&error::<R>(
            id,
            CODE_REFUSED,
            refused.to_string(),
            Some(Refusal::from(&refused)),
        )),
        Err(e) => json(&error::<R>(
            id,
            -32603,
            format!("the host failed: {e}"),
            None,
        )),
    }
}

fn error<R>(id: u64, code: i64, message: String, data: Option<Refusal>) -> Response<R> {
    Response {
        jsonrpc: "2.0".into(),
        id,
        result: None,
        error: Some(RpcError {
            code,
            message,
            data,
        }),
    }
}

fn json<R: Serialize>(response: &Response<R>) -> HttpResponse<Full<Bytes>> {
    match serde_json::to_vec(response) {
        Ok(body) => {
            let mut r = reply(StatusCode::OK, Bytes::from(body));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
    }
}

fn reply(status: StatusCode, body: Bytes) -> HttpResponse<Full<Bytes>> {
    let mut r = HttpResponse::new(Full::new(body));
    *r.status_mut() = status;
    r
}
