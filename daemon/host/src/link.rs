//! A site's link to the host: [`HostLink`] over HTTPS with the site's client certificate.
//!
//! The security module's calls are blocking (they run on the reader's worker thread, between
//! two card commands), so the link owns a small single-threaded runtime and waits on it; each
//! call is one connection, one TLS handshake and one `POST /`, bounded by
//! [`HttpsLink::timeout`]. Anything that is not an answer of the host (no connection, a refused
//! certificate, a timeout, a malformed reply) is [`LinkError::Unreachable`]: the load is refused
//! before CREDIT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cardd_authority::{
    AuthorizeRequest, Authorized, ConfirmRequest, Confirmed, HostLink, LinkError,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::wire::{Request, Response, AUTHORIZE, BODY_BYTES_MAX, CONFIRM};

/// How long one call to the host may take by default (connection, handshake, answer), in ms.
pub const HOST_CALL_TIMEOUT_MS: u64 = 5_000;

/// A site's HTTPS link to the host.
pub struct HttpsLink {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    next_id: AtomicU64,
}

impl std::fmt::Debug for HttpsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsLink")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why a link could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    #[error("the host's name {0:?} is not a valid TLS server name: use the name its certificate was issued for")]
    ServerName(String),
    #[error("cannot start the link's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl HttpsLink {
    /// A link to the host at `addr`, whose certificate names `server_name`, presenting the
    /// site's certificate of `tls` (`cardd_fleet::site_client_config`).
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<HttpsLink, LinkSetupError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| LinkSetupError::ServerName(server_name.to_owned()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(HttpsLink {
            addr,
            server_name,
            tls: TlsConnector::from(tls),
            runtime,
            timeout,
            next_id: AtomicU64::new(1),
        })
    }

    fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&Request {
            jsonrpc: "2.0".into(),
            id,
            method: method.into(),
            params,
        })
        .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
            let tls = self
                .tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS with the host failed: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("the host closed the connection: {e}"))?;
            tokio::spawn(connection);
            let request = hyper::Request::post("/")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::HOST, self.server_name.to_str().as_ref())
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let answer = sender
                .send_request(request)
                .await
                .map_err(|e| format!("the host did not answer: {e}"))?;
            let bytes = Limited::new(answer.into_body(), BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("the host's answer could not be read: {e}"))?
                .to_bytes();
            Ok::<Bytes, String>(bytes)
        };
        let bytes = self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, exchange).await })
            .map_err(|_| {
                LinkError::Unreachable(format!("no answer within {} ms", self.timeout.as_millis()))
            })?
            .map_err(LinkError::Unreachable)?;
        let response: Response<R> = serde_json::from_slice(&bytes)
            .map_err(|e| LinkError::Unreachable(format!("the host's answer is malformed: {e}")))?;
        match (response.result, response.error) {
            (Some(result), None) => Ok(result),
            (_, Some(error)) => match error.data {
                Some(refusal) => Err(LinkError::Refused(refusal.into())),
                None => Err(LinkError::Unreachable(error.message)),
            },
            (None, None) => Err(LinkError::Unreachable("the host's answer is empty".into())),
        }
    }
}

impl HostLink for HttpsLink {
    fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, LinkError> {
        self.call(AUTHORIZE, request)
    }

    fn confirm(&self, request: &ConfirmRequest) -> Result<Confirmed, LinkError> {
        self.call(CONFIRM, request)
    }
}
