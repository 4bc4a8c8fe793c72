//! Cryptography for Chinese stored-value cards (ETC user cards and city transit cards).
//!
//! This crate exists so that the host side (the software security module) and the simulated
//! card compute keys and MACs from exactly one implementation: if both sides used separate
//! code, a shared mistake would still "agree" in tests while a real card refused it, and a
//! difference between them would be hard to locate. It is pure and I/O-free, and it is the
//! only place in the workspace that touches DES, 3DES or SM4 (all through the RustCrypto
//! `des` and `sm4` crates; no block cipher is written by hand here).
//!
//! The rules follow section 2 (Cryptography) of the card-protocol reference:
//!
//! * key diversification ([`diversify`], [`diversify_two_level`]),
//! * session (process) keys ([`load_session_key`], [`purchase_session_key`], [`tac_key`]),
//! * purse MACs MAC1/MAC2/TAC ([`purse_mac`]) over the byte layouts of [`mac_input`],
//! * the secure-messaging MAC for `04D6` / `84D4` / `8418` ([`secure_messaging_mac`]),
//! * ECB helpers for key blocks and encrypted reads ([`ecb_encrypt`], [`ecb_decrypt`]),
//! * constant-time MAC comparison ([`mac_eq`]) and packed BCD helpers ([`bcd`]),
//! * the GBK codec for the Chinese text of card files ([`gbk`]), which host and simulated card
//!   must likewise encode identically.
//!
//! ```
//! use cardd_crypto::{diversify, load_session_key, mac_input, purse_mac, Algorithm, Key16};
//!
//! let master = Key16::from_hex("11223344556677888877665544332211")?;
//! let asn = [0x12, 0x34, 0x56, 0x78, 0x90, 0xAB, 0xCD, 0xEF];
//! let dlk = diversify(Algorithm::Tdes, &master, &asn);
//! let ses = load_session_key(Algorithm::Tdes, &dlk, [0xA1, 0xB2, 0xC3, 0xD4], 5);
//! let terminal = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
//! let mac1 = purse_mac(&ses, &mac_input::load_mac1(1000, 10000, 0x02, &terminal));
//! assert_eq!(mac1, [0x55, 0x95, 0x4E, 0x2A]);
//! # Ok::<(), cardd_crypto::CryptoError>(())
//! ```
//!
//! No function panics on any input; the only fallible operations (hex parsing and ECB on
//! data that is not a whole number of blocks) return [`CryptoError`].
#![forbid(unsafe_code)]

mod block;
mod ct;
mod derive;
mod ecb;
mod error;
mod keys;
mod mac;

pub mod bcd;
pub mod demo;
pub mod gbk;
pub mod mac_input;

pub use ct::mac_eq;
pub use derive::{diversify, diversify_two_level, load_session_key, purchase_session_key, tac_key};
pub use ecb::{ecb_decrypt, ecb_encrypt};
pub use error::CryptoError;
pub use keys::{Algorithm, Key16, SessionKey};
pub use mac::{purse_mac, secure_messaging_mac};
