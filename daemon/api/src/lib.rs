//! The wire contract between cardd and its clients (web console, kiosk, `cardctl`, legacy teller
//! software).
//!
//! **Architecture invariant:** this is the only crate that defines what crosses the JSON-RPC
//! boundary: the error-code table ([`codes`]), operator roles ([`roles`]), money on the wire
//! ([`money`]: decimal strings, never floats), the request/response types ([`types`]) and the
//! business vocabulary and rule shapes ([`vocab`]), and one module per method family with its
//! params, results and [`Method`] types ([`etc`]). The daemon and the clients both depend on it,
//! so they cannot drift apart.
#![forbid(unsafe_code)]

pub mod codes;
pub mod etc;
pub mod method;
pub mod money;
pub mod roles;
pub mod types;
pub mod vocab;

pub use codes::ErrorCode;
pub use method::{Method, NoParams};
pub use money::{Fen, MoneyError};
pub use roles::Role;
