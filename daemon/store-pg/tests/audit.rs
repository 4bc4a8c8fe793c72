//! The host's hash-chained audit log on PostgreSQL: records chain per site, concurrent appends
//! to one chain stay in order, and a record edited, removed or inserted breaks the chain where
//! it was changed.

use std::sync::Arc;

use cardd_journal::clock::SystemClock;
use cardd_store_pg::{AuditError, Database, HostAuditEntry, PgAudit};
use serde_json::json;

mod common;

use common::{admin, FreshDatabase};

fn entry(chain: &str, n: usize) -> HostAuditEntry {
    HostAuditEntry {
        chain: chain.into(),
        actor: format!("{chain}/teller"),
        action: "records.recharge".into(),
        target: Some("陕A12345".into()),
        detail: json!({ "amount_fen": n * 100, "channel": "银行柜台" }),
        outcome: "started".into(),
    }
}

fn audit(db: &FreshDatabase) -> PgAudit {
    PgAudit::new(
        Arc::new(Database::open(&db.url).expect("database")),
        Arc::new(SystemClock),
    )
}

#[test]
fn chains_verify_and_any_change_breaks_them_where_it_was_made() {
    let db = FreshDatabase::create();
    let log = audit(&db);
    for n in 1..=5 {
        log.append(&entry("S01", n)).unwrap();
        log.append(&entry("S02", n)).unwrap();
    }
    let report = log.verify().unwrap();
    assert_eq!((report.chains, report.records), (2, 10));
    assert_eq!(log.list(Some("S01"), 100).unwrap().len(), 5);

    // An edited detail.
    admin(
        &db.url,
        "UPDATE host_audit SET detail = '{\"amount_fen\":1}' WHERE chain = 'S01' AND seq = 3",
    );
    match log.verify() {
        Err(AuditError::Broken { chain, seq, .. }) => assert_eq!((chain.as_str(), seq), ("S01", 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_removed_record_breaks_the_chain() {
    let db = FreshDatabase::create();
    let log = audit(&db);
    for n in 1..=4 {
        log.append(&entry("S01", n)).unwrap();
    }
    admin(
        &db.url,
        "DELETE FROM host_audit WHERE chain = 'S01' AND seq = 2",
    );
    match log.verify() {
        Err(AuditError::Broken { seq, .. }) => assert_eq!(seq, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn four_writers_on_one_chain_keep_it_whole() {
    let db = FreshDatabase::create();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = audit(&db);
            std::thread::spawn(move || {
                for n in 0..25 {
                    log.append(&entry("S01", t * 100 + n)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = audit(&db);
    let report = log.verify().unwrap();
    assert_eq!((report.chains, report.records), (1, 100));
}

#[test]
fn oversized_or_empty_entries_are_refused_and_nothing_is_written() {
    let db = FreshDatabase::create();
    let log = audit(&db);
    let mut big = entry("S01", 1);
    big.detail = json!({ "x": "a".repeat(20_000) });
    assert!(matches!(log.append(&big), Err(AuditError::Invalid(_))));
    let mut nameless = entry("S01", 1);
    nameless.action = String::new();
    assert!(matches!(log.append(&nameless), Err(AuditError::Invalid(_))));
    assert_eq!(log.verify().unwrap().records, 0);
}
