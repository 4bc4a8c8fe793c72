//! The journaled load: the only way cardd credits a card, and recovery from the card.
//!
//! [`load_card`] runs, in this order: identify the card (SELECT, READ 0015), resolve any open
//! transaction of this card first ([`recover_card`]), verify the PIN (ETC), INITIALIZE FOR LOAD,
//! verify MAC1 and compute MAC2 (security module), **record the intent durably**, send CREDIT
//! FOR LOAD, verify the TAC, **record the outcome durably**, and only then return. If CREDIT
//! gets no answer (card pulled, timeout), the intent stays open and the caller is told the
//! outcome is unknown; the next time that card is presented, [`recover_card`] reads its online
//! counter, balance and transaction proof and decides (reference §3): landed → committed,
//! counter unchanged → not applied, anything else → needs reconciliation. Nothing here ever
//! sends a second CREDIT for a transaction whose outcome is not known.

use cardd_crypto::Algorithm;
use cardd_purse::{
    decide_from_log, decide_interrupted_load, decide_interrupted_load_verified, CardIdentity,
    CardKeyContext, Funding, LoadAuthorization, LoadOutcome, LoadPlan, LoadSession, Pin, Purse,
    PurseError, SamError, SecurityModule,
};
use cardd_reader::ReaderError;
use serde::{Deserialize, Serialize};

use crate::crash::crash_point;

/// The command name a card's refusal of INITIALIZE FOR LOAD carries.
const INIT_LOAD_COMMAND: &str = "INITIALIZE FOR LOAD";
use crate::journal::{now, Journal, JournalError, LoadTxn, Resolution, TxnState};
use crate::lost::{LostCardError, LostCardVerdict, WatchCheck};

/// What to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRequest {
    /// Unique id of this attempt (idempotent: the same id never loads twice).
    pub txn_id: String,
    pub amount_fen: u32,
    pub terminal: [u8; 6],
    /// Host date and time (BCD) sent in CREDIT FOR LOAD.
    pub date: [u8; 4],
    pub time: [u8; 3],
    /// The ETC card's PIN (ASCII digits); city cards need none.
    pub etc_pin: String,
    /// When set, the card in the reader must have this number.
    pub expected_card: Option<String>,
    /// The algorithm of city cards (they do not declare it).
    pub city_algorithm: Algorithm,
    /// What pays for this load; the security module authorises MAC2 only for a funded load.
    pub funding: Funding,
}

/// A completed load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReceipt {
    pub txn_id: String,
    pub card_number: String,
    pub amount_fen: u32,
    pub balance_before_fen: u32,
    pub balance_after_fen: u32,
    /// The online counter before the load.
    pub online_atc_before: u16,
    /// The card's TAC, verified, in hex.
    pub tac: String,
    /// True when this receipt comes from an earlier attempt with the same id (a retry).
    pub replayed: bool,
}

/// What recovery decided about a card's open transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RecoveryOutcome {
    /// The load had landed: recorded as committed (never load it again).
    Landed { txn: LoadTxn },
    /// The load had not landed: recorded as not applied (the money was not put on the card).
    NotLanded { txn: LoadTxn },
    /// Nothing could be proven: a person must reconcile.
    NeedsReconciliation { txn: LoadTxn },
}

/// Why a load did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The card or reader refused before CREDIT; nothing was recorded and nothing changed.
    #[error("{0}")]
    Card(#[from] PurseError),
    /// The security module refused (MAC1 invalid: not a genuine card or wrong keys); nothing changed.
    #[error("the card's MAC1 did not verify ({0}); the card is not one of ours or the keys are wrong; nothing was loaded")]
    Mac1(SamError),
    /// The security module refused to authorise the load: no funded record pays for it.
    /// Refused before CREDIT; nothing was recorded and nothing changed.
    #[error("the security module refused the load: {0}")]
    Unfunded(SamError),
    /// The card is not the one the request names.
    #[error("this is card {found}, not {expected}: insert the right card")]
    WrongCard { expected: String, found: String },
    /// The card is neither an ETC nor a city card.
    #[error("the card's 0015 file is {0} bytes: not an ETC (43/50) or city one-card (30)")]
    UnknownCard(usize),
    /// The card has an open transaction that recovery could not resolve.
    #[error("card {card} has an unresolved load ({txn_id}) that needs reconciliation by a supervisor; no new load until it is resolved")]
    Unresolved { card: String, txn_id: String },
    /// CREDIT was sent and no answer came back: the intent stays open.
    #[error("the card did not answer the credit ({source}); whether the money landed is unknown: put the card back so cardd can check it; do not load it again")]
    OutcomeUnknown {
        txn_id: String,
        #[source]
        source: ReaderError,
    },
    /// The card answered CREDIT but its TAC did not verify: recorded for reconciliation.
    #[error("the card's TAC for {txn_id} did not verify; the load is recorded for reconciliation")]
    TacInvalid { txn_id: String },
    /// The card answered CREDIT (or recovery read the card after it), but recording the outcome
    /// failed (a journal write or flush): the outcome is unknown to cardd and the intent stays
    /// open, so the card takes no new load until it is settled from the card.
    #[error("the card answered the credit for {txn_id}, but its outcome could not be recorded ({detail}); whether the money landed is unknown: put the card back so cardd can check it; do not load it again")]
    AfterCredit { txn_id: String, detail: String },
    /// The card was presented again after two people settled its load without it (lost-card
    /// verdict), and it contradicts their verdict: no new load until an auditor clears it.
    #[error("card {card} contradicts the lost-card verdict on {txn_id}: the card shows {card_shows}; no new load until an auditor has dealt with it")]
    VerdictContradicted {
        card: String,
        txn_id: String,
        card_shows: String,
    },
    /// Restored mode: the card's log shows that what pays for this load was loaded after the
    /// backup the data directory was restored from. Nothing was loaded; the item is loaded.
    #[error("the card's transaction log shows {} was loaded on {} (online counter {}) after the backup this data was restored from; it is not loaded again: mark it loaded", .0.funding, .0.card_time, .0.atc)]
    LoadedSinceBackup(crate::restored::Claim),
    /// Restored mode: the card's log does not reach back to the backup, so it cannot prove that
    /// what pays for this load was not loaded after it. Nothing was loaded.
    #[error("cardd was restored from a backup made at {backup_created_at}; card {card}'s transaction log reaches back only to {oldest_record}, so it cannot prove that {funding} was not loaded after the backup: a supervisor compares the card with the back office's records and clears it (`journal.restored_clear`); nothing was loaded")]
    RestoredUnproven {
        card: String,
        funding: Funding,
        backup_created_at: String,
        oldest_record: String,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A failure to record the outcome of `txn_id` after CREDIT was sent: unknown, never failed.
fn after_credit(txn_id: &str) -> impl FnOnce(JournalError) -> LoadError + '_ {
    move |e| LoadError::AfterCredit {
        txn_id: txn_id.to_owned(),
        detail: e.to_string(),
    }
}

/// The card in the reader, identified.
struct Identity {
    card_number: String,
    context: CardKeyContext,
    etc: bool,
}

fn identify(purse: &mut Purse<'_>, city_algorithm: Algorithm) -> Result<Identity, LoadError> {
    match purse.identify_payment_card()? {
        CardIdentity::Etc(info) => Ok(Identity {
            card_number: info.card_number(),
            context: CardKeyContext::etc(&info),
            etc: true,
        }),
        CardIdentity::City(info) => Ok(Identity {
            card_number: info.card_number(),
            context: CardKeyContext::city(&info, city_algorithm),
            etc: false,
        }),
        CardIdentity::Unsupported { issue_info_len } => Err(LoadError::UnknownCard(issue_info_len)),
        // identify_payment_card never answers Obu; an ESAM has no payment application.
        CardIdentity::Obu(_) => Err(LoadError::UnknownCard(0)),
    }
}

fn verify_pin(
    purse: &mut Purse<'_>,
    refusals: &dyn cardd_purse::PinRefusals,
    id: &Identity,
    pin: &str,
) -> Result<(), LoadError> {
    if id.etc {
        let pin = Pin::ascii(pin).map_err(PurseError::Command)?;
        purse.verify_pin(&id.card_number, &pin, refusals)?;
    }
    Ok(())
}

fn receipt(txn: &LoadTxn, tac: &str, replayed: bool) -> LoadReceipt {
    let init = &txn.session.init;
    LoadReceipt {
        txn_id: txn.txn_id.clone(),
        card_number: txn.card_number.clone(),
        amount_fen: txn.amount_fen(),
        balance_before_fen: init.old_balance,
        balance_after_fen: init.old_balance.saturating_add(txn.amount_fen()),
        online_atc_before: init.online_atc,
        tac: tac.to_owned(),
        replayed,
    }
}

/// Loads `request.amount_fen` onto the card in `purse`'s reader, exactly once.
pub fn load_card(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    journal: &Journal,
    reader_id: &str,
    request: &LoadRequest,
) -> Result<LoadReceipt, LoadError> {
    let id = identify(purse, request.city_algorithm)?;
    if let Some(expected) = &request.expected_card {
        if expected != &id.card_number {
            return Err(LoadError::WrongCard {
                expected: expected.clone(),
                found: id.card_number,
            });
        }
    }
    // A card on the watch list is checked against its lost-card verdicts before anything else.
    check_watch_list(purse, sam, journal, &id, &request.etc_pin)?;
    refuse_contradicted(journal, &id.card_number)?;
    // A retry of an id we know: a committed load answers from the journal (never twice); an
    // attempt the card proved not applied is attempted again; anything open is recovered first.
    if let Some(earlier) = journal.get(&request.txn_id)? {
        if earlier.state == TxnState::Intent {
            recover_card(
                purse,
                sam,
                journal,
                &request.etc_pin,
                request.city_algorithm,
            )?;
            purse.select_etc_adf()?;
        }
        let now = journal
            .get(&request.txn_id)?
            .ok_or_else(|| JournalError::NotFound(request.txn_id.clone()))?;
        match &now.state {
            TxnState::Committed { tac, .. } => return Ok(receipt(&now, tac, true)),
            TxnState::NotApplied { .. } => {}
            TxnState::Intent | TxnState::NeedsReconciliation { .. } => {
                return Err(LoadError::Unresolved {
                    card: now.card_number.clone(),
                    txn_id: now.txn_id.clone(),
                })
            }
        }
    }
    if journal.open_for_card(&id.card_number)?.is_some() {
        recover_card(
            purse,
            sam,
            journal,
            &request.etc_pin,
            request.city_algorithm,
        )?;
        if let Some(open) = journal.open_for_card(&id.card_number)? {
            return Err(LoadError::Unresolved {
                card: id.card_number,
                txn_id: open.txn_id,
            });
        }
        purse.select_etc_adf()?;
    }
    verify_pin(purse, journal.pin_refusals(), &id, &request.etc_pin)?;
    // After a restore from a backup, what the backup shows unloaded is checked against the
    // card's own log before it can be loaded (see the `restored` module).
    match check_restored_card(
        purse,
        journal,
        &id.card_number,
        &request.funding,
        request.terminal,
    )? {
        crate::restored::RestoredCheck::Clear => {}
        crate::restored::RestoredCheck::LoadedSinceBackup(claim) => {
            return Err(LoadError::LoadedSinceBackup(claim))
        }
        crate::restored::RestoredCheck::Unproven {
            card_number,
            funding,
            backup_created_at,
            oldest_record,
        } => {
            return Err(LoadError::RestoredUnproven {
                card: card_number,
                funding,
                backup_created_at,
                oldest_record,
            })
        }
    }
    let plan = LoadPlan::new(
        id.context,
        request.amount_fen,
        request.terminal,
        request.date,
        request.time,
    );
    // No credit without funds: the security module computes MAC2 only for a load it has
    // authorised against a funded record, asked before the card is touched.
    sam.authorize_load(&LoadAuthorization {
        txn_id: request.txn_id.clone(),
        card_number: id.card_number.clone(),
        card: plan.card,
        terms: plan.terms,
        funding: request.funding.clone(),
    })
    .map_err(LoadError::Unfunded)?;
    let init = purse.init_load_for(&plan)?;
    let session = LoadSession::start(plan, init, sam).map_err(|e| match e {
        // Refused before CREDIT, the card unchanged: no funded record, no authorisation, or
        // (a remote security module) no answer from the issuer host.
        SamError::LoadNotFunded { .. }
        | SamError::LoadNotAuthorized { .. }
        | SamError::HostUnreachable { .. } => LoadError::Unfunded(e),
        other => LoadError::Mac1(other),
    })?;
    let mut txn = LoadTxn::intent(&request.txn_id, &id.card_number, reader_id, session);
    txn.funding = Some(request.funding.clone());
    crash_point("load.before_intent");
    journal.record_intent(&txn)?;
    crash_point("load.before_credit");
    let credited = purse.credit_for(&session);
    crash_point("load.after_credit");
    match credited {
        Ok(tac) => {
            let tac_hex = hex::encode_upper(tac);
            if session.verify_tac(sam, tac).is_err() {
                journal
                    .resolve(
                        &txn.txn_id,
                        TxnState::NeedsReconciliation {
                            reason: format!("CREDIT answered TAC {tac_hex}, which did not verify"),
                        },
                    )
                    .map_err(after_credit(&txn.txn_id))?;
                return Err(LoadError::TacInvalid { txn_id: txn.txn_id });
            }
            let done = journal
                .resolve(
                    &txn.txn_id,
                    TxnState::Committed {
                        tac: tac_hex.clone(),
                        resolution: Resolution::CardResponse,
                    },
                )
                .map_err(after_credit(&txn.txn_id))?;
            Ok(receipt(&done, &tac_hex, false))
        }
        // Whatever went wrong (no answer, a status word that may be garbled, a broken
        // frame), the card's own state decides: read it now if it is still there.
        Err(failure) => match recover_card(
            purse,
            sam,
            journal,
            &request.etc_pin,
            request.city_algorithm,
        ) {
            Ok(Some(RecoveryOutcome::Landed { txn })) => {
                let tac = match &txn.state {
                    TxnState::Committed { tac, .. } => tac.clone(),
                    _ => String::new(),
                };
                Ok(receipt(&txn, &tac, false))
            }
            Ok(Some(RecoveryOutcome::NotLanded { .. })) => Err(LoadError::Card(failure)),
            Ok(Some(RecoveryOutcome::NeedsReconciliation { txn })) => Err(LoadError::Unresolved {
                card: txn.card_number,
                txn_id: txn.txn_id,
            }),
            Err(e @ LoadError::AfterCredit { .. }) => Err(e),
            Ok(None) | Err(_) => Err(LoadError::OutcomeUnknown {
                txn_id: txn.txn_id,
                source: match failure {
                    PurseError::Reader(source) => source,
                    other => ReaderError::Protocol {
                        reader: reader_id.to_owned(),
                        detail: other.to_string(),
                    },
                },
            }),
        },
    }
}

/// How many records of the card's 0018 log are read when counters and proof cannot decide a
/// load (ETC cards keep up to 50, transit cards 10).
pub const LOG_RECORDS_READ_MAX: u8 = 50;

/// What the card shows about an interrupted load, with everything it can show.
struct CardDecision {
    outcome: LoadOutcome,
    /// The proof's TAC (hex), when the card's proof of this load decided it.
    tac: String,
    resolution: Resolution,
    /// What was seen, for the record when nothing could be decided.
    detail: String,
}

/// Decides an interrupted load from the card in the reader (ADF selected, PIN verified): its
/// counters and transaction proof first, then its 0018 log for what they leave open (a proof
/// replaced by a later transaction, a card at its maximum balance that refuses the probe). A
/// proof that echoes this load's MAC2 with a TAC that does not verify is never overruled by
/// the log: that is a matter for a person.
fn decide_on_card(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    session: &LoadSession,
) -> Result<CardDecision, LoadError> {
    let seen = match purse.observe_load(session) {
        Ok(seen) => seen,
        // The card refuses the probing INITIALIZE (a card at its maximum balance without
        // this load's proof): only its log can speak.
        Err(PurseError::Status { command, sw }) if command == INIT_LOAD_COMMAND => {
            let log = purse.read_log(LOG_RECORDS_READ_MAX)?;
            return match decide_from_log(session, &log) {
                Some(outcome) => Ok(CardDecision {
                    outcome,
                    tac: String::new(),
                    resolution: Resolution::CardLog,
                    detail: String::new(),
                }),
                None => Err(PurseError::Status { command, sw }.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let outcome = decide_interrupted_load_verified(session, seen, sam);
    let tac = seen
        .proof
        .map(|p| hex::encode_upper(p.tac))
        .unwrap_or_default();
    let detail = format!(
        "card shows online counter {} and balance {} fen; the load expected counter {:?} and balance {:?}; proof {}",
        seen.online_atc,
        seen.balance,
        session.atc_after(),
        session.expected_balance(),
        if seen.proof.is_some() { "present but not ours" } else { "absent" }
    );
    let tac_failed = outcome == LoadOutcome::Unknown
        && decide_interrupted_load(session, seen) == LoadOutcome::Landed;
    if outcome != LoadOutcome::Unknown || tac_failed {
        let detail = if tac_failed {
            format!("the card's proof echoes this load's MAC2 but its TAC {tac} did not verify")
        } else {
            detail
        };
        return Ok(CardDecision {
            outcome,
            tac,
            resolution: Resolution::Recovery,
            detail,
        });
    }
    let log = purse.read_log(LOG_RECORDS_READ_MAX)?;
    Ok(match decide_from_log(session, &log) {
        Some(outcome) => CardDecision {
            outcome,
            tac: String::new(),
            resolution: Resolution::CardLog,
            detail,
        },
        None => CardDecision {
            outcome: LoadOutcome::Unknown,
            tac,
            resolution: Resolution::Recovery,
            detail: format!(
                "{detail}; the card's log ({} records) has no load with counter {}",
                log.len(),
                session.init.online_atc
            ),
        },
    })
}

/// What the card in the reader shows about `txn`, read only (nothing is recorded): `None` when
/// it is another card. Used to bound a person's verdict by the card.
pub fn card_view_of(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    txn: &LoadTxn,
    refusals: &dyn cardd_purse::PinRefusals,
    etc_pin: &str,
    city_algorithm: Algorithm,
) -> Result<Option<LoadOutcome>, LoadError> {
    let id = identify(purse, city_algorithm)?;
    if id.card_number != txn.card_number {
        return Ok(None);
    }
    verify_pin(purse, refusals, &id, etc_pin)?;
    Ok(Some(decide_on_card(purse, sam, &txn.session)?.outcome))
}

/// Checks the card in the reader against the lost-card verdicts on its watch list that it
/// has not been checked against yet, and records what it shows: a card that agrees, or can no
/// longer show the load, leaves the list; one that contradicts a verdict stays on it. Returns
/// the verdicts checked now (for the audit log). Cheap when nothing is watched.
pub fn check_watch(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    journal: &Journal,
    etc_pin: &str,
    city_algorithm: Algorithm,
) -> Result<Vec<LostCardVerdict>, LoadError> {
    if !journal.anything_watched()? {
        return Ok(Vec::new());
    }
    let id = identify(purse, city_algorithm)?;
    check_watch_list(purse, sam, journal, &id, etc_pin)
}

fn check_watch_list(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    journal: &Journal,
    id: &Identity,
    etc_pin: &str,
) -> Result<Vec<LostCardVerdict>, LoadError> {
    let unchecked: Vec<LostCardVerdict> = journal
        .watched_for_card(&id.card_number)?
        .into_iter()
        .filter(|v| v.card_check.is_none())
        .collect();
    if unchecked.is_empty() {
        return Ok(Vec::new());
    }
    verify_pin(purse, journal.pin_refusals(), id, etc_pin)?;
    let mut checked = Vec::new();
    for verdict in unchecked {
        let Some(txn) = journal.get(&verdict.txn_id)? else {
            continue;
        };
        // A card that cannot be read for this stays on the list.
        let decision = decide_on_card(purse, sam, &txn.session)?;
        let at = now();
        let check = match decision.outcome {
            LoadOutcome::Landed if verdict.landed => WatchCheck::Confirmed { at },
            LoadOutcome::NotLanded if !verdict.landed => WatchCheck::Confirmed { at },
            LoadOutcome::Landed | LoadOutcome::NotLanded => WatchCheck::Contradicted {
                at,
                card_shows: if verdict.landed {
                    "not_landed"
                } else {
                    "landed"
                }
                .into(),
                cleared_by: None,
                cleared_reason: None,
            },
            LoadOutcome::Unknown => WatchCheck::Undecided {
                at,
                detail: decision.detail,
            },
        };
        tracing::warn!(txn = %verdict.txn_id, card = %verdict.card_number, ?check, "a card with a lost-card verdict was presented again");
        let recorded = journal
            .record_watch_check(&verdict.txn_id, check)
            .map_err(|e| match e {
                LostCardError::Journal(j) => LoadError::Journal(j),
                other => LoadError::Journal(JournalError::Invalid(other.to_string())),
            })?;
        checked.push(recorded);
    }
    // The card's ADF is selected again for whatever comes next.
    purse.select_etc_adf()?;
    Ok(checked)
}

/// Refuses the card while it contradicts a lost-card verdict no auditor has cleared.
fn refuse_contradicted(journal: &Journal, card_number: &str) -> Result<(), LoadError> {
    match journal.contradicted_for_card(card_number)? {
        Some(v) => Err(LoadError::VerdictContradicted {
            card: v.card_number.clone(),
            txn_id: v.txn_id.clone(),
            card_shows: match &v.card_check {
                Some(WatchCheck::Contradicted { card_shows, .. }) => card_shows.clone(),
                _ => String::new(),
            },
        }),
        None => Ok(()),
    }
}

/// Resolves the open transaction of the card in the reader, if any, from the card's state.
/// Returns `None` when the card has no open transaction.
///
/// An `intent` is decided from the card, or becomes `needs_reconciliation` when the card
/// cannot prove either outcome. A load already waiting for reconciliation is decided again
/// from the card each time the card is presented (its log may show what its counters could
/// not): a proof settles it, nothing else changes it.
pub fn recover_card(
    purse: &mut Purse<'_>,
    sam: &dyn SecurityModule,
    journal: &Journal,
    etc_pin: &str,
    city_algorithm: Algorithm,
) -> Result<Option<RecoveryOutcome>, LoadError> {
    let id = identify(purse, city_algorithm)?;
    // A card on the watch list is checked against its verdicts before anything else.
    check_watch_list(purse, sam, journal, &id, etc_pin)?;
    refuse_contradicted(journal, &id.card_number)?;
    let Some(open) = journal.open_for_card(&id.card_number)? else {
        return Ok(None);
    };
    verify_pin(purse, journal.pin_refusals(), &id, etc_pin)?;
    let decision = decide_on_card(purse, sam, &open.session)?;
    tracing::info!(txn = %open.txn_id, card = %open.card_number, outcome = ?decision.outcome, by = ?decision.resolution, detail = %decision.detail, "decided an interrupted load from the card");
    crash_point("recovery.before_outcome");
    let outcome = match decision.outcome {
        LoadOutcome::Landed => {
            let txn = journal
                .resolve(
                    &open.txn_id,
                    TxnState::Committed {
                        tac: decision.tac,
                        resolution: decision.resolution,
                    },
                )
                .map_err(after_credit(&open.txn_id))?;
            RecoveryOutcome::Landed { txn }
        }
        LoadOutcome::NotLanded => {
            let txn = journal
                .resolve(
                    &open.txn_id,
                    TxnState::NotApplied {
                        resolution: decision.resolution,
                    },
                )
                .map_err(after_credit(&open.txn_id))?;
            RecoveryOutcome::NotLanded { txn }
        }
        LoadOutcome::Unknown if open.state != TxnState::Intent => {
            RecoveryOutcome::NeedsReconciliation { txn: open }
        }
        LoadOutcome::Unknown => {
            let txn = journal
                .resolve(
                    &open.txn_id,
                    TxnState::NeedsReconciliation {
                        reason: decision.detail,
                    },
                )
                .map_err(after_credit(&open.txn_id))?;
            RecoveryOutcome::NeedsReconciliation { txn }
        }
    };
    Ok(Some(outcome))
}

/// Checks the card in `purse` (identified as `card_number`, its ADF selected and PIN verified)
/// for `funding`'s load after a restore; see the `restored` module. `terminal` is this
/// terminal's id as loads stamp it. Writes the claim or the clearing durably before it answers.
fn check_restored_card(
    purse: &mut Purse<'_>,
    journal: &Journal,
    card_number: &str,
    funding: &Funding,
    terminal: [u8; 6],
) -> Result<crate::restored::RestoredCheck, LoadError> {
    if journal.restored_mode()?.is_none() {
        return Ok(crate::restored::RestoredCheck::Clear);
    }
    // Claimed before: the card showed this item loaded after the backup.
    if let Some(claim) = journal.restored_claim_for(card_number, funding)? {
        return Ok(crate::restored::RestoredCheck::LoadedSinceBackup(claim));
    }
    let checked = journal
        .tree
        .get(crate::restored::checked_key(card_number))
        .map_err(JournalError::from)?
        .is_some();
    if checked && journal.suspect(card_number, funding)?.is_none() {
        return Ok(crate::restored::RestoredCheck::Clear);
    }
    // READ RECORD leaves the ADF selected for whatever comes next.
    let log = purse.read_log(crate::restored::RESTORED_LOG_RECORDS_MAX)?;
    Ok(journal.check_suspect(card_number, funding, terminal, &log)?)
}
