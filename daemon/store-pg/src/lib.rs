//! cardd's issuer host on PostgreSQL: [`PgHost`] implements [`cardd_etc::IssuerHost`] (vehicle
//! accounts, recharge records with their history and load transactions) for a central host
//! that many sites share, with the same rules and refusals as the embedded
//! `cardd_store::EmbeddedHost` (one trait-level test suite runs against both).
//!
//! * [`db`]: [`Database`], the `tokio-postgres` connection pool (`deadpool-postgres`), its
//!   runtime and the transaction runner every store shares;
//! * [`host`]: [`PgHost`], the records;
//! * [`migrate`]: the embedded, numbered schema migrations, applied at open.
//!
//! **Runtime.** The trait is synchronous and called from reader worker threads. A [`Database`]
//! owns a small tokio runtime ([`db::RUNTIME_THREADS`]) that drives its connections; each
//! call blocks the calling thread on that runtime until its transaction is done. So it must not
//! be called from an async task (it refuses with [`cardd_etc::HostError::Database`] instead of
//! blocking an executor thread): async code calls it from a thread of its own.
//!
//! **Architecture Invariants.**
//! * Every state change is one SERIALIZABLE transaction, retried on serialization failures
//!   (SQLSTATE 40001) and deadlocks (40P01) at most [`db::TXN_ATTEMPTS_MAX`] times (a schema
//!   migration also when another host creates the same tables at that moment); nothing else
//!   is retried, so a change whose commit was not confirmed is reported, never repeated.
//! * Only what PostgreSQL-compatible distributed SQL engines also support: no advisory locks,
//!   no LISTEN/NOTIFY; one load in flight per card is kept by serializable reads, not locks.
//! * Committed (`synchronous_commit` as the server has it: on in production and tests) before
//!   a call returns: durable before acknowledged.
//! * A binary opens only a schema it knows: an older binary refuses a newer schema
//!   ([`cardd_etc::HostError::SchemaTooNew`]) before reading or writing anything.
//! * Implements the trait's transition table and holds no rule of its own; refusals are the
//!   domain's [`cardd_etc::HostError`]s, word for word those of the embedded host.
#![forbid(unsafe_code)]

pub mod db;
pub mod group;
pub mod host;
pub mod migrate;

pub use db::{Database, DbFailure, TXN_ATTEMPTS_MAX};
pub use group::{GroupVerifyReport, PgGroupHost};
pub use host::{PgHost, VerifyReport};
pub use migrate::SCHEMA_VERSION;
