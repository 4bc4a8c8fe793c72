//! Group recharge on PostgreSQL: the trait-level suite shared with the embedded group host
//! (`daemon/domain/group/tests/suite/mod.rs`), each test on a fresh database and each "site" a
//! `PgGroupHost` on a `Database` of its own, plus what only PostgreSQL has: a newer schema
//! refused, a connection lost before commit leaving nothing, the ledger's chain kept by the
//! schema, and the checks of `verify`.

use std::sync::Arc;

use cardd_group::model::*;
use cardd_group::{GroupError, GroupHost};
use cardd_journal::clock::ManualClock;
use cardd_store_pg::{PgGroupHost, SCHEMA_VERSION};

mod common;
#[macro_use]
#[path = "../../domain/group/tests/suite/mod.rs"]
mod suite;

use common::{admin, FreshDatabase};
use suite::{reserve, Fixture, CARD, CARD2, START};

/// The group tables and the migrations, in a fixed order, for snapshots.
const TABLES: &[&str] = &[
    "cardd_schema_migrations",
    "groups",
    "group_ledger",
    "group_id_days",
    "group_batches",
    "group_batch_items",
    "group_orders",
    "group_topups",
];

struct Pg {
    // Declared first: the host's connections close before the database is dropped.
    host: Option<PgGroupHost>,
    clock: Arc<ManualClock>,
    db: FreshDatabase,
}

impl Pg {
    fn pg(&self) -> &PgGroupHost {
        self.host.as_ref().expect("open")
    }
}

impl Fixture for Pg {
    fn host(&self) -> &dyn GroupHost {
        self.pg()
    }

    fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    fn seed_demo(&self) -> u32 {
        self.pg().seed_demo().expect("seed")
    }

    fn snapshot(&self) -> Vec<String> {
        snapshot(&self.db.url)
    }

    fn verify(&self) {
        self.pg().verify().expect("consistent");
    }

    fn reopen(&mut self) {
        self.host = None;
        self.host =
            Some(PgGroupHost::open_with_clock(&self.db.url, self.clock.clone()).expect("reopen"));
    }

    fn another_site(&self) -> Box<dyn GroupHost> {
        Box::new(PgGroupHost::open_with_clock(&self.db.url, self.clock.clone()).expect("open"))
    }
}

fn snapshot(url: &str) -> Vec<String> {
    let sql: Vec<String> = TABLES
        .iter()
        .map(|t| format!("SELECT '{t} ' || x::text FROM {t} x ORDER BY x::text"))
        .collect();
    admin(url, &sql.join(";"))
}

fn pg() -> Box<dyn Fixture> {
    let db = FreshDatabase::create();
    let clock = Arc::new(ManualClock::new(START));
    let host = PgGroupHost::open_with_clock(&db.url, clock.clone()).expect("open");
    Box::new(Pg {
        host: Some(host),
        clock,
        db,
    })
}

group_suite!(pg);

fn seeded_host(db: &FreshDatabase) -> PgGroupHost {
    let host =
        PgGroupHost::open_with_clock(&db.url, Arc::new(ManualClock::new(START))).expect("open");
    assert_eq!(host.seed_demo().expect("seed"), 2);
    host
}

#[test]
fn a_newer_schema_is_refused_before_anything_is_read_or_written() {
    let db = FreshDatabase::create();
    drop(seeded_host(&db));
    let newer = SCHEMA_VERSION + 1;
    admin(
        &db.url,
        &format!("INSERT INTO cardd_schema_migrations (version) VALUES ({newer})"),
    );
    let before = snapshot(&db.url);
    let err = PgGroupHost::open(&db.url).unwrap_err();
    assert!(matches!(err, GroupError::Storage(_)), "{err}");
    assert!(!err.is_refusal());
    let message = err.to_string();
    assert!(
        message.contains(&format!("结构版本为 {newer}"))
            && message.contains(&format!("只支持到版本 {SCHEMA_VERSION}")),
        "{message}"
    );
    assert_eq!(snapshot(&db.url), before, "nothing written");
}

#[test]
fn a_connection_lost_before_commit_leaves_nothing_half_done() {
    let db = FreshDatabase::create();
    let host = seeded_host(&db);
    let before = snapshot(&db.url);
    // The reservation's writes (ledger entry, order, id sequence) were all made, then the
    // connection went before COMMIT.
    host.drop_connection_before_next_commit();
    let err = host
        .reserve(&reserve(CARD, 0, 2_000, "lost#1"))
        .unwrap_err();
    assert!(matches!(err, GroupError::Storage(_)), "{err}");
    assert!(!err.is_refusal());
    assert_eq!(
        snapshot(&db.url),
        before,
        "nothing of the reservation remains"
    );
    assert_eq!(host.group("G001").unwrap().unwrap().available_fen, 50_000);
    // A refund whose connection is lost returns nothing either.
    let order = host.reserve(&reserve(CARD, 0, 2_000, "next#1")).unwrap();
    assert_eq!(
        order.order_id, "GO20240615000001",
        "the lost id was not taken"
    );
    host.fail(&order.order_id, "group1", "x").unwrap();
    let before = snapshot(&db.url);
    host.drop_connection_before_next_commit();
    assert!(host.refund(&order.order_id, "auditor", "未到卡").is_err());
    assert_eq!(snapshot(&db.url), before);
    // The pool replaced the connection: the next call works, once.
    let refunded = host.refund(&order.order_id, "auditor", "未到卡").unwrap();
    assert_eq!(refunded.status, OrderStatus::Refunded);
    assert_eq!(host.group("G001").unwrap().unwrap().available_fen, 50_000);
    host.verify().expect("consistent");
}

#[test]
fn the_schema_keeps_the_ledger_a_chain_and_verify_finds_what_it_does_not() {
    let db = FreshDatabase::create();
    let host = seeded_host(&db);
    let order = host.reserve(&reserve(CARD, 0, 2_000, "v#1")).unwrap();
    host.reserve(&reserve(CARD2, 0, 1_000, "v#2")).unwrap();
    let report = host.verify().expect("consistent");
    assert_eq!(
        (
            report.groups,
            report.ledger_entries,
            report.orders,
            report.topups
        ),
        (2, 4, 2, 2)
    );
    // An entry that does not start from its predecessor's balance, that skips a number,
    // overdraws or has the wrong sign: the schema refuses each.
    for bad in [
        "INSERT INTO group_ledger VALUES ('G001', 4, 3, now(), 'top_up', 100, 46000, 46100, 'x', 'x')",
        "INSERT INTO group_ledger VALUES ('G001', 5, 4, now(), 'top_up', 100, 47000, 47100, 'x', 'x')",
        "INSERT INTO group_ledger VALUES ('G001', 4, 3, now(), 'reserve', -48000, 47000, -1000, 'x', 'x')",
        "INSERT INTO group_ledger VALUES ('G001', 4, 3, now(), 'reserve', 100, 47000, 47100, 'x', 'x')",
        "INSERT INTO group_ledger VALUES ('G001', 3, 2, now(), 'top_up', 100, 48000, 48100, 'x', 'x')",
    ] {
        let failed = std::panic::catch_unwind(|| admin(&db.url, bad));
        assert!(failed.is_err(), "refused: {bad}");
    }
    // An order's reservation taken back behind the host's back: verify fails closed.
    admin(
        &db.url,
        &format!(
            "INSERT INTO group_ledger VALUES ('G001', 4, 3, now(), 'refund', 2000, 47000, \
             49000, '{}', 'x')",
            order.order_id
        ),
    );
    let err = host.verify().unwrap_err();
    assert!(matches!(err, GroupError::Storage(_)), "{err}");
    assert!(err.to_string().contains("已损坏"), "{err}");
    assert!(err.to_string().contains(&order.order_id), "{err}");
}

#[test]
fn the_group_tables_come_with_the_schema_and_a_shared_database() {
    let db = FreshDatabase::create();
    let clock = Arc::new(ManualClock::new(START));
    // The issuer host and the group host share one database (one pool, one runtime).
    let records = cardd_store_pg::PgHost::open_with_clock(&db.url, clock.clone()).expect("open");
    let groups = PgGroupHost::new(records.database().clone(), clock);
    assert_eq!(groups.seed_demo().expect("seed"), 2);
    assert_eq!(records.schema_version().expect("version"), SCHEMA_VERSION);
    let versions = admin(
        &db.url,
        "SELECT version::text FROM cardd_schema_migrations ORDER BY version",
    );
    let all: Vec<String> = cardd_store_pg::migrate::MIGRATIONS
        .iter()
        .map(|(v, _)| v.to_string())
        .collect();
    assert_eq!(versions, all);
    assert!(versions.contains(&"3".to_owned()));
    groups.verify().expect("consistent");
}
