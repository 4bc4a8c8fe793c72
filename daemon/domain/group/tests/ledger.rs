//! The group host on its own: the seed's recharge rules refuse bad amounts with nothing
//! changed, the quota ledger is append-only and always sums to the available quota, orders and
//! top-ups move only along their transitions (nothing refunded or approved twice), queries
//! honour their period, and a tampered record fails the host closed.

use std::sync::Arc;

use cardd_group::model::*;
use cardd_group::{GroupError, GroupHost};
use cardd_journal::Store;
use cardd_store::{EmbeddedGroupHost, ManualClock};
use time::macros::{date, datetime};

const CARD: &str = "61010000000000000001";
const CARD2: &str = "61010000000000000002";

fn host() -> (Store, Arc<ManualClock>, EmbeddedGroupHost) {
    let store = Store::temporary().unwrap();
    let clock = Arc::new(ManualClock::new(datetime!(2024-06-15 10:00:00 +8)));
    let host = EmbeddedGroupHost::open_with_clock(&store, clock.clone()).unwrap();
    assert_eq!(host.seed_demo().unwrap(), 2);
    assert_eq!(host.seed_demo().unwrap(), 0, "seeding twice adds nothing");
    (store, clock, host)
}

fn reserve(card: &str, balance_fen: i64, amount_fen: i64, txn: &str) -> ReserveRequest {
    ReserveRequest {
        group_id: "G001".into(),
        operator: "group1".into(),
        card_number: card.into(),
        card_balance_fen: balance_fen,
        amount_fen,
        txn_id: txn.into(),
        batch: None,
    }
}

fn quota(host: &EmbeddedGroupHost) -> i64 {
    host.group("G001").unwrap().unwrap().available_fen
}

#[test]
fn the_seed_rules_refuse_bad_amounts_and_change_nothing() {
    let (_store, _clock, host) = host();
    let before = quota(&host);
    assert_eq!(before, 50_000);
    let cases: [(i64, i64, &str); 7] = [
        (900, 5_000, "不能小于10元"),
        (1_500, 5_000, "10元的整数倍"),
        (0, 5_000, "不能小于10元"),
        (-1_000, 5_000, "不能小于10元"),
        (1_050, 5_000, "10元的整数倍"),
        (96_000, 5_000, "不能超过1000元"),
        (60_000, 0, "额度不足"),
    ];
    for (i, (amount, balance, message)) in cases.iter().enumerate() {
        let err = host
            .reserve(&reserve(CARD, *balance, *amount, &format!("t{i}")))
            .unwrap_err();
        assert!(err.is_refusal());
        assert!(err.to_string().contains(message), "{amount}: {err}");
    }
    assert_eq!(quota(&host), before, "nothing reserved");
    assert!(
        host.ledger("G001", 0, 100).unwrap().len() == 1,
        "only the opening entry"
    );
    let period = Period::new(date!(2024 - 01 - 01), date!(2024 - 12 - 31)).unwrap();
    assert!(host.orders("G001", &period).unwrap().is_empty());
    // Exactly at the ceiling is fine: 950 + 50 = 1000.
    host.reserve(&reserve(CARD, 95_000, 5_000, "ok")).unwrap();
}

#[test]
fn orders_settle_fail_and_refund_exactly_once() {
    let (_store, clock, host) = host();
    let order = host
        .reserve(&reserve(CARD, 5_000, 2_000, "run1#1"))
        .unwrap();
    assert_eq!(
        (order.quota_before_fen, order.quota_after_fen),
        (50_000, 48_000)
    );
    assert_eq!(order.status, OrderStatus::Reserved);
    // One reserved order per card.
    let busy = host
        .reserve(&reserve(CARD, 5_000, 1_000, "run2#1"))
        .unwrap_err();
    assert!(matches!(busy, GroupError::CardBusy { .. }), "{busy}");
    // The same load transaction cannot serve two orders.
    let reused = host
        .reserve(&reserve(CARD2, 0, 1_000, "run1#1"))
        .unwrap_err();
    assert!(matches!(reused, GroupError::TxnInUse(_)), "{reused}");
    assert!(matches!(
        host.settle(&order.order_id, "group1", 5_000, 8_000),
        Err(GroupError::BalanceMismatch { .. })
    ));
    let done = host
        .settle(&order.order_id, "group1", 5_000, 7_000)
        .unwrap();
    assert_eq!(done.status, OrderStatus::Succeeded);
    assert!(
        host.fail(&order.order_id, "group1", "x").is_err(),
        "settled orders stay settled"
    );

    clock.advance(time::Duration::minutes(1));
    let second = host
        .reserve(&reserve(CARD, 7_000, 3_000, "run3#1"))
        .unwrap();
    assert!(
        host.refund(&second.order_id, "auditor", "ok").is_err(),
        "only failed orders are refunded"
    );
    let failed = host.fail(&second.order_id, "group1", "卡片被拔出").unwrap();
    assert_eq!(failed.status, OrderStatus::Failed);
    assert_eq!(
        quota(&host),
        45_000,
        "a failed order keeps its reservation until the refund"
    );
    let refunded = host
        .refund(&second.order_id, "auditor", "卡片证明未圈存")
        .unwrap();
    assert_eq!(refunded.status, OrderStatus::Refunded);
    assert_eq!(quota(&host), 48_000);
    let twice = host
        .refund(&second.order_id, "auditor", "again")
        .unwrap_err();
    assert!(matches!(twice, GroupError::BadState { .. }), "{twice}");
    assert!(host
        .resolve_succeeded(&second.order_id, "auditor", "x", None)
        .is_err());
    assert_eq!(quota(&host), 48_000, "never refunded twice");

    let ledger = host.ledger("G001", 0, 100).unwrap();
    let kinds: Vec<_> = ledger.iter().map(|e| (e.kind, e.amount_fen)).collect();
    assert_eq!(
        kinds,
        [
            (LedgerKind::TopUp, 50_000),
            (LedgerKind::Reserve, -2_000),
            (LedgerKind::Reserve, -3_000),
            (LedgerKind::Refund, 3_000)
        ]
    );
    assert_eq!(ledger.last().unwrap().balance_after_fen, quota(&host));
    assert_eq!(host.orders_in(OrderStatus::Refunded).unwrap().len(), 1);
}

#[test]
fn topups_grow_the_quota_only_once_approved() {
    let (_store, _clock, host) = host();
    for bad in [0, -100, 1_050, TOPUP_FEN_MAX + 100] {
        assert!(
            host.create_topup("G001", "group1", bad, "").is_err(),
            "{bad}"
        );
    }
    let topup = host
        .create_topup("G001", "group1", 100_000, "六月额度")
        .unwrap();
    assert_eq!(topup.status, TopUpStatus::Pending);
    assert!(
        host.audit_topup(&topup.topup_id, "auditor", true, "ok")
            .is_err(),
        "not paid yet"
    );
    let unknown = host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::NoAnswer {
                message: "超时".into(),
            },
        )
        .unwrap();
    assert_eq!(unknown.status, TopUpStatus::Unknown);
    let paid = host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: "SB1".into(),
            },
        )
        .unwrap();
    assert_eq!(paid.status, TopUpStatus::Paid);
    assert_eq!(quota(&host), 50_000, "paid is not approved");
    let approved = host
        .audit_topup(&topup.topup_id, "auditor", true, "到账")
        .unwrap();
    assert_eq!(approved.status, TopUpStatus::Approved);
    assert_eq!(quota(&host), 150_000);
    assert!(host
        .audit_topup(&topup.topup_id, "auditor", true, "again")
        .is_err());
    assert!(host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: "SB2".into()
            }
        )
        .is_err());
    assert_eq!(quota(&host), 150_000, "approved once");
    let declined = host.create_topup("G001", "group1", 500, "").unwrap();
    host.record_payment(
        &declined.topup_id,
        &PaymentOutcome::Declined {
            message: "余额不足".into(),
        },
    )
    .unwrap();
    assert!(host
        .audit_topup(&declined.topup_id, "auditor", true, "x")
        .is_err());
}

#[test]
fn queries_honour_their_period_newest_first() {
    let (_store, clock, host) = host();
    let first = host.reserve(&reserve(CARD, 0, 1_000, "a#1")).unwrap();
    host.fail(&first.order_id, "group1", "x").unwrap();
    clock.set(datetime!(2024-06-20 23:59:59 +8));
    let second = host.reserve(&reserve(CARD2, 0, 2_000, "b#1")).unwrap();
    clock.set(datetime!(2024-06-21 00:00:00 +8));
    let third = host.reserve(&reserve(CARD, 0, 3_000, "c#1")).unwrap();
    let ids = |p: Period| -> Vec<String> {
        host.orders("G001", &p)
            .unwrap()
            .into_iter()
            .map(|o| o.order_id)
            .collect()
    };
    assert_eq!(
        ids(Period::new(date!(2024 - 06 - 15), date!(2024 - 06 - 21)).unwrap()),
        [
            third.order_id.clone(),
            second.order_id.clone(),
            first.order_id.clone()
        ]
    );
    assert_eq!(
        ids(Period::new(date!(2024 - 06 - 16), date!(2024 - 06 - 20)).unwrap()),
        vec![second.order_id.clone()]
    );
    let preset = Period::preset(Preset::Last7Days, datetime!(2024-06-21 12:00 +8));
    assert_eq!(
        ids(preset),
        [third.order_id, second.order_id, first.order_id]
    );
    assert!(
        host.orders("G002", &preset).unwrap().is_empty(),
        "another group's orders are its own"
    );
}

#[test]
fn batches_hand_each_item_to_one_order() {
    let (_store, _clock, host) = host();
    let items = [
        BatchItemInput {
            card_number: CARD.into(),
            amount_fen: 1_000,
        },
        BatchItemInput {
            card_number: CARD2.into(),
            amount_fen: 2_000,
        },
    ];
    assert!(host.create_batch("G001", "group1", &[]).is_err());
    let bad = [BatchItemInput {
        card_number: CARD.into(),
        amount_fen: 1_500,
    }];
    assert!(host
        .create_batch("G001", "group1", &bad)
        .unwrap_err()
        .to_string()
        .contains("第 1 张卡"));
    let batch = host.create_batch("G001", "group1", &items).unwrap();
    let mut req = reserve(CARD, 0, 1_000, "batch#1");
    req.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 0,
    });
    let order = host.reserve(&req).unwrap();
    let stored = host.batch(&batch.batch_id).unwrap().unwrap();
    assert_eq!(
        stored.items[0].order_id.as_deref(),
        Some(order.order_id.as_str())
    );
    host.fail(&order.order_id, "group1", "x").unwrap();
    req.txn_id = "batch#2".into();
    assert!(
        host.reserve(&req)
            .unwrap_err()
            .to_string()
            .contains("已有订单"),
        "an item is done once"
    );
    let mut wrong = reserve(CARD2, 0, 1_000, "batch#3");
    wrong.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 1,
    });
    assert!(host
        .reserve(&wrong)
        .unwrap_err()
        .to_string()
        .contains("不符"));
}

#[test]
fn a_tampered_group_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let host = EmbeddedGroupHost::open(&store).unwrap();
        host.seed_demo().unwrap();
        host.reserve(&reserve(CARD, 0, 1_000, "x#1")).unwrap();
        // Change the quota without a ledger entry, keeping a valid checksum.
        let tree = store.tree(cardd_store::GROUP_TREE).unwrap();
        let raw = tree.get("grp/G001").unwrap().unwrap();
        let mut group: Group = serde_json::from_slice(&raw[32..]).unwrap();
        group.available_fen += 100;
        let json = serde_json::to_vec(&group).unwrap();
        let mut value = sha2_digest(&json);
        value.extend_from_slice(&json);
        tree.insert("grp/G001", value).unwrap();
        store.durable_flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let err = EmbeddedGroupHost::open(&store).unwrap_err();
    assert!(err.to_string().contains("已损坏"), "{err}");
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}
