//! 待核对 at the host (`cardd_store_pg::PgReview`) on a real PostgreSQL, with sites loading real
//! simulated cards through the host's authority:
//! * a load whose card was pulled after CREDIT and never came back is decided by two people:
//!   the proposer cannot confirm, a second person confirms, and the record follows;
//! * a wrong "not landed" verdict is caught by the card: presented at another site for the SAME
//!   record, the host sees from the card's counter that the money landed, puts the record back
//!   to 待核对 and refuses the load (nothing twice); the item is back on the list;
//! * a right verdict is agreed by the card's next load at another site;
//! * an open load is not decidable before the wait, a second proposal waits for the first, a
//!   load the card settled refuses verdicts.

use std::sync::Arc;
use std::time::Duration;

use cardd_authority::{Authority, GatedKeys, LocalLink, RemoteSam};
use cardd_crypto::{bcd, Algorithm};
use cardd_etc::{IssuerHost, RecordStatus, VehicleInput};
use cardd_journal::clock::SystemClock;
use cardd_journal::{load_card, Funding, Journal, LoadError, LoadRequest, Store};
use cardd_purse::{Purse, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{
    FaultKind, FaultPlan, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld,
};
use cardd_store_pg::{AuthorizationState, Database, PgHost, PgLedger, PgReview, ReviewError};

#[path = "../../store-pg/tests/common/mod.rs"]
mod common;

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
const READER: &str = "sim:r";
/// A load's APDUs: SELECT, READ BINARY 0015, VERIFY, INITIALIZE FOR LOAD, CREDIT FOR LOAD.
const CREDIT_APDU: u64 = 5;

struct Host {
    records: Arc<dyn IssuerHost>,
    ledger: PgLedger,
    authority: Arc<Authority>,
    review: PgReview,
    _db: common::FreshDatabase,
}

fn host() -> Host {
    let fresh = common::FreshDatabase::create();
    let db = Arc::new(Database::open(&fresh.url).expect("database"));
    let clock = Arc::new(SystemClock);
    let records: Arc<dyn IssuerHost> = Arc::new(PgHost::new(db.clone(), clock.clone()));
    let ledger = PgLedger::new(db.clone(), clock.clone());
    let authority = Arc::new(Authority::new(
        Arc::new(GatedKeys::new(
            Arc::new(SoftSam::demo()),
            Arc::new(ledger.clone()),
        )),
        Arc::new(ledger.clone()),
    ));
    Host {
        records,
        ledger,
        authority,
        review: PgReview::new(db, clock).with_wait(Duration::ZERO),
        _db: fresh,
    }
}

impl Host {
    /// A recharge of `amount_fen` paid at the host for the demo card: a 未圈存 record.
    fn paid(&self, amount_fen: i64) -> cardd_etc::RechargeRecord {
        if self.records.vehicles_for_card(CARD).unwrap().is_empty() {
            self.records
                .upsert_vehicle(
                    &VehicleInput {
                        plate: "陕A12345".into(),
                        plate_colour: 0,
                        card_numbers: vec![CARD.into()],
                        owner_name: "张三".into(),
                        vehicle_class: 1,
                        obu_contract_serial: None,
                        details: None,
                    },
                    "admin",
                )
                .unwrap();
        }
        self.records
            .recharge("陕A12345", 0, amount_fen, "teller", "银行柜台")
            .unwrap()
    }

    fn status(&self, record: &cardd_etc::RechargeRecord) -> RecordStatus {
        self.records
            .record(&record.record_id)
            .unwrap()
            .unwrap()
            .status
    }

    fn authorization(&self, txn_id: &str) -> AuthorizationState {
        self.ledger
            .authorizations_for_card(CARD)
            .unwrap()
            .into_iter()
            .find(|a| a.txn_id == txn_id)
            .expect("the authorisation")
            .state
    }
}

/// A site: its own reader and journal, no key; the card is put in and taken out by the test.
struct Site {
    world: SimWorld,
    reader: Reader,
    journal: Journal,
    sam: RemoteSam,
    _store: Store,
}

impl Site {
    fn new(host: &Host, card: Option<SimCard>) -> Site {
        let world = SimWorld::new();
        let mut config = SimReaderConfig::new("r", SimReaderKind::Contact);
        if let Some(card) = card {
            config = config.with_card(card);
        }
        world.add_reader(config).unwrap();
        let session = SimFactory::new(world.clone())
            .open(&ReaderSelector::Id(READER.into()))
            .unwrap();
        let store = Store::temporary().unwrap();
        Site {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            journal: Journal::open(&store).unwrap(),
            sam: RemoteSam::new(Arc::new(LocalLink(host.authority.clone()))),
            _store: store,
        }
    }

    fn load(
        &mut self,
        txn_id: &str,
        record: &cardd_etc::RechargeRecord,
    ) -> Result<cardd_journal::LoadReceipt, LoadError> {
        let request = LoadRequest {
            txn_id: txn_id.into(),
            amount_fen: u32::try_from(record.amount_fen).unwrap(),
            terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
            date: bcd::date(2026, 12, 7),
            time: bcd::time(10, 0, 0),
            etc_pin: "123456".into(),
            expected_card: Some(CARD.into()),
            city_algorithm: Algorithm::Tdes,
            funding: Funding::EtcRecord {
                record_id: record.record_id.clone(),
            },
        };
        load_card(
            &mut Purse::new(&mut self.reader),
            &self.sam,
            &self.journal,
            READER,
            &request,
        )
    }

    /// Loads `record` with the card pulled right after it took CREDIT (`landed`) or right
    /// before (`!landed`): the outcome is unknown to everyone but the card.
    fn load_pulled(&mut self, txn_id: &str, record: &cardd_etc::RechargeRecord, landed: bool) {
        let count = self.world.apdu_count(READER);
        let fault = if landed {
            FaultKind::RemoveAfterExec
        } else {
            FaultKind::RemoveBeforeExec
        };
        self.world
            .set_fault_plan(READER, FaultPlan::new().at(count + CREDIT_APDU, fault))
            .unwrap();
        let err = self.load(txn_id, record).unwrap_err();
        assert!(matches!(err, LoadError::OutcomeUnknown { .. }), "{err}");
    }

    /// The card that was pulled out.
    fn pulled_card(&self) -> SimCard {
        self.world.take_pocket(READER).expect("the pulled card")
    }
}

fn balance(card: &SimCard) -> i64 {
    i64::from(card.balance().unwrap())
}

#[test]
fn two_people_decide_a_lost_load_and_the_card_catches_a_wrong_not_landed_verdict() {
    let host = host();
    let record = host.paid(5_000);
    let mut a = Site::new(&host, Some(cardd_sim::demo::demo_etc_card()));
    a.load_pulled("a-1", &record, true);
    let card = a.pulled_card();
    let landed_balance = balance(&card);
    assert_eq!(host.status(&record), RecordStatus::Loading);

    // On the list, decidable (no wait in this test).
    let items = host.review.pending().unwrap();
    let item = items.iter().find(|i| i.txn_id == "a-1").expect("listed");
    assert!(item.decidable && item.verdict.is_none(), "{item:?}");
    assert_eq!(item.funding_id, record.record_id);

    // Confirming needs a proposal, and a second person.
    assert!(matches!(
        host.review.decide("a-1", true, "auditor1"),
        Err(ReviewError::NoProposal(_))
    ));
    host.review
        .propose("a-1", false, "客户称卡片遗失，未见到账凭证", "supervisor1")
        .unwrap();
    assert!(matches!(
        host.review.propose("a-1", true, "另一意见", "auditor2"),
        Err(ReviewError::AlreadyProposed { .. })
    ));
    assert!(matches!(
        host.review.decide("a-1", true, "supervisor1"),
        Err(ReviewError::SamePerson { .. })
    ));
    assert_eq!(host.status(&record), RecordStatus::Loading, "nothing yet");
    let decided = host.review.decide("a-1", true, "auditor1").unwrap();
    assert_eq!(decided.state, "released", "{decided:?}");
    assert_eq!(host.status(&record), RecordStatus::NotLoaded);
    assert_eq!(host.authorization("a-1"), AuthorizationState::Released);
    assert!(!host
        .review
        .pending()
        .unwrap()
        .iter()
        .any(|i| i.txn_id == "a-1"));
    assert!(matches!(
        host.review.propose("a-1", true, "再次核定", "supervisor1"),
        Err(ReviewError::Settled { .. })
    ));

    // The verdict was wrong: the money is on the card. The card turns up at site B, where the
    // same record is asked again: the host reads the card's counter, refuses, and flags it.
    let mut b = Site::new(&host, Some(card));
    let err = b.load("b-1", &record).unwrap_err();
    assert!(matches!(err, LoadError::Unfunded(_)), "{err}");
    let card = b.world.card(READER).expect("the card stays in B's reader");
    assert_eq!(balance(&card), landed_balance, "not loaded twice");
    assert_eq!(host.status(&record), RecordStatus::NeedsReconciliation);
    assert_eq!(host.authorization("a-1"), AuthorizationState::Reconcile);
    let back = host.review.pending().unwrap();
    let again = back
        .iter()
        .find(|i| i.txn_id == "a-1")
        .expect("back on the list");
    let verdict = again.verdict.as_ref().unwrap();
    assert_eq!(verdict.card_check, "contradicted", "{verdict:?}");
    assert!(
        verdict
            .card_evidence
            .as_deref()
            .unwrap_or("")
            .contains("已写入卡内"),
        "{verdict:?}"
    );

    // Two people decide again, now with the card's word: landed. The record is 已圈存.
    host.review
        .propose("a-1", true, "卡片联机交易序号证实已到账", "supervisor1")
        .unwrap();
    host.review.decide("a-1", true, "auditor1").unwrap();
    assert_eq!(host.status(&record), RecordStatus::Loaded);
    assert_eq!(host.authorization("a-1"), AuthorizationState::Booked);

    // Another record loads on the same card normally afterwards.
    let next = host.paid(1_000);
    b.load("b-2", &next).expect("an unrelated load");
    assert_eq!(host.status(&next), RecordStatus::Loaded);
}

#[test]
fn a_right_verdict_is_agreed_by_the_cards_next_load_and_a_rejected_one_changes_nothing() {
    let host = host();
    let record = host.paid(3_000);
    let mut a = Site::new(&host, Some(cardd_sim::demo::demo_etc_card()));
    a.load_pulled("a-1", &record, false);
    let card = a.pulled_card();

    // A rejected proposal changes nothing and lets another be made.
    host.review
        .propose("a-1", true, "误判", "supervisor1")
        .unwrap();
    let rejected = host.review.decide("a-1", false, "auditor1").unwrap();
    assert_eq!(rejected.verdict.unwrap().state, "rejected");
    assert_eq!(host.status(&record), RecordStatus::Loading);
    assert_eq!(host.authorization("a-1"), AuthorizationState::Authorized);

    host.review
        .propose("a-1", false, "卡片余额未变化（客户凭证）", "supervisor1")
        .unwrap();
    host.review.decide("a-1", true, "auditor2").unwrap();
    assert_eq!(host.status(&record), RecordStatus::NotLoaded);

    // The card at site B: the same record loads now, once, and the card agrees.
    let before = balance(&card);
    let mut b = Site::new(&host, Some(card));
    b.load("b-1", &record).expect("the released record loads");
    let card = b.world.card(READER).unwrap();
    assert_eq!(balance(&card), before + 3_000);
    assert_eq!(host.status(&record), RecordStatus::Loaded);
    let item = host.review.item("a-1").unwrap();
    assert_eq!(item.verdict.unwrap().card_check, "agreed");
}

#[test]
fn an_open_load_waits_for_its_card_before_anyone_decides() {
    let host = host();
    let record = host.paid(2_000);
    let mut a = Site::new(&host, Some(cardd_sim::demo::demo_etc_card()));
    a.load_pulled("a-1", &record, true);
    let waiting = host.review.clone().with_wait(Duration::from_secs(30 * 60));
    let item = waiting
        .pending()
        .unwrap()
        .into_iter()
        .find(|i| i.txn_id == "a-1")
        .unwrap();
    assert!(!item.decidable);
    assert!(matches!(
        waiting.propose("a-1", true, "太早", "supervisor1"),
        Err(ReviewError::TooEarly { .. })
    ));
    // A reason is required.
    assert!(matches!(
        host.review.propose("a-1", true, "  ", "supervisor1"),
        Err(ReviewError::Invalid(_))
    ));
    assert!(matches!(
        host.review.propose("nope", true, "x", "supervisor1"),
        Err(ReviewError::NotFound(_))
    ));
}
