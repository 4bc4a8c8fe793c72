//! The kiosk tried from its idle screen on the embedded default, through the 模拟读卡器 panel
//! alone (nothing in the test touches the simulated world): the card taken out, put in, a
//! recharge chosen, confirmed (the question starting on 取消) and loaded with the other one said
//! to be still waiting, the card taken out and back, the next question cancelled with Esc, the
//! card pulled in the middle of the next load, and put back: cardd settles it from the card and
//! loads nothing twice. Every kiosk screen and the panel fit 1280×800 and
//! 1024×768 with no word a customer cannot read; the console's 模拟读卡器 page too.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::webdriver::Browser;
use super::{balance_fen, daemon, login, screen, world, Shots, ALLOWED_WORDS, ETC, R200};

/// The two kiosk screens the kiosk must fit.
const SCREENS: [(u32, u32); 2] = [(1280, 800), (1024, 768)];

/// Every button of the page is on the screen and every word is Chinese (or allowed), at both
/// sizes; the kiosk is left at 1024×768. `whole_screen`: a kiosk page (nothing may scroll).
pub(super) fn fits(browser: &Browser, what: &str, whole_screen: bool) -> Result<()> {
    for (width, height) in SCREENS {
        browser.set_viewport(width, height)?;
        let outside = browser.actions_outside_viewport(whole_screen)?;
        ensure!(
            outside.is_empty(),
            "{what} at {width}×{height}: buttons outside the screen: {outside:?}"
        );
        let words = browser.foreign_words(ALLOWED_WORDS)?;
        ensure!(
            words.is_empty(),
            "{what} at {width}×{height}: words a customer cannot read: {words:?}"
        );
    }
    Ok(())
}

const ETC_READER: &str = "[data-sim-reader=\"sim:etc\"]";

/// Opens the kiosk's 模拟读卡器 drawer (fresh from the daemon).
fn open_panel(browser: &Browser) -> Result<()> {
    browser.click("#sim-toggle")?;
    browser.wait(
        "the 模拟读卡器 drawer to open",
        "const d = document.getElementById('sim-drawer'); return !d.hidden && !!d.querySelector('[data-sim-reader]')",
        json!([]),
    )?;
    Ok(())
}

/// Clicks `action` of the ETC reader in the open panel (choosing `card` first, if given); the
/// drawer closes when the daemon has done it.
fn panel_action(browser: &Browser, action: &str, card: Option<&str>) -> Result<()> {
    if let Some(card) = card {
        let chosen = browser.js(
            "const s = document.querySelector(arguments[0] + ' select'); \
             if (!s) return null; s.value = arguments[1]; return s.value",
            json!([ETC_READER, card]),
        )?;
        ensure!(chosen == card, "the panel offers no {card} card: {chosen}");
    }
    browser.click(&format!("{ETC_READER} button[data-action=\"{action}\"]"))?;
    browser.wait(
        &format!("the panel's {action} to be done"),
        "return document.getElementById('sim-drawer').hidden",
        json!([]),
    )?;
    Ok(())
}

pub(super) fn kiosk_from_idle_with_the_sim_panel(
    rt: &tokio::runtime::Runtime,
    browser: &Browser,
    shots: &Shots,
) -> Result<()> {
    let w = format!("browser-kiosk-demo-{}", std::process::id());
    let d = daemon(rt, &w);
    browser.set_viewport(1024, 768)?;

    // The kiosk's demo page, set up once with the kiosk account.
    browser.goto(&format!("{}/kiosk/demo", d.origin()))?;
    screen(browser, "setup")?;
    fits(browser, "the kiosk's setup", true)?;
    browser.type_into("#setup-user", "kiosk")?;
    browser.type_into("#setup-password", "kiosk123")?;
    browser.click("#setup-submit")?;
    // The demo card is in the reader: the kiosk starts with it. Take it out through the panel.
    screen(browser, "choose")?;
    open_panel(browser)?;
    browser.wait_text(ETC_READER, "ETC 用户卡（陕A12345），余额 100.00 元")?;
    fits(browser, "the 模拟读卡器 drawer", true)?;
    shots.take(browser, "kiosk-demo-panel")?;
    panel_action(browser, "remove", None)?;
    screen(browser, "idle")?;
    browser.wait_text("#screen-idle", "请插入卡片")?;
    fits(browser, "the idle screen", true)?;

    // 插入卡片 through the panel: the card's two recharges to choose from.
    open_panel(browser)?;
    panel_action(browser, "insert", Some("etc"))?;
    screen(browser, "choose")?;
    browser.wait_text("#choose-message", "2 笔待圈存")?;
    fits(browser, "the choice of recharges", true)?;
    browser.js(
        "[...document.querySelectorAll('#choose-list button')].find(b => b.textContent.includes(arguments[0])).id = 'pick'",
        json!([R200]),
    )?;
    browser.click("#pick")?;
    screen(browser, "confirm")?;
    browser.wait_text(
        "#confirm-message",
        "卡内余额：100.00元。圈存金额：200.00元。是否圈存？",
    )?;
    fits(browser, "the confirmation", true)?;
    let focused = browser.js("return document.activeElement.id", json!([]))?;
    ensure!(
        focused == "confirm-no",
        "the confirmation starts on {focused}"
    );
    browser.click("#confirm-yes")?;
    screen(browser, "result")?;
    browser.wait_text("#result-message", "圈存成功！")?;
    browser.wait_text("#result-pending", "该卡还有 1 笔充值待圈存")?;
    browser.wait_text("#result-next", "继续圈存")?;
    let receipt = browser.text("#result-fields")?;
    ensure!(
        receipt.contains("200.00 元") && receipt.contains("300.00 元"),
        "the kiosk's receipt: {receipt}"
    );
    fits(browser, "the result with a recharge still waiting", true)?;
    shots.take(browser, "kiosk-result-pending")?;
    ensure!(balance_fen(&w) == 30_000, "the card holds 300.00 yuan");

    // 取出卡片: back to idle; then the card again, and pulled in the middle of the 50.00 load.
    open_panel(browser)?;
    panel_action(browser, "remove", None)?;
    screen(browser, "idle")?;
    open_panel(browser)?;
    panel_action(browser, "insert", Some("etc"))?;
    screen(browser, "confirm")?;
    browser.wait_text("#confirm-message", "圈存金额：50.00元")?;
    // Esc cancels, like 取消: nothing loaded. Out and in again for the pull.
    browser.js(
        "document.activeElement.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }))",
        json!([]),
    )?;
    screen(browser, "result")?;
    browser.wait_text("#result-message", "已取消圈存")?;
    ensure!(
        balance_fen(&w) == 30_000,
        "a cancelled question loads nothing"
    );
    open_panel(browser)?;
    panel_action(browser, "remove", None)?;
    screen(browser, "idle")?;
    open_panel(browser)?;
    panel_action(browser, "insert", Some("etc"))?;
    screen(browser, "confirm")?;
    browser.wait_text("#confirm-message", "圈存金额：50.00元")?;
    open_panel(browser)?;
    panel_action(browser, "pull", None)?;
    ensure!(
        world(&w).pending_faults(ETC) == 1,
        "the panel armed the pull"
    );
    browser.click("#confirm-yes")?;
    screen(browser, "error")?;
    browser.wait_text("#screen-error", "重新插入")?;
    fits(browser, "the card pulled mid-load", true)?;
    open_panel(browser)?;
    let outside = browser.wait_text("#sim-outside", "圈存中被拔出")?;
    ensure!(
        outside.contains("余额 350.00 元"),
        "the pulled card took the credit: {outside}"
    );
    fits(browser, "the drawer with the pulled card", true)?;
    shots.take(browser, "kiosk-demo-pulled")?;

    // Put back through the panel: cardd reads the card, finds the load, loads nothing again.
    panel_action(browser, "insert", Some("etc"))?;
    screen(browser, "result")?;
    browser.wait_text("#result-message", "没有待圈存")?;
    fits(browser, "the settled load", true)?;
    shots.take(browser, "kiosk-demo-settled")?;
    ensure!(balance_fen(&w) == 35_000, "nothing loaded twice");
    open_panel(browser)?;
    panel_action(browser, "remove", None)?;
    screen(browser, "idle")?;
    browser.reset_viewport()?;

    // The console's 模拟读卡器 page for administrators: the card goes back in from there. (The
    // kiosk's session is in this origin's sessionStorage: the console would follow it.)
    browser.js("sessionStorage.clear()", json!([]))?;
    login(browser, &format!("{}/", d.origin()), "admin", "admin123")?;
    browser.click("#nav-sim")?;
    browser.wait_text(ETC_READER, "无卡")?;
    fits(browser, "the console's 模拟读卡器 page", false)?;
    let console_select = browser.js(
        "const s = document.querySelector(arguments[0] + ' select'); s.value = 'etc'; return s.value",
        json!([ETC_READER]),
    )?;
    ensure!(console_select == "etc", "{console_select}");
    browser.click(&format!("{ETC_READER} button[data-action=\"insert\"]"))?;
    browser.wait_text("#sim-message", "已插入卡片")?;
    browser.wait_text(ETC_READER, "余额 350.00 元")?;
    shots.take(browser, "console-sim-panel")?;
    ensure!(
        world(&w).card(ETC).is_some(),
        "the card is back in the reader"
    );
    browser.click("#logout")?;
    rt.block_on(d.stop());
    Ok(())
}

/// Without the embedded default the kiosk's demo page shows no 模拟读卡器.
pub(super) fn no_panel_without_demo(rt: &tokio::runtime::Runtime, browser: &Browser) -> Result<()> {
    let w = format!("browser-kiosk-production-{}", std::process::id());
    let world_name = w.clone();
    let d = rt.block_on(super::common::TestDaemon::start_with(move |c| {
        c.demo = false;
        c.flows.dir = Some(cardd::flows::default_dir());
        c.readers[0].options = json!({ "world": world_name });
    }));
    d.daemon()
        .auth
        .create_operator(cardd::auth::NewOperator {
            username: "kiosk".into(),
            display_name: "自助终端01".into(),
            role: cardd_api::Role::Kiosk,
            group_id: None,
            password: "kiosk-password-1".into(),
        })
        .context("the kiosk account")?;
    browser.goto(&format!("{}/kiosk/demo", d.origin()))?;
    screen(browser, "setup")?;
    browser.type_into("#setup-user", "kiosk")?;
    browser.type_into("#setup-password", "kiosk-password-1")?;
    browser.click("#setup-submit")?;
    browser.wait(
        "the kiosk to decide on its 模拟读卡器",
        "return document.body.dataset.sim || null",
        json!([]),
    )?;
    let shown = browser.js(
        "return [document.body.dataset.sim, document.getElementById('sim-toggle').hidden]",
        json!([]),
    )?;
    ensure!(
        shown == json!(["off", true]),
        "a 模拟读卡器 without --demo: {shown}"
    );
    browser.js("sessionStorage.clear()", json!([]))?;
    rt.block_on(d.stop());
    Ok(())
}
