//! A consistent copy of a live [`Store`] (backups) and of a closed one's files (restores).
//!
//! sled 0.34 has no snapshot across trees, and copying the files of an open database is not
//! safe. [`Store::copy_to`] therefore copies tree by tree into a fresh database while a
//! subscriber watches every tree: an attempt during which anything was written is thrown away
//! and made again, so a finished copy is the state of one moment. Plain files kept beside the
//! database (the sealed audit segments) are copied in the same attempt. Each attempt is
//! bounded by the store's size; a store written to without pause for
//! [`COPY_ATTEMPTS_MAX`] attempts is refused with [`StoreError::Busy`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::store::{sync_directory, sync_file, Store, StoreError, STORE_DIR_ENTRIES_MAX};

/// How many times [`Store::copy_to`] copies a store that is written to during the copy.
pub const COPY_ATTEMPTS_MAX: u32 = 10;

/// How long [`Store::copy_to`] waits after an attempt for a write that had begun during it.
const WRITE_SETTLE: Duration = Duration::from_millis(20);

/// Keys written to the copy per sled batch.
const COPY_BATCH_KEYS: usize = 1_000;

/// What [`Store::copy_to`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Keys per tree, by tree name (sled's default tree included).
    pub trees: BTreeMap<String, u64>,
    /// Plain files copied from the directories named by the caller.
    pub files: u64,
    /// Bytes of keys, values and files copied.
    pub bytes: u64,
    /// Attempts made (1 when nothing was written during the first).
    pub attempts: u32,
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Sync {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Copies every tree, and the plain files in the subdirectories `file_dirs` of the
    /// database directory, into a new database at `dest` (which must not exist), durably. The
    /// copy is of one moment: see the module documentation.
    pub fn copy_to(&self, dest: &Path, file_dirs: &[&str]) -> Result<CopyStats, StoreError> {
        if dest.exists() {
            return Err(io_error(
                dest,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the copy's directory already exists; name a new one",
                ),
            ));
        }
        for attempt in 1..=COPY_ATTEMPTS_MAX {
            let mut watched = Vec::new();
            let names = self.db.tree_names();
            for name in &names {
                watched.push(self.db.open_tree(name)?.watch_prefix(vec![]));
            }
            let result = self.copy_once(dest, &names, file_dirs, &mut watched);
            // A write that began during the copy completes within the settle time.
            let written = |w: &mut Vec<sled::Subscriber>| {
                w.iter_mut().any(|s| s.next_timeout(WRITE_SETTLE).is_ok())
            };
            match result {
                Ok(Some(mut stats)) if !written(&mut watched) => {
                    stats.attempts = attempt;
                    return Ok(stats);
                }
                Ok(_) => {
                    tracing::debug!(
                        attempt,
                        "the store was written during the copy; copying again"
                    );
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(dest);
                    return Err(e);
                }
            }
            drop(watched);
            fs::remove_dir_all(dest).map_err(|e| io_error(dest, e))?;
            std::thread::sleep(WRITE_SETTLE * attempt);
        }
        Err(StoreError::Busy {
            path: self.dir().to_path_buf(),
            attempts: COPY_ATTEMPTS_MAX,
        })
    }

    /// One attempt: the copy, or `None` as soon as a watcher saw a write (checked after every
    /// batch, which also keeps the watchers' queues short: sled makes a writer wait while a
    /// watcher's queue is full).
    fn copy_once(
        &self,
        dest: &Path,
        names: &[sled::IVec],
        file_dirs: &[&str],
        watched: &mut [sled::Subscriber],
    ) -> Result<Option<CopyStats>, StoreError> {
        let seen_write = |w: &mut [sled::Subscriber]| {
            w.iter_mut().any(|s| s.next_timeout(Duration::ZERO).is_ok())
        };
        let mut stats = CopyStats::default();
        {
            let copy =
                sled::Config::new()
                    .path(dest)
                    .open()
                    .map_err(|source| StoreError::Open {
                        path: dest.to_path_buf(),
                        source,
                    })?;
            for name in names {
                let from = self.db.open_tree(name)?;
                let to = copy.open_tree(name)?;
                let mut keys = 0u64;
                let mut batch = sled::Batch::default();
                let mut in_batch = 0;
                for item in from.iter() {
                    let (key, value) = item?;
                    stats.bytes += (key.len() + value.len()) as u64;
                    batch.insert(key, value);
                    keys += 1;
                    in_batch += 1;
                    if in_batch == COPY_BATCH_KEYS {
                        to.apply_batch(std::mem::take(&mut batch))?;
                        in_batch = 0;
                        if seen_write(watched) {
                            return Ok(None);
                        }
                    }
                }
                to.apply_batch(batch)?;
                stats
                    .trees
                    .insert(String::from_utf8_lossy(name).into_owned(), keys);
            }
            copy.flush()?;
        }
        for dir in file_dirs {
            let (files, bytes) = copy_files(&self.dir().join(dir), &dest.join(dir))?;
            stats.files += files;
            stats.bytes += bytes;
        }
        sync_tree(dest)?;
        Ok(Some(stats))
    }
}

/// Copies the regular files directly in `from` (if it exists) into `to`, durably: sizes and
/// counts. At most [`STORE_DIR_ENTRIES_MAX`] entries.
pub fn copy_files(from: &Path, to: &Path) -> Result<(u64, u64), StoreError> {
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_error(from, e)),
    };
    fs::create_dir_all(to).map_err(|e| io_error(to, e))?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for (n, entry) in entries.enumerate() {
        if n >= STORE_DIR_ENTRIES_MAX {
            return Err(StoreError::TooManyEntries {
                path: from.to_path_buf(),
            });
        }
        let entry = entry.map_err(|e| io_error(from, e))?;
        let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        if !kind.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        bytes += fs::copy(entry.path(), &target).map_err(|e| io_error(&target, e))?;
        sync_file(&target)?;
        files += 1;
    }
    sync_directory(to)?;
    Ok((files, bytes))
}

/// Copies the directory tree `from` into `to` (which must not exist): regular files and
/// directories, at most [`STORE_DIR_ENTRIES_MAX`] entries, durably. For a closed database
/// (restoring a backup); never for an open one.
pub fn copy_closed(from: &Path, to: &Path) -> Result<u64, StoreError> {
    let mut left = STORE_DIR_ENTRIES_MAX;
    let bytes = copy_closed_inner(from, to, &mut left)?;
    if let Some(parent) = to.parent() {
        sync_directory(parent)?;
    }
    Ok(bytes)
}

fn copy_closed_inner(from: &Path, to: &Path, left: &mut usize) -> Result<u64, StoreError> {
    fs::create_dir(to).map_err(|e| io_error(to, e))?;
    let mut bytes = 0;
    for entry in fs::read_dir(from).map_err(|e| io_error(from, e))? {
        *left = left
            .checked_sub(1)
            .ok_or_else(|| StoreError::TooManyEntries {
                path: from.to_path_buf(),
            })?;
        let entry = entry.map_err(|e| io_error(from, e))?;
        let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            bytes += copy_closed_inner(&entry.path(), &target, left)?;
        } else if kind.is_file() {
            bytes += fs::copy(entry.path(), &target).map_err(|e| io_error(&target, e))?;
            sync_file(&target)?;
        }
    }
    sync_directory(to)?;
    Ok(bytes)
}

/// Fsyncs every file and directory below `dir` (a fresh copy).
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    let mut left = STORE_DIR_ENTRIES_MAX;
    sync_tree_inner(dir, &mut left)?;
    if let Some(parent) = dir.parent() {
        sync_directory(parent)?;
    }
    Ok(())
}

fn sync_tree_inner(dir: &Path, left: &mut usize) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        *left = left
            .checked_sub(1)
            .ok_or_else(|| StoreError::TooManyEntries {
                path: dir.to_path_buf(),
            })?;
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        if kind.is_dir() {
            sync_tree_inner(&entry.path(), left)?;
        } else if kind.is_file() {
            sync_file(&entry.path())?;
        }
    }
    sync_directory(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_every_tree_and_the_files_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.tree("a").unwrap().insert("k1", "v1").unwrap();
        store.tree("b").unwrap().insert("k2", "v2").unwrap();
        fs::create_dir_all(dir.path().join("db/segs")).unwrap();
        fs::write(dir.path().join("db/segs/one"), "sealed").unwrap();
        let stats = store.copy_to(&dir.path().join("copy"), &["segs"]).unwrap();
        assert_eq!(stats.trees["a"], 1);
        assert_eq!(stats.files, 1);
        assert_eq!(stats.attempts, 1);
        drop(store);
        let copy = Store::open(&dir.path().join("copy")).unwrap();
        assert_eq!(copy.tree("b").unwrap().get("k2").unwrap().unwrap(), "v2");
        assert_eq!(
            fs::read_to_string(dir.path().join("copy/segs/one")).unwrap(),
            "sealed"
        );
        // An existing target is never overwritten.
        assert!(copy.copy_to(&dir.path().join("copy"), &[]).is_err());
    }

    #[test]
    fn a_copy_made_while_another_thread_writes_is_of_one_moment() {
        let store = Store::temporary().unwrap();
        let tree = store.tree("t").unwrap();
        for n in 0..2_000u32 {
            tree.insert(n.to_be_bytes(), &[0u8; 64][..]).unwrap();
        }
        // A writer that always writes a pair of keys: a copy of one moment holds both or none.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (tree, stop) = (tree.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 50 {
                    tree.transaction(|t| {
                        t.insert(format!("pair/{n}/a").as_bytes(), "x")?;
                        t.insert(format!("pair/{n}/b").as_bytes(), "x")?;
                        Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_millis(15));
                }
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let result = store.copy_to(&dir.path().join("copy"), &[]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        let stats = match result {
            Ok(stats) => stats,
            // Written to throughout every attempt: refused, and no partial copy is left.
            Err(StoreError::Busy { .. }) => {
                assert!(!dir.path().join("copy").exists());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let copy = Store::open(&dir.path().join("copy")).unwrap();
        let copied = copy.tree("t").unwrap();
        let pairs = copied.scan_prefix("pair/").count();
        assert_eq!(pairs % 2, 0, "a copy of one moment never splits a pair");
        assert_eq!(stats.trees["t"], copied.len() as u64);
    }
}
