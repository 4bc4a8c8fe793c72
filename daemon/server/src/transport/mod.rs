//! The transport: what stands between a socket and a method. [`guard`] checks Host, Origin,
//! CORS, tokens, rate and call shape in front of jsonrpsee and serves `/health`, `/metrics` and
//! the web client's files ([`web`]); [`connections`] bounds connections per kind of client and
//! [`peer`] tells which local process is on the other end.

pub mod connections;
pub mod guard;
pub mod peer;
pub mod web;
