//! [`Database`]: the connection pool, the runtime that drives it and the transaction runner that
//! every store of the host ([`crate::PgHost`] and the others) shares. One `Database` per
//! process and database; the stores hold it in an `Arc`.
//!
//! **Transactions.** [`Database::transaction`] runs a body in one transaction on a pooled
//! connection: changes SERIALIZABLE, reads REPEATABLE READ READ ONLY. A serialization failure
//! or deadlock rolls back and runs the whole body again, at most [`TXN_ATTEMPTS_MAX`] times
//! with a short random pause; a refusal of the body (its store's own error) rolls back and is
//! returned as is; any other database error rolls back and is reported, never retried (a
//! change whose commit was not confirmed is reported, not repeated).
//!
//! **Runtime.** The stores' traits are synchronous and called from reader worker threads. A
//! `Database` owns a small tokio runtime ([`RUNTIME_THREADS`]); [`Database::call`] blocks the
//! calling thread on it, and refuses to run on a thread of an async runtime instead of blocking
//! an executor.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Client as PooledClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::migrate;

/// Most runs of one transaction: the first and the retries after serialization failures or
/// deadlocks.
pub const TXN_ATTEMPTS_MAX: u32 = 16;
/// Longest pause before a retry, in milliseconds (the pause is random up to this, times the
/// attempt number).
pub const RETRY_PAUSE_MS_MAX: u64 = 10;
/// Most connections of one database's pool.
pub const POOL_CONNECTIONS_MAX: usize = 8;
/// Longest wait for a free pooled connection, in milliseconds.
pub const POOL_WAIT_MS: u64 = 10_000;
/// Longest wait for a new connection, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Longest run of one statement, in milliseconds (`SET LOCAL statement_timeout`).
pub const STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Worker threads of the runtime a database owns.
pub const RUNTIME_THREADS: usize = 2;

/// A failure of the database itself, which each store turns into its own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbFailure {
    /// The database failed or could not be reached; the message names the operation.
    #[error("{0}")]
    Failed(String),
    /// The database's schema is newer than this program knows.
    #[error("the database schema is version {found}, newer than this program's {supported}: upgrade cardd-host before starting it on this database")]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i32,
        /// The newest version this program knows.
        supported: i32,
    },
}

/// What a transaction body may fail with: its store's refusal, or the database.
#[derive(Debug)]
pub enum TxError<E> {
    Refused(E),
    Db(tokio_postgres::Error),
}

impl<E> From<tokio_postgres::Error> for TxError<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Db(e)
    }
}

/// A transaction body's result.
pub type TxResult<T, E> = Result<T, TxError<E>>;
/// A transaction body's run: it owns the pooled connection for the run and hands it back.
pub type TxFuture<'e, T, E> = Pin<Box<dyn Future<Output = (PooledClient, TxResult<T, E>)> + 'e>>;

/// Turns `$body`, an async block using the connection `$c: &Client`, into a transaction body.
macro_rules! body {
    (|$c:ident| $body:expr) => {
        move |pooled: deadpool_postgres::Client| -> $crate::db::TxFuture<'_, _, _> {
            Box::pin(async move {
                let result = {
                    let $c: &tokio_postgres::Client = &pooled;
                    $body.await
                };
                (pooled, result)
            })
        }
    };
}
pub(crate) use body;

/// How a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A change: SERIALIZABLE.
    Write,
    /// A read: one consistent snapshot, read only.
    Read,
    /// A schema migration: a write that may also collide with another host creating the same
    /// tables at the same moment (the catalog's unique indexes are not covered by
    /// serializable isolation), and is then retried too.
    Migrate,
}

fn retryable(e: &tokio_postgres::Error, mode: Mode) -> bool {
    let Some(c) = e.code() else {
        return false;
    };
    *c == SqlState::T_R_SERIALIZATION_FAILURE
        || *c == SqlState::T_R_DEADLOCK_DETECTED
        || (mode == Mode::Migrate
            && (*c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE))
}

/// The message of a database error, with its SQLSTATE.
pub fn db_error(what: &str, e: &tokio_postgres::Error) -> DbFailure {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    DbFailure::Failed(format!("{what}: {detail}"))
}

/// The host's database: pool, runtime, transactions.
pub struct Database {
    /// Always `Some` until dropped (taken to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    drop_before_commit: AtomicBool,
    migrated: migrate::Applied,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Drop for Database {
    /// Closes the connections without waiting, so a database may be dropped anywhere, an
    /// async task included.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Database {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the schema
    /// up to date ([`migrate::apply`]); refuses a newer schema before touching anything.
    pub fn open(url: &str) -> Result<Database, DbFailure> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| DbFailure::Failed(format!("数据库地址不正确：{e}")))?;
        config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_CONNECTIONS_MAX)
            .wait_timeout(Some(Duration::from_millis(POOL_WAIT_MS)))
            .create_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbFailure::Failed(format!("连接池：{e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("cardd-pg")
            .enable_all()
            .build()
            .map_err(|e| DbFailure::Failed(format!("启动数据库线程：{e}")))?;
        let mut db = Database {
            runtime: Some(runtime),
            pool,
            drop_before_commit: AtomicBool::new(false),
            migrated: migrate::Applied { from: 0, to: 0 },
        };
        let applied = db.call(db.transaction(
            Mode::Migrate,
            "升级数据库结构",
            body!(|c| async {
                migrate::apply(c).await.map_err(|e| match e {
                    migrate::ApplyError::TooNew { found, supported } => {
                        TxError::Refused(DbFailure::SchemaTooNew { found, supported })
                    }
                    migrate::ApplyError::Db(d) => TxError::Db(d),
                })
            }),
        ))?;
        tracing::info!(
            from = applied.from,
            to = applied.to,
            "issuer host database opened"
        );
        db.migrated = applied;
        Ok(db)
    }

    /// What opening did to the schema.
    pub fn migrated(&self) -> migrate::Applied {
        self.migrated
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i32, DbFailure> {
        self.call(self.transaction(
            Mode::Read,
            "读取数据库结构版本",
            body!(|c| async {
                let row = c
                    .query_one(
                        &format!(
                            "SELECT coalesce(max(version), 0) FROM {}",
                            migrate::VERSION_TABLE
                        ),
                        &[],
                    )
                    .await?;
                Ok(row.get::<_, i32>(0))
            }),
        ))
    }

    /// Makes the next write transaction lose its connection right before COMMIT (the server
    /// ends the session), to test that nothing of it remains. For tests of failure handling.
    #[doc(hidden)]
    pub fn drop_connection_before_next_commit(&self) {
        self.drop_before_commit.store(true, Ordering::SeqCst);
    }

    /// Runs `fut` to completion on the database's runtime, blocking this thread.
    pub fn call<T, E: From<DbFailure>>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(DbFailure::Failed(
                "the host's database was called from a thread of an async runtime; call it from a thread of its own (a reader worker, or std::thread)".into(),
            )
            .into());
        }
        match &self.runtime {
            Some(runtime) => runtime.block_on(fut),
            None => Err(DbFailure::Failed("the host's database is closed".into()).into()),
        }
    }

    /// Runs `body` in one transaction, again after serialization failures and deadlocks.
    pub async fn transaction<'e, T, E: From<DbFailure>>(
        &self,
        mode: Mode,
        what: &'static str,
        body: impl Fn(PooledClient) -> TxFuture<'e, T, E>,
    ) -> Result<T, E> {
        // A change reads only what it names, by key: index scans keep its predicate locks to the
        // rows and pages it read, where a sequential scan (chosen for a young, small table)
        // would lock the whole relation and fail every concurrent writer's serializable
        // transaction (the PostgreSQL manual's advice for serializable workloads).
        let begin = match mode {
            Mode::Write => "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL enable_seqscan = off",
            Mode::Migrate => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let begin = format!("{begin}; SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let pooled = self
                .pool
                .get()
                .await
                .map_err(|e| DbFailure::Failed(format!("{what}：无法连接数据库：{e}")))?;
            let (pooled, result) = match pooled.batch_execute(&begin).await {
                Ok(()) => body(pooled).await,
                Err(e) => (pooled, Err(e.into())),
            };
            let client: &Client = &pooled;
            let result: TxResult<T, E> = async {
                let value = result?;
                if mode == Mode::Write && self.drop_before_commit.swap(false, Ordering::SeqCst) {
                    client
                        .batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")
                        .await?;
                }
                client.batch_execute("COMMIT").await?;
                Ok(value)
            }
            .await;
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if !client.is_closed() {
                // Nothing of a failed transaction stays; a broken connection has lost it anyway.
                let _ = client.batch_execute("ROLLBACK").await;
            }
            match error {
                TxError::Refused(e) => return Err(e),
                TxError::Db(e) if retryable(&e, mode) && attempt < TXN_ATTEMPTS_MAX => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos()));
                    let pause = (nanos % (RETRY_PAUSE_MS_MAX + 1)) * u64::from(attempt);
                    tracing::debug!(what, attempt, "serialization conflict, retrying");
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                TxError::Db(e) if retryable(&e, mode) => {
                    return Err(DbFailure::Failed(format!(
                        "{what}：与其他操作冲突，重试 {TXN_ATTEMPTS_MAX} 次后仍未完成"
                    ))
                    .into())
                }
                TxError::Db(e) => return Err(db_error(what, &e).into()),
            }
        }
    }
}
