//! A site's connection to the host: [`HostClient`] (JSON-RPC over HTTPS with the site's client
//! certificate) and [`HttpsLink`], the keyless load link (`cardd_authority::HostLink`) on it.
//!
//! Every call is one connection, one TLS handshake and one `POST /`, bounded by the client's
//! timeout. The exchange runs on the client's own small runtime and the caller waits for its
//! answer on a channel, so a call may be made from any thread: a reader's worker (loads), a
//! blocking task, or, briefly, an async task. Anything that is not an answer of the host (no
//! connection, a refused certificate, a timeout, a malformed reply) is
//! [`CallError::Unreachable`]; an answer with an error is [`CallError::Refused`].

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
    OpenLoadsParams, Request, Response, RpcError, ANSWER_BYTES_MAX, AUTHORIZE, CONFIRM, OPEN_LOADS,
};

/// How long one call to the host may take by default (connection, handshake, answer), in ms.
pub const HOST_CALL_TIMEOUT_MS: u64 = 5_000;

/// Worker threads of a client's runtime.
pub const CLIENT_THREADS: usize = 1;

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
        })
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
        let (addr, name, tls, timeout) = (
            self.addr,
            self.server_name.clone(),
            self.tls.clone(),
            self.timeout,
        );
        let exchange = async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let tls = tls
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS with the host failed: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("the host closed the connection: {e}"))?;
            tokio::spawn(connection);
            let request = hyper::Request::post("/")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::HOST, name.to_str().as_ref())
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let answer = sender
                .send_request(request)
                .await
                .map_err(|e| format!("the host did not answer: {e}"))?;
            let bytes = Limited::new(answer.into_body(), ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("the host's answer could not be read: {e}"))?
                .to_bytes();
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
            (Some(result), None) => Ok(result),
            (_, Some(error)) => Err(CallError::Refused(error)),
            (None, None) => Err(CallError::Unreachable("the host's answer is empty".into())),
        }
    }
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
