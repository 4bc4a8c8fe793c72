//! The embedded group host (sled): the trait-level suite (`suite/mod.rs`, shared with the
//! PostgreSQL host), plus what only the embedded host has: a tampered record fails the host
//! closed.

use std::path::PathBuf;
use std::sync::Arc;

use cardd_group::model::*;
use cardd_group::GroupHost;
use cardd_journal::Store;
use cardd_store::{EmbeddedGroupHost, ManualClock, GROUP_TREE};

#[macro_use]
mod suite;

use suite::{reserve, Fixture, CARD, START};

/// An embedded group host on its own sled database in a temporary directory.
struct Sled {
    // Declared first: the host and store close before the directory goes.
    host: Option<EmbeddedGroupHost>,
    store: Option<Store>,
    clock: Arc<ManualClock>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sled {
    fn embedded(&self) -> &EmbeddedGroupHost {
        self.host.as_ref().expect("open")
    }
}

impl Fixture for Sled {
    fn host(&self) -> &dyn GroupHost {
        self.embedded()
    }

    fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    fn seed_demo(&self) -> u32 {
        self.embedded().seed_demo().expect("seed")
    }

    fn snapshot(&self) -> Vec<String> {
        let tree = self
            .store
            .as_ref()
            .expect("open")
            .tree(GROUP_TREE)
            .expect("tree");
        tree.iter()
            .map(|item| {
                let (k, v) = item.expect("read");
                format!("{k:?}={v:?}")
            })
            .collect()
    }

    fn verify(&self) {
        self.embedded().verify().expect("consistent");
    }

    fn reopen(&mut self) {
        self.host = None;
        self.store = None;
        let store = Store::open(&self.path).expect("reopen");
        self.host = Some(
            EmbeddedGroupHost::open_with_clock(&store, self.clock.clone()).expect("reopen host"),
        );
        self.store = Some(store);
    }

    fn another_site(&self) -> Box<dyn GroupHost> {
        let store = self.store.as_ref().expect("open");
        Box::new(EmbeddedGroupHost::open_with_clock(store, self.clock.clone()).expect("open"))
    }
}

fn sled() -> Box<dyn Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let store = Store::open(&path).expect("open");
    let clock = Arc::new(ManualClock::new(START));
    let host = EmbeddedGroupHost::open_with_clock(&store, clock.clone()).expect("open host");
    Box::new(Sled {
        host: Some(host),
        store: Some(store),
        clock,
        path,
        _dir: dir,
    })
}

group_suite!(sled);

#[test]
fn a_tampered_group_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let host = EmbeddedGroupHost::open(&store).unwrap();
        host.seed_demo().unwrap();
        host.reserve(&reserve(CARD, 0, 1_000, "x#1")).unwrap();
        // Change the quota without a ledger entry, keeping a valid checksum.
        let tree = store.tree(GROUP_TREE).unwrap();
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
