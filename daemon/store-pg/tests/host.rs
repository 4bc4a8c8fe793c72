//! The issuer host on PostgreSQL: the trait-level suite shared with the embedded host
//! (`daemon/domain/etc/tests/suite/mod.rs`), each test on a fresh database, plus what only
//! PostgreSQL has: schema migrations, a newer schema refused, a connection lost mid-transaction,
//! and the refusal to block an async executor.

use std::sync::Arc;

use cardd_etc::{HostError, IssuerHost, RecordStatus};
use cardd_journal::clock::ManualClock;
use cardd_store_pg::{PgHost, SCHEMA_VERSION};

mod common;
#[macro_use]
#[path = "../../domain/etc/tests/suite/mod.rs"]
mod suite;

use common::{admin, FreshDatabase};
use suite::{Fixture, CARD, PLATE, START};

/// Every table, in a fixed order, for snapshots.
const TABLES: &[&str] = &[
    "cardd_schema_migrations",
    "vehicles",
    "vehicle_cards",
    "record_days",
    "recharge_records",
    "record_history",
    "record_txns",
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
    host: Option<PgHost>,
    clock: Arc<ManualClock>,
    db: FreshDatabase,
}

impl Fixture for Pg {
    fn host(&self) -> &dyn IssuerHost {
        self.host.as_ref().expect("open")
    }

    fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    fn snapshot(&self) -> Vec<String> {
        snapshot(&self.db.url)
    }

    fn verify(&self) {
        self.host
            .as_ref()
            .expect("open")
            .verify()
            .expect("consistent");
    }

    fn reopen(&mut self) {
        self.host = None;
        self.host =
            Some(PgHost::open_with_clock(&self.db.url, self.clock.clone()).expect("reopen"));
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
    let host = PgHost::open_with_clock(&db.url, clock.clone()).expect("open");
    Box::new(Pg {
        host: Some(host),
        clock,
        db,
    })
}

host_suite!(pg);

#[test]
fn the_schema_is_migrated_once_and_reopening_changes_nothing() {
    let db = FreshDatabase::create();
    let clock = Arc::new(ManualClock::new(START));
    // Two hosts start at once on an empty database: one migrates, the other finds it done.
    let open_two = || {
        std::thread::scope(|s| {
            let a = s.spawn(|| PgHost::open_with_clock(&db.url, clock.clone()));
            let b = s.spawn(|| PgHost::open_with_clock(&db.url, clock.clone()));
            (
                a.join().expect("thread").expect("open a"),
                b.join().expect("thread").expect("open b"),
            )
        })
    };
    let (host, other) = open_two();
    assert_eq!(host.schema_version().expect("version"), SCHEMA_VERSION);
    let migrations = "SELECT version::text FROM cardd_schema_migrations ORDER BY version";
    let all: Vec<String> = cardd_store_pg::migrate::MIGRATIONS
        .iter()
        .map(|(v, _)| v.to_string())
        .collect();
    assert_eq!(
        admin(&db.url, migrations),
        all,
        "each migration recorded once"
    );
    host.upsert_vehicle(&suite::vehicle_input(PLATE, 0, &[CARD]), "admin")
        .expect("vehicle");
    drop((host, other));
    let before = snapshot(&db.url);
    // Opened again, twice at once: nothing is applied twice, nothing changes.
    let (host, _other) = open_two();
    assert_eq!(snapshot(&db.url), before);
    assert_eq!(admin(&db.url, migrations), all);
    assert!(host.vehicle(PLATE, 0).expect("read").is_some());
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let db = FreshDatabase::create();
    drop(PgHost::open(&db.url).expect("open"));
    let newer = SCHEMA_VERSION + 1;
    admin(
        &db.url,
        &format!("INSERT INTO cardd_schema_migrations (version) VALUES ({newer})"),
    );
    let before = snapshot(&db.url);
    let err = PgHost::open(&db.url).unwrap_err();
    assert!(
        matches!(err, HostError::SchemaTooNew { found, supported }
            if found == newer && supported == SCHEMA_VERSION),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("结构版本为 {newer}"))
            && message.contains(&format!("只支持到版本 {SCHEMA_VERSION}")),
        "{message}"
    );
    assert!(!err.is_refusal());
    assert_eq!(snapshot(&db.url), before, "nothing written");
}

#[test]
fn a_connection_lost_before_commit_leaves_nothing_half_done() {
    let db = FreshDatabase::create();
    let host = PgHost::open_with_clock(&db.url, Arc::new(ManualClock::new(START))).expect("open");
    host.upsert_vehicle(&suite::vehicle_input(PLATE, 0, &[CARD]), "admin")
        .expect("vehicle");
    let id = host
        .recharge(PLATE, 0, 20_000, "teller", "银行柜台")
        .expect("recharge")
        .record_id;
    let before = snapshot(&db.url);
    host.drop_connection_before_next_commit();
    // The load's writes (status, transaction link, history) were all made, then the
    // connection went before COMMIT.
    let err = host.begin_load(&id, "teller", "T-lost").unwrap_err();
    assert!(matches!(err, HostError::Database(_)), "{err}");
    assert!(!err.is_refusal());
    assert_eq!(
        snapshot(&db.url),
        before,
        "nothing of the transaction remains"
    );
    assert!(host.record_for_txn("T-lost").expect("read").is_none());
    // The pool replaced the connection: the next call works.
    let record = host.begin_load(&id, "teller", "T-next").expect("begin");
    assert_eq!(record.status, RecordStatus::Loading);
    assert_eq!(record.txn_ids, ["T-next"]);
    host.verify().expect("consistent");
}

#[test]
fn a_call_from_an_async_task_is_refused_instead_of_blocking_the_executor() {
    let f = pg();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = runtime
        .block_on(async { f.host().vehicle(PLATE, 0) })
        .unwrap_err();
    assert!(matches!(err, HostError::Database(_)), "{err}");
    assert!(err.to_string().contains("thread of its own"), "{err}");
    // Dropping a host inside an async task does not block the executor either.
    let db = FreshDatabase::create();
    let host = PgHost::open(&db.url).expect("open");
    runtime.block_on(async move { drop(host) });
}
