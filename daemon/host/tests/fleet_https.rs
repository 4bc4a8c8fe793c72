//! A fleet over real sockets: the host's load service over HTTPS with mutual TLS (certificates
//! from the fleet CA), its records on a real PostgreSQL (a throw-away cluster), and sites that
//! hold no key loading simulated cards through `cardd_journal::load_card`:
//! * a record paid at the host is loaded at a site and booked 已圈存 in PostgreSQL;
//! * the same record asked from two sites at the same moment is authorised and credited once;
//! * a disabled site is refused (the load refused at once, 无法连接发卡方后台…, the card untouched,
//!   nothing journaled) and a site unknown to the host likewise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use cardd_authority::{Authority, GatedKeys, RemoteSam};
use cardd_crypto::{bcd, Algorithm};
use cardd_etc::{IssuerHost, RecordStatus, VehicleInput};
use cardd_fleet::ca::{host_files, site_files};
use cardd_fleet::directory::DirectoryError;
use cardd_fleet::{
    host_server_config, site_client_config, FleetCa, SiteDirectory, SiteEntry, SiteId, SiteLookup,
};
use cardd_host::{HostService, HttpsLink, RecordBook, RecordFunding};
use cardd_journal::{load_card, Funding, Journal, LoadError, LoadRequest, Store};
use cardd_purse::{Purse, SamError, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{SimFactory, SimReaderConfig, SimReaderKind, SimWorld};
use cardd_store_pg::PgHost;

#[path = "../../store-pg/tests/common/mod.rs"]
mod common;

const CARD: &str = cardd_sim::demo::DEMO_ETC_CARD_NUMBER;
const HOST_NAME: &str = "host.fleet.test";
const DAYS: u32 = 30;

/// The host's site directory, in memory.
#[derive(Debug, Default)]
struct Sites(Mutex<HashMap<SiteId, SiteEntry>>);

impl SiteDirectory for Sites {
    fn site<'a>(&'a self, site_id: &'a SiteId) -> SiteLookup<'a> {
        let entry = self.0.lock().unwrap().get(site_id).cloned();
        Box::pin(async move { Ok::<_, DirectoryError>(entry) })
    }
}

/// The running host: its address, its records, and what stops it.
struct Host {
    addr: SocketAddr,
    records: Arc<dyn IssuerHost>,
    sites: Arc<Sites>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _db: common::FreshDatabase,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start_host(ca_dir: &Path) -> Host {
    let db = common::FreshDatabase::create();
    let records: Arc<dyn IssuerHost> = Arc::new(PgHost::open(&db.url).expect("open PgHost"));
    let tls = Arc::new(host_server_config(&host_files(ca_dir, HOST_NAME)).expect("host TLS"));
    let sites = Arc::new(Sites::default());
    let authority = Arc::new(Authority::new(
        Arc::new(GatedKeys::new(
            Arc::new(SoftSam::demo()),
            Arc::new(RecordFunding::new(records.clone())),
        )),
        Arc::new(RecordBook::new(records.clone())),
    ));
    let service = Arc::new(HostService {
        tls,
        directory: sites.clone(),
        authority,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, addr) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
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
        addr: addr.recv_timeout(Duration::from_secs(30)).expect("host up"),
        records,
        sites,
        stop: Some(stop),
        thread: Some(thread),
        _db: db,
    }
}

/// The fleet CA with the host's certificate and sites S01…S04, S01–S03 registered (S03
/// disabled), S04 not registered.
fn fleet(dir: &Path, host: &Host) {
    let ca = FleetCa::open(dir).expect("CA");
    for (id, enabled) in [("S01", true), ("S02", true), ("S03", false)] {
        let site: SiteId = id.parse().unwrap();
        let issued = ca.issue_site(&site, DAYS, false).expect("site certificate");
        host.sites.0.lock().unwrap().insert(
            site,
            SiteEntry {
                enabled,
                cert_fingerprint: issued.fingerprint,
            },
        );
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
            sam: RemoteSam::new(Arc::new(link)),
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

fn setup() -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::init(dir.path(), DAYS).expect("CA");
    drop(ca);
    FleetCa::open(dir.path())
        .unwrap()
        .issue_host(HOST_NAME, &["127.0.0.1".to_owned()], DAYS, false)
        .expect("host certificate");
    let host = start_host(dir.path());
    fleet(dir.path(), &host);
    (dir, host)
}

#[test]
fn fleet_loads_over_mutual_tls_against_postgresql() {
    let (dir, host) = setup();

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
