//! The end-to-end tests of cardd, one test binary: the daemon over real HTTP and WebSocket, the
//! reader stack on simulated cards, crashes, card removals and the browser pages. One module per
//! subject; `common` (a daemon started in-process, the crash and card-removal matrices) and
//! `webdriver` are shared.
//!
//! Every test runs in this one process: each names its simulated world with a prefix of its own
//! (and the process id), so that tests running side by side never share one. Tests that re-run this binary
//! as a child name themselves by their full path (`daemon_crash::…`, `crash_matrix::crash_matrix`,
//! `local_attacker::attacker_process`).

mod common;
mod webdriver;

mod apdu_docs;
mod backup_restore;
mod browser;
mod card_reads;
mod contract;
mod crash_matrix;
mod daemon_api;
mod daemon_crash;
mod etc_service;
mod flows;
mod group_intent;
mod group_recharge;
mod local_attacker;
mod local_attacker_auth;
mod metrics;
mod obu_issue;
mod pcsc_e2e;
mod plugin_supervision;
mod reader_stack;
mod reconciliation;
mod recovery;
mod teller_example;
