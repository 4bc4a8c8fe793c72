//! End-to-end tests of cardd live in `tests/it/` (one test binary, `it`); the fleet rig for
//! real-process tests of a host and its sites (network namespaces, key search) in
//! `tests/fleet/` (test binary `fleet`).
