//! The ETC service without a daemon: a record loaded onto a simulated card exactly once, the
//! card-vs-record checks (wrong card, expired card), a card pulled mid-CREDIT leaving the
//! record 圈存中 (never 未圈存) until the card settles it, 修改圈存状态 refused without proof,
//! and records settled from the journal at start-up.

use std::sync::Arc;
use std::time::Duration;

use cardd_api::etc::Verdict;
use cardd_api::ErrorCode;
use cardd_etc::{EtcError, EtcService, EtcSettings, IssuerHost, RecordOwners, RecordStatus};
use cardd_journal::{
    Clock, InFlight, IntentOwners, Journal, LostCardVerdict, ManualClock, Store, TxnState,
};
use cardd_purse::{SecurityModule, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};
use cardd_store::demo::{
    DEMO_ETC_CARD, DEMO_NOT_LOADED_RECORD_IDS, DEMO_SM4_COLOUR, DEMO_SM4_PLATE,
};
use cardd_store::EmbeddedHost;
use time::macros::datetime;

const READER: &str = "sim:r";
/// SELECT and READ BINARY 0015 (the record's card checked), then the journaled load: SELECT,
/// READ BINARY 0015, VERIFY, INITIALIZE FOR LOAD, CREDIT FOR LOAD.
const CREDIT_APDU: u64 = 7;

#[derive(Debug)]
struct NoWatch;

impl cardd_etc::WatchAudit for NoWatch {
    fn watch_checked(&self, _: &LostCardVerdict) {}
}

struct Rig {
    world: SimWorld,
    reader: Reader,
    store: Store,
    records: Arc<dyn IssuerHost>,
    journal: Arc<Journal>,
    clock: Arc<ManualClock>,
    service: EtcService,
}

impl Rig {
    fn new() -> Rig {
        let world = SimWorld::new();
        world
            .add_reader(
                SimReaderConfig::new("r", SimReaderKind::Contact)
                    .with_card(cardd_sim::demo::demo_etc_card()),
            )
            .unwrap();
        let session = SimFactory::new(world.clone())
            .open(&ReaderSelector::Id(READER.into()))
            .unwrap();
        let store = Store::temporary().unwrap();
        let host = EmbeddedHost::open(&store).unwrap();
        host.seed_demo().unwrap();
        let records: Arc<dyn IssuerHost> = Arc::new(host);
        let journal = Arc::new(Journal::open(&store).unwrap());
        let clock = Arc::new(ManualClock::new(datetime!(2026-11-22 10:00:00 +8)));
        let sam: Arc<dyn SecurityModule> = Arc::new(SoftSam::demo());
        let owners: Arc<dyn IntentOwners> = Arc::new(RecordOwners(records.clone()));
        let service = EtcService::new(
            records.clone(),
            Some(journal.clone()),
            sam,
            InFlight::default(),
            owners,
            Arc::new(NoWatch),
            clock.clone() as Arc<dyn Clock>,
            EtcSettings {
                etc_pin: "123456".into(),
                terminal_id: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                fleet: None,
            },
        );
        Rig {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            store,
            records,
            journal,
            clock,
            service,
        }
    }

    fn balance(&self) -> u32 {
        self.world
            .card(READER)
            .or_else(|| self.world.take_pocket(READER))
            .and_then(|c| c.balance())
            .unwrap()
    }

    fn reinsert(&self) {
        if self.world.card(READER).is_none() {
            if let Some(card) = self.world.take_pocket(READER) {
                self.world.insert_card(READER, card).unwrap();
            }
        }
    }

    fn status(&self, record_id: &str) -> RecordStatus {
        self.records.record(record_id).unwrap().unwrap().status
    }

    fn load(&mut self, record_id: &str, txn_id: &str) -> Result<cardd_etc::RecordLoad, EtcError> {
        self.service
            .load_record(&mut self.reader, READER, record_id, "teller", txn_id)
    }

    /// Pulls the card at the CREDIT of the next load (after or before the card executed it).
    fn pull_at_credit(&self, executed: bool) {
        let at = self.world.apdu_count(READER) + CREDIT_APDU;
        let kind = if executed {
            FaultKind::RemoveAfterExec
        } else {
            FaultKind::RemoveBeforeExec
        };
        self.world
            .set_fault_plan(READER, FaultPlan::new().at(at, kind))
            .unwrap();
    }
}

const RECORD: &str = DEMO_NOT_LOADED_RECORD_IDS[0];

#[test]
fn a_record_is_loaded_once_and_a_second_load_is_refused() {
    let mut rig = Rig::new();
    let amount = rig.records.record(RECORD).unwrap().unwrap().amount_fen;
    let before = rig.balance();
    assert_eq!(rig.status(RECORD), RecordStatus::NotLoaded);
    let done = rig.load(RECORD, "t1").expect("load");
    assert!(!done.already_on_card);
    let receipt = done.receipt.expect("credited");
    assert_eq!(done.record.status, RecordStatus::Loaded);
    assert_eq!(i64::from(rig.balance() - before), amount);
    assert_eq!(receipt.balance_after_fen, rig.balance());
    assert_eq!(
        done.record.balance_after_fen,
        Some(i64::from(rig.balance()))
    );
    // 已圈存 → another load is refused; the card is untouched.
    let again = rig.load(RECORD, "t2").unwrap_err();
    assert_eq!(again.code(), ErrorCode::RecordStateConflict, "{again}");
    assert!(again.to_string().contains("不能重复圈存"), "{again}");
    assert_eq!(i64::from(rig.balance() - before), amount);
    // And 修改圈存状态 with the card is refused with the card's proof.
    let refused = rig
        .service
        .mark_not_loaded(Some(&mut rig.reader), RECORD, "teller", false, None)
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::LoadLanded, "{refused}");
    assert_eq!(rig.status(RECORD), RecordStatus::Loaded);
}

#[test]
fn a_card_pulled_after_credit_leaves_the_record_loading_until_the_card_proves_it_landed() {
    let mut rig = Rig::new();
    let before = rig.balance();
    rig.pull_at_credit(true);
    let err = rig.load(RECORD, "t1").unwrap_err();
    assert_eq!(err.code(), ErrorCode::LoadOutcomeUnknown, "{err}");
    // Never 未圈存: the money may be on the card.
    assert_eq!(rig.status(RECORD), RecordStatus::Loading);
    // Without the card, 修改圈存状态 is refused to a teller.
    let refused = rig
        .service
        .mark_not_loaded(None, RECORD, "teller", false, None)
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::CardEvidenceRequired, "{refused}");
    assert_eq!(rig.status(RECORD), RecordStatus::Loading);
    // The card comes back: its proof settles the record as 已圈存, and nothing loads twice.
    rig.reinsert();
    let (evidence, record) = rig
        .service
        .evidence(Some(&mut rig.reader), RECORD, "teller")
        .unwrap();
    assert_eq!(
        evidence.verdict,
        Verdict::Landed,
        "{}",
        evidence.explanation
    );
    assert_eq!(record.status, RecordStatus::Loaded);
    let again = rig.load(RECORD, "t2").unwrap_err();
    assert_eq!(again.code(), ErrorCode::RecordStateConflict, "{again}");
    let amount = record.amount_fen;
    assert_eq!(i64::from(rig.balance() - before), amount);
}

#[test]
fn a_card_pulled_before_credit_goes_back_to_not_loaded_only_when_the_card_proves_it() {
    let mut rig = Rig::new();
    let before = rig.balance();
    rig.pull_at_credit(false);
    let err = rig.load(RECORD, "t1").unwrap_err();
    assert_eq!(err.code(), ErrorCode::LoadOutcomeUnknown, "{err}");
    assert_eq!(rig.status(RECORD), RecordStatus::Loading);
    // Settling from the journal alone decides nothing: the intent is open.
    assert!(rig.service.settle_card(DEMO_ETC_CARD).is_empty());
    assert_eq!(rig.status(RECORD), RecordStatus::Loading);
    // The card shows the money is not there: 未圈存, and the 二次圈存 loads it once.
    rig.reinsert();
    let (evidence, record) = rig
        .service
        .evidence(Some(&mut rig.reader), RECORD, "teller")
        .unwrap();
    assert_eq!(
        evidence.verdict,
        Verdict::NotLanded,
        "{}",
        evidence.explanation
    );
    assert_eq!(record.status, RecordStatus::NotLoaded);
    assert_eq!(rig.balance(), before);
    let done = rig.load(RECORD, "t2").unwrap();
    assert_eq!(done.record.status, RecordStatus::Loaded);
    assert_eq!(i64::from(rig.balance() - before), done.record.amount_fen);
    // Both attempts are linked to the record.
    assert_eq!(evidence.loads.len(), 1);
    assert!(matches!(
        rig.journal.get("t1").unwrap().unwrap().state,
        TxnState::NotApplied { .. }
    ));
}

#[test]
fn the_wrong_card_and_an_expired_card_are_refused_before_anything_is_written() {
    let mut rig = Rig::new();
    let before = rig.balance();
    // A record of another vehicle's card.
    let other = rig
        .records
        .recharge(DEMO_SM4_PLATE, DEMO_SM4_COLOUR, 1_000, "teller", "银行柜台")
        .unwrap();
    let err = rig.load(&other.record_id, "t1").unwrap_err();
    assert_eq!(err.code(), ErrorCode::CardNotEligible, "{err}");
    assert!(err.to_string().contains("卡号不符"), "{err}");
    assert_eq!(rig.status(&other.record_id), RecordStatus::NotLoaded);
    // The card past its validity (2034-01-01).
    rig.clock.set(datetime!(2034-01-02 10:00:00 +8));
    let err = rig
        .service
        .check_card_for_record(&mut rig.reader, RECORD)
        .unwrap_err();
    assert!(err.to_string().contains("卡片已过期"), "{err}");
    let err = rig.load(RECORD, "t2").unwrap_err();
    assert_eq!(err.code(), ErrorCode::CardNotEligible, "{err}");
    assert_eq!(rig.status(RECORD), RecordStatus::NotLoaded);
    assert_eq!(rig.balance(), before);
    assert!(rig.journal.for_card(DEMO_ETC_CARD).unwrap().is_empty());
}

#[test]
fn at_start_a_loading_record_the_journal_never_saw_goes_back_to_not_loaded() {
    let rig = Rig::new();
    // The process died between 圈存中 and the journal's intent: CREDIT was never sent.
    rig.records.begin_load(RECORD, "teller", "t-lost").unwrap();
    assert_eq!(rig.status(RECORD), RecordStatus::Loading);
    let settled = rig.service.settle_at_start();
    assert_eq!(settled.len(), 1);
    assert_eq!(rig.status(RECORD), RecordStatus::NotLoaded);
    // A record being loaded right now is left to its run.
    let running = DEMO_NOT_LOADED_RECORD_IDS[1];
    rig.records
        .begin_load(running, "teller", "t-running")
        .unwrap();
    let claim = rig.service.loading().claim(running).unwrap();
    assert!(rig.service.settle_at_start().is_empty());
    assert_eq!(rig.status(running), RecordStatus::Loading);
    drop(claim);
    assert_eq!(rig.service.settle_at_start().len(), 1);
    assert_eq!(rig.status(running), RecordStatus::NotLoaded);
    let _ = &rig.store;
}

#[test]
fn resolving_needs_a_reason_and_a_record_awaiting_reconciliation() {
    let rig = Rig::new();
    let err = rig
        .service
        .resolve_record(None, RECORD, "supervisor", true, "  ")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams, "{err}");
    let err = rig
        .service
        .resolve_record(None, RECORD, "supervisor", true, "核对")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RecordStateConflict, "{err}");
    let err = rig
        .service
        .mark_not_loaded(None, RECORD, "supervisor", true, Some("x"))
        .unwrap_err();
    assert!(err.to_string().contains("已是未圈存"), "{err}");
}

#[test]
fn at_start_a_loading_record_follows_what_the_journal_learnt_from_the_card() {
    let mut rig = Rig::new();
    let before = rig.balance();
    rig.pull_at_credit(true);
    rig.load(RECORD, "t1").unwrap_err();
    assert_eq!(rig.status(RECORD), RecordStatus::Loading);
    // The card settles the journal (recovery at a card-inserted event), then the daemon
    // restarts before the record followed.
    rig.reinsert();
    let outcome = cardd_journal::recover_card(
        &mut cardd_purse::Purse::new(&mut rig.reader),
        &SoftSam::demo(),
        &rig.journal,
        "123456",
        cardd_crypto::Algorithm::Tdes,
    )
    .unwrap();
    assert!(matches!(
        outcome,
        Some(cardd_journal::RecoveryOutcome::Landed { .. })
    ));
    let settled = rig.service.settle_at_start();
    assert_eq!(settled.len(), 1);
    let record = rig.records.record(RECORD).unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Loaded);
    assert_eq!(record.balance_before_fen, Some(i64::from(before)));
    assert_eq!(
        record.balance_after_fen,
        Some(i64::from(before) + record.amount_fen)
    );
}
