//! `cardd conformance` as a vendor runs it (a real `cardd` process, no Rust in sight): the
//! example plugin and the template plugin pass through their test hooks; a plugin that answers
//! SELECT wrong fails, naming the check; a plugin without test hooks gets guided steps that time
//! out (nobody moves the card) and fail with the prompt named; a configured plugin reader is
//! tested by its cardd reader id; a plugin that cannot start is exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::processes::binary;

const CHECKS: [&str; 8] = [
    "listing and open",
    "presence and ATR",
    "command round trips",
    "chaining (Le = 00)",
    "card removal reported",
    "removal during a command",
    "bounded timeout",
    "card events in order",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> PathBuf {
    repo().join("drivers/plugin/template")
}

/// `cardd ARGS…` with no standard input: its exit code, stdout and stderr.
fn cardd(args: &[&str]) -> Result<(i32, String, String)> {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary("cardd"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run cardd")?;
    Ok((
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

/// `cardd conformance --json ARGS…`: the exit code and the report.
fn conformance_json(args: &[&str]) -> Result<(i32, Value, String)> {
    let mut all = vec!["conformance", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cardd(&all)?;
    let report: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("the JSON report (exit {code}): {stdout}{stderr}"))?;
    Ok((code, report, stderr))
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn all_passed(report: &Value) -> Result<()> {
    ensure!(report["passed"] == true, "{report:#}");
    let expected: Vec<(String, String)> = CHECKS
        .iter()
        .map(|c| (c.to_string(), "passed".to_owned()))
        .collect();
    ensure!(outcomes(report) == expected, "{report:#}");
    for check in report["checks"].as_array().into_iter().flatten() {
        ensure!(check["duration_ms"].is_u64(), "{check}");
        ensure!(check["detail"] == "", "{check}");
    }
    Ok(())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn the_example_and_the_template_plugin_pass_through_their_test_hooks() -> Result<()> {
    for plugin in [
        repo().join("drivers/plugin/examples/example_plugin.py"),
        template().join("plugin.py"),
    ] {
        let (code, report, stderr) = conformance_json(&["--plugin", "python3", &path(&plugin)])?;
        ensure!(code == 0, "exit {code}: {report:#}\n{stderr}");
        all_passed(&report)?;
        ensure!(
            report["driver"]
                .as_str()
                .unwrap_or_default()
                .contains("test hooks"),
            "{report:#}"
        );
        ensure!(report["reader"] == "plugin:conformance:r1", "{report:#}");
    }
    // The text report: one line per check and a summary.
    let example = repo().join("drivers/plugin/examples/example_plugin.py");
    let (code, stdout, stderr) = cardd(&["conformance", "--plugin", "python3", &path(&example)])?;
    ensure!(code == 0, "{stdout}{stderr}");
    for check in CHECKS {
        ensure!(stdout.contains(check), "{check} missing: {stdout}");
    }
    ensure!(
        stdout.contains("PASS: 8 passed, 0 failed, 0 skipped"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn a_plugin_answering_select_wrong_fails_and_names_the_check() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("wrong_select.py");
    std::fs::write(
        &wrong,
        format!(
            "import runpy, sys\n\
             sys.path.insert(0, {template:?})\n\
             import sdk_stub\n\
             sdk_stub.EtcCard.select = lambda self, p1, body: b'\\x6a\\x82'\n\
             runpy.run_path({plugin:?}, run_name='__main__')\n",
            template = path(&template()),
            plugin = path(&template().join("plugin.py")),
        ),
    )?;
    let (code, report, stderr) = conformance_json(&["--plugin", "python3", &path(&wrong)])?;
    ensure!(code == 1, "exit {code}: {report:#}\n{stderr}");
    ensure!(report["passed"] == false, "{report:#}");
    let checks = report["checks"].as_array().context("checks")?;
    ensure!(checks.len() == CHECKS.len(), "{report:#}");
    let failed: Vec<&Value> = checks.iter().filter(|c| c["outcome"] == "failed").collect();
    ensure!(failed.len() == 1, "{report:#}");
    ensure!(failed[0]["name"] == "command round trips", "{report:#}");
    let detail = failed[0]["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains("SELECT 1001 answered 6A82") && detail.contains("expected 9000"),
        "{report:#}"
    );
    // The checks after the failure are reported as not run, by name.
    for check in &checks[3..] {
        ensure!(check["outcome"] == "skipped", "{report:#}");
        ensure!(
            check["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("\"command round trips\" failed"),
            "{report:#}"
        );
    }
    Ok(())
}

#[test]
fn without_test_hooks_a_person_is_asked_to_move_the_card_and_the_step_times_out() -> Result<()> {
    // The template as a vendor ships it for real readers: test_hooks.py deleted.
    let dir = tempfile::tempdir()?;
    for file in ["plugin.py", "cardd_plugin.py", "sdk_stub.py"] {
        std::fs::copy(template().join(file), dir.path().join(file))?;
    }
    let plugin = dir.path().join("plugin.py");
    let (code, report, stderr) = conformance_json(&[
        "--step-timeout-s",
        "1",
        "--plugin",
        "python3",
        &path(&plugin),
    ])?;
    ensure!(code == 1, "exit {code}: {report:#}\n{stderr}");
    ensure!(
        report["driver"]
            .as_str()
            .unwrap_or_default()
            .contains("guided"),
        "{report:#}"
    );
    ensure!(stderr.contains("请移走卡片"), "the prompt: {stderr}");
    let outcomes = outcomes(&report);
    ensure!(
        outcomes[..5]
            == [
                ("listing and open".into(), "passed".into()),
                ("presence and ATR".into(), "passed".into()),
                ("command round trips".into(), "passed".into()),
                ("chaining (Le = 00)".into(), "passed".into()),
                ("card removal reported".into(), "failed".into()),
            ],
        "{report:#}"
    );
    let removal = &report["checks"][4];
    let detail = removal["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains("step timed out") && detail.contains("within 1 s"),
        "{removal}"
    );
    ensure!(removal["duration_ms"].as_u64() >= Some(1_000), "{removal}");
    Ok(())
}

#[test]
fn a_configured_plugin_reader_is_tested_by_its_reader_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cardd.toml");
    std::fs::write(
        &config,
        format!(
            "[[readers]]\ndriver = \"plugin\"\n[readers.options]\nname = \"acme\"\n\
             command = \"python3\"\nargs = [{:?}]\n",
            path(&repo().join("drivers/plugin/examples/example_plugin.py"))
        ),
    )?;
    let (code, report, stderr) =
        conformance_json(&["--config", &path(&config), "--reader", "plugin:acme:r1"])?;
    ensure!(code == 0, "exit {code}: {report:#}\n{stderr}");
    all_passed(&report)?;
    ensure!(report["reader"] == "plugin:acme:r1", "{report:#}");

    // A reader the configuration does not have: exit 2, naming the ones it has.
    let (code, stdout, stderr) = cardd(&[
        "conformance",
        "--config",
        &path(&config),
        "--reader",
        "plugin:acme:nope",
    ])?;
    ensure!(code == 2, "exit {code}: {stdout}{stderr}");
    ensure!(stderr.contains("plugin:acme:r1"), "{stderr}");
    Ok(())
}

#[test]
fn a_plugin_that_cannot_start_is_exit_code_2() -> Result<()> {
    let (code, stdout, stderr) = cardd(&["conformance", "--plugin", "/nonexistent/plugin"])?;
    ensure!(code == 2, "exit {code}: {stdout}{stderr}");
    ensure!(stderr.contains("the plugin does not start"), "{stderr}");
    ensure!(stderr.contains("No such file"), "{stderr}");
    ensure!(stdout.is_empty(), "{stdout}");
    // An interpreter that starts but exits at once (its script is missing): given up after a
    // few starts, with the plugin's own error, not after the whole wait for a reader.
    let (code, stdout, stderr) = cardd(&[
        "conformance",
        "--plugin",
        "python3",
        "/nonexistent/plugin.py",
    ])?;
    ensure!(code == 2, "exit {code}: {stdout}{stderr}");
    ensure!(
        stderr.contains("the plugin does not start (3 attempts)") && stderr.contains("exited"),
        "{stderr}"
    );
    ensure!(stdout.is_empty(), "{stdout}");
    Ok(())
}
