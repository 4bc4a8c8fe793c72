//! The issuer host's trait-level tests, one suite for every implementation of
//! [`IssuerHost`]: the embedded one on sled (`tests/host.rs` here) and the PostgreSQL one
//! (`daemon/store-pg/tests/host.rs`, which includes this file). Each implementation provides a
//! [`Fixture`] (a fresh, empty host on its own storage with a manual clock) and expands
//! [`host_suite!`] once; every test below then runs against it.
//!
//! Every 圈存 state change allowed and refused, queries and paging, refusals that change
//! nothing, durability across reopening, history and transaction links, and concurrency.

use std::sync::Arc;

use cardd_etc::{
    HostError, IssuerHost, RecordAction, RecordQuery, RecordStatus, VehicleInput, PAGE_SIZE_MAX,
    RECHARGE_FEN_MAX,
};
use cardd_journal::clock::ManualClock;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A fresh, empty issuer host on its own storage.
pub trait Fixture {
    /// The host.
    fn host(&self) -> &dyn IssuerHost;
    /// Its clock, starting at [`START`].
    fn clock(&self) -> &Arc<ManualClock>;
    /// Everything stored, to prove that a refusal changed nothing.
    fn snapshot(&self) -> Vec<String>;
    /// Panics unless the storage is consistent (indexes agree with the records).
    fn verify(&self);
    /// Closes the host and opens it again on the same storage, with the same clock.
    fn reopen(&mut self);
}

/// Makes a fresh fixture.
pub type Make = dyn Fn() -> Box<dyn Fixture>;

/// Expands to one `#[test]` per suite test, each calling it with `$make`.
macro_rules! host_suite {
    ($make:path) => {
        host_suite!(@tests $make;
            every_transition_is_allowed_or_refused_as_the_table_says,
            a_load_runs_from_payment_to_card_and_again_after_a_failed_write,
            aborts_reconciliation_and_their_history,
            one_load_in_flight_per_card,
            finish_load_checks_the_balances,
            the_same_begin_or_finish_again_is_answered_and_changes_nothing,
            a_settlement_for_another_load_is_refused_and_changes_nothing,
            bad_plates_colours_and_amounts_change_nothing,
            vehicles_by_plate_and_card_with_normalised_plates,
            queries_are_newest_first_with_time_ranges_and_pages,
            query_bounds_are_refused_clearly,
            a_card_s_records_by_status,
            records_survive_reopening,
            record_ids_are_per_china_day,
            concurrent_loads_of_one_card_let_exactly_one_start,
            one_record_begun_from_eight_threads_starts_once,
            concurrent_recharges_get_distinct_record_ids,
            every_load_attempt_stays_linked_past_the_history_cap_and_the_limit_refuses,
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

pub const PLATE: &str = "陕A12345";
pub const CARD: &str = "61011801000000000001";
/// Every fixture's clock starts here.
pub const START: OffsetDateTime = datetime!(2025-03-01 10:00:00 +8);

pub fn vehicle_input(plate: &str, colour: u16, cards: &[&str]) -> VehicleInput {
    VehicleInput {
        plate: plate.into(),
        plate_colour: colour,
        card_numbers: cards.iter().map(|c| (*c).to_owned()).collect(),
        owner_name: "张三".into(),
        vehicle_class: 1,
        obu_contract_serial: None,
        details: None,
    }
}

/// A host with one vehicle (陕A12345 blue, card …0001).
fn with_vehicle(make: &Make) -> Box<dyn Fixture> {
    let f = make();
    f.host()
        .upsert_vehicle(&vehicle_input(PLATE, 0, &[CARD]), "admin")
        .expect("vehicle");
    f
}

/// A new record of 陕A12345 brought into `status`.
fn record_in(host: &dyn IssuerHost, status: RecordStatus) -> String {
    let id = host
        .recharge(PLATE, 0, 20_000, "teller", "银行柜台")
        .expect("recharge")
        .record_id;
    match status {
        RecordStatus::NotLoaded => {}
        RecordStatus::Loading => {
            host.begin_load(&id, "teller", &format!("T-{id}"))
                .expect("begin");
        }
        RecordStatus::Loaded => {
            host.begin_load(&id, "teller", &format!("T-{id}"))
                .expect("begin");
            host.finish_load(&id, "teller", 10_000, 30_000)
                .expect("finish");
        }
        RecordStatus::NeedsReconciliation => {
            host.flag_reconciliation(&id, "teller", "卡片读不到")
                .expect("flag");
        }
    }
    assert_eq!(
        host.record(&id).expect("read").expect("exists").status,
        status
    );
    id
}

/// Runs `action` on record `id` with valid arguments.
fn act(
    host: &dyn IssuerHost,
    id: &str,
    action: RecordAction,
) -> Result<cardd_etc::RechargeRecord, HostError> {
    match action {
        RecordAction::Recharge => unreachable!("not a state change"),
        RecordAction::BeginLoad => host.begin_load(id, "teller", "T-NEW"),
        // Other balances than `record_in`'s, so that a 已圈存 record is not this load again.
        RecordAction::FinishLoad => host.finish_load(id, "teller", 5_000, 25_000),
        RecordAction::AbortLoad => host.abort_load(id, "teller", "卡片余额未变"),
        RecordAction::FlagReconciliation => host.flag_reconciliation(id, "teller", "写卡无应答"),
        RecordAction::MarkNotLoaded => host.mark_not_loaded(id, "supervisor", "写卡失败"),
        RecordAction::ResolveReconciliation => {
            host.resolve_reconciliation(id, "supervisor", true, "卡内余额已增加")
        }
    }
}

const ACTIONS: [RecordAction; 6] = [
    RecordAction::BeginLoad,
    RecordAction::FinishLoad,
    RecordAction::AbortLoad,
    RecordAction::FlagReconciliation,
    RecordAction::MarkNotLoaded,
    RecordAction::ResolveReconciliation,
];

pub fn every_transition_is_allowed_or_refused_as_the_table_says(make: &Make) {
    let expected = |action, from| -> Option<RecordStatus> {
        use RecordStatus as S;
        match (action, from) {
            (RecordAction::BeginLoad, S::NotLoaded) => Some(S::Loading),
            (RecordAction::FinishLoad, S::Loading) => Some(S::Loaded),
            (RecordAction::AbortLoad, S::Loading) => Some(S::NotLoaded),
            (RecordAction::FlagReconciliation, S::NotLoaded | S::Loading | S::Loaded) => {
                Some(S::NeedsReconciliation)
            }
            (RecordAction::MarkNotLoaded, S::Loaded) => Some(S::NotLoaded),
            (RecordAction::ResolveReconciliation, S::NeedsReconciliation) => Some(S::Loaded),
            _ => None,
        }
    };
    let mut allowed = 0;
    for action in ACTIONS {
        for from in RecordStatus::ALL {
            let f = with_vehicle(make);
            let host = f.host();
            let id = record_in(host, from);
            f.clock().advance(Duration::minutes(1));
            let before = f.snapshot();
            let history_len = host
                .record(&id)
                .expect("read")
                .expect("exists")
                .history
                .len();
            match (expected(action, from), act(host, &id, action)) {
                (Some(to), Ok(record)) => {
                    allowed += 1;
                    assert_eq!(record.status, to, "{action:?} from {from:?}");
                    assert_eq!(record.history.len(), history_len + 1);
                    let last = record.history.last().expect("history");
                    assert_eq!(last.action, action);
                    assert_eq!(last.from, Some(from));
                    assert_eq!(last.to, to);
                    assert_eq!(last.at, START + Duration::minutes(1));
                    assert_eq!(host.record(&id).expect("read"), Some(record));
                    f.verify();
                }
                (
                    None,
                    Err(HostError::BadTransition {
                        current,
                        action: a,
                        record_id,
                    }),
                ) => {
                    assert_eq!(
                        (current, a, record_id.as_str()),
                        (from, action, id.as_str())
                    );
                    let message = act(host, &id, action).unwrap_err().to_string();
                    assert!(
                        message.starts_with(&format!("该充值记录状态为{}，不能", from.label())),
                        "{message}"
                    );
                    assert_eq!(
                        f.snapshot(),
                        before,
                        "{action:?} from {from:?} changed data"
                    );
                }
                (want, got) => panic!("{action:?} from {from:?}: want {want:?}, got {got:?}"),
            }
        }
    }
    assert_eq!(allowed, 8);
}

/// A retry of a load's step (an answer lost on the way, or the host and a site both booking one
/// load) is answered with the record as it is; another load's step is still refused.
pub fn the_same_begin_or_finish_again_is_answered_and_changes_nothing(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let id = record_in(host, RecordStatus::Loading);
    let begun = host.record(&id).expect("read").expect("exists");
    let before = f.snapshot();
    let again = host
        .begin_load(&id, "other", &format!("T-{id}"))
        .expect("the same load begun again");
    assert_eq!(again, begun);
    assert_eq!(f.snapshot(), before, "nothing changed");
    assert!(matches!(
        host.begin_load(&id, "teller", "T-OTHER"),
        Err(HostError::BadTransition { .. })
    ));
    let loaded = host
        .finish_load(&id, "teller", 10_000, 30_000)
        .expect("finish");
    let before = f.snapshot();
    let again = host
        .finish_load(&id, "cardd-host", 10_000, 30_000)
        .expect("the same load finished again");
    assert_eq!(again, loaded);
    assert_eq!(f.snapshot(), before, "nothing changed");
    assert!(matches!(
        host.finish_load(&id, "teller", 5_000, 25_000),
        Err(HostError::BadTransition { .. })
    ));
    f.verify();
}

/// A settlement meant for one load of a record (a failed load taking its record back) changes
/// nothing when the record is with another load or none: another site's load is never undone.
pub fn a_settlement_for_another_load_is_refused_and_changes_nothing(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let id = record_in(host, RecordStatus::Loading);
    let before = f.snapshot();
    for result in [
        host.abort_load_of(&id, "teller", "卡片余额未变", "T-OTHER"),
        host.flag_reconciliation_of(&id, "teller", "写卡无应答", "T-OTHER"),
    ] {
        assert!(
            matches!(result, Err(HostError::NotThisLoad { .. })),
            "{result:?}"
        );
    }
    assert_eq!(f.snapshot(), before, "nothing changed");
    let aborted = host
        .abort_load_of(&id, "teller", "卡片余额未变", &format!("T-{id}"))
        .expect("its own load");
    assert_eq!(aborted.status, RecordStatus::NotLoaded);
    let before = f.snapshot();
    assert!(matches!(
        host.abort_load_of(&id, "teller", "卡片余额未变", &format!("T-{id}")),
        Err(HostError::BadTransition { .. } | HostError::NotThisLoad { .. })
    ));
    assert_eq!(f.snapshot(), before, "taken back once");
    f.verify();
}

pub fn a_load_runs_from_payment_to_card_and_again_after_a_failed_write(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let record = host
        .recharge(PLATE, 0, 20_000, "teller", "银行柜台")
        .expect("recharge");
    assert_eq!(record.record_id, "R20250301000001");
    assert_eq!(record.card_number, CARD);
    assert_eq!(record.plate_colour.label, "蓝色");
    assert_eq!(record.status_label(), "未圈存");
    assert_eq!(record.amount_yuan(), "200.00");
    assert_eq!(
        (record.balance_before_fen, record.balance_after_fen),
        (None, None)
    );
    let json = serde_json::to_value(&record).expect("json");
    assert_eq!(json["recharged_at"], "2025-03-01T10:00:00+08:00");
    assert_eq!(json["status"], "not_loaded");

    f.clock().advance(Duration::minutes(5));
    let id = record.record_id;
    let loading = host.begin_load(&id, "teller", "T1").expect("begin");
    assert_eq!(loading.status_label(), "圈存中");
    assert_eq!(loading.load_txn_id.as_deref(), Some("T1"));
    let loaded = host
        .finish_load(&id, "teller", 10_000, 30_000)
        .expect("finish");
    assert_eq!(loaded.status_label(), "已圈存");
    assert_eq!(loaded.balance_before_yuan().as_deref(), Some("100.00"));
    assert_eq!(loaded.balance_after_yuan().as_deref(), Some("300.00"));
    assert_eq!(loaded.loaded_at, Some(START + Duration::minutes(5)));

    let err = host.begin_load(&id, "teller", "T2").unwrap_err();
    assert_eq!(err.to_string(), "该充值记录状态为已圈存，不能再次圈存");

    // 二次圈存: the write failed after all; a supervisor sets the record back to 未圈存.
    let again = host
        .mark_not_loaded(&id, "supervisor", "写卡失败，卡内余额未增加")
        .expect("mark");
    assert_eq!(again.status_label(), "未圈存");
    assert_eq!(again.balance_before_fen, None);
    assert_eq!(again.load_txn_id, None);
    let change = again.history.last().expect("history");
    assert_eq!(change.operator, "supervisor");
    assert_eq!(change.action.label(), "修改圈存状态");
    assert_eq!(change.reason.as_deref(), Some("写卡失败，卡内余额未增加"));
    assert_eq!(change.txn_id.as_deref(), Some("T1"));
    assert_eq!(change.balance_after_fen, Some(30_000), "evidence kept");

    host.begin_load(&id, "teller", "T2").expect("second load");
    let done = host
        .finish_load(&id, "teller", 10_000, 30_000)
        .expect("finish");
    let actions: Vec<_> = done.history.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        [
            RecordAction::Recharge,
            RecordAction::BeginLoad,
            RecordAction::FinishLoad,
            RecordAction::MarkNotLoaded,
            RecordAction::BeginLoad,
            RecordAction::FinishLoad,
        ]
    );
    assert!(done.history.iter().all(|c| !c.operator.is_empty()));
    assert_eq!(done.txn_ids, ["T1", "T2"]);
    assert_eq!(
        host.record_for_txn("T1")
            .expect("by txn")
            .map(|r| r.record_id),
        Some(id.clone())
    );
    assert!(host.record_for_txn("T9").expect("by txn").is_none());
}

pub fn aborts_reconciliation_and_their_history(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let id = record_in(host, RecordStatus::Loading);
    assert_eq!(
        host.open_records()
            .expect("open")
            .iter()
            .map(|r| r.record_id.as_str())
            .collect::<Vec<_>>(),
        [id.as_str()]
    );
    let back = host
        .abort_load(&id, "teller", "卡片证明未圈存")
        .expect("abort");
    assert_eq!(back.status, RecordStatus::NotLoaded);
    assert_eq!(back.load_txn_id, None);
    assert!(host.open_records().expect("open").is_empty());
    let last = back.history.last().expect("history");
    assert_eq!(
        (last.operator.as_str(), last.reason.as_deref()),
        ("teller", Some("卡片证明未圈存"))
    );

    // The same transaction id may be retried on the same record after a proven abort ...
    host.begin_load(&id, "teller", &format!("T-{id}"))
        .expect("retry");
    let flagged = host
        .flag_reconciliation(&id, "teller", "写卡时卡片被拔出")
        .expect("flag");
    assert_eq!(flagged.status_label(), "待核对");
    assert_eq!(flagged.load_txn_id, Some(format!("T-{id}")));
    assert_eq!(flagged.txn_ids, [format!("T-{id}")], "one link per id");
    let resolved = host
        .resolve_reconciliation(&id, "supervisor", false, "卡内余额未增加")
        .expect("resolve");
    assert_eq!(resolved.status, RecordStatus::NotLoaded);
    assert_eq!(resolved.load_txn_id, None);
    let last = resolved.history.last().expect("history");
    assert_eq!(last.operator, "supervisor");
    assert_eq!(last.reason.as_deref(), Some("卡内余额未增加"));

    // ... but never on another record.
    let other = record_in(host, RecordStatus::NotLoaded);
    let err = host
        .begin_load(&other, "teller", &format!("T-{id}"))
        .unwrap_err();
    assert!(matches!(err, HostError::TxnIdInUse { .. }), "{err}");

    // Manual changes need a reason and an operator.
    for (operator, reason) in [("teller", ""), ("teller", "  "), ("", "原因")] {
        let err = host.flag_reconciliation(&id, operator, reason).unwrap_err();
        assert!(matches!(err, HostError::InvalidField { .. }), "{err}");
    }
    f.verify();
}

pub fn one_load_in_flight_per_card(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let first = record_in(host, RecordStatus::Loading);
    let second = record_in(host, RecordStatus::NotLoaded);
    let before = f.snapshot();
    let err = host.begin_load(&second, "teller", "T-2").unwrap_err();
    assert!(
        matches!(&err, HostError::CardBusy { other_record_id, .. } if *other_record_id == first),
        "{err}"
    );
    assert!(err.to_string().contains("圈存中"), "{err}");
    assert_eq!(f.snapshot(), before);
    host.flag_reconciliation(&first, "teller", "无应答")
        .expect("flag");
    let err = host.begin_load(&second, "teller", "T-2").unwrap_err();
    assert!(err.to_string().contains("待核对"), "{err}");
    host.resolve_reconciliation(&first, "supervisor", true, "余额已增加")
        .expect("resolve");
    host.begin_load(&second, "teller", "T-2").expect("now free");
}

pub fn finish_load_checks_the_balances(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let id = record_in(host, RecordStatus::Loading);
    let before = f.snapshot();
    let err = host.finish_load(&id, "teller", 10_000, 29_999).unwrap_err();
    assert!(matches!(err, HostError::BalanceMismatch { .. }), "{err}");
    assert!(err.to_string().contains("299.99"), "{err}");
    for (b, a) in [(-1, 19_999), (i64::MAX - 1, i64::MAX)] {
        let err = host.finish_load(&id, "teller", b, a).unwrap_err();
        assert!(matches!(err, HostError::InvalidBalance { .. }), "{err}");
    }
    assert_eq!(f.snapshot(), before);
}

pub fn bad_plates_colours_and_amounts_change_nothing(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let before = f.snapshot();
    for (plate, colour, amount) in [
        ("", 0, 100),
        ("A12345", 0, 100),
        ("陕A 12345", 0, 100),
        ("陕A123456789012", 0, 100),
        (PLATE, 7, 100),
        (PLATE, 13, 100),
        (PLATE, 0, 0),
        (PLATE, 0, -100),
        (PLATE, 0, RECHARGE_FEN_MAX + 1),
        (PLATE, 0, i64::MAX),
        (PLATE, 1, 100),
        ("陕A12346", 0, 100),
    ] {
        let err = host
            .recharge(plate, colour, amount, "teller", "银行柜台")
            .unwrap_err();
        assert!(err.is_refusal(), "{err}");
        assert!(!err.to_string().is_empty());
    }
    for bad in [
        vehicle_input("陕", 0, &[CARD]),
        vehicle_input(PLATE, 9, &[CARD]),
        vehicle_input(PLATE, 0, &["123"]),
        vehicle_input(PLATE, 0, &[CARD, CARD]),
        VehicleInput {
            vehicle_class: 5,
            ..vehicle_input(PLATE, 0, &[CARD])
        },
        VehicleInput {
            owner_name: " ".into(),
            ..vehicle_input(PLATE, 0, &[CARD])
        },
        VehicleInput {
            obu_contract_serial: Some("XYZ".into()),
            ..vehicle_input(PLATE, 0, &[CARD])
        },
        // The card is already issued to 陕A12345 blue.
        vehicle_input("陕B54321", 0, &[CARD]),
    ] {
        let err = host.upsert_vehicle(&bad, "admin").unwrap_err();
        assert!(err.is_refusal(), "{err}");
    }
    assert_eq!(f.snapshot(), before, "refusals changed nothing");
    let err = host
        .upsert_vehicle(&vehicle_input("陕B54321", 0, &[CARD]), "admin")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "用户卡 61011801000000000001 已绑定车辆 陕A12345（蓝色），不能再绑定到其他车辆"
    );
    let err = host
        .recharge(PLATE, 0, RECHARGE_FEN_MAX + 1, "teller", "银行柜台")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "充值金额 50000.01 元超过单笔上限 50000.00 元，请分笔充值"
    );
    let err = host
        .recharge("陕A12346", 0, 100, "teller", "银行柜台")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "未找到车辆 陕A12346（蓝色），请核对车牌号和车牌颜色"
    );
}

pub fn vehicles_by_plate_and_card_with_normalised_plates(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let v = host
        .vehicle(" 陕a·12345 ", 0)
        .expect("read")
        .expect("found");
    assert_eq!(v.plate, PLATE);
    assert_eq!(v.current_card(), Some(CARD));
    assert_eq!(v.vehicle_class_label(), "一型客车");
    assert!(
        host.vehicle(PLATE, 1).expect("read").is_none(),
        "colour matters"
    );
    assert!(host.vehicle(PLATE, 99).is_err());
    assert_eq!(
        host.vehicles_for_card(CARD).expect("by card"),
        vec![v.clone()]
    );
    assert!(host
        .vehicles_for_card("61011801000000000009")
        .expect("by card")
        .is_empty());

    // A replacement card: recharges go to the newest card; the old one stays bound.
    let new_card = "61011801000000000009";
    f.clock().advance(Duration::minutes(1));
    let updated = host
        .upsert_vehicle(&vehicle_input("陕Ａ12345", 0, &[CARD, new_card]), "admin")
        .expect("update");
    assert_eq!(updated.created_at, v.created_at);
    assert_eq!(updated.updated_at, START + Duration::minutes(1));
    assert_eq!(updated.updated_by, "admin");
    assert_eq!(host.vehicle(PLATE, 0).expect("read"), Some(updated));
    let record = host
        .recharge(PLATE, 0, 100, "teller", "银行柜台")
        .expect("recharge");
    assert_eq!(record.card_number, new_card);
    assert_eq!(host.vehicles_for_card(CARD).expect("old card").len(), 1);
    // Dropping a card unbinds it.
    host.upsert_vehicle(&vehicle_input(PLATE, 0, &[new_card]), "admin")
        .expect("update");
    assert!(host.vehicles_for_card(CARD).expect("by card").is_empty());
    host.upsert_vehicle(&vehicle_input("陕B54321", 1, &[CARD]), "admin")
        .expect("the freed card can be issued again");

    // Every standard colour is accepted for the same plate text.
    for (code, _) in cardd_api::types::PLATE_COLOURS {
        host.upsert_vehicle(&vehicle_input("京A00001", *code, &[]), "admin")
            .expect("standard colour");
    }
    let err = host
        .recharge("京A00001", 0, 100, "teller", "银行柜台")
        .unwrap_err();
    assert!(matches!(err, HostError::NoCard { .. }), "{err}");
    f.verify();
}

/// 陕A12345 with records at 10:00, 10:10, …, one every ten minutes.
fn with_records(make: &Make, count: usize) -> (Box<dyn Fixture>, Vec<String>) {
    let f = with_vehicle(make);
    let mut ids = Vec::new();
    for i in 0..count {
        let amount = 100 * (i64::try_from(i).expect("small") + 1);
        ids.push(
            f.host()
                .recharge(PLATE, 0, amount, "teller", "银行柜台")
                .expect("recharge")
                .record_id,
        );
        f.clock().advance(Duration::minutes(10));
    }
    (f, ids)
}

pub fn queries_are_newest_first_with_time_ranges_and_pages(make: &Make) {
    let (f, ids) = with_records(make, 7);
    let host = f.host();
    // Another vehicle's records never show up.
    host.upsert_vehicle(
        &vehicle_input("陕A12345", 1, &["61011801000000000003"]),
        "admin",
    )
    .expect("yellow twin");
    host.recharge(PLATE, 1, 999, "teller", "银行柜台")
        .expect("other");

    let page = host
        .query_records(&RecordQuery::vehicle("陕a12345", 0))
        .expect("query");
    assert_eq!(page.total, 7);
    assert_eq!((page.page, page.page_size), (1, 20));
    let got: Vec<_> = page.records.iter().map(|r| r.record_id.clone()).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);
    assert!(page.records.iter().all(|r| r.plate_colour.code == 0));

    // 10:10 to 10:40 inclusive: records 1..=4; times in another offset mean the same instants.
    let query = RecordQuery {
        from: Some(datetime!(2025-03-01 02:10:00 UTC)),
        to: Some(datetime!(2025-03-01 10:40:00 +8)),
        ..RecordQuery::vehicle(PLATE, 0)
    };
    let page = host.query_records(&query).expect("range");
    assert_eq!(page.total, 4);
    let got: Vec<_> = page.records.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(got, [&ids[4], &ids[3], &ids[2], &ids[1]]);

    // Open-ended ranges and a fractional start.
    let from_only = RecordQuery {
        from: Some(datetime!(2025-03-01 10:50:00.5 +8)),
        ..RecordQuery::vehicle(PLATE, 0)
    };
    assert_eq!(host.query_records(&from_only).expect("from").total, 1);
    let barely_after = RecordQuery {
        from: Some(datetime!(2025-03-01 10:50:00.000000001 +8)),
        ..RecordQuery::vehicle(PLATE, 0)
    };
    assert_eq!(host.query_records(&barely_after).expect("from").total, 1);
    let to_only = RecordQuery {
        to: Some(datetime!(2025-03-01 10:00:00 +8)),
        ..RecordQuery::vehicle(PLATE, 0)
    };
    let page = host.query_records(&to_only).expect("to");
    assert_eq!(page.total, 1);
    assert_eq!(page.records[0].record_id, ids[0]);
    let empty = RecordQuery {
        from: Some(datetime!(2030-01-01 00:00:00 +8)),
        ..RecordQuery::vehicle(PLATE, 0)
    };
    let page = host.query_records(&empty).expect("empty");
    assert_eq!((page.total, page.records.len()), (0, 0));

    // Pages of three: 3 + 3 + 1, then nothing.
    let mut seen = Vec::new();
    for (page_no, len) in [(1, 3), (2, 3), (3, 1), (4, 0)] {
        let query = RecordQuery {
            page: page_no,
            page_size: 3,
            ..RecordQuery::vehicle(PLATE, 0)
        };
        let page = host.query_records(&query).expect("page");
        assert_eq!((page.total, page.records.len()), (7, len), "page {page_no}");
        seen.extend(page.records.into_iter().map(|r| r.record_id));
    }
    assert_eq!(seen, newest_first);
}

pub fn query_bounds_are_refused_clearly(make: &Make) {
    let (f, _ids) = with_records(make, 1);
    let host = f.host();
    let reversed = RecordQuery {
        from: Some(datetime!(2025-03-02 00:00:00 +8)),
        to: Some(datetime!(2025-03-01 00:00:00 +8)),
        ..RecordQuery::vehicle(PLATE, 0)
    };
    let err = host.query_records(&reversed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "充值开始时间 2025-03-02 00:00:00 晚于结束时间 2025-03-01 00:00:00，请重新选择时间"
    );
    for (page, page_size) in [(0, 20), (1, 0), (1, PAGE_SIZE_MAX + 1)] {
        let query = RecordQuery {
            page,
            page_size,
            ..RecordQuery::vehicle(PLATE, 0)
        };
        assert!(host.query_records(&query).is_err(), "{page} {page_size}");
    }
    let max = RecordQuery {
        page: u32::MAX,
        page_size: PAGE_SIZE_MAX,
        ..RecordQuery::vehicle(PLATE, 0)
    };
    assert_eq!(host.query_records(&max).expect("far page").records.len(), 0);
    assert!(matches!(
        host.query_records(&RecordQuery::vehicle("陕A99999", 0)),
        Err(HostError::VehicleNotFound { .. })
    ));
    assert!(matches!(
        host.query_records(&RecordQuery::vehicle(PLATE, 8)),
        Err(HostError::InvalidPlateColour(8))
    ));
}

pub fn a_card_s_records_by_status(make: &Make) {
    let (f, ids) = with_records(make, 3);
    let host = f.host();
    host.begin_load(&ids[0], "kiosk", "K1").expect("begin");
    host.finish_load(&ids[0], "kiosk", 0, 100).expect("finish");
    let waiting = host
        .records_for_card(CARD, Some(RecordStatus::NotLoaded))
        .expect("by card");
    let got: Vec<_> = waiting.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(got, [&ids[2], &ids[1]], "newest first, 未圈存 only");
    assert_eq!(host.records_for_card(CARD, None).expect("all").len(), 3);
    assert_eq!(
        host.records_for_card(CARD, Some(RecordStatus::Loaded))
            .expect("loaded")[0]
            .record_id,
        ids[0]
    );
    assert!(host
        .records_for_card("61011801000000000002", None)
        .expect("none")
        .is_empty());
    assert!(host.records_for_card("x", None).is_err());
    assert!(host.record("R20990101000001").expect("read").is_none());
    assert!(host.record("").is_err());
}

pub fn records_survive_reopening(make: &Make) {
    let mut f = with_vehicle(make);
    let id = f
        .host()
        .recharge(PLATE, 0, 5_000, "teller", "银行柜台")
        .expect("recharge")
        .record_id;
    f.host().begin_load(&id, "teller", "T1").expect("begin");
    let loaded = f
        .host()
        .finish_load(&id, "teller", 0, 5_000)
        .expect("finish");
    let vehicle = f.host().vehicle(PLATE, 0).expect("read");
    f.reopen();
    let host = f.host();
    assert_eq!(host.record(&id).expect("read"), Some(loaded));
    assert_eq!(host.vehicle(PLATE, 0).expect("read"), vehicle);
    // The day's sequence continues after a restart.
    let next = host
        .recharge(PLATE, 0, 100, "teller", "银行柜台")
        .expect("recharge");
    assert_eq!(next.record_id, "R20250301000002");
    f.verify();
}

pub fn record_ids_are_per_china_day(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    f.clock().set(datetime!(2025-03-01 15:59:59 UTC)); // 23:59:59 in China
    let a = host
        .recharge(PLATE, 0, 100, "teller", "银行柜台")
        .expect("a");
    f.clock().advance(Duration::seconds(1));
    let b = host
        .recharge(PLATE, 0, 100, "teller", "银行柜台")
        .expect("b");
    assert_eq!(a.record_id, "R20250301000001");
    assert_eq!(b.record_id, "R20250302000001");
    let json = serde_json::to_value(&b).expect("json");
    assert_eq!(json["recharged_at"], "2025-03-02T00:00:00+08:00");
}

/// Runs `work(i)` on `threads` threads at once and returns their results in order.
fn at_once<T: Send>(threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                scope.spawn(move || {
                    barrier.wait();
                    work(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

pub fn concurrent_loads_of_one_card_let_exactly_one_start(make: &Make) {
    let (f, ids) = with_records(make, 8);
    let host = f.host();
    let results = at_once(ids.len(), |i| {
        host.begin_load(&ids[i], "teller", &format!("T-{}", ids[i]))
    });
    let started = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(started, 1, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, HostError::CardBusy { .. })));
    assert_eq!(host.open_records().expect("open").len(), 1);
    f.verify();
}

pub fn one_record_begun_from_eight_threads_starts_once(make: &Make) {
    let (f, ids) = with_records(make, 1);
    let host = f.host();
    let id = &ids[0];
    let results = at_once(8, |i| host.begin_load(id, "teller", &format!("T-{i}")));
    let started: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(started.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, HostError::BadTransition { .. })));
    let record = host.record(id).expect("read").expect("record");
    assert_eq!(record.status, RecordStatus::Loading);
    assert_eq!(record.txn_ids.len(), 1, "only the winner is linked");
    assert_eq!(record.load_txn_id, started[0].load_txn_id);
    f.verify();
}

pub fn concurrent_recharges_get_distinct_record_ids(make: &Make) {
    let f = with_vehicle(make);
    let host = f.host();
    let ids = at_once(8, |_| {
        host.recharge(PLATE, 0, 100, "teller", "银行柜台")
            .expect("recharge")
            .record_id
    });
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 8);
    assert_eq!(sorted.last().map(String::as_str), Some("R20250301000008"));
    f.verify();
}

pub fn every_load_attempt_stays_linked_past_the_history_cap_and_the_limit_refuses(make: &Make) {
    use cardd_etc::model::{HISTORY_ENTRIES_MAX, RECORD_LOAD_ATTEMPTS_MAX};
    let mut f = with_vehicle(make);
    let id = f
        .host()
        .recharge(PLATE, 0, 20_000, "teller", "银行柜台")
        .expect("recharge")
        .record_id;
    // Each attempt writes two history entries (begin, abort): well past the cap.
    let attempts = HISTORY_ENTRIES_MAX + 5;
    let txn = |n: usize| format!("T-{n:04}");
    for n in 0..attempts {
        f.host().begin_load(&id, "teller", &txn(n)).expect("begin");
        f.host()
            .abort_load(&id, "teller", "卡片证明未圈存")
            .expect("abort");
    }
    let expected: Vec<String> = (0..attempts).map(txn).collect();
    let record = f.host().record(&id).expect("read").expect("record");
    assert_eq!(record.history.len(), HISTORY_ENTRIES_MAX);
    assert_eq!(record.history[0].action, RecordAction::Recharge, "kept");
    assert!(
        !record
            .history
            .iter()
            .any(|c| c.txn_id.as_deref() == Some(&txn(0))),
        "the capped history has dropped the first attempt"
    );
    assert_eq!(record.txn_ids, expected, "every attempt is still linked");
    // Durable: a reopened host links them all too.
    f.reopen();
    let host = f.host();
    let record = host.record(&id).expect("read").expect("record");
    assert_eq!(record.txn_ids, expected);

    // Up to the limit, then a clear refusal that changes nothing rather than a dropped link.
    for n in attempts..RECORD_LOAD_ATTEMPTS_MAX {
        host.begin_load(&id, "teller", &txn(n)).expect("begin");
        host.abort_load(&id, "teller", "卡片证明未圈存")
            .expect("abort");
    }
    let before = f.snapshot();
    let err = host
        .begin_load(&id, "teller", &txn(RECORD_LOAD_ATTEMPTS_MAX))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            HostError::LoadAttemptsExhausted { record_id, attempts }
                if *record_id == id && *attempts == RECORD_LOAD_ATTEMPTS_MAX
        ),
        "{err}"
    );
    assert!(err.to_string().contains("请主管核对"), "{err}");
    assert_eq!(f.snapshot(), before, "the refusal changed nothing");
    let record = host.record(&id).expect("read").expect("record");
    assert_eq!(record.status, RecordStatus::NotLoaded);
    assert_eq!(record.txn_ids.len(), RECORD_LOAD_ATTEMPTS_MAX);
    assert_eq!(record.txn_ids[0], txn(0));
}
