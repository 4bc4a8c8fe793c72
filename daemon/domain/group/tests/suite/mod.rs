//! The group host's trait-level tests, one suite for every implementation of [`GroupHost`]:
//! the embedded one on sled (`tests/ledger.rs` here) and the PostgreSQL one
//! (`daemon/store-pg/tests/group.rs`, which includes this file). Each implementation provides a
//! [`Fixture`] (a fresh, empty host on its own storage with a manual clock) and expands
//! [`group_suite!`] once; every test below then runs against it.
//!
//! The seed's recharge rules refuse bad amounts with nothing changed, the quota ledger is
//! append-only and always sums to the available quota, orders and top-ups move only along their
//! transitions (nothing refunded or approved twice), queries honour their period, everything
//! survives reopening, and under concurrency (several sites on one storage) the quota is never
//! overdrawn and one card has one unsettled order.

use std::sync::{Arc, Barrier};

use cardd_group::model::*;
use cardd_group::{GroupError, GroupHost};
use cardd_journal::clock::ManualClock;
use time::macros::{date, datetime};
use time::OffsetDateTime;

/// A fresh, empty group host on its own storage.
pub trait Fixture {
    /// The host.
    fn host(&self) -> &dyn GroupHost;
    /// Its clock, starting at [`START`].
    fn clock(&self) -> &Arc<ManualClock>;
    /// The implementation's `seed_demo`: how many demo groups it added.
    fn seed_demo(&self) -> u32;
    /// Everything stored, to prove that a refusal changed nothing.
    fn snapshot(&self) -> Vec<String>;
    /// Panics unless the storage is consistent (the implementation's `verify`: the ledger sums
    /// to each group's quota, orders and top-ups agree with it).
    fn verify(&self);
    /// Closes the host and opens it again on the same storage, with the same clock.
    fn reopen(&mut self);
    /// Another host on the same storage, as another site would open it (its own connections),
    /// with the same clock.
    fn another_site(&self) -> Box<dyn GroupHost>;
}

/// Makes a fresh fixture.
pub type Make = dyn Fn() -> Box<dyn Fixture>;

/// Expands to one `#[test]` per suite test, each calling it with `$make`.
macro_rules! group_suite {
    ($make:path) => {
        group_suite!(@tests $make;
            the_seed_rules_refuse_bad_amounts_and_change_nothing,
            orders_settle_fail_and_refund_exactly_once,
            pending_orders_settle_and_the_auditor_resolves_failed_ones,
            topups_grow_the_quota_only_once_approved,
            queries_honour_their_period_newest_first,
            batches_hand_each_item_to_one_order,
            groups_are_created_without_quota_and_renamed_keeping_it,
            unknown_records_and_bad_input_are_refused_with_nothing_changed,
            everything_survives_reopening_and_ids_continue,
            one_group_s_quota_recharged_from_four_sites_is_never_overdrawn,
            two_sites_reserving_for_one_card_let_exactly_one_win,
            settling_again_with_the_same_balances_is_answered_not_refused,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                suite::$name(&$make)
            }
        )*
    };
}

pub const CARD: &str = "61010000000000000001";
pub const CARD2: &str = "61010000000000000002";
/// Every fixture's clock starts here.
pub const START: OffsetDateTime = datetime!(2024-06-15 10:00:00 +8);

/// A fixture with the demo groups (G001: 500 yuan, G002: 200 yuan), seeded twice.
pub fn seeded(make: &Make) -> Box<dyn Fixture> {
    let f = make();
    assert_eq!(f.seed_demo(), 2);
    assert_eq!(f.seed_demo(), 0, "seeding twice adds nothing");
    f
}

pub fn reserve(card: &str, balance_fen: i64, amount_fen: i64, txn: &str) -> ReserveRequest {
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

pub fn quota_of(host: &dyn GroupHost, group_id: &str) -> i64 {
    host.group(group_id).unwrap().unwrap().available_fen
}

fn quota(host: &dyn GroupHost) -> i64 {
    quota_of(host, "G001")
}

/// Panics unless the group's ledger runs 1, 2, 3, … with running balances that sum to its
/// available quota; returns the ledger.
pub fn assert_ledger_sums(host: &dyn GroupHost, group_id: &str) -> Vec<LedgerEntry> {
    let group = host.group(group_id).unwrap().unwrap();
    let ledger = host.ledger(group_id, 0, QUERY_ROWS_MAX).unwrap();
    let mut sum = 0;
    for (i, e) in ledger.iter().enumerate() {
        sum += e.amount_fen;
        assert_eq!(e.seq, i as u64 + 1, "{e:?}");
        assert_eq!(e.balance_after_fen, sum, "{e:?}");
        assert!(e.balance_after_fen >= 0, "never overdrawn: {e:?}");
    }
    assert_eq!(sum, group.available_fen, "the quota is the ledger's sum");
    assert_eq!(ledger.len() as u64, group.ledger_seq);
    ledger
}

fn the_year() -> Period {
    Period::new(date!(2024 - 01 - 01), date!(2024 - 12 - 31)).unwrap()
}

pub fn the_seed_rules_refuse_bad_amounts_and_change_nothing(make: &Make) {
    let f = seeded(make);
    let host = f.host();
    let before = quota(host);
    assert_eq!(before, 50_000);
    let snapshot = f.snapshot();
    let cases: [(i64, i64, &str); 8] = [
        (900, 5_000, "充值金额不能小于10元"),
        (1_500, 5_000, "充值金额必须是10元的整数倍，15.00 元不是"),
        (0, 5_000, "不能小于10元"),
        (-1_000, 5_000, "不能小于10元"),
        (1_050, 5_000, "10元的整数倍"),
        (
            96_000,
            5_000,
            "充值后卡内金额不能超过1000元：卡内余额 50.00 元，充值 960.00 元后为 1010.00 元",
        ),
        (1_000, -1, "不能超过1000元"),
        (
            60_000,
            0,
            "集团可用额度不足：可用额度 500.00 元，充值金额 600.00 元",
        ),
    ];
    for (i, (amount, balance, message)) in cases.iter().enumerate() {
        let err = host
            .reserve(&reserve(CARD, *balance, *amount, &format!("t{i}")))
            .unwrap_err();
        assert!(err.is_refusal());
        assert!(err.to_string().contains(message), "{amount}: {err}");
    }
    let err = host.reserve(&reserve(CARD, 0, 60_000, "q")).unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::QuotaInsufficient {
                available_fen: 50_000,
                amount_fen: 60_000
            }
        ),
        "{err}"
    );
    assert_eq!(f.snapshot(), snapshot, "nothing changed");
    assert_eq!(quota(host), before, "nothing reserved");
    assert_eq!(
        host.ledger("G001", 0, 100).unwrap().len(),
        1,
        "only the opening entry"
    );
    assert!(host.orders("G001", &the_year()).unwrap().is_empty());
    // Exactly at the ceiling is fine: 950 + 50 = 1000; exactly the whole quota too.
    host.reserve(&reserve(CARD, 95_000, 5_000, "ok")).unwrap();
    host.reserve(&reserve(CARD2, 0, 45_000, "all")).unwrap();
    assert_eq!(quota(host), 0);
    let err = host
        .reserve(&reserve("61010000000000000003", 0, 1_000, "none"))
        .unwrap_err();
    assert!(matches!(err, GroupError::QuotaInsufficient { .. }), "{err}");
    assert_ledger_sums(host, "G001");
    f.verify();
}

pub fn orders_settle_fail_and_refund_exactly_once(make: &Make) {
    let f = seeded(make);
    let (host, clock) = (f.host(), f.clock());
    let order = host
        .reserve(&reserve(CARD, 5_000, 2_000, "run1#1"))
        .unwrap();
    assert_eq!(
        (order.quota_before_fen, order.quota_after_fen),
        (50_000, 48_000)
    );
    assert_eq!(order.status, OrderStatus::Reserved);
    assert_eq!(order.order_id, "GO20240615000001");
    assert_eq!(order.created_at, START);
    assert_eq!(host.order(&order.order_id).unwrap().unwrap(), order);
    // One reserved order per card.
    let busy = host
        .reserve(&reserve(CARD, 5_000, 1_000, "run2#1"))
        .unwrap_err();
    assert!(
        matches!(&busy, GroupError::CardBusy { card_number, order_id }
            if card_number == CARD && *order_id == order.order_id),
        "{busy}"
    );
    // The same load transaction cannot serve two orders.
    let reused = host
        .reserve(&reserve(CARD2, 0, 1_000, "run1#1"))
        .unwrap_err();
    assert!(matches!(reused, GroupError::TxnInUse(_)), "{reused}");
    assert_eq!(reused.to_string(), "圈存交易号 run1#1 已用于其他订单");
    let mismatch = host
        .settle(&order.order_id, "group1", 5_000, 8_000)
        .unwrap_err();
    assert!(
        matches!(mismatch, GroupError::BalanceMismatch { .. }),
        "{mismatch}"
    );
    assert_eq!(
        mismatch.to_string(),
        "订单 GO20240615000001 的充值后余额 80.00 元不等于充值前余额 50.00 元加充值金额 20.00 元"
    );
    clock.advance(time::Duration::seconds(5));
    let done = host
        .settle(&order.order_id, "group1", 5_000, 7_000)
        .unwrap();
    assert_eq!(done.status, OrderStatus::Succeeded);
    assert_eq!(
        (done.balance_before_fen, done.balance_after_fen),
        (Some(5_000), Some(7_000))
    );
    assert_eq!(done.updated_at, START + time::Duration::seconds(5));
    assert_eq!(done.history.len(), 2);
    assert_eq!(
        (done.history[1].from.as_deref(), done.history[1].to.as_str()),
        (Some("reserved"), "succeeded")
    );
    let settled = host.fail(&order.order_id, "group1", "x").unwrap_err();
    assert_eq!(
        settled.to_string(),
        "充值订单 GO20240615000001 当前状态为“充值成功”，不能标记为充值失败",
        "settled orders stay settled"
    );

    clock.advance(time::Duration::minutes(1));
    let second = host
        .reserve(&reserve(CARD, 7_000, 3_000, "run3#1"))
        .unwrap();
    let early = host.refund(&second.order_id, "auditor", "ok").unwrap_err();
    assert_eq!(
        early.to_string(),
        format!("充值订单 {} 当前状态为“充值中”，不能退款", second.order_id),
        "only failed orders are refunded"
    );
    let failed = host.fail(&second.order_id, "group1", "卡片被拔出").unwrap();
    assert_eq!(failed.status, OrderStatus::Failed);
    assert_eq!(failed.failure.as_deref(), Some("卡片被拔出"));
    assert_eq!(
        quota(host),
        45_000,
        "a failed order keeps its reservation until the refund"
    );
    let refunded = host
        .refund(&second.order_id, "auditor", "卡片证明未圈存")
        .unwrap();
    assert_eq!(refunded.status, OrderStatus::Refunded);
    assert_eq!(quota(host), 48_000);
    let twice = host
        .refund(&second.order_id, "auditor", "again")
        .unwrap_err();
    assert!(matches!(twice, GroupError::BadState { .. }), "{twice}");
    assert!(host
        .resolve_succeeded(&second.order_id, "auditor", "x", None)
        .is_err());
    assert_eq!(quota(host), 48_000, "never refunded twice");

    let ledger = assert_ledger_sums(host, "G001");
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
    assert_eq!(ledger[3].reference, second.order_id);
    assert_eq!(ledger[3].operator, "auditor");
    assert_eq!(host.ledger("G001", 2, 1).unwrap(), ledger[2..3].to_vec());
    assert_eq!(host.orders_in(OrderStatus::Refunded).unwrap().len(), 1);
    assert_eq!(
        host.orders_in(OrderStatus::Succeeded).unwrap(),
        vec![done.clone()]
    );
    assert!(host.orders_in(OrderStatus::Reserved).unwrap().is_empty());
    f.verify();
}

pub fn pending_orders_settle_and_the_auditor_resolves_failed_ones(make: &Make) {
    let f = seeded(make);
    let host = f.host();
    let order = host.reserve(&reserve(CARD, 0, 2_000, "p#1")).unwrap();
    let pending = host.mark_pending(&order.order_id, "group1", "").unwrap();
    assert_eq!(pending.status, OrderStatus::Pending);
    assert_eq!(pending.history[1].reason.as_deref(), Some("充值失败"));
    // Pending only from reserved; the card stays busy while pending.
    let again = host
        .mark_pending(&order.order_id, "group1", "x")
        .unwrap_err();
    assert!(
        again
            .to_string()
            .contains("当前状态为“结果待确认”，不能标记为结果待确认"),
        "{again}"
    );
    assert!(matches!(
        host.reserve(&reserve(CARD, 0, 1_000, "p#2")),
        Err(GroupError::CardBusy { .. })
    ));
    assert_eq!(
        host.orders_in(OrderStatus::Pending).unwrap(),
        vec![pending.clone()]
    );
    // A pending order settles (the card showed the load landed) …
    let settled = host.settle(&order.order_id, "group1", 0, 2_000).unwrap();
    assert_eq!(settled.status, OrderStatus::Succeeded);
    assert_eq!(
        settled
            .history
            .iter()
            .map(|h| h.to.as_str())
            .collect::<Vec<_>>(),
        ["reserved", "pending", "succeeded"]
    );
    // … or fails, and the auditor finds it landed after all.
    let second = host.reserve(&reserve(CARD, 2_000, 1_000, "p#3")).unwrap();
    host.mark_pending(&second.order_id, "group1", "读卡超时")
        .unwrap();
    let long_reason = "卡".repeat(FAILURE_CHARS_MAX + 10);
    let failed = host.fail(&second.order_id, "group1", &long_reason).unwrap();
    assert_eq!(
        failed.failure.as_ref().map(|f| f.chars().count()),
        Some(FAILURE_CHARS_MAX),
        "failure text bounded"
    );
    let err = host
        .resolve_succeeded(
            &second.order_id,
            "auditor",
            "卡片显示已到账",
            Some((2_000, 2_500)),
        )
        .unwrap_err();
    assert!(matches!(err, GroupError::BalanceMismatch { .. }), "{err}");
    assert!(
        host.resolve_succeeded(&second.order_id, "auditor", " ", None)
            .unwrap_err()
            .is_refusal(),
        "a reason is required"
    );
    let resolved = host
        .resolve_succeeded(
            &second.order_id,
            "auditor",
            "卡片显示已到账",
            Some((2_000, 3_000)),
        )
        .unwrap();
    assert_eq!(resolved.status, OrderStatus::Succeeded);
    assert_eq!(resolved.balance_after_fen, Some(3_000));
    assert_eq!(
        resolved.history.last().unwrap().reason.as_deref(),
        Some("卡片显示已到账")
    );
    assert!(host.refund(&second.order_id, "auditor", "x").is_err());
    // A failed order resolved without balances keeps none.
    let third = host.reserve(&reserve(CARD2, 0, 1_000, "p#4")).unwrap();
    host.fail(&third.order_id, "group1", "x").unwrap();
    let resolved = host
        .resolve_succeeded(&third.order_id, "auditor", "核实到账", None)
        .unwrap();
    assert_eq!(resolved.balance_after_fen, None);
    assert_eq!(quota(host), 46_000, "nothing came back");
    assert_ledger_sums(host, "G001");
    f.verify();
}

pub fn topups_grow_the_quota_only_once_approved(make: &Make) {
    let f = seeded(make);
    let host = f.host();
    let snapshot = f.snapshot();
    for (bad, words) in [
        (0, "转账金额不正确：转账金额必须大于0"),
        (-100, "必须大于0"),
        (1_050, "转账金额不能带小数点"),
        (TOPUP_FEN_MAX + 100, "单笔转账不能超过 1000000.00 元"),
    ] {
        let err = host.create_topup("G001", "group1", bad, "").unwrap_err();
        assert!(err.to_string().contains(words), "{bad}: {err}");
    }
    let err = host
        .create_topup("G001", "group1", 100, &"备".repeat(REMARK_CHARS_MAX + 1))
        .unwrap_err();
    assert!(matches!(err, GroupError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("备注"), "{err}");
    let err = host.create_topup("G404", "group1", 100, "").unwrap_err();
    assert_eq!(err.to_string(), "未找到集团 G404");
    assert_eq!(f.snapshot(), snapshot, "refusals change nothing");

    let topup = host
        .create_topup("G001", "group1", 100_000, " 六月额度 ")
        .unwrap();
    assert_eq!(topup.status, TopUpStatus::Pending);
    assert_eq!(topup.remark, "六月额度");
    // The demo seeding took GT20240601000001 and …02 on its own day.
    assert_eq!(topup.topup_id, "GT20240615000001");
    assert_eq!(host.topup(&topup.topup_id).unwrap().unwrap(), topup);
    let early = host
        .audit_topup(&topup.topup_id, "auditor", true, "ok")
        .unwrap_err();
    assert_eq!(
        early.to_string(),
        "额度充值订单 GT20240615000001 当前状态为“支付中”，不能审核",
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
    assert_eq!(unknown.bank_message.as_deref(), Some("超时"));
    // The same answer again changes nothing.
    let same = host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::NoAnswer {
                message: "仍超时".into(),
            },
        )
        .unwrap();
    assert_eq!(same, unknown);
    assert_eq!(
        host.topups_in(TopUpStatus::Unknown).unwrap(),
        vec![unknown.clone()]
    );
    let paid = host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: "SB1".into(),
            },
        )
        .unwrap();
    assert_eq!(paid.status, TopUpStatus::Paid);
    assert_eq!(paid.bank_serial.as_deref(), Some("SB1"));
    assert_eq!(paid.bank_message, None);
    assert_eq!(quota(host), 50_000, "paid is not approved");
    let approved = host
        .audit_topup(&topup.topup_id, "auditor", true, "到账")
        .unwrap();
    assert_eq!(approved.status, TopUpStatus::Approved);
    assert_eq!(approved.auditor.as_deref(), Some("auditor"));
    assert_eq!(
        approved
            .history
            .iter()
            .map(|h| h.to.as_str())
            .collect::<Vec<_>>(),
        ["pending", "unknown", "paid", "approved"]
    );
    assert_eq!(quota(host), 150_000);
    assert!(host
        .audit_topup(&topup.topup_id, "auditor", true, "again")
        .is_err());
    let late = host
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: "SB2".into(),
            },
        )
        .unwrap_err();
    assert_eq!(
        late.to_string(),
        "额度充值订单 GT20240615000001 当前状态为“审核通过”，不能更新银行结果"
    );
    assert_eq!(quota(host), 150_000, "approved once");
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
    let rejected = host.create_topup("G001", "group1", 700, "").unwrap();
    host.record_payment(
        &rejected.topup_id,
        &PaymentOutcome::Paid {
            bank_serial: "SB3".into(),
        },
    )
    .unwrap();
    let rejected = host
        .audit_topup(&rejected.topup_id, "auditor", false, "金额不符")
        .unwrap();
    assert_eq!(rejected.status, TopUpStatus::Rejected);
    assert_eq!(quota(host), 150_000, "a rejected transfer adds nothing");
    let ledger = assert_ledger_sums(host, "G001");
    assert_eq!(ledger.len(), 2);
    assert_eq!(
        (
            ledger[1].kind,
            ledger[1].amount_fen,
            ledger[1].reference.as_str()
        ),
        (LedgerKind::TopUp, 100_000, "GT20240615000001")
    );
    // A quota past the limit is refused at approval.
    let mut big = Vec::new();
    let mut total = quota(host);
    while total <= QUOTA_FEN_MAX {
        let t = host
            .create_topup("G001", "group1", TOPUP_FEN_MAX, "")
            .unwrap();
        host.record_payment(
            &t.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: format!("B{}", t.topup_id),
            },
        )
        .unwrap();
        total += TOPUP_FEN_MAX;
        big.push(t.topup_id);
    }
    let (last, rest) = big.split_last().unwrap();
    for id in rest {
        host.audit_topup(id, "auditor", true, "ok").unwrap();
    }
    let over = host.audit_topup(last, "auditor", true, "ok").unwrap_err();
    assert!(matches!(over, GroupError::QuotaOverflow), "{over}");
    assert_eq!(host.topup(last).unwrap().unwrap().status, TopUpStatus::Paid);
    assert_ledger_sums(host, "G001");
    let mut topups = host.topups("G001", &the_year()).unwrap();
    assert_eq!(
        topups.len(),
        3 + big.len() + 1,
        "the demo transfer included"
    );
    assert_eq!(topups.pop().unwrap().topup_id, "GT20240601000001");
    f.verify();
}

pub fn queries_honour_their_period_newest_first(make: &Make) {
    let f = seeded(make);
    let (host, clock) = (f.host(), f.clock());
    let first = host.reserve(&reserve(CARD, 0, 1_000, "a#1")).unwrap();
    host.fail(&first.order_id, "group1", "x").unwrap();
    clock.set(datetime!(2024-06-20 23:59:59 +8));
    let second = host.reserve(&reserve(CARD2, 0, 2_000, "b#1")).unwrap();
    clock.set(datetime!(2024-06-21 00:00:00 +8));
    let third = host.reserve(&reserve(CARD, 0, 3_000, "c#1")).unwrap();
    assert_eq!(third.order_id, "GO20240621000001", "ids are per China day");
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
    assert!(ids(Period::new(date!(2024 - 06 - 22), date!(2024 - 06 - 30)).unwrap()).is_empty());
    let preset = Period::preset(Preset::Last7Days, datetime!(2024-06-21 12:00 +8));
    assert_eq!(
        ids(preset),
        [
            third.order_id.clone(),
            second.order_id,
            first.order_id.clone()
        ]
    );
    assert!(
        host.orders("G002", &preset).unwrap().is_empty(),
        "another group's orders are its own"
    );
    // Two orders in one second: the later id first.
    let fourth = host
        .reserve(&reserve("61010000000000000003", 0, 1_000, "d#1"))
        .unwrap();
    assert_eq!(
        ids(Period::new(date!(2024 - 06 - 21), date!(2024 - 06 - 21)).unwrap()),
        [fourth.order_id, third.order_id]
    );
    assert_eq!(
        host.orders_in(OrderStatus::Failed)
            .unwrap()
            .into_iter()
            .map(|o| o.order_id)
            .collect::<Vec<_>>(),
        [first.order_id]
    );
    // Top-ups likewise.
    let t1 = host.create_topup("G001", "group1", 100, "").unwrap();
    clock.advance(time::Duration::days(1));
    let t2 = host.create_topup("G001", "group1", 200, "").unwrap();
    let topups = host
        .topups(
            "G001",
            &Period::new(date!(2024 - 06 - 21), date!(2024 - 06 - 22)).unwrap(),
        )
        .unwrap();
    assert_eq!(topups, [t2.clone(), t1.clone()]);
    assert_eq!(host.topups_in(TopUpStatus::Pending).unwrap(), [t1, t2]);
    assert!(host.topups("G002", &the_year()).unwrap().len() == 1);
}

pub fn batches_hand_each_item_to_one_order(make: &Make) {
    let f = seeded(make);
    let host = f.host();
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
    let snapshot = f.snapshot();
    assert!(host
        .create_batch("G001", "group1", &[])
        .unwrap_err()
        .to_string()
        .contains(&format!("一个批次应有 1 到 {BATCH_ITEMS_MAX} 张卡")));
    let bad = [BatchItemInput {
        card_number: CARD.into(),
        amount_fen: 1_500,
    }];
    assert_eq!(
        host.create_batch("G001", "group1", &bad)
            .unwrap_err()
            .to_string(),
        "批量充值：第 1 张卡：充值金额必须是10元的整数倍，15.00 元不是"
    );
    let twice = [items[0].clone(), items[0].clone()];
    assert_eq!(
        host.create_batch("G001", "group1", &twice)
            .unwrap_err()
            .to_string(),
        format!("批量充值：第 2 张卡 {CARD} 重复")
    );
    assert!(matches!(
        host.create_batch("G404", "group1", &items),
        Err(GroupError::GroupNotFound(_))
    ));
    assert_eq!(f.snapshot(), snapshot, "refusals change nothing");
    let batch = host.create_batch("G001", "group1", &items).unwrap();
    assert_eq!(batch.batch_id, "GB20240615000001");
    assert_eq!(host.batch(&batch.batch_id).unwrap().unwrap(), batch);
    let mut req = reserve(CARD, 0, 1_000, "batch#1");
    req.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 0,
    });
    let order = host.reserve(&req).unwrap();
    assert_eq!(order.batch, req.batch);
    let stored = host.batch(&batch.batch_id).unwrap().unwrap();
    assert_eq!(
        stored.items[0].order_id.as_deref(),
        Some(order.order_id.as_str())
    );
    assert_eq!(stored.items[1].order_id, None);
    host.fail(&order.order_id, "group1", "x").unwrap();
    req.txn_id = "batch#2".into();
    assert_eq!(
        host.reserve(&req).unwrap_err().to_string(),
        format!("批量充值：第 1 张卡已有订单 {}", order.order_id),
        "an item is done once"
    );
    let mut wrong = reserve(CARD2, 0, 1_000, "batch#3");
    wrong.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 1,
    });
    assert_eq!(
        host.reserve(&wrong).unwrap_err().to_string(),
        "批量充值：第 2 张卡与批次不符"
    );
    wrong.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 2,
    });
    assert_eq!(
        host.reserve(&wrong).unwrap_err().to_string(),
        "批量充值：没有第 3 张卡"
    );
    wrong.batch = Some(BatchRef {
        batch_id: "GB20240615000009".into(),
        index: 0,
    });
    assert_eq!(
        host.reserve(&wrong).unwrap_err().to_string(),
        "未找到批量充值 GB20240615000009"
    );
    let mut other_group = reserve(CARD2, 0, 2_000, "batch#4");
    other_group.group_id = "G002".into();
    other_group.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 1,
    });
    assert!(host
        .reserve(&other_group)
        .unwrap_err()
        .to_string()
        .contains("不符"));
    let mut right = reserve(CARD2, 0, 2_000, "batch#5");
    right.batch = Some(BatchRef {
        batch_id: batch.batch_id.clone(),
        index: 1,
    });
    let second = host.reserve(&right).unwrap();
    assert_eq!(
        host.batch(&batch.batch_id).unwrap().unwrap().items[1]
            .order_id
            .as_deref(),
        Some(second.order_id.as_str())
    );
    assert_eq!(host.batch("GB20240615000009").unwrap(), None);
    f.verify();
}

pub fn groups_are_created_without_quota_and_renamed_keeping_it(make: &Make) {
    let f = seeded(make);
    let (host, clock) = (f.host(), f.clock());
    let input = |id: &str, name: &str| GroupInput {
        group_id: id.into(),
        name: name.into(),
        terminal_no: "ZZ0009".into(),
    };
    let new = host.upsert_group(&input("G009", "新集团")).unwrap();
    assert_eq!(
        (new.available_fen, new.ledger_seq, new.created_at),
        (0, 0, START)
    );
    assert_eq!(host.group("G009").unwrap().unwrap(), new);
    clock.advance(time::Duration::hours(1));
    let renamed = host
        .upsert_group(&GroupInput {
            group_id: "G001".into(),
            name: "改名集团".into(),
            terminal_no: "ZZ0100".into(),
        })
        .unwrap();
    assert_eq!(renamed.name, "改名集团");
    assert_eq!(renamed.terminal_no, "ZZ0100");
    assert_eq!(renamed.available_fen, 50_000, "the quota stays");
    assert_eq!(renamed.ledger_seq, 1);
    assert_eq!(renamed.created_at, DEMO_GROUPS_AT);
    assert_eq!(renamed.updated_at, START + time::Duration::hours(1));
    let ids: Vec<String> = host
        .groups()
        .unwrap()
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(ids, ["G001", "G002", "G009"]);
    let snapshot = f.snapshot();
    for (bad, words) in [
        (input("G/1", "x"), "不能含有“/”"),
        (input("", "x"), "集团编号"),
        (input("G010", ""), "集团名称"),
        (input(&"G".repeat(GROUP_ID_CHARS_MAX + 1), "x"), "集团编号"),
    ] {
        let err = host.upsert_group(&bad).unwrap_err();
        assert!(matches!(err, GroupError::Invalid(_)), "{err}");
        assert!(err.to_string().contains(words), "{err}");
    }
    assert_eq!(f.snapshot(), snapshot, "refusals change nothing");
    // A new group takes recharges once a top-up is approved.
    assert!(matches!(
        host.reserve(&ReserveRequest {
            group_id: "G009".into(),
            ..reserve(CARD, 0, 1_000, "n#1")
        }),
        Err(GroupError::QuotaInsufficient {
            available_fen: 0,
            ..
        })
    ));
    let t = host.create_topup("G009", "op", 10_000, "").unwrap();
    host.record_payment(
        &t.topup_id,
        &PaymentOutcome::Paid {
            bank_serial: "S".into(),
        },
    )
    .unwrap();
    host.audit_topup(&t.topup_id, "auditor", true, "ok")
        .unwrap();
    assert_eq!(quota_of(host, "G009"), 10_000);
    assert_ledger_sums(host, "G009");
    f.verify();
}

pub fn unknown_records_and_bad_input_are_refused_with_nothing_changed(make: &Make) {
    let f = seeded(make);
    let host = f.host();
    let order = host.reserve(&reserve(CARD, 0, 1_000, "u#1")).unwrap();
    let snapshot = f.snapshot();
    assert_eq!(host.group("G404").unwrap(), None);
    assert_eq!(host.order("GO20240615000404").unwrap(), None);
    assert_eq!(host.topup("GT20240615000404").unwrap(), None);
    assert!(host.ledger("G404", 0, 10).unwrap().is_empty());
    let mut unknown_group = reserve(CARD2, 0, 1_000, "u#2");
    unknown_group.group_id = "G404".into();
    assert_eq!(
        host.reserve(&unknown_group).unwrap_err().to_string(),
        "未找到集团 G404"
    );
    for err in [
        host.settle("GO20240615000404", "group1", 0, 1_000)
            .unwrap_err(),
        host.fail("GO20240615000404", "group1", "x").unwrap_err(),
        host.mark_pending("GO20240615000404", "group1", "x")
            .unwrap_err(),
        host.refund("GO20240615000404", "auditor", "x").unwrap_err(),
        host.resolve_succeeded("GO20240615000404", "auditor", "x", None)
            .unwrap_err(),
    ] {
        assert_eq!(err.to_string(), "未找到充值订单 GO20240615000404");
        assert!(matches!(err, GroupError::NotFound { .. }));
    }
    for err in [
        host.record_payment(
            "GT20240615000404",
            &PaymentOutcome::Paid {
                bank_serial: "x".into(),
            },
        )
        .unwrap_err(),
        host.audit_topup("GT20240615000404", "auditor", true, "x")
            .unwrap_err(),
    ] {
        assert_eq!(err.to_string(), "未找到额度充值订单 GT20240615000404");
    }
    // Bad ids, operators, cards and transaction ids are refused as invalid input.
    let long_id = "G".repeat(33);
    for err in [
        host.order("").unwrap_err(),
        host.order(&long_id).unwrap_err(),
        host.order("GO/1").unwrap_err(),
        host.topup("").unwrap_err(),
        host.batch(&long_id).unwrap_err(),
        host.settle(&order.order_id, "", 0, 1_000).unwrap_err(),
        host.refund(&order.order_id, "auditor", "").unwrap_err(),
        host.reserve(&reserve("123", 0, 1_000, "u#3")).unwrap_err(),
        host.reserve(&reserve(CARD2, 0, 1_000, "")).unwrap_err(),
        host.reserve(&ReserveRequest {
            operator: String::new(),
            ..reserve(CARD2, 0, 1_000, "u#4")
        })
        .unwrap_err(),
    ] {
        assert!(matches!(err, GroupError::Invalid(_)), "{err}");
        assert!(err.is_refusal());
    }
    assert!(host
        .order("")
        .unwrap_err()
        .to_string()
        .contains("应为 1 到 32 个字符"));
    assert_eq!(f.snapshot(), snapshot, "refusals change nothing");
    f.verify();
}

pub fn everything_survives_reopening_and_ids_continue(make: &Make) {
    let mut f = seeded(make);
    let order = f.host().reserve(&reserve(CARD, 0, 2_000, "r#1")).unwrap();
    let failed = f.host().reserve(&reserve(CARD2, 0, 3_000, "r#2")).unwrap();
    f.host().fail(&failed.order_id, "group1", "x").unwrap();
    let topup = f.host().create_topup("G002", "group1", 1_000, "r").unwrap();
    let batch = f
        .host()
        .create_batch(
            "G001",
            "group1",
            &[BatchItemInput {
                card_number: CARD.into(),
                amount_fen: 1_000,
            }],
        )
        .unwrap();
    let groups = f.host().groups().unwrap();
    let ledger = f.host().ledger("G001", 0, 100).unwrap();
    let snapshot = f.snapshot();
    f.reopen();
    f.verify();
    assert_eq!(f.snapshot(), snapshot, "opening changes nothing");
    let host = f.host();
    assert_eq!(host.groups().unwrap(), groups);
    assert_eq!(host.ledger("G001", 0, 100).unwrap(), ledger);
    assert_eq!(host.order(&order.order_id).unwrap().unwrap(), order);
    assert_eq!(
        host.order(&failed.order_id).unwrap().unwrap().status,
        OrderStatus::Failed
    );
    assert_eq!(host.topup(&topup.topup_id).unwrap().unwrap(), topup);
    assert_eq!(host.batch(&batch.batch_id).unwrap().unwrap(), batch);
    assert_eq!(f.seed_demo(), 0, "the demo groups exist");
    // The day's sequences continue; the card is still busy.
    let next = host
        .reserve(&reserve("61010000000000000003", 0, 1_000, "r#3"))
        .unwrap();
    assert_eq!(next.order_id, "GO20240615000003");
    assert!(matches!(
        host.reserve(&reserve(CARD, 0, 1_000, "r#4")),
        Err(GroupError::CardBusy { .. })
    ));
    assert_ledger_sums(host, "G001");
    f.verify();
}

/// Four sites (four hosts on one storage) recharge cards from one group's quota at once,
/// reserving and settling until the quota runs out.
pub fn one_group_s_quota_recharged_from_four_sites_is_never_overdrawn(make: &Make) {
    const SITES: usize = 4;
    const QUOTA_FEN: i64 = 100_000;
    let f = make();
    let host = f.host();
    host.upsert_group(&GroupInput {
        group_id: "G100".into(),
        name: "并发集团".into(),
        terminal_no: "ZZ0100".into(),
    })
    .unwrap();
    let t = host.create_topup("G100", "group1", QUOTA_FEN, "").unwrap();
    host.record_payment(
        &t.topup_id,
        &PaymentOutcome::Paid {
            bank_serial: "S".into(),
        },
    )
    .unwrap();
    host.audit_topup(&t.topup_id, "auditor", true, "ok")
        .unwrap();
    let sites: Vec<Box<dyn GroupHost>> = (0..SITES).map(|_| f.another_site()).collect();
    let start = Barrier::new(SITES);
    let results: Vec<(i64, usize, GroupError)> = std::thread::scope(|s| {
        let handles: Vec<_> = sites
            .iter()
            .enumerate()
            .map(|(site, h)| {
                let start = &start;
                s.spawn(move || {
                    // Each site its own amount: 10, 20, 30, 40 yuan.
                    let amount = 1_000 * (site as i64 + 1);
                    let (mut settled, mut orders) = (0i64, 0usize);
                    start.wait();
                    for n in 0.. {
                        let card = format!("6101{site:04}{n:012}");
                        let req = ReserveRequest {
                            group_id: "G100".into(),
                            operator: format!("site{site}"),
                            card_number: card,
                            card_balance_fen: 0,
                            amount_fen: amount,
                            txn_id: format!("s{site}#{n}"),
                            batch: None,
                        };
                        match h.reserve(&req) {
                            Ok(order) => {
                                assert_eq!(order.quota_before_fen - order.quota_after_fen, amount);
                                assert!(order.quota_after_fen >= 0);
                                h.settle(&order.order_id, "site", 0, amount).unwrap();
                                settled += amount;
                                orders += 1;
                            }
                            Err(e) => return (settled, orders, e),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut settled_total = 0;
    let mut order_count = 0;
    for (settled, orders, err) in &results {
        assert!(
            matches!(err, GroupError::QuotaInsufficient { .. }),
            "every refusal is the quota running out: {err}"
        );
        settled_total += settled;
        order_count += orders;
    }
    let available = quota_of(host, "G100");
    assert!(available >= 0);
    assert!(
        available < 1_000,
        "the smallest amount no longer fits: {available}"
    );
    assert_eq!(
        available,
        QUOTA_FEN - settled_total,
        "nothing lost or doubled"
    );
    let ledger = assert_ledger_sums(host, "G100");
    assert_eq!(ledger.len(), 1 + order_count, "one entry per order");
    let succeeded = host.orders_in(OrderStatus::Succeeded).unwrap();
    assert_eq!(succeeded.len(), order_count);
    assert_eq!(
        succeeded.iter().map(|o| o.amount_fen).sum::<i64>(),
        settled_total
    );
    let mut ids: Vec<&str> = succeeded.iter().map(|o| o.order_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), order_count, "distinct order ids");
    f.verify();
}

/// Two sites reserve for one card at the same moment, round after round: exactly one wins,
/// the other is told the card is busy.
pub fn two_sites_reserving_for_one_card_let_exactly_one_win(make: &Make) {
    const ROUNDS: usize = 8;
    let f = seeded(make);
    let sites = [f.another_site(), f.another_site()];
    for round in 0..ROUNDS {
        let start = Barrier::new(2);
        let results: Vec<Result<RechargeOrder, GroupError>> = std::thread::scope(|s| {
            let handles: Vec<_> = sites
                .iter()
                .enumerate()
                .map(|(site, h)| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        h.reserve(&reserve(CARD, 0, 1_000, &format!("r{round}s{site}")))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&RechargeOrder> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0].clone();
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, GroupError::CardBusy { order_id, .. } if *order_id == winner.order_id),
                    "round {round}: {e}"
                );
            }
        }
        f.host()
            .settle(&winner.order_id, "group1", 0, 1_000)
            .unwrap();
    }
    assert_eq!(quota(f.host()), 50_000 - 1_000 * ROUNDS as i64);
    assert_eq!(f.host().orders("G001", &the_year()).unwrap().len(), ROUNDS);
    assert_ledger_sums(f.host(), "G001");
    f.verify();
}

/// A settlement repeated with the same balances (the answer to the first was lost, or the issuer
/// host booked the order from the card's TAC before the site settled it) is answered with the
/// order as it is, changing nothing; other balances, or a settlement of an order that failed,
/// are still refused.
pub fn settling_again_with_the_same_balances_is_answered_not_refused(make: &Make) {
    let f = seeded(make);
    let (host, clock) = (f.host(), f.clock());
    let order = host
        .reserve(&reserve(CARD, 5_000, 2_000, "run1#1"))
        .unwrap();
    let done = host
        .settle(&order.order_id, "group1", 5_000, 7_000)
        .unwrap();
    let before = f.snapshot();
    clock.advance(time::Duration::seconds(5));
    let again = host
        .settle(&order.order_id, "group1", 5_000, 7_000)
        .unwrap();
    assert_eq!(again, done, "answered with the order as it is");
    assert_eq!(f.snapshot(), before, "nothing changed");
    let other = host
        .settle(&order.order_id, "group1", 6_000, 8_000)
        .unwrap_err();
    assert_eq!(
        other.to_string(),
        "充值订单 GO20240615000001 当前状态为“充值成功”，不能确认充值成功"
    );
    // A failed order is not settled by a retry: only the auditor's 改为充值成功 does that.
    let second = host.reserve(&reserve(CARD2, 0, 1_000, "run2#1")).unwrap();
    host.fail(&second.order_id, "group1", "x").unwrap();
    let refused = host
        .settle(&second.order_id, "group1", 0, 1_000)
        .unwrap_err();
    assert!(matches!(refused, GroupError::BadState { .. }), "{refused}");
    assert_eq!(quota(host), 47_000);
    f.verify();
}
