//! The teller console and the kiosk screen in a real browser: Debian's headless Chromium
//! driven through chromedriver, against the daemon started in-process on the embedded default.
//!
//! One browser serves every scenario (each on its own daemon and simulated world): a teller
//! logs in (the seed's 用户和密码错误 first), watches the card come and go, queries 充值记录,
//! runs a 圈存 end to end on the simulated card, asks for 修改圈存状态 and gets cardd's card
//! evidence, changes the password and is sent back to the login when the session ends; a page
//! from a foreign origin fails to call the API; the kiosk goes from idle through insert, choose,
//! confirm and result, and explains a card pulled mid-load; the group pages (browser/
//! group.rs) run when the daemon offers the group API.
//!
//! The tests assert what the pages show and what the card holds. Screenshots go to
//! `target/screenshots/`; `UPDATE_SCREENSHOTS=1` also writes them to `docs/screenshots/`, which
//! the README shows.

use crate::{common, webdriver};

mod etc;
mod group;
mod kiosk;

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use common::TestDaemon;
use serde_json::json;
use webdriver::Browser;

const ETC: &str = "sim:etc";

/// Words in Latin letters a teller, group operator or kiosk customer may see
/// ([`Browser::foreign_words`]): the names of card kinds and codes printed on cards and
/// receipts, the export formats, and the brand in the page title and header. (The simulated
/// readers of the embedded default have zh-CN names, 模拟 ETC 读卡器 …; a real reader's name is
/// shown as its device gives it, but none is attached in these tests.)
const ALLOWED_WORDS: &[&str] = &[
    "ETC", "OBU", "PIN", "TAC", "MAC", "CSV", "XLSX", "IC", "cardd",
    // The spreadsheet program an export opens in, named as Chinese offices name it (导出 Excel).
    "Excel",
];
const R200: &str = "R20240615000001";

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
            browser.screenshot(&dir.join(format!("{name}.png")))?;
        }
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A daemon on the embedded default with its own simulated world called `world`.
fn daemon(rt: &tokio::runtime::Runtime, world: &str) -> TestDaemon {
    let world = world.to_owned();
    rt.block_on(TestDaemon::start_with(move |c| {
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": world });
    }))
}

fn world(name: &str) -> cardd_sim::SimWorld {
    cardd_sim::named_world(name).expect("the simulated world")
}

fn balance_fen(world_name: &str) -> u32 {
    world(world_name)
        .card(ETC)
        .and_then(|c| c.balance())
        .expect("a card with a balance")
}

#[test]
fn teller_console_and_kiosk_in_chromium() -> Result<()> {
    let rt = runtime();
    let browser = Browser::start()?;
    let shots = Shots::new();
    console_load_and_card_evidence(&rt, &browser, &shots).context("console: 圈存")?;
    println!("browser: console login, 圈存, 修改圈存状态, 修改密码, session end: ok");
    foreign_origin_cannot_call(&rt, &browser).context("foreign origin")?;
    println!("browser: a foreign-origin page cannot call the API: ok");
    kiosk_from_insert_to_result(&rt, &browser, &shots).context("kiosk")?;
    println!("browser: kiosk idle → insert → choose → confirm → result, card pulled mid-load: ok");
    kiosk::kiosk_from_idle_with_the_sim_panel(&rt, &browser, &shots).context("kiosk demo")?;
    kiosk::no_panel_without_demo(&rt, &browser).context("kiosk without --demo")?;
    println!("browser: kiosk from idle through the 模拟读卡器 panel, a pull mid-load settled; no panel without --demo: ok");
    group::group_pages(&rt, &browser, &shots).context("group pages")?;
    obu_issuance(&rt, &browser, &shots).context("OBU issuance")?;
    etc::etc_counter(&rt, &browser, &shots).context("ETC counter")?;
    println!("browser: ETC counter: 充值记录, details, 圈存, 修改圈存状态 and 二次圈存 (teller, supervisor), keyboard, session warning: ok");
    Ok(())
}

/// OBU发行 from the console, when the daemon has the `obu.issue` flow: the demo vehicle's OBU on
/// the simulated programmer is written, activated and read back.
fn obu_issuance(rt: &tokio::runtime::Runtime, browser: &Browser, shots: &Shots) -> Result<()> {
    let w = format!("browser-obu-{}", std::process::id());
    let d = daemon(rt, &w);
    let teller = rt.block_on(d.login("teller", "teller123"));
    let flows = rt.block_on(d.ok("flows.list", json!({}), Some(&teller)));
    let has_obu = flows
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["name"] == "obu.issue"));
    if !has_obu {
        println!("browser: OBU issuance SKIPPED: this daemon has no obu.issue flow (flows.list)");
        rt.block_on(d.stop());
        return Ok(());
    }
    login(browser, &format!("{}/", d.origin()), "teller", "teller123")?;
    browser.click("#nav-obu-issue")?;
    browser.type_into("#flow-plate", "陕A12345")?;
    browser.click("#flow-start")?;
    browser.wait_text("#dialog-message", "是否发行？")?;
    shots.take(browser, "obu-confirm")?;
    answer(browser, "true")?;
    let done = browser.wait_text("#obu-success", "OBU发行成功")?;
    ensure!(
        done.contains("已激活") && done.contains("陕A12345"),
        "the OBU page: {done}"
    );
    shots.take(browser, "obu-issued")?;
    println!("browser: OBU issuance: ok");
    rt.block_on(d.stop());
    Ok(())
}

fn login(browser: &Browser, base: &str, user: &str, password: &str) -> Result<()> {
    browser.goto(base)?;
    browser.type_into("#login-user", user)?;
    browser.type_into("#login-password", password)?;
    browser.click("#login-submit")
}

/// Answers the open dialog with the button whose value is `answer`.
fn answer(browser: &Browser, answer: &str) -> Result<()> {
    browser.click(&format!(
        "#dialog:not([hidden]) #dialog-buttons button[data-answer=\"{answer}\"]"
    ))
}

fn console_load_and_card_evidence(
    rt: &tokio::runtime::Runtime,
    browser: &Browser,
    shots: &Shots,
) -> Result<()> {
    let w = format!("browser-console-{}", std::process::id());
    let d = daemon(rt, &w);
    let base = format!("{}/", d.origin());

    // The seed's login error, never saying which part was wrong.
    login(browser, &base, "teller", "wrong-password")?;
    browser.wait_text("#login-error", "用户和密码错误")?;
    shots.take(browser, "console-login-error")?;
    login(browser, &base, "teller", "teller123")?;
    browser.wait_text("#operator", "柜员")?;
    let nav = browser.wait_text("#nav", "充值记录")?;
    ensure!(nav.contains("修改密码"), "the teller's navigation: {nav}");
    ensure!(
        !nav.contains("操作员管理"),
        "a teller has no administration: {nav}"
    );

    // Live card status from the WebSocket: the card leaves and comes back.
    let reader = format!("#readers [data-reader=\"{ETC}\"]");
    browser.wait_text(&reader, "余额 100.00 元")?;
    let card = world(&w).remove_card(ETC).expect("the demo card");
    browser.wait_text(&reader, "无卡")?;
    world(&w)
        .insert_card(ETC, card)
        .context("inserting the card")?;
    browser.wait_text(&reader, "余额 100.00 元")?;

    // 充值记录 of the demo vehicle, every field.
    browser.click("#nav-etc-records")?;
    browser.type_into("#rec-plate", "陕A12345")?;
    browser.click("#rec-query")?;
    let table = browser.wait_text("#rec-table", R200)?;
    for expected in [
        "R20240620000001",
        "R20240601000001",
        "未圈存",
        "已圈存",
        "200.00",
    ] {
        ensure!(
            table.contains(expected),
            "{expected} missing from the records: {table}"
        );
    }
    shots.take(browser, "console-records")?;

    // 圈存 with the seed's confirmation, on the simulated card.
    browser.click(&format!(
        "tr[data-record=\"{R200}\"] button[data-action=\"load\"]"
    ))?;
    browser.wait_text(
        "#dialog-message",
        "卡内余额：100.00元。圈存金额：200.00元。是否圈存？",
    )?;
    shots.take(browser, "console-load-confirm")?;
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "圈存成功！")?;
    let receipt = browser.text("#run-result")?;
    ensure!(receipt.contains("300.00 元"), "the 圈存 receipt: {receipt}");
    shots.take(browser, "console-load-done")?;
    ensure!(balance_fen(&w) == 30_000, "the card holds 300.00 yuan");
    answer(browser, "true")?;
    browser.wait_text("#record-panel", "已圈存")?;
    browser.wait_text(&reader, "余额 300.00 元")?;

    // 修改圈存状态: the seed's question, then cardd's answer from the card.
    browser.click("#det-unload")?;
    browser.wait_text("#dialog-message", "确定将充值记录改为【未圈存】的状态吗？")?;
    answer(browser, "true")?;
    let evidence = browser.wait_text("#evidence", "卡片证实该笔圈存已写入卡内")?;
    ensure!(evidence.contains("200.00"), "the card evidence: {evidence}");
    browser.wait_text("#dialog-body", "请勿重复圈存")?;
    shots.take(browser, "console-card-evidence")?;
    answer(browser, "true")?;
    let teller = rt.block_on(d.login("teller", "teller123"));
    let record = rt.block_on(d.ok(
        "etc.records.get",
        json!({ "record_id": R200 }),
        Some(&teller),
    ));
    ensure!(
        record["status"] == "loaded",
        "the record after the refusal: {record}"
    );
    ensure!(balance_fen(&w) == 30_000, "nothing loaded twice");

    // 修改密码: a wrong confirmation is refused, then 密码已修改.
    browser.click("#nav-password")?;
    browser.type_into("#pw-old", "teller123")?;
    browser.type_into("#pw-new", "newpass456")?;
    browser.type_into("#pw-confirm", "newpass457")?;
    browser.click("#pw-submit")?;
    browser.wait_text("#dialog-title", "密码未修改")?;
    answer(browser, "true")?;
    browser.type_into("#pw-confirm", "newpass456")?;
    browser.click("#pw-submit")?;
    browser.wait_text("#dialog-message", "密码已修改")?;
    answer(browser, "true")?;

    // The session ends (as after the idle timeout): the next action returns to the login.
    let token = browser.js("return sessionStorage.getItem('cardd.token')", json!([]))?;
    let token = token.as_str().context("the console's token")?.to_owned();
    rt.block_on(d.ok("auth.logout", json!({}), Some(&token)));
    browser.click("#nav-card")?;
    browser.click("#card-read")?;
    browser.wait_text("#login-error", "登录已超时，请重新登录")?;
    rt.block_on(d.stop());
    Ok(())
}

/// A page served from another origin tries the API with fetch (JSON, so with a CORS preflight),
/// with a "simple" no-cors POST, and with a WebSocket; the daemon answers none of them.
fn foreign_origin_cannot_call(rt: &tokio::runtime::Runtime, browser: &Browser) -> Result<()> {
    let w = format!("browser-origin-{}", std::process::id());
    let d = daemon(rt, &w);
    let audit_before = rt.block_on(d.audit_count());
    let target = d.origin();
    let page = format!(
        r#"<!doctype html><html><body><p id="fetch">…</p><p id="ws">…</p><script>
const login = JSON.stringify({{jsonrpc: "2.0", id: 1, method: "auth.login",
  params: {{username: "teller", password: "teller123"}}}});
fetch("{target}/", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: login}})
  .then(r => r.text()).then(t => document.getElementById("fetch").textContent = "answered: " + t,
        e => document.getElementById("fetch").textContent = "blocked: " + e);
fetch("{target}/", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: login}})
  .catch(() => {{}});
const ws = new WebSocket("ws://{host}/");
ws.onopen = () => document.getElementById("ws").textContent = "open";
ws.onclose = () => {{ if (document.getElementById("ws").textContent !== "open") document.getElementById("ws").textContent = "blocked"; }};
</script></body></html>"#,
        host = d.host(),
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
        "a foreign page read the API: {fetched}"
    );
    let ws = browser.wait(
        "the foreign page's WebSocket to settle",
        "const t = document.getElementById('ws').textContent; return t === '…' ? null : t",
        json!([]),
    )?;
    ensure!(ws == "blocked", "a foreign page opened the WebSocket: {ws}");
    // Nothing reached a method: no login (not even a failed one) was audited.
    ensure!(
        rt.block_on(d.audit_count()) == audit_before,
        "the foreign page's calls reached the API"
    );
    rt.block_on(d.stop());
    Ok(())
}

/// Serves `page` to one GET on `listener` (the foreign site).
fn serve_once(listener: &std::net::TcpListener, page: &str) -> Result<()> {
    let (mut stream, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf)?;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    stream.write_all(reply.as_bytes())?;
    Ok(())
}

/// Yuan with two decimals (`"5450.00"`) in fen.
fn fen(yuan: &str) -> Result<i64> {
    let (whole, cents) = yuan.split_once('.').context("two decimals")?;
    ensure!(cents.len() == 2, "two decimals: {yuan}");
    Ok(whole.parse::<i64>()? * 100 + cents.parse::<i64>()?)
}

fn screen(browser: &Browser, name: &str) -> Result<()> {
    browser.wait(
        &format!("the kiosk's {name} screen"),
        "return document.body.dataset.screen === arguments[0]",
        json!([name]),
    )?;
    Ok(())
}

fn kiosk_from_insert_to_result(
    rt: &tokio::runtime::Runtime,
    browser: &Browser,
    shots: &Shots,
) -> Result<()> {
    let w = format!("browser-kiosk-{}", std::process::id());
    let d = daemon(rt, &w);
    browser.set_viewport(1024, 768)?;
    let card = world(&w).remove_card(ETC).expect("the demo card");

    // Set up once with the kiosk account, then idle: 请插入卡片.
    browser.goto(&format!("{}/kiosk", d.origin()))?;
    screen(browser, "setup")?;
    browser.type_into("#setup-user", "kiosk")?;
    browser.type_into("#setup-password", "kiosk123")?;
    browser.click("#setup-submit")?;
    screen(browser, "idle")?;
    browser.wait_text("#screen-idle", "请插入卡片")?;
    kiosk::fits(browser, "the idle screen", true)?;
    shots.take(browser, "kiosk-idle")?;

    // The card goes in: its two pending recharges to choose from.
    world(&w)
        .insert_card(ETC, card)
        .context("inserting the card")?;
    screen(browser, "choose")?;
    browser.wait_text("#choose-message", "2 笔待圈存")?;
    kiosk::fits(browser, "the choice", true)?;
    shots.take(browser, "kiosk-choose")?;
    let chosen = browser.js(
        "const b = [...document.querySelectorAll('#choose-list button')].find(b => b.textContent.includes('200.00元')); \
         b.id = 'pick'; return b.textContent",
        json!([]),
    )?;
    ensure!(
        chosen.as_str().unwrap_or_default().contains(R200),
        "the kiosk's choice: {chosen}"
    );
    browser.click("#pick")?;
    screen(browser, "confirm")?;
    browser.wait_text(
        "#confirm-message",
        "卡内余额：100.00元。圈存金额：200.00元。是否圈存？",
    )?;
    kiosk::fits(browser, "the confirmation", true)?;
    shots.take(browser, "kiosk-confirm")?;
    let at_confirm = world(&w).apdu_count(ETC);
    browser.click("#confirm-yes")?;
    screen(browser, "result")?;
    browser.wait_text("#result-message", "圈存成功！")?;
    browser.wait_text("#result-pending", "该卡还有 1 笔充值待圈存")?;
    let receipt = browser.text("#result-fields")?;
    ensure!(
        receipt.contains("200.00 元") && receipt.contains("300.00 元"),
        "the kiosk's receipt: {receipt}"
    );
    kiosk::fits(browser, "the result", true)?;
    shots.take(browser, "kiosk-result")?;
    ensure!(balance_fen(&w) == 30_000, "the card holds 300.00 yuan");
    // The load's last exchange with the card is the CREDIT.
    let credit_offset = world(&w).apdu_count(ETC) - at_confirm;

    // Taking the card returns to idle.
    let card = world(&w).remove_card(ETC).expect("the card");
    screen(browser, "idle")?;

    // The card is pulled right after it executed CREDIT of the 50.00 recharge.
    world(&w)
        .insert_card(ETC, card)
        .context("inserting the card")?;
    screen(browser, "confirm")?;
    browser.wait_text("#confirm-message", "圈存金额：50.00元")?;
    let at = world(&w).apdu_count(ETC) + credit_offset;
    world(&w).set_fault_plan(
        ETC,
        cardd_sim::FaultPlan::new().at(at, cardd_sim::FaultKind::RemoveAfterExec),
    )?;
    browser.click("#confirm-yes")?;
    screen(browser, "error")?;
    browser.wait_text("#screen-error", "重新插入")?;
    kiosk::fits(browser, "the card pulled mid-load", true)?;
    shots.take(browser, "kiosk-card-pulled")?;
    let pulled = world(&w).take_pocket(ETC).expect("the pulled card");
    ensure!(pulled.balance() == Some(35_000), "the card took the credit");

    // The same card back: cardd reads it, finds the load, and loads nothing again.
    world(&w)
        .insert_card(ETC, pulled)
        .context("inserting the pulled card")?;
    screen(browser, "result")?;
    browser.wait_text("#result-message", "没有待圈存")?;
    kiosk::fits(browser, "the card back", true)?;
    shots.take(browser, "kiosk-card-back")?;
    ensure!(balance_fen(&w) == 35_000, "nothing loaded twice");
    browser.reset_viewport()?;
    rt.block_on(d.stop());
    Ok(())
}

/// The pages go through the same guard as the API: another Host (DNS rebinding) or a foreign
/// Origin gets a refusal, not the console; the daemon's own Host gets the page with its policy.
#[tokio::test]
async fn pages_are_served_only_under_the_daemons_own_host_and_origin() {
    let d = TestDaemon::start().await;
    let get = |host: &str, origin: Option<&str>, path: &str| {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: close\r\n\r\n")
    };
    for path in ["/", "/kiosk", "/web/console.js"] {
        let page = d.raw(get(&d.host(), None, path)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let policy = page.header("content-security-policy").unwrap_or_default();
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");

        let rebound = d.raw(get("evil.example:7420", None, path)).await;
        assert_eq!(rebound.status, 403, "{path} under another Host");
        assert!(!rebound.body.contains("<html"), "{path}");
        let foreign = d
            .raw(get(&d.host(), Some("http://evil.example"), path))
            .await;
        assert_eq!(foreign.status, 403, "{path} for a foreign Origin");
        assert!(!foreign.body.contains("<html"), "{path}");
    }
    let missing = d.raw(get(&d.host(), None, "/web/missing.js")).await;
    assert_eq!(missing.status, 404);
    d.stop().await;
}
