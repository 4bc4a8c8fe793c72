//! The journaled load on simulated cards: exactly once through retries, card removal at every
//! APDU (before and after the command executes), timeouts, garbled status words, and journal
//! corruption.

use std::time::Duration;

use cardd_crypto::{bcd, Algorithm};
use cardd_journal::{
    load_card, recover_card, Journal, JournalError, LoadError, LoadRequest, Store, TxnState,
};
use cardd_purse::{Purse, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{
    FaultKind, FaultPlan, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld,
};

const READER: &str = "sim:r";

struct Rig {
    world: SimWorld,
    reader: Reader,
    store: Store,
    journal: Journal,
    sam: SoftSam,
    /// The database directory (kept for restarts).
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(card: SimCard) -> Rig {
        let world = SimWorld::new();
        world
            .add_reader(SimReaderConfig::new("r", SimReaderKind::Contact).with_card(card))
            .unwrap();
        let session = SimFactory::new(world.clone())
            .open(&ReaderSelector::Id(READER.into()))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let journal = Journal::open(&store).unwrap();
        Rig {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            store,
            journal,
            sam: SoftSam::demo(),
            _dir: dir,
        }
    }

    /// The process restarts on the same data directory (a failed-closed store is only left
    /// by a restart).
    fn restart(&mut self) {
        let dir = self.store.dir().to_path_buf();
        let placeholder = Store::temporary().unwrap();
        let placeholder_journal = Journal::open(&placeholder).unwrap();
        drop(std::mem::replace(&mut self.journal, placeholder_journal));
        drop(std::mem::replace(&mut self.store, placeholder));
        // sled releases its file lock when its background flusher has stopped: wait for it.
        let mut tries = 0;
        self.store = loop {
            match Store::open(&dir) {
                Ok(store) => break store,
                Err(_) if tries < 250 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("reopen after restart: {e}"),
            }
        };
        self.journal = Journal::open(&self.store).unwrap();
    }

    fn request(&self, txn_id: &str, amount_fen: u32) -> LoadRequest {
        LoadRequest {
            txn_id: txn_id.into(),
            amount_fen,
            terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
            date: bcd::date(2026, 11, 22),
            time: bcd::time(10, 0, 0),
            etc_pin: "123456".into(),
            expected_card: None,
            city_algorithm: Algorithm::Tdes,
            funding: cardd_journal::Funding::TestMode,
        }
    }

    fn load(
        &mut self,
        txn_id: &str,
        amount_fen: u32,
    ) -> Result<cardd_journal::LoadReceipt, LoadError> {
        let request = self.request(txn_id, amount_fen);
        load_card(
            &mut Purse::new(&mut self.reader),
            &self.sam,
            &self.journal,
            READER,
            &request,
        )
    }

    fn recover(&mut self) -> Result<Option<cardd_journal::RecoveryOutcome>, LoadError> {
        recover_card(
            &mut Purse::new(&mut self.reader),
            &self.sam,
            &self.journal,
            "123456",
            Algorithm::Tdes,
        )
    }

    fn balance(&self) -> u32 {
        self.world
            .card(READER)
            .or_else(|| self.world.take_pocket(READER))
            .and_then(|c| c.balance())
            .unwrap()
    }

    /// Puts a card pulled by a fault back into the reader.
    fn reinsert(&self) {
        if self.world.card(READER).is_none() {
            if let Some(card) = self.world.take_pocket(READER) {
                self.world.insert_card(READER, card).unwrap();
            }
        }
    }

    /// The card is loaded at another terminal (another system, its own journal): its online
    /// counter moves on and its last load proof is replaced by that load's.
    fn load_elsewhere(&mut self, amount_fen: u32) {
        self.reinsert();
        let store = Store::temporary().unwrap();
        let journal = Journal::open(&store).unwrap();
        let mut request = self.request("elsewhere", amount_fen);
        request.terminal = [0x99, 0x88, 0x77, 0x66, 0x55, 0x44];
        request.time = bcd::time(11, 30, 0);
        load_card(
            &mut Purse::new(&mut self.reader),
            &self.sam,
            &journal,
            "elsewhere",
            &request,
        )
        .unwrap();
    }

    /// Σ amounts of committed transactions of the card.
    fn committed_fen(&self, card: &str) -> u32 {
        self.journal
            .for_card(card)
            .unwrap()
            .iter()
            .filter(|t| matches!(t.state, TxnState::Committed { .. }))
            .map(|t| t.amount_fen())
            .sum()
    }
}

const ETC: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
/// A load's APDUs: SELECT, READ BINARY 0015, VERIFY, INITIALIZE FOR LOAD, CREDIT FOR LOAD.
const LOAD_APDUS: u64 = 5;
const CREDIT_APDU: u64 = 5;

#[test]
fn a_load_commits_once_and_a_retry_replays_it() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    let receipt = rig.load("t1", 5_000).unwrap();
    assert_eq!(
        (receipt.balance_before_fen, receipt.balance_after_fen),
        (10_000, 15_000)
    );
    assert!(!receipt.replayed);
    assert_eq!(rig.balance(), 15_000);
    let again = rig.load("t1", 5_000).unwrap();
    assert!(again.replayed, "the same id answers from the journal");
    assert_eq!(again.tac, receipt.tac);
    assert_eq!(rig.balance(), 15_000, "a retry never loads twice");
    assert!(matches!(
        rig.journal.get("t1").unwrap().unwrap().state,
        TxnState::Committed { .. }
    ));
}

#[test]
fn city_cards_load_too() {
    let mut rig = Rig::new(cardd_sim::demo::demo_city_card());
    rig.load("c1", 1_000).unwrap();
    assert_eq!(rig.balance(), 6_000);
}

#[test]
fn the_wrong_card_is_refused_and_nothing_is_recorded() {
    let mut rig = Rig::new(cardd_sim::demo::demo_city_card());
    let mut request = rig.request("w1", 1_000);
    request.expected_card = Some(ETC.into());
    let err = load_card(
        &mut Purse::new(&mut rig.reader),
        &rig.sam,
        &rig.journal,
        READER,
        &request,
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::WrongCard { .. }), "{err}");
    assert!(rig.journal.get("w1").unwrap().is_none());
    assert_eq!(rig.balance(), 5_000);
}

/// Card removal at every APDU of a load, before and after the card executes it, plus timeouts
/// and garbled status words: after re-presenting the card and recovery, the card's balance
/// change equals the committed loads, nothing is loaded twice, and no intent stays open.
#[test]
fn faults_at_every_apdu_never_lose_or_duplicate_money() {
    // Count the APDUs of a clean load.
    let mut clean = Rig::new(cardd_sim::demo::demo_etc_card());
    let before = clean.world.apdu_count(READER);
    clean.load("count", 100).unwrap();
    let apdus = clean.world.apdu_count(READER) - before;
    assert_eq!(apdus, LOAD_APDUS, "a load takes {apdus} APDUs");

    let kinds = [
        FaultKind::RemoveBeforeExec,
        FaultKind::RemoveAfterExec,
        FaultKind::Timeout { executed: false },
        FaultKind::Timeout { executed: true },
        FaultKind::GarbledSw,
    ];
    let mut cases = 0;
    for n in 1..=apdus {
        for kind in &kinds {
            let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
            let start = rig.balance();
            let at = rig.world.apdu_count(READER) + n;
            rig.world
                .set_fault_plan(READER, FaultPlan::new().at(at, kind.clone()))
                .unwrap();
            let first = rig.load("m1", 2_000);
            rig.reinsert();
            // The client retries with the same id after re-presenting the card.
            let retry = rig.load("m1", 2_000);
            rig.reinsert();
            let _ = rig.recover();
            let end = rig.balance();
            let committed = rig.committed_fen(ETC);
            assert_eq!(
                end - start,
                committed,
                "n={n} {kind:?}: first={first:?} retry={retry:?}"
            );
            assert!(
                committed == 0 || committed == 2_000,
                "n={n} {kind:?}: loaded twice"
            );
            assert!(
                rig.journal.list_open().unwrap().is_empty(),
                "n={n} {kind:?}: an intent stayed open"
            );
            if let Ok(r) = &retry {
                assert_eq!(
                    r.balance_after_fen, end,
                    "n={n} {kind:?}: the receipt matches the card"
                );
            }
            cases += 1;
        }
    }
    println!(
        "fault matrix: {apdus} APDUs x {} fault kinds = {cases} cases",
        kinds.len()
    );
}

#[test]
fn a_lost_credit_is_resolved_when_the_card_comes_back() {
    for (kind, landed) in [
        (FaultKind::RemoveAfterExec, true),
        (FaultKind::RemoveBeforeExec, false),
    ] {
        let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
        // Fail the CREDIT and every APDU after it until the card is back (the card leaves the reader).
        let count = rig.world.apdu_count(READER);
        rig.world
            .set_fault_plan(
                READER,
                FaultPlan::new().at(count + CREDIT_APDU, kind.clone()),
            )
            .unwrap();
        let err = rig.load("lost", 3_000).unwrap_err();
        assert!(
            matches!(err, LoadError::OutcomeUnknown { .. }),
            "{kind:?}: {err}"
        );
        assert_eq!(
            rig.journal.open_for_card(ETC).unwrap().unwrap().txn_id,
            "lost",
            "the intent stays open"
        );
        let stats = rig.journal.stats().unwrap();
        assert_eq!((stats.transactions, stats.open), (1, 1), "{stats:?}");
        assert_eq!(stats.by_state.get("intent"), Some(&1), "{stats:?}");
        let created = rig.journal.get("lost").unwrap().unwrap().created_at;
        assert_eq!(stats.oldest_open_at, Some(created));
        // While the intent is open, the card gets no new load without recovery: recovery runs first.
        rig.reinsert();
        let next = rig.load("next", 1_000).unwrap();
        let lost = rig.journal.get("lost").unwrap().unwrap();
        if landed {
            assert!(matches!(lost.state, TxnState::Committed { .. }), "{lost:?}");
            assert_eq!(rig.balance(), 10_000 + 3_000 + 1_000);
        } else {
            assert!(
                matches!(lost.state, TxnState::NotApplied { .. }),
                "{lost:?}"
            );
            assert_eq!(rig.balance(), 10_000 + 1_000);
        }
        assert_eq!(next.balance_after_fen, rig.balance());
        let stats = rig.journal.stats().unwrap();
        let committed = if landed { 2 } else { 1 };
        assert_eq!((stats.transactions, stats.open), (2, 0), "{stats:?}");
        assert_eq!(
            stats.by_state.get("committed"),
            Some(&committed),
            "{stats:?}"
        );
        assert_eq!(
            stats.by_state.contains_key("not_applied"),
            !landed,
            "{stats:?}"
        );
        assert_eq!(stats.oldest_open_at, None);
    }
}

#[test]
fn an_unprovable_card_state_blocks_new_loads_until_reconciled() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    let count = rig.world.apdu_count(READER);
    rig.world
        .set_fault_plan(
            READER,
            FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveBeforeExec),
        )
        .unwrap();
    assert!(rig.load("odd", 3_000).is_err());
    // Someone else loads the card elsewhere meanwhile: its counter moved without our proof.
    let mut card = rig.world.take_pocket(READER).unwrap();
    if let SimCard::Etc(etc) = &mut card {
        let atc = etc.online_atc();
        etc.purse_mut().set_online_atc(atc + 1);
    }
    rig.world.insert_card(READER, card).unwrap();
    let err = rig.load("after", 1_000).unwrap_err();
    assert!(matches!(err, LoadError::Unresolved { .. }), "{err}");
    assert!(matches!(
        rig.journal.get("odd").unwrap().unwrap().state,
        TxnState::NeedsReconciliation { .. }
    ));
    assert_eq!(rig.balance(), 10_000, "nothing was loaded");
}

#[test]
fn intents_are_durable_and_corruption_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    {
        let store = Store::open(&dir).unwrap();
        let journal = Journal::open(&store).unwrap();
        let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
        rig.journal = journal;
        rig.store = store;
        let count = rig.world.apdu_count(READER);
        rig.world
            .set_fault_plan(
                READER,
                FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveBeforeExec),
            )
            .unwrap();
        assert!(rig.load("durable", 1_000).is_err());
    }
    let store = Store::open(&dir).unwrap();
    let journal = Journal::open(&store).unwrap();
    assert_eq!(
        journal.open_for_card(ETC).unwrap().unwrap().txn_id,
        "durable",
        "the intent survived the restart"
    );
    journal.corrupt_for_test("durable").unwrap();
    drop(journal);
    match Journal::open(&store) {
        Err(JournalError::Corrupt { .. }) => {}
        other => panic!("a corrupt record must fail the journal closed: {other:?}"),
    }
}

/// The card answered CREDIT (or recovery read it), and then the journal could not record the
/// outcome: the answer is unknown, never a failure, and the card stays blocked until the card
/// itself settles the load.
#[test]
fn a_journal_failure_after_credit_is_unknown_and_the_card_settles_it_once() {
    for (name, credit_fault) in [
        ("answered", None),
        ("recovered", Some(FaultKind::Timeout { executed: true })),
    ] {
        let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
        if let Some(kind) = credit_fault {
            let count = rig.world.apdu_count(READER);
            rig.world
                .set_fault_plan(READER, FaultPlan::once(count + CREDIT_APDU, kind))
                .unwrap();
        }
        // The intent's flush succeeds; the flush of the outcome (after CREDIT) fails.
        rig.store.fail_flushes_for_test(1, 1);
        let err = rig.load("t", 3_000).unwrap_err();
        assert!(
            matches!(&err, LoadError::AfterCredit { txn_id, .. } if txn_id == "t"),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("unknown"), "{name}: {err}");
        assert_eq!(rig.balance(), 13_000, "{name}: the card did credit");
        let open = rig.journal.open_for_card(ETC).unwrap();
        assert_eq!(
            open.map(|t| t.txn_id).as_deref(),
            Some("t"),
            "{name}: the intent stays open for the card"
        );
        assert_eq!(
            rig.journal.get("t").unwrap().unwrap().state,
            TxnState::Intent
        );
        rig.journal.verify().unwrap();
        // The store failed closed: nothing is durable any more until a restart.
        assert!(rig.store.failed_closed().is_some(), "{name}");
        assert!(rig.load("next", 1_000).is_err(), "{name}: no new load");
        rig.restart();
        // While it is open no new intent can be recorded for the card; recovery settles it.
        match rig.recover().unwrap() {
            Some(cardd_journal::RecoveryOutcome::Landed { txn }) => assert_eq!(txn.txn_id, "t"),
            other => panic!("{name}: {other:?}"),
        }
        assert!(rig.journal.open_for_card(ETC).unwrap().is_none());
        assert_eq!(rig.committed_fen(ETC), 3_000, "{name}");
        // A retry of the same id answers from the journal; a new id loads new money only.
        assert!(rig.load("t", 3_000).unwrap().replayed, "{name}");
        assert_eq!(
            rig.balance(),
            13_000,
            "{name}: the money is on the card once"
        );
        rig.load("next", 1_000).unwrap();
        assert_eq!(rig.balance(), 14_000, "{name}");
        assert_eq!(rig.committed_fen(ETC), 4_000, "{name}");
    }
}

/// Recovery of an earlier load whose outcome cannot be recorded blocks every new load.
#[test]
fn a_journal_failure_in_recovery_keeps_the_card_blocked() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    let count = rig.world.apdu_count(READER);
    rig.world
        .set_fault_plan(
            READER,
            FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let err = rig.load("lost", 3_000).unwrap_err();
    assert!(matches!(err, LoadError::OutcomeUnknown { .. }), "{err}");
    rig.reinsert();
    // The next load recovers "lost" first; recording that outcome fails.
    rig.store.fail_flushes_for_test(0, 1);
    let err = rig.load("next", 1_000).unwrap_err();
    assert!(
        matches!(&err, LoadError::AfterCredit { txn_id, .. } if txn_id == "lost"),
        "{err}"
    );
    assert_eq!(
        rig.journal
            .open_for_card(ETC)
            .unwrap()
            .map(|t| t.txn_id)
            .as_deref(),
        Some("lost")
    );
    assert!(rig.journal.get("next").unwrap().is_none(), "no new intent");
    assert_eq!(rig.balance(), 13_000);
    // Failed closed: even a retry cannot record anything until the restart.
    assert!(rig.load("next", 1_000).is_err());
    assert_eq!(rig.balance(), 13_000);
    rig.restart();
    rig.load("next", 1_000).unwrap();
    assert_eq!(rig.balance(), 14_000);
    assert_eq!(rig.committed_fen(ETC), 4_000);
}

/// A card the interrupted load filled to its maximum balance refuses even a 1-fen INITIALIZE
/// FOR LOAD: the load is decided from its proof (MAC2 echo, TAC) and GET BALANCE, without the
/// probe, and the card is not left blocked.
#[test]
fn a_card_at_its_maximum_balance_is_decided_from_its_proof() {
    let card: SimCard = cardd_sim::cards::EtcCard::issue(
        &cardd_sim::cards::EtcCardSpec {
            max_balance_fen: 13_000,
            ..cardd_sim::demo::demo_etc_spec()
        },
        &cardd_sim::demo::demo_masters(),
    )
    .unwrap()
    .into();
    let mut rig = Rig::new(card);
    let count = rig.world.apdu_count(READER);
    rig.world
        .set_fault_plan(
            READER,
            FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let err = rig.load("full", 3_000).unwrap_err();
    assert!(matches!(err, LoadError::OutcomeUnknown { .. }), "{err}");
    rig.reinsert();
    assert_eq!(rig.balance(), 13_000, "at its maximum");
    match rig.recover().unwrap() {
        Some(cardd_journal::RecoveryOutcome::Landed { txn }) => assert_eq!(txn.txn_id, "full"),
        other => panic!("decided from the proof: {other:?}"),
    }
    assert!(rig.journal.open_for_card(ETC).unwrap().is_none());
    assert_eq!(rig.committed_fen(ETC), 3_000);
    assert!(rig.load("full", 3_000).unwrap().replayed);
    assert_eq!(rig.balance(), 13_000, "once");
}

/// When the card's counters and proof cannot decide an interrupted load (the card was loaded
/// at another terminal since, which replaced the proof), its 0018 log decides: a load record
/// with the load's counter and its amount, terminal, date and time → landed; a record with that
/// counter from another load → not landed (the counter the MAC2 was bound to is spent). A load
/// an earlier decision left for a person is decided the same way when the card comes back.
#[test]
fn a_replaced_proof_is_decided_from_the_cards_log() {
    for (kind, landed, left_for_a_person) in [
        (FaultKind::RemoveAfterExec, true, false),
        (FaultKind::RemoveBeforeExec, false, false),
        (FaultKind::RemoveAfterExec, true, true),
        (FaultKind::RemoveBeforeExec, false, true),
    ] {
        let what = format!("{kind:?} landed={landed} left_for_a_person={left_for_a_person}");
        let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
        let count = rig.world.apdu_count(READER);
        rig.world
            .set_fault_plan(
                READER,
                FaultPlan::new().at(count + CREDIT_APDU, kind.clone()),
            )
            .unwrap();
        let err = rig.load("lost", 3_000).unwrap_err();
        assert!(
            matches!(err, LoadError::OutcomeUnknown { .. }),
            "{what}: {err}"
        );
        if left_for_a_person {
            rig.journal
                .resolve(
                    "lost",
                    TxnState::NeedsReconciliation {
                        reason: "decided without the card's log".into(),
                    },
                )
                .unwrap();
        }
        rig.load_elsewhere(1_000);
        let outcome = rig.recover().unwrap().expect("an open load");
        let lost = rig.journal.get("lost").unwrap().unwrap();
        if landed {
            assert!(
                matches!(outcome, cardd_journal::RecoveryOutcome::Landed { .. }),
                "{what}: {outcome:?}"
            );
            assert!(
                matches!(
                    &lost.state,
                    TxnState::Committed {
                        resolution: cardd_journal::Resolution::CardLog,
                        ..
                    }
                ),
                "{what}: {lost:?}"
            );
            assert_eq!(rig.balance(), 10_000 + 3_000 + 1_000, "{what}");
        } else {
            assert!(
                matches!(outcome, cardd_journal::RecoveryOutcome::NotLanded { .. }),
                "{what}: {outcome:?}"
            );
            assert!(
                matches!(
                    &lost.state,
                    TxnState::NotApplied {
                        resolution: cardd_journal::Resolution::CardLog
                    }
                ),
                "{what}: {lost:?}"
            );
            assert_eq!(rig.balance(), 10_000 + 1_000, "{what}");
        }
        assert!(rig.journal.open_for_card(ETC).unwrap().is_none(), "{what}");
        // The money the journal says is on the card is on it, once.
        assert_eq!(
            rig.committed_fen(ETC) + 10_000 + 1_000,
            rig.balance(),
            "{what}"
        );
        rig.load("next", 500).unwrap();
        assert_eq!(
            rig.committed_fen(ETC) + 10_000 + 1_000,
            rig.balance(),
            "{what}"
        );
    }
}

/// A card at its maximum balance whose proof of the interrupted load was replaced (loaded to
/// the maximum at another terminal) refuses the probe and has no proof: its log decides.
#[test]
fn a_full_card_without_the_proof_is_decided_from_its_log() {
    let card: SimCard = cardd_sim::cards::EtcCard::issue(
        &cardd_sim::cards::EtcCardSpec {
            max_balance_fen: 14_000,
            ..cardd_sim::demo::demo_etc_spec()
        },
        &cardd_sim::demo::demo_masters(),
    )
    .unwrap()
    .into();
    let mut rig = Rig::new(card);
    let count = rig.world.apdu_count(READER);
    rig.world
        .set_fault_plan(
            READER,
            FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    assert!(rig.load("lost", 3_000).is_err());
    rig.load_elsewhere(1_000);
    assert_eq!(rig.balance(), 14_000, "at its maximum");
    match rig.recover().unwrap() {
        Some(cardd_journal::RecoveryOutcome::Landed { txn }) => {
            assert_eq!(txn.txn_id, "lost");
            assert!(matches!(
                txn.state,
                TxnState::Committed {
                    resolution: cardd_journal::Resolution::CardLog,
                    ..
                }
            ));
        }
        other => panic!("decided from the log: {other:?}"),
    }
    assert!(rig.journal.open_for_card(ETC).unwrap().is_none());
    assert_eq!(rig.committed_fen(ETC), 3_000);
}

/// The way out for a card that will not come back: not before the waiting period, two
/// different people agreeing on one verdict; the card is then watched, and when it comes back
/// it is checked against the verdict before anything else: agreeing, it loads again;
/// contradicting, it takes no load until an auditor clears it.
#[test]
fn a_lost_card_verdict_takes_two_people_and_the_card_is_checked_when_it_returns() {
    use cardd_journal::{LostCardError, WatchCheck};
    for (verdict_landed, truth_landed) in [(true, true), (false, true), (false, false)] {
        let what = format!("verdict landed={verdict_landed}, card landed={truth_landed}");
        let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
        let count = rig.world.apdu_count(READER);
        let kind = if truth_landed {
            FaultKind::RemoveAfterExec
        } else {
            FaultKind::RemoveBeforeExec
        };
        rig.world
            .set_fault_plan(READER, FaultPlan::new().at(count + CREDIT_APDU, kind))
            .unwrap();
        assert!(rig.load("lost", 3_000).is_err());
        let card = rig.world.take_pocket(READER).expect("the pulled card");

        let wait = Duration::from_secs(72 * 3600);
        let early = rig
            .journal
            .propose_lost_card("lost", verdict_landed, "卡片遗失", "sup", wait)
            .unwrap_err();
        assert!(
            matches!(early, LostCardError::TooEarly { .. }),
            "{what}: {early}"
        );
        let no_reason = rig
            .journal
            .propose_lost_card("lost", verdict_landed, " ", "sup", Duration::ZERO)
            .unwrap_err();
        assert!(matches!(no_reason, LostCardError::Reason), "{what}");
        rig.journal
            .propose_lost_card("lost", verdict_landed, "卡片遗失", "sup", Duration::ZERO)
            .unwrap();
        let same = rig
            .journal
            .confirm_lost_card("lost", verdict_landed, "sup")
            .unwrap_err();
        assert!(matches!(same, LostCardError::SamePerson { .. }), "{what}");
        let other = rig
            .journal
            .confirm_lost_card("lost", !verdict_landed, "aud")
            .unwrap_err();
        assert!(matches!(other, LostCardError::Disagrees { .. }), "{what}");
        assert!(
            rig.journal.open_for_card(ETC).unwrap().is_some(),
            "{what}: still open"
        );
        let (txn, _) = rig
            .journal
            .confirm_lost_card("lost", verdict_landed, "aud")
            .unwrap();
        assert_eq!(
            matches!(txn.state, TxnState::Committed { .. }),
            verdict_landed,
            "{what}"
        );
        assert!(rig.journal.open_for_card(ETC).unwrap().is_none(), "{what}");
        assert_eq!(
            rig.journal.watched_for_card(ETC).unwrap().len(),
            1,
            "{what}"
        );
        // Settled is settled: no second verdict, no second proposal.
        assert!(rig
            .journal
            .confirm_lost_card("lost", verdict_landed, "aud2")
            .is_err());

        // The card comes back: checked first.
        rig.world.insert_card(READER, card).unwrap();
        let result = rig.load("next", 1_000);
        let check = rig
            .journal
            .lost_card_verdict("lost")
            .unwrap()
            .unwrap()
            .card_check;
        if verdict_landed == truth_landed {
            assert!(
                matches!(check, Some(WatchCheck::Confirmed { .. })),
                "{what}: {check:?}"
            );
            result.unwrap();
            assert!(
                rig.journal.watched_for_card(ETC).unwrap().is_empty(),
                "{what}"
            );
        } else {
            assert!(
                matches!(check, Some(WatchCheck::Contradicted { .. })),
                "{what}: {check:?}"
            );
            let err = result.unwrap_err();
            assert!(
                matches!(err, LoadError::VerdictContradicted { .. }),
                "{what}: {err}"
            );
            assert!(
                rig.journal.get("next").unwrap().is_none(),
                "{what}: no intent"
            );
            // Still refused on the next try, until an auditor clears it.
            assert!(matches!(
                rig.load("next", 1_000).unwrap_err(),
                LoadError::VerdictContradicted { .. }
            ));
            rig.journal
                .clear_watch("lost", "已追回多付款项", "aud")
                .unwrap();
            rig.load("next", 1_000).unwrap();
        }
        let base = 10_000 + if truth_landed { 3_000 } else { 0 };
        assert_eq!(rig.balance(), base + 1_000, "{what}");
    }
}

/// A security module that refuses every load's authorisation and remembers what it was asked.
struct Refusing {
    inner: SoftSam,
    asked: std::sync::Mutex<Vec<cardd_purse::LoadAuthorization>>,
}

impl cardd_purse::SecurityModule for Refusing {
    fn authorize_load(
        &self,
        request: &cardd_purse::LoadAuthorization,
    ) -> Result<(), cardd_purse::SamError> {
        self.asked.lock().unwrap().push(request.clone());
        Err(cardd_purse::SamError::LoadNotFunded {
            reason: "no such record".into(),
        })
    }
    fn verify_load_mac1(
        &self,
        card: &cardd_purse::CardKeyContext,
        init: &cardd_purse::InitLoadResponse,
        terms: &cardd_purse::LoadTerms,
    ) -> Result<(), cardd_purse::SamError> {
        self.inner.verify_load_mac1(card, init, terms)
    }
    fn load_mac2(
        &self,
        card: &cardd_purse::CardKeyContext,
        init: &cardd_purse::InitLoadResponse,
        terms: &cardd_purse::LoadTerms,
    ) -> Result<[u8; 4], cardd_purse::SamError> {
        self.inner.load_mac2(card, init, terms)
    }
    fn verify_load_tac(
        &self,
        card: &cardd_purse::CardKeyContext,
        init: &cardd_purse::InitLoadResponse,
        terms: &cardd_purse::LoadTerms,
        tac: [u8; 4],
    ) -> Result<(), cardd_purse::SamError> {
        self.inner.verify_load_tac(card, init, terms, tac)
    }
    fn purchase_mac1(
        &self,
        card: &cardd_purse::CardKeyContext,
        init: &cardd_purse::InitPurchaseResponse,
        terms: &cardd_purse::PurchaseTerms,
    ) -> Result<[u8; 4], cardd_purse::SamError> {
        self.inner.purchase_mac1(card, init, terms)
    }
    fn verify_purchase_mac2(
        &self,
        card: &cardd_purse::CardKeyContext,
        init: &cardd_purse::InitPurchaseResponse,
        terms: &cardd_purse::PurchaseTerms,
        mac2: [u8; 4],
    ) -> Result<(), cardd_purse::SamError> {
        self.inner.verify_purchase_mac2(card, init, terms, mac2)
    }
    fn verify_purchase_tac(
        &self,
        card: &cardd_purse::CardKeyContext,
        terms: &cardd_purse::PurchaseTerms,
        tac: [u8; 4],
    ) -> Result<(), cardd_purse::SamError> {
        self.inner.verify_purchase_tac(card, terms, tac)
    }
    fn secure_messaging_mac(
        &self,
        card: &cardd_purse::CardKeyContext,
        key: cardd_purse::MaintenanceKey,
        challenge: [u8; 4],
        data: &[u8],
    ) -> Result<[u8; 4], cardd_purse::SamError> {
        self.inner.secure_messaging_mac(card, key, challenge, data)
    }
    fn decrypt_obu_vehicle(
        &self,
        card: &cardd_purse::CardKeyContext,
        random: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, cardd_purse::SamError> {
        self.inner.decrypt_obu_vehicle(card, random, ciphertext)
    }
}

/// The load asks the security module to authorise it (naming its funding, card and terms)
/// before INITIALIZE FOR LOAD; a refusal ends it there: no INITIALIZE, no intent, the card
/// untouched. An authorised load records what funded it.
#[test]
fn a_load_the_security_module_does_not_authorise_touches_nothing() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    let refusing = Refusing {
        inner: SoftSam::demo(),
        asked: std::sync::Mutex::new(Vec::new()),
    };
    let mut request = rig.request("unfunded", 5_000);
    request.funding = cardd_journal::Funding::EtcRecord {
        record_id: "R1".into(),
    };
    let err = load_card(
        &mut Purse::new(&mut rig.reader),
        &refusing,
        &rig.journal,
        READER,
        &request,
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::Unfunded(cardd_purse::SamError::LoadNotFunded { .. })
        ),
        "{err}"
    );
    let asked = refusing.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].txn_id, "unfunded");
    assert_eq!(asked[0].card_number, ETC);
    assert_eq!(asked[0].terms.amount, 5_000);
    assert_eq!(asked[0].funding, request.funding);
    // SELECT, READ BINARY 0015, VERIFY: no INITIALIZE FOR LOAD, no CREDIT.
    assert_eq!(rig.world.apdu_count(READER), LOAD_APDUS - 2);
    assert_eq!(rig.balance(), 10_000);
    assert!(rig.journal.get("unfunded").unwrap().is_none());
    assert!(rig.journal.for_card(ETC).unwrap().is_empty());

    rig.load("funded", 5_000).unwrap();
    let txn = rig.journal.get("funded").unwrap().unwrap();
    assert_eq!(txn.funding, Some(cardd_journal::Funding::TestMode));
    // Records written before the funding was recorded still read (as `None`).
    let mut old = serde_json::to_value(&txn).unwrap();
    assert_eq!(old["funding"], serde_json::json!({"kind": "test_mode"}));
    old.as_object_mut().unwrap().remove("funding");
    let old: cardd_journal::LoadTxn = serde_json::from_value(old).unwrap();
    assert_eq!(old.funding, None);
}

/// A journal restored from a backup made before `when` (RFC 3339): it knows nothing of the
/// loads the rig's journal made, and names `suspects` (record id, amount) on the ETC card.
fn restored_journal(when: &str, suspects: &[(&str, u32)]) -> (Store, Journal) {
    let store = Store::temporary().unwrap();
    let journal = Journal::open(&store).unwrap();
    let suspects: Vec<cardd_journal::Suspect> = suspects
        .iter()
        .map(|(record, amount_fen)| cardd_journal::Suspect {
            card_number: ETC.into(),
            funding: record_funding(record),
            amount_fen: *amount_fen,
        })
        .collect();
    journal.enter_restored_mode(when, true, &suspects).unwrap();
    (store, journal)
}

fn record_funding(record: &str) -> cardd_journal::Funding {
    cardd_journal::Funding::EtcRecord {
        record_id: record.into(),
    }
}

impl Rig {
    /// Loads `record` with `journal` (the rig's own journal when `None`).
    fn load_funded(
        &mut self,
        journal: Option<&Journal>,
        txn_id: &str,
        record: &str,
        amount_fen: u32,
    ) -> Result<cardd_journal::LoadReceipt, LoadError> {
        let mut request = self.request(txn_id, amount_fen);
        request.funding = record_funding(record);
        load_card(
            &mut Purse::new(&mut self.reader),
            &self.sam,
            journal.unwrap_or(&self.journal),
            READER,
            &request,
        )
    }
}

#[test]
fn after_a_restore_a_record_the_card_shows_loaded_is_not_loaded_again() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    // Loaded after the backup: r1 (20.00). r2 and r3 were never loaded; r3 has r1's amount.
    let first = rig.load_funded(None, "t1", "r1", 2_000).unwrap();
    let after_load = rig.balance();
    let (_store, journal) = restored_journal(
        "2026-11-22T00:00:00Z",
        &[("r1", 2_000), ("r2", 3_000), ("r3", 2_000)],
    );
    // r1 is claimed by the card's record of its load: nothing is credited.
    match rig.load_funded(Some(&journal), "t1-again", "r1", 2_000) {
        Err(LoadError::LoadedSinceBackup(claim)) => {
            assert_eq!(claim.amount_fen, 2_000);
            assert_eq!(claim.atc, first.online_atc_before);
            assert_eq!(claim.funding, record_funding("r1"));
        }
        other => panic!("expected LoadedSinceBackup, got {other:?}"),
    }
    assert_eq!(rig.balance(), after_load);
    assert_eq!(journal.restored_claims(10).unwrap().len(), 1);
    // Asked again (the record was not updated yet: a crash after the claim), the claim stands.
    assert!(matches!(
        rig.load_funded(Some(&journal), "t1-third", "r1", 2_000),
        Err(LoadError::LoadedSinceBackup(_))
    ));
    assert_eq!(rig.balance(), after_load);
    // The same load record is never claimed twice: r3 (same amount) is proven not loaded by a
    // log that holds the card's whole history, and loads.
    rig.load_funded(Some(&journal), "t3", "r3", 2_000).unwrap();
    rig.load_funded(Some(&journal), "t2", "r2", 3_000).unwrap();
    assert_eq!(rig.balance(), after_load + 5_000);
    assert!(journal.restored_suspects(10).unwrap().is_empty());
    assert!(journal.restored_orphans(10).unwrap().is_empty());
}

#[test]
fn after_a_restore_a_card_whose_log_does_not_reach_the_backup_waits_for_a_person() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    // Twelve loads elsewhere fill the card's recent history with records newer than the backup.
    for _ in 0..12 {
        rig.load_elsewhere(100);
    }
    let before = rig.balance();
    let (_store, journal) = restored_journal("2026-11-22T00:00:00Z", &[("r1", 2_000)]);
    match rig.load_funded(Some(&journal), "t1", "r1", 2_000) {
        Err(e @ LoadError::RestoredUnproven { .. }) => {
            assert!(e.to_string().contains("restored_clear"), "{e}");
        }
        other => panic!("expected RestoredUnproven, got {other:?}"),
    }
    assert_eq!(rig.balance(), before);
    assert_eq!(journal.restored_suspects(10).unwrap().len(), 1);
    // A supervisor compared the card with the records and cleared it: the load goes on.
    assert!(journal
        .clear_restored_suspect(ETC, &record_funding("r1"))
        .unwrap());
    rig.load_funded(Some(&journal), "t1", "r1", 2_000).unwrap();
    assert_eq!(rig.balance(), before + 2_000);

    // Had the backup been made after those records, the log would reach back to it.
    let (_store2, later) = restored_journal("2026-11-23T00:00:00Z", &[("r9", 500)]);
    rig.load_funded(Some(&later), "t9", "r9", 500).unwrap();
    assert_eq!(rig.balance(), before + 2_500);
}

#[test]
fn after_a_restore_loads_nothing_accounts_for_are_kept_for_the_auditor() {
    let mut rig = Rig::new(cardd_sim::demo::demo_etc_card());
    // A load paid by something the backup does not hold (a group order made after it).
    let orphan = rig.load("g1", 1_500).unwrap();
    let (_store, journal) = restored_journal("2026-11-22T00:00:00Z", &[]);
    rig.load_funded(Some(&journal), "t5", "r5", 700).unwrap();
    let orphans = journal.restored_orphans(10).unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].atc, orphan.online_atc_before);
    assert_eq!(orphans[0].amount_fen, 1_500);
    // The live journal is untouched (it was not restored).
    assert!(rig.journal.restored_mode().unwrap().is_none());
}
