//! The legacy-teller example client (`clients/teller-example/teller_example.py`, Python
//! standard library only) against the daemon on its embedded default: a 圈存 with the key saved
//! before the start, a lost answer retried with the same key (one credit), and a re-run after
//! success that loads nothing more.

use crate::common;

use std::process::Command;

use common::TestDaemon;
use serde_json::json;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/teller-example/teller_example.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_loads_once_whatever_the_retries() {
    let world = format!("teller-example-{}", std::process::id());
    let w = world.clone();
    let d = TestDaemon::start_with(move |c| {
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": w });
    })
    .await;
    let url = format!("http://127.0.0.1:{}/", d.addr.port());
    let state = d.dir.path().join("state.json");
    let run = |extra: &'static [&'static str]| {
        let (url, state) = (url.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(example())
                .args(["--url", &url, "--user", "teller", "--password", "teller123"])
                .args([
                    "--record",
                    "R20240615000001",
                    "--reader",
                    "sim:etc",
                    "--yes",
                ])
                .arg("--state")
                .arg(&state)
                .args(extra)
                .output()
                .expect("python3 runs (cargo xtask setup installs it)")
        })
    };
    let balance = || {
        cardd_sim::named_world(&world)
            .unwrap()
            .card("sim:etc")
            .unwrap()
            .balance()
            .unwrap()
    };

    let out = run(&["--simulate-lost-answer"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("卡内余额：100.00元。圈存金额：200.00元。是否圈存？"),
        "{stdout}"
    );
    assert!(stdout.contains("圈存成功！"), "{stdout}");
    assert!(stdout.contains("balance_after: 300.00"), "{stdout}");
    assert_eq!(balance(), 30_000, "one credit despite the lost answer");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({}),
        "the key is forgotten only after the outcome"
    );

    // Running it again for the same record: cardd refuses, nothing is loaded.
    let out = run(&[]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("已圈存"));
    assert_eq!(balance(), 30_000);
    d.stop().await;
}
