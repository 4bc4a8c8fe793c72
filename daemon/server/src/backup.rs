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
//! **Restore** ([`restore`], daemon stopped): refuses a backup that is older than the data it
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

use cardd_journal::{Journal, Store, Suspect};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditLog, SEGMENTS_DIR};
use crate::datadir::{self, DataDirError, BACKUPS_DIR, DATA_FORMAT, RESTORING_DIR, STORE_DIR};

/// The manifest's file name in a backup.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's `kind`.
pub const BACKUP_KIND: &str = "cardd-backup";
/// The manifest format this cardd writes.
pub const MANIFEST_VERSION: u32 = 1;
/// Bytes of a manifest read at most.
const MANIFEST_BYTES_MAX: u64 = 64 * 1024;
/// Unloaded records one restore names as suspects at most.
pub const RESTORE_SUSPECTS_MAX: usize = cardd_journal::restored::SUSPECTS_MAX;

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

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a database's positions, verifying the journal and the audit chain.
fn positions(store: &Store) -> Result<(JournalPosition, AuditPosition, bool), String> {
    let journal = Journal::open(store).map_err(|e| format!("journal: {e}"))?;
    let transactions = journal.verify().map_err(|e| format!("journal: {e}"))?;
    let open = journal
        .list_open()
        .map_err(|e| format!("journal: {e}"))?
        .len() as u64;
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

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub backup_created_at: String,
    pub forced: bool,
    /// Recharge records the restored data shows as not loaded: each is checked on its card.
    pub suspects: u64,
    /// Where the replaced data was moved, if there was any.
    pub replaced_to: Option<PathBuf>,
}

/// Restores the backup in `src` into `data_dir` (the daemon must be stopped). `fleet` is
/// whether the recharge records live at a central host (then nothing local is a suspect; the
/// host checks every load against the card's counters). See the module documentation.
pub fn restore(
    data_dir: &Path,
    src: &Path,
    force: bool,
    fleet: bool,
) -> Result<RestoreReport, BackupError> {
    let manifest = read_manifest(src)?;
    // The current data: opening it also proves no daemon is using it.
    let current = datadir::open_store(data_dir)?;
    let mut current_has_data = true;
    match positions(&current) {
        Ok((journal, audit, _)) => {
            current_has_data = journal.transactions > 0 || audit.records > 0;
            let mut newer = Vec::new();
            if journal.transactions > manifest.journal.transactions {
                newer.push(format!(
                    "{} load transactions, the backup {}",
                    journal.transactions, manifest.journal.transactions
                ));
            }
            if audit.records > manifest.audit.records {
                newer.push(format!(
                    "{} audit records, the backup {}",
                    audit.records, manifest.audit.records
                ));
            }
            if !newer.is_empty() && !force {
                return Err(BackupError::CurrentIsNewer {
                    dir: data_dir.to_path_buf(),
                    backup_at: manifest.created_at,
                    detail: newer.join("; "),
                });
            }
        }
        Err(reason) if !force => {
            return Err(BackupError::CurrentUnreadable {
                dir: data_dir.to_path_buf(),
                reason,
            })
        }
        Err(_) => {}
    }
    drop(current);

    let restoring = data_dir.join(RESTORING_DIR);
    if restoring.exists() {
        fs::remove_dir_all(&restoring).map_err(io_err(&restoring))?;
    }
    cardd_journal::copy::copy_closed(&src.join(STORE_DIR), &restoring)?;
    let suspects = {
        let store = Store::open(&restoring)?;
        let journal = Journal::open(&store).map_err(|e| BackupError::CopyCheck {
            path: restoring.clone(),
            reason: e.to_string(),
        })?;
        let suspects = if fleet {
            Vec::new()
        } else {
            let host =
                cardd_store::EmbeddedHost::open(&store).map_err(|e| BackupError::CopyCheck {
                    path: restoring.clone(),
                    reason: e.to_string(),
                })?;
            let records = host
                .records_not_loaded(RESTORE_SUSPECTS_MAX + 1)
                .map_err(|e| BackupError::Restore(e.to_string()))?;
            records
                .into_iter()
                .filter_map(|r| {
                    Some(Suspect {
                        card_number: r.card_number,
                        funding: cardd_journal::Funding::EtcRecord {
                            record_id: r.record_id,
                        },
                        amount_fen: u32::try_from(r.amount_fen).ok()?,
                    })
                })
                .collect()
        };
        journal
            .enter_restored_mode(&manifest.created_at, force, &suspects)
            .map_err(|e| BackupError::Restore(e.to_string()))?;
        let audit = AuditLog::open(&store).map_err(|e| BackupError::CopyCheck {
            path: restoring.clone(),
            reason: e.to_string(),
        })?;
        audit
            .append(AuditEntry {
                operator: None,
                role: None,
                action: "data.restore".into(),
                target: Some(src.display().to_string()),
                detail: serde_json::json!({
                    "via": "cardd restore (offline)",
                    "backup_created_at": manifest.created_at,
                    "backup_cardd_version": manifest.cardd_version,
                    "forced": force,
                    "suspects": suspects.len(),
                    "restored_by": datadir::this_cardd(),
                }),
                outcome: "ok".into(),
            })
            .map_err(|e| BackupError::Restore(e.to_string()))?;
        store.durable_flush()?;
        suspects.len() as u64
    };

    // Swap: the current data is kept, never deleted.
    let store_dir = datadir::store_dir(data_dir);
    let replaced_to = if current_has_data && store_dir.exists() {
        let kept = data_dir
            .join(BACKUPS_DIR)
            .join(format!("replaced-by-restore-{}", datadir::stamp()));
        fs::create_dir_all(&kept).map_err(io_err(&kept))?;
        let to = kept.join(STORE_DIR);
        fs::rename(&store_dir, &to).map_err(io_err(&to))?;
        datadir::sync_dir(&kept)?;
        Some(kept)
    } else {
        if store_dir.exists() {
            fs::remove_dir_all(&store_dir).map_err(io_err(&store_dir))?;
        }
        None
    };
    datadir::sync_dir(data_dir)?;
    fs::rename(&restoring, &store_dir).map_err(io_err(&store_dir))?;
    datadir::sync_dir(data_dir)?;
    Ok(RestoreReport {
        backup_created_at: manifest.created_at,
        forced: force,
        suspects,
        replaced_to,
    })
}
