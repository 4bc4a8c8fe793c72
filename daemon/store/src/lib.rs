//! cardd's embedded storage: the business data behind a load, kept in the daemon's own sled
//! database, as the domain crates' storage traits describe it.
//!
//! * ETC (`cardd-etc`): [`EmbeddedHost`] ([`embedded`]) implements [`cardd_etc::IssuerHost`]:
//!   vehicle accounts and recharge records (充值记录), every change of 圈存 state checked,
//!   recorded with who made it and why, and durable before the answer; [`demo`]: the demo
//!   vehicles and records matching the simulator's demo cards; [`clock`]: the time source.
//!
//! * group recharge (集团充值, city one-cards paid from a group's quota, `cardd-group`):
//!   [`EmbeddedGroupHost`] ([`group`]) implements `cardd_group::GroupHost` on sled (groups,
//!   the append-only quota ledger, recharge orders, quota top-ups, batches, the demo groups);
//!   [`SandboxBank`] ([`sandbox_bank`]) is the embedded `cardd_group::PaymentGateway`.
//!
//! * a fleet site's held load confirmations: [`SledOutbox`] ([`outbox`]) implements
//!   `cardd_authority::Outbox`.
//!
//! This crate moves no money and talks to no card: the ETC service (`cardd_etc::EtcService`)
//! starts a load with `IssuerHost::begin_load`, runs the journaled load, and records its
//! outcome with `finish_load`, `abort_load` or `flag_reconciliation`.
#![forbid(unsafe_code)]

pub mod demo;
pub mod embedded;
pub mod group;
pub mod outbox;
pub mod sandbox_bank;

pub use cardd_journal::clock::{self, Clock, ManualClock, SystemClock};
pub use embedded::{EmbeddedHost, VerifyReport, HOST_TREE};
pub use group::{EmbeddedGroupHost, GROUP_TREE};
pub use outbox::{SledOutbox, OUTBOX_TREE};
pub use sandbox_bank::SandboxBank;
