//! A card pulled at one site and presented at another, over the real host service (HTTPS with
//! mutual TLS) on a real PostgreSQL, with the sites' own ETC services (`cardd_etc::EtcService`
//! over the host's records, a keyless `RemoteSam`, their own journals and readers):
//! * pulled after the card took CREDIT at site A, presented at site B: B adopts A's open load
//!   from the host, the card proves it landed, the host books it (TAC verified with its keys)
//!   and the record is 已圈存, the money on the card once;
//! * pulled before the card took CREDIT at A, presented at B: the card proves it did not land,
//!   the host releases the authorisation and the record, and B loads the record itself, once;
//! * the card back at A afterwards: A's own open load is settled from the card the same way,
//!   nothing twice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cardd_authority::{Authority, GatedKeys, RemoteSam};
use cardd_etc::{EtcService, EtcSettings, IssuerHost, RecordOwners, RecordStatus, VehicleInput};
use cardd_fleet::ca::{host_files, site_files};
use cardd_fleet::{host_server_config, site_client_config, FleetCa, SiteId};
use cardd_host::HostService;
use cardd_hostlink::{HostClient, HttpsLink, RemoteRecords};
use cardd_journal::clock::SystemClock;
use cardd_journal::{InFlight, IntentOwners, Journal, LostCardVerdict, Store};
use cardd_purse::SoftSam;
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{
    FaultKind, FaultPlan, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld,
};
use cardd_store_pg::{AuthorizationState, Database, PgHost, PgLedger, PgSites};

#[path = "../../store-pg/tests/common/mod.rs"]
mod common;

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
const HOST_NAME: &str = "host.fleet.test";
const READER: &str = "sim:r";
const DAYS: u32 = 30;
/// CREDIT FOR LOAD: CLA 80, INS 52.
const CREDIT: (u8, u8) = (0x80, 0x52);

#[derive(Debug)]
struct NoWatch;

impl cardd_etc::WatchAudit for NoWatch {
    fn watch_checked(&self, _: &LostCardVerdict) {}
}

struct Host {
    records: Arc<dyn IssuerHost>,
    ledger: PgLedger,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start_host(ca: &Path, url: &str) -> Host {
    let db = Arc::new(Database::open(url).expect("database"));
    let audit_db = db.clone();
    let clock = Arc::new(SystemClock);
    let records: Arc<dyn IssuerHost> = Arc::new(PgHost::new(db.clone(), clock.clone()));
    let ledger = PgLedger::new(db.clone(), clock.clone());
    let groups = Arc::new(cardd_store_pg::PgGroupHost::new(db.clone(), clock.clone()));
    let sites = PgSites::new(db, clock);
    let fleet = FleetCa::open(ca).unwrap();
    for id in ["A", "B"] {
        let site: SiteId = id.parse().unwrap();
        let issued = fleet.issue_site(&site, DAYS, false).unwrap();
        sites.enrol(&site, &issued.fingerprint).unwrap();
    }
    let service = Arc::new(HostService {
        reports: None,
        tls: Arc::new(host_server_config(&host_files(ca, HOST_NAME)).unwrap()),
        directory: Arc::new(sites),
        authority: Arc::new(Authority::new(
            Arc::new(GatedKeys::new(
                Arc::new(SoftSam::demo()),
                Arc::new(ledger.clone()),
            )),
            Arc::new(ledger.clone()),
        )),
        records: records.clone(),
        operators: None,
        audit: Some(Arc::new(cardd_store_pg::PgAudit::new(
            audit_db.clone(),
            Arc::new(SystemClock),
        ))),
        groups,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready.send(listener.local_addr().unwrap()).unwrap();
            service
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Host {
        records,
        ledger,
        addr: bound.recv_timeout(Duration::from_secs(30)).unwrap(),
        _stop: stop,
    }
}

/// A site: its reader (empty until a card is put in), its journal, its ETC service over the
/// host's records and a keyless security module; it adopts other sites' loads.
struct Site {
    world: SimWorld,
    reader: Reader,
    journal: Arc<Journal>,
    service: EtcService,
    _store: Store,
}

impl Site {
    fn new(ca: &Path, id: &str, host: std::net::SocketAddr) -> Site {
        let world = SimWorld::new();
        world
            .add_reader(SimReaderConfig::new("r", SimReaderKind::Contact))
            .unwrap();
        let session = SimFactory::new(world.clone())
            .open(&ReaderSelector::Id(READER.into()))
            .unwrap();
        let site: SiteId = id.parse().unwrap();
        let tls = site_client_config(&site_files(ca, &site)).unwrap();
        let client = Arc::new(
            HostClient::new(host, HOST_NAME, Arc::new(tls), Duration::from_secs(20)).unwrap(),
        );
        let link = HttpsLink(client.clone());
        let records: Arc<dyn IssuerHost> = Arc::new(RemoteRecords::new(client));
        let store = Store::temporary().unwrap();
        let journal = Arc::new(Journal::open(&store).unwrap());
        let owners: Arc<dyn IntentOwners> = Arc::new(RecordOwners(records.clone()));
        let service = EtcService::new(
            records,
            Some(journal.clone()),
            Arc::new(RemoteSam::new(Arc::new(link.clone()))),
            InFlight::default(),
            owners,
            Arc::new(NoWatch),
            Arc::new(SystemClock),
            EtcSettings {
                etc_pin: "123456".into(),
                terminal_id: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                fleet: Some(Arc::new(link)),
            },
        );
        Site {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            journal,
            service,
            _store: store,
        }
    }

    fn load(
        &mut self,
        record: &str,
        txn: &str,
    ) -> Result<cardd_etc::RecordLoad, cardd_etc::EtcError> {
        self.service
            .load_record(&mut self.reader, READER, record, "teller", txn)
    }

    fn insert(&self, card: SimCard) {
        self.world.insert_card(READER, card).unwrap();
    }

    /// The card, out of the reader (or out of the pocket a fault put it in).
    fn take(&self) -> SimCard {
        self.world
            .take_pocket(READER)
            .or_else(|| self.world.remove_card(READER))
            .expect("a card at this site")
    }

    fn pull_at_next_credit(&self, after_write: bool) {
        let kind = if after_write {
            FaultKind::RemoveAfterExec
        } else {
            FaultKind::RemoveBeforeExec
        };
        self.world
            .set_fault_plan(
                READER,
                FaultPlan::new().on_command(CREDIT.0, CREDIT.1, kind),
            )
            .unwrap();
    }
}

fn paid(records: &dyn IssuerHost, amount_fen: i64) -> String {
    if records.vehicles_for_card(CARD).unwrap().is_empty() {
        records
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
    records
        .recharge("陕A12345", 0, amount_fen, "teller", "银行柜台")
        .unwrap()
        .record_id
}

fn state_of(host: &Host, txn: &str) -> AuthorizationState {
    host.ledger
        .authorizations_for_card(CARD)
        .unwrap()
        .into_iter()
        .find(|a| a.txn_id == txn)
        .unwrap_or_else(|| panic!("no authorisation {txn}"))
        .state
}

#[test]
fn a_card_pulled_at_one_site_is_settled_at_the_next() {
    let dir = tempfile::tempdir().unwrap();
    FleetCa::init(dir.path(), DAYS).unwrap();
    FleetCa::open(dir.path())
        .unwrap()
        .issue_host(HOST_NAME, &["127.0.0.1".to_owned()], DAYS, false)
        .unwrap();
    let db = common::FreshDatabase::create();
    let host = start_host(dir.path(), &db.url);
    let mut a = Site::new(dir.path(), "A", host.addr);
    let mut b = Site::new(dir.path(), "B", host.addr);
    a.insert(cardd_sim::demo::demo_etc_card());
    let start = a.world.card(READER).unwrap().balance().unwrap();

    // Pulled after the card took CREDIT at A: unknown at A, 圈存中 at the host.
    let r1 = paid(host.records.as_ref(), 3_000);
    a.pull_at_next_credit(true);
    let lost = a.load(&r1, "A-1").unwrap_err();
    assert_eq!(
        lost.code(),
        cardd_api::ErrorCode::LoadOutcomeUnknown,
        "{lost}"
    );
    assert_eq!(
        host.records.record(&r1).unwrap().unwrap().status,
        RecordStatus::Loading
    );
    assert_eq!(state_of(&host, "A-1"), AuthorizationState::Authorized);

    // Presented at B: adopted, proven landed by the card, booked at the host.
    let card = a.take();
    assert_eq!(card.balance(), Some(start + 3_000), "the card took it");
    b.insert(card);
    let settled = b.load(&r1, "B-1").expect("settled at B");
    assert!(settled.already_on_card, "{settled:?}");
    assert!(settled.receipt.is_none(), "no second credit");
    assert_eq!(settled.record.status, RecordStatus::Loaded);
    assert_eq!(state_of(&host, "A-1"), AuthorizationState::Booked);
    assert_eq!(b.world.card(READER).unwrap().balance(), Some(start + 3_000));

    // Pulled before the card took CREDIT at A: presented at B, released and loaded by B, once.
    let card = b.take();
    a.insert(card);
    let r2 = paid(host.records.as_ref(), 1_000);
    a.pull_at_next_credit(false);
    let lost = a.load(&r2, "A-2").unwrap_err();
    assert_eq!(
        lost.code(),
        cardd_api::ErrorCode::LoadOutcomeUnknown,
        "{lost}"
    );
    let card = a.take();
    assert_eq!(
        card.balance(),
        Some(start + 3_000),
        "the card did not take it"
    );
    b.insert(card);
    let loaded = b.load(&r2, "B-2").expect("loaded at B");
    assert!(!loaded.already_on_card);
    assert_eq!(loaded.record.status, RecordStatus::Loaded);
    assert_eq!(state_of(&host, "A-2"), AuthorizationState::Released);
    assert_eq!(state_of(&host, "B-2"), AuthorizationState::Booked);
    assert_eq!(b.world.card(READER).unwrap().balance(), Some(start + 4_000));

    // Back at A: A's own open loads are settled from the card; nothing twice.
    let card = b.take();
    a.insert(card);
    let r3 = paid(host.records.as_ref(), 500);
    let third = a.load(&r3, "A-3").expect("loaded at A");
    assert!(!third.already_on_card);
    assert_eq!(a.world.card(READER).unwrap().balance(), Some(start + 4_500));
    for txn in ["A-1", "A-2"] {
        let t = a.journal.get(txn).unwrap().unwrap();
        assert!(
            !matches!(t.state, cardd_journal::TxnState::Intent),
            "{txn} settled at A: {:?}",
            t.state
        );
    }
    let authorizations = host.ledger.authorizations_for_card(CARD).unwrap();
    let booked: i64 = authorizations
        .iter()
        .filter(|a| a.state == AuthorizationState::Booked)
        .map(|a| a.amount_fen)
        .sum();
    assert_eq!(booked, 4_500, "{authorizations:?}");
    assert!(authorizations
        .iter()
        .all(|a| a.state != AuthorizationState::Authorized));
    for r in [&r1, &r2, &r3] {
        assert_eq!(
            host.records.record(r).unwrap().unwrap().status,
            RecordStatus::Loaded
        );
    }
}
