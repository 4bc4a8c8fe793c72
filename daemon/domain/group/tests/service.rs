//! The group service without a daemon: recharges on a simulated city card through the journal
//! (credited, card pulled mid-CREDIT with the outcome unknown, proven not credited), the order
//! state machine as the operator and the auditor see it, refunds refused when the card evidence
//! says the load landed, the quota ledger under racing recharges, top-ups and their audit,
//! batches, and who sees which group.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cardd_api::group::{
    AuditTopUpParams, BatchCreateParams, BatchItemParams, LedgerParams, OrderDecisionParams,
    QueryParams, TopUpParams,
};
use cardd_api::{ErrorCode, Role};
use cardd_crypto::{bcd, Algorithm};
use cardd_group::model::{BatchRef, OrderStatus, ReserveRequest, TopUpStatus, Verdict};
use cardd_group::service::{CardOnReader, RechargeCard, RechargeRequest, Viewer};
use cardd_group::{
    GroupError, GroupHost, GroupOwners, GroupService, PaymentError, PaymentGateway, PaymentReceipt,
    PaymentRequest,
};
use cardd_journal::{
    load_card, recover_card, Funding, Journal, LoadReceipt, LoadRequest, ManualClock, Store,
};
use cardd_purse::{Purse, SecurityModule, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{
    FaultKind, FaultPlan, SimCard, SimFactory, SimReaderConfig, SimReaderKind, SimWorld,
};
use cardd_store::EmbeddedGroupHost;
use time::macros::datetime;

const READER: &str = "sim:r";
/// The demo city card: `61010000000000000001`, 50.00 yuan.
const CITY: &str = "61010000000000000001";
/// CREDIT FOR LOAD.
const CREDIT: (u8, u8) = (0x80, 0x52);

/// A bank that pays, declines or does not answer as told, and remembers what it paid.
#[derive(Debug, Default)]
struct Bank {
    /// 0 pays, 1 declines, 2 pays but the answer is lost.
    mode: AtomicU8,
    paid: std::sync::Mutex<Vec<PaymentReceipt>>,
}

impl PaymentGateway for Bank {
    fn name(&self) -> &'static str {
        "test"
    }

    fn pay(&self, request: &PaymentRequest) -> Result<PaymentReceipt, PaymentError> {
        match self.mode.load(Ordering::SeqCst) {
            1 => Err(PaymentError::Declined("余额不足".into())),
            mode => {
                let receipt = PaymentReceipt {
                    payment_id: request.payment_id.clone(),
                    bank_serial: format!("B{}", request.payment_id),
                    amount_fen: request.amount_fen,
                };
                self.paid.lock().unwrap().push(receipt.clone());
                if mode == 2 {
                    return Err(PaymentError::NoAnswer("超时".into()));
                }
                Ok(receipt)
            }
        }
    }

    fn query(&self, payment_id: &str) -> Result<Option<PaymentReceipt>, PaymentError> {
        Ok(self
            .paid
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.payment_id == payment_id)
            .cloned())
    }
}

struct Rig {
    world: SimWorld,
    reader: Reader,
    journal: Journal,
    sam: Arc<dyn SecurityModule>,
    host: Arc<EmbeddedGroupHost>,
    bank: Arc<Bank>,
    svc: GroupService,
    loads: u32,
    _store: Store,
}

fn operator() -> Viewer {
    Viewer {
        username: "group1".into(),
        role: Role::GroupOperator,
        group_id: Some("G001".into()),
    }
}

fn auditor(name: &str) -> Viewer {
    Viewer {
        username: name.into(),
        role: Role::Auditor,
        group_id: None,
    }
}

fn no_names(u: &str) -> String {
    u.to_owned()
}

impl Rig {
    fn new() -> Rig {
        let world = SimWorld::new();
        world
            .add_reader(
                SimReaderConfig::new("r", SimReaderKind::Contact)
                    .with_card(cardd_sim::demo::demo_city_card()),
            )
            .unwrap();
        let session = SimFactory::new(world.clone())
            .open(&ReaderSelector::Id(READER.into()))
            .unwrap();
        let store = Store::temporary().unwrap();
        let journal = Journal::open(&store).unwrap();
        let clock = Arc::new(ManualClock::new(datetime!(2024-06-15 10:00:00 +8)));
        let host = Arc::new(EmbeddedGroupHost::open_with_clock(&store, clock.clone()).unwrap());
        host.seed_demo().unwrap();
        let sam: Arc<dyn SecurityModule> = Arc::new(SoftSam::demo());
        let bank = Arc::new(Bank::default());
        let svc = GroupService::new(
            host.clone(),
            bank.clone(),
            sam.clone(),
            Arc::new(GroupOwners(host.clone())),
            clock,
        );
        Rig {
            world,
            reader: Reader::new(session, Duration::from_secs(5)),
            journal,
            sam,
            host,
            bank,
            svc,
            loads: 0,
            _store: store,
        }
    }

    fn recharge(
        &mut self,
        amount_fen: i64,
        batch: Option<BatchRef>,
    ) -> Result<cardd_api::group::RechargeDone, cardd_group::service::RechargeStop> {
        let mut card = OnSim {
            reader: &mut self.reader,
            world: &self.world,
            journal: &self.journal,
            sam: self.sam.as_ref(),
            loads: &mut self.loads,
        };
        self.svc.recharge(
            Some(&self.journal),
            &mut card,
            RechargeRequest {
                group_id: "G001".into(),
                operator: "group1".into(),
                expected_card: None,
                amount_fen,
                batch,
            },
        )
    }

    fn pull_card_at_next_credit(&self, kind: FaultKind) {
        self.world
            .set_fault_plan(
                READER,
                FaultPlan::new().on_command(CREDIT.0, CREDIT.1, kind),
            )
            .unwrap();
    }

    /// The pulled card is put back on the reader.
    fn put_back(&self) {
        let card = self.world.take_pocket(READER).expect("a pulled card");
        self.world.insert_card(READER, card).unwrap();
    }

    fn balance(&self) -> u32 {
        self.world
            .card(READER)
            .or_else(|| self.world.take_pocket(READER))
            .and_then(|c| c.balance())
            .unwrap()
    }

    fn quota(&self) -> i64 {
        self.host.group("G001").unwrap().unwrap().available_fen
    }

    fn order(&self, order_id: &str) -> cardd_group::model::RechargeOrder {
        self.host.order(order_id).unwrap().unwrap()
    }

    fn only_order(&self) -> cardd_group::model::RechargeOrder {
        let period = cardd_group::model::Period::preset(
            cardd_group::model::Preset::Last7Days,
            datetime!(2024-06-15 10:00:00 +8),
        );
        let orders = self.host.orders("G001", &period).unwrap();
        assert_eq!(orders.len(), 1, "{orders:?}");
        orders.into_iter().next().unwrap()
    }
}

/// The simulated card on its reader as a recharge uses it.
struct OnSim<'a> {
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
            city: matches!(card, SimCard::City(_)),
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
        format!("run-1#{}", self.loads)
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

#[test]
fn a_recharge_reserves_the_quota_credits_the_card_and_settles_the_order() {
    let mut rig = Rig::new();
    assert_eq!((rig.balance(), rig.quota()), (5_000, 50_000));
    let done = rig.recharge(2_000, None).unwrap();
    assert_eq!(
        (
            done.card_number.as_str(),
            done.balance_before.as_str(),
            done.amount.as_str(),
            done.balance_after.as_str(),
            done.quota_before.as_str(),
            done.quota_after.as_str()
        ),
        (CITY, "50.00", "20.00", "70.00", "500.00", "480.00")
    );
    assert_eq!((rig.balance(), rig.quota()), (7_000, 48_000));
    let order = rig.order(&done.order_id);
    assert_eq!(order.status, OrderStatus::Succeeded);
    assert_eq!(
        (order.balance_before_fen, order.balance_after_fen),
        (Some(5_000), Some(7_000))
    );
    // The seed's rules, refused before anything is reserved or sent to the card.
    for (amount, words) in [
        (1_500, "10元的整数倍"),
        (500, "不能小于10元"),
        (94_000, "不能超过1000元"),
    ] {
        let stop = rig.recharge(amount, None).unwrap_err();
        assert!(stop.message.contains(words), "{amount}: {}", stop.message);
        assert_eq!(stop.pending_order, None);
    }
    assert_eq!((rig.balance(), rig.quota()), (7_000, 48_000));
    // The evidence of a settled order: landed; nothing to refund.
    let ev = rig
        .svc
        .evidence(Some(&rig.journal), &order, &no_names)
        .unwrap();
    assert_eq!(ev.verdict, Verdict::Landed);
    assert_eq!(ev.card_balance_after.as_deref(), Some("70.00"));
}

#[test]
fn a_card_pulled_mid_credit_leaves_the_order_pending_never_failed_until_the_card_decides() {
    let mut rig = Rig::new();
    // The card executes CREDIT and leaves before answering: the money is on it, unproven.
    rig.pull_card_at_next_credit(FaultKind::RemoveAfterExec);
    let stop = rig.recharge(2_000, None).unwrap_err();
    let order_id = stop.pending_order.clone().expect("结果待确认, not failed");
    assert!(
        stop.message.starts_with("充值结果待确认"),
        "{}",
        stop.message
    );
    let order = rig.order(&order_id);
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.status.label(), "结果待确认");
    assert_eq!(rig.quota(), 48_000, "the quota stays reserved");
    // Not refundable while unknown; reconciliation leaves it for the card.
    assert_eq!(rig.svc.reconcile(Some(&rig.journal)).unwrap(), 0);
    let ev = rig
        .svc
        .evidence(Some(&rig.journal), &order, &no_names)
        .unwrap();
    assert_eq!(ev.verdict, Verdict::Unknown);
    let refused = rig
        .svc
        .refund(
            Some(&rig.journal),
            &auditor("audit1"),
            &OrderDecisionParams {
                order_id: order_id.clone(),
                reason: "客户要求".into(),
            },
            &no_names,
        )
        .unwrap_err();
    assert!(refused.to_string().contains("结果待确认"), "{refused}");
    assert_eq!(rig.order(&order_id).status, OrderStatus::Pending);
    // A second recharge is refused while the card is away...
    assert!(rig.recharge(2_000, None).is_err());
    // ...and once it is back, the card settles the order (credited): the retry is the same
    // intent and pays nothing twice.
    rig.put_back();
    let stop = rig.recharge(2_000, None).unwrap_err();
    assert!(
        stop.message
            .contains(&format!("订单 {order_id} 已充值成功")),
        "{}",
        stop.message
    );
    assert_eq!(rig.order(&order_id).status, OrderStatus::Succeeded);
    assert_eq!((rig.balance(), rig.quota()), (7_000, 48_000));
    // The next recharge goes ahead.
    let done = rig.recharge(1_000, None).unwrap();
    assert_eq!(done.balance_after, "80.00");
}

#[test]
fn a_load_the_card_proves_not_credited_fails_the_order_and_only_then_is_it_refunded_once() {
    let mut rig = Rig::new();
    // The card leaves before CREDIT reaches it: unknown until the card is read again.
    rig.pull_card_at_next_credit(FaultKind::RemoveBeforeExec);
    let order_id = rig
        .recharge(3_000, None)
        .unwrap_err()
        .pending_order
        .expect("unknown until the card is read");
    assert_eq!(rig.order(&order_id).status, OrderStatus::Pending);
    rig.put_back();
    // The card is read (recovery): the load did not land → 充值失败（待退款）.
    let stop = rig.recharge(1_000, None);
    let order = rig.order(&order_id);
    assert_eq!(order.status, OrderStatus::Failed, "{stop:?}");
    assert_eq!(order.status.label(), "充值失败（待退款）");
    let ev = rig
        .svc
        .evidence(Some(&rig.journal), &order, &no_names)
        .unwrap();
    assert_eq!(ev.verdict, Verdict::NotLanded);
    let quota = rig.quota();
    let decision = OrderDecisionParams {
        order_id: order_id.clone(),
        reason: "卡片证明未到账".into(),
    };
    // The auditor cannot call it succeeded, but can refund it, once.
    let e = rig
        .svc
        .resolve(Some(&rig.journal), &auditor("audit1"), &decision, &no_names)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::EvidenceConflict, "{e}");
    let row = rig
        .svc
        .refund(Some(&rig.journal), &auditor("audit1"), &decision, &no_names)
        .unwrap();
    assert_eq!(row.status, OrderStatus::Refunded);
    assert_eq!(rig.quota(), quota + 3_000);
    let twice = rig
        .svc
        .refund(Some(&rig.journal), &auditor("audit1"), &decision, &no_names)
        .unwrap_err();
    assert_eq!(twice.code(), ErrorCode::GroupStateConflict, "{twice}");
    assert_eq!(rig.quota(), quota + 3_000);
}

#[test]
fn a_refund_is_refused_when_the_card_evidence_says_the_load_landed() {
    let mut rig = Rig::new();
    // An order whose load committed, marked failed by mistake.
    let order = rig
        .host
        .reserve(&ReserveRequest {
            group_id: "G001".into(),
            operator: "group1".into(),
            card_number: CITY.into(),
            card_balance_fen: 5_000,
            amount_fen: 2_000,
            txn_id: "manual#1".into(),
            batch: None,
        })
        .unwrap();
    let mut card = OnSim {
        reader: &mut rig.reader,
        world: &rig.world,
        journal: &rig.journal,
        sam: rig.sam.as_ref(),
        loads: &mut rig.loads,
    };
    card.load(
        "manual#1".into(),
        2_000,
        CITY.into(),
        Funding::GroupOrder {
            order_id: order.order_id.clone(),
        },
    )
    .unwrap();
    rig.host
        .fail(&order.order_id, "group1", "操作员误判")
        .unwrap();
    let decision = OrderDecisionParams {
        order_id: order.order_id.clone(),
        reason: "退款".into(),
    };
    let e = rig
        .svc
        .refund(Some(&rig.journal), &auditor("audit1"), &decision, &no_names)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::EvidenceConflict);
    assert!(e.to_string().starts_with("不能退款：卡片已圈存成功"), "{e}");
    assert_eq!(rig.order(&order.order_id).status, OrderStatus::Failed);
    assert_eq!(rig.quota(), 48_000, "nothing returned");
    // The auditor resolves it as succeeded, with the card's balances.
    let row = rig
        .svc
        .resolve(Some(&rig.journal), &auditor("audit1"), &decision, &no_names)
        .unwrap();
    assert_eq!(row.status, OrderStatus::Succeeded);
    assert_eq!(
        (row.balance_before.as_str(), row.balance_after.as_str()),
        ("50.00", "70.00")
    );
}

#[test]
fn two_recharges_racing_for_the_last_quota_one_wins() {
    let rig = Rig::new();
    for round in 0..10 {
        // Leave exactly 10 yuan in G002's quota, then let two cards race for it.
        let host: Arc<dyn GroupHost> = rig.host.clone();
        let available = host.group("G002").unwrap().unwrap().available_fen;
        if available > 1_000 {
            let extra = available - 1_000;
            let mut left = extra;
            let mut n = 0;
            while left > 0 {
                let amount = left.min(100_000);
                host.reserve(&ReserveRequest {
                    group_id: "G002".into(),
                    operator: "group2".into(),
                    card_number: format!("61010000000099{round:02}{n:04}"),
                    card_balance_fen: 0,
                    amount_fen: amount,
                    txn_id: format!("drain{round}#{n}"),
                    batch: None,
                })
                .unwrap();
                left -= amount;
                n += 1;
            }
        }
        assert_eq!(host.group("G002").unwrap().unwrap().available_fen, 1_000);
        let results: Vec<_> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|i| {
                    let host = host.clone();
                    s.spawn(move || {
                        host.reserve(&ReserveRequest {
                            group_id: "G002".into(),
                            operator: "group2".into(),
                            card_number: format!("610100000000008{round}{i:04}"),
                            card_balance_fen: 0,
                            amount_fen: 1_000,
                            txn_id: format!("race{round}#{i}"),
                            batch: None,
                        })
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(lost, GroupError::QuotaInsufficient { .. }),
            "{lost}"
        );
        assert_eq!(host.group("G002").unwrap().unwrap().available_fen, 0);
        // The ledger still sums to the quota.
        rig.host.verify().unwrap();
        // Give the quota back for the next round (an approved transfer).
        let topup = host.create_topup("G002", "group2", 20_000, "").unwrap();
        host.record_payment(
            &topup.topup_id,
            &cardd_group::model::PaymentOutcome::Paid {
                bank_serial: format!("S{round}"),
            },
        )
        .unwrap();
        host.audit_topup(&topup.topup_id, "audit1", true, "到账")
            .unwrap();
    }
    let entries = rig
        .svc
        .ledger(
            &auditor("audit1"),
            &LedgerParams {
                group_id: Some("G002".into()),
                after_seq: 0,
                limit: None,
            },
        )
        .unwrap();
    let sum: i64 = entries.iter().map(|e| e.amount_fen).sum();
    assert_eq!(sum, rig.host.group("G002").unwrap().unwrap().available_fen);
}

#[test]
fn a_top_up_grows_the_quota_only_once_an_auditor_approves_it() {
    let rig = Rig::new();
    let who = operator();
    let quota = rig.quota();
    let started = rig
        .svc
        .begin_topup(
            &who,
            &TopUpParams {
                amount: "1000".into(),
                remark: "工资".into(),
            },
        )
        .unwrap();
    let paid = rig.bank.pay(&started.request);
    let page = rig.svc.finish_topup(&started, paid).unwrap();
    assert_eq!(page.status, TopUpStatus::Paid);
    assert_eq!(page.amount, "1000.00");
    assert_eq!(rig.quota(), quota, "paid, not yet approved");
    let audit = AuditTopUpParams {
        topup_id: page.topup_id.clone(),
        approve: true,
        reason: "已到账".into(),
    };
    let approved = rig.svc.audit_topup(&auditor("audit1"), &audit).unwrap();
    assert_eq!(approved.status, TopUpStatus::Approved);
    assert_eq!(rig.quota(), quota + 100_000);
    let again = rig.svc.audit_topup(&auditor("audit1"), &audit).unwrap_err();
    assert_eq!(again.code(), ErrorCode::GroupStateConflict);
    assert_eq!(rig.quota(), quota + 100_000, "approved once");

    // Declined: PaymentDeclined, nothing moved.
    rig.bank.mode.store(1, Ordering::SeqCst);
    let params = TopUpParams {
        amount: "500".into(),
        remark: String::new(),
    };
    let started = rig.svc.begin_topup(&who, &params).unwrap();
    let e = rig
        .svc
        .finish_topup(&started, rig.bank.pay(&started.request))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PaymentDeclined, "{e}");
    assert!(e.to_string().contains("转账失败"), "{e}");

    // Paid but the answer was lost: PaymentUnknown; asking again finds the payment.
    rig.bank.mode.store(2, Ordering::SeqCst);
    let started = rig.svc.begin_topup(&who, &params).unwrap();
    let e = rig
        .svc
        .finish_topup(&started, rig.bank.pay(&started.request))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PaymentUnknown, "{e}");
    let status = rig.svc.topup_status(&who, &started.topup.topup_id).unwrap();
    assert_eq!(status.status, TopUpStatus::Paid);
    assert_eq!(rig.quota(), quota + 100_000, "still to be approved");
    // Amounts are whole yuan.
    let e = rig
        .svc
        .begin_topup(
            &who,
            &TopUpParams {
                amount: "10.50".into(),
                remark: String::new(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("不能带小数点"), "{e}");
}

#[test]
fn a_batch_reports_each_card_and_a_group_operator_sees_only_their_group() {
    let mut rig = Rig::new();
    let who = operator();
    let report = rig
        .svc
        .create_batch(
            &who,
            &BatchCreateParams {
                items: vec![
                    BatchItemParams {
                        card_number: CITY.into(),
                        amount: "20".into(),
                    },
                    BatchItemParams {
                        card_number: "61010000000000000002".into(),
                        amount: "30".into(),
                    },
                ],
            },
        )
        .unwrap();
    assert_eq!((report.total, report.pending, report.succeeded), (2, 2, 0));
    let done = rig
        .recharge(
            2_000,
            Some(BatchRef {
                batch_id: report.batch_id.clone(),
                index: 0,
            }),
        )
        .unwrap();
    let report = rig
        .svc
        .batch(Some(&rig.journal), &who, &report.batch_id)
        .unwrap();
    assert_eq!(
        (
            report.pending,
            report.succeeded,
            report.failed,
            report.in_progress
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(
        report.items[0].order_id.as_deref(),
        Some(done.order_id.as_str())
    );
    assert_eq!(report.items[0].balance_after.as_deref(), Some("70.00"));
    assert_eq!(report.items[1].status, "pending");
    // The same item is never recharged twice.
    let twice = rig
        .recharge(
            2_000,
            Some(BatchRef {
                batch_id: report.batch_id.clone(),
                index: 0,
            }),
        )
        .unwrap_err();
    assert!(twice.message.contains("已有订单"), "{}", twice.message);

    // Another group's batch, order and query are refused with the seed's wording.
    let other = Viewer {
        username: "group2".into(),
        role: Role::GroupOperator,
        group_id: Some("G002".into()),
    };
    let e = rig
        .svc
        .batch(Some(&rig.journal), &other, &report.batch_id)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::GroupAccessDenied);
    assert!(e.to_string().starts_with("用户和密码错误"), "{e}");
    assert_eq!(
        rig.svc
            .visible_order(&other, &done.order_id)
            .unwrap_err()
            .code(),
        ErrorCode::GroupAccessDenied
    );
    let q = QueryParams {
        group_id: Some("G001".into()),
        ..QueryParams::default()
    };
    assert_eq!(
        rig.svc
            .orders(Some(&rig.journal), &other, &q, &no_names)
            .unwrap_err()
            .code(),
        ErrorCode::GroupAccessDenied
    );
    // Its own query shows the order and its statistics; an auditor must name a group.
    let page = rig
        .svc
        .orders(Some(&rig.journal), &who, &QueryParams::default(), &no_names)
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.stats.success_amount, "20.00");
    assert_eq!(page.period.label, "最近7天");
    assert_eq!(
        rig.svc
            .orders(
                Some(&rig.journal),
                &auditor("audit1"),
                &QueryParams::default(),
                &no_names
            )
            .unwrap_err()
            .code(),
        ErrorCode::InvalidParams
    );
    assert_eq!(rig.only_order().order_id, done.order_id);
}

#[test]
fn an_unsettled_order_names_itself_as_the_owner_of_its_load() {
    use cardd_journal::IntentOwners;
    let rig = Rig::new();
    let owners = GroupOwners(rig.host.clone());
    let order = rig
        .host
        .reserve(&ReserveRequest {
            group_id: "G001".into(),
            operator: "group1".into(),
            card_number: CITY.into(),
            card_balance_fen: 5_000,
            amount_fen: 1_000,
            txn_id: "owned#1".into(),
            batch: None,
        })
        .unwrap();
    let named = format!("集团充值订单 {}", order.order_id);
    assert_eq!(owners.owner_of("owned#1").as_deref(), Some(named.as_str()));
    rig.host
        .mark_pending(&order.order_id, "cardd", "写卡结果未知")
        .unwrap();
    assert_eq!(owners.owner_of("owned#1").as_deref(), Some(named.as_str()));
    assert_eq!(owners.owner_of("someone-else#1"), None);
    rig.host
        .settle(&order.order_id, "cardd", 5_000, 6_000)
        .unwrap();
    assert_eq!(
        owners.owner_of("owned#1"),
        None,
        "a settled order blocks nothing"
    );
}
