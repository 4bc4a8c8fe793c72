//! The ETC counter in the console, the way the seed describes it: 登录, 记录查询 → 充值记录 by
//! 车牌号码, 车牌颜色 and the time range, the record's details with every seed field, 圈存 with
//! 卡内余额：xxx元。圈存金额：xxx元。是否圈存？, and 修改圈存状态 followed by 二次圈存, for a
//! teller whose card proves the earlier load did not land and for a supervisor with a reason.
//!
//! Along the way: the keyboard defaults of the shared dialog (focus on 取消, Enter on a money
//! question loads nothing, Esc cancels), the session warning a minute before the idle timeout
//! and what was typed kept over the re-login, readers named in zh-CN and only the ones the
//! role uses, and every state checked at 1280×800 and 1024×768 for cut-off actions and words a
//! teller cannot read.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::webdriver::{Browser, KEY_ENTER, KEY_ESCAPE};
use super::{answer, balance_fen, login, world, Shots, ALLOWED_WORDS, ETC, R200};

/// The demo's 50.00 yuan 未圈存 record (网上银行, 2024-06-20 14:30).
const R50: &str = "R20240620000001";
/// The demo's 已圈存 record of 100.00 yuan, loaded before cardd: nothing proves it either way.
const R_OLD: &str = "R20240601000001";
/// The session idle timeout of this scenario's daemon, in seconds: the warning comes a minute
/// before the end, so five seconds after the last call.
const IDLE_TIMEOUT_S: u64 = 65;

/// Checks the page at 1280×800 and 1024×768: no action cut off, no words a teller cannot read.
fn check_screen(browser: &Browser, what: &str) -> Result<()> {
    check_screen_allowing(browser, what, &[])
}

/// [`check_screen`], with `also` allowed besides [`ALLOWED_WORDS`].
fn check_screen_allowing(browser: &Browser, what: &str, also: &[&str]) -> Result<()> {
    let allowed: Vec<&str> = ALLOWED_WORDS.iter().chain(also).copied().collect();
    for (width, height) in [(1024, 768), (1280, 800)] {
        browser.set_viewport(width, height)?;
        let cut = browser.actions_outside_viewport(false)?;
        ensure!(
            cut.is_empty(),
            "{what} at {width}px: actions cut off: {cut:?}"
        );
        let words = browser.foreign_words(&allowed)?;
        ensure!(
            words.is_empty(),
            "{what} at {width}px: foreign words {words:?}"
        );
    }
    Ok(())
}

/// Sets a form control's value as a person picking it would (a date picker, a select).
fn set_value(browser: &Browser, css: &str, value: &str) -> Result<()> {
    browser.find(css)?;
    browser.js(
        "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
         e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([css, value]),
    )?;
    Ok(())
}

/// Clicks a button of the record panel, which is drawn again after every action: a click that
/// lands on the panel being replaced is tried again on the new one.
fn click_panel(browser: &Browser, css: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..20 {
        match browser.click(css) {
            Ok(()) => return Ok(()),
            Err(e) if format!("{e:#}").contains("stale element") => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.context("no click")?)
}

fn dialog_closed(browser: &Browser) -> Result<()> {
    browser.wait(
        "the dialog to close",
        "return document.getElementById('dialog').hidden",
        json!([]),
    )?;
    Ok(())
}

/// The focused element's answer value in the dialog (`false` is 取消).
fn focused_answer(browser: &Browser) -> Result<String> {
    let v = browser.js(
        "const e = document.activeElement; return e ? e.getAttribute('data-answer') : null",
        json!([]),
    )?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

/// 记录查询 → 充值记录 for the demo vehicle over June 2024.
fn query_june(browser: &Browser) -> Result<String> {
    browser.click("#nav-etc-records")?;
    browser.type_into("#rec-plate", "陕A12345")?;
    set_value(browser, "#rec-colour", "0")?;
    set_value(browser, "#rec-from", "2024-06-01")?;
    set_value(browser, "#rec-to", "2024-06-30")?;
    browser.click("#rec-query")?;
    browser.wait_text("#rec-table", R_OLD)
}

/// True when the record panel shows record `arguments[0]` with 充值状态 `arguments[1]`.
const STATUS_IS: &str = "const p = document.querySelector('#record-panel'); if (!p || p.dataset.record !== arguments[0]) return false; \
    const dt = [...p.querySelectorAll('#rec-fields dt')].find(d => d.textContent === '充值状态'); \
    return !!dt && dt.nextElementSibling.textContent === arguments[1]";

fn wait_status(browser: &Browser, record: &str, status: &str) -> Result<String> {
    browser.wait("the record's status", STATUS_IS, json!([record, status]))?;
    browser.text("#record-panel")
}

fn open_details(browser: &Browser, record: &str, status: &str) -> Result<String> {
    click_panel(
        browser,
        &format!("tr[data-record=\"{record}\"] button[data-action=\"details\"]"),
    )?;
    browser.wait("the record's details", STATUS_IS, json!([record, status]))?;
    browser.text("#record-panel")
}

pub(super) fn etc_counter(
    rt: &tokio::runtime::Runtime,
    browser: &Browser,
    shots: &Shots,
) -> Result<()> {
    let w = format!("browser-etc-{}", std::process::id());
    let world_name = w.clone();
    let d = rt.block_on(super::common::TestDaemon::start_with(move |c| {
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": world_name });
        c.auth.session_idle_timeout_s = IDLE_TIMEOUT_S;
    }));
    let base = format!("{}/", d.origin());
    browser.set_viewport(1280, 800)?;

    // 登录: the operator by name; the readers a teller uses, named in zh-CN.
    login(browser, &base, "teller", "teller123")?;
    browser.wait_text("#operator", "柜员小王")?;
    browser.wait_text(
        &format!("#readers [data-reader=\"{ETC}\"]"),
        "余额 100.00 元",
    )?;
    let readers = browser.text("#readers")?;
    ensure!(
        readers.contains("模拟 ETC 读卡器") && !readers.contains("城市一卡通"),
        "a teller's readers: {readers}"
    );
    check_screen(browser, "the teller's first page")?;

    // 充值记录 with the start after the end: said in words, nothing queried.
    browser.click("#nav-etc-records")?;
    browser.type_into("#rec-plate", "陕A12345")?;
    set_value(browser, "#rec-from", "2024-06-30")?;
    set_value(browser, "#rec-to", "2024-06-01")?;
    browser.click("#rec-query")?;
    browser.wait_text("#dialog-message", "晚于充值结束日期")?;
    check_screen(browser, "reversed dates")?;
    browser.press(KEY_ESCAPE)?;
    dialog_closed(browser)?;

    // 充值记录 by 车牌号码, 车牌颜色, 起止时间: the demo vehicle's three records.
    let table = query_june(browser)?;
    for expected in [R_OLD, R200, R50, "未圈存", "已圈存", "陕A12345", "蓝色"] {
        ensure!(table.contains(expected), "{expected} missing: {table}");
    }
    check_screen(browser, "充值记录")?;
    shots.take(browser, "etc-records")?;

    // The details: every field the seed lists.
    let details = open_details(browser, R50, "未圈存")?;
    for expected in [
        "用户卡卡号",
        "61011801000000000001",
        "车牌号",
        "车牌颜色",
        "蓝色",
        "充值前的金额",
        "充值金额",
        "50.00 元",
        "充值后的金额",
        "充值时间",
        "2024-06-20 14:30:00",
        "充值状态",
        "操作员",
        "柜员小王",
    ] {
        ensure!(details.contains(expected), "{expected} missing: {details}");
    }
    check_screen(browser, "充值记录详情")?;
    shots.take(browser, "etc-record-details")?;

    // 圈存: the question starts on 取消, so Enter loads nothing; Esc cancels too.
    click_panel(browser, "#det-load")?;
    let question = "卡内余额：100.00元。圈存金额：50.00元。是否圈存？";
    browser.wait_text("#dialog-message", question)?;
    ensure!(
        focused_answer(browser)? == "false",
        "the money question starts on 取消"
    );
    check_screen(browser, "是否圈存？")?;
    browser.press(KEY_ENTER)?;
    browser.wait_text("#dialog-message", "已取消圈存")?;
    ensure!(balance_fen(&w) == 10_000, "Enter loaded nothing");
    answer(browser, "true")?;
    click_panel(browser, "#det-load")?;
    browser.wait_text("#dialog-message", question)?;
    browser.press(KEY_ESCAPE)?;
    browser.wait_text("#dialog-message", "已取消圈存")?;
    browser.press(KEY_ESCAPE)?;
    dialog_closed(browser)?;
    ensure!(balance_fen(&w) == 10_000, "Esc loaded nothing");

    // 圈存 confirmed with the mouse: 圈存成功！
    click_panel(browser, "#det-load")?;
    browser.wait_text("#dialog-message", question)?;
    let at_confirm = world(&w).apdu_count(ETC);
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "圈存成功！")?;
    // The load's last exchange with the card is the CREDIT.
    let credit_offset = world(&w).apdu_count(ETC) - at_confirm;
    ensure!(balance_fen(&w) == 15_000, "the card holds 150.00 yuan");
    check_screen(browser, "圈存成功！")?;
    answer(browser, "true")?;
    wait_status(browser, R50, "已圈存")?;

    // The seed's case: R200's write fails (the card leaves before CREDIT reaches it) and the
    // record is set to 已圈存 anyway, on someone's word alone; the card comes back.
    let teller = rt.block_on(d.login("teller", "teller123"));
    let lost = rt.block_on(d.drive(
        &teller,
        json!({"flow": "etc.load", "params": {"record_id": R200}, "idempotency_key": "lost",
               "reader_id": ETC}),
        |_| {
            let sim = world(&w);
            let at = sim.apdu_count(ETC) + credit_offset;
            sim.set_fault_plan(
                ETC,
                cardd_sim::FaultPlan::new().at(at, cardd_sim::FaultKind::RemoveBeforeExec),
            )
            .expect("the fault plan");
            json!(true)
        },
    ));
    ensure!(
        lost.done["state"] == "failed",
        "the lost load: {}",
        lost.done
    );
    let card = world(&w).take_pocket(ETC).context("the pulled card")?;
    let host = d.daemon().host.as_ref().context("the host")?;
    host.flag_reconciliation(R200, "原系统", "写卡失败")?;
    host.resolve_reconciliation(R200, "原系统", true, "以为已写卡")?;
    world(&w).insert_card(ETC, card)?;
    browser.wait_text(
        &format!("#readers [data-reader=\"{ETC}\"]"),
        "余额 150.00 元",
    )?;

    // 修改圈存状态 by the teller: the card proves the load did not land.
    browser.click("#rec-query")?;
    browser.wait_text("#rec-table", R200)?;
    open_details(browser, R200, "已圈存")?;
    click_panel(browser, "#det-unload")?;
    browser.wait_text("#dialog-message", "确定将充值记录改为【未圈存】的状态吗？")?;
    ensure!(
        focused_answer(browser)? == "false",
        "the question starts on 取消"
    );
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "修改圈存状态成功！请进行圈存操作")?;
    check_screen(browser, "修改圈存状态成功")?;
    shots.take(browser, "etc-mark-not-loaded")?;
    answer(browser, "true")?;
    wait_status(browser, R200, "未圈存")?;

    // 二次圈存.
    click_panel(browser, "#det-load")?;
    browser.wait_text(
        "#dialog-message",
        "卡内余额：150.00元。圈存金额：200.00元。是否圈存？",
    )?;
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "圈存成功！")?;
    ensure!(balance_fen(&w) == 35_000, "200.00 yuan loaded once");
    answer(browser, "true")?;
    wait_status(browser, R200, "已圈存")?;

    // The old record: the card cannot prove it either way, so it is not a teller's call; the
    // answer says so, not "put the card on the reader" (it is there).
    open_details(browser, R_OLD, "已圈存")?;
    click_panel(browser, "#det-unload")?;
    answer(browser, "true")?;
    let refusal = browser.wait_text("#dialog .dialog", "不能改为未圈存")?;
    ensure!(
        refusal.contains("请主管核对") && !refusal.contains("放在读卡器上"),
        "the teller's refusal: {refusal}"
    );
    check_screen(browser, "the teller's refusal")?;
    shots.take(browser, "etc-mark-refused")?;
    answer(browser, "true")?;
    dialog_closed(browser)?;

    // A minute before the idle timeout: a warning, once; 继续使用 keeps the session.
    browser.wait_text("#session-warning span", "1分钟后超时")?;
    check_screen(browser, "the session warning")?;
    shots.take(browser, "console-session-warning")?;
    browser.click("#session-keep")?;
    browser.wait(
        "the warning to go",
        "return !document.getElementById('session-warning')",
        json!([]),
    )?;

    // The session ends anyway: one message at the login, and what was typed is back after it.
    browser.type_into("#rec-plate", "陕A12345")?;
    set_value(browser, "#rec-from", "2024-06-02")?;
    let token = browser.js("return sessionStorage.getItem('cardd.token')", json!([]))?;
    let token = token.as_str().context("the console's token")?.to_owned();
    rt.block_on(d.ok("auth.logout", json!({}), Some(&token)));
    browser.click("#rec-query")?;
    browser.wait_text("#login-error", "登录已超时，请重新登录")?;
    ensure!(
        browser.js("return document.getElementById('dialog').hidden", json!([]))? == true,
        "the end of the session is said once, at the login"
    );
    browser.type_into("#login-password", "teller123")?;
    browser.click("#login-submit")?;
    browser.wait_text("#operator", "柜员小王")?;
    let kept = browser.js(
        "return [document.getElementById('rec-plate').value, document.getElementById('rec-from').value]",
        json!([]),
    )?;
    ensure!(
        kept == json!(["陕A12345", "2024-06-02"]),
        "typed before the re-login: {kept}"
    );

    // The unfunded test load is not a teller's: no second 圈存 among the other flows.
    if browser.js("return !!document.getElementById('nav-flows')", json!([]))? == true {
        browser.click("#nav-flows")?;
        let flows = browser.text("#page")?;
        ensure!(!flows.contains("测试圈存"), "a teller's flows: {flows}");
    }
    browser.click("#logout")?;

    // A supervisor changes the old record with a reason, then 二次圈存.
    login(browser, &base, "supervisor", "super123")?;
    browser.wait_text("#operator", "主管老李")?;
    query_june(browser)?;
    open_details(browser, R_OLD, "已圈存")?;
    click_panel(browser, "#det-unload")?;
    browser.wait_text("#dialog-message", "确定将充值记录改为【未圈存】的状态吗？")?;
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "请填写修改原因")?;
    check_screen(browser, "the supervisor's reason")?;
    shots.take(browser, "etc-supervisor-reason")?;
    browser.type_into("#dialog-input", "核对卡内余额与交易记录，客户称该笔未到账")?;
    browser.press(KEY_ENTER)?;
    browser.wait_text("#dialog-message", "修改圈存状态成功！请进行圈存操作")?;
    answer(browser, "true")?;
    let now = wait_status(browser, R_OLD, "未圈存")?;
    ensure!(
        now.contains("主管老李"),
        "the history names the supervisor: {now}"
    );
    click_panel(browser, "#det-load")?;
    browser.wait_text(
        "#dialog-message",
        "卡内余额：350.00元。圈存金额：100.00元。是否圈存？",
    )?;
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "圈存成功！")?;
    ensure!(balance_fen(&w) == 45_000, "100.00 yuan loaded");
    answer(browser, "true")?;
    wait_status(browser, R_OLD, "已圈存")?;

    // Without the card a supervisor may go on, and the journal still speaks: this load has its
    // verified TAC, so it stays 已圈存.
    let card = world(&w).remove_card(ETC).context("the card")?;
    browser.wait_text(&format!("#readers [data-reader=\"{ETC}\"]"), "无卡")?;
    click_panel(browser, "#det-unload")?;
    answer(browser, "true")?;
    browser.wait_text("#dialog-message", "读卡器上没有该记录的卡片")?;
    ensure!(
        focused_answer(browser)? == "false",
        "the question starts on 取消"
    );
    answer(browser, "true")?;
    browser.wait_text("#evidence", "卡片证实该笔圈存已写入卡内")?;
    check_screen(browser, "the journal's refusal without the card")?;
    answer(browser, "true")?;
    wait_status(browser, R_OLD, "已圈存")?;
    world(&w).insert_card(ETC, card)?;

    // The password rule is shown before anything fails.
    browser.click("#nav-password")?;
    browser.wait_text("#pw-rule", "至少 6 个字符")?;
    check_screen(browser, "修改密码")?;
    browser.click("#logout")?;

    // The administrator: when the unfunded test load is offered to them, it has its own name,
    // never a second 圈存.
    login(browser, &base, "admin", "admin123")?;
    browser.wait_text("#operator", "系统管理员")?;
    if browser.js("return !!document.getElementById('nav-flows')", json!([]))? == true {
        browser.click("#nav-flows")?;
        browser.find("#page .cards button")?;
        let labels = browser.js(
            "return [...document.querySelectorAll('#page .cards button')].map(b => b.textContent)",
            json!([]),
        )?;
        let labels: Vec<&str> = labels
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        ensure!(
            distinct.len() == labels.len(),
            "two flows with one name: {labels:?}"
        );
        check_screen(browser, "其他业务")?;
    }
    browser.click("#nav-operators")?;
    browser.find("#op-password")?;
    let rule = browser.js(
        "return document.getElementById('op-password').placeholder",
        json!([]),
    )?;
    ensure!(
        rule.as_str().unwrap_or_default().contains("至少6个字符"),
        "{rule}"
    );
    // The 用户名 column shows user names: identifiers a person types to log in.
    check_screen_allowing(
        browser,
        "操作员管理",
        &["admin", "teller", "supervisor", "auditor", "kiosk"],
    )?;
    browser.click("#logout")?;
    browser.reset_viewport()?;
    rt.block_on(d.stop());
    Ok(())
}
