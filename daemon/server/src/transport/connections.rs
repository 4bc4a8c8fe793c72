//! The accept loop: which TCP connections the daemon keeps, and for how long.
//!
//! jsonrpsee's own loop keeps every connection for as long as the client likes and counts only
//! calls in progress and WebSockets (`limits.connections_max`), so idle sockets and WebSockets
//! opened with any token-shaped string could fill it and block every call, logins included.
//! Here the daemon accepts connections itself and hands each to jsonrpsee's service:
//!
//! - a connection is **unauthenticated** until one of its requests carries the token of a live
//!   session ([`ConnectionInfo::mark_authenticated`], called by the guard); a WebSocket upgrade
//!   needs a live session (the guard refuses the others), so an open WebSocket always belongs to
//!   a logged-in operator;
//! - unauthenticated connections have their own small pool (`limits.unauthenticated_connections_max`),
//!   a cap per client process (`limits.unauthenticated_connections_per_process_max`, the process
//!   found by [`crate::transport::peer`]) and an idle timeout (`limits.unauthenticated_idle_timeout_s`);
//! - when a process is at its cap, its own oldest idle connection makes room for its new one (a
//!   process can only crowd out itself); when the pool is full, the oldest idle connection of the
//!   process holding the most makes room; when nothing is idle, the new connection is refused
//!   with `ServerBusy` (HTTP 503);
//! - authenticated connections are not counted in that pool and close after
//!   `limits.connection_idle_timeout_s` without a request.
//!
//! Idle means no request in progress: a connection is never closed in the middle of a call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardd_api::ErrorCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::transport::peer::{PeerFinder, PeerProcess};

/// Concurrent client-process look-ups (each reads /proc).
const PEER_LOOKUPS_MAX: usize = 2;

/// The bounds the accept loop enforces.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub unauthenticated_max: usize,
    pub unauthenticated_per_process_max: usize,
    pub unauthenticated_idle: Duration,
    pub authenticated_idle: Duration,
}

/// What the daemon knows of a connection, found by the guard and methods in request extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's process, as far as the OS tells.
    pub process: PeerProcess,
    state: Arc<ConnState>,
}

impl ConnectionInfo {
    /// The connection carried the token of a live session: it leaves the unauthenticated pool.
    pub fn mark_authenticated(&self) {
        self.state.authenticated.store(true, Ordering::Relaxed);
    }

    /// Whether a request on this connection carried a live session's token.
    pub fn is_authenticated(&self) -> bool {
        self.state.authenticated.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct ConnState {
    authenticated: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last request's start or end.
    last_active_ms: AtomicU64,
    epoch: Instant,
    close: Notify,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            authenticated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            close: Notify::new(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// Counts a request in progress while it lives.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.touch();
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections open now.
#[derive(Debug)]
pub struct ConnectionPool {
    limits: ConnectionLimits,
    open: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    finder: Arc<PeerFinder>,
    lookups: Semaphore,
}

#[derive(Debug)]
struct Entry {
    process: PeerProcess,
    state: Arc<ConnState>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    ProcessFull,
    PoolFull,
}

impl ConnectionPool {
    pub fn new(limits: ConnectionLimits) -> Self {
        ConnectionPool {
            limits,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            finder: Arc::new(PeerFinder::default()),
            lookups: Semaphore::new(PEER_LOOKUPS_MAX),
        }
    }

    /// Open connections that are not authenticated, all and of `process`.
    pub fn unauthenticated(&self, process: Option<PeerProcess>) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values()
            .filter(|e| !e.state.authenticated.load(Ordering::Relaxed))
            .filter(|e| process.is_none_or(|p| p == e.process))
            .count()
    }

    /// Open unauthenticated connections of the process `pid`: `(all, with a call in progress)`.
    pub fn unauthenticated_of(&self, pid: u32) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let of_pid: Vec<&Entry> = open
            .values()
            .filter(|e| !e.state.authenticated.load(Ordering::Relaxed))
            .filter(|e| matches!(e.process, PeerProcess::Process { pid: p, .. } if p == pid))
            .collect();
        let busy = of_pid.iter().filter(|e| !e.state.idle()).count();
        (of_pid.len(), busy)
    }

    /// Admits a new unauthenticated connection of `process`, making room as the module says.
    fn admit(&self, process: PeerProcess) -> Result<(u64, Arc<ConnState>), Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let unauthenticated = |e: &&Entry| !e.state.authenticated.load(Ordering::Relaxed);
        let oldest_idle_of = |open: &HashMap<u64, Entry>, of: PeerProcess| {
            open.iter()
                .filter(|(_, e)| e.process == of && unauthenticated(e) && e.state.idle())
                .min_by_key(|(_, e)| e.state.last_active())
                .map(|(id, _)| *id)
        };
        let of_process = open
            .values()
            .filter(|e| e.process == process)
            .filter(unauthenticated)
            .count();
        if of_process >= self.limits.unauthenticated_per_process_max {
            let victim = oldest_idle_of(&open, process).ok_or(Refused::ProcessFull)?;
            evict(&mut open, victim);
        }
        if open.values().filter(unauthenticated).count() >= self.limits.unauthenticated_max {
            let mut by_process: HashMap<PeerProcess, usize> = HashMap::new();
            for e in open
                .values()
                .filter(unauthenticated)
                .filter(|e| e.state.idle())
            {
                *by_process.entry(e.process).or_default() += 1;
            }
            let busiest = by_process
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(p, _)| p)
                .ok_or(Refused::PoolFull)?;
            let victim = oldest_idle_of(&open, busiest).ok_or(Refused::PoolFull)?;
            evict(&mut open, victim);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        state.touch();
        open.insert(
            id,
            Entry {
                process,
                state: state.clone(),
            },
        );
        Ok((id, state))
    }

    fn release(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    async fn identify(&self, peer: SocketAddr, local: SocketAddr) -> PeerProcess {
        let Ok(_permit) = self.lookups.acquire().await else {
            return PeerProcess::Unknown;
        };
        let finder = self.finder.clone();
        tokio::task::spawn_blocking(move || finder.identify(peer, local))
            .await
            .unwrap_or(PeerProcess::Unknown)
    }
}

/// Drops a connection from the pool and tells its task to close it once idle.
fn evict(open: &mut HashMap<u64, Entry>, id: u64) {
    if let Some(entry) = open.remove(&id) {
        tracing::info!(process = %entry.process, "idle unauthenticated connection closed to make room");
        entry.state.close.notify_one();
    }
}

/// The service for one connection: jsonrpsee's, behind the guard.
pub trait ConnectionService:
    tower::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<jsonrpsee::server::HttpBody>,
        Error = jsonrpsee::core::BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnectionService for S where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<jsonrpsee::server::HttpBody>,
            Error = jsonrpsee::core::BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Accepts connections until `stop` resolves; `make_service` builds each connection's service.
/// Returns once no connection task is left.
pub async fn accept_loop<S>(
    listener: TcpListener,
    pool: Arc<ConnectionPool>,
    make_service: impl Fn() -> S,
    stop: jsonrpsee::server::StopHandle,
) where
    S: ConnectionService,
{
    let local = listener.local_addr().ok();
    let stopped = stop.clone().shutdown();
    tokio::pin!(stopped);
    let tasks = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let service = make_service();
        let pool = pool.clone();
        let stop = stop.clone();
        let Ok(task) = tasks.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _task = task;
            serve(socket, peer, local, pool, service, stop).await;
        });
    }
    // Wait for the connection tasks to finish their graceful shutdown.
    let _ = tasks
        .acquire_many(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX))
        .await;
}

async fn serve<S: ConnectionService>(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    pool: Arc<ConnectionPool>,
    service: S,
    stop: jsonrpsee::server::StopHandle,
) {
    let process = match local {
        Some(local) => pool.identify(peer, local).await,
        None => PeerProcess::Unknown,
    };
    let (id, state) = match pool.admit(process) {
        Ok(admitted) => admitted,
        Err(why) => {
            tracing::warn!(%process, reason = ?why, "connection refused: too many unauthenticated connections");
            refuse(socket).await;
            return;
        }
    };
    let info = ConnectionInfo {
        peer,
        process,
        state: state.clone(),
    };
    let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(info.clone());
        let in_flight = InFlight::begin(&info.state);
        let response = tower::ServiceExt::oneshot(service.clone(), request);
        async move {
            let response = response.await;
            drop(in_flight);
            Ok::<_, std::convert::Infallible>(response.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "request failed in the service");
                let mut failed = http::Response::new(jsonrpsee::server::HttpBody::empty());
                *failed.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                failed
            }))
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(
        TokioIo::new(socket),
        hyper_util::service::TowerToHyperService::new(service),
    );
    let stopped = stop.shutdown();
    tokio::pin!(conn, stopped);
    let limits = &pool.limits;
    let timeout = || {
        if state.authenticated.load(Ordering::Relaxed) {
            limits.authenticated_idle
        } else {
            limits.unauthenticated_idle
        }
    };
    let closing = loop {
        let deadline = state.last_active() + timeout();
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                break false;
            }
            _ = &mut stopped => break true,
            _ = state.close.notified() => break true,
            _ = tokio::time::sleep_until(deadline) => {
                // The connection may have been authenticated meanwhile: its timeout is read again.
                if state.idle() && state.last_active() + timeout() <= Instant::now() {
                    tracing::debug!(%process, "idle connection closed");
                    break true;
                }
                if !state.idle() {
                    // A call in progress: look again once it could have gone idle.
                    state.touch();
                }
            }
        }
    };
    if closing {
        conn.as_mut().graceful_shutdown();
        if state.authenticated.load(Ordering::Relaxed) {
            let _ = conn.await;
        } else {
            // A call in progress on an unauthenticated connection (a login, or a body that never
            // ends) is not worth holding the daemon's stop for.
            let _ = tokio::time::timeout(limits.unauthenticated_idle, conn).await;
        }
    }
    pool.release(id);
}

/// Answers `ServerBusy` (HTTP 503) without reading the request, then closes.
async fn refuse(socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let code = ErrorCode::ServerBusy;
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": code.code(),
            "message": "Too many unauthenticated connections from this client; close idle ones or log in.",
            "data": { "error": code.name(), "action": code.action() },
        },
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut socket = socket;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.write_all(response.as_bytes()),
    )
    .await;
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(unauthenticated_max: usize, per_process: usize) -> ConnectionPool {
        ConnectionPool::new(ConnectionLimits {
            unauthenticated_max,
            unauthenticated_per_process_max: per_process,
            unauthenticated_idle: Duration::from_secs(10),
            authenticated_idle: Duration::from_secs(60),
        })
    }

    const A: PeerProcess = PeerProcess::Process { pid: 1, uid: 0 };
    const B: PeerProcess = PeerProcess::Process { pid: 2, uid: 0 };

    #[tokio::test]
    async fn a_process_at_its_cap_crowds_out_only_itself() {
        let pool = pool(10, 2);
        let (first, first_state) = pool.admit(A).unwrap();
        pool.admit(A).unwrap();
        pool.admit(B).unwrap();
        pool.admit(A).unwrap();
        assert_eq!(pool.unauthenticated(Some(A)), 2);
        assert_eq!(pool.unauthenticated(Some(B)), 1, "B untouched");
        assert!(!pool.open.lock().unwrap().contains_key(&first));
        assert!(
            tokio::time::timeout(Duration::ZERO, first_state.close.notified())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn busy_connections_are_never_evicted_and_authenticated_ones_are_not_counted() {
        let pool = pool(2, 2);
        let (_, a) = pool.admit(A).unwrap();
        let (_, b) = pool.admit(B).unwrap();
        let _busy_a = InFlight::begin(&a);
        let _busy_b = InFlight::begin(&b);
        assert_eq!(pool.admit(A).unwrap_err(), Refused::PoolFull);
        b.authenticated.store(true, Ordering::Relaxed);
        assert!(pool.admit(A).is_ok(), "the authenticated one left the pool");
        assert!(pool.admit(B).is_ok(), "A's idle connection made room");
        assert_eq!(pool.unauthenticated(Some(A)), 1, "A's busy one stays");
    }

    #[tokio::test]
    async fn a_full_pool_evicts_from_the_process_holding_the_most() {
        let pool = pool(3, 3);
        pool.admit(A).unwrap();
        pool.admit(A).unwrap();
        pool.admit(B).unwrap();
        pool.admit(B).unwrap();
        assert_eq!(pool.unauthenticated(Some(A)), 1);
        assert_eq!(pool.unauthenticated(Some(B)), 2);
        assert_eq!(pool.unauthenticated(None), 3);
    }
}
