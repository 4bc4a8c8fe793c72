//! The embedded issuer host (sled): the trait-level suite (`suite/mod.rs`, shared with the
//! PostgreSQL host), plus what only the embedded host has: its checksums and index bounds,
//! failing closed on corruption, and the demo data.

use std::path::PathBuf;
use std::sync::Arc;

use cardd_etc::model::{CARD_RECORDS_MAX, MARK_NOT_LOADED_DONE_ZH};
use cardd_etc::{HostError, IssuerHost, RecordQuery, RecordStatus, SeedReport};
use cardd_journal::Store;
use cardd_store::demo::{
    demo_records, DEMO_ETC_CARD, DEMO_ETC_COLOUR, DEMO_ETC_PLATE, DEMO_LOADED_RECORD_ID,
    DEMO_NOT_LOADED_RECORD_IDS, DEMO_SM4_CARD, DEMO_SM4_COLOUR, DEMO_SM4_PLATE,
};
use cardd_store::{EmbeddedHost, ManualClock, HOST_TREE};
use time::macros::datetime;

#[macro_use]
mod suite;

use suite::{Fixture, PLATE, START};

/// An embedded host on its own sled database in a temporary directory.
struct Sled {
    // Declared first: the host and store close before the directory goes.
    host: Option<EmbeddedHost>,
    store: Option<Store>,
    clock: Arc<ManualClock>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture for Sled {
    fn host(&self) -> &dyn IssuerHost {
        self.host.as_ref().expect("open")
    }

    fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    fn snapshot(&self) -> Vec<String> {
        dump(self.store.as_ref().expect("open"))
            .into_iter()
            .map(|(k, v)| format!("{k:?}={v:?}"))
            .collect()
    }

    fn verify(&self) {
        self.host
            .as_ref()
            .expect("open")
            .verify()
            .expect("indexes agree");
    }

    fn reopen(&mut self) {
        self.host = None;
        self.store = None;
        let store = Store::open(&self.path).expect("reopen");
        self.host =
            Some(EmbeddedHost::open_with_clock(&store, self.clock.clone()).expect("reopen host"));
        self.store = Some(store);
    }
}

fn sled() -> Box<dyn Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let store = Store::open(&path).expect("open");
    let clock = Arc::new(ManualClock::new(START));
    let host = EmbeddedHost::open_with_clock(&store, clock.clone()).expect("open host");
    Box::new(Sled {
        host: Some(host),
        store: Some(store),
        clock,
        path,
        _dir: dir,
    })
}

host_suite!(sled);

fn host_on(store: &Store) -> (EmbeddedHost, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let host = EmbeddedHost::open_with_clock(store, clock.clone()).expect("open host");
    (host, clock)
}

/// Every key and value of the host's tree, to prove a refusal changed nothing.
fn dump(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .tree(HOST_TREE)
        .expect("tree")
        .iter()
        .map(|item| {
            let (k, v) = item.expect("item");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// A host on a temporary store with 陕A12345 and `count` records, one every ten minutes.
fn host_with_records(count: usize) -> (Store, EmbeddedHost, Vec<String>) {
    let store = Store::temporary().expect("store");
    let (host, clock) = host_on(&store);
    host.upsert_vehicle(&suite::vehicle_input(PLATE, 0, &[suite::CARD]), "admin")
        .expect("vehicle");
    let mut ids = Vec::new();
    for i in 0..count {
        let amount = 100 * (i64::try_from(i).expect("small") + 1);
        ids.push(
            host.recharge(PLATE, 0, amount, "teller", "银行柜台")
                .expect("recharge")
                .record_id,
        );
        clock.advance(time::Duration::minutes(10));
    }
    (store, host, ids)
}

#[test]
fn the_seed_s_words_after_mark_not_loaded() {
    assert_eq!(MARK_NOT_LOADED_DONE_ZH, "修改圈存状态成功！请进行圈存操作");
}

#[test]
fn verify_counts_vehicles_and_records() {
    let (_store, host, _ids) = host_with_records(2);
    assert_eq!(
        host.verify().expect("verify"),
        cardd_store::VerifyReport {
            vehicles: 1,
            records: 2
        }
    );
}

#[test]
fn query_parameters_parse_from_json() {
    let query: RecordQuery = serde_json::from_value(serde_json::json!({
        "plate": "陕A12345", "colour": 0, "from": "2025-03-01T00:00:00+08:00"
    }))
    .expect("parse");
    assert_eq!((query.page, query.page_size), (1, 20));
    assert_eq!(query.from, Some(datetime!(2025-03-01 00:00:00 +8)));
    assert!(serde_json::from_value::<RecordQuery>(serde_json::json!({
        "plate": "陕A12345", "colour": 0, "extra": 1
    }))
    .is_err());
    let schema = schemars::schema_for!(cardd_etc::RechargeRecord);
    let text = serde_json::to_string(&schema).expect("schema");
    assert!(text.contains("recharged_at") && text.contains("needs_reconciliation"));
}

#[test]
fn a_card_answer_is_bounded() {
    let (store, host, _ids) = host_with_records(1);
    // Index entries alone are enough to hit the bound: it is checked before records are read.
    let tree = store.tree(HOST_TREE).expect("tree");
    let card = "61011801000000000007";
    for i in 0..=CARD_RECORDS_MAX {
        tree.insert(format!("crec/{card}/R20250301{i:06}"), "not_loaded")
            .expect("insert");
    }
    let err = host.records_for_card(card, None).unwrap_err();
    assert!(matches!(err, HostError::TooManyRecords { .. }), "{err}");
    assert!(err.to_string().contains("分页查询"), "{err}");
}

#[test]
fn a_corrupted_record_fails_closed() {
    let (store, host, _ids) = host_with_records(1);
    drop(host);
    let tree = store.tree(HOST_TREE).expect("tree");
    let (key, value) = tree
        .scan_prefix(b"rec/")
        .next()
        .expect("one record")
        .expect("read");
    let mut value = value.to_vec();
    if let Some(last) = value.last_mut() {
        *last ^= 0x01;
    }
    tree.insert(key, value).expect("corrupt");
    let err = EmbeddedHost::open(&store).unwrap_err();
    assert!(matches!(err, HostError::Corrupt { .. }), "{err}");
    assert!(!err.is_refusal());
    assert!(err.to_string().contains("已损坏"), "{err}");
}

#[test]
fn demo_seed_is_complete_and_idempotent() {
    let store = Store::temporary().expect("store");
    let (host, _clock) = host_on(&store);
    assert_eq!(
        host.seed_demo().expect("seed"),
        SeedReport {
            vehicles_added: 2,
            records_added: 3
        }
    );
    let after_first = dump(&store);
    assert_eq!(host.seed_demo().expect("again"), SeedReport::default());
    assert_eq!(dump(&store), after_first, "seeding twice changes nothing");

    let etc = host
        .vehicle(DEMO_ETC_PLATE, DEMO_ETC_COLOUR)
        .expect("read")
        .expect("demo ETC vehicle");
    assert_eq!(
        (etc.owner_name.as_str(), etc.current_card()),
        ("张三", Some(DEMO_ETC_CARD))
    );
    assert_eq!(etc.obu_contract_serial.as_deref(), Some("6101180100000001"));
    let sm4 = host
        .vehicle(DEMO_SM4_PLATE, DEMO_SM4_COLOUR)
        .expect("read")
        .expect("demo SM4 vehicle");
    assert_eq!(
        (sm4.owner_name.as_str(), sm4.current_card()),
        ("李四", Some(DEMO_SM4_CARD))
    );
    assert_eq!(sm4.plate_colour.label, "绿色");

    let page = host
        .query_records(&RecordQuery::vehicle(DEMO_ETC_PLATE, DEMO_ETC_COLOUR))
        .expect("query");
    let got: Vec<_> = page
        .records
        .iter()
        .map(|r| (r.record_id.as_str(), r.amount_yuan(), r.status_label()))
        .collect();
    assert_eq!(
        got,
        [
            (DEMO_NOT_LOADED_RECORD_IDS[0], "50.00".to_owned(), "未圈存"),
            (DEMO_NOT_LOADED_RECORD_IDS[1], "200.00".to_owned(), "未圈存"),
            (DEMO_LOADED_RECORD_ID, "100.00".to_owned(), "已圈存"),
        ]
    );
    let loaded = &page.records[2];
    assert_eq!(loaded.balance_before_yuan().as_deref(), Some("0.00"));
    assert_eq!(loaded.balance_after_yuan().as_deref(), Some("100.00"));
    assert_eq!(
        host.records_for_card(DEMO_ETC_CARD, Some(RecordStatus::NotLoaded))
            .expect("kiosk")
            .len(),
        2
    );

    // A newcomer loads one demo record; seeding again leaves it loaded.
    let id = DEMO_NOT_LOADED_RECORD_IDS[1];
    host.begin_load(id, "teller", "T-demo").expect("begin");
    host.finish_load(id, "teller", 10_000, 30_000)
        .expect("finish");
    let after_load = dump(&store);
    assert_eq!(host.seed_demo().expect("again"), SeedReport::default());
    assert_eq!(dump(&store), after_load);
    assert_eq!(demo_records().len(), 3);
    host.verify().expect("indexes agree");
}

#[test]
fn demo_seed_after_reopen_and_on_june_days_keeps_ids_unique() {
    let store = Store::temporary().expect("store");
    let (host, clock) = host_on(&store);
    host.seed_demo().expect("seed");
    clock.set(datetime!(2024-06-15 12:00:00 +8));
    let record = host
        .recharge(DEMO_ETC_PLATE, DEMO_ETC_COLOUR, 100, "teller", "银行柜台")
        .expect("recharge on a demo day");
    assert_eq!(record.record_id, "R20240615000002");
    drop(host);
    let (host, _clock) = host_on(&store);
    assert_eq!(host.seed_demo().expect("again"), SeedReport::default());
}
