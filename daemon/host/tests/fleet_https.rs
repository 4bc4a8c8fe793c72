//! A fleet over real sockets: the host's load service over HTTPS with mutual TLS (certificates
//! from the fleet CA), its records on a real PostgreSQL (a throw-away cluster), and sites that
//! hold no key loading simulated cards through `cardd_journal::load_card`:
//! * a record paid at the host is loaded at a site and booked 已圈存 in PostgreSQL;
//! * the same record asked from two sites at the same moment is authorised and credited once;
//! * a disabled site is refused (the load refused at once, 无法连接发卡方后台…, the card untouched,
//!   nothing journaled) and a site unknown to the host likewise;
//! * a host stopped and started again between MAC2 and the TAC confirms the load from its
//!   database (the authorisation is a row, written with the claim of the record);
//! * a site's calls share one kept connection, and a site disabled by another process while
//!   its connection is open is refused at its very next request, a load step or any other.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cardd_authority::{Authority, GatedKeys, RemoteSam};
use cardd_crypto::{bcd, Algorithm};
use cardd_etc::{IssuerHost, RecordStatus, VehicleInput};
use cardd_fleet::ca::{host_files, site_files};
use cardd_fleet::{host_server_config, site_client_config, FleetCa, SiteId};
use cardd_host::{HostService, HttpsLink};
use cardd_journal::clock::SystemClock;
use cardd_journal::{load_card, Funding, Journal, LoadError, LoadRequest, Store};
use cardd_purse::{Purse, SamError, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{SimFactory, SimReaderConfig, SimReaderKind, SimWorld};
use cardd_store_pg::{AuthorizationState, Database, PgHost, PgLedger, PgSites};

#[path = "../../store-pg/tests/common/mod.rs"]
mod common;

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
const HOST_NAME: &str = "host.fleet.test";
const DAYS: u32 = 30;

/// The running host: its address, its records, and what stops it.
struct Host {
    addr: SocketAddr,
    records: Arc<dyn IssuerHost>,
    sites: PgSites,
    ledger: PgLedger,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    /// Stops the service and waits until it no longer listens.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a host on `db` (its records, sites and authorisations), listening on `addr`.
fn start_host(ca_dir: &Path, url: &str, addr: &str) -> Host {
    let db = Arc::new(Database::open(url).expect("open the database"));
    let audit_db = db.clone();
    let clock = Arc::new(SystemClock);
    let records: Arc<dyn IssuerHost> = Arc::new(PgHost::new(db.clone(), clock.clone()));
    let ledger = PgLedger::new(db.clone(), clock.clone());
    let groups = Arc::new(cardd_store_pg::PgGroupHost::new(db.clone(), clock.clone()));
    let sites = PgSites::new(db, clock);
    let tls = Arc::new(host_server_config(&host_files(ca_dir, HOST_NAME)).expect("host TLS"));
    let authority = Arc::new(Authority::new(
        Arc::new(GatedKeys::new(
            Arc::new(SoftSam::demo()),
            Arc::new(ledger.clone()),
        )),
        Arc::new(ledger.clone()),
    ));
    let service = Arc::new(HostService {
        reports: None,
        tls,
        directory: Arc::new(sites.clone()),
        authority,
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
    let addr = addr.to_owned();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr.as_str()).await.unwrap();
            ready.send(listener.local_addr().unwrap()).unwrap();
            service
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Host {
        addr: bound
            .recv_timeout(Duration::from_secs(30))
            .expect("host up"),
        records,
        sites,
        ledger,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// The fleet CA with the host's certificate and sites S01…S04, S01–S03 registered (S03
/// disabled), S04 not registered.
fn fleet(dir: &Path, host: &Host) {
    let ca = FleetCa::open(dir).expect("CA");
    for (id, enabled) in [("S01", true), ("S02", true), ("S03", false)] {
        let site: SiteId = id.parse().unwrap();
        let issued = ca.issue_site(&site, DAYS, false).expect("site certificate");
        host.sites.enrol(&site, &issued.fingerprint).unwrap();
        if !enabled {
            host.sites.set_enabled(&site, false).unwrap();
        }
    }
    ca.issue_site(&"S04".parse().unwrap(), DAYS, false)
        .expect("site certificate");
}

/// A site: its reader with the demo ETC card, its journal, its link; no key.
struct Site {
    world: SimWorld,
    reader: Reader,
    journal: Journal,
    sam: RemoteSam,
    link: HttpsLink,
    _store: Store,
}

impl Site {
    fn new(ca_dir: &Path, id: &str, host: SocketAddr) -> Site {
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
        let site: SiteId = id.parse().unwrap();
        let tls = site_client_config(&site_files(ca_dir, &site)).expect("site TLS");
        let link =
            HttpsLink::new(host, HOST_NAME, Arc::new(tls), Duration::from_secs(20)).expect("link");
        let store = Store::temporary().unwrap();
        Site {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            journal: Journal::open(&store).unwrap(),
            sam: RemoteSam::new(Arc::new(link.clone())),
            link,
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
        self.world.card("sim:r").and_then(|c| c.balance()).unwrap()
    }
}

/// A recharge of `amount_fen` paid at the host for the demo card: a 未圈存 record.
fn paid(records: &dyn IssuerHost, amount_fen: i64) -> cardd_etc::RechargeRecord {
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
}

fn setup() -> (tempfile::TempDir, common::FreshDatabase, Host) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::FreshDatabase::create();
    let ca = FleetCa::init(dir.path(), DAYS).expect("CA");
    drop(ca);
    FleetCa::open(dir.path())
        .unwrap()
        .issue_host(HOST_NAME, &["127.0.0.1".to_owned()], DAYS, false)
        .expect("host certificate");
    let host = start_host(dir.path(), &db.url, "127.0.0.1:0");
    fleet(dir.path(), &host);
    (dir, db, host)
}

#[test]
fn fleet_loads_over_mutual_tls_against_postgresql() {
    let (dir, _db, host) = setup();

    // Paid at the host, loaded at site S01, booked in PostgreSQL.
    let record = paid(host.records.as_ref(), 5_000);
    let mut s01 = Site::new(dir.path(), "S01", host.addr);
    let before = s01.balance();
    s01.load("s01-1", &record).expect("load at S01");
    assert_eq!(s01.balance(), before + 5_000);
    let booked = host.records.record(&record.record_id).unwrap().unwrap();
    assert_eq!(booked.status, RecordStatus::Loaded, "{booked:?}");

    // A disabled site and an unregistered one are refused: the load is refused at once, the
    // card untouched, nothing journaled, the record still 未圈存.
    let record = paid(host.records.as_ref(), 2_000);
    for id in ["S03", "S04"] {
        let mut site = Site::new(dir.path(), id, host.addr);
        let before = site.balance();
        let err = site.load(&format!("{id}-1"), &record).unwrap_err();
        let LoadError::Unfunded(sam) = &err else {
            panic!("{id}: {err}");
        };
        assert!(
            matches!(sam, SamError::HostUnreachable { .. }),
            "{id}: {sam}"
        );
        assert_eq!(
            cardd_journal::teller::unfunded_load_zh(sam),
            "无法连接发卡方后台，暂不能圈存；请稍后再试"
        );
        assert_eq!(site.balance(), before, "{id}: the card is untouched");
        assert!(site.journal.get(&format!("{id}-1")).unwrap().is_none());
    }
    assert_eq!(
        host.records
            .record(&record.record_id)
            .unwrap()
            .unwrap()
            .status,
        RecordStatus::NotLoaded
    );

    // The same record from S01 and S02 at the same moment: one authorisation, one credit.
    for round in 0..3 {
        let record = paid(host.records.as_ref(), 1_000);
        let start = Arc::new(Barrier::new(2));
        let runs: Vec<_> = ["S01", "S02"]
            .into_iter()
            .map(|id| {
                let (dir, addr, record, start) = (
                    dir.path().to_owned(),
                    host.addr,
                    record.clone(),
                    start.clone(),
                );
                std::thread::spawn(move || {
                    let mut site = Site::new(&dir, id, addr);
                    let before = site.balance();
                    start.wait();
                    let ok = site.load(&format!("{id}-race-{round}"), &record).is_ok();
                    (ok, i64::from(site.balance()) - i64::from(before))
                })
            })
            .collect();
        let outcomes: Vec<(bool, i64)> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(
            outcomes.iter().filter(|(ok, _)| *ok).count(),
            1,
            "round {round}: {outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().map(|(_, d)| d).sum::<i64>(),
            1_000,
            "round {round}: the money once"
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
}

#[test]
fn a_host_restarted_between_mac2_and_the_tac_confirms_the_load_from_its_database() {
    let (dir, db, mut host) = setup();
    let record = paid(host.records.as_ref(), 3_000);
    let mut s01 = Site::new(dir.path(), "S01", host.addr);
    let before = s01.balance();

    // Step 1 by hand: announce, INITIALIZE, MAC2 from the host.
    let sam = &s01.sam;
    let mut purse = Purse::new(&mut s01.reader);
    let cardd_purse::CardIdentity::Etc(info) = purse.identify_payment_card().unwrap() else {
        panic!("the demo card is an ETC card");
    };
    let plan = cardd_purse::LoadPlan::new(
        cardd_purse::CardKeyContext::etc(&info),
        3_000,
        [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
        bcd::date(2026, 12, 7),
        bcd::time(10, 0, 0),
    );
    cardd_purse::SecurityModule::authorize_load(
        sam,
        &cardd_purse::LoadAuthorization {
            txn_id: "restart-1".into(),
            card_number: CARD.into(),
            card: plan.card,
            terms: plan.terms,
            funding: Funding::EtcRecord {
                record_id: record.record_id.clone(),
            },
        },
    )
    .unwrap();
    purse.select_etc_adf().unwrap();
    purse
        .verify_pin(
            "test card",
            &cardd_purse::Pin::ascii("123456").unwrap(),
            &cardd_purse::MemoryPinRefusals::default(),
        )
        .unwrap();
    let init = purse.init_load_for(&plan).unwrap();
    let session = cardd_purse::LoadSession::start(plan, init, sam).expect("MAC2");
    let claimed = host.records.record(&record.record_id).unwrap().unwrap();
    assert_eq!(claimed.status, RecordStatus::Loading);

    // The host goes away and comes back on the same address and database.
    let addr = host.addr.to_string();
    host.stop();
    drop(host);
    let host = start_host(dir.path(), &db.url, &addr);

    // Step 2: CREDIT, and the TAC confirmed by the host that was restarted.
    let tac = purse.credit_for(&session).expect("CREDIT");
    session.verify_tac(sam, tac).expect("the TAC is booked");
    assert_eq!(s01.balance(), before + 3_000);
    let booked = host.records.record(&record.record_id).unwrap().unwrap();
    assert_eq!(booked.status, RecordStatus::Loaded, "{booked:?}");
    let rows = host.ledger.authorizations_for_card(CARD).unwrap();
    let row = rows.iter().find(|r| r.txn_id == "restart-1").unwrap();
    assert_eq!(row.state, AuthorizationState::Booked);
    assert_eq!(row.site_id, "S01");
    assert_eq!(row.tac.as_deref(), Some(hex::encode_upper(tac).as_str()));

    // Confirming again (an answer lost on the way) is answered again and books nothing twice.
    session
        .verify_tac(&s01.sam, tac)
        .expect("the same TAC again");
    let again = host.records.record(&record.record_id).unwrap().unwrap();
    assert_eq!(again.history.len(), booked.history.len());
}

#[test]
fn a_host_that_is_down_refuses_the_load_at_once() {
    let dir = tempfile::tempdir().unwrap();
    FleetCa::init(dir.path(), DAYS).expect("CA");
    let ca = FleetCa::open(dir.path()).unwrap();
    ca.issue_site(&"S01".parse().unwrap(), DAYS, false).unwrap();
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut site = Site::new(dir.path(), "S01", addr);
    let before = site.balance();
    let record = cardd_etc::RechargeRecord {
        record_id: "R1".into(),
        ..sample_record()
    };
    let err = site.load("down-1", &record).unwrap_err();
    assert!(
        matches!(err, LoadError::Unfunded(SamError::HostUnreachable { .. })),
        "{err}"
    );
    assert_eq!(site.balance(), before);
    assert!(site.journal.get("down-1").unwrap().is_none());
}

/// A record as the site names it (only id and amount matter to the site).
fn sample_record() -> cardd_etc::RechargeRecord {
    let store = Store::temporary().unwrap();
    let host = cardd_store::EmbeddedHost::open(&store).unwrap();
    paid(&host, 1_000)
}

#[test]
fn a_site_disabled_elsewhere_is_refused_at_its_next_request_on_a_kept_connection() {
    use cardd_authority::HostLink;
    use cardd_hostlink::wire::{OpenLoadsParams, OPEN_LOADS};
    use cardd_hostlink::{CallError, ClientStats};

    let (dir, db, host) = setup();
    // Another process's view of the same directory (its own pool and connections).
    let elsewhere = PgSites::new(
        Arc::new(Database::open(&db.url).expect("open the database")),
        Arc::new(SystemClock),
    );
    let (s01, s02): (SiteId, SiteId) = ("S01".parse().unwrap(), "S02".parse().unwrap());

    // Any request: three calls of S01, one connection, one handshake.
    let site = Site::new(dir.path(), "S01", host.addr);
    for _ in 0..3 {
        assert_eq!(site.link.open_loads(CARD).unwrap(), Vec::new());
    }
    assert_eq!(
        site.link.0.stats(),
        ClientStats {
            requests: 3,
            connections: 1
        }
    );
    elsewhere.set_enabled(&s01, false).unwrap();
    let params = OpenLoadsParams {
        card_number: CARD.into(),
    };
    let err = site
        .link
        .0
        .call::<_, serde_json::Value>(OPEN_LOADS, &params)
        .unwrap_err();
    // Taken as a refused handshake is: the host cannot be used (无法连接发卡方后台).
    let CallError::Unreachable(why) = &err else {
        panic!("{err}");
    };
    assert!(why.contains("S01 is disabled"), "{err}");
    assert_eq!(
        site.link.0.stats().connections,
        1,
        "refused on its kept connection"
    );
    // The host closed that connection; a new one is refused at the handshake.
    assert!(matches!(
        site.link
            .0
            .call::<_, serde_json::Value>(OPEN_LOADS, &params),
        Err(CallError::Unreachable(_))
    ));

    // A load step: S02 keeps a connection, is disabled elsewhere, and its next load is refused
    // by the host in the authorisation's own transaction: card untouched, record 未圈存.
    let record = paid(host.records.as_ref(), 1_500);
    let mut site = Site::new(dir.path(), "S02", host.addr);
    assert_eq!(site.link.open_loads(CARD).unwrap(), Vec::new());
    elsewhere.set_enabled(&s02, false).unwrap();
    let before = site.balance();
    let err = site.load("s02-disabled-1", &record).unwrap_err();
    let LoadError::Unfunded(SamError::LoadNotFunded { reason }) = &err else {
        panic!("{err}");
    };
    assert!(
        reason.contains("S02") && reason.contains("停用"),
        "{reason}"
    );
    assert_eq!(site.balance(), before, "the card is untouched");
    assert_eq!(
        site.link.0.stats().connections,
        1,
        "refused on its kept connection"
    );
    let still = host.records.record(&record.record_id).unwrap().unwrap();
    assert_eq!(still.status, RecordStatus::NotLoaded);

    // Enabled again, the same kept connection loads.
    elsewhere.set_enabled(&s02, true).unwrap();
    site.load("s02-enabled-1", &record).expect("load at S02");
    assert_eq!(site.balance(), before + 1_500);
    assert_eq!(
        site.link.0.stats().connections,
        1,
        "one connection for everything"
    );
}
