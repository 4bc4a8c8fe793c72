//! The whole daemon killed at every crash point of a load run by a flow over JSON-RPC, then
//! restarted on the same data directory with the card as it was.
//!
//! The child (this binary with `CARDD_DAEMON_CRASH_DIR` set) starts the daemon on its embedded
//! default with the simulated cards saved to disk after every APDU, logs in, starts the flow
//! with an idempotency key, confirms, and prints `ACK` when the run succeeded. `CARDD_CRASH_AT`
//! SIGKILLs the process at a crash point. The parent then starts the daemon again on the same
//! directories, re-presents the card (start-up recovery runs), re-sends the same `flows.start`,
//! and checks: the card's balance changed by exactly the committed loads, at most once; an
//! acknowledged load is committed; no intent is left open; for a group recharge, quota, orders
//! and card reconcile (`common::matrix`).

mod common;

use common::matrix::{crash_matrix, CARD_LOAD, GROUP_RECHARGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_at_every_crash_point_never_loses_or_doubles_a_load() {
    crash_matrix(
        &CARD_LOAD,
        "daemon_killed_at_every_crash_point_never_loses_or_doubles_a_load",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_at_every_crash_point_of_a_group_recharge_reconciles_quota_orders_and_card() {
    crash_matrix(
        &GROUP_RECHARGE,
        "daemon_killed_at_every_crash_point_of_a_group_recharge_reconciles_quota_orders_and_card",
    )
    .await;
}
