//! Recovery of interrupted loads whenever their card is presented.
//!
//! At start-up, and on every card-inserted event, the card in that reader is checked against
//! the journal: if it has an unresolved load, its counters and transaction proof decide the
//! outcome (`cardd_journal::recover_card`), and the decision is announced as an event. A reader
//! leased by someone is left alone: the holder's next load on that card recovers it first.

use std::sync::{Arc, Weak};

use cardd_journal::{check_watch, recover_card, LostCardVerdict, RecoveryOutcome, WatchCheck};
use cardd_purse::Purse;

use crate::daemon::Daemon;
use crate::events::EventKind;
use crate::readers::Holder;

/// The holder recovery jobs run as.
fn system() -> Holder {
    Holder {
        operator: "cardd".into(),
        session: "cardd-recovery".into(),
    }
}

/// Starts the recovery task; it ends when the daemon is dropped.
pub fn spawn(daemon: &Arc<Daemon>) {
    let weak = Arc::downgrade(daemon);
    let mut rx = daemon.events.subscribe();
    tokio::spawn(async move {
        let present: Vec<String> = match weak.upgrade() {
            Some(d) => d
                .readers
                .list()
                .into_iter()
                .filter(|r| r.card_present)
                .map(|r| r.id)
                .collect(),
            None => return,
        };
        for reader in present {
            check(&weak, reader).await;
        }
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if let EventKind::CardInserted { reader_id, .. } = event.kind {
                        check(&weak, reader_id).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn check(weak: &Weak<Daemon>, reader_id: String) {
    let Some(daemon) = weak.upgrade() else { return };
    if daemon.journal.is_none() {
        return;
    }
    let job_daemon = daemon.clone();
    let result = daemon
        .readers
        .run(
            &reader_id,
            &system(),
            "recovery: interrupted load check",
            move |reader| recover_on(&job_daemon, reader),
        )
        .await;
    let Ok(Some(outcome)) = result else { return };
    let (txn, name) = match &outcome {
        RecoveryOutcome::Landed { txn } => (txn, "landed"),
        RecoveryOutcome::NotLanded { txn } => (txn, "not_landed"),
        RecoveryOutcome::NeedsReconciliation { txn } => (txn, "needs_reconciliation"),
    };
    daemon.events.publish(EventKind::LoadResolved {
        reader_id,
        txn_id: txn.txn_id.clone(),
        card_number: txn.card_number.clone(),
        outcome: name.into(),
    });
}

/// Settles the open load of the card in `reader` from the card (if it has one), and the card's
/// recharge records with it. Runs inside a reader job; `None` when nothing was open or the
/// card could not be read.
pub(crate) fn recover_on(
    daemon: &Daemon,
    reader: &mut cardd_reader::Reader,
) -> Option<RecoveryOutcome> {
    let journal = daemon.journal.as_ref()?;
    let mut purse = Purse::new(reader);
    // A card on the watch list is checked against its lost-card verdicts first.
    if let Err(e) = check_watch_on(daemon, &mut purse) {
        if !is_not_a_payment_card(&e) {
            tracing::warn!(error = %e, "could not check the card against its lost-card verdicts");
        }
    }
    // In a fleet, a load another site began on this card and nobody settled is taken in
    // first, so that the card settles it here.
    if let Some(fleet) = &daemon.fleet {
        let number = match purse.identify_payment_card() {
            Ok(cardd_purse::CardIdentity::Etc(info)) => Some(info.card_number()),
            Ok(cardd_purse::CardIdentity::City(info)) => Some(info.card_number()),
            _ => None,
        };
        if let Some(number) = number {
            cardd_journal::adopt_foreign(journal, fleet.intents.as_ref(), &number);
        }
    }
    let outcome = recover_card(
        &mut purse,
        daemon.sam.as_ref(),
        journal,
        &daemon.config.etc_pin,
        cardd_crypto::Algorithm::Tdes,
    )
    .map_err(|e| {
        if is_not_a_payment_card(&e) {
            // An OBU or another kind of card: no purse, nothing of ours to settle.
            tracing::debug!(error = %e, "the card has no payment application; nothing to settle");
        } else {
            tracing::warn!(error = %e, "could not settle the card's open load from the card");
        }
    })
    .ok()
    .flatten();
    // The card's recharge records follow what the journal now knows (records whose load never
    // reached the journal are settled at start-up).
    if let Some(
        RecoveryOutcome::Landed { txn }
        | RecoveryOutcome::NotLanded { txn }
        | RecoveryOutcome::NeedsReconciliation { txn },
    ) = &outcome
    {
        let settled = daemon
            .etc
            .as_ref()
            .map(|etc| etc.settle_card(&txn.card_number));
        for record in settled.into_iter().flatten() {
            tracing::info!(record = %record.record_id, status = record.status.label(), "recharge record settled after the card was presented");
        }
    }
    outcome
}

/// Checks the card in `purse` against the lost-card verdicts on its watch list (if any) and
/// audits what it showed. Runs inside a reader job, before anything else is done with a card.
pub(crate) fn check_watch_on(
    daemon: &Daemon,
    purse: &mut Purse<'_>,
) -> Result<(), cardd_journal::LoadError> {
    let Some(journal) = daemon.journal.as_ref() else {
        return Ok(());
    };
    let checked = check_watch(
        purse,
        daemon.sam.as_ref(),
        journal,
        &daemon.config.etc_pin,
        cardd_crypto::Algorithm::Tdes,
    )?;
    for verdict in checked {
        audit_watch_check(&daemon.audit, &verdict);
    }
    Ok(())
}

/// Reports to the audit log what a card on the lost-card watch list showed, for the ETC
/// service's loads.
#[derive(Debug)]
pub(crate) struct AuditWatch(pub Arc<crate::audit::AuditLog>);

impl cardd_etc::WatchAudit for AuditWatch {
    fn watch_checked(&self, verdict: &LostCardVerdict) {
        audit_watch_check(&self.0, verdict);
    }
}

/// Records in the audit log what a card on the watch list showed about its verdict.
pub(crate) fn audit_watch_check(audit: &crate::audit::AuditLog, verdict: &LostCardVerdict) {
    let outcome = match &verdict.card_check {
        Some(WatchCheck::Confirmed { .. }) => "card_confirmed",
        Some(WatchCheck::Undecided { .. }) => "card_undecided",
        Some(WatchCheck::Contradicted { .. }) => "card_contradicted",
        None => return,
    };
    if outcome == "card_contradicted" {
        tracing::error!(txn = %verdict.txn_id, card = %verdict.card_number, "the card contradicts the lost-card verdict on its load: it takes no load until an auditor clears it");
    }
    let entry = crate::audit::AuditEntry {
        operator: None,
        role: None,
        action: "journal.watch_check".into(),
        target: Some(verdict.card_number.clone()),
        detail: serde_json::to_value(verdict).unwrap_or_default(),
        outcome: outcome.into(),
    };
    if let Err(e) = audit.append(entry) {
        tracing::error!(error = %e, "could not audit a watch-list check");
    }
}

/// The card answered SELECT of the payment application with "not found" (6A82): an OBU's ESAM
/// or a card of another kind, which no load of ours can concern.
fn is_not_a_payment_card(e: &cardd_journal::LoadError) -> bool {
    matches!(
        e,
        cardd_journal::LoadError::Card(cardd_purse::PurseError::Status { command, sw })
            if *command == "SELECT" && sw.0 == 0x6A82
    )
}
