//! Backups and restores of the data directory that keep every card credit exactly-once.
//!
//! **Backup** ([`make_backup`]): a copy of the database of one moment ([`Store::copy_to`],
//! made while the daemon runs), checked after copying (the journal's records and the audit
//! chain), then a `manifest.json` written last: no manifest, no backup. A backup directory:
//!
//! ```text
//! DEST/
//!   store/           the copied database and sealed audit segments
//!   manifest.json    kind, cardd version, data format, time, journal and audit positions
//! ```
//!
//! **Restore** (the `restore` module, daemon stopped): refuses a backup that is older than the data it
//! would replace (the current data has more load transactions or audit records) unless forced.
//! The restored copy is put into restored mode ([`cardd_journal::restored`]) before it
//! replaces anything: every recharge record it shows as not loaded is a suspect, checked
//! against its card's own log before any load reaches that card, so a load made after the
//! backup is never made again. The replaced data is kept in `backups/replaced-by-restore-*`.
//! Every restore, forced or not, enters restored mode: the data since the backup is gone
//! either way.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cardd_journal::{Journal, Store};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditLog, SEGMENTS_DIR};
use crate::datadir::{self, DataDirError, DATA_FORMAT, STORE_DIR};

/// The manifest's file name in a backup.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's `kind`.
pub const BACKUP_KIND: &str = "cardd-backup";
/// The manifest format this cardd writes.
pub const MANIFEST_VERSION: u32 = 1;
/// Bytes of a manifest read at most.
const MANIFEST_BYTES_MAX: u64 = 64 * 1024;

/// Where the journal stood when the backup was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPosition {
    /// Load transactions in the journal.
    pub transactions: u64,
    /// Of them, not yet settled (each blocks its card until its card is presented).
    pub open: u64,
}

/// Where the audit log stood.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPosition {
    /// Records in the (verified) chain.
    pub records: u64,
}

/// A backup's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`BACKUP_KIND`].
    pub kind: String,
    pub manifest_version: u32,
    /// The cardd that made it.
    pub cardd_version: String,
    /// The data directory format of the copied database.
    pub data_format: u32,
    /// When the copy was started (RFC 3339 UTC); the copy is of a moment at or after it.
    pub created_at: String,
    pub journal: JournalPosition,
    pub audit: AuditPosition,
    /// Keys per database tree.
    pub trees: BTreeMap<String, u64>,
    /// Sealed audit segment files.
    pub files: u64,
    pub bytes: u64,
    /// Copy attempts (a write during an attempt starts it again).
    pub copy_attempts: u32,
    /// The copied data was itself in restored mode.
    pub restored_mode: bool,
}

/// Why a backup or restore did not happen. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "{path} already holds files; name a new or empty directory for the backup \
         (nothing was written)"
    )]
    TargetNotEmpty { path: PathBuf },
    #[error("{path} is not a cardd backup ({reason}); name a directory `cardd backup` made")]
    NotABackup { path: PathBuf, reason: String },
    #[error(
        "the backup in {path} was made by {made_by} with data format {format}; this {ours} \
         reads formats up to {DATA_FORMAT}: restore it with that cardd or newer"
    )]
    NewerBackup {
        path: PathBuf,
        made_by: String,
        format: u32,
        ours: String,
    },
    #[error(
        "the data directory {dir} is newer than the backup made at {backup_at} ({detail}): \
         restoring it would lose what happened since. To restore anyway add --force; the \
         current data is then kept in {dir}/backups/ and cardd starts in restored mode"
    )]
    CurrentIsNewer {
        dir: PathBuf,
        backup_at: String,
        detail: String,
    },
    #[error(
        "the data directory {dir} cannot be read ({reason}), so cardd cannot tell whether it \
         is newer than the backup; to replace it anyway add --force (it is kept in \
         {dir}/backups/)"
    )]
    CurrentUnreadable { dir: PathBuf, reason: String },
    #[error("the copy in {path} failed its check: {reason}; nothing was kept, try again")]
    CopyCheck { path: PathBuf, reason: String },
    #[error("{path}: {source}; check the path and that cardd's user may write there")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] cardd_journal::StoreError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{0}")]
    Restore(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a database's positions, verifying the journal and the audit chain.
pub(crate) fn positions(store: &Store) -> Result<(JournalPosition, AuditPosition, bool), String> {
    // Opening verifies every record; the statistics count them in one more pass.
    let journal = Journal::open(store).map_err(|e| format!("journal: {e}"))?;
    let stats = journal.stats().map_err(|e| format!("journal: {e}"))?;
    let (transactions, open) = (stats.transactions, stats.open);
    let restored = journal
        .restored_mode()
        .map_err(|e| format!("journal: {e}"))?
        .is_some();
    let audit = AuditLog::open(store).map_err(|e| format!("audit log: {e}"))?;
    let records = audit
        .verify_chain()
        .map_err(|e| format!("audit log: {e}"))?;
    Ok((
        JournalPosition { transactions, open },
        AuditPosition { records },
        restored,
    ))
}

/// Makes a backup of `store` (open, possibly in use) in `dest`, which must not exist or be
/// empty. `data_format` is the format of the directory `store` belongs to.
pub fn make_backup(store: &Store, dest: &Path, data_format: u32) -> Result<Manifest, BackupError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::TargetNotEmpty {
                    path: dest.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_err(dest))?;
        }
        Err(e) => return Err(io_err(dest)(e)),
    }
    restrict(dest)?;
    let created_at = crate::audit::utc_now_rfc3339();
    let copy_dir = dest.join(STORE_DIR);
    let result = (|| {
        let stats = store.copy_to(&copy_dir, &[SEGMENTS_DIR])?;
        let copy = Store::open(&copy_dir)?;
        let (journal, audit, restored_mode) =
            positions(&copy).map_err(|reason| BackupError::CopyCheck {
                path: copy_dir.clone(),
                reason,
            })?;
        drop(copy);
        let manifest = Manifest {
            kind: BACKUP_KIND.into(),
            manifest_version: MANIFEST_VERSION,
            cardd_version: datadir::this_cardd(),
            data_format,
            created_at,
            journal,
            audit,
            trees: stats.trees,
            files: stats.files,
            bytes: stats.bytes,
            copy_attempts: stats.attempts,
            restored_mode,
        };
        write_manifest(dest, &manifest)?;
        Ok(manifest)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&copy_dir);
    }
    result
}

#[cfg(unix)]
fn restrict(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

#[cfg(not(unix))]
fn restrict(_dir: &Path) -> Result<(), BackupError> {
    Ok(())
}

fn write_manifest(dest: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let path = dest.join(MANIFEST_FILE);
    let partial = dest.join(format!("{MANIFEST_FILE}.partial"));
    let text = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    let mut file = fs::File::create(&partial).map_err(io_err(&partial))?;
    file.write_all(&text).map_err(io_err(&partial))?;
    file.sync_all().map_err(io_err(&partial))?;
    fs::rename(&partial, &path).map_err(io_err(&path))?;
    datadir::sync_dir(dest)?;
    Ok(())
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(src: &Path) -> Result<Manifest, BackupError> {
    let path = src.join(MANIFEST_FILE);
    let not_a_backup = |reason: String| BackupError::NotABackup {
        path: src.to_path_buf(),
        reason,
    };
    let file = fs::File::open(&path).map_err(|e| not_a_backup(format!("{MANIFEST_FILE}: {e}")))?;
    let mut text = Vec::new();
    file.take(MANIFEST_BYTES_MAX)
        .read_to_end(&mut text)
        .map_err(io_err(&path))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| not_a_backup(format!("{MANIFEST_FILE}: {e}")))?;
    if manifest.kind != BACKUP_KIND {
        return Err(not_a_backup(format!("kind {:?}", manifest.kind)));
    }
    if manifest.data_format > DATA_FORMAT || manifest.manifest_version > MANIFEST_VERSION {
        return Err(BackupError::NewerBackup {
            path: src.to_path_buf(),
            made_by: manifest.cardd_version,
            format: manifest.data_format,
            ours: datadir::this_cardd(),
        });
    }
    if !src.join(STORE_DIR).is_dir() {
        return Err(not_a_backup(format!("no {STORE_DIR}/ directory")));
    }
    Ok(manifest)
}
