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
//! the data directory. `upgrade::open_store` upgrades it: first a backup of the whole database into
//! `backups/before-format-2-<time>/` (the same backup `cardd backup` makes, with its
//! manifest), then the database's files move into `store.migrating/`, which is renamed to
//! `store/`, and the format file is written last. A crash at any point resumes where it
//! stopped. A directory of a newer format than this binary reads is refused with a message
//! naming the cardd that wrote it; nothing in it is touched.
//!
//! **Restores** put the restored database into `store.restoring/` and swap it in at the end
//! (see the `restore` module). A restore stopped before the swap leaves the old data in place
//! (its copy is dropped at the next open); one stopped in the swap, after the old data moved to
//! `backups/`, is finished at the next open (the copy was complete before the swap began).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cardd_journal::StoreError;
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
pub(crate) const MIGRATING_DIR: &str = "store.migrating";
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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
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

pub(crate) fn is_format_1_name(name: &str) -> bool {
    FORMAT_1_NAMES.contains(&name) || name.starts_with(FORMAT_1_SNAPSHOT_PREFIX)
}

pub(crate) fn holds_format_1(data_dir: &Path) -> bool {
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

/// Entries [`hand_back`] visits at most.
const HAND_BACK_ENTRIES_MAX: usize = 1_000_000;

/// After an offline command run as root (`cardd restore`, `cardd operators add`, an upgrade):
/// gives every file and directory below `data_dir` to the data directory's owner (the daemon's
/// user), so that the daemon can open what root created. Does nothing unless run as root on a
/// data directory root does not own. Returns how many entries changed owner.
#[cfg(unix)]
pub fn hand_back(data_dir: &Path) -> Result<u64, DataDirError> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(0);
    }
    let owner = fs::metadata(data_dir).map_err(io_err(data_dir))?;
    if owner.uid() == 0 {
        return Ok(0);
    }
    let (uid, gid) = (owner.uid(), owner.gid());
    let mut changed = 0u64;
    let mut left = HAND_BACK_ENTRIES_MAX;
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            left = left.checked_sub(1).ok_or_else(|| DataDirError::Io {
                path: dir.clone(),
                source: io::Error::other("too many entries"),
            })?;
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.uid() != uid || meta.gid() != gid {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io_err(&path))?;
                changed += 1;
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(changed)
}

/// Not a Unix system: files have no owner to give back.
#[cfg(not(unix))]
pub fn hand_back(_data_dir: &Path) -> Result<u64, DataDirError> {
    Ok(0)
}
