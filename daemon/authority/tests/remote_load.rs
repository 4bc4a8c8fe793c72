//! A site without keys loads a simulated card through the journaled load
//! (`cardd_journal::load_card`), asking the authority over a link: two round trips per load,
//! funding checked and the authorisation recorded before MAC2, refused at once (card untouched,
//! nothing journaled) when the host is unreachable, and a load interrupted after CREDIT settled
//! later from the card's proof with one round trip.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardd_authority::{
    Authority, AuthorizationLog, AuthorizeRequest, Authorized, ConfirmRequest, Confirmed,
    GatedKeys, HostLink, LinkError, LoadGate, LocalLink, RemoteSam,
};
use cardd_crypto::{bcd, Algorithm};
use cardd_journal::{
    load_card, recover_card, Funding, Journal, LoadError, LoadRequest, RecoveryOutcome, Store,
    TxnState,
};
use cardd_purse::{
    CardKeyContext, InitLoadResponse, LoadAuthorization, LoadTerms, Purse, SamError,
    SecurityModule, SoftSam,
};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

const READER: &str = "sim:r";
const ETC: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
/// A load's APDUs: SELECT, READ BINARY 0015, VERIFY, INITIALIZE FOR LOAD, CREDIT FOR LOAD.
const CREDIT_APDU: u64 = 5;

/// The host's funding check: only the records in `funded` may be loaded.
struct Funded {
    funded: Mutex<HashSet<String>>,
}

impl LoadGate for Funded {
    fn authorize_load(&self, request: &LoadAuthorization) -> Result<(), SamError> {
        match &request.funding {
            Funding::EtcRecord { record_id } if self.funded.lock().unwrap().contains(record_id) => {
                Ok(())
            }
            other => Err(SamError::LoadNotFunded {
                reason: format!("{other} is not funded"),
            }),
        }
    }
}

/// The authority's record, in memory.
#[derive(Debug, Default)]
struct MemoryLog {
    authorized: Mutex<Vec<String>>,
    booked: Mutex<Vec<[u8; 4]>>,
}

impl AuthorizationLog for MemoryLog {
    fn authorized(
        &self,
        _site: &str,
        request: &AuthorizeRequest,
        _mac2: [u8; 4],
    ) -> Result<(), SamError> {
        self.authorized.lock().unwrap().push(request.txn_id.clone());
        Ok(())
    }
    fn booked(&self, _site: &str, request: &ConfirmRequest) -> Result<(), SamError> {
        self.booked.lock().unwrap().push(request.tac);
        Ok(())
    }
}

/// The link, counting round trips, and able to go down.
#[derive(Debug)]
struct CountingLink {
    inner: LocalLink,
    round_trips: AtomicUsize,
    down: AtomicBool,
}

impl CountingLink {
    fn reach(&self) -> Result<(), LinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LinkError::Unreachable("connection refused".into()));
        }
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl HostLink for CountingLink {
    fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, LinkError> {
        self.reach()?;
        self.inner.authorize(request)
    }
    fn confirm(&self, request: &ConfirmRequest) -> Result<Confirmed, LinkError> {
        self.reach()?;
        self.inner.confirm(request)
    }
}

struct Rig {
    world: SimWorld,
    reader: Reader,
    journal: Journal,
    site: RemoteSam,
    link: Arc<CountingLink>,
    log: Arc<MemoryLog>,
    funding: Arc<Funded>,
    _store: Store,
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
        let journal = Journal::open(&store).unwrap();
        let funding = Arc::new(Funded {
            funded: Mutex::new(HashSet::from(["R1".to_owned()])),
        });
        let log = Arc::new(MemoryLog::default());
        let authority = Arc::new(Authority::new(
            Arc::new(GatedKeys::new(Arc::new(SoftSam::demo()), funding.clone())),
            log.clone(),
        ));
        let link = Arc::new(CountingLink {
            inner: LocalLink(authority),
            round_trips: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        Rig {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            journal,
            site: RemoteSam::new(link.clone()),
            link,
            log,
            funding,
            _store: store,
        }
    }

    fn request(txn_id: &str, record_id: &str, amount_fen: u32) -> LoadRequest {
        LoadRequest {
            txn_id: txn_id.into(),
            amount_fen,
            terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
            date: bcd::date(2026, 12, 7),
            time: bcd::time(10, 0, 0),
            etc_pin: "123456".into(),
            expected_card: None,
            city_algorithm: Algorithm::Tdes,
            funding: Funding::EtcRecord {
                record_id: record_id.into(),
            },
        }
    }

    fn load(&mut self, request: &LoadRequest) -> Result<cardd_journal::LoadReceipt, LoadError> {
        load_card(
            &mut Purse::new(&mut self.reader),
            &self.site,
            &self.journal,
            READER,
            request,
        )
    }

    fn balance(&self) -> u32 {
        self.world
            .card(READER)
            .or_else(|| self.world.take_pocket(READER))
            .and_then(|c| c.balance())
            .unwrap()
    }

    fn round_trips(&self) -> usize {
        self.link.round_trips.load(Ordering::SeqCst)
    }
}

#[test]
fn a_funded_load_takes_two_round_trips_and_the_site_holds_no_key() {
    let mut rig = Rig::new();
    let before = rig.balance();
    let receipt = rig.load(&Rig::request("t1", "R1", 5_000)).unwrap();
    assert_eq!(receipt.balance_after_fen, before + 5_000);
    assert_eq!(
        rig.balance(),
        before + 5_000,
        "the money is on the card once"
    );
    assert_eq!(rig.round_trips(), 2, "authorize and confirm, nothing else");
    assert_eq!(*rig.log.authorized.lock().unwrap(), ["t1"]);
    assert_eq!(
        rig.log.booked.lock().unwrap().len(),
        1,
        "the host booked it"
    );
    assert!(matches!(
        rig.journal.get("t1").unwrap().unwrap().state,
        TxnState::Committed { .. }
    ));
}

#[test]
fn an_unfunded_load_is_refused_by_the_host_before_credit() {
    let mut rig = Rig::new();
    let before = rig.balance();
    let err = rig
        .load(&Rig::request("t2", "R-unpaid", 5_000))
        .unwrap_err();
    assert!(
        matches!(err, LoadError::Unfunded(SamError::LoadNotFunded { .. })),
        "{err}"
    );
    assert_eq!(rig.balance(), before, "the card is untouched");
    assert!(
        rig.journal.get("t2").unwrap().is_none(),
        "nothing journaled"
    );
    assert!(rig.log.authorized.lock().unwrap().is_empty());
    assert_eq!(rig.round_trips(), 1);
}

#[test]
fn an_unreachable_host_refuses_the_load_at_once_and_nothing_is_written() {
    let mut rig = Rig::new();
    let before = rig.balance();
    rig.link.down.store(true, Ordering::SeqCst);
    let err = rig.load(&Rig::request("t3", "R1", 5_000)).unwrap_err();
    let LoadError::Unfunded(sam) = &err else {
        panic!("{err}");
    };
    assert!(matches!(sam, SamError::HostUnreachable { .. }), "{sam}");
    assert_eq!(
        cardd_journal::teller::unfunded_load_zh(sam),
        "无法连接发卡方后台，暂不能圈存；请稍后再试"
    );
    assert_eq!(rig.balance(), before, "the card is untouched");
    assert!(
        rig.journal.get("t3").unwrap().is_none(),
        "nothing journaled"
    );
    // The link returns: the same record loads, once.
    rig.link.down.store(false, Ordering::SeqCst);
    rig.load(&Rig::request("t4", "R1", 5_000)).unwrap();
    assert_eq!(rig.balance(), before + 5_000);
}

#[test]
fn a_load_pulled_after_credit_is_settled_from_the_cards_proof_with_one_round_trip() {
    let mut rig = Rig::new();
    let before = rig.balance();
    let count = rig.world.apdu_count(READER);
    rig.world
        .set_fault_plan(
            READER,
            FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let err = rig.load(&Rig::request("t5", "R1", 3_000)).unwrap_err();
    assert!(matches!(err, LoadError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(rig.round_trips(), 1, "MAC2 was given; the TAC never came");
    assert!(rig.log.booked.lock().unwrap().is_empty(), "not booked yet");
    assert_eq!(
        rig.journal.open_for_card(ETC).unwrap().unwrap().txn_id,
        "t5",
        "the intent stays open, unknown, until the card speaks"
    );
    // The card comes back (at this site or another: the proof is on the card).
    let card = rig.world.take_pocket(READER).expect("the pulled card");
    rig.world.insert_card(READER, card).unwrap();
    let outcome = recover_card(
        &mut Purse::new(&mut rig.reader),
        &rig.site,
        &rig.journal,
        "123456",
        Algorithm::Tdes,
    )
    .unwrap();
    assert!(
        matches!(outcome, Some(RecoveryOutcome::Landed { .. })),
        "{outcome:?}"
    );
    assert_eq!(rig.balance(), before + 3_000, "credited once");
    assert_eq!(
        rig.round_trips(),
        2,
        "recovery confirmed the proof with the host"
    );
    assert_eq!(rig.log.booked.lock().unwrap().len(), 1, "booked once");
    // The host still has its keys; nothing else changed hands.
    assert!(rig.funding.funded.lock().unwrap().contains("R1"));
}

#[test]
fn a_mac2_is_handed_out_once_for_exactly_its_card_and_terms() {
    let rig = Rig::new();
    // Without step 1 there is no MAC2, whatever the caller asks.
    let card = CardKeyContext {
        scheme: cardd_purse::KeyScheme::Etc,
        algorithm: Algorithm::Tdes,
        issuer4: [0; 4],
        card8: [1; 8],
    };
    let init = InitLoadResponse {
        old_balance: 0,
        online_atc: 1,
        key_version: 1,
        alg_id: 0,
        random: [0; 4],
        mac1: [0; 4],
    };
    let terms = LoadTerms {
        amount: 100,
        terminal: [0; 6],
        date: [0; 4],
        time: [0; 3],
    };
    assert!(matches!(
        rig.site.load_mac2(&card, &init, &terms),
        Err(SamError::LoadNotAuthorized { .. })
    ));
    assert!(matches!(
        rig.site.verify_load_mac1(&card, &init, &terms),
        Err(SamError::LoadNotAuthorized { .. })
    ));
    assert_eq!(rig.round_trips(), 0, "nothing announced, nothing asked");
}
