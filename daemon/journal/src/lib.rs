//! cardd's money journal: every card credit is exactly-once across crashes and card removal.
//!
//! * [`store`]: the sled database and the durable flush (sled's own `flush()` is not an fsync).
//! * [`journal`]: load transactions. An **intent** is written and made durable before CREDIT
//!   FOR LOAD reaches the card; the **outcome** is made durable before the client is answered.
//!   Every record carries a checksum verified on every read; a card with an unresolved intent
//!   gets no new load until the intent is resolved.
//! * [`load`]: the journaled load, the only way cardd credits a card, and recovery: reading the
//!   card (online counter, balance, GET TRANSACTION PROVE) to decide whether an interrupted
//!   load landed; it never credits twice.
//! * [`lost`]: the way out for a load whose card will not come back (lost, broken,
//!   PIN-blocked): a two-person verdict after a waiting period, and a watch list that checks
//!   the card against it if it is ever presented again.
//! * [`restored`]: after a restore from a backup, what the backup shows unloaded is checked
//!   against the card's own log before it is loaded, so a load made after the backup is never
//!   made twice.
//! * [`stats`]: counts of transactions by state and the oldest open load, for support.
//! * [`crash`]: named crash points compiled in only with the `crashpoints` feature, for the
//!   kill-at-every-step test matrix.
#![forbid(unsafe_code)]

pub mod clock;
pub mod copy;
pub mod crash;
pub mod inflight;
pub mod intent;
pub mod journal;
pub mod load;
pub mod lost;
pub mod pins;
pub mod restored;
pub mod stats;
pub mod store;
pub mod teller;

/// What pays for a load ([`LoadRequest::funding`], recorded in [`LoadTxn::funding`]).
pub use cardd_purse::Funding;
pub use clock::{Clock, ManualClock, SystemClock};
pub use copy::{CopyStats, COPY_ATTEMPTS_MAX};
pub use inflight::{InFlight, InFlightGuard};
pub use intent::{adopt_foreign, ForeignIntents, IntentBlock, IntentOwners};
pub use journal::{IntentOutcome, Journal, JournalError, LoadTxn, Resolution, TxnState};
pub use load::{
    card_view_of, check_watch, load_card, recover_card, LoadError, LoadReceipt, LoadRequest,
    RecoveryOutcome,
};
pub use lost::{LostCardError, LostCardVerdict, WatchCheck, LOST_REASON_CHARS_MAX};
pub use pins::{PinRefusalRecord, PIN_REFUSALS_MAX, PIN_REFUSALS_TREE};
pub use restored::{Claim, Orphan, RestoredCheck, RestoredMode, Suspect};
pub use stats::JournalStats;
pub use store::{FlushStats, Store, StoreError, WriteMark};

/// China Standard Time: every time a teller, customer or auditor sees is at +08:00.
pub const CHINA_OFFSET: time::UtcOffset = time::macros::offset!(+8);
