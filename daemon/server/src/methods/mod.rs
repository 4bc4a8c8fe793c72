//! The JSON-RPC method sets, one module per domain. Each adds its methods to a
//! [`crate::rpc::Methods`] with their access, audit and types; the composition root
//! (`server`) decides which sets a daemon serves. Handlers are thin: params
//! (`cardd-api` types) → a service call → result; errors map through [`crate::errors`].

pub mod audit;
pub mod auth;
pub mod etc;
pub mod events;
pub mod flows;
pub mod group;
pub mod journal;
pub mod readers;
pub mod sim;
pub mod system;
