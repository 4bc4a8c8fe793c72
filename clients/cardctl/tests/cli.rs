//! `cardctl` against a real daemon on the embedded default: log in, read readers and the card,
//! query records, run the 圈存 flow answering its question, re-send an interrupted start with
//! its key (no second credit), `--json` output, refusals with what to do, completions.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

struct Daemon {
    running: Option<cardd::server::Running>,
    url: String,
    dir: tempfile::TempDir,
    world: String,
}

async fn start(name: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let world = format!("cardctl-{name}-{}", std::process::id());
    let mut config = cardd::config::Config::demo(dir.path().join("data"));
    config.flows.unfunded_test_loads = true;
    config.flows.dir = Some(cardd::flows::default_dir());
    config.readers[0].options = json!({ "world": world });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let running = cardd::server::start(config, listener).await.unwrap();
    let url = format!("http://127.0.0.1:{}/", running.addr.port());
    Daemon {
        running: Some(running),
        url,
        dir,
        world,
    }
}

impl Daemon {
    /// Runs cardctl with `args`, feeding `stdin`, with its session file in the temp dir.
    async fn cardctl(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cardctl"));
        command
            .args(args)
            .env("CARDD_URL", &self.url)
            .env("CARDCTL_SESSION", session(self.dir.path()))
            .env_remove("CARDD_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let stdin = stdin.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cardctl(args, stdin).await;
        assert!(
            out.status.success(),
            "cardctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all, "").await).unwrap()
    }

    fn balance(&self) -> u32 {
        cardd_sim::named_world(&self.world)
            .unwrap()
            .card("sim:etc")
            .unwrap()
            .balance()
            .unwrap()
    }
}

fn session(dir: &Path) -> std::path::PathBuf {
    dir.join("cardctl-session.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardctl_drives_the_daemon_end_to_end() {
    let d = start("etc").await;

    // Not logged in: the refusal says what to do.
    let out = d.cardctl(&["readers"], "").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Log in"), "{err}");

    let said = d
        .ok(
            &["login", "--user", "teller", "--password-stdin"],
            "teller123\n",
        )
        .await;
    assert!(said.contains("logged in as teller"), "{said}");
    let mode = std::fs::metadata(session(d.dir.path())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let readers = d.json(&["readers"]).await;
    assert!(readers
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "sim:etc"));
    let table = d.ok(&["readers"], "").await;
    assert!(table.starts_with("id"), "{table}");
    let card = d.json(&["card", "sim:etc"]).await;
    assert_eq!(card["balance"], "100.00");

    let records = d
        .ok(
            &["records", "query", "--plate", "陕A12345", "--colour", "0"],
            "",
        )
        .await;
    assert!(records.contains("R20240615000001"), "{records}");
    assert!(records.contains("共 3 条"), "{records}");

    // 圈存 of a record, answering the question on "the terminal".
    let out = d
        .cardctl(
            &[
                "flows",
                "run",
                "etc.load",
                "--reader",
                "sim:etc",
                "-p",
                "record_id=R20240615000001",
                "--key",
                "cli-1",
            ],
            "y\n",
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("卡内余额：100.00元。圈存金额：200.00元。是否圈存？"),
        "{stderr}"
    );
    assert!(stdout.contains("圈存成功！"), "{stdout}");
    assert_eq!(d.balance(), 30_000);
    // Re-sending the same start (same key) returns the same run: no second credit.
    let again = d
        .json(&[
            "flows",
            "run",
            "etc.load",
            "--reader",
            "sim:etc",
            "-p",
            "record_id=R20240615000001",
            "--key",
            "cli-1",
        ])
        .await;
    assert_eq!(again["state"], "succeeded");
    assert_eq!(d.balance(), 30_000);
    // Declining loads nothing and fails the command (the unfunded `card.load` is the
    // administrator's demo-keys test mode).
    d.ok(
        &["login", "--user", "admin", "--password-stdin"],
        "admin123\n",
    )
    .await;
    let out = d
        .cardctl(
            &[
                "flows",
                "run",
                "card.load",
                "--reader",
                "sim:etc",
                "-p",
                "amount=5.00",
            ],
            "n\n",
        )
        .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("已取消圈存"));
    assert_eq!(d.balance(), 30_000);
    d.ok(
        &["login", "--user", "teller", "--password-stdin"],
        "teller123\n",
    )
    .await;

    // Bad input: a clear error, nothing changed.
    let out = d
        .cardctl(
            &[
                "recharge",
                "--plate",
                "陕A12345",
                "--colour",
                "0",
                "--amount=-5",
            ],
            "",
        )
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidParams") && err.contains("what to do"),
        "{err}"
    );
    let recharge = d
        .json(&[
            "recharge",
            "--plate",
            "陕A12345",
            "--colour",
            "0",
            "--amount",
            "12.50",
        ])
        .await;
    assert_eq!(recharge["status_label"], "未圈存");

    // Any method, and a file out.
    let file = d.dir.path().join("whoami.json");
    d.ok(
        &["call", "auth.whoami", "{}", "--out", file.to_str().unwrap()],
        "",
    )
    .await;
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["username"], "teller");

    // Tellers may not administer operators.
    let out = d.cardctl(&["operators", "list"], "").await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"));

    let completions = d.ok(&["completions", "bash"], "").await;
    assert!(completions.contains("cardctl"));
    d.ok(&["logout"], "").await;
    assert!(!session(d.dir.path()).exists());
    if let Some(r) = d.running {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardctl_runs_group_work_with_exports_and_batches() {
    let d = start("group").await;
    d.ok(
        &["login", "--user", "group1", "--password-stdin"],
        "group123\n",
    )
    .await;
    let info = d.json(&["group", "info"]).await;
    assert_eq!(info["group_id"], "G001", "{info}");

    // A batch of one city card, run on the city card reader with a progress bar.
    let batch_file = d.dir.path().join("batch.csv");
    std::fs::write(
        &batch_file,
        "# card_number,amount\n61010000000000000001,10.00\n",
    )
    .unwrap();
    let batch = d
        .json(&["group", "batch-create", batch_file.to_str().unwrap()])
        .await;
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    let out = d
        .cardctl(
            &["group", "batch-run", &batch_id, "--reader", "sim:city"],
            "1\ny\n",
        )
        .await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = d.json(&["group", "batch", &batch_id]).await;
    assert_eq!(report["succeeded"], 1, "{report}");
    let city = cardd_sim::named_world(&d.world)
        .unwrap()
        .card("sim:city")
        .unwrap()
        .balance()
        .unwrap();
    assert_eq!(city, 6_000);

    // 充值查询 with a preset, and exactly its rows exported.
    let orders = d
        .json(&["group", "orders", "--preset", "last_7_days"])
        .await;
    assert_eq!(orders["rows"].as_array().unwrap().len(), 1, "{orders}");
    let csv = d.dir.path().join("orders.csv");
    d.ok(
        &[
            "group",
            "orders",
            "--preset",
            "last_7_days",
            "--export",
            csv.to_str().unwrap(),
        ],
        "",
    )
    .await;
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains("卡号"), "{text}");
    assert_eq!(text.lines().count(), 2, "headers and one row: {text}");
    let out = d
        .cardctl(&["group", "orders", "--export", "orders.pdf"], "")
        .await;
    assert!(!out.status.success());

    // 额度充值, approved by the auditor: the quota grows and `groups list` shows it.
    let paid = d
        .json(&["group", "topup", "--amount", "1000", "--remark", "六月额度"])
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    let topup_id = paid["topup_id"].as_str().unwrap().to_owned();
    d.ok(
        &["login", "--user", "auditor", "--password-stdin"],
        "audit123\n",
    )
    .await;
    let pending = d.json(&["audit", "pending"]).await;
    assert_eq!(pending["topups"][0]["topup_id"], topup_id, "{pending}");
    let approved = d
        .json(&["audit", "topup", &topup_id, "--reason", "已到账"])
        .await;
    assert_eq!(approved["topup_id"], topup_id, "{approved}");
    assert_ne!(approved["status"], "paid", "{approved}");
    let groups = d.ok(&["groups", "list"], "").await;
    assert!(
        groups.starts_with("group_id  group_name") && groups.contains("1490.00"),
        "{groups}"
    );

    // Administrators create groups.
    d.ok(
        &["login", "--user", "admin", "--password-stdin"],
        "admin123\n",
    )
    .await;
    let created = d
        .json(&[
            "groups",
            "upsert",
            "G900",
            "--name",
            "测试集团",
            "--terminal",
            "900000000001",
        ])
        .await;
    assert_eq!(created["group_id"], "G900", "{created}");
    assert_eq!(created["available_quota"], "0.00", "{created}");
    if let Some(r) = d.running {
        r.stop().await;
    }
}
