//! The wire contract between cardd and its clients (web console, kiosk, `cardctl`, legacy teller
//! software).
//!
//! **Architecture invariant:** this is the only crate that defines what crosses the JSON-RPC
//! boundary: the error-code table ([`codes`]), operator roles ([`roles`]), money on the wire
//! ([`money`]: decimal strings, never floats), every method as a type ([`method`]) with its
//! params and result in its family's module ([`etc`], [`group`], [`obu`], [`auth`],
//! [`operators`], [`readers`], [`reader`], [`card`], [`flows`], [`journal`], [`audit`],
//! [`events`], [`system`], [`sim`]), and the business vocabulary and rule shapes ([`types`],
//! [`vocab`]). The daemon and the clients both depend on it,
//! so they cannot drift apart.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod card;
pub mod codes;
pub mod etc;
pub mod events;
pub mod flows;
pub mod group;
pub mod journal;
pub mod method;
pub mod money;
pub mod obu;
pub mod operators;
pub mod reader;
pub mod readers;
pub mod roles;
pub mod sim;
pub mod system;
pub mod types;
pub mod vocab;

pub use codes::ErrorCode;
pub use method::{Done, Method, NoParams, Subscription};
pub use money::{Fen, MoneyError};
pub use roles::Role;
