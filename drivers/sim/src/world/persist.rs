//! Saving each slot's card to a state directory so a card outlives a killed daemon.
//!
//! A real card keeps its balance when the daemon dies mid-load; crash tests need the simulated
//! one to do the same. Each slot has one JSON file (`<reader>.json`, `<reader>.icc.json`)
//! holding the card or `null` for an empty slot, replaced atomically (write a temporary file,
//! fsync, rename) after every change, so a kill at any instant leaves either the old or the new
//! state, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{SimError, SimSlot};
use crate::cards::SimCard;

/// The file of `slot` of reader `id` in `dir`.
pub(crate) fn slot_file(dir: &Path, id: &str, slot: SimSlot) -> PathBuf {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let suffix = match slot {
        SimSlot::Main => "",
        SimSlot::Icc => ".icc",
    };
    dir.join(format!("{safe}{suffix}.json"))
}

/// Replaces `path` with `card` (or `null`) atomically.
pub(crate) fn save(path: &Path, card: Option<&SimCard>) -> Result<(), SimError> {
    let io_error = |source| SimError::Io {
        path: path.to_owned(),
        source,
    };
    let text = match card {
        Some(card) => card.to_json().map_err(|source| SimError::Json {
            path: path.to_owned(),
            source,
        })?,
        None => "null".to_owned(),
    };
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp).map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error)?;
    if let Some(parent) = path.parent() {
        // Makes the rename itself durable; not every platform can open a directory, so best effort.
        let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The saved state of a slot: `None` when nothing was saved, `Some(None)` for a saved empty slot.
pub(crate) fn load(path: &Path) -> Result<Option<Option<SimCard>>, SimError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SimError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let card: Option<SimCard> = serde_json::from_str(&text).map_err(|source| SimError::Json {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(card))
}

/// The file of the card a reader's pocket holds first (a card pulled by a fault, "in the
/// person's hand"), so a crash of the process does not make the card vanish.
pub(crate) fn pocket_file(dir: &Path, id: &str) -> PathBuf {
    let mut name = slot_file(dir, id, SimSlot::Main).into_os_string();
    name.push(".pocket");
    PathBuf::from(name)
}
