//! The cardd daemon as a library, so integration tests can start it in-process on
//! `127.0.0.1:0` and the `cardd` binary stays a thin wrapper.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod backup;
pub mod bundle;
pub mod check;
pub mod config;
pub mod conformance;
pub mod control;
pub mod daemon;
pub mod datadir;
pub mod errors;
pub mod events;
pub mod flows;
pub mod flows_reload;
pub mod funded_sam;
pub mod keys;
pub mod log_ring;
pub mod lua;
pub mod methods;
pub mod metrics;
pub mod readers;
pub mod recovery;
pub mod restore;
pub mod rpc;
pub mod server;
pub mod sim_panel;
pub mod store;
pub mod summary;
pub mod support;
pub mod transport;
pub mod upgrade;
