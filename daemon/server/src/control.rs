//! The local control socket: `<data_dir>/control.sock`, through which the daemon's own
//! commands (`cardd support-bundle`) ask a running daemon for what only it knows.
//!
//! Unix only. The socket is created with mode 0600 and every connection's peer credentials are
//! checked: only the daemon's own user and root are served; anyone else is refused and the
//! refusal is logged. The protocol is one JSON request line and one JSON reply line, bounded in
//! size ([`CONTROL_REQUEST_BYTES_MAX`], [`CONTROL_REPLY_BYTES_MAX`]), in time
//! ([`CONTROL_TIMEOUT_S`] per connection) and in concurrency ([`CONTROL_CONNECTIONS_MAX`]).
//!
//! Requests ([`Request`], dispatched in one place, [`dispatch`]):
//! - `{"op":"status"}`: the status a support bundle needs ([`crate::support::Status`]);
//! - `{"op":"logs"}`: the recent log lines ([`crate::log_ring`]);
//! - `{"op":"backup","dest":"/abs/dir"}`: a backup of the database of one moment into `dest`
//!   ([`crate::backup::make_backup`]), audited before it starts; answers the manifest.
//!
//! Replies: `{"ok": …}` or `{"error": "…"}`.
//!
//! **Architecture Invariant:** the socket never moves money and never hands out a key, a password
//! hash or a session token. An operation that writes anything (`backup`) is audited before it
//! acts, like a JSON-RPC method; reads are logged at debug level.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The socket's file name in the data directory.
pub const CONTROL_SOCKET_FILE: &str = "control.sock";
/// Largest request line, in bytes.
pub const CONTROL_REQUEST_BYTES_MAX: usize = 4 * 1024;
/// Largest reply line, in bytes (the status carries the metrics text and up to
/// [`crate::support::OPEN_LOADS_LISTED_MAX`] open loads; the logs at most
/// [`crate::log_ring::LOG_RING_BYTES_MAX`] of text).
pub const CONTROL_REPLY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Connections served at once; more are answered busy.
pub const CONTROL_CONNECTIONS_MAX: usize = 4;
/// How long one connection may take from accept to the reply written (the status verifies the
/// audit chain, which takes a while on a large log).
pub const CONTROL_TIMEOUT_S: u64 = 120;

/// A request on the control socket. Each operation is a struct variant that refuses unknown
/// fields, so a misspelt parameter is an error, never ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The status for a support bundle.
    Status {},
    /// The recent log lines.
    Logs {},
    /// A backup of the running daemon's database into `dest` (an absolute path the daemon's
    /// user may write; new or empty), audited. Answers the manifest.
    Backup { dest: PathBuf },
}

impl Request {
    /// The name the request has on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Logs {} => "logs",
            Request::Backup { .. } => "backup",
        }
    }
}

/// A reply on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(Value),
    Error(String),
}

/// The path of the control socket of a daemon whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_SOCKET_FILE)
}

/// Why the control socket could not be served or asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens: the daemon is stopped (or predates the control socket).
    #[error("no cardd answers on {0} (the daemon is stopped)")]
    NotRunning(PathBuf),
    /// Another process answers on the socket the daemon was to create.
    #[error("another process answers on {0}: is another cardd running on this data directory?")]
    InUse(PathBuf),
    /// The path exists and is not a socket: it is left alone.
    #[error("{0} exists and is not a socket; move it away so cardd can create its control socket")]
    NotASocket(PathBuf),
    /// The daemon refused or failed the request.
    #[error("the daemon answered: {0}")]
    Refused(String),
    /// The exchange broke the protocol (too long, not JSON, no answer in time).
    #[error("control socket {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
    /// The platform has no Unix sockets.
    #[error("the control socket needs a Unix system; stop cardd to read its data directory")]
    Unsupported,
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(unix)]
pub use unix::{call, listen, ControlSocket};

/// Asks the daemon behind `socket`; without Unix sockets there is none.
#[cfg(not(unix))]
pub fn call(_socket: &Path, _request: &Request) -> Result<Value, ControlError> {
    Err(ControlError::Unsupported)
}

#[cfg(unix)]
mod unix {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use serde_json::Value;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    use super::{
        dispatch, ControlError, Reply, Request, CONTROL_CONNECTIONS_MAX, CONTROL_REPLY_BYTES_MAX,
        CONTROL_REQUEST_BYTES_MAX, CONTROL_TIMEOUT_S,
    };
    use crate::daemon::Daemon;
    use crate::log_ring::LogRing;

    /// A listening control socket; [`ControlSocket::stop`] removes it.
    #[derive(Debug)]
    pub struct ControlSocket {
        path: PathBuf,
        task: tokio::task::JoinHandle<()>,
    }

    impl ControlSocket {
        /// The socket's path.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Stops serving and removes the socket file.
        pub async fn stop(self) {
            self.task.abort();
            let _ = self.task.await;
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the control socket");
            }
        }
    }

    /// Creates the control socket at `path` (mode 0600; a stale socket nobody answers on is
    /// replaced) and serves it for `daemon` until stopped. Must run inside the runtime.
    pub fn listen(
        path: &Path,
        daemon: &Arc<Daemon>,
        logs: Option<LogRing>,
    ) -> Result<ControlSocket, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ControlError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ControlError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing a stale control socket");
                    std::fs::remove_file(path).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // The socket is created with mode 0600 (no window in which others could connect);
        // the umask is the process's, so it is restored at once.
        let before = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(before);
        let listener = bound.map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let task = tokio::spawn(accept_loop(listener, Arc::downgrade(daemon), logs));
        tracing::info!(path = %path.display(), "control socket ready (this user and root only)");
        Ok(ControlSocket {
            path: path.to_path_buf(),
            task,
        })
    }

    async fn accept_loop(listener: UnixListener, daemon: Weak<Daemon>, logs: Option<LogRing>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(CONTROL_CONNECTIONS_MAX));
        let own_uid = rustix::process::getuid().as_raw();
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                let busy = Reply::Error("busy: too many control connections, retry".into());
                let _ = write_reply(&mut stream, &busy).await;
                continue;
            };
            let (daemon, logs) = (daemon.clone(), logs.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let served = tokio::time::timeout(
                    Duration::from_secs(CONTROL_TIMEOUT_S),
                    serve(stream, own_uid, daemon, logs),
                )
                .await;
                if served.is_err() {
                    tracing::warn!("control socket: a connection timed out");
                }
            });
        }
    }

    /// Serves one connection: checks the peer, reads one request, writes one reply.
    async fn serve(
        mut stream: UnixStream,
        own_uid: u32,
        daemon: Weak<Daemon>,
        logs: Option<LogRing>,
    ) {
        let peer = match stream.peer_cred() {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: no peer credentials; refused");
                return;
            }
        };
        if peer.uid() != own_uid && peer.uid() != 0 {
            tracing::warn!(
                uid = peer.uid(),
                pid = peer.pid(),
                "control socket: connection refused (only the daemon's user and root may connect)"
            );
            let refused = Reply::Error("refused: run this as the daemon's user or root".into());
            let _ = write_reply(&mut stream, &refused).await;
            return;
        }
        let reply = match read_request(&mut stream).await {
            Ok(request) => {
                tracing::debug!(
                    op = request.op(),
                    uid = peer.uid(),
                    pid = peer.pid(),
                    "control request"
                );
                match daemon.upgrade() {
                    Some(daemon) => match dispatch(daemon, logs, request).await {
                        Ok(value) => Reply::Ok(value),
                        Err(e) => Reply::Error(e),
                    },
                    None => Reply::Error("the daemon is stopping".into()),
                }
            }
            Err(e) => Reply::Error(e),
        };
        if let Err(e) = write_reply(&mut stream, &reply).await {
            tracing::debug!(error = %e, "control socket: the reply was not delivered");
        }
    }

    async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
        let mut line = Vec::new();
        let limit = CONTROL_REQUEST_BYTES_MAX as u64 + 1;
        let mut reader = tokio::io::BufReader::new(stream.take(limit));
        reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("could not read the request: {e}"))?;
        if line.len() > CONTROL_REQUEST_BYTES_MAX {
            return Err(format!(
                "the request is longer than {CONTROL_REQUEST_BYTES_MAX} bytes"
            ));
        }
        serde_json::from_slice(&line).map_err(|e| {
            format!(r#"not a request ({e}); send one line: {{"op":"status"}} or {{"op":"logs"}}"#)
        })
    }

    async fn write_reply(stream: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(reply).unwrap_or_default();
        if bytes.len() > CONTROL_REPLY_BYTES_MAX {
            let too_long = format!("the reply is longer than {CONTROL_REPLY_BYTES_MAX} bytes");
            bytes = serde_json::to_vec(&Reply::Error(too_long)).unwrap_or_default();
        }
        bytes.push(b'\n');
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    }

    /// Sends `request` to the daemon behind `socket` and returns its answer (blocking; for
    /// the command line).
    pub fn call(socket: &Path, request: &Request) -> Result<Value, ControlError> {
        let protocol = |reason: String| ControlError::Protocol {
            path: socket.to_path_buf(),
            reason,
        };
        let io = |source| ControlError::Io {
            path: socket.to_path_buf(),
            source,
        };
        let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
            Ok(stream) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ControlError::NotRunning(socket.to_path_buf()))
            }
            Err(e) => return Err(io(e)),
        };
        let timeout = Some(Duration::from_secs(CONTROL_TIMEOUT_S));
        stream.set_read_timeout(timeout).map_err(io)?;
        stream.set_write_timeout(timeout).map_err(io)?;
        let mut line = serde_json::to_vec(request).map_err(|e| protocol(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io)?;
        let mut answer = Vec::new();
        BufReader::new(stream.take(CONTROL_REPLY_BYTES_MAX as u64 + 1))
            .read_until(b'\n', &mut answer)
            .map_err(|e| protocol(format!("no answer: {e}")))?;
        if answer.len() > CONTROL_REPLY_BYTES_MAX {
            return Err(protocol(format!(
                "the answer is longer than {CONTROL_REPLY_BYTES_MAX} bytes"
            )));
        }
        match serde_json::from_slice(&answer) {
            Ok(Reply::Ok(value)) => Ok(value),
            Ok(Reply::Error(e)) => Err(ControlError::Refused(e)),
            Err(e) => Err(protocol(format!("not an answer: {e}"))),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        async fn request(sent: &[u8]) -> Result<Request, String> {
            let (mut client, mut server) = UnixStream::pair().unwrap();
            client.write_all(sent).await.unwrap();
            client.shutdown().await.unwrap();
            read_request(&mut server).await
        }

        #[tokio::test]
        async fn one_bounded_request_line_of_a_known_op() {
            assert_eq!(
                request(b"{\"op\":\"status\"}\n").await,
                Ok(Request::Status {})
            );
            assert_eq!(request(b"{\"op\":\"logs\"}").await, Ok(Request::Logs {}));
            for refused in [
                &b"{\"op\":\"pay\"}\n"[..],
                b"{\"op\":\"logs\",\"all\":true}\n",
                b"status\n",
                b"",
            ] {
                let e = request(refused).await.unwrap_err();
                assert!(e.contains("not a request"), "{e}");
            }
            let long = format!("{{\"op\":\"logs\",\"x\":\"{}\"}}\n", "a".repeat(8192));
            let e = request(long.as_bytes()).await.unwrap_err();
            assert!(e.contains("longer than"), "{e}");
        }

        #[tokio::test]
        async fn a_reply_is_one_json_line() {
            let (mut client, mut server) = UnixStream::pair().unwrap();
            write_reply(&mut server, &Reply::Error("busy".into()))
                .await
                .unwrap();
            let mut text = String::new();
            client.read_to_string(&mut text).await.unwrap();
            assert_eq!(text, "{\"error\":\"busy\"}\n");
        }
    }
}

#[cfg_attr(not(unix), allow(dead_code))]
/// Runs one request: the one place where the operations are listed. Reads run on a blocking
/// thread (the status reads the whole journal and audit chain).
async fn dispatch(
    daemon: std::sync::Arc<crate::daemon::Daemon>,
    logs: Option<crate::log_ring::LogRing>,
    request: Request,
) -> Result<Value, String> {
    match request {
        Request::Status {} => {
            let status = tokio::task::spawn_blocking(move || crate::support::status_of(&daemon))
                .await
                .map_err(|e| format!("the status could not be read: {e}"))?;
            serde_json::to_value(status).map_err(|e| e.to_string())
        }
        Request::Logs {} => match logs {
            Some(ring) => Ok(serde_json::json!({ "lines": ring.lines() })),
            None => Err("this daemon keeps no log lines in memory; read its log output".into()),
        },
        Request::Backup { dest } => {
            if !dest.is_absolute() {
                return Err(format!(
                    "the backup directory {} is not an absolute path",
                    dest.display()
                ));
            }
            daemon
                .audit
                .append(crate::audit::AuditEntry {
                    operator: None,
                    role: None,
                    action: "data.backup".into(),
                    target: Some(dest.display().to_string()),
                    detail: serde_json::json!({ "via": "cardd backup (control socket)" }),
                    outcome: crate::rpc::AUDIT_STARTED.into(),
                })
                .map_err(|e| format!("the audit log refused the backup: {e}"))?;
            let manifest = tokio::task::spawn_blocking(move || {
                crate::backup::make_backup(&daemon.store, &dest, crate::datadir::DATA_FORMAT)
            })
            .await
            .map_err(|e| format!("the backup stopped: {e}"))?
            .map_err(|e| e.to_string())?;
            tracing::info!(created_at = %manifest.created_at, transactions = manifest.journal.transactions, audit_records = manifest.audit.records, "backup made");
            serde_json::to_value(manifest).map_err(|e| e.to_string())
        }
    }
}
