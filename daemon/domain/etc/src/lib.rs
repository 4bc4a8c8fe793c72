//! cardd's ETC domain: vehicle accounts (车辆), recharge records (充值记录) and their 圈存
//! states, and the service that loads a record's money onto its card exactly once.
//!
//! The journal (`cardd-journal`) knows how to put money on a card exactly once; it does not
//! know whose money it is. This crate does: which vehicle (车牌号 + 车牌颜色) holds which ETC
//! card, what was paid into the vehicle's account and whether each payment is on the card yet
//! (圈存状态: 未圈存, 圈存中, 已圈存, 待核对). The ETC mobile issuance app that the seeds describe
//! shows exactly these records and lets a teller set a failed 已圈存 record back to 未圈存 for
//! 二次圈存; here that change is allowed only when the card proves it safe.
//!
//! * [`IssuerHost`]: the storage of vehicles and records (the rules of every state change are
//!   checked by its implementations: `cardd_store::EmbeddedHost` on sled,
//!   `cardd_store_pg::PgHost` on PostgreSQL; one suite, `tests/suite/mod.rs`, tests both);
//! * [`change`]: a record's state change as every store applies it (the transition table, the
//!   refusals, what each action does to the record), the stores only reading around it and
//!   persisting what it decided;
//! * [`model`]: the records, queries, pages and limits; [`validate`]: plate normalisation and
//!   input checks; [`error`]: refusals in zh-CN ([`HostError`], [`EtcError`]);
//! * [`EtcService`] ([`service`]): loads tied to records, the card's evidence about a record,
//!   修改圈存状态, reconciliation, and settling records from the journal;
//! * [`RecordOwners`]: this domain's answer to the journal's "whose load is this";
//! * [`views`]: records and vehicles as the wire (`cardd_api::etc`) shows them.
//!
//! **Architecture invariants.**
//! * A record's money moves only with proof from the card: 未圈存 → 圈存中 only inside the
//!   reader job that then sends the credit, under a fresh journal transaction whose intent is
//!   durable before CREDIT; so a 圈存中 record whose transaction the journal never saw never
//!   reached the card. 圈存中 → 未圈存 and 已圈存 → 未圈存 only when the journal or the card
//!   proves the money is not on the card (or a supervisor decides, with a reason, and never
//!   against a journal that saw the card's TAC). An unknown outcome is never shown as failed.
//! * No load of a record while another load to its card is open in the journal, for any record
//!   or group order (`cardd_journal::intent::card_blocked`).
//! * Every change of a record is durable before it is acknowledged, and records who made it.
//! * This crate talks to cards only through the `Reader`/`Purse` it is handed, and to storage
//!   only through [`IssuerHost`]: no sled, no transport, no script engine.
#![forbid(unsafe_code)]

pub mod change;
pub mod error;
pub mod model;
pub mod owners;
pub mod service;
pub mod validate;
pub mod views;

pub use error::{load_error, EtcError, HostError};
pub use model::{
    Page, PlateColour, RechargeRecord, RecordAction, RecordChange, RecordQuery, RecordStatus,
    SeedReport, Vehicle, VehicleDetails, VehicleInput, PAGE_SIZE_MAX, RECHARGE_FEN_MAX,
};
pub use owners::RecordOwners;
pub use service::{EtcService, EtcSettings, MarkOutcome, RecordLoad, WatchAudit};

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

    /// Applies one checked state change to the record ([`change::apply`], the same for every
    /// store), durably. The methods below are its named forms.
    fn change_record(
        &self,
        record_id: &str,
        request: change::ChangeRequest,
    ) -> Result<RechargeRecord, HostError>;

    /// 未圈存 → 圈存中, for the journal transaction `txn_id`. Refused while another record of
    /// the card is 圈存中 or 待核对, and when `txn_id` belongs to another record.
    fn begin_load(
        &self,
        record_id: &str,
        operator: &str,
        txn_id: &str,
    ) -> Result<RechargeRecord, HostError> {
        let record_id = change::record_id(record_id)?;
        self.change_record(
            record_id,
            change::ChangeRequest::begin_load(operator, txn_id)?,
        )
    }

    /// 圈存中 → 已圈存, with the card's balance before and after (in fen); refused unless
    /// `after = before + amount`.
    fn finish_load(
        &self,
        record_id: &str,
        operator: &str,
        balance_before_fen: i64,
        balance_after_fen: i64,
    ) -> Result<RechargeRecord, HostError> {
        let record_id = change::record_id(record_id)?;
        let request =
            change::ChangeRequest::finish_load(operator, balance_before_fen, balance_after_fen)?;
        self.change_record(record_id, request)
    }

    /// 圈存中 → 未圈存: the card proved the load did not land.
    fn abort_load(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeRecord, HostError> {
        self.change_with_reason(record_id, RecordAction::AbortLoad, operator, reason, false)
    }

    /// [`IssuerHost::abort_load`], only if the record's current load is `txn_id`.
    fn abort_load_of(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
        txn_id: &str,
    ) -> Result<RechargeRecord, HostError> {
        let record_id = change::record_id(record_id)?;
        let request =
            change::ChangeRequest::with_reason(RecordAction::AbortLoad, operator, reason, false)?
                .for_load(txn_id)?;
        self.change_record(record_id, request)
    }

    /// [`IssuerHost::flag_reconciliation`], only if the record's current load is `txn_id`.
    fn flag_reconciliation_of(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
        txn_id: &str,
    ) -> Result<RechargeRecord, HostError> {
        let record_id = change::record_id(record_id)?;
        let request = change::ChangeRequest::with_reason(
            RecordAction::FlagReconciliation,
            operator,
            reason,
            false,
        )?
        .for_load(txn_id)?;
        self.change_record(record_id, request)
    }

    /// 未圈存/圈存中/已圈存 → 待核对: nobody can tell whether the money is on the card.
    fn flag_reconciliation(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeRecord, HostError> {
        self.change_with_reason(
            record_id,
            RecordAction::FlagReconciliation,
            operator,
            reason,
            false,
        )
    }

    /// 已圈存 → 未圈存 (the seed's 修改圈存状态, for 二次圈存). The daemon decides whether it is
    /// safe; the host records who did it and why.
    fn mark_not_loaded(
        &self,
        record_id: &str,
        operator: &str,
        reason: &str,
    ) -> Result<RechargeRecord, HostError> {
        self.change_with_reason(
            record_id,
            RecordAction::MarkNotLoaded,
            operator,
            reason,
            false,
        )
    }

    /// 待核对 → 已圈存 (`loaded`) or 未圈存, after a person compared the card with the records.
    fn resolve_reconciliation(
        &self,
        record_id: &str,
        operator: &str,
        loaded: bool,
        reason: &str,
    ) -> Result<RechargeRecord, HostError> {
        self.change_with_reason(
            record_id,
            RecordAction::ResolveReconciliation,
            operator,
            reason,
            loaded,
        )
    }

    /// A change made with a reason.
    fn change_with_reason(
        &self,
        record_id: &str,
        action: RecordAction,
        operator: &str,
        reason: &str,
        loaded: bool,
    ) -> Result<RechargeRecord, HostError> {
        let record_id = change::record_id(record_id)?;
        let request = change::ChangeRequest::with_reason(action, operator, reason, loaded)?;
        self.change_record(record_id, request)
    }
}
