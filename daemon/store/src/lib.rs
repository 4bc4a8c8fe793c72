//! cardd's embedded storage: the business data behind a load, kept in the daemon's own sled
//! database, as the domain crates' storage traits describe it.
//!
//! * ETC (`cardd-etc`): [`EmbeddedHost`] ([`embedded`]) implements [`cardd_etc::IssuerHost`]:
//!   vehicle accounts and recharge records (充值记录), every change of 圈存 state checked,
//!   recorded with who made it and why, and durable before the answer; [`demo`]: the demo
//!   vehicles and records matching the simulator's demo cards; [`clock`]: the time source.
//!
//! * group recharge (集团充值, city one-cards paid from a group's quota): [`GroupHost`] and
//!   [`EmbeddedGroupHost`] ([`group`]) keep groups, the append-only quota ledger, recharge
//!   orders, quota top-ups and batches; [`group_model`] holds the records and the seed's rules;
//!   [`payment`] is the payment gateway with the embedded sandbox bank; [`group_export`] the
//!   query rows, statistics and CSV/XLSX export.
//!
//! This crate moves no money and talks to no card: the ETC service (`cardd_etc::EtcService`)
//! starts a load with `IssuerHost::begin_load`, runs the journaled load, and records its
//! outcome with `finish_load`, `abort_load` or `flag_reconciliation`.
#![forbid(unsafe_code)]

pub mod demo;
pub mod embedded;
pub mod group;
pub mod group_export;
pub mod group_model;
pub mod payment;

// The ETC domain's records, rules and refusals, under the names this crate's modules (and the
// group and OBU code that still reaches them through this crate) use.
pub(crate) use cardd_etc::IssuerHost;
pub use cardd_etc::{error, model, validate, HostError};

pub use cardd_journal::clock::{self, Clock, ManualClock, SystemClock};
pub use embedded::{EmbeddedHost, VerifyReport, HOST_TREE};
pub use group::{EmbeddedGroupHost, GroupError, GroupHost, GROUP_TREE};
pub use payment::{
    PaymentError, PaymentGateway, PaymentReceipt, PaymentRequest, SandboxBank, SandboxMode,
};
