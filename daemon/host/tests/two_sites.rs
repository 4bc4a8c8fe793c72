//! Sites without keys load ETC recharge records through the host's authority
//! (`cardd_authority::RemoteSam` → `Authority` over [`cardd_host::RecordFunding`] and
//! [`cardd_host::RecordBook`]), the records in one store: a record paid at the host is loaded
//! at a site and booked 已圈存; the same record asked from two sites at the same moment is
//! authorised once and credited once; a load pulled after CREDIT stays 圈存中 at the host until
//! the card's proof is confirmed.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cardd_authority::{Authority, GatedKeys, LocalLink, RemoteSam};
use cardd_crypto::{bcd, Algorithm};
use cardd_etc::{IssuerHost, RecordStatus};
use cardd_host::{RecordBook, RecordFunding};
use cardd_journal::{
    load_card, recover_card, Funding, Journal, LoadError, LoadRequest, RecoveryOutcome, Store,
};
use cardd_purse::{Purse, SamError, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
/// A load's APDUs: SELECT, READ BINARY 0015, VERIFY, INITIALIZE FOR LOAD, CREDIT FOR LOAD.
const CREDIT_APDU: u64 = 5;

/// The host: the records (embedded store) and the keys, behind one authority.
struct Host {
    records: Arc<dyn IssuerHost>,
    authority: Arc<Authority>,
    _store: Store,
}

impl Host {
    fn new() -> Host {
        let store = Store::temporary().unwrap();
        let embedded = cardd_store::EmbeddedHost::open(&store).unwrap();
        embedded.seed_demo().unwrap();
        let records: Arc<dyn IssuerHost> = Arc::new(embedded);
        let funding = Arc::new(GatedKeys::new(
            Arc::new(SoftSam::demo()),
            Arc::new(RecordFunding::new(records.clone())),
        ));
        let book = Arc::new(RecordBook::new(records.clone()));
        Host {
            authority: Arc::new(Authority::new(funding, book)),
            records,
            _store: store,
        }
    }

    /// A 未圈存 record of the demo card.
    fn unloaded_record(&self) -> cardd_etc::RechargeRecord {
        self.records
            .records_for_card(CARD, Some(RecordStatus::NotLoaded))
            .unwrap()
            .into_iter()
            .next()
            .expect("the demo card has a 未圈存 record")
    }
}

/// A site: its own reader (with its own copy of the card), its own journal, no key.
struct Site {
    world: SimWorld,
    reader: Reader,
    journal: Journal,
    sam: RemoteSam,
    _store: Store,
}

impl Site {
    fn new(host: &Host, name: &str) -> Site {
        let world = SimWorld::new();
        world
            .add_reader(
                SimReaderConfig::new("r", SimReaderKind::Contact)
                    .with_card(cardd_sim::demo::demo_etc_card()),
            )
            .unwrap();
        let session = SimFactory::new(world.clone())
            .open(&ReaderSelector::Id("sim:r".into()))
            .unwrap();
        let store = Store::temporary().unwrap();
        assert!(!name.is_empty());
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
            "sim:r",
            &request,
        )
    }

    fn balance(&self) -> u32 {
        self.world
            .card("sim:r")
            .or_else(|| self.world.take_pocket("sim:r"))
            .and_then(|c| c.balance())
            .unwrap()
    }
}

#[test]
fn a_record_paid_at_the_host_is_loaded_at_a_site_and_booked() {
    let host = Host::new();
    let record = host.unloaded_record();
    let mut site = Site::new(&host, "kiosk-2");
    let before = site.balance();
    let receipt = site.load("k2-1", &record).unwrap();
    assert_eq!(
        i64::from(receipt.balance_after_fen),
        i64::from(before) + record.amount_fen
    );
    let booked = host.records.record(&record.record_id).unwrap().unwrap();
    assert_eq!(booked.status, RecordStatus::Loaded, "{booked:?}");
    assert_eq!(booked.balance_before_fen, Some(i64::from(before)));
    // The record is spent: asking again is refused by the host before the card is written.
    let err = site.load("k2-2", &record).unwrap_err();
    assert!(
        matches!(err, LoadError::Unfunded(SamError::LoadNotFunded { .. })),
        "{err}"
    );
    assert_eq!(
        i64::from(site.balance()),
        i64::from(before) + record.amount_fen,
        "credited once"
    );
}

#[test]
fn the_same_record_from_two_sites_at_once_is_authorised_and_credited_once() {
    for round in 0..5 {
        let host = Arc::new(Host::new());
        let record = host.unloaded_record();
        let start = Arc::new(Barrier::new(2));
        let runs: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let (host, record, start) = (host.clone(), record.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut site = Site::new(&host, name);
                    let before = site.balance();
                    start.wait();
                    let result = site.load(&format!("{name}-{round}"), &record);
                    (
                        result.is_ok(),
                        i64::from(site.balance()) - i64::from(before),
                    )
                })
            })
            .collect();
        let outcomes: Vec<(bool, i64)> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        let loaded: Vec<_> = outcomes.iter().filter(|(ok, _)| *ok).collect();
        assert_eq!(loaded.len(), 1, "round {round}: {outcomes:?}");
        let credited: i64 = outcomes.iter().map(|(_, delta)| delta).sum();
        assert_eq!(credited, record.amount_fen, "round {round}: money once");
        assert_eq!(
            host.records
                .record(&record.record_id)
                .unwrap()
                .unwrap()
                .status,
            RecordStatus::Loaded
        );
    }
}

#[test]
fn a_load_pulled_after_credit_stays_loading_at_the_host_until_the_cards_proof_is_confirmed() {
    let host = Host::new();
    let record = host.unloaded_record();
    let mut kiosk = Site::new(&host, "kiosk-a");
    let before = kiosk.balance();
    let count = kiosk.world.apdu_count("sim:r");
    kiosk
        .world
        .set_fault_plan(
            "sim:r",
            FaultPlan::new().at(count + CREDIT_APDU, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let err = kiosk.load("ka-1", &record).unwrap_err();
    assert!(matches!(err, LoadError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(
        host.records
            .record(&record.record_id)
            .unwrap()
            .unwrap()
            .status,
        RecordStatus::Loading,
        "the host does not know yet: 圈存中, never 未圈存"
    );
    // The card comes back: its proof is confirmed with the host, which books the record once.
    let card = kiosk.world.take_pocket("sim:r").expect("the pulled card");
    kiosk.world.insert_card("sim:r", card).unwrap();
    let settled = recover_card(
        &mut Purse::new(&mut kiosk.reader),
        &kiosk.sam,
        &kiosk.journal,
        "123456",
        Algorithm::Tdes,
    )
    .unwrap();
    assert!(
        matches!(settled, Some(RecoveryOutcome::Landed { .. })),
        "{settled:?}"
    );
    assert_eq!(
        i64::from(kiosk.balance()),
        i64::from(before) + record.amount_fen
    );
    assert_eq!(
        host.records
            .record(&record.record_id)
            .unwrap()
            .unwrap()
            .status,
        RecordStatus::Loaded
    );
}

#[test]
fn a_card_that_is_not_genuine_claims_nothing() {
    let host = Host::new();
    let record = host.unloaded_record();
    let mut site = Site::new(&host, "kiosk");
    // The same card number, issued with a load key the host does not have: its MAC1 fails.
    let forged: cardd_sim::SimCard = cardd_sim::EtcCard::issue(
        &cardd_sim::demo::demo_etc_spec(),
        &cardd_sim::IssuerMasters {
            load: cardd_crypto::Key16::from_slice(&[0x42; 16]).unwrap(),
            ..cardd_sim::demo::demo_masters()
        },
    )
    .unwrap()
    .into();
    site.world.remove_card("sim:r").unwrap();
    site.world.insert_card("sim:r", forged).unwrap();
    let before = site.balance();
    let err = site.load("forged-1", &record).unwrap_err();
    assert!(
        matches!(err, LoadError::Mac1(SamError::Mac1Invalid)),
        "{err}"
    );
    assert_eq!(site.balance(), before, "nothing loaded");
    assert_eq!(
        host.records
            .record(&record.record_id)
            .unwrap()
            .unwrap()
            .status,
        RecordStatus::NotLoaded,
        "the record was not claimed: a genuine card can still load it"
    );
}
