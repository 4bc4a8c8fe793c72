//! Operators are central in a fleet (real processes): the fleet's operators are created at the
//! host (`cardd-host operators add`) and the sites keep none:
//! 1. the same operator logs in at S01 and S02; a site refuses to create operators, both on
//!    its command line and over JSON-RPC, naming the host;
//! 2. disabled at the host, both sites refuse it within ~10 s (用户和密码错误) and its open
//!    sessions there end; enabled again, it logs in at both;
//! 3. the host down: a login is refused as "cannot reach the host", not as a wrong password.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use crate::processes::{binary, eventually, run, Fleet, Site};

/// How long a site may take to end the sessions of an operator disabled at the host.
const DISABLED_EVERYWHERE_WITHIN: Duration = Duration::from_secs(10);

fn error_message(reply: &Value) -> String {
    reply["error"]["message"].as_str().unwrap_or("").to_owned()
}

/// Whether `token` still opens a session at `site`.
fn session_alive(site: &Site, token: &str) -> Result<bool> {
    Ok(site
        .call("auth.whoami", json!({}), Some(token))?
        .get("result")
        .is_some())
}

fn login_reply(site: &Site, user: &str, password: &str) -> Result<Value> {
    Ok(site.call(
        "auth.login",
        json!({"username": user, "password": password}),
        None,
    )?)
}

#[test]
fn operators_live_at_the_host_log_in_anywhere_and_are_disabled_everywhere_at_once() -> Result<()> {
    let mut fleet = Fleet::create()?;
    fleet.host.start()?;
    // 1. `start` logs the host's teller and administrator in at each site.
    for site in &mut fleet.sites {
        site.start()?;
    }
    let listed = fleet.host.cli(&["operators", "list"])?;
    ensure!(
        listed.contains("teller\tteller") && listed.contains("group1\tgroup_operator\tG001"),
        "{listed}"
    );
    let s1 = &fleet.sites[0];
    let refused = s1.call(
        "operators.create",
        json!({"username": "local", "display_name": "本地", "role": "teller", "group_id": null, "password": "local-pass-1"}),
        Some(&s1.admin),
    )?;
    ensure!(
        error_message(&refused).contains("cardd-host operators"),
        "a fleet site created an operator: {refused}"
    );
    let mut add = Command::new(binary("cardd"));
    add.arg("--config")
        .arg(&s1.config)
        .args(["operators", "add", "--role", "teller", "local"]);
    let offline = run(add, Some("local-pass-1\n"));
    ensure!(
        offline
            .as_ref()
            .is_err_and(|e| e.to_string().contains("cardd-host operators add")),
        "cardd operators add at a fleet site: {offline:?}"
    );

    // 2. Disabled at the host: both sites end its sessions and refuse it.
    let tellers: Vec<String> = fleet.sites.iter().map(|s| s.teller.clone()).collect();
    fleet.host.cli(&["operators", "disable", "teller"])?;
    for (site, token) in fleet.sites.iter().zip(&tellers) {
        eventually(
            DISABLED_EVERYWHERE_WITHIN,
            &format!("{}: the disabled teller's session ended", site.id),
            || Ok(!session_alive(site, token)?),
        )?;
        let reply = login_reply(site, "teller", "teller-pass-1")?;
        ensure!(
            error_message(&reply) == "用户和密码错误",
            "{}: a disabled operator: {reply}",
            site.id
        );
        ensure!(
            session_alive(site, &site.admin)?,
            "{}: the administrator's session ended too",
            site.id
        );
    }
    fleet.host.cli(&["operators", "enable", "teller"])?;
    for site in &fleet.sites {
        let token = site.login("teller", "teller-pass-1")?;
        ensure!(session_alive(site, &token)?, "{}: enabled again", site.id);
    }
    let log = fleet.host.cli(&["audit", "list", "--chain", "host"])?;
    ensure!(
        log.contains("operators.disable") && log.contains("operators.enable"),
        "{log}"
    );
    fleet.host.cli(&["audit", "verify"])?;

    // 3. The host down: the site cannot check a password and says so.
    fleet.host.kill9();
    let reply = login_reply(&fleet.sites[0], "teller", "teller-pass-1")?;
    let message = error_message(&reply);
    ensure!(
        message.contains("无法连接发卡方后台"),
        "a login with the host down: {reply}"
    );
    // Sessions already open are not ended for want of an answer.
    std::thread::sleep(Duration::from_secs(6));
    ensure!(
        session_alive(&fleet.sites[0], &fleet.sites[0].admin)?,
        "the host down ended a session"
    );
    Ok(())
}
