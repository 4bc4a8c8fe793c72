//! The daemon's database: `cardd_journal::store`, re-exported so the daemon's modules keep one
//! name for it. The journal crate owns durability (see its `store` module for why
//! `Store::durable_flush` exists).

pub use cardd_journal::store::*;
