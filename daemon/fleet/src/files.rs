//! The fleet's files: private keys written owner-only (0600) and checked so when read back,
//! certificates world-readable; nothing is overwritten unless asked, and a replacement lands
//! whole (written beside, then renamed).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Largest PEM file read, in bytes: a certificate or key is a few KiB.
pub const PEM_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A file operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file is there and overwriting was not asked for.
    #[error("{0} already exists; move it away, or pass --replace to re-issue")]
    Exists(PathBuf),
    /// A private key others can read.
    #[error(
        "the private key {path} can be read by group or others (mode {mode:o}); \
         run `chmod 600 {path}`, and consider it leaked if others could log in"
    )]
    KeyReadableByOthers {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than any certificate or key.
    #[error("{0} is larger than {PEM_FILE_BYTES_MAX} bytes; it is not a certificate or key")]
    TooLarge(PathBuf),
    /// The system refused.
    #[error("{path}: {source}; check that the directory exists and is writable by this user")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether a file is kept from group and others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// A private key: mode 0600.
    Private,
    /// A certificate: mode 0644.
    Public,
}

impl Secrecy {
    #[cfg(unix)]
    fn mode(self) -> u32 {
        match self {
            Secrecy::Private => 0o600,
            Secrecy::Public => 0o644,
        }
    }
}

/// Creates a directory (and its parents) if missing, owner-only on Unix.
pub(crate) fn create_dir(path: &Path) -> Result<(), FileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(io_error(path))
}

/// Writes a new file with `contents`, created with its final mode so a key is never readable by
/// others, not even for a moment; refuses an existing file.
fn write_new(path: &Path, contents: &[u8], secrecy: Secrecy) -> Result<(), FileError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, secrecy.mode());
    #[cfg(not(unix))]
    let _ = secrecy;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            FileError::Exists(path.to_owned())
        } else {
            io_error(path)(e)
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Writes `contents` to `path`: refuses an existing file unless `replace`, in which case the
/// new contents are written beside it and renamed over it.
pub(crate) fn write(
    path: &Path,
    contents: &[u8],
    secrecy: Secrecy,
    replace: bool,
) -> Result<(), FileError> {
    if !replace {
        return write_new(path, contents, secrecy);
    }
    let mut beside = path.as_os_str().to_owned();
    beside.push(".new");
    let beside = PathBuf::from(beside);
    match fs::remove_file(&beside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&beside)(e)),
    }
    write_new(&beside, contents, secrecy)?;
    fs::rename(&beside, path).map_err(io_error(path))
}

/// Reads a PEM file of at most [`PEM_FILE_BYTES_MAX`] bytes; a private key must be owner-only.
pub(crate) fn read(path: &Path, secrecy: Secrecy) -> Result<Vec<u8>, FileError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if meta.len() > PEM_FILE_BYTES_MAX {
        return Err(FileError::TooLarge(path.to_owned()));
    }
    #[cfg(unix)]
    if secrecy == Secrecy::Private {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            return Err(FileError::KeyReadableByOthers {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = secrecy;
    fs::read(path).map_err(io_error(path))
}

/// The three files one end of the fleet's TLS needs: the fleet CA's certificate (what it
/// trusts), its own certificate and its private key, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The fleet CA's certificate.
    pub ca_cert: PathBuf,
    /// This end's certificate.
    pub cert: PathBuf,
    /// This end's private key (must be owner-only).
    pub key: PathBuf,
}
