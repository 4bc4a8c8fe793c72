//! A site's connection to the host: [`HostClient`] (JSON-RPC over HTTPS with the site's client
//! certificate) and [`HttpsLink`], the keyless load link (`cardd_authority::HostLink`) on it.
//!
//! Every call is one `POST /` on a TLS connection, bounded by the client's timeout. Connections
//! are kept (HTTP/1.1 keep-alive): after an answer the connection waits in a small pool, at most
//! [`IDLE_CONNECTIONS_MAX`] of them for at most [`IDLE_TIMEOUT_S`] each, and the next call takes
//! it instead of a new handshake. The exchange runs on the client's own small runtime and the
//! caller waits for its answer on a channel, so a call may be made from any thread: a reader's
//! worker (loads), a blocking task, or, briefly, an async task. Anything that is not an answer
//! of the host (no connection, a refused certificate, a timeout, a malformed reply) is
//! [`CallError::Unreachable`], and so is the host's answer that it no longer admits the site
//! (`wire::CODE_SITE_REFUSED`: disabled or re-issued since the connection opened, as a refused
//! handshake would have said); any other answer with an error is [`CallError::Refused`].
//!
//! **A request is sent once.** A kept connection the host closed meanwhile is noticed before
//! the request is written (the connection reports itself closed, or hands the unsent request
//! back), and the call then goes on a fresh connection: the host certainly never saw it. Once
//! any byte of a request may have been written, a failure is [`CallError::Unreachable`] and is
//! never retried here: the host may have acted on it (a load's outcome is then unknown, and
//! settled from the card as before).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cardd_authority::{
    AuthorizeRequest, Authorized, ConfirmRequest, Confirmed, HostLink, LinkError, OpenLoad,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::wire::{
    OpenLoadsParams, Request, Response, RpcError, ANSWER_BYTES_MAX, AUTHORIZE, CODE_SITE_REFUSED,
    CONFIRM, OPEN_LOADS,
};

/// How long one call to the host may take by default (connection, handshake, answer), in ms.
pub const HOST_CALL_TIMEOUT_MS: u64 = 5_000;

/// Worker threads of a client's runtime.
pub const CLIENT_THREADS: usize = 1;

/// Most idle connections a client keeps for its next calls.
pub const IDLE_CONNECTIONS_MAX: usize = 4;

/// How long a client keeps an idle connection, in seconds (shorter than the host keeps it,
/// `cardd_host::service::IDLE_CONNECTION_TIMEOUT_S`, so a kept connection is rarely one the
/// host is closing).
pub const IDLE_TIMEOUT_S: u64 = 30;

/// Fresh connections one call may try after kept ones the host had closed before the request
/// was written (each kept connection found closed is dropped and does not count).
const FRESH_CONNECTIONS_MAX: usize = 1;

/// What a client did so far: requests written and connections opened (benchmarks, tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests handed to a connection (each is one round trip to the host).
    pub requests: u64,
    /// TLS connections opened.
    pub connections: u64,
}

/// A kept connection and when it was last used.
struct Idle {
    sender: Sender,
    since: std::time::Instant,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// The idle connections of a client and its counters, shared with its exchanges.
#[derive(Default)]
struct Pool {
    idle: std::sync::Mutex<Vec<Idle>>,
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Pool {
    /// The most recently used idle connection still open, dropping expired and closed ones.
    fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let keep_for = Duration::from_secs(IDLE_TIMEOUT_S);
        while let Some(kept) = idle.pop() {
            if kept.since.elapsed() < keep_for && !kept.sender.is_closed() {
                return Some(kept.sender);
            }
        }
        None
    }

    /// Keeps `sender` for a next call, if it is open and there is room.
    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(Idle {
                sender,
                since: std::time::Instant::now(),
            });
        }
    }
}

/// Why a call did not bring a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The host could not be reached or did not answer in time.
    #[error("the issuer host did not answer: {0}")]
    Unreachable(String),
    /// The host answered with an error.
    #[error("the issuer host refused: {}", .0.message)]
    Refused(RpcError),
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    #[error("the host's name {0:?} is not a valid TLS server name: use the name its certificate was issued for")]
    ServerName(String),
    #[error("cannot start the link's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// A site's HTTPS client of the host.
pub struct HostClient {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
    next_id: AtomicU64,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Drop for HostClient {
    fn drop(&mut self) {
        // Never wait for an exchange in flight: its caller has its answer or its timeout.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl HostClient {
    /// A client of the host at `addr`, whose certificate names `server_name`, presenting the
    /// site's certificate of `tls` (`cardd_fleet::site_client_config`).
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<HostClient, LinkSetupError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| LinkSetupError::ServerName(server_name.to_owned()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("cardd-hostlink")
            .enable_io()
            .enable_time()
            .build()?;
        Ok(HostClient {
            addr,
            server_name,
            tls: TlsConnector::from(tls),
            runtime: Some(runtime),
            timeout,
            next_id: AtomicU64::new(1),
            pool: Arc::new(Pool::default()),
        })
    }

    /// What this client did so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.pool.requests.load(Ordering::Relaxed),
            connections: self.pool.connections.load(Ordering::Relaxed),
        }
    }

    /// The host's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls `method` with `params` and waits for the result.
    pub fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&Request {
            jsonrpc: "2.0".into(),
            id,
            method: method.into(),
            params,
        })
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let (addr, name, tls, timeout, pool) = (
            self.addr,
            self.server_name.clone(),
            self.tls.clone(),
            self.timeout,
            self.pool.clone(),
        );
        let exchange = async move {
            let mut request = hyper::Request::post("/")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::HOST, name.to_str().as_ref())
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let mut fresh = 0;
            let (sender, answer) = loop {
                let mut sender = match pool.take() {
                    Some(kept) => kept,
                    None if fresh < FRESH_CONNECTIONS_MAX => {
                        fresh += 1;
                        pool.connections.fetch_add(1, Ordering::Relaxed);
                        connect(addr, name.clone(), tls.clone()).await?
                    }
                    None => return Err("the host closed every connection".to_owned()),
                };
                // A kept connection the host closed: the request is not written, try another.
                if sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(request).await {
                    Ok(answer) => {
                        pool.requests.fetch_add(1, Ordering::Relaxed);
                        break (sender, answer);
                    }
                    Err(mut failed) => match failed.take_message() {
                        // Handed back unsent: the host never saw it.
                        Some(unsent) => request = unsent,
                        None => {
                            pool.requests.fetch_add(1, Ordering::Relaxed);
                            return Err(format!("the host did not answer: {}", failed.error()));
                        }
                    },
                }
            };
            let bytes = Limited::new(answer.into_body(), ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("the host's answer could not be read: {e}"))?
                .to_bytes();
            // Free again once the answer is read; one the host closes (a `Connection: close`
            // answer) is found closed by the next call before it writes anything.
            pool.put(sender);
            Ok::<Bytes, String>(bytes)
        };
        let Some(runtime) = &self.runtime else {
            return Err(CallError::Unreachable("the link is closed".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let answer = match tokio::time::timeout(timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            };
            let _ = tx.send(answer);
        });
        let bytes = rx
            .recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| {
                CallError::Unreachable(format!("no answer within {} ms", timeout.as_millis()))
            })?
            .map_err(CallError::Unreachable)?;
        let response: Response<R> = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Unreachable(format!("the host's answer is malformed: {e}")))?;
        match (response.result, response.error) {
            (_, Some(error)) if error.code == CODE_SITE_REFUSED => Err(CallError::Unreachable(
                format!("the host no longer admits this site: {}", error.message),
            )),
            (Some(result), None) => Ok(result),
            (_, Some(error)) => Err(CallError::Refused(error)),
            (None, None) => Err(CallError::Unreachable("the host's answer is empty".into())),
        }
    }
}

/// A new TLS connection to the host, ready for requests.
async fn connect(
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: TlsConnector,
) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with the host failed: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("the host closed the connection: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A site's keyless load link over a [`HostClient`].
#[derive(Debug, Clone)]
pub struct HttpsLink(pub Arc<HostClient>);

impl HttpsLink {
    /// A link to the host at `addr` (see [`HostClient::new`]).
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<HttpsLink, LinkSetupError> {
        Ok(HttpsLink(Arc::new(HostClient::new(
            addr,
            server_name,
            tls,
            timeout,
        )?)))
    }

    fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, LinkError> {
        self.0.call(method, params).map_err(|e| match e {
            CallError::Unreachable(detail) => LinkError::Unreachable(detail),
            CallError::Refused(error) => match error.data {
                Some(refusal) => LinkError::Refused(refusal.into()),
                None => LinkError::Unreachable(error.message),
            },
        })
    }
}

impl HostLink for HttpsLink {
    fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, LinkError> {
        self.call(AUTHORIZE, request)
    }

    fn confirm(&self, request: &ConfirmRequest) -> Result<Confirmed, LinkError> {
        self.call(CONFIRM, request)
    }

    fn open_loads(&self, card_number: &str) -> Result<Vec<OpenLoad>, LinkError> {
        self.call(
            OPEN_LOADS,
            &OpenLoadsParams {
                card_number: card_number.to_owned(),
            },
        )
    }
}

/// The card's loads other sites began, as intents this site's journal can adopt (a card pulled
/// at one site is settled at the next one it is presented at).
impl cardd_journal::ForeignIntents for HttpsLink {
    fn open_intents(&self, card_number: &str) -> Result<Vec<cardd_journal::LoadTxn>, String> {
        let loads = HostLink::open_loads(self, card_number).map_err(|e| e.to_string())?;
        Ok(loads.into_iter().map(intent_of).collect())
    }
}

/// An open load of another site as an intent of this journal.
pub fn intent_of(load: OpenLoad) -> cardd_journal::LoadTxn {
    let r = load.request;
    let plan = cardd_purse::LoadPlan::new(
        r.card,
        r.terms.amount,
        r.terms.terminal,
        r.terms.date,
        r.terms.time,
    );
    let session = cardd_purse::LoadSession {
        plan,
        init: r.init,
        mac2: load.mac2,
    };
    let mut txn = cardd_journal::LoadTxn::intent(
        &r.txn_id,
        &r.card_number,
        &format!("site:{}", load.site_id),
        session,
    );
    txn.funding = Some(r.funding);
    txn
}
