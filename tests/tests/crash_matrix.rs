//! Kill at every crash point, restart, re-present the card, check the invariants.
//!
//! The test re-runs its own binary as a child (`CARDD_CRASH_CHILD_DIR` set). The child runs three
//! loads on a simulated ETC card whose state is saved to disk after every APDU: a plain one,
//! one whose CREDIT executes but whose answer is lost (recovered on the spot from the card), and
//! another plain one; after each acknowledged load it prints `ACK <txn>`. `CARDD_CRASH_AT=point:n`
//! makes it abort at the n-th pass of a named crash point (no destructor, no flush, like
//! `kill -9`). The parent then restarts on the same data directory, with the card as it was on
//! disk, retries every load with the same ids (as a client that saved its ids would) and checks:
//! I1 the card's balance change equals the committed loads; I2 nothing is loaded twice; I3 every
//! acknowledged load is committed; I4 no intent is left open; I6 every journal record verifies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cardd_crypto::{bcd, Algorithm};
use cardd_journal::crash::CRASH_POINTS;
use cardd_journal::{load_card, Journal, LoadRequest, Store, TxnState};
use cardd_purse::{Purse, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{FaultKind, FaultPlan, SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

const LOADS: [(&str, u32); 3] = [("a1", 1_000), ("a2", 2_000), ("a3", 3_000)];
const CREDIT_APDU: u64 = 5;

fn request(txn_id: &str, amount_fen: u32) -> LoadRequest {
    LoadRequest {
        txn_id: txn_id.into(),
        amount_fen,
        terminal: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
        date: bcd::date(2026, 11, 22),
        time: bcd::time(12, 0, 0),
        etc_pin: "123456".into(),
        expected_card: None,
        city_algorithm: Algorithm::Tdes,
    }
}

/// The card's world, restored from (or created in) `dir/cards`.
fn world(dir: &Path) -> SimWorld {
    let world = SimWorld::with_state_dir(dir.join("cards")).unwrap();
    world
        .add_reader(
            SimReaderConfig::new("r", SimReaderKind::Contact)
                .with_card(cardd_sim::demo::demo_etc_card()),
        )
        .unwrap();
    world
}

fn reader(world: &SimWorld) -> Reader {
    let session = SimFactory::new(world.clone())
        .open(&ReaderSelector::Id("sim:r".into()))
        .unwrap();
    Reader::new(session, Duration::from_secs(5))
}

fn child(dir: &Path) {
    let store = Store::open(&dir.join("db")).unwrap();
    let journal = Journal::open(&store).unwrap();
    let world = world(dir);
    let mut reader = reader(&world);
    let sam = SoftSam::demo();
    for (txn_id, amount) in LOADS {
        if txn_id == "a2" {
            let credit = world.apdu_count("sim:r") + CREDIT_APDU;
            world
                .set_fault_plan(
                    "sim:r",
                    FaultPlan::new().at(credit, FaultKind::Timeout { executed: true }),
                )
                .unwrap();
        }
        let result = load_card(
            &mut Purse::new(&mut reader),
            &sam,
            &journal,
            "sim:r",
            &request(txn_id, amount),
        );
        if result.is_ok() {
            println!("ACK {txn_id}");
        }
    }
}

#[test]
fn crash_matrix() {
    if let Some(dir) = std::env::var_os("CARDD_CRASH_CHILD_DIR") {
        child(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cases = 0;
    let mut crashed = 0;
    for point in CRASH_POINTS {
        for nth in 1..=3 {
            let tmp = tempfile::tempdir().unwrap();
            let output = Command::new(&exe)
                .args([
                    "--exact",
                    "crash_matrix",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("CARDD_CRASH_CHILD_DIR", tmp.path())
                .env("CARDD_CRASH_AT", format!("{point}:{nth}"))
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let acked: BTreeSet<&str> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix("ACK "))
                .collect();
            if !output.status.success() {
                crashed += 1;
            }
            check_after_restart(tmp.path(), &acked, &format!("{point}:{nth}"));
            cases += 1;
        }
    }
    println!("crash matrix: {cases} cases, {crashed} crashed mid-load");
    assert!(
        crashed >= CRASH_POINTS.len(),
        "most crash points must be reached ({crashed} crashes)"
    );
}

fn check_after_restart(dir: &Path, acked: &BTreeSet<&str>, case: &str) {
    let store = Store::open(&dir.join("db")).unwrap();
    let journal = Journal::open(&store)
        .unwrap_or_else(|e| panic!("{case}: the journal must verify after a crash: {e}"));
    let world = world(dir);
    let mut reader = reader(&world);
    let sam = SoftSam::demo();
    // I3 before any retry: what was acknowledged is committed.
    for txn in acked {
        let state = journal.get(txn).unwrap().map(|t| t.state);
        assert!(
            matches!(state, Some(TxnState::Committed { .. })),
            "{case}: acknowledged {txn} is {state:?}"
        );
    }
    // The client retries every load with its saved id after the restart.
    for (txn_id, amount) in LOADS {
        load_card(
            &mut Purse::new(&mut reader),
            &sam,
            &journal,
            "sim:r",
            &request(txn_id, amount),
        )
        .unwrap_or_else(|e| panic!("{case}: retry of {txn_id} failed: {e}"));
    }
    let card = world.card("sim:r").unwrap();
    let committed: u32 = LOADS
        .iter()
        .filter(|(id, _)| {
            matches!(
                journal.get(id).unwrap().map(|t| t.state),
                Some(TxnState::Committed { .. })
            )
        })
        .map(|(_, amount)| amount)
        .sum();
    assert_eq!(
        card.balance().unwrap() - 10_000,
        committed,
        "{case}: I1 balance change = committed loads"
    );
    assert_eq!(
        committed, 6_000,
        "{case}: I2 every load exactly once after the retries"
    );
    assert_eq!(
        card.online_atc(),
        Some(3),
        "{case}: three credits on the card, no more"
    );
    assert!(
        journal.list_open().unwrap().is_empty(),
        "{case}: I4 no open intent"
    );
    journal
        .verify()
        .unwrap_or_else(|e| panic!("{case}: I6 {e}"));
}
