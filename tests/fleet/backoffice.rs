//! The back office (后台) in Chromium against a real fleet: PostgreSQL, `cardd-host` with a
//! `[backoffice]` listen address and a `cardd` site S01 as processes, the pages driven through
//! chromedriver (`tests/it/webdriver`).
//!
//! * a teller is refused at the back-office login with the zh-CN message;
//! * an auditor approves a paid top-up on 额度充值审核 and the group's quota *at the site*
//!   (`group.info` as the group operator) grows by it;
//! * 充值记录 shows a load made at S01 as 已圈存, with its site;
//! * an order recorded 充值失败 whose load the host booked (its TAC verified) is shown on 退款审核
//!   with that evidence and no 退款 button; a direct JSON-RPC refund is refused too, and the
//!   order stays failed;
//! * 审计日志 and its 验证;
//! * 站点管理 shows when S01 last reported; an administrator revokes S01 there (through the
//!   confirm dialog) and the site's next call to the host (a teller's login) is refused;
//! * a page from a foreign origin cannot call the back office.
//!
//! Screenshots go to `target/screenshots/backoffice-*.png`; `UPDATE_SCREENSHOTS=1` also writes
//! them to `docs/screenshots/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cardd_group::model::{OrderStatus, PaymentOutcome};
use cardd_group::GroupHost;
use serde_json::{json, Value};

use cardd_fleet_launch::PLATE;

use crate::processes::{city_card_number, eventually, Fleet, FleetOptions};
use crate::webdriver::Browser;

const AUDITOR: (&str, &str) = ("auditor1", "auditor-pass-1");
const ADMIN: (&str, &str) = ("admin", "admin-pass-1");
const SUPERVISOR: (&str, &str) = ("super1", "super-pass-1");

/// Screenshots of this run, and (with `UPDATE_SCREENSHOTS=1`) the README's copies.
struct Shots {
    dirs: Vec<PathBuf>,
}

impl Shots {
    fn new() -> Shots {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("target").join("screenshots")];
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            dirs.push(root.join("docs").join("screenshots"));
        }
        Shots { dirs }
    }

    fn take(&self, browser: &Browser, name: &str) -> Result<()> {
        for dir in &self.dirs {
            browser.screenshot(&dir.join(format!("backoffice-{name}.png")))?;
        }
        Ok(())
    }
}

/// One JSON-RPC call to the back office, as a script would make it: the whole reply.
fn rpc(addr: SocketAddr, token: Option<&str>, method: &str, params: Value) -> Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "POST /rpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let json = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .with_context(|| format!("{method}: {reply:?}"))?;
    serde_json::from_str(json).with_context(|| format!("{method}: {json:?}"))
}

/// Logs `user` in on the page.
fn login(browser: &Browser, url: &str, (user, password): (&str, &str)) -> Result<()> {
    browser.goto(url)?;
    browser.type_into("#login-user", user)?;
    browser.type_into("#login-password", password)?;
    browser.click("#login-submit")?;
    browser.wait_text("#operator", user).map(|_| ())
}

fn logout(browser: &Browser) -> Result<()> {
    browser.click("#logout")?;
    browser.find("#login-user").map(|_| ())
}

/// Answers the open dialog's text field with `text` and presses its last button (确定).
fn answer_dialog(browser: &Browser, text: &str) -> Result<()> {
    browser.type_into("#dialog-input", text)?;
    browser.click("#dialog-buttons button:last-child")
}

/// Runs SQL on the fleet's database with psql (test setup a real site could not make).
fn psql(url: &str, sql: &str) -> Result<String> {
    let bin = cardd_pg_throwaway::bin_dir()
        .context("PostgreSQL's binaries")?
        .join("psql");
    let mut command = std::process::Command::new(bin);
    command.args([
        "-X",
        "-q",
        "-t",
        "-A",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        sql,
    ]);
    Ok(crate::processes::run(command, None)?)
}

fn serve_once(listener: &std::net::TcpListener, page: &str) -> Result<()> {
    let (mut stream, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf)?;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{page}",
        page.len()
    );
    stream.write_all(reply.as_bytes())?;
    Ok(())
}

#[test]
fn the_back_office_in_chromium_against_a_real_fleet() -> Result<()> {
    let mut fleet = Fleet::create_with(FleetOptions {
        sites: vec!["S01".into()],
        ..FleetOptions::default()
    })?;
    // 待核对 without the half hour an open load waits for its card.
    let config = std::fs::read_to_string(&fleet.host.config)?;
    std::fs::write(
        &fleet.host.config,
        config.replace("[backoffice]\n", "[backoffice]\nreview_wait_min = 0\n"),
    )?;
    fleet.host.start()?;
    fleet.sites[0].start()?;
    let (user, password) = AUDITOR;
    fleet.host.cli_with_input(
        &["operators", "add", "--role", "auditor", user],
        Some(&format!("{password}\n")),
    )?;
    fleet.host.cli_with_input(
        &["operators", "add", "--role", "supervisor", SUPERVISOR.0],
        Some(&format!("{}\n", SUPERVISOR.1)),
    )?;
    let bo = fleet
        .host
        .backoffice
        .context("the harness gives the host a back office")?;
    let url = format!("http://{bo}/");
    let browser = Browser::start()?;
    browser.set_window(1400, 1000)?;
    let shots = Shots::new();

    // A teller is sent to the site console.
    browser.goto(&url)?;
    browser.type_into("#login-user", "teller")?;
    browser.type_into("#login-password", "teller-pass-1")?;
    browser.click("#login-submit")?;
    browser.wait_text("#login-error", "柜员账号不能登录后台")?;
    shots.take(&browser, "login")?;
    println!("back office: a teller is refused at the login: ok");

    // A paid top-up approved: the quota at the site grows.
    let site = &fleet.sites[0];
    let group_token = site.group_login()?;
    let quota = |token: &str| -> Result<String> {
        let info = site.ok("group.info", json!({}), Some(token))?;
        Ok(info["available_quota"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let before = quota(&group_token)?;
    let db = Arc::new(cardd_store_pg::Database::open(&fleet.pg.url())?);
    let groups = cardd_store_pg::PgGroupHost::new(db, Arc::new(cardd_journal::clock::SystemClock));
    let topup = groups.create_topup("G001", "group1", 50_000, "额度充值")?;
    groups.record_payment(
        &topup.topup_id,
        &PaymentOutcome::Paid {
            bank_serial: "SANDBOX-BO-1".into(),
        },
    )?;
    login(&browser, &url, AUDITOR)?;
    browser.click("#nav-topups")?;
    browser.wait_text("#topups-table", &topup.topup_id)?;
    shots.take(&browser, "topups")?;
    browser.click(&format!("button.approve[data-topup='{}']", topup.topup_id))?;
    answer_dialog(&browser, "款已到账，同意增加额度")?;
    browser.wait_text("#dialog-message", "审核通过")?;
    browser.click("#dialog-buttons button")?;
    let after = quota(&group_token)?;
    let fen = |y: &str| -> i64 {
        let (a, b) = y.split_once('.').unwrap_or((y, "0"));
        a.parse::<i64>().unwrap_or(0) * 100 + b.parse::<i64>().unwrap_or(0)
    };
    ensure!(
        fen(&after) == fen(&before) + 50_000,
        "the quota at the site: {before} → {after}"
    );
    println!("back office: top-up approved, the quota at S01 {before} → {after} 元: ok");

    // 充值记录: a load made at S01 shows 已圈存, with its site.
    let record = fleet.host.recharge("5.00")?;
    let loaded = site.load(&record, "bo-load-1")?;
    ensure!(loaded["state"] == "succeeded", "{loaded}");
    browser.click("#nav-records")?;
    browser.type_into("#records-plate", PLATE)?;
    browser.click("#records-search")?;
    let row = browser.wait(
        "the record's row",
        "const r = [...document.querySelectorAll('#records-table tr')]
           .find(r => r.innerText.includes(arguments[0]));
         return r ? r.innerText : null",
        json!([record]),
    )?;
    let row = row.as_str().unwrap_or_default();
    ensure!(row.contains("已圈存") && row.contains("S01"), "{row}");
    shots.take(&browser, "records")?;
    println!("back office: 充值记录 shows the load at S01 as 已圈存: ok");

    // A failed order whose load the host booked: the evidence, no refund, here or over RPC.
    let recharged = site.group_recharge(&group_token, "10.00", "bo-landed-1")?;
    ensure!(recharged["state"] == "succeeded", "{recharged}");
    let card = city_card_number(0);
    let order = groups
        .orders_in(OrderStatus::Succeeded)?
        .into_iter()
        .rev()
        .find(|o| o.card_number == card)
        .context("the group order")?;
    // What a site that lost the card's answer might have recorded: 充值失败.
    psql(
        &fleet.pg.url(),
        &format!(
            "UPDATE group_orders SET status = 'failed', failure = '写卡超时，结果未返回' \
             WHERE order_id = '{}'",
            order.order_id
        ),
    )?;
    browser.click("#nav-refunds")?;
    let evidence = format!("#order-{}", order.order_id);
    browser.wait_text(&evidence, "卡片已圈存成功")?;
    let shown = browser.text(&evidence)?;
    ensure!(shown.contains("S01") && shown.contains(&card), "{shown}");
    let buttons = browser.js(
        "const c = document.querySelector(arguments[0]);
         return [!!c.querySelector('button.refund'), !!c.querySelector('button.resolve')]",
        json!([evidence]),
    )?;
    ensure!(
        buttons == json!([false, true]),
        "refund hidden, resolve offered: {buttons}"
    );
    shots.take(&browser, "refunds")?;
    let token = rpc(
        bo,
        None,
        "auth.login",
        json!({"username": user, "password": password}),
    )?;
    let token = token["result"]["token"]
        .as_str()
        .context("token")?
        .to_owned();
    let refused = rpc(
        bo,
        Some(&token),
        "refunds.refund",
        json!({"order_id": order.order_id, "reason": "客户要求退款"}),
    )?;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("不能退款"), "{refused}");
    ensure!(
        groups.order(&order.order_id)?.context("order")?.status == OrderStatus::Failed,
        "the order stays failed"
    );
    println!("back office: a booked load is shown landed, no 退款 on the page or over RPC: ok");

    // 审计日志 and 验证.
    browser.click("#nav-audit")?;
    browser.wait_text("#audit-table", "后台:auditor1")?;
    browser.click("#audit-verify")?;
    browser.wait_text("#audit-verify-result", "审计日志完整")?;
    shots.take(&browser, "audit")?;
    logout(&browser)?;

    // 待核对: the card pulled right after it took the credit, and never brought back. A
    // supervisor proposes 已到账, the same person cannot confirm, an auditor confirms: the
    // record is 已圈存 at the host.
    let lost = fleet.host.recharge("20.00")?;
    site.ok(
        "sim.pull_during_next_load",
        json!({"reader_id": "sim:etc", "before_write": false}),
        Some(&site.admin),
    )?;
    let run = site.load(&lost, "bo-pulled-1")?;
    ensure!(run["state"] == "failed", "{run}");
    ensure!(site.record(&lost)?["status"] == "loading");
    let card_of = |what: &str| -> Result<()> {
        browser
            .wait(
                what,
                "const c = [...document.querySelectorAll('#review-result .evidence-card')]
                   .find(c => c.innerText.includes(arguments[0]));
                 if (!c) return null;
                 const b = c.querySelector(arguments[1]);
                 if (!b) return null;
                 b.click();
                 return true",
                json!([lost, what]),
            )
            .map(|_| ())
    };
    login(&browser, &url, SUPERVISOR)?;
    browser.click("#nav-review")?;
    browser.wait_text("#review-result", &lost)?;
    card_of("button.propose-landed")?;
    answer_dialog(&browser, "客户卡片遗失；交易明细显示余额已增加")?;
    browser.wait_text("#dialog-message", "核定申请已提交")?;
    browser.click("#dialog-buttons button")?;
    browser.wait_text("#review-result", "另一位审核员确认")?;
    logout(&browser)?;
    login(&browser, &url, AUDITOR)?;
    browser.click("#nav-review")?;
    browser.wait_text("#review-result", "super1")?;
    shots.take(&browser, "review")?;
    card_of("button.confirm")?;
    browser.click("#dialog-buttons button:last-child")?;
    browser.wait_text("#dialog-message", "核定已确认")?;
    browser.click("#dialog-buttons button")?;
    ensure!(
        site.record(&lost)?["status"] == "loaded",
        "the verdict settled the record"
    );
    browser.wait_text("#review-result", "没有待核对的圈存")?;
    println!("back office: 待核对 decided by a supervisor and an auditor, the record 已圈存: ok");
    logout(&browser)?;

    // An administrator revokes S01: its next call to the host is refused.
    login(&browser, &url, ADMIN)?;
    browser.click("#nav-operators")?;
    browser.wait_text("#operators-table", user)?;
    shots.take(&browser, "operators")?;
    // The site reports to the host: the page shows when it last spoke.
    let (admin_user, admin_password) = ADMIN;
    let admin = rpc(
        bo,
        None,
        "auth.login",
        json!({"username": admin_user, "password": admin_password}),
    )?;
    let admin = admin["result"]["token"]
        .as_str()
        .context("token")?
        .to_owned();
    eventually(Duration::from_secs(15), "S01's report at the host", || {
        let sites = rpc(bo, Some(&admin), "sites.list", json!({}))?;
        Ok(sites["result"][0]["last_seen_at"].is_string())
    })?;
    browser.click("#nav-sites")?;
    browser.wait_text("#sites-table", "S01")?;
    browser.click("button.revoke[data-site='S01']")?;
    browser.wait_text("#dialog-message", "吊销站点 S01")?;
    shots.take(&browser, "sites-revoke")?;
    browser.click("#dialog-buttons button:last-child")?;
    browser.wait_text("#dialog-message", "已吊销")?;
    browser.click("#dialog-buttons button")?;
    browser.wait_text("#sites-table", "已吊销")?;
    let mut last = String::new();
    eventually(Duration::from_secs(10), "S01 refused by the host", || {
        let reply = site.call(
            "auth.login",
            json!({"username": "teller", "password": "teller-pass-1"}),
            None,
        )?;
        last = reply.to_string();
        Ok(reply.get("error").is_some())
    })?;
    ensure!(
        last.contains("发卡方后台"),
        "the site's host-refused message: {last}"
    );
    println!("back office: S01 revoked on 站点管理, its next login refused by the host: ok");

    // A page from a foreign origin cannot call the back office.
    let page = format!(
        r#"<!doctype html><html><body><p id="fetch">…</p><script>
fetch("http://{bo}/rpc", {{method: "POST", headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{jsonrpc: "2.0", id: 1, method: "auth.login",
    params: {{username: "admin", password: "admin-pass-1"}}}})}})
  .then(r => r.text()).then(t => document.getElementById("fetch").textContent = "answered: " + t,
        e => document.getElementById("fetch").textContent = "blocked: " + e);
</script></body></html>"#
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let foreign = format!("http://localhost:{}/", listener.local_addr()?.port());
    let server = std::thread::spawn(move || serve_once(&listener, &page));
    browser.goto(&foreign)?;
    server.join().expect("the foreign page server")?;
    let fetched = browser.wait(
        "the foreign page's fetch to settle",
        "const t = document.getElementById('fetch').textContent; return t === '…' ? null : t",
        json!([]),
    )?;
    ensure!(
        fetched.as_str().unwrap_or_default().starts_with("blocked"),
        "a foreign page called the back office: {fetched}"
    );
    println!("back office: a foreign page cannot call it: ok");
    Ok(())
}
