//! A throw-away cluster starts, accepts the test role over TCP, and is gone after it stops.

use std::process::{Command, Stdio};

use cardd_pg_throwaway::{bin_dir, Cluster, DATABASE, ROLE};

fn select_one(cluster: &Cluster) -> bool {
    let bin = bin_dir().expect("PostgreSQL installed");
    Command::new(bin.join("psql"))
        .args(["-X", "-q", "-t", "-c", "SELECT 1", &cluster.url()])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1")
}

fn cluster_dirs() -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("cardd-pg-{}-", std::process::id())))
        .collect()
}

#[test]
fn a_cluster_serves_the_test_role_and_is_gone_after_it_stops() {
    let cluster = Cluster::start().expect("start");
    assert!(cluster.url().contains(&format!("{ROLE}:")));
    assert!(cluster.url().ends_with(&format!("/{DATABASE}")));
    assert!(select_one(&cluster), "the role logs in over TCP");
    assert_eq!(cluster_dirs().len(), 1, "{:?}", cluster_dirs());
    let url = cluster.url();
    cluster.stop().expect("stop");
    assert!(cluster_dirs().is_empty(), "{:?}", cluster_dirs());
    let bin = bin_dir().expect("PostgreSQL installed");
    let status = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-c", "SELECT 1", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("psql runs");
    assert!(!status.success(), "nothing answers after the stop");
}

/// Set in the child process of [`a_shared_cluster_is_gone_when_its_process_exits`].
const CHILD_VAR: &str = "CARDD_PG_THROWAWAY_CHILD";

#[test]
fn a_shared_cluster_is_gone_when_its_process_exits() {
    const GONE_WAIT_MS: u64 = 30_000;
    if std::env::var_os(CHILD_VAR).is_some() {
        // The child: start the process's shared cluster, say where, exit without stopping it.
        let url = cardd_pg_throwaway::shared_url().expect("start");
        println!("URL={url}");
        return;
    }
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_shared_cluster_is_gone_when_its_process_exits",
            "--nocapture",
        ])
        .env(CHILD_VAR, "1")
        .env_remove(cardd_pg_throwaway::URL_VAR)
        .stdin(Stdio::null())
        .output()
        .expect("child runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("URL="))
        .expect("the child printed its URL")
        .to_owned();
    let bin = bin_dir().expect("PostgreSQL installed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(GONE_WAIT_MS);
    loop {
        let answers = Command::new(bin.join("psql"))
            .args(["-X", "-q", "-c", "SELECT 1", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("psql runs")
            .success();
        if !answers {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster still answers {GONE_WAIT_MS} ms after its process exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
