//! Group recharge (集团充值): a company (集团) recharges its employees' city one-cards out of a
//! prepaid quota (额度) that it tops up by bank transfer (额度充值).
//!
//! This crate owns the business of it, without storage engine or transport:
//!
//! * [`model`]: groups, the quota ledger, recharge orders, top-ups, batches, query periods, and
//!   the seed's rules (a multiple of 10 yuan, at least 10 yuan, the card at most 1000 yuan
//!   afterwards), defined here once;
//! * [`GroupHost`] ([`host`]): the group store as the service needs it, with the pure rule
//!   checks [`check_recharge`] and [`check_topup_amount`]; `cardd-store` implements it on sled,
//!   `cardd-store-pg` on PostgreSQL (one trait-level suite, `tests/suite`, runs against both);
//! * [`payment`]: the payment gateway that top-ups go through;
//! * [`export`]: the query rows, their statistics, and CSV/XLSX export;
//! * [`GroupService`] ([`service`]): recharge with its reservation and settlement,
//!   reconciliation of orders with the journal, the auditor's card evidence, refunds, top-ups,
//!   batches, queries, and who sees which group;
//! * [`GroupOwners`] ([`owners`]): names the group orders behind journal transactions for the
//!   journal's exactly-once-per-intent check.
//!
//! **Architecture invariants.**
//! * Money is integer fen; the quota moves only by appending to the group's ledger, and the
//!   available quota is always the ledger's sum.
//! * The quota of a recharge is reserved durably *before* the card is credited; the order is
//!   settled from what the journal (and so the card) proves: credited → 充值成功, proven not
//!   credited → 充值失败（待退款）, anything else → 结果待确认. An unknown outcome is never shown
//!   or stored as failed, and a load the card proves landed is never refunded.
//! * Each order changes status once along its state machine; nothing is refunded twice.
//! * A group operator sees and acts on their own group only.
//! * No storage engine, no async runtime, no transport here: storage is [`GroupHost`], the bank
//!   is [`payment::PaymentGateway`], and the daemon maps [`GroupError::code`] to JSON-RPC.
#![forbid(unsafe_code)]

pub mod error;
pub mod export;
pub mod host;
pub mod model;
pub mod owners;
pub mod payment;
pub mod service;

pub use error::GroupError;
pub use host::{check_recharge, check_topup_amount, GroupHost};
pub use owners::GroupOwners;
pub use payment::{PaymentError, PaymentGateway, PaymentReceipt, PaymentRequest, SandboxMode};
pub use service::GroupService;
