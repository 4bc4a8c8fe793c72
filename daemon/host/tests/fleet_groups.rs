//! Group recharge (集团充值) in a fleet, over the real host service (HTTPS with mutual TLS) on a
//! real PostgreSQL: each site is a `cardd_group::GroupService` over the host's groups
//! ([`RemoteGroups`]), a keyless `RemoteSam` over its own link, its own journal and its own
//! simulated city card.
//! * one group's quota recharged from four sites at once until it runs out: the quota is never
//!   overdrawn, every refusal is the quota-exhausted one, the ledger sums, and the money on the
//!   four cards = the orders 充值成功 = the booked authorisations; each order was settled by
//!   the host from the card's TAC and again, idempotently, by its site;
//! * a card pulled at site A after it took CREDIT (A's order 结果待确认) and presented at site
//!   B: B adopts A's load from the host, the card proves it landed, the host books the order
//!   充值成功 from the TAC; B does not recharge it again, and A settles its own open load from
//!   the card later, nothing twice;
//! * a site whose host is down is refused at once with the zh-CN message, and nothing changes.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cardd_authority::{Authority, GatedKeys, RemoteSam};
use cardd_crypto::{bcd, Algorithm};
use cardd_fleet::ca::{host_files, site_files};
use cardd_fleet::{host_server_config, site_client_config, FleetCa, SiteId};
use cardd_group::model::{OrderStatus, Period, Preset};
use cardd_group::service::{CardOnReader, RechargeCard, RechargeRequest, RechargeStop};
use cardd_group::GroupError;
use cardd_group::{
    GroupHost, GroupOwners, GroupService, PaymentError, PaymentGateway, PaymentReceipt,
    PaymentRequest,
};
use cardd_host::HostService;
use cardd_hostlink::{HostClient, HttpsLink, RemoteGroups};
use cardd_journal::clock::SystemClock;
use cardd_journal::{load_card, recover_card, Funding, Journal, LoadReceipt, LoadRequest, Store};
use cardd_purse::{Purse, SecurityModule, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{
    CityCard, CityCardSpec, FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind,
    SimWorld,
};
use cardd_store_pg::{AuthorizationState, Database, PgGroupHost, PgHost, PgLedger, PgSites};

#[path = "../../store-pg/tests/common/mod.rs"]
mod common;

const HOST_NAME: &str = "host.fleet.test";
const READER: &str = "sim:r";
const DAYS: u32 = 30;
const SITES: [&str; 4] = ["A", "B", "C", "D"];
/// Each recharge, in fen: 30 yuan.
const AMOUNT_FEN: i64 = 3_000;
/// The demo group G001's quota, in fen: 500 yuan.
const QUOTA_FEN: i64 = 50_000;
/// Each card's balance before, in fen.
const START_FEN: u32 = 5_000;
/// CREDIT FOR LOAD: CLA 80, INS 52.
const CREDIT: (u8, u8) = (0x80, 0x52);

/// A bank that is never asked (no top-ups here).
#[derive(Debug)]
struct NoBank;

impl PaymentGateway for NoBank {
    fn name(&self) -> &'static str {
        "none"
    }

    fn pay(&self, _: &PaymentRequest) -> Result<PaymentReceipt, PaymentError> {
        Err(PaymentError::Gateway("no bank in this test".into()))
    }

    fn query(&self, _: &str) -> Result<Option<PaymentReceipt>, PaymentError> {
        Ok(None)
    }
}

struct Host {
    groups: Arc<PgGroupHost>,
    ledger: PgLedger,
    review: cardd_store_pg::PgReview,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start_host(ca: &Path, url: &str) -> Host {
    let db = Arc::new(Database::open(url).expect("database"));
    let clock = Arc::new(SystemClock);
    let records = Arc::new(PgHost::new(db.clone(), clock.clone()));
    let groups = Arc::new(PgGroupHost::new(db.clone(), clock.clone()));
    assert_eq!(groups.seed_demo().unwrap(), 2, "G001 (500 yuan) and G002");
    let ledger = PgLedger::new(db.clone(), clock.clone());
    let review = cardd_store_pg::PgReview::new(db.clone(), clock.clone()).with_wait(Duration::ZERO);
    let audit = Arc::new(cardd_store_pg::PgAudit::new(db.clone(), clock.clone()));
    let sites = PgSites::new(db, clock);
    let fleet = FleetCa::open(ca).unwrap();
    for id in SITES {
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
        records,
        operators: None,
        audit: Some(audit),
        groups: groups.clone(),
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
        groups,
        ledger,
        review,
        addr: bound.recv_timeout(Duration::from_secs(30)).unwrap(),
        _stop: stop,
    }
}

/// A site's own city card: `6101000000000000001N`, 50 yuan.
fn city_card(n: usize) -> cardd_sim::SimCard {
    let spec = CityCardSpec {
        app_serial: format!("61010000000000000{:03}", 10 + n),
        balance_fen: START_FEN,
        ..cardd_sim::demo::demo_city_spec()
    };
    CityCard::issue(&spec, &cardd_sim::demo::demo_masters())
        .unwrap()
        .into()
}

/// A site: its reader with its card, its journal, its group service over the host's groups and
/// a keyless security module.
struct Site {
    id: String,
    world: SimWorld,
    reader: Reader,
    journal: Journal,
    sam: Arc<dyn SecurityModule>,
    service: GroupService,
    loads: u32,
    _store: Store,
}

impl Site {
    fn new(ca: &Path, id: &str, host: std::net::SocketAddr, card: cardd_sim::SimCard) -> Site {
        let world = SimWorld::new();
        world
            .add_reader(SimReaderConfig::new("r", SimReaderKind::Contact).with_card(card))
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
        let groups: Arc<dyn GroupHost> = Arc::new(RemoteGroups::new(client));
        let sam: Arc<dyn SecurityModule> = Arc::new(RemoteSam::new(Arc::new(link.clone())));
        let store = Store::temporary().unwrap();
        let journal = Journal::open(&store).unwrap();
        let service = GroupService::new(
            groups.clone(),
            Arc::new(NoBank),
            sam.clone(),
            Arc::new(GroupOwners(groups)),
            Arc::new(SystemClock),
        )
        .in_fleet(Arc::new(link));
        Site {
            id: id.to_owned(),
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            journal,
            sam,
            service,
            loads: 0,
            _store: store,
        }
    }

    fn recharge(
        &mut self,
        amount_fen: i64,
    ) -> Result<cardd_api::group::RechargeDone, RechargeStop> {
        let mut card = OnSim {
            site: &self.id,
            reader: &mut self.reader,
            world: &self.world,
            journal: &self.journal,
            sam: self.sam.as_ref(),
            loads: &mut self.loads,
        };
        self.service.recharge(
            Some(&self.journal),
            &mut card,
            RechargeRequest {
                group_id: "G001".into(),
                operator: "group1".into(),
                expected_card: None,
                amount_fen,
                batch: None,
            },
        )
    }

    fn card_number(&self) -> String {
        self.world.card(READER).unwrap().card_number()
    }

    fn balance(&self) -> u32 {
        self.world.card(READER).unwrap().balance().unwrap()
    }

    /// The card, out of the reader (or out of the pocket a fault put it in).
    fn take(&self) -> cardd_sim::SimCard {
        self.world
            .take_pocket(READER)
            .or_else(|| self.world.remove_card(READER))
            .expect("a card at this site")
    }

    fn insert(&self, card: cardd_sim::SimCard) {
        self.world.insert_card(READER, card).unwrap();
    }
}

/// The simulated card on a site's reader as a recharge uses it.
struct OnSim<'a> {
    site: &'a str,
    reader: &'a mut Reader,
    world: &'a SimWorld,
    journal: &'a Journal,
    sam: &'a dyn SecurityModule,
    loads: &'a mut u32,
}

impl RechargeCard for OnSim<'_> {
    fn read(&mut self) -> Result<CardOnReader, String> {
        let card = self
            .world
            .card(READER)
            .ok_or_else(|| "读卡器上没有卡片".to_owned())?;
        Ok(CardOnReader {
            card_number: card.card_number(),
            city: true,
            balance_fen: card.balance().map(i64::from),
        })
    }

    fn recover(&mut self) {
        let _ = recover_card(
            &mut Purse::new(self.reader),
            self.sam,
            self.journal,
            "123456",
            Algorithm::Tdes,
        );
    }

    fn next_txn_id(&mut self) -> String {
        *self.loads += 1;
        format!("{}-run#{}", self.site, self.loads)
    }

    fn load(
        &mut self,
        txn_id: String,
        amount_fen: u32,
        card_number: String,
        funding: Funding,
    ) -> Result<LoadReceipt, String> {
        let request = LoadRequest {
            txn_id,
            amount_fen,
            terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
            date: bcd::date(2024, 6, 15),
            time: bcd::time(10, 0, 0),
            etc_pin: "123456".into(),
            expected_card: Some(card_number),
            city_algorithm: Algorithm::Tdes,
            funding,
        };
        load_card(
            &mut Purse::new(self.reader),
            self.sam,
            self.journal,
            READER,
            &request,
        )
        .map_err(|e| format!("圈存失败: {e}"))
    }
}

fn fleet_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    FleetCa::init(dir.path(), DAYS).unwrap();
    FleetCa::open(dir.path())
        .unwrap()
        .issue_host(HOST_NAME, &["127.0.0.1".to_owned()], DAYS, false)
        .unwrap();
    dir
}

/// What one site did: its card, the card's balance at the end, its orders, its refusals.
struct Outcome {
    card_number: String,
    balance_fen: u32,
    orders: Vec<String>,
    refusals: Vec<String>,
}

#[test]
fn one_group_s_quota_recharged_from_four_sites_at_once_is_never_overdrawn() {
    let ca = fleet_ca();
    let db = common::FreshDatabase::create();
    let host = start_host(ca.path(), &db.url);
    let start = Barrier::new(SITES.len());
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let runs: Vec<_> = SITES
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let (ca, start, addr) = (ca.path(), &start, host.addr);
                s.spawn(move || {
                    let mut site = Site::new(ca, id, addr, city_card(n));
                    let mut outcome = Outcome {
                        card_number: site.card_number(),
                        balance_fen: 0,
                        orders: Vec::new(),
                        refusals: Vec::new(),
                    };
                    start.wait();
                    // Until the group's quota runs out (at most the whole quota's worth).
                    for _ in 0..=QUOTA_FEN / AMOUNT_FEN {
                        match site.recharge(AMOUNT_FEN) {
                            Ok(done) => outcome.orders.push(done.order_id),
                            Err(stop) => {
                                assert_eq!(stop.pending_order, None, "{stop}");
                                outcome.refusals.push(stop.message);
                                break;
                            }
                        }
                    }
                    outcome.balance_fen = site.balance();
                    // Nothing of this site's is left open.
                    assert!(site.journal.list_open().unwrap().is_empty());
                    outcome
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });

    let succeeded: usize = outcomes.iter().map(|o| o.orders.len()).sum();
    let expected = usize::try_from(QUOTA_FEN / AMOUNT_FEN).unwrap();
    assert_eq!(succeeded, expected, "every 30 yuan of the quota, once");
    let left = QUOTA_FEN - AMOUNT_FEN * i64::try_from(succeeded).unwrap();
    assert_eq!(left, 2_000);
    // Every site stopped at the quota, with the host's words.
    for o in &outcomes {
        assert_eq!(o.refusals.len(), 1, "{:?}", o.refusals);
        assert_eq!(
            o.refusals[0], "集团可用额度不足：可用额度 20.00 元，充值金额 30.00 元",
            "every refusal is the quota-exhausted one"
        );
    }
    // The quota is the ledger, never below zero, and what the orders took.
    let group = host.groups.group("G001").unwrap().unwrap();
    assert_eq!(group.available_fen, left);
    host.groups.verify().unwrap();
    let ledger = host.groups.ledger("G001", 0, 1_000).unwrap();
    assert_eq!(ledger.iter().map(|e| e.amount_fen).sum::<i64>(), left);
    assert!(ledger.iter().all(|e| e.balance_after_fen >= 0));
    // Money on the cards = orders 充值成功 = booked authorisations.
    let on_cards: i64 = outcomes
        .iter()
        .map(|o| i64::from(o.balance_fen) - i64::from(START_FEN))
        .sum();
    let period = Period::preset(Preset::Last7Days, time::OffsetDateTime::now_utc());
    let orders = host.groups.orders("G001", &period).unwrap();
    assert_eq!(orders.len(), succeeded, "no order but the successful ones");
    assert!(orders.iter().all(|o| o.status == OrderStatus::Succeeded));
    let in_orders: i64 = orders.iter().map(|o| o.amount_fen).sum();
    let mut booked = 0;
    for o in &outcomes {
        let auths = host.ledger.authorizations_for_card(&o.card_number).unwrap();
        assert_eq!(auths.len(), o.orders.len(), "one authorisation per order");
        for a in &auths {
            assert_eq!(a.state, AuthorizationState::Booked, "{a:?}");
            assert!(a.tac.is_some(), "booked with the card's TAC: {a:?}");
            assert!(o.orders.contains(&a.funding_id), "{a:?}");
        }
        booked += auths.iter().map(|a| a.amount_fen).sum::<i64>();
        // Each order was settled by the host from the TAC, then by its site with the same
        // balances (answered, not refused): one change, by the host.
        for id in &o.orders {
            let order = host.groups.order(id).unwrap().unwrap();
            assert_eq!(order.card_number, o.card_number);
            assert_eq!(order.history.len(), 2, "{:?}", order.history);
            assert!(order.history[1].operator.starts_with("cardd-host@"));
        }
    }
    assert_eq!(on_cards, AMOUNT_FEN * i64::try_from(succeeded).unwrap());
    assert_eq!(
        (on_cards, in_orders, booked),
        (on_cards, on_cards, on_cards)
    );
    assert_eq!(orders.iter().filter(|o| o.status.is_unsettled()).count(), 0);
}

#[test]
fn a_site_whose_host_is_down_is_refused_at_once_and_nothing_changes() {
    let ca = fleet_ca();
    let db = common::FreshDatabase::create();
    let host = start_host(ca.path(), &db.url);
    // Nothing listens here any more.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut site = Site::new(ca.path(), "A", down, city_card(0));
    let quota = host.groups.group("G001").unwrap().unwrap().available_fen;
    let began = Instant::now();
    let stop = site.recharge(AMOUNT_FEN).unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(5), "refused at once");
    assert!(
        stop.message.starts_with("无法连接发卡方后台（")
            && stop.message.ends_with("），暂不能办理；请稍后再试"),
        "{stop}"
    );
    assert_eq!(stop.pending_order, None);
    // Nothing changed: the card, the journal, the quota, the orders.
    assert_eq!(site.balance(), START_FEN);
    assert!(site.journal.list_open().unwrap().is_empty());
    assert!(site.journal.get("A-run#1").unwrap().is_none());
    assert_eq!(
        host.groups.group("G001").unwrap().unwrap().available_fen,
        quota
    );
    let period = Period::preset(Preset::Last7Days, time::OffsetDateTime::now_utc());
    assert!(host.groups.orders("G001", &period).unwrap().is_empty());
    assert!(host
        .ledger
        .authorizations_for_card(&site.card_number())
        .unwrap()
        .is_empty());
}

#[test]
fn a_card_pulled_at_one_site_is_settled_at_the_next_and_not_recharged_twice() {
    let ca = fleet_ca();
    let db = common::FreshDatabase::create();
    let host = start_host(ca.path(), &db.url);
    let mut a = Site::new(ca.path(), "A", host.addr, city_card(0));
    let mut b = Site::new(ca.path(), "B", host.addr, city_card(1));
    let card_number = a.card_number();
    b.take();

    // Pulled after the card took CREDIT at A: 结果待确认 at A, the authorisation open.
    a.world
        .set_fault_plan(
            READER,
            FaultPlan::new().on_command(CREDIT.0, CREDIT.1, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let stop = a.recharge(AMOUNT_FEN).unwrap_err();
    let order_id = stop.pending_order.clone().expect("outcome unknown");
    assert!(stop.message.starts_with("充值结果待确认"), "{stop}");
    assert_eq!(
        host.groups.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Pending
    );
    let auths = host.ledger.authorizations_for_card(&card_number).unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].state, AuthorizationState::Authorized);
    // A's reconciliation leaves its open load to the card.
    assert_eq!(a.service.reconcile(Some(&a.journal)).unwrap(), 0);

    // Presented at B: B's reconciliation does not touch A's order; B's recharge adopts A's load,
    // the card proves it landed, the host books it; B does not recharge it again.
    let card = a.take();
    assert_eq!(card.balance(), Some(START_FEN + 3_000), "the card took it");
    assert_eq!(b.service.reconcile(Some(&b.journal)).unwrap(), 0);
    assert_eq!(
        host.groups.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Pending,
        "another site's order is not settled from this site's journal"
    );
    b.insert(card);
    let told = b.recharge(AMOUNT_FEN).unwrap_err();
    assert_eq!(
        told.message,
        format!("卡片已确认：订单 {order_id} 已充值成功（30.00 元），本次未再充值；请勿重复充值")
    );
    let order = host.groups.order(&order_id).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Succeeded);
    assert_eq!(
        (order.balance_before_fen, order.balance_after_fen),
        (Some(5_000), Some(8_000))
    );
    let auths = host.ledger.authorizations_for_card(&card_number).unwrap();
    assert_eq!(auths[0].state, AuthorizationState::Booked);
    assert!(auths[0].tac.is_some());
    assert_eq!(b.balance(), START_FEN + 3_000);

    // Back at A: its own open load is settled from the card (nothing twice); the operator there
    // is told once, then a new recharge goes ahead.
    let card = b.take();
    a.insert(card);
    let told = a.recharge(AMOUNT_FEN).unwrap_err();
    assert!(
        told.message.starts_with(&format!(
            "卡片已确认：此前结果待确认的订单 {order_id} 已充值成功"
        )),
        "{told}"
    );
    assert!(
        a.journal.list_open().unwrap().is_empty(),
        "settled from the card"
    );
    let done = a.recharge(AMOUNT_FEN).unwrap();
    assert_eq!(done.balance_after, "110.00");
    assert_eq!(a.balance(), START_FEN + 6_000);
    let group = host.groups.group("G001").unwrap().unwrap();
    assert_eq!(group.available_fen, QUOTA_FEN - 6_000);
    host.groups.verify().unwrap();
    let auths = host.ledger.authorizations_for_card(&card_number).unwrap();
    assert_eq!(auths.len(), 2);
    assert!(auths.iter().all(|a| a.state == AuthorizationState::Booked));
}

#[test]
fn the_host_authorises_a_group_load_only_for_its_reserved_order_card_amount_and_transaction() {
    let ca = fleet_ca();
    let db = common::FreshDatabase::create();
    let host = start_host(ca.path(), &db.url);
    let mut a = Site::new(ca.path(), "A", host.addr, city_card(0));
    let card_number = a.card_number();
    let other_card = city_card(1).card_number();
    let reserve = |card: &str, amount_fen: i64, txn: &str| {
        host.groups
            .reserve(&cardd_group::model::ReserveRequest {
                group_id: "G001".into(),
                operator: "group1".into(),
                card_number: card.into(),
                card_balance_fen: 0,
                amount_fen,
                txn_id: txn.into(),
                batch: None,
            })
            .unwrap()
    };
    let order = reserve(&card_number, AMOUNT_FEN, "A-x#1");
    let other = reserve(&other_card, AMOUNT_FEN, "A-x#2");
    let load = |site: &mut Site, txn: &str, amount: u32, order_id: &str| {
        let card_number = site.card_number();
        let mut card = OnSim {
            site: "A",
            reader: &mut site.reader,
            world: &site.world,
            journal: &site.journal,
            sam: site.sam.as_ref(),
            loads: &mut site.loads,
        };
        card.load(
            txn.into(),
            amount,
            card_number,
            Funding::GroupOrder {
                order_id: order_id.into(),
            },
        )
    };
    // Another amount, another transaction, another card's order, no order: no MAC2, the card
    // untouched, nothing authorised.
    for (txn, amount, order_id, why) in [
        (
            "A-x#1",
            2_000,
            order.order_id.as_str(),
            "pays 3000 fen, not 2000",
        ),
        (
            "A-x#9",
            3_000,
            order.order_id.as_str(),
            "is for load transaction A-x#1",
        ),
        ("A-x#2", 3_000, other.order_id.as_str(), "is for card"),
        ("A-x#8", 3_000, "GO20990101000001", "no group order"),
    ] {
        let refused = load(&mut a, txn, amount, order_id).unwrap_err();
        assert!(refused.contains(why), "{txn}: {refused}");
        assert_eq!(a.balance(), START_FEN);
    }
    assert!(host
        .ledger
        .authorizations_for_card(&card_number)
        .unwrap()
        .is_empty());
    // Its own terms: loaded, and the host settles the order from the TAC.
    let receipt = load(&mut a, "A-x#1", 3_000, &order.order_id).unwrap();
    assert_eq!(receipt.balance_after_fen, START_FEN + 3_000);
    let settled = host.groups.order(&order.order_id).unwrap().unwrap();
    assert_eq!(settled.status, OrderStatus::Succeeded);
    assert_eq!(
        (settled.balance_before_fen, settled.balance_after_fen),
        (Some(5_000), Some(8_000))
    );
    // The same order again under a new transaction: refused, it is settled.
    let again = load(&mut a, "A-x#7", 3_000, &order.order_id).unwrap_err();
    assert!(again.contains("is succeeded, not reserved"), "{again}");
    assert_eq!(a.balance(), START_FEN + 3_000);
    let auths = host.ledger.authorizations_for_card(&card_number).unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].state, AuthorizationState::Booked);
    // The site's own settlement afterwards is answered with the order as it is.
    let answered = a
        .service
        .host
        .settle(&order.order_id, "group1", 5_000, 8_000)
        .unwrap();
    assert_eq!(answered, settled);
    // A failed order releases nothing it did not hold, and its quota waits for the refund.
    let failed = a.service.host.fail(&other.order_id, "group1", "x").unwrap();
    assert_eq!(failed.status, OrderStatus::Failed);
    host.groups.verify().unwrap();
}

#[test]
fn a_group_load_decided_by_two_people_is_checked_by_the_card_and_a_wrong_verdict_blocks_its_refund()
{
    let ca = fleet_ca();
    let db = common::FreshDatabase::create();
    let host = start_host(ca.path(), &db.url);
    let mut a = Site::new(ca.path(), "A", host.addr, city_card(0));
    let mut b = Site::new(ca.path(), "B", host.addr, city_card(1));
    let card_number = a.card_number();
    b.take();

    // Pulled after the card took CREDIT at A, and never brought back there.
    a.world
        .set_fault_plan(
            READER,
            FaultPlan::new().on_command(CREDIT.0, CREDIT.1, FaultKind::RemoveAfterExec),
        )
        .unwrap();
    let stop = a.recharge(AMOUNT_FEN).unwrap_err();
    let order_id = stop.pending_order.clone().expect("outcome unknown");
    let txn = host.ledger.authorizations_for_card(&card_number).unwrap()[0]
        .txn_id
        .clone();

    // Two people decide, wrongly, that it did not land: the order fails (for the refund audit).
    host.review
        .propose(&txn, false, "客户称未到账", "supervisor1")
        .unwrap();
    host.review.decide(&txn, true, "auditor1").unwrap();
    assert_eq!(
        host.groups.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Failed
    );

    // The card is recharged at B: its counter shows the first load landed. The new order loads
    // (it is paid separately), and the failed one is back in 待核对: no refund of money that is
    // on the card, whoever asks.
    let card = a.take();
    b.insert(card);
    let done = b.recharge(AMOUNT_FEN).expect("B's own recharge");
    assert_eq!(done.balance_after, "110.00", "both loads are on the card");
    let refund = host.groups.refund(&order_id, "auditor2", "退款");
    assert!(
        matches!(refund, Err(GroupError::EvidenceConflict(_))),
        "{refund:?}"
    );
    assert_eq!(
        host.groups.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Failed
    );
    let item = host.review.item(&txn).unwrap();
    assert_eq!(item.state, "reconcile");
    assert_eq!(item.verdict.unwrap().card_check, "contradicted");

    // Decided again with the card's word: 充值成功 with the card's balances.
    host.review
        .propose(&txn, true, "卡片联机交易序号证实已到账", "supervisor1")
        .unwrap();
    host.review.decide(&txn, true, "auditor1").unwrap();
    let order = host.groups.order(&order_id).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Succeeded);
    assert_eq!(
        (order.balance_before_fen, order.balance_after_fen),
        (Some(5_000), Some(8_000))
    );
    host.groups.verify().unwrap();
}
