//! A local attacker against logins, sessions, password hashing, the audit log and flow prompts:
//! one test per attack, each asserting the defence (see README, "Security").
//!
//! Every request here comes from loopback, so a login's source is the client kind: a browser
//! page (its Origin, ignoring case) or a program (no Origin).

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cardd_api::ErrorCode;
use common::TestDaemon;
use serde_json::{json, Value};

const CODE_INVALID_CREDENTIALS: i64 = ErrorCode::InvalidCredentials.code() as i64;
const CODE_TOO_MANY_ATTEMPTS: i64 = ErrorCode::TooManyAttempts.code() as i64;
const CODE_SERVER_BUSY: i64 = ErrorCode::ServerBusy.code() as i64;
const CODE_FORBIDDEN: i64 = ErrorCode::Forbidden.code() as i64;
const CODE_RUN_NOT_FOUND: i64 = ErrorCode::RunNotFound.code() as i64;

/// `auth.login` with an optional `Origin` (a browser page) on a fresh connection; the reply.
async fn login_from(d: &TestDaemon, origin: Option<&str>, user: &str, password: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login",
        "params": {"username": user, "password": password}})
    .to_string();
    let headers: Vec<(&str, &str)> = origin.map(|o| vec![("Origin", o)]).unwrap_or_default();
    let reply = d.post(&body, &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn code_of(reply: &Value) -> i64 {
    reply["error"]["code"].as_i64().unwrap_or(0)
}

fn token_of(reply: &Value) -> String {
    reply["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {reply}"))
        .to_owned()
}

/// Audit records after `after_seq`, as the administrator sees them.
async fn audit_after(d: &TestDaemon, admin: &str, after_seq: u64) -> Vec<Value> {
    let listed = d
        .ok(
            "audit.list",
            json!({"after_seq": after_seq, "limit": 500}),
            Some(admin),
        )
        .await;
    listed.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_bad_logins_from_one_source_lock_out_no_other_source_or_user() {
    let d = TestDaemon::start_with(|c| c.auth.login_delay_max_s = 1).await;
    let browser = d.origin();
    // The attacker: a program guessing admin's password.
    for _ in 0..5 {
        let code = code_of(&login_from(&d, None, "admin", "guess").await);
        assert!(
            code == CODE_INVALID_CREDENTIALS || code == CODE_TOO_MANY_ATTEMPTS,
            "{code}"
        );
    }
    // Another source, another user: not affected at all.
    token_of(&login_from(&d, Some(&browser), "teller", "teller123").await);
    // The attacking source itself waits (briefly) whatever user name it tries next.
    assert_eq!(
        code_of(&login_from(&d, None, "teller", "teller123").await),
        CODE_TOO_MANY_ATTEMPTS
    );
    // The victim user waits at most the capped delay, then logs in from the console.
    let reply = login_from(&d, Some(&browser), "admin", "admin123").await;
    if reply.get("error").is_some() {
        assert_eq!(code_of(&reply), CODE_TOO_MANY_ATTEMPTS, "{reply}");
        let message = reply["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("请 1 秒后再试"), "{message}");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        token_of(&login_from(&d, Some(&browser), "admin", "admin123").await);
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_variants_of_an_origin_count_as_one_source() {
    let d = TestDaemon::start().await;
    let lower = d.origin();
    let upper = lower.to_uppercase();
    assert_ne!(lower, upper);
    // Four failures, alternating the Origin's case and the user name (so only the source's
    // count can add up): the fourth is beyond the three free ones.
    for i in 0..4 {
        let origin = if i % 2 == 0 { &lower } else { &upper };
        let reply = login_from(&d, Some(origin), &format!("nobody{i}"), "x").await;
        assert_eq!(code_of(&reply), CODE_INVALID_CREDENTIALS, "{reply}");
    }
    for origin in [&lower, &upper] {
        let reply = login_from(&d, Some(origin), "teller", "teller123").await;
        assert_eq!(code_of(&reply), CODE_TOO_MANY_ATTEMPTS, "{reply}");
    }
    // A program is another source.
    token_of(&login_from(&d, None, "teller", "teller123").await);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_login_loop_ends_no_teller_or_admin_session() {
    let d = TestDaemon::start().await;
    let teller = d.login("teller", "teller123").await;
    let admin = d.login("admin", "admin123").await;
    let kiosk_cap = d.daemon().config.auth.kiosk_sessions_max;
    let mut kiosk = Vec::new();
    for _ in 0..kiosk_cap * 2 + 8 {
        kiosk.push(d.login("kiosk", "kiosk123").await);
    }
    d.ok("auth.whoami", json!({}), Some(&teller)).await;
    d.ok("auth.whoami", json!({}), Some(&admin)).await;
    let mut live = 0;
    for token in &kiosk {
        if d.call("auth.whoami", json!({}), Some(token))
            .await
            .get("result")
            .is_some()
        {
            live += 1;
        }
    }
    assert_eq!(
        live,
        d.daemon().config.auth.sessions_per_user_max,
        "the kiosk ended only its own sessions"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_answered_during_a_48_login_burst_while_logins_queue() {
    let d = Arc::new(
        TestDaemon::start_with(|c| {
            c.auth.hashing_concurrent_max = 1;
            c.auth.hashing_wait_ms_max = 120_000;
            // The burst comes from this one test process: room for all 48 logins (the
            // per-process cap on unauthenticated connections is tested in local_attacker.rs).
            c.limits.connections_max = 128;
            c.limits.unauthenticated_connections_max = 100;
            c.limits.unauthenticated_connections_per_process_max = 64;
        })
        .await,
    );
    // Hold the only hashing slot: every login of the burst queues for it.
    let held = d.daemon().auth.hashing_permit().await.expect("the slot");
    let finished = Arc::new(AtomicUsize::new(0));
    let mut burst = Vec::new();
    for i in 0..48 {
        let (d, finished) = (d.clone(), finished.clone());
        burst.push(tokio::spawn(async move {
            let user = if i % 2 == 0 { "teller" } else { "supervisor" };
            let password = if i % 2 == 0 { "teller123" } else { "super123" };
            let reply = login_from(&d, None, user, password).await;
            finished.fetch_add(1, Ordering::SeqCst);
            reply
        }));
    }
    // Give the burst time to reach the daemon, then ask for /health (and a cheap method).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = d
        .raw(format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    d.ok("system.version", json!({}), None).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the logins were still queued when /health was answered"
    );
    drop(held);
    for login in burst {
        let reply = login.await.expect("join");
        assert!(reply.get("result").is_some(), "{reply}");
    }
    match Arc::try_unwrap(d) {
        Ok(d) => d.stop().await,
        Err(_) => panic!("the daemon is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waits_a_bounded_time_for_hashing_then_is_refused_as_busy() {
    let d = TestDaemon::start_with(|c| {
        c.auth.hashing_concurrent_max = 1;
        c.auth.hashing_wait_ms_max = 200;
    })
    .await;
    let held = d.daemon().auth.hashing_permit().await.expect("the slot");
    let reply = login_from(&d, None, "teller", "teller123").await;
    assert_eq!(code_of(&reply), CODE_SERVER_BUSY, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("系统繁忙，请稍后再试"), "{message}");
    drop(held);
    token_of(&login_from(&d, None, "teller", "teller123").await);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_audit_detail_is_truncated_and_the_action_audited() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    let before = d.audit_count().await;
    let huge = "名".repeat(15_000);
    let (code, _) = d
        .err(
            "operators.create",
            json!({"username": "clerk9", "display_name": huge, "role": "teller",
                "group_id": null, "password": "clerk9pw"}),
            Some(&admin),
        )
        .await;
    assert_eq!(code, ErrorCode::InvalidParams.code() as i64);
    let records = audit_after(&d, &admin, before).await;
    let started = records
        .iter()
        .find(|r| r["action"] == "operators.create" && r["outcome"] == "started")
        .expect("the intent was audited before acting");
    assert_eq!(started["detail"]["truncated"], true, "{started}");
    assert!(started["detail"]["bytes"].as_u64().unwrap_or(0) > 40_000);
    assert!(
        started.to_string().len() < 16 * 1024,
        "the record stays small"
    );
    assert!(records
        .iter()
        .any(|r| r["action"] == "operators.create" && r["outcome"] == "InvalidParams"));
    assert!(
        !started.to_string().contains("clerk9pw"),
        "no password in the audit log"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failed_logins_writes_a_bounded_number_of_audit_records() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    let before = d.audit_count().await;
    let browser = d.origin();
    let attempts = 60;
    for i in 0..attempts {
        let origin = (i % 2 == 0).then_some(browser.as_str());
        let reply = login_from(&d, origin, &format!("admin{}", i % 7), "guess").await;
        assert!(reply.get("error").is_some(), "{reply}");
    }
    let records = audit_after(&d, &admin, before).await;
    assert_eq!(
        records.len(),
        2,
        "one record per source so far, not one per attempt: {records:?}"
    );
    // The rest are counted and written when the interval ends (here: at shutdown).
    let daemon = d.daemon().clone();
    daemon.audit_refusals(daemon.refusals.drain());
    let records = audit_after(&d, &admin, before).await;
    assert_eq!(records.len(), 4, "{records:?}");
    let counted: u64 = records
        .iter()
        .map(|r| r["detail"]["refusals"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, attempts, "every failure is counted");
    assert!(records
        .iter()
        .all(|r| r["action"] == "auth.login" && r["detail"]["source"].is_string()));
    assert_eq!(
        d.ok("audit.verify", json!({}), Some(&admin)).await["chain_ok"],
        true
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_without_a_session_write_a_bounded_number_of_audit_records() {
    let d = TestDaemon::start().await;
    let admin = d.login("admin", "admin123").await;
    let before = d.audit_count().await;
    let forged = "f".repeat(64);
    for i in 0..40 {
        // No token, or a token-shaped string that names no session; a fresh connection each.
        let token = (i % 2 == 0).then_some(forged.as_str());
        let unauthenticated = ErrorCode::Unauthenticated.code() as i64;
        common::refused(&d, "auth.logout", json!({}), token, unauthenticated).await;
        let (code, _) = d
            .err("readers.release", json!({"reader_id": "sim:etc"}), token)
            .await;
        assert_eq!(code, ErrorCode::Unauthenticated.code() as i64);
    }
    let records = audit_after(&d, &admin, before).await;
    assert_eq!(
        records.len(),
        2,
        "one record per method so far, not one per call: {records:?}"
    );
    let daemon = d.daemon().clone();
    daemon.audit_refusals(daemon.refusals.drain());
    let records = audit_after(&d, &admin, before).await;
    let counted: u64 = records
        .iter()
        .map(|r| r["detail"]["refusals"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 80, "every refusal is counted: {records:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_audit_verify_true_across_segments() {
    let d = TestDaemon::start_with(|c| c.audit.segment_records = 5).await;
    let admin = d.login("admin", "admin123").await;
    for _ in 0..12 {
        let teller = d.login("teller", "teller123").await;
        d.ok("auth.logout", json!({}), Some(&teller)).await;
    }
    let seals = d.daemon().audit.seals().expect("seals");
    assert!(seals.len() >= 2, "{seals:?}");
    let verified = d.ok("audit.verify", json!({}), Some(&admin)).await;
    assert_eq!(verified["chain_ok"], true);
    let records = verified["records"].as_u64().expect("records");
    assert!(records > seals.last().expect("a seal").last_seq);
    // The sealed records are still listed, in order, from their segment files.
    let listed = audit_after(&d, &admin, 0).await;
    let seqs: Vec<u64> = listed.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=records).collect::<Vec<_>>());
    d.stop().await;
}

const ASK: &str = r#"
return {
  name = "test.ask", version = "1.0.0", title = "确认", role = { "teller", "supervisor" }, params = {},
  run = function(ctx, params)
    local first = ui.confirm("第一个问题？")
    local second = ui.confirm("第二个问题？")
    return { first = first, second = second }
  end,
}
"#;

/// Follows `run_id` until it waits for an answer or finishes; the run.
async fn next_prompt(d: &TestDaemon, token: &str, run_id: &str) -> Value {
    for _ in 0..50 {
        let run = d
            .ok("flows.get", json!({"run_id": run_id}), Some(token))
            .await;
        if run["state"] == "waiting" || run["state"] == "succeeded" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} did not ask");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_a_role_that_may_start_the_flow_answers_its_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ask.lua"), ASK).expect("write");
    let flows = dir.path().to_path_buf();
    let d = TestDaemon::start_with(move |c| c.flows.dir = Some(flows)).await;
    let teller = d.login("teller", "teller123").await;
    let admin = d.login("admin", "admin123").await;
    let supervisor = d.login("supervisor", "super123").await;
    d.ok(
        "operators.create",
        json!({"username": "teller2", "display_name": "柜员二",
        "role": "teller", "group_id": null, "password": "teller2pw"}),
        Some(&admin),
    )
    .await;
    let teller2 = d.login("teller2", "teller2pw").await;
    let run = d
        .ok(
            "flows.start",
            json!({"flow": "test.ask", "params": {}, "idempotency_key": "ask-1"}),
            Some(&teller),
        )
        .await;
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let waiting = next_prompt(&d, &teller, &run_id).await;
    let answer = |prompt: &Value| json!({"run_id": run_id, "prompt_id": prompt["prompt"]["prompt_id"], "answer": true});
    // An administrator sees the run but may not start this flow: it may not answer.
    common::refused(
        &d,
        "flows.answer",
        answer(&waiting),
        Some(&admin),
        CODE_FORBIDDEN,
    )
    .await;
    // Another teller does not even see it.
    let (code, _) = d
        .err("flows.answer", answer(&waiting), Some(&teller2))
        .await;
    assert_eq!(code, CODE_RUN_NOT_FOUND);
    // The owner answers the first question, a supervisor (allowed to start it) the second.
    d.ok("flows.answer", answer(&waiting), Some(&teller)).await;
    let second = loop {
        let run = next_prompt(&d, &teller, &run_id).await;
        if run["prompt"]["prompt_id"] != waiting["prompt"]["prompt_id"] {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    d.ok("flows.answer", answer(&second), Some(&supervisor))
        .await;
    let done = loop {
        let run = next_prompt(&d, &teller, &run_id).await;
        if run["state"] == "succeeded" {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let answered_by: Vec<&str> = done["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "answer")
        .map(|e| e["data"]["operator"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(answered_by, ["teller", "supervisor"], "{done}");
    d.stop().await;
}

/// `group.login` (集团充值登录) is a login like `auth.login`: throttled per user name and source,
/// its password checked off the async threads, and a guessing loop writes a bounded number of
/// audit records; a wrong group is a wrong password, counted the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_logins_are_throttled_and_bounded_in_the_audit_log() {
    let world = format!("group-login-guess-{}", std::process::id());
    let d = common::group::start_group_daemon(&world, |c| c.auth.login_delay_max_s = 1).await;
    let admin = d.login("admin", "admin123").await;
    let before = d.audit_count().await;
    let attempts = 30u64;
    let mut throttled = 0;
    for i in 0..attempts {
        // Wrong passwords, and the right password for another group.
        let (group, password) = if i % 3 == 0 {
            ("G002", "group123")
        } else {
            ("G001", "guess")
        };
        let (code, _) = d
            .err(
                "group.login",
                json!({"group_id": group, "username": "group1", "password": password}),
                None,
            )
            .await;
        assert!(
            code == CODE_INVALID_CREDENTIALS || code == CODE_TOO_MANY_ATTEMPTS,
            "{code}"
        );
        if code == CODE_TOO_MANY_ATTEMPTS {
            throttled += 1;
        }
    }
    assert!(
        throttled > 0,
        "repeated failures for one user name are throttled"
    );
    let records = audit_after(&d, &admin, before).await;
    assert!(
        records.len() <= 2,
        "one record per source so far, not one per attempt: {records:?}"
    );
    let daemon = d.daemon().clone();
    daemon.audit_refusals(daemon.refusals.drain());
    let records = audit_after(&d, &admin, before).await;
    let counted: u64 = records
        .iter()
        .map(|r| r["detail"]["refusals"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, attempts, "every failure is counted: {records:?}");
    assert!(
        records.iter().all(|r| r["action"] == "group.login"),
        "{records:?}"
    );
    // The right password for the right group still works once the capped wait is over (asked
    // again until then, each refusal only TooManyAttempts), and a success is one audit record.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let params = json!({"group_id": "G001", "username": "group1", "password": "group123"});
    loop {
        let before = d.audit_count().await;
        let reply = d.call("group.login", params.clone(), None).await;
        if reply.get("result").is_some() {
            let records = audit_after(&d, &admin, before).await;
            let logins: Vec<&Value> = records.iter().filter(|r| r["outcome"] == "ok").collect();
            assert_eq!(logins.len(), 1, "{records:?}");
            assert_eq!(logins[0]["action"], "group.login");
            break;
        }
        assert_eq!(code_of(&reply), CODE_TOO_MANY_ATTEMPTS, "{reply}");
        assert!(std::time::Instant::now() < deadline, "the wait is capped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop().await;
}
