//! The master key file (`[keys] source = "file"`, docs/keys.md): read, checked and turned into
//! the software security module. The daemon's start-up and `cardd check-config` both go
//! through [`read_key_file`], so a file the check accepts is one the daemon loads.
//!
//! Messages name the file and the key, never a key's value.

use std::path::{Path, PathBuf};

use cardd_purse::{SamConfig, SoftSam};

/// Largest key file read, in bytes: a few dozen hex keys take well under 4 KiB.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why the key file cannot be used. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "the key file {0} does not exist: put the issuer's master key file there (docs/keys.md), \
         then `chown cardd:cardd {0}` and `chmod 600 {0}`"
    )]
    Missing(PathBuf),
    #[error(
        "the key file {path} can be read or written by group or others (mode {mode:03o}): run \
         `chmod 600 {path}` and `chown cardd:cardd {path}` (the daemon's user), and consider the \
         keys leaked if others could log in"
    )]
    Open { path: PathBuf, mode: u32 },
    #[error("the key file {0} is larger than {KEY_FILE_BYTES_MAX} bytes; it is not a key file")]
    TooLarge(PathBuf),
    #[error("cannot read the key file {path}: {reason}; check that it is readable by the daemon's user (`chown cardd:cardd {path}`)")]
    Read { path: PathBuf, reason: String },
    #[error("the key file {path} is not a valid key file: {reason} (see docs/keys.md)")]
    Invalid { path: PathBuf, reason: String },
}

/// A key file that parsed: which schemes it holds (never the keys themselves).
#[derive(Debug)]
pub struct LoadedKeys {
    pub sam: SoftSam,
    /// The schemes present (`etc`, `city`, `obu`), for messages.
    pub schemes: Vec<&'static str>,
}

/// Reads `path` as the daemon does: owner-only on Unix (no group or other bits at all), at
/// most [`KEY_FILE_BYTES_MAX`], TOML in the format of docs/keys.md, every key well-formed.
pub fn read_key_file(path: &Path) -> Result<LoadedKeys, KeyFileError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing(path.to_owned()))
        }
        Err(e) => {
            return Err(KeyFileError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    #[cfg(unix)]
    {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Open {
                path: path.to_owned(),
                mode,
            });
        }
    }
    if meta.len() > KEY_FILE_BYTES_MAX {
        return Err(KeyFileError::TooLarge(path.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| KeyFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let config: SamConfig = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
    let mut schemes = Vec::new();
    if config.etc.is_some() {
        schemes.push("etc");
    }
    if config.city.is_some() {
        schemes.push("city");
    }
    if config.obu.is_some() {
        schemes.push("obu");
    }
    if schemes.is_empty() {
        return Err(invalid(
            "it holds no [etc], [city] or [obu] section: no card could be loaded".into(),
        ));
    }
    let sam = SoftSam::new(&config).map_err(|e| invalid(e.to_string()))?;
    Ok(LoadedKeys { sam, schemes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899AABBCCDDEEFF";

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("keys.toml");
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        let _ = mode;
        path
    }

    #[test]
    fn a_good_owner_only_file_loads_and_names_its_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[etc]\nalgorithm = \"tdes\"\ntwo_level = true\nload = \"{KEY}\"\n\
             purchase = \"{KEY}\"\ntac = \"{KEY}\"\n"
        );
        let loaded = read_key_file(&write(dir.path(), &text, 0o600)).unwrap();
        assert_eq!(loaded.schemes, ["etc"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[etc]\nload = \"{KEY}\"\n");
        let e = read_key_file(&write(dir.path(), &text, 0o644)).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains("chown cardd"), "{message}");
        assert!(!message.contains(KEY), "{message}");
    }

    #[test]
    fn a_bad_key_is_named_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "0011223344556677889900112233445Z";
        let text = format!("[etc]\ntwo_level = true\nload = \"{secret}\"\n");
        let e = read_key_file(&write(dir.path(), &text, 0o600)).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("load"), "{message}");
        assert!(!message.contains(secret), "{message}");
        let missing = read_key_file(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, KeyFileError::Missing(_)), "{missing}");
    }
}
