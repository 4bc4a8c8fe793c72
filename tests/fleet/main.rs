//! The fleet test rig: what real-process tests of a central issuer host (`cardd-host`, on
//! PostgreSQL) and its site daemons need beyond one process, each module with its self-tests:
//! network namespaces that a test can partition ([`netns`]) and a search of files for key
//! material in its usual encodings ([`keysearch`]). PostgreSQL kills and restarts live in
//! `cardd-pg-throwaway` (`Cluster::kill`, `Cluster::restart`).
//!
//! The scenarios: [`fleet`] (a host and a database that die), [`partition`] (the host in a
//! namespace, cut off from the sites by a real partition), [`groups`] (one group's quota from
//! four sites), [`host_crash`] (the host killed mid-load), [`operators`] (operators kept at
//! the host: log in anywhere, disabled everywhere at once), [`launch`] (the demo fleet of
//! `cargo xtask fleet`, started by the same code: one load across it), [`backoffice`] (the
//! back office's pages in Chromium: top-ups, refund evidence, records, revoking a site) and,
//! for one site on its own, [`first_admin`] and [`support_bundle`] (`cardd support-bundle`
//! with the daemon running and stopped: no secret in either); [`conformance_cli`] runs
//! `cardd conformance` against the example and template plugins as a reader vendor would.
//!
//! Tests that re-run this binary as a child name themselves by their full path
//! (`netns::probe_process`).

mod backoffice;
mod backup_cli;
mod conformance_cli;
mod cross_site;
mod first_admin;
mod fleet;
mod groups;
mod host_crash;
mod keysearch;
mod launch;
mod netns;
mod operators;
mod partition;
mod processes;
mod revoked;
mod single;
mod support_bundle;
#[path = "../it/webdriver/mod.rs"]
mod webdriver;
