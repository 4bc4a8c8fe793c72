//! The daemon's sled database and the durable flush that closes sled's fsync gap.
//!
//! The money journal, operators and the audit log live in one sled 0.34
//! database in the configured data directory; each module opens its own tree through
//! [`Store::tree`].
//!
//! **Why [`Store::durable_flush`] exists.** sled 0.34's `flush()` is not a full fsync on Linux:
//! without io_uring, `pagecache/iobuf.rs` calls `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`,
//! which pushes the pages out but neither the file's metadata nor the drive's write cache, and
//! only falls back to `sync_all` on `ENOSYS` (sled issue #1452, "Data is not written durably",
//! still open). So a write that was merely flushed can be lost on power failure. Every write
//! that cardd acknowledges therefore goes through `durable_flush`: sled's own `flush()` first
//! (so the log is complete in the page cache), then `File::sync_all` (fsync) on every regular
//! file in the database directory, recursively, and finally on each directory, so that newly
//! created files (segments, snapshots, blobs) are reachable after a crash as well.
//!
//! **Known gap.** sled 0.34 is beta software and has open corruption reports after kills
//! (#1533, #1527, #1509); the fsync here closes the durability gap, not those. Callers that
//! need integrity on top (the audit log) keep their own hash chain.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::RngCore;

/// How deep [`Store::durable_flush`] descends below the database directory. sled 0.34 uses
/// one level (`blobs/`); the margin is for files sled may add, and the bound keeps a stray
/// symlink loop or a deep tree from making the flush unbounded.
pub const STORE_DIR_DEPTH_MAX: usize = 4;

/// How many directory entries [`Store::durable_flush`] visits at most, in total. A sled
/// database has a handful of files plus one per large value; far beyond that, something
/// other than cardd writes into the directory and the flush stops with an error.
pub const STORE_DIR_ENTRIES_MAX: usize = 100_000;

/// Random bytes in the name of a [`Store::temporary`] directory.
const TEMPORARY_NAME_BYTES: usize = 8;

/// A failure of the database or of syncing it to disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error(
        "could not open the database in {path}: {source}; check that the directory is writable \
         and that no other cardd process is using it"
    )]
    Open {
        /// The database directory.
        path: PathBuf,
        /// What sled or the file system reported.
        source: sled::Error,
    },
    /// A read or write inside sled failed.
    #[error(
        "database error: {0}; retry once, and if it persists stop cardd and check the data \
         directory and the disk"
    )]
    Sled(#[from] sled::Error),
    /// Syncing a file or directory to disk failed, so the last write may not be durable.
    #[error(
        "could not sync {path} to disk: {source}; the last change may not survive a power \
         failure, check that the disk is not full or failing"
    )]
    Sync {
        /// The file or directory that failed.
        path: PathBuf,
        /// What the file system reported.
        source: io::Error,
    },
    /// An earlier sync to disk failed: the store refuses every durable write from then on.
    #[error(
        "an earlier sync of {path} to disk failed ({first}); cardd never retries a failed sync          (the kernel reports a writeback error once and may drop the unwritten pages), so it has          stopped money operations: stop cardd, check the disk, and start it again (open loads          are then settled from their cards)"
    )]
    FailedClosed {
        /// The database directory.
        path: PathBuf,
        /// The first failure.
        first: String,
    },
    /// Every attempt of a copy ([`Store::copy_to`]) saw a write: no copy of one moment.
    #[error(
        "the database in {path} was written to during each of {attempts} attempts to copy it; \
         try again when the counters are idle"
    )]
    Busy {
        /// The database directory.
        path: PathBuf,
        /// Attempts made.
        attempts: u32,
    },
    /// The database directory holds more entries than [`STORE_DIR_ENTRIES_MAX`].
    #[error(
        "the database directory {path} holds more than {STORE_DIR_ENTRIES_MAX} entries; remove \
         files that cardd did not create there"
    )]
    TooManyEntries {
        /// The database directory.
        path: PathBuf,
    },
}

/// The daemon's database: a sled `Db` in one directory. Cloning is cheap and shares the `Db`.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: sled::Db,
    dir: PathBuf,
    flushes: Arc<Flushes>,
}

/// Counters of [`Store::durable_flush`], for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Calls of `durable_flush` that returned `Ok`.
    pub requests: u64,
    /// Flush rounds run (sled flush plus fsyncs); with concurrent callers one round serves many.
    pub rounds: u64,
    /// Time spent in flush rounds.
    pub busy: Duration,
}

impl FlushStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &FlushStats) -> FlushStats {
        FlushStats {
            requests: self.requests.saturating_sub(earlier.requests),
            rounds: self.rounds.saturating_sub(earlier.rounds),
            busy: self.busy.saturating_sub(earlier.busy),
        }
    }
}

/// The writes made before a point in time, for [`Store::wait_durable`]: a ticket of the group
/// commit, taken by [`Store::write_mark`] after the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteMark(u64);

/// A callback told the duration of every flush round (the daemon's metrics).
pub type FlushObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// Shared by the clones of one [`Store`]: the group commit, flush counters, the round observer.
#[derive(Default)]
struct Flushes {
    group: Mutex<Group>,
    /// Signalled when a round ends.
    done: Condvar,
    stats: Mutex<FlushStats>,
    observer: OnceLock<FlushObserver>,
    /// Test support (fault injection): of the next flush rounds, how many succeed first and
    /// how many then fail.
    failing: Mutex<(u32, u32)>,
    /// The first sync failure: once set, every later `durable_flush` fails without syncing.
    failed: OnceLock<String>,
}

/// The group commit's state.
#[derive(Debug, Default)]
struct Group {
    /// The next ticket to hand out; a caller's writes precede its ticket.
    next_ticket: u64,
    /// Every ticket below this one is durable.
    durable_below: u64,
    /// A round is running.
    flushing: bool,
}

impl std::fmt::Debug for Store {
    /// Shows the directory only: sled's own `Debug` dumps every tree, password hashes included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if missing) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            source: sled::Error::Io(e),
        })?;
        let config = sled::Config::new().path(dir);
        Store::from_config(config, dir.to_path_buf())
    }

    /// Opens a fresh database in a new directory under the system temporary directory; sled
    /// deletes the directory when the last clone is dropped. For tests.
    pub fn temporary() -> Result<Store, StoreError> {
        let mut name = [0u8; TEMPORARY_NAME_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut name)
            .map_err(|e| StoreError::Open {
                path: std::env::temp_dir(),
                source: sled::Error::Io(io::Error::other(e.to_string())),
            })?;
        let dir = std::env::temp_dir().join(format!("cardd-store-{}", hex::encode(name)));
        let config = sled::Config::new().path(&dir).temporary(true);
        Store::from_config(config, dir)
    }

    fn from_config(config: sled::Config, dir: PathBuf) -> Result<Store, StoreError> {
        let db = config.open().map_err(|source| StoreError::Open {
            path: dir.clone(),
            source,
        })?;
        let store = Store {
            db,
            dir,
            flushes: Arc::new(Flushes::default()),
        };
        // The directory itself may be new: make its entry in the parent durable too.
        if let Some(parent) = store.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_directory(parent)?;
        }
        Ok(store)
    }

    /// The directory the database lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (creating if missing) the tree called `name`.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// The first sync failure, once one happened: the store is failed closed.
    pub fn failed_closed(&self) -> Option<&str> {
        self.flushes.failed.get().map(String::as_str)
    }

    fn refuse_if_failed(&self) -> Option<StoreError> {
        self.flushes
            .failed
            .get()
            .map(|first| StoreError::FailedClosed {
                path: self.dir.clone(),
                first: first.clone(),
            })
    }

    /// Makes every write so far durable: sled's `flush()`, then fsync of every file in the
    /// database directory and of the directories themselves (see the module doc for why).
    ///
    /// **Group commit.** Concurrent callers share flush rounds: a caller that arrives while a
    /// round runs waits for it to end, then one of the callers that arrived meanwhile runs the
    /// next round for all of them. A caller returns `Ok` only after a round that *started after
    /// it called* completed without error, so everything it wrote before calling is durable;
    /// a failed round fails every caller it covered.
    ///
    /// A caller that must not wait now can take a [`Store::write_mark`] after its writes and
    /// [`Store::wait_durable`] for it later; any round that starts after the mark covers it.
    ///
    /// **Fail closed.** A failed sync is never retried and never called durable: Linux reports
    /// a writeback error once and may drop the dirty pages, so a later "successful" fsync would
    /// prove nothing. After the first failure every call fails with
    /// [`StoreError::FailedClosed`] until the process is restarted.
    pub fn durable_flush(&self) -> Result<(), StoreError> {
        if let Some(refused) = self.refuse_if_failed() {
            return Err(refused);
        }
        let mark = self.write_mark();
        self.wait_durable(mark)
    }

    /// Marks the writes made so far, for [`Store::wait_durable`] later: the caller writes, takes
    /// a mark, goes on with other work (whose own durable flushes cover the marked writes as
    /// well), and waits for the mark only when it must answer. Taking a mark costs a lock, no
    /// I/O.
    pub fn write_mark(&self) -> WriteMark {
        let mut group = lock(&self.flushes.group);
        // Whatever this caller wrote happened before it took its ticket (under the lock).
        let ticket = group.next_ticket;
        group.next_ticket += 1;
        WriteMark(ticket)
    }

    /// Waits until the writes made before `mark` was taken are durable: returns `Ok` once a flush
    /// round that started after the mark completed without error (whoever ran it: another
    /// caller's [`Store::durable_flush`] covers the mark too), running a round itself if none
    /// is running. Fails if the round that would have covered the mark failed, or if the store
    /// failed closed before any round covered it; a mark covered by a successful round stays
    /// `Ok` even after a later failure.
    pub fn wait_durable(&self, mark: WriteMark) -> Result<(), StoreError> {
        let flushes = &self.flushes;
        let ticket = mark.0;
        let mut group = lock(&flushes.group);
        loop {
            if group.durable_below > ticket {
                drop(group);
                lock(&flushes.stats).requests += 1;
                return Ok(());
            }
            if !group.flushing {
                // A failed round is never retried: the pages it could not write may be gone.
                if let Some(refused) = self.refuse_if_failed() {
                    return Err(refused);
                }
                group.flushing = true;
                // The round covers every ticket taken so far: their writes are all done.
                let covers = group.next_ticket;
                drop(group);
                let started = Instant::now();
                let result = if self.injected_failure() {
                    Err(StoreError::Sync {
                        path: self.dir.clone(),
                        source: io::Error::other("injected flush failure"),
                    })
                } else {
                    self.flush_round()
                };
                let took = started.elapsed();
                let mut group = lock(&flushes.group);
                group.flushing = false;
                match &result {
                    Ok(()) => group.durable_below = group.durable_below.max(covers),
                    Err(e) => {
                        if flushes.failed.set(e.to_string()).is_ok() {
                            tracing::error!(error = %e, dir = %self.dir.display(), "a sync to disk failed: the store refuses durable writes from now on (fail closed)");
                        }
                    }
                }
                drop(group);
                flushes.done.notify_all();
                if let Some(observe) = flushes.observer.get() {
                    observe(took);
                }
                let mut stats = lock(&flushes.stats);
                stats.rounds += 1;
                stats.busy += took;
                if result.is_ok() {
                    stats.requests += 1;
                }
                return result;
            }
            group = flushes.done.wait(group).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Test support: whether the round starting now fails by injection (see
    /// [`Store::fail_flushes_for_test`]).
    fn injected_failure(&self) -> bool {
        let mut failing = lock(&self.flushes.failing);
        match *failing {
            (0, 0) => false,
            (0, fail) => {
                failing.1 = fail - 1;
                true
            }
            (skip, _) => {
                failing.0 = skip - 1;
                false
            }
        }
    }

    /// One flush round: sled's flush, then fsync of every file and directory.
    fn flush_round(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        let mut entries_left = STORE_DIR_ENTRIES_MAX;
        sync_dir_recursive(&self.dir, STORE_DIR_DEPTH_MAX, &mut entries_left)
            .map_err(|e| e.with_root(&self.dir))
    }

    /// Counters of durable flushes since the database was opened.
    pub fn flush_stats(&self) -> FlushStats {
        *lock(&self.flushes.stats)
    }

    /// Test support: after `skip` more flush rounds succeed, makes the following `fail` rounds
    /// fail as a failed fsync would (the writes before them stay in sled's memory, not known to
    /// be durable, and the store fails closed). A round is what one lone
    /// [`Store::durable_flush`] call runs; concurrent callers share rounds.
    #[doc(hidden)]
    pub fn fail_flushes_for_test(&self, skip: u32, fail: u32) {
        *lock(&self.flushes.failing) = (skip, fail);
    }

    /// Sets the callback told each flush round's duration (once; later calls are ignored).
    pub fn observe_flushes(&self, observer: FlushObserver) {
        let _ = self.flushes.observer.set(observer);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StoreError {
    /// Reports an exhausted entry budget against the database directory rather than a subfolder.
    fn with_root(self, root: &Path) -> StoreError {
        match self {
            StoreError::TooManyEntries { .. } => StoreError::TooManyEntries {
                path: root.to_path_buf(),
            },
            other => other,
        }
    }
}

/// Fsyncs the regular files in `dir` (descending `depth_left` more levels), then `dir` itself.
fn sync_dir_recursive(
    dir: &Path,
    depth_left: usize,
    entries_left: &mut usize,
) -> Result<(), StoreError> {
    let sync_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Sync { path, source }
    };
    for entry in fs::read_dir(dir).map_err(sync_err(dir))? {
        let entry = entry.map_err(sync_err(dir))?;
        *entries_left = entries_left
            .checked_sub(1)
            .ok_or_else(|| StoreError::TooManyEntries {
                path: dir.to_path_buf(),
            })?;
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(sync_err(&path)(e)),
        };
        if file_type.is_file() {
            sync_file(&path)?;
        } else if file_type.is_dir() && depth_left > 0 {
            sync_dir_recursive(&path, depth_left - 1, entries_left)?;
        }
    }
    sync_directory(dir)
}

/// Fsyncs one regular file. A file that vanished meanwhile (sled removes old snapshots and
/// blobs on its own) needs no syncing.
pub(crate) fn sync_file(path: &Path) -> Result<(), StoreError> {
    let result = File::open(path).and_then(|file| file.sync_all());
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|source| StoreError::Sync {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
#[cfg(unix)]
pub(crate) fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|source| StoreError::Sync {
            path: dir.to_path_buf(),
            source,
        })
}

/// Windows cannot open a directory as a file without extra flags, and NTFS journals
/// directory entries itself, so there is nothing to do.
#[cfg(not(unix))]
pub(crate) fn sync_directory(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_flush_then_reopen_keeps_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_dir = dir.path().join("db");
        {
            let store = Store::open(&db_dir).expect("open");
            let tree = store.tree("t").expect("tree");
            tree.insert(b"key", b"value".as_slice()).expect("insert");
            store.durable_flush().expect("durable flush");
        }
        let store = Store::open(&db_dir).expect("reopen");
        let tree = store.tree("t").expect("tree");
        assert_eq!(
            tree.get(b"key").expect("get").as_deref(),
            Some(b"value".as_slice())
        );
        store.durable_flush().expect("durable flush after reopen");
    }

    #[test]
    fn concurrent_durable_flushes_share_rounds_and_all_writes_survive() {
        const WRITERS: usize = 16;
        let dir = tempfile::tempdir().expect("tempdir");
        let db_dir = dir.path().join("db");
        {
            let store = Store::open(&db_dir).expect("open");
            let threads: Vec<_> = (0..WRITERS)
                .map(|i| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        let tree = store.tree("t").expect("tree");
                        for round in 0..4 {
                            let key = format!("{i}-{round}");
                            tree.insert(key.as_bytes(), b"v".as_slice())
                                .expect("insert");
                            store.durable_flush().expect("durable flush");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("writer");
            }
            let stats = store.flush_stats();
            assert_eq!(
                stats.requests,
                (WRITERS * 4) as u64,
                "every call is answered"
            );
            assert!(
                stats.rounds >= 1 && stats.rounds <= stats.requests,
                "{stats:?}"
            );
        }
        let store = Store::open(&db_dir).expect("reopen");
        let tree = store.tree("t").expect("tree");
        assert_eq!(tree.len(), WRITERS * 4, "every acknowledged write is there");
    }

    #[test]
    fn a_failed_round_fails_every_caller_it_covered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_dir = dir.path().join("db");
        let store = Store::open(&db_dir).expect("open");
        store
            .tree("t")
            .expect("tree")
            .insert(b"k", b"v".as_slice())
            .expect("insert");
        fs::remove_dir_all(&db_dir).expect("remove the directory under sled");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.durable_flush())
            })
            .collect();
        for t in threads {
            let result = t.join().expect("caller");
            assert!(result.is_err(), "a flush that cannot sync is never Ok");
        }
        assert_eq!(store.flush_stats().requests, 0);
    }

    #[test]
    fn a_failed_sync_fails_the_store_closed_and_is_never_retried() {
        let store = Store::temporary().expect("temporary");
        let tree = store.tree("t").expect("tree");
        tree.insert(b"k", b"v".as_slice()).expect("insert");
        store.durable_flush().expect("a healthy flush");
        store.fail_flushes_for_test(0, 1);
        assert!(matches!(
            store.durable_flush(),
            Err(StoreError::Sync { .. })
        ));
        assert!(store.failed_closed().is_some());
        let rounds = store.flush_stats().rounds;
        for _ in 0..3 {
            let err = store.durable_flush().expect_err("never durable again");
            assert!(matches!(err, StoreError::FailedClosed { .. }), "{err}");
            assert!(err.to_string().contains("never retries"), "{err}");
        }
        assert_eq!(
            store.flush_stats().rounds,
            rounds,
            "no sync was tried again"
        );
    }

    #[test]
    fn a_mark_is_made_durable_by_a_later_callers_round() {
        let store = Store::temporary().expect("temporary");
        let tree = store.tree("t").expect("tree");
        tree.insert(b"run", b"1".as_slice()).expect("insert");
        let mark = store.write_mark();
        tree.insert(b"intent", b"2".as_slice()).expect("insert");
        store.durable_flush().expect("the later write's flush");
        let rounds = store.flush_stats().rounds;
        store
            .wait_durable(mark)
            .expect("covered by the later round");
        assert_eq!(store.flush_stats().rounds, rounds, "no round of its own");
        // A mark not yet covered runs its own round.
        tree.insert(b"end", b"3".as_slice()).expect("insert");
        let mark = store.write_mark();
        store.wait_durable(mark).expect("its own round");
        assert_eq!(store.flush_stats().rounds, rounds + 1);
    }

    #[test]
    fn a_mark_fails_with_the_round_that_would_cover_it_and_so_do_later_writes() {
        let store = Store::temporary().expect("temporary");
        let tree = store.tree("t").expect("tree");
        let durable = store.write_mark();
        store.wait_durable(durable).expect("a healthy round");
        tree.insert(b"run", b"1".as_slice()).expect("insert");
        let mark = store.write_mark();
        store.fail_flushes_for_test(0, 1);
        assert!(matches!(
            store.wait_durable(mark),
            Err(StoreError::Sync { .. })
        ));
        tree.insert(b"intent", b"2".as_slice()).expect("insert");
        let err = store.durable_flush().expect_err("failed closed");
        assert!(matches!(err, StoreError::FailedClosed { .. }), "{err}");
        let err = store.wait_durable(mark).expect_err("never durable");
        assert!(matches!(err, StoreError::FailedClosed { .. }), "{err}");
        store
            .wait_durable(durable)
            .expect("what a successful round covered stays durable");
    }

    #[test]
    fn temporary_store_works_and_is_removed_on_drop() {
        let store = Store::temporary().expect("temporary");
        let dir = store.dir().to_path_buf();
        store
            .tree("t")
            .expect("tree")
            .insert(b"k", b"v".as_slice())
            .expect("insert");
        store.durable_flush().expect("durable flush");
        assert!(dir.is_dir());
        drop(store);
        assert!(!dir.exists(), "sled removes a temporary database on drop");
    }

    #[test]
    fn sync_descends_into_subdirectories_within_the_depth_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a").join("b");
        fs::create_dir_all(&nested).expect("mkdir");
        fs::write(nested.join("f"), b"x").expect("write");
        let mut entries_left = STORE_DIR_ENTRIES_MAX;
        sync_dir_recursive(dir.path(), STORE_DIR_DEPTH_MAX, &mut entries_left).expect("sync");
        assert_eq!(entries_left, STORE_DIR_ENTRIES_MAX - 3);
    }

    #[test]
    fn sync_reports_the_entry_bound_and_missing_directories_as_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), b"x").expect("write");
        let mut entries_left = 0;
        let err =
            sync_dir_recursive(dir.path(), STORE_DIR_DEPTH_MAX, &mut entries_left).unwrap_err();
        assert!(matches!(err, StoreError::TooManyEntries { .. }), "{err}");
        let mut entries_left = STORE_DIR_ENTRIES_MAX;
        let err =
            sync_dir_recursive(&dir.path().join("missing"), 1, &mut entries_left).unwrap_err();
        assert!(matches!(err, StoreError::Sync { .. }), "{err}");
    }
}
