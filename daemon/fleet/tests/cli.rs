//! The `cardd-fleet` command line: the README's steps, and its refusals.

use std::path::Path;
use std::process::{Command, Output};

use cardd_fleet::CertFingerprint;

fn fleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardd-fleet"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run cardd-fleet")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn the_readme_steps_make_a_fleet_and_refuse_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet-ca");
    let dir = path(&dir);

    let out = fleet(&["ca", "init", "--dir", dir, "--days", "365"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = fleet(&["ca", "init", "--dir", dir]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("never overwritten"),
        "{}",
        stderr(&again)
    );

    let out = fleet(&[
        "ca",
        "issue-host",
        "--dir",
        dir,
        "--name",
        "host.example",
        "--san",
        "127.0.0.1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = fleet(&["ca", "issue-site", "--dir", dir, "--site", "S01"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let sha = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256:"))
        .expect("the fingerprint is printed")
        .trim()
        .parse::<CertFingerprint>()
        .expect("a fingerprint");

    let cert = tmp.path().join("fleet-ca/sites/S01.crt");
    let out = fleet(&["fingerprint", path(&cert)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), sha.to_string());

    let out = fleet(&["ca", "issue-site", "--dir", dir, "--site", "S01"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));
    let out = fleet(&[
        "ca",
        "issue-site",
        "--dir",
        dir,
        "--site",
        "S01",
        "--replace",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains(&sha.to_string()),
        "a re-issue makes a new certificate"
    );

    let out = fleet(&["ca", "issue-site", "--dir", dir, "--site", "../S02"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a site id"), "{}", stderr(&out));
}
