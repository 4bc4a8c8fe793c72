//! Opening the data directory: a new one is made at the current format, a current one is
//! opened, an older one is backed up and upgraded first, a newer one is refused (see
//! [`crate::datadir`] for the layout and the formats).

use std::fs;
use std::path::Path;

use cardd_journal::Store;

use crate::datadir::{
    holds_format_1, io_err, is_format_1_name, read_format, stamp, store_dir, sync_dir,
    write_format, DataDirError, BACKUPS_DIR, DATA_FORMAT, MIGRATING_DIR, RESTORING_DIR,
};

/// Opens the database of `data_dir`, creating a new data directory or upgrading an older one
/// first (see the module documentation).
pub fn open_store(data_dir: &Path) -> Result<Store, DataDirError> {
    prepare(data_dir)?;
    Ok(Store::open(&store_dir(data_dir))?)
}

/// Brings `data_dir` to [`DATA_FORMAT`] without opening the database for use.
pub fn prepare(data_dir: &Path) -> Result<(), DataDirError> {
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let format = read_format(data_dir)?;
    let store = store_dir(data_dir);
    let restoring = data_dir.join(RESTORING_DIR);
    if restoring.exists() {
        if !store.exists() {
            // A restore moves the old database away only once its restored copy is complete
            // and durable (in restored mode, audited): the swap stopped halfway, finish it.
            tracing::warn!(dir = %data_dir.display(), "finishing a restore that stopped after it moved the old data away (kept in backups/)");
            fs::rename(&restoring, &store).map_err(io_err(&store))?;
            sync_dir(data_dir)?;
            return prepare(data_dir);
        }
        // A restore stopped before it replaced anything: its copy is of no use.
        tracing::warn!(dir = %restoring.display(), "removing the copy of a restore that stopped before it replaced the data");
        fs::remove_dir_all(&restoring).map_err(io_err(&restoring))?;
    }
    match format {
        Some(f) if f.format == DATA_FORMAT && store.exists() => Ok(()),
        Some(f) if f.format == DATA_FORMAT => {
            fs::create_dir_all(&store).map_err(io_err(&store))?;
            sync_dir(data_dir)
        }
        // Format 1 never had a format file; a lower number than ours would be a future
        // downgrade path and is treated as format 1.
        Some(_) | None => {
            if data_dir.join(MIGRATING_DIR).exists() || holds_format_1(data_dir) {
                upgrade_from_1(data_dir)
            } else if store.exists() {
                // An upgrade or a new directory stopped just before its format file.
                write_format(data_dir, None)
            } else {
                fs::create_dir_all(&store).map_err(io_err(&store))?;
                write_format(data_dir, None)
            }
        }
    }
}

/// Format 1 → 2: backup, move the database's files into `store/`, write the format file.
fn upgrade_from_1(data_dir: &Path) -> Result<(), DataDirError> {
    let migrating = data_dir.join(MIGRATING_DIR);
    if !migrating.exists() {
        let backup = data_dir
            .join(BACKUPS_DIR)
            .join(format!("before-format-{DATA_FORMAT}-{}", stamp()));
        {
            let old = Store::open(data_dir)?;
            crate::backup::make_backup(&old, &backup, 1)
                .map_err(|e| DataDirError::UpgradeBackup(e.to_string()))?;
        }
        tracing::warn!(dir = %data_dir.display(), backup = %backup.display(), "upgrading the data directory from format 1 to format {DATA_FORMAT}; a backup of it was made first");
        fs::create_dir(&migrating).map_err(io_err(&migrating))?;
        sync_dir(data_dir)?;
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(data_dir).map_err(io_err(data_dir))? {
        let entry = entry.map_err(io_err(data_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_format_1_name(&name) {
            names.push(name);
        }
    }
    for name in names {
        let to = migrating.join(&name);
        fs::rename(data_dir.join(&name), &to).map_err(io_err(&to))?;
    }
    sync_dir(&migrating)?;
    sync_dir(data_dir)?;
    let store = store_dir(data_dir);
    fs::rename(&migrating, &store).map_err(io_err(&store))?;
    sync_dir(data_dir)?;
    write_format(data_dir, Some(1))?;
    tracing::warn!(dir = %data_dir.display(), "the data directory is now format {DATA_FORMAT}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadir::{this_cardd, FORMAT_FILE};

    #[test]
    fn a_new_directory_gets_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).unwrap();
        store.tree("t").unwrap().insert("k", "v").unwrap();
        store.durable_flush().unwrap();
        drop(store);
        let format = read_format(dir.path()).unwrap().unwrap();
        assert_eq!(format.format, DATA_FORMAT);
        assert_eq!(format.written_by, this_cardd());
        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.tree("t").unwrap().get("k").unwrap().unwrap(), "v");
    }

    #[test]
    fn a_newer_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let text = "format = 3\nwritten_by = \"cardd 9.1.0\"\nwritten_at = \"x\"\nnew_field = 1\n";
        fs::write(dir.path().join(FORMAT_FILE), text).unwrap();
        let e = open_store(dir.path()).unwrap_err();
        let message = e.to_string();
        assert!(
            matches!(e, DataDirError::Newer { found: 3, .. }),
            "{message}"
        );
        assert!(message.contains("run cardd 9.1.0 or newer"), "{message}");
        assert!(!store_dir(dir.path()).exists());
        assert_eq!(
            fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap(),
            text
        );
    }

    /// A format-1 directory (the database directly in the data directory, no format file, as
    /// cardd wrote it before formats existed), with an audit record and a sealed segment.
    fn format_1_directory(dir: &Path) {
        let store = Store::open(dir).unwrap();
        let audit = crate::audit::AuditLog::open_with(&store, 2).unwrap();
        for n in 0..5 {
            audit
                .append(crate::audit::AuditEntry {
                    operator: None,
                    role: None,
                    action: format!("test.{n}"),
                    target: None,
                    detail: serde_json::json!({}),
                    outcome: "ok".into(),
                })
                .unwrap();
        }
        store.tree("t").unwrap().insert("k", "v").unwrap();
        store.durable_flush().unwrap();
        assert!(dir.join(crate::audit::SEGMENTS_DIR).is_dir());
    }

    #[test]
    fn a_format_1_directory_is_backed_up_then_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        format_1_directory(dir.path());
        let store = open_store(dir.path()).unwrap();
        // The data moved, whole: the tree, the audit chain with its sealed segments.
        assert_eq!(store.tree("t").unwrap().get("k").unwrap().unwrap(), "v");
        let audit = crate::audit::AuditLog::open_with(&store, 2).unwrap();
        assert_eq!(audit.verify_chain().unwrap(), 5);
        drop(audit);
        drop(store);
        let format = read_format(dir.path()).unwrap().unwrap();
        assert_eq!(
            (format.format, format.upgraded_from),
            (DATA_FORMAT, Some(1))
        );
        assert!(!dir.path().join("conf").exists() && !dir.path().join("db").exists());
        // The backup made first is a whole backup of format 1.
        let backups: Vec<_> = fs::read_dir(dir.path().join(BACKUPS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(backups.len(), 1);
        let manifest = crate::backup::read_manifest(&backups[0]).unwrap();
        assert_eq!(manifest.data_format, 1);
        assert_eq!(manifest.audit.records, 5);
        // Opening again changes nothing more.
        drop(open_store(dir.path()).unwrap());
        assert_eq!(
            fs::read_dir(dir.path().join(BACKUPS_DIR)).unwrap().count(),
            1
        );
    }

    #[test]
    fn an_upgrade_stopped_halfway_finishes_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        format_1_directory(dir.path());
        // Stopped after the backup and after moving some of the files.
        let migrating = dir.path().join(MIGRATING_DIR);
        fs::create_dir(&migrating).unwrap();
        fs::rename(dir.path().join("conf"), migrating.join("conf")).unwrap();
        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.tree("t").unwrap().get("k").unwrap().unwrap(), "v");
        assert_eq!(
            read_format(dir.path()).unwrap().unwrap().upgraded_from,
            Some(1)
        );
    }

    #[test]
    fn a_restore_stopped_in_its_swap_is_finished_and_one_stopped_before_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        write_format(dir.path(), None).unwrap();
        // Stopped after the old data moved away: the restored copy becomes the store.
        {
            let restored = Store::open(&dir.path().join(RESTORING_DIR)).unwrap();
            restored.tree("t").unwrap().insert("k", "restored").unwrap();
            restored.durable_flush().unwrap();
        }
        let store = open_store(dir.path()).unwrap();
        assert_eq!(
            store.tree("t").unwrap().get("k").unwrap().unwrap(),
            "restored"
        );
        assert!(!dir.path().join(RESTORING_DIR).exists());
        drop(store);
        // Stopped before anything was replaced: the copy goes, the data stays.
        fs::create_dir_all(dir.path().join(RESTORING_DIR)).unwrap();
        let store = open_store(dir.path()).unwrap();
        assert_eq!(
            store.tree("t").unwrap().get("k").unwrap().unwrap(),
            "restored"
        );
        assert!(!dir.path().join(RESTORING_DIR).exists());
    }
}
