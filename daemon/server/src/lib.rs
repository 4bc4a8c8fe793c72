//! The cardd daemon as a library, so integration tests can start it in-process on
//! `127.0.0.1:0` and the `cardd` binary stays a thin wrapper.
#![forbid(unsafe_code)]

pub mod config;
pub mod store;
pub mod auth;
pub mod audit;
pub mod guard;
pub mod events;
pub mod readers;
pub mod errors;
pub mod rpc;
pub mod openrpc;
pub mod server;
pub mod summary;
