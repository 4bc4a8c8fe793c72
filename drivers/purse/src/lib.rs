//! The card-application layer of cardd: it speaks the purse protocol of Chinese stored-value
//! cards (ETC user cards, city one-cards) and OBU ESAMs, and knows nothing of money policy.
//!
//! It exists so that the flows above it (loading, issuing, recovering an interrupted load)
//! deal in typed operations, never in APDU bytes or status words, and so that the exact
//! bytes of `docs/card-protocol.md` are built and parsed in one tested place:
//!
//! * [`commands`]: builders for every command of the contract;
//! * [`files`] and [`responses`]: typed card files and command responses, parsed without
//!   panics and serialised back where the host writes them;
//! * [`sam`]: the [`SecurityModule`] boundary (the host's cryptography, holding master keys
//!   and never returning one) and [`SoftSam`], its software implementation;
//! * [`purse`]: [`Purse`], one method per command over a [`cardd_reader::CardChannel`], the
//!   [`LoadPlan`]/[`LoadSession`] a flow journals between INITIALIZE and CREDIT, and
//!   [`decide_interrupted_load`];
//! * [`pin`]: the rule every VERIFY PIN goes through: a PIN a card refused once is never
//!   presented to it again automatically;
//! * [`redaction`]: what an APDU trace hides (PINs, MACs, TACs, keys), by command;
//! * [`error`]: errors that say what the card meant and what to do.
//!
//! No limits, no business rules, no journal: those belong to the flow engine.
#![forbid(unsafe_code)]

pub mod codes;
pub mod commands;
pub mod error;
pub mod files;
pub mod identify;
pub mod pin;
pub mod purse;
pub mod redaction;
pub mod responses;
pub mod sam;
mod text;

pub use commands::{key_index_for, obu_read_key_for, Pin, PurchaseKind, Sfi, TransactionType};
pub use error::{status_advice, CommandError, ParseError, PurseError};
pub use files::{
    algorithm_from_version, CappRecord, CityIssueInfo, EtcCardType, EtcIssueInfo, HolderInfo,
    LogRecord, ObuSystemInfo, ObuVehicleInfo, PlateColour,
};
pub use identify::{CardIdentity, CardKind};
pub use pin::{MemoryPinRefusals, PinMark, PinRecordError, PinRefusals};
pub use purse::{
    decide_from_log, decide_interrupted_load, decide_interrupted_load_verified, CardObservation,
    LoadOutcome, LoadPlan, LoadSession, OnlineCounters, Purse, PROBE_AMOUNT,
};
pub use redaction::PurseRedaction;
pub use responses::{DebitResponse, InitLoadResponse, InitPurchaseResponse, Proof};
pub use sam::{
    CardKeyContext, Funding, KeyHex, KeyScheme, LoadAuthorization, LoadTerms, MaintenanceKey,
    ObuKeys, PurchaseTerms, SamConfig, SamError, SchemeKeys, SecurityModule, SoftSam,
};
