//! Kill at every crash point, restart, re-present the card, check the invariants; and a seeded
//! random soak mixing crashes with card removal, timeouts and garbled answers.
//!
//! The tests re-run their own binary as a child (`CARDD_CRASH_CHILD_DIR` set). The child runs
//! three loads on a simulated ETC card whose state (and the card a fault pulled out, "in the
//! teller's hand") is saved to disk after every APDU: a plain one, one whose CREDIT executes but
//! whose answer is lost (recovered on the spot from the card), and another plain one; after each
//! acknowledged load it prints `ACK <txn>`. `CARDD_CRASH_AT=point:n` makes it SIGKILL itself at the n-th
//! pass of a named crash point (no destructor, no flush, like `kill -9`). The parent then
//! restarts on the same data directory, with the card as it was on disk, re-presents it,
//! retries every load with the same ids (as a client that saved its ids would) and checks:
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
const FAULT_KINDS: [&str; 5] = [
    "remove_before",
    "remove_after",
    "timeout_executed",
    "timeout",
    "garbled",
];

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
        funding: cardd_journal::Funding::TestMode,
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

/// A card pulled by a fault is put back, as the teller would.
fn represent(world: &SimWorld) {
    if world.card("sim:r").is_none() {
        if let Some(card) = world.take_pocket("sim:r") {
            world.insert_card("sim:r", card).unwrap();
        }
    }
}

fn fault_kind(name: &str) -> FaultKind {
    match name {
        "remove_before" => FaultKind::RemoveBeforeExec,
        "remove_after" => FaultKind::RemoveAfterExec,
        "timeout_executed" => FaultKind::Timeout { executed: true },
        "timeout" => FaultKind::Timeout { executed: false },
        _ => FaultKind::GarbledSw,
    }
}

/// A fault named in `CARDD_SOAK_FAULT` (`<apdu>:<kind>`, counted from the child's start).
fn soak_fault() -> Option<(u64, FaultKind)> {
    let spec = std::env::var("CARDD_SOAK_FAULT").ok()?;
    let (at, kind) = spec.split_once(':')?;
    Some((at.parse().ok()?, fault_kind(kind)))
}

fn child(dir: &Path) {
    let store = Store::open(&dir.join("db")).unwrap();
    let journal = Journal::open(&store).unwrap();
    let world = world(dir);
    let mut reader = reader(&world);
    let sam = SoftSam::demo();
    let soak = soak_fault();
    if let Some((at, kind)) = &soak {
        world
            .set_fault_plan("sim:r", FaultPlan::new().at(*at, kind.clone()))
            .unwrap();
    }
    for (txn_id, amount) in LOADS {
        if txn_id == "a2" && soak.is_none() {
            let credit = world.apdu_count("sim:r") + CREDIT_APDU;
            world
                .set_fault_plan(
                    "sim:r",
                    FaultPlan::new().at(credit, FaultKind::Timeout { executed: true }),
                )
                .unwrap();
        }
        represent(&world);
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

/// Runs the child with `env`; returns the loads it acknowledged and whether it crashed.
fn run_child(dir: &Path, env: &[(&str, String)]) -> (BTreeSet<String>, bool) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "crash_matrix::crash_matrix",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CARDD_CRASH_CHILD_DIR", dir);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let acked = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(str::to_owned)
        .collect();
    (acked, !output.status.success())
}

#[test]
fn crash_matrix() {
    if let Some(dir) = std::env::var_os("CARDD_CRASH_CHILD_DIR") {
        child(Path::new(&dir));
        return;
    }
    let mut cases = 0;
    let mut crashed = 0;
    for point in CRASH_POINTS {
        for nth in 1..=3 {
            let tmp = tempfile::tempdir().unwrap();
            let (acked, did_crash) =
                run_child(tmp.path(), &[("CARDD_CRASH_AT", format!("{point}:{nth}"))]);
            crashed += usize::from(did_crash);
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

/// A small deterministic generator for the soak (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }
}

/// Seeded random crashes and faults together; the seed is in every failure message, and
/// `CARDD_SOAK_SEED=<seed> CARDD_SOAK_RUNS=1` replays one case (`CARDD_SOAK_RUNS` runs more).
#[test]
fn random_crash_and_fault_soak() {
    if std::env::var_os("CARDD_CRASH_CHILD_DIR").is_some() {
        return;
    }
    let runs: u64 = std::env::var("CARDD_SOAK_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    let first: u64 = std::env::var("CARDD_SOAK_SEED")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut crashed = 0;
    for seed in first..first + runs {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut env = Vec::new();
        if rng.below(10) < 7 {
            let point = CRASH_POINTS[rng.below(CRASH_POINTS.len() as u64) as usize];
            env.push(("CARDD_CRASH_AT", format!("{point}:{}", 1 + rng.below(3))));
        }
        let apdu = 1 + rng.below(16);
        let kind = FAULT_KINDS[rng.below(FAULT_KINDS.len() as u64) as usize];
        env.push(("CARDD_SOAK_FAULT", format!("{apdu}:{kind}")));
        let tmp = tempfile::tempdir().unwrap();
        let (acked, did_crash) = run_child(tmp.path(), &env);
        crashed += usize::from(did_crash);
        let case =
            format!("soak seed {seed} {env:?} (replay: CARDD_SOAK_SEED={seed} CARDD_SOAK_RUNS=1)");
        check_after_restart(tmp.path(), &acked, &case);
    }
    println!("soak: {runs} seeds from {first}, {crashed} crashed");
}

fn check_after_restart(dir: &Path, acked: &BTreeSet<String>, case: &str) {
    let store = Store::open(&dir.join("db")).unwrap();
    let journal = Journal::open(&store)
        .unwrap_or_else(|e| panic!("{case}: the journal must verify after a crash: {e}"));
    let world = world(dir);
    represent(&world);
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
        represent(&world);
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
