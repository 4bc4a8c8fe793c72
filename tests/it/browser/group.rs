//! The group recharge pages (集团充值) in the browser, as a group operator uses them: two card
//! recharges in a row (继续充值, and the menu opening a fresh form), an ETC card and the rules
//! before the amount, 充值查询 with a start date only and its CSV export read as text, 额度充值
//! through the sandbox bank's own pages back to 转账成功, 额度充值查询, 修改密码, and the auditor's
//! approval. Every state is checked at 1280×800 and 1024×768: no action outside the screen, no
//! word a group operator cannot read.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::webdriver::Browser;
use super::{answer, daemon, fen, login, world, Shots, ALLOWED_WORDS};

const CITY: &str = "sim:city";

/// The page as it is now, at both screen sizes: every action inside the screen, every word
/// zh-CN (or allowed). Ends at 1280×800.
fn check_screens(browser: &Browser, what: &str) -> Result<()> {
    for (w, h) in [(1024, 768), (1280, 800)] {
        browser.set_viewport(w, h)?;
        let outside = browser.actions_outside_viewport(false)?;
        ensure!(
            outside.is_empty(),
            "{what} at {w}×{h}: actions outside the screen: {outside:?}"
        );
        let words = browser.foreign_words(ALLOWED_WORDS)?;
        ensure!(
            words.is_empty(),
            "{what} at {w}×{h}: words a group operator cannot read: {words:?}"
        );
    }
    Ok(())
}

/// Sets a date input to `value` (`YYYY-MM-DD`, or empty) as a person picking it would.
fn set_date(browser: &Browser, css: &str, value: &str) -> Result<()> {
    browser.js(
        "const i = document.querySelector(arguments[0]); i.value = arguments[1]; \
         i.dispatchEvent(new Event('change', { bubbles: true }));",
        json!([css, value]),
    )?;
    Ok(())
}

/// The value shown for `label` in the field list `css` (`<dt>label</dt><dd>value</dd>`).
fn field(browser: &Browser, css: &str, label: &str) -> Result<String> {
    let value = browser.js(
        "const dt = [...document.querySelectorAll(arguments[0] + ' dt')].find(d => d.textContent === arguments[1]); \
         return dt ? dt.nextElementSibling.textContent : null",
        json!([css, label]),
    )?;
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{label} in {css}"))
}

/// Today's date in China, `YYYY-MM-DD`.
fn china_today() -> time::Date {
    time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .date()
}

fn city_balance(world_name: &str) -> Result<u32> {
    world(world_name)
        .card(CITY)
        .and_then(|c| c.balance())
        .context("the city card's balance")
}

/// One recharge of `amount` yuan from the form on screen, confirmed; returns the success page.
fn recharge(browser: &Browser, shots: &Shots, amount: &str, shot: Option<&str>) -> Result<String> {
    browser.wait_text("#gr-card-fields", "卡内余额")?;
    browser.type_into("#gr-amount", amount)?;
    browser.click("#gr-submit")?;
    browser.wait_text("#dialog-message", &format!("充值金额：{amount}.00元"))?;
    check_screens(browser, "the recharge confirmation")?;
    answer(browser, "true")?;
    let success = browser.wait_text("#gr-success", "充值成功")?;
    for field in [
        "订单编号",
        "卡号",
        "充值前余额",
        "充值金额",
        "现余额",
        "充值前集团额度",
        "充值后集团额度",
    ] {
        ensure!(success.contains(field), "{field} missing from {success}");
    }
    ensure!(
        success.contains(&format!("{amount}.00 元")),
        "the amount on {success}"
    );
    browser.wait_text("#gr-again", "继续充值")?;
    check_screens(browser, "充值成功")?;
    if let Some(name) = shot {
        shots.take(browser, name)?;
    }
    Ok(success)
}

/// The sandbox bank's steps after 确认转账: a payment method and account, then the SMS code the
/// page shows and a trade password, 确认支付. Checks each page at both sizes.
fn bank_pay(browser: &Browser, shots: Option<&Shots>) -> Result<()> {
    browser.wait_text("#bank-sandbox", "模拟网上银行，不会发生真实扣款")?;
    browser.wait_text("#step-pay", "支付方式")?;
    check_screens(browser, "the bank: 支付方式")?;
    if let Some(shots) = shots {
        shots.take(browser, "bank-method")?;
    }
    browser.click("#pay-methods input[value=\"personal\"]")?;
    browser.type_into("#pay-account", "6222000000000000001")?;
    browser.click("#pay-next")?;
    let sms = browser.wait_text("#sms-sandbox", "验证码为")?;
    let code: String = sms
        .split("验证码为")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    ensure!(code.len() == 6, "the sandbox SMS: {sms}");
    browser.wait_text("#step-sms", "交易密码")?;
    // A wrong code is refused; nothing is paid.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    browser.type_into("#sms-code", wrong)?;
    browser.type_into("#sms-password", "123456")?;
    browser.click("#sms-confirm")?;
    browser.wait_text("#sms-error", "短信验证码不正确")?;
    browser.type_into("#sms-code", &code)?;
    check_screens(browser, "the bank: 手机短信验证")?;
    if let Some(shots) = shots {
        shots.take(browser, "bank-sms")?;
    }
    browser.click("#sms-confirm")
}

/// Back from the bank's result page by 点击此处 (or after its 7 seconds, if they have passed).
fn bank_back(browser: &Browser) -> Result<()> {
    browser.js(
        "const a = document.getElementById('done-back'); if (a) a.click(); return true",
        json!([]),
    )?;
    Ok(())
}

/// The whole group path, when the daemon offers the group API (otherwise skipped, saying so).
pub fn group_pages(rt: &tokio::runtime::Runtime, browser: &Browser, shots: &Shots) -> Result<()> {
    let w = format!("browser-group-{}", std::process::id());
    let d = daemon(rt, &w);
    let discover = rt.block_on(d.ok("rpc.discover", json!({}), None));
    let methods: Vec<&str> = discover["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    let needed = [
        "group.info",
        "group.orders",
        "group.orders.export",
        "group.topup",
    ];
    if let Some(missing) = needed.iter().find(|m| !methods.contains(m)) {
        println!(
            "browser: group pages SKIPPED: this daemon has no {missing} \
             (rpc.discover lists no group API)"
        );
        rt.block_on(d.stop());
        return Ok(());
    }
    let base = format!("{}/", d.origin());
    browser.set_viewport(1280, 800)?;
    login(browser, &base, "group1", "group123")?;
    browser.wait_text("#operator", "集团操作员张三")?;

    // 充值: the seed's header, the rules before the amount, what this card may take.
    browser.click("#nav-group-recharge")?;
    let head = browser.wait_text("#group-info", "集团可用额度")?;
    for field in ["集团名称", "集团操作员", "集团操作员张三", "终端编号"] {
        ensure!(head.contains(field), "{field} missing from {head}");
    }
    browser.wait_text("#gr-card-fields", "城市一卡通")?;
    browser.wait_text("#gr-rules", "10元的整数倍")?;
    let limit = browser.wait_text("#gr-limit", "最多可充")?;
    ensure!(limit.contains("不能超1000元"), "the card's limit: {limit}");
    let rules_first = browser.js(
        "return !!(document.getElementById('gr-rules').compareDocumentPosition(\
         document.getElementById('gr-amount')) & Node.DOCUMENT_POSITION_FOLLOWING)",
        json!([]),
    )?;
    ensure!(rules_first == true, "the rules come before the amount");
    check_screens(browser, "充值")?;
    shots.take(browser, "group-recharge-form")?;

    // Too much: the answer names the most this card can take.
    browser.type_into("#gr-amount", "2000")?;
    browser.click("#gr-submit")?;
    let too_much = browser.wait_text("#dialog-message", "充值金额过大")?;
    ensure!(
        too_much.contains("最多可充") && too_much.contains("不能超1000元"),
        "the refusal: {too_much}"
    );
    check_screens(browser, "充值金额过大")?;
    answer(browser, "true")?;

    // An ETC card put on the group operator's reader: this page recharges city one-cards. The
    // page reads the card placed on its reader by itself.
    let wd = world(&w);
    let city_card = wd.remove_card(CITY).context("the city card")?;
    let etc_card = wd.remove_card("sim:etc").context("the ETC card")?;
    wd.insert_card(CITY, etc_card)?;
    let wrong = browser.wait_text("#gr-wrong-card", "本页面为城市一卡通充值")?;
    ensure!(
        wrong.contains("请放置要充值的城市一卡通卡片"),
        "the ETC card's wording: {wrong}"
    );
    check_screens(browser, "an ETC card on the group page")?;
    shots.take(browser, "group-recharge-etc-card")?;
    let etc_card = wd
        .remove_card(CITY)
        .context("the ETC card on the city reader")?;
    wd.insert_card("sim:etc", etc_card)?;
    wd.insert_card(CITY, city_card)?;
    browser.wait_text("#gr-card-fields", "城市一卡通")?;

    // Two recharges in a row: 继续充值 opens a fresh form with the card read again.
    let balance = city_balance(&w)?;
    let first = recharge(browser, shots, "50", Some("group-recharge-success"))?;
    ensure!(city_balance(&w)? == balance + 5_000, "the card took 50.00");
    browser.click("#gr-again")?;
    browser.wait(
        "a fresh recharge form",
        "return !document.getElementById('gr-success') && \
         !document.getElementById('gr-form').hidden && document.getElementById('gr-amount').value === ''",
        json!([]),
    )?;
    let second = recharge(browser, shots, "20", None)?;
    ensure!(first != second, "a second order: {second}");
    ensure!(
        city_balance(&w)? == balance + 7_000,
        "the card took 50.00 and 20.00"
    );
    // The menu opens a fresh form too, even on the page already shown.
    browser.click("#nav-group-recharge")?;
    browser.wait(
        "the menu's fresh recharge form",
        "return !document.getElementById('gr-success') && !document.getElementById('gr-form').hidden",
        json!([]),
    )?;
    // The card taken away and put back: the open form follows it.
    let card = world(&w).remove_card(CITY).context("the city card")?;
    browser.wait_text("#gr-no-card", "请放置要充值的城市一卡通卡片")?;
    world(&w)
        .insert_card(CITY, card)
        .context("putting the card back")?;
    browser.wait_text(
        "#gr-card-fields",
        &format!("{}.00 元", (balance + 7_000) / 100),
    )?;
    println!("browser: group recharge twice in a row (继续充值, menu), ETC card, rules: ok");

    // 充值查询 with a start date only: from that day until now, with its statistics.
    let today = china_today().to_string();
    browser.click("#nav-group-orders")?;
    browser.wait_text("#gq-stats", "充值成功笔数")?;
    browser.wait_text("#gq-period-rule", "只填开始日期")?;
    set_date(browser, "#gq-start", &today)?;
    browser.click("#gq-query")?;
    let period = browser.wait_text("#gq-result", &format!("查询期间：{today} 至 {today}"))?;
    ensure!(period.contains("70.00 元"), "today's recharges: {period}");
    ensure!(
        field(browser, "#gq-stats", "充值成功笔数")? == "2"
            && field(browser, "#gq-stats", "充值成功金额")? == "70.00 元",
        "the statistics: {}",
        browser.text("#gq-stats")?
    );
    check_screens(browser, "充值查询")?;
    shots.take(browser, "group-orders")?;
    // Reversed dates are refused, saying why.
    let yesterday = china_today()
        .previous_day()
        .context("yesterday")?
        .to_string();
    set_date(browser, "#gq-end", &yesterday)?;
    browser.click("#gq-query")?;
    browser.wait_text("#dialog-message", "晚于结束日期")?;
    check_screens(browser, "reversed dates")?;
    answer(browser, "true")?;
    set_date(browser, "#gq-end", "")?;

    // The CSV of the same query, read as text: the card number whole behind its tab, China time.
    browser.click("#gq-export-csv")?;
    browser.wait_text("#gq-exported", "已导出 2 条记录")?;
    let file = browser.wait_download(".csv")?;
    let csv = std::fs::read_to_string(&file)?;
    let group1 = rt.block_on(d.login("group1", "group123"));
    let orders = rt.block_on(d.ok(
        "group.orders",
        json!({ "start_date": today }),
        Some(&group1),
    ));
    let card = orders["rows"][0]["card_number"]
        .as_str()
        .context("the card number")?;
    let lines: Vec<&str> = csv.trim_start_matches('\u{feff}').lines().collect();
    ensure!(
        lines.len() == 3 && lines[0].starts_with("订单编号,卡号,"),
        "the export: {csv}"
    );
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        ensure!(
            cells[1] == format!("\t{card}"),
            "the card number as text: {line}"
        );
        let time = cells[9];
        ensure!(
            time.len() == 19 && time.starts_with(&today) && &time[10..11] == " ",
            "the time as 2026-12-06 14:02:14: {line}"
        );
    }
    println!("browser: 充值查询 from a start date, reversed dates, CSV as text: ok");

    // 额度充值 through the sandbox bank's pages, back to 转账成功.
    let quota = |token: &str| -> Result<String> {
        let info = rt.block_on(d.ok("group.info", json!({}), Some(token)));
        Ok(info["available_quota"]
            .as_str()
            .context("quota")?
            .to_owned())
    };
    let before = quota(&group1)?;
    // A transfer the bank declines: 支付失败 on the bank's page, 转账失败 back in the console.
    browser.click("#nav-group-topup")?;
    browser.wait_text("#group-info", "集团名称")?;
    browser.type_into("#gt-amount", "300")?;
    browser.type_into("#gt-remark", "沙箱失败")?;
    browser.click("#gt-submit")?;
    browser.wait_text("#dialog-message", "转账金额：300元")?;
    answer(browser, "true")?;
    bank_pay(browser, None)?;
    let declined = browser.wait_text("#step-done", "支付失败")?;
    ensure!(
        declined.contains("余额不足"),
        "the bank's 支付失败: {declined}"
    );
    check_screens(browser, "the bank: 支付失败")?;
    bank_back(browser)?;
    let failed = browser.wait_text("#gt-success", "转账失败")?;
    ensure!(
        failed.contains("未扣款"),
        "the console after a decline: {failed}"
    );
    browser.click("#gt-again")?;
    browser.wait(
        "a fresh transfer form",
        "return !document.getElementById('gt-success') && !document.getElementById('gt-form').hidden",
        json!([]),
    )?;
    ensure!(
        quota(&group1)? == before,
        "a declined transfer changes nothing"
    );
    browser.click("#nav-group-topup")?;
    browser.wait_text("#group-info", "集团名称")?;
    browser.type_into("#gt-amount", "5000")?;
    browser.type_into("#gt-remark", "额度充值测试")?;
    check_screens(browser, "额度充值")?;
    browser.click("#gt-submit")?;
    browser.wait_text("#dialog-message", "转账金额：5000元")?;
    check_screens(browser, "the transfer confirmation")?;
    answer(browser, "true")?;
    let order = browser.wait_text("#bank-order", "5000.00 元")?;
    ensure!(order.contains("额度充值测试"), "the bank's order: {order}");
    bank_pay(browser, Some(shots))?;
    let paid = browser.wait_text("#step-done", "支付成功")?;
    ensure!(
        paid.contains("银行返回流水号") && paid.contains("5000.00 元") && paid.contains("点击此处"),
        "the bank's 支付成功: {paid}"
    );
    check_screens(browser, "the bank: 支付成功")?;
    shots.take(browser, "bank-paid")?;
    bank_back(browser)?;
    let done = browser.wait_text("#gt-success", "转账成功")?;
    for field in [
        "订单编号",
        "充值转账金额",
        "5000.00 元",
        "银行返回流水号",
        "集团名称",
        "集团操作员张三",
        "转账成功后，一卡通操作员会进行后续审核工作",
    ] {
        ensure!(
            done.contains(field),
            "{field} missing from 转账成功: {done}"
        );
    }
    check_screens(browser, "转账成功")?;
    shots.take(browser, "group-topup")?;
    ensure!(quota(&group1)? == before, "the quota waits for the audit");

    // 额度充值查询.
    browser.click("#nav-group-topups")?;
    browser.wait_text("#gq-stats", "转账成功笔数")?;
    browser.wait_text("#gq-table", "5000.00 元")?;
    check_screens(browser, "额度充值查询")?;
    // The wrong SMS codes sent nothing: two transfers, the declined one and the paid one.
    let topups = rt.block_on(d.ok("group.topups", json!({}), Some(&group1)));
    let amounts: Vec<&str> = topups["rows"]
        .as_array()
        .context("the transfers")?
        .iter()
        .filter_map(|t| t["amount"].as_str())
        .collect();
    ensure!(
        amounts.len() == 2 && amounts.contains(&"300.00") && amounts.contains(&"5000.00"),
        "the transfers: {amounts:?}"
    );
    println!("browser: 额度充值 through the sandbox bank's pages, 转账成功, 额度充值查询: ok");

    // 修改密码 for the group operator: the rule first, then 密码已修改.
    browser.click("#nav-password")?;
    browser.wait_text("#pw-rule", "至少 6 个字符")?;
    check_screens(browser, "修改密码")?;
    browser.type_into("#pw-old", "group123")?;
    browser.type_into("#pw-new", "group456x")?;
    browser.type_into("#pw-confirm", "group456x")?;
    browser.click("#pw-submit")?;
    browser.wait_text("#dialog-message", "密码已修改")?;
    check_screens(browser, "密码已修改")?;
    answer(browser, "true")?;
    let group1 = rt.block_on(d.login("group1", "group456x"));

    // The auditor approves the transfer: the quota grows.
    browser.click("#logout")?;
    login(browser, &base, "auditor", "audit123")?;
    browser.click("#nav-audit-topups")?;
    browser.wait_text("#at-table", "5000.00 元")?;
    shots.take(browser, "audit-topups")?;
    browser.click("#at-table button[data-decision=\"approve\"]")?;
    browser.type_into("#dialog-input", "到账核对无误")?;
    browser.click("#dialog-buttons button:last-child")?;
    browser.wait_text("#dialog-message", "审核通过")?;
    answer(browser, "true")?;
    let after = quota(&group1)?;
    ensure!(
        fen(&after)? == fen(&before)? + 500_000,
        "the approved quota: {after}, before {before}"
    );
    println!("browser: group 修改密码, auditor approval of the transfer: ok");
    browser.reset_viewport()?;
    rt.block_on(d.stop());
    Ok(())
}
