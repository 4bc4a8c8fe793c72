//! A cluster killed as a crash would (SIGKILL) keeps its committed rows: it restarts on the same
//! data directory and port, runs crash recovery, and its URL is unchanged.

use std::process::{Command, Stdio};

use cardd_pg_throwaway::{bin_dir, Cluster};

/// Runs `sql` through `psql` on `url`; its trimmed output, or `None` when psql fails.
fn psql(url: &str, sql: &str) -> Option<String> {
    let bin = bin_dir().expect("PostgreSQL installed");
    let output = Command::new(bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn a_killed_cluster_restarts_with_its_committed_rows_on_the_same_url() {
    let mut cluster = Cluster::start().expect("start");
    let url = cluster.url();
    psql(
        &url,
        "CREATE TABLE crash (n integer PRIMARY KEY); \
         INSERT INTO crash SELECT generate_series(1, 100)",
    )
    .expect("create and fill the table");

    cluster.kill().expect("kill");
    assert!(
        psql(&url, "SELECT 1").is_none(),
        "nothing answers after the kill"
    );
    assert!(
        cluster.kill().is_err(),
        "a killed cluster is not killed twice"
    );

    cluster.restart().expect("restart");
    assert_eq!(cluster.url(), url, "the URL is unchanged");
    assert_eq!(
        psql(&url, "SELECT count(*), sum(n) FROM crash").as_deref(),
        Some("100|5050"),
        "every committed row survives the crash"
    );
    let log = cluster.log().expect("log");
    assert!(
        log.contains("not properly shut down") || log.contains("was interrupted"),
        "crash recovery ran: {log}"
    );
    assert!(
        cluster.restart().is_err(),
        "a running cluster is not restarted"
    );

    // Again, and then the usual stop still cleans up.
    cluster.kill().expect("second kill");
    cluster.restart().expect("second restart");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM crash").as_deref(),
        Some("100")
    );
    cluster.stop().expect("stop");
    assert!(
        psql(&url, "SELECT 1").is_none(),
        "nothing answers after the stop"
    );
}

#[test]
fn a_killed_cluster_is_cleaned_up_when_dropped_without_restart() {
    let mut cluster = Cluster::start().expect("start");
    let url = cluster.url();
    cluster.kill().expect("kill");
    drop(cluster);
    assert!(
        psql(&url, "SELECT 1").is_none(),
        "nothing answers after the drop"
    );
}
