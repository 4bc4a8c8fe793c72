//! `journal.*`: the loads nobody could decide, a person's verdict, and lost cards.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::method::NoParams;

/// An undecided load as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenLoad {
    pub txn_id: String,
    pub card_number: String,
    pub reader_id: String,
    /// `intent` (decided when the card is presented) or `needs_reconciliation` (a person decides).
    pub state: String,
    /// Why nothing could be proven, for `needs_reconciliation`.
    pub reason: Option<String>,
    /// Amount, yuan.
    pub amount: String,
    /// The card's balance and online counter before the load.
    pub balance_before: String,
    pub online_atc_before: u16,
    pub created_at: String,
    /// From when (RFC 3339) a supervisor and an auditor may settle it without the card
    /// (lost, broken or PIN-blocked card): `journal.propose_lost_card`.
    pub lost_card_allowed_from: String,
    /// The lost-card verdict proposed on it and waiting for an auditor, if any.
    pub lost_card_proposal: Option<LostCardRow>,
}

/// A lost-card verdict as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LostCardRow {
    pub txn_id: String,
    pub card_number: String,
    /// The verdict: the money is on the card (`true`) or not.
    pub landed: bool,
    pub reason: String,
    pub proposed_by: String,
    /// The proposer's display name.
    pub proposed_by_name: String,
    pub proposed_at: String,
    pub confirmed_by: Option<String>,
    /// The confirming auditor's display name.
    pub confirmed_by_name: Option<String>,
    pub confirmed_at: Option<String>,
    /// `proposed` (waiting for an auditor), `watching` (confirmed; the card is checked if it is
    /// ever presented), `card_confirmed`, `card_undecided` (the card can no longer show the
    /// load; the verdict stands), `card_contradicted` (the card takes no load until an auditor
    /// clears it) or `cleared`.
    pub status: String,
    /// 申请中 / 已核定，监控中 / 卡片已证实 / 卡片无法证明，结论维持 / 卡片与结论不符 / 已处理.
    pub status_label: String,
    /// What the card showed, for `card_contradicted` and `cleared`.
    pub card_shows: Option<String>,
    pub cleared_by: Option<String>,
    pub cleared_reason: Option<String>,
}

/// `journal.resolve`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveParams {
    pub txn_id: String,
    /// The person's verdict: the money is on the card (`true`) or not (`false`).
    pub landed: bool,
    /// Why (what was compared: the card's balance, its log, the customer's receipt); required.
    pub reason: String,
}

/// `journal.propose_lost_card`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeLostCardParams {
    pub txn_id: String,
    /// The proposed verdict: the money is on the card (`true`) or not (`false`).
    pub landed: bool,
    /// Why, and how the card is known to be lost, broken or PIN-blocked; required (at most 500 characters).
    pub reason: String,
}

/// `journal.confirm_lost_card`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmLostCardParams {
    pub txn_id: String,
    /// The verdict being confirmed: must be the proposed one.
    pub landed: bool,
}

/// `journal.clear_watch`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearWatchParams {
    pub txn_id: String,
    /// How the difference between the verdict and the card was dealt with; required.
    pub reason: String,
}

/// What `journal.resolve` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Resolved {
    pub txn_id: String,
    /// `committed` or `not_applied`.
    pub state: String,
    /// ETC recharge records that followed the verdict.
    pub records_settled: usize,
    /// Group orders that followed the verdict.
    pub orders_settled: usize,
}

crate::method!(
    /// Loads not yet decided: `intent` and `needs_reconciliation`.
    Open, "journal.open", NoParams => Vec<OpenLoad>
);
crate::method!(
    /// Lost-card verdicts: proposed, confirmed and watched.
    LostCards, "journal.lost_cards", NoParams => Vec<LostCardRow>
);
crate::method!(
    /// A supervisor proposes a verdict on an unsettled load whose card is lost.
    ProposeLostCard, "journal.propose_lost_card", ProposeLostCardParams => LostCardRow
);
crate::method!(
    /// An auditor (not the proposer) confirms a proposed lost-card verdict.
    ConfirmLostCard, "journal.confirm_lost_card", ConfirmLostCardParams => Resolved
);
crate::method!(
    /// An auditor records how a card that contradicted its lost-card verdict was dealt with.
    ClearWatch, "journal.clear_watch", ClearWatchParams => LostCardRow
);
crate::method!(
    /// Record a person's verdict on a load awaiting reconciliation.
    Resolve, "journal.resolve", ResolveParams => Resolved
);

/// What pays for a load, as `journal.restored` shows it: an ETC recharge record or a group
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestoredItem {
    pub card_number: String,
    /// The ETC recharge record, when a record pays.
    pub record_id: Option<String>,
    /// The group order, when an order pays.
    pub order_id: Option<String>,
    /// Amount, yuan.
    pub amount: String,
}

/// A load found in a card's log after a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestoredFound {
    pub card_number: String,
    /// The item it was matched to (claims); none for loads nothing accounts for.
    pub record_id: Option<String>,
    pub order_id: Option<String>,
    /// Amount, yuan.
    pub amount: String,
    /// The card's online counter before that load.
    pub online_atc: u16,
    /// The card's date and time of the load (China time).
    pub card_time: String,
}

/// `journal.restored`: whether the data was restored from a backup, and what the card checks
/// of restored mode found so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Restored {
    /// The data was restored from a backup: cards are checked before loads.
    pub restored: bool,
    /// When the restored backup was made (RFC 3339).
    pub backup_created_at: Option<String>,
    /// When it was restored (RFC 3339).
    pub restored_at: Option<String>,
    /// The restore replaced newer data (`--force`).
    pub forced: bool,
    /// Recharge records the backup showed as not loaded whose cards have not yet been checked.
    pub waiting: Vec<RestoredItem>,
    /// Loads found on cards that were made after the backup, each with the record it settled
    /// (set to 已圈存 without loading again).
    pub loaded_since_backup: Vec<RestoredFound>,
    /// Loads found on cards that nothing in the restored data accounts for (for the auditor:
    /// compare with the back office's records).
    pub unaccounted: Vec<RestoredFound>,
    /// Each list holds at most `list_max` items.
    pub list_max: u32,
}

/// `journal.restored_clear`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoredClearParams {
    pub card_number: String,
    pub record_id: String,
    /// How the card and the back office's records were compared; required.
    pub reason: String,
}

crate::method!(
    /// Restored mode: what waits for its card check and what the checks found.
    RestoredStatus, "journal.restored", NoParams => Restored
);
crate::method!(
    /// A supervisor clears a record whose card could not prove it was not loaded after the
    /// backup, after comparing the card with the back office's records.
    RestoredClear, "journal.restored_clear", RestoredClearParams => Restored
);
