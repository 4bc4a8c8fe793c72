//! A search of a directory tree for key material: after a run, a test asks whether any file a
//! daemon wrote (its sled store, logs, configuration, PostgreSQL's data directory) holds a secret
//! key in one of the encodings a leak would use ([`find_key_material`]).
//!
//! **Invariants.**
//! * Every regular file under the directory is read as bytes (sled files need no special
//!   handling); symbolic links are not followed at all, so nothing outside the tree is read
//!   (a link to a file inside the tree names a file that is searched anyway). Sockets, FIFOs and
//!   devices are skipped: opening them could block.
//! * At most [`READ_TOTAL_MAX_BYTES`] are read in all: beyond that the search fails with an error
//!   rather than search part of the tree.
//! * Each key is searched raw, as upper- and lower-case hex, and as standard base64 in each of
//!   the three alignments ([`Encoding`]). A base64 needle is the part of the encoding that only
//!   the key's bits determine, so it matches wherever the key sits in a longer base64 text.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

/// The most bytes [`find_key_material`] reads from all files together.
pub const READ_TOTAL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The shortest key searched for: shorter needles match by chance.
pub const KEY_LEN_MIN: usize = 8;

/// How a key was written where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The key's bytes themselves.
    Raw,
    /// Upper-case hex (`0A1B…`).
    HexUpper,
    /// Lower-case hex (`0a1b…`); a key whose hex has no letters is reported as this.
    HexLower,
    /// Standard base64 of the key preceded by `lead` (0, 1 or 2) other bytes of its group.
    Base64 {
        /// Bytes before the key in its first 3-byte group.
        lead: u8,
    },
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Raw => f.write_str("raw bytes"),
            Encoding::HexUpper => f.write_str("upper-case hex"),
            Encoding::HexLower => f.write_str("lower-case hex"),
            Encoding::Base64 { lead } => write!(f, "base64 (key at byte {lead} of its group)"),
        }
    }
}

/// A key found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The file holding it.
    pub path: PathBuf,
    /// Which of the keys searched for (its index).
    pub key: usize,
    /// How it was written.
    pub encoding: Encoding,
    /// Where its first occurrence starts in the file (of the needle: for base64, of the part
    /// only the key determines).
    pub offset: u64,
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {} as {} in {} at byte {}",
            self.key,
            self.encoding,
            self.path.display(),
            self.offset
        )
    }
}

/// Every file under `dir` that holds one of `keys`, in any [`Encoding`]: one [`Hit`] per file,
/// key and encoding (files in name order). Fails when a key is shorter than [`KEY_LEN_MIN`], a
/// file cannot be read, or the files hold more than [`READ_TOTAL_MAX_BYTES`] together.
pub fn find_key_material(dir: &Path, keys: &[&[u8]]) -> Result<Vec<Hit>> {
    find_bounded(dir, keys, READ_TOTAL_MAX_BYTES)
}

fn find_bounded(dir: &Path, keys: &[&[u8]], read_max_bytes: u64) -> Result<Vec<Hit>> {
    let mut needles = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        if key.len() < KEY_LEN_MIN {
            bail!(
                "key {index} has {} bytes; search for keys of at least {KEY_LEN_MIN} bytes",
                key.len()
            );
        }
        for (encoding, needle) in encodings(key) {
            needles.push((index, encoding, needle));
        }
    }
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut read_bytes: u64 = 0;
    let mut hits = Vec::new();
    for path in files {
        let content = read_bounded(&path, read_max_bytes - read_bytes)?;
        read_bytes += content.len() as u64;
        for (key, encoding, needle) in &needles {
            if let Some(offset) = find(&content, needle) {
                hits.push(Hit {
                    path: path.clone(),
                    key: *key,
                    encoding: *encoding,
                    offset: offset as u64,
                });
            }
        }
    }
    Ok(hits)
}

/// The needles of `key`, one per [`Encoding`] (hex upper-case only when it differs).
fn encodings(key: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
    let lower = hex::encode(key);
    let upper = hex::encode_upper(key);
    let mut out = vec![(Encoding::Raw, key.to_vec())];
    if upper != lower {
        out.push((Encoding::HexUpper, upper.into_bytes()));
    }
    out.push((Encoding::HexLower, lower.into_bytes()));
    for lead in 0..3u8 {
        out.push((Encoding::Base64 { lead }, base64_needle(key, lead)));
    }
    out
}

/// The characters of the base64 of `lead` bytes and then `key` that only `key`'s bits
/// determine: character `i` covers bits `6i..6i+6` of the input, and the key's bits are
/// `8 lead..8 (lead + len)`.
fn base64_needle(key: &[u8], lead: u8) -> Vec<u8> {
    let lead = usize::from(lead);
    let mut input = vec![0u8; lead];
    input.extend_from_slice(key);
    let text = base64::engine::general_purpose::STANDARD.encode(&input);
    let first = (8 * lead).div_ceil(6);
    let end = 8 * (lead + key.len()) / 6;
    text.as_bytes()[first..end].to_vec()
}

/// Every regular file under `dir`, following no symbolic link.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let kind = entry
            .file_type()
            .with_context(|| format!("inspecting {}", entry.path().display()))?;
        if kind.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// The content of `path`, failing when it is longer than `max_bytes`.
fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut content = Vec::new();
    // One byte more than allowed tells a file that is too long (even one still growing).
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut content)
        .with_context(|| format!("reading {}", path.display()))?;
    if content.len() as u64 > max_bytes {
        bail!(
            "the files under the searched directory hold more than {READ_TOTAL_MAX_BYTES} bytes \
             (limit reached at {}); search a smaller tree",
            path.display()
        );
    }
    Ok(content)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let at = from
            + haystack[from..=haystack.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if haystack[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

// Self-tests.

/// A fresh key of 32 bytes with letters in its hex (so both hex cases differ).
fn test_key(seed: u8) -> Vec<u8> {
    (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(seed) | 0xa0)
        .collect()
}

/// A tree of a few directories with ordinary files and no key.
fn clean_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("db/snap.0001/blobs");
    std::fs::create_dir_all(&nested).expect("mkdir");
    std::fs::write(dir.path().join("cardd.toml"), "listen = \"127.0.0.1:0\"\n").expect("write");
    std::fs::write(nested.join("conf"), vec![0u8; 4096]).expect("write");
    std::fs::write(
        dir.path().join("db/log.txt"),
        "loaded 100 fen\n".repeat(100),
    )
    .expect("write");
    dir
}

#[test]
fn a_planted_key_is_found_in_a_nested_file_in_every_encoding() {
    let key = test_key(3);
    let other = test_key(90);
    let b64 = |bytes: &[u8]| {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    };
    let lead = |n: usize| {
        // The key after 6 + `n` other bytes (at byte `n` of its group), base64-encoded inside
        // a longer text.
        let mut input = vec![b'p'; 6 + n];
        input.extend_from_slice(&key);
        input.extend_from_slice(b"-suffix");
        b64(&input)
    };
    let cases: Vec<(Encoding, Vec<u8>)> = vec![
        (Encoding::Raw, key.clone()),
        (Encoding::HexUpper, hex::encode_upper(&key).into_bytes()),
        (Encoding::HexLower, hex::encode(&key).into_bytes()),
        (Encoding::Base64 { lead: 0 }, lead(0)),
        (Encoding::Base64 { lead: 1 }, lead(1)),
        (Encoding::Base64 { lead: 2 }, lead(2)),
    ];
    for (encoding, planted) in cases {
        let dir = clean_tree();
        let path = dir.path().join("db/snap.0001/blobs/0000000000000007");
        let mut content = vec![0x5au8; 1000];
        content.extend_from_slice(&planted);
        content.extend_from_slice(&[0x5au8; 1000]);
        std::fs::write(&path, &content).expect("plant");
        let hits = find_key_material(dir.path(), &[&other, &key]).expect("search");
        assert!(
            hits.iter()
                .any(|h| h.path == path && h.key == 1 && h.encoding == encoding),
            "{encoding}: {hits:?}"
        );
        assert!(
            hits.iter().all(|h| h.path == path && h.key == 1),
            "{encoding}: {hits:?}"
        );
        let hit = hits.iter().find(|h| h.encoding == encoding).expect("hit");
        assert!(
            (1000..1000 + planted.len() as u64).contains(&hit.offset),
            "{hit}"
        );
    }
}

#[test]
fn a_tree_without_the_key_yields_nothing() {
    let dir = clean_tree();
    // Other key-like material: another key, and the key's first half.
    let key = test_key(7);
    std::fs::write(dir.path().join("other.key"), test_key(8)).expect("write");
    std::fs::write(dir.path().join("half"), &key[..16]).expect("write");
    assert_eq!(find_key_material(dir.path(), &[&key]).expect("search"), []);
    let empty = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        find_key_material(empty.path(), &[&key]).expect("search"),
        []
    );
}

#[test]
fn symbolic_links_out_of_the_tree_are_not_followed() {
    let key = test_key(11);
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), &key).expect("write");
    let dir = clean_tree();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).expect("symlink");
    assert_eq!(find_key_material(dir.path(), &[&key]).expect("search"), []);
}

#[test]
fn the_read_limit_fails_clearly_and_short_keys_are_refused() {
    let dir = clean_tree();
    let key = test_key(1);
    let error = find_bounded(dir.path(), &[&key], 1000).expect_err("over the limit");
    assert!(
        format!("{error:#}").contains("search a smaller tree"),
        "{error:#}"
    );
    assert!(find_bounded(dir.path(), &[&key], 1 << 20).is_ok());
    let error = find_key_material(dir.path(), &[b"short"]).expect_err("short key");
    assert!(format!("{error:#}").contains("at least"), "{error:#}");
}

#[test]
fn base64_needles_are_the_key_determined_characters() {
    let key = test_key(5);
    for lead in 0..3u8 {
        let needle = base64_needle(&key, lead);
        // Whatever precedes and follows the key, its base64 contains the needle.
        for before in [0u8, 0xff, 0x41] {
            let mut input = vec![before; usize::from(lead) + 3];
            input.extend_from_slice(&key);
            input.push(!before);
            let text = base64::engine::general_purpose::STANDARD.encode(&input);
            assert!(
                find(text.as_bytes(), &needle).is_some(),
                "lead {lead} before {before}"
            );
        }
        assert!(
            needle.len() >= key.len() * 4 / 3 - 3,
            "lead {lead}: {}",
            needle.len()
        );
    }
    assert_eq!(find(b"abcabd", b"abd"), Some(3));
    assert_eq!(find(b"ab", b"abc"), None);
    assert_eq!(find(b"", b"a"), None);
}
