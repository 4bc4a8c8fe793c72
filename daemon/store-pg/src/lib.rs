//! cardd's issuer host on PostgreSQL, for a central host that many sites share, with the same
//! rules and refusals as the embedded stores of `cardd-store` (one trait-level test suite per
//! domain runs against both):
//!
//! * [`PgHost`] implements [`cardd_etc::IssuerHost`]: vehicle accounts, recharge records with
//!   their history and load transactions;
//! * [`PgGroupHost`] implements [`cardd_group::GroupHost`]: group recharge (集团充值): groups,
//!   the append-only quota ledger, recharge orders, quota top-ups and batches.
//!
//! Modules:
//! * [`db`]: [`Database`], the `tokio-postgres` connection pool (`deadpool-postgres`), its
//!   runtime and the transaction runner every store shares;
//! * [`host`]: [`PgHost`], the records;
//! * [`group`]: [`PgGroupHost`], group recharge;
//! * [`operators`]: [`PgOperators`], the fleet's operators (one account for every site,
//!   passwords checked at the host, disabled everywhere at once);
//! * [`migrate`]: the embedded, numbered schema migrations, applied at open. Table sets:
//!   version 1 (`0001_records.sql`) the records (`vehicles`, `vehicle_cards`, `record_days`,
//!   `recharge_records`, `record_history`, `record_txns`); version 3 (`0003_groups.sql`)
//!   group recharge (`groups`, `group_ledger`, `group_id_days`, `group_batches`,
//!   `group_batch_items`, `group_orders`, `group_topups`); version 5 (`0005_operators.sql`)
//!   the fleet's operators (`operators`).
//!
//! **Runtime.** The trait is synchronous and called from reader worker threads. A [`Database`]
//! owns a small tokio runtime ([`db::RUNTIME_THREADS`]) that drives its connections; each
//! call blocks the calling thread on that runtime until its transaction is done. So it must not
//! be called from an async task (it refuses, with [`cardd_etc::HostError::Database`] or
//! [`cardd_group::GroupError::Storage`], instead of blocking an executor thread): async code
//! calls it from a thread of its own.
//!
//! **Architecture Invariants.**
//! * Every state change is one SERIALIZABLE transaction, retried on serialization failures
//!   (SQLSTATE 40001) and deadlocks (40P01) at most [`db::TXN_ATTEMPTS_MAX`] times (a schema
//!   migration also when another host creates the same tables at that moment); nothing else
//!   is retried, so a change whose commit was not confirmed is reported, never repeated.
//! * Only what PostgreSQL-compatible distributed SQL engines also support: no advisory locks,
//!   no LISTEN/NOTIFY; one load in flight per card, one unsettled group order per card and a
//!   group quota never overdrawn are kept by serializable reads, not locks.
//! * Committed (`synchronous_commit` as the server has it: on in production and tests) before
//!   a call returns: durable before acknowledged.
//! * A binary opens only a schema it knows: an older binary refuses a newer schema
//!   ([`cardd_etc::HostError::SchemaTooNew`]; for the group host, [`cardd_group::GroupError::Storage`]
//!   in the same words) before reading or writing anything.
//! * Implements the traits' transition tables and holds no rule of its own; refusals are the
//!   domains' [`cardd_etc::HostError`]s and [`cardd_group::GroupError`]s, word for word those
//!   of the embedded hosts.
//! * A group's available quota is the balance after its last ledger entry; ledger entries are
//!   only inserted, and the schema chains each to its predecessor's balance.
//! * A load authorisation ([`PgLedger`]) is written in the transaction that claims what pays
//!   for it (a recharge record 未圈存 → 圈存中, or a group order that must be 充值中 for this card,
//!   amount and transaction), and follows the settlement of its record or order in the
//!   transaction that settles it.
#![forbid(unsafe_code)]

pub mod audit;
pub mod db;
pub mod group;
pub mod host;
pub mod ledger;
pub mod migrate;
pub mod operators;
pub mod review;
pub mod sites;

pub use audit::{AuditError, HostAuditEntry, HostAuditRecord, PgAudit, HOST_CHAIN};
pub use db::{Database, DbFailure, TXN_ATTEMPTS_MAX};
pub use group::{GroupVerifyReport, PgGroupHost};
pub use host::{PgHost, VerifyReport};
pub use ledger::{AuthorizationDetail, AuthorizationRow, AuthorizationState, PgLedger};
pub use migrate::SCHEMA_VERSION;
pub use operators::{OperatorError, OperatorStatus, PgOperators};
pub use review::{PgReview, ReviewError, ReviewItem, Verdict};
pub use sites::{PgSites, SiteRow};
