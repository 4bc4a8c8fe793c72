//! The data directory: its layout, its format version and upgrades between formats.
//!
//! ```text
//! <data_dir>/
//!   cardd-data.toml    format = 2, the cardd that wrote it, when
//!   store/             the sled database (journal, records, operators, audit) and the sealed
//!                      audit segments beside it
//!   backups/           copies cardd made itself: before an upgrade, and the data a restore
//!                      replaced; never deleted by cardd
//!   control.sock       the local control socket while the daemon runs
//! ```
//!
//! **Formats.** Format 1 (cardd before the format file existed) kept the database directly in
//! the data directory. [`open_store`] upgrades it: first a backup of the whole database into
//! `backups/before-format-2-<time>/` (the same backup `cardd backup` makes, with its
//! manifest), then the database's files move into `store.migrating/`, which is renamed to
//! `store/`, and the format file is written last. A crash at any point resumes where it
//! stopped. A directory of a newer format than this binary reads is refused with a message
//! naming the cardd that wrote it; nothing in it is touched.
//!
//! **Restores** put the restored database into `store.restoring/` and swap it in at the end
//! (see [`crate::backup`]); a `store.restoring/` without `store/` is an interrupted restore
//! and is refused until the restore is run again.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cardd_journal::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// The data directory format this cardd writes and reads.
pub const DATA_FORMAT: u32 = 2;
/// The format file's name in the data directory.
pub const FORMAT_FILE: &str = "cardd-data.toml";
/// The database's directory in the data directory.
pub const STORE_DIR: &str = "store";
/// Where cardd keeps the backups it makes itself.
pub const BACKUPS_DIR: &str = "backups";
/// A format-1 database on its way into [`STORE_DIR`].
const MIGRATING_DIR: &str = "store.migrating";
/// A restored database before it replaces [`STORE_DIR`].
pub const RESTORING_DIR: &str = "store.restoring";
/// Bytes of the format file read at most.
const FORMAT_FILE_BYTES_MAX: u64 = 4096;
/// The files a format-1 data directory held: sled's, and the sealed audit segments.
const FORMAT_1_NAMES: &[&str] = &["conf", "db", "blobs", crate::audit::SEGMENTS_DIR];
/// sled's snapshot files start with this.
const FORMAT_1_SNAPSHOT_PREFIX: &str = "snap.";

/// This cardd, as the format file names it.
pub fn this_cardd() -> String {
    format!("cardd {}", env!("CARGO_PKG_VERSION"))
}

/// The format file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatFile {
    /// The data directory's format.
    pub format: u32,
    /// The cardd that last wrote the format (`cardd 0.1.0`).
    pub written_by: String,
    /// When the format was written (RFC 3339 UTC).
    pub written_at: String,
    /// The format this directory was upgraded from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgraded_from: Option<u32>,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A newer cardd wrote this directory.
    #[error(
        "the data directory {dir} has format {found}, written by {written_by}; this {ours} reads \
         formats up to {DATA_FORMAT}: run {written_by} or newer on it (nothing was changed)"
    )]
    Newer {
        dir: PathBuf,
        found: u32,
        written_by: String,
        ours: String,
    },
    /// The format file cannot be read.
    #[error(
        "the format file {path} cannot be read: {reason}; it is written by cardd only, restore \
         it from a backup or compare with the documentation (docs/operations.md)"
    )]
    BadFormatFile { path: PathBuf, reason: String },
    /// A restore stopped before the restored database replaced the old one.
    #[error(
        "a restore into {dir} was interrupted before it finished; run `cardd restore` with the \
         same backup again (the data it replaced is in {dir}/backups/)"
    )]
    RestoreInterrupted { dir: PathBuf },
    /// A file operation failed.
    #[error("{path}: {source}; check that the directory is writable by cardd's user")]
    Io { path: PathBuf, source: io::Error },
    /// The database cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backup before an upgrade failed; nothing was upgraded.
    #[error("the backup before upgrading the data directory failed, nothing was changed: {0}")]
    UpgradeBackup(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The database's directory in `data_dir`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_DIR)
}

/// Reads the format file, if there is one.
pub fn read_format(data_dir: &Path) -> Result<Option<FormatFile>, DataDirError> {
    use std::io::Read;
    let path = data_dir.join(FORMAT_FILE);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut text = String::new();
    file.take(FORMAT_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(io_err(&path))?;
    // Only `format` is needed to refuse a newer directory: read it first, so that a newer
    // format file with fields this cardd does not know is refused for its format.
    #[derive(Deserialize)]
    struct Probe {
        format: u32,
        #[serde(default)]
        written_by: Option<String>,
    }
    let bad = |reason: String| DataDirError::BadFormatFile {
        path: path.clone(),
        reason,
    };
    let probe: Probe = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if probe.format > DATA_FORMAT {
        return Err(DataDirError::Newer {
            dir: data_dir.to_path_buf(),
            found: probe.format,
            written_by: probe
                .written_by
                .unwrap_or_else(|| format!("a cardd that writes format {}", probe.format)),
            ours: this_cardd(),
        });
    }
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// Writes the format file durably (a new file renamed over the old).
pub fn write_format(data_dir: &Path, upgraded_from: Option<u32>) -> Result<(), DataDirError> {
    let format = FormatFile {
        format: DATA_FORMAT,
        written_by: this_cardd(),
        written_at: crate::audit::utc_now_rfc3339(),
        upgraded_from,
    };
    let text = format!(
        "# The format of this cardd data directory. Written by cardd; do not edit.\n{}",
        toml::to_string(&format).expect("a format file serializes")
    );
    let path = data_dir.join(FORMAT_FILE);
    let partial = data_dir.join(format!("{FORMAT_FILE}.partial"));
    let mut file = fs::File::create(&partial).map_err(io_err(&partial))?;
    file.write_all(text.as_bytes()).map_err(io_err(&partial))?;
    file.sync_all().map_err(io_err(&partial))?;
    fs::rename(&partial, &path).map_err(io_err(&path))?;
    sync_dir(data_dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn is_format_1_name(name: &str) -> bool {
    FORMAT_1_NAMES.contains(&name) || name.starts_with(FORMAT_1_SNAPSHOT_PREFIX)
}

fn holds_format_1(data_dir: &Path) -> bool {
    data_dir.join("conf").exists() || data_dir.join("db").is_file()
}

/// A file-name-safe UTC time for directories cardd makes (`20261207T102030Z`).
pub fn stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

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
            return Err(DataDirError::RestoreInterrupted {
                dir: data_dir.to_path_buf(),
            });
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
    fn an_interrupted_restore_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(RESTORING_DIR)).unwrap();
        write_format(dir.path(), None).unwrap();
        assert!(matches!(
            open_store(dir.path()),
            Err(DataDirError::RestoreInterrupted { .. })
        ));
    }
}
