//! Restoring a backup ([`crate::backup`]) into a stopped daemon's data directory, into
//! restored mode: see the `backup` module's documentation and [`cardd_journal::restored`].

use std::fs;
use std::path::{Path, PathBuf};

use cardd_journal::{Journal, Store, Suspect};
use serde::Serialize;

use crate::audit::{AuditEntry, AuditLog};
use crate::backup::{io_err, positions, read_manifest, BackupError};
use crate::datadir::{self, BACKUPS_DIR, RESTORING_DIR, STORE_DIR};

/// Unloaded records one restore names as suspects at most.
pub const RESTORE_SUSPECTS_MAX: usize = cardd_journal::restored::SUSPECTS_MAX;

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
/// whether the recharge records live at a central host (then nothing local is a suspect: the
/// host keeps the records' status, which the restore does not touch). See the module
/// documentation.
pub fn restore(
    data_dir: &Path,
    src: &Path,
    force: bool,
    fleet: bool,
) -> Result<RestoreReport, BackupError> {
    let manifest = read_manifest(src)?;
    // The current data: opening it also proves no daemon is using it.
    let current = crate::upgrade::open_store(data_dir)?;
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
