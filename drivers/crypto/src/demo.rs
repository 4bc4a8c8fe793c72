//! Demo key material for the embedded default: simulated cards are personalised from these
//! masters and the software security module loads the same ones, so a newcomer can load money
//! onto a simulated card without any secret. They are public; never configure them for real cards.
//!
//! The ETC/city masters are those of the reference test vectors (`docs/card-protocol.md`),
//! so the demo cards and the unit vectors exercise the same arithmetic.

/// Master load key (derives each card's DLK).
pub const MASTER_LOAD_KEY: &str = "11223344556677888877665544332211";
/// Master purchase key (derives each card's DPK).
pub const MASTER_PURCHASE_KEY: &str = "0102030405060708090A0B0C0D0E0F10";
/// Master TAC key (derives each card's DTK).
pub const MASTER_TAC_KEY: &str = "A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8";
/// Master application maintenance key (derives each card's DAMK, for secure-messaging updates).
pub const MASTER_MAINTENANCE_KEY: &str = "3132333435363738393A3B3C3D3E3F40";
/// OBU ESAM system maintenance master key (MF EF01 updates).
pub const OBU_SYSTEM_MAINTENANCE_KEY: &str = "404142434445464748494A4B4C4D4E4F";
/// OBU ESAM application maintenance master key (DF01 EF01 updates).
pub const OBU_APP_MAINTENANCE_KEY: &str = "505152535455565758595A5B5C5D5E5F";
/// OBU ESAM application encryption master key (encrypted reads of DF01 EF01).
pub const OBU_APP_ENCRYPTION_KEY: &str = "606162636465666768696A6B6C6D6E6F";
