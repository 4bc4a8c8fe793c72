//! cardd's issuer host: the business data behind a load, as a bank teller sees it.
//!
//! The journal (`cardd-journal`) knows how to put money on a card exactly once; it does not
//! know whose money it is. That is the issuer host's job: which vehicle (车牌号 + 车牌颜色) holds
//! which ETC card, what was paid into the vehicle's account (充值记录) and whether each payment
//! is on the card yet (圈存状态: 未圈存, 圈存中, 已圈存, 待核对). The ETC mobile issuance app
//! that the seeds describe shows exactly these records and lets a teller set a failed 已圈存
//! record back to 未圈存 for 二次圈存; this crate keeps them, checks every change of state,
//! records who made it and why, and makes it durable before answering.
//!
//! * [`IssuerHost`]: the interface the daemon uses, so that a remote issuer host can replace the
//!   embedded one later;
//! * [`EmbeddedHost`] ([`embedded`]): the implementation on the daemon's sled store;
//! * [`model`]: the records, queries, pages and limits; [`validate`]: plate normalisation and
//!   input checks; [`error`]: refusals in zh-CN; [`clock`]: the time source; [`demo`]: the
//!   demo vehicles and records matching the simulator's demo cards.
//!
//! * group recharge (集团充值, city one-cards paid from a group's quota, `cardd-group`):
//!   [`EmbeddedGroupHost`] ([`group`]) implements `cardd_group::GroupHost` on sled (groups,
//!   the append-only quota ledger, recharge orders, quota top-ups, batches, the demo groups);
//!   [`SandboxBank`] ([`sandbox_bank`]) is the embedded `cardd_group::PaymentGateway`.
//!
//! This crate moves no money and talks to no card: the daemon starts a load with
//! [`IssuerHost::begin_load`], runs the journaled load, and records its outcome with
//! [`IssuerHost::finish_load`], [`IssuerHost::abort_load`] or
//! [`IssuerHost::flag_reconciliation`].
#![forbid(unsafe_code)]

pub mod demo;
pub mod embedded;
pub mod error;
pub mod group;
pub mod model;
pub mod sandbox_bank;
pub mod validate;

pub use cardd_journal::clock::{self, Clock, ManualClock, SystemClock};
pub use embedded::{EmbeddedHost, VerifyReport, HOST_TREE};
pub use error::HostError;
pub use group::{EmbeddedGroupHost, GROUP_TREE};
pub use model::{
    Page, PlateColour, RechargeRecord, RecordAction, RecordChange, RecordQuery, RecordStatus,
    SeedReport, Vehicle, VehicleInput, PAGE_SIZE_MAX, RECHARGE_FEN_MAX,
};
pub use sandbox_bank::SandboxBank;

/// The issuer host as the daemon sees it. Every method validates its input first (plates are
/// normalised, colours must be standard, amounts are integer fen within limits) and every
/// change is durable before it returns.
pub trait IssuerHost: Send + Sync + std::fmt::Debug {
    /// The vehicle account with this plate and colour, if any.
    fn vehicle(&self, plate: &str, colour: u16) -> Result<Option<Vehicle>, HostError>;

    /// The vehicle accounts holding this card (at most one: a card is issued to one vehicle).
    fn vehicles_for_card(&self, card_number: &str) -> Result<Vec<Vehicle>, HostError>;

    /// Creates or replaces the vehicle account with `vehicle`'s plate and colour. Refused when
    /// one of its cards is issued to another vehicle.
    fn upsert_vehicle(&self, vehicle: &VehicleInput, operator: &str) -> Result<Vehicle, HostError>;

    /// Records a payment of `amount_fen` into the vehicle's account: a new 未圈存 record for
    /// the vehicle's card in service. Refused for unknown vehicles, vehicles without a card and
    /// amounts not in 1..=[`RECHARGE_FEN_MAX`].
    fn recharge(
        &self,
        plate: &str,
        colour: u16,
        amount_fen: i64,
        operator: &str,
        channel: &str,
    ) -> Result<RechargeRecord, HostError>;

    /// A vehicle's records, newest first, optionally within a time range, one page at a time.
    fn query_records(&self, query: &RecordQuery) -> Result<Page, HostError>;

    /// A card's records, newest first, optionally only those in `status` (a kiosk looks for
    /// 未圈存). Refused beyond [`model::CARD_RECORDS_MAX`] matches.
    fn records_for_card(
        &self,
        card_number: &str,
        status: Option<RecordStatus>,
    ) -> Result<Vec<RechargeRecord>, HostError>;

    /// A record by id.
    fn record(&self, record_id: &str) -> Result<Option<RechargeRecord>, HostError>;

    /// The record whose load (current or earlier) used journal transaction `txn_id`, if any.
    fn record_for_txn(&self, txn_id: &str) -> Result<Option<RechargeRecord>, HostError>;

    /// Records that block their card (圈存中 or 待核对), oldest card first; at most
    /// [`model::CARD_RECORDS_MAX`]. The daemon settles 圈存中 ones from the journal at start-up.
    fn open_records(&self) -> Result<Vec<RechargeRecord>, HostError>;

    /// 未圈存 → 圈存中, for the journal transaction `txn_id`. Refused while another record of
    /// the card is 圈存中 or 待核对, and when `txn_id` belongs to another record.
    fn begin_load(
        &self,
        record_id: &str,
        operator: &str,
        txn_id: &str,
    ) -> Result<RechargeRecord, HostError>;

    /// 圈存中 → 已圈存, with the card's balance before and after (in fen); refused unless
    /// `after = before + amount`.
    fn finish_load(
        &self,
        record_id: &str,
        operator: &str,
        balance_before_fen: i64,
        balance_after_fen: i64,
    ) -> Result<RechargeRecord, HostError>;

    /// 圈存中 → 未圈存: the card proved the load did not land.
    fn abort_load(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeRecord, HostError>;

    /// 未圈存/圈存中/已圈存 → 待核对: nobody can tell whether the money is on the card.
    fn flag_reconciliation(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeRecord, HostError>;

    /// 已圈存 → 未圈存 (the seed's 修改圈存状态, for 二次圈存). The daemon decides whether it is
    /// safe; the host records who did it and why.
    fn mark_not_loaded(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeRecord, HostError>;

    /// 待核对 → 已圈存 (`loaded`) or 未圈存, after a person compared the card with the records.
    fn resolve_reconciliation(
        &self,
        record_id: &str,
        operator: &str,
        loaded: bool,
        reason: &str,
    ) -> Result<RechargeRecord, HostError>;
}
